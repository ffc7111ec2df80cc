// heapmap is a CheckSync test workload with a large, pointer-rich heap that
// the garbage collector is always busy with.
//
// At start it draws a random seed and builds a map of -n entries (1,000,000 by
// default): key k points to an entry derived from k and the seed (see derive),
// so every entry can be checked against its key, and a process started afresh
// holds a different map than the one it replaces. Then churn goroutines
// allocate and drop linked garbage steadily, and runtime.GC() runs every 500 ms.
//
//	GET /checksum  walks the map and answers {"checksum", "seed", "len", "bad"}:
//	               an order-independent sum over all entries, the seed, the
//	               map's length, and how many entries differ from derive(key).
//	               A faithful copy of the process answers the same checksum and
//	               seed, and bad == 0.
//	GET /state     answers pid, instance, NumGC, forced GCs, churn counters, map length.
//	GET /gc        runs runtime.GC() and answers NumGC.
package main

import (
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
)

type entry struct {
	sq   uint64
	name string
}

// node is churn garbage: short linked lists, so the collector has pointers
// to follow and not only flat byte slices.
type node struct {
	next    *node
	payload []byte
}

var (
	seed        uint64            // drawn at start-up
	table       map[uint64]*entry // written only before the server starts
	churnAllocs uint64            // atomic
	churnBytes  uint64            // atomic
	forcedGC    uint64            // atomic
)

func derive(k uint64) *entry {
	return &entry{sq: k*k ^ seed, name: "item-" + strconv.FormatUint(k, 10)}
}

// mix hashes one map entry (FNV-1a over the name, combined with key and sq).
func mix(k uint64, e *entry) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(e.name); i++ {
		h ^= uint64(e.name[i])
		h *= 1099511628211
	}
	return h ^ (k * 0x9E3779B97F4A7C15) ^ e.sq
}

func buildTable(n int) {
	table = make(map[uint64]*entry, n)
	for k := uint64(0); k < uint64(n); k++ {
		table[k] = derive(k)
	}
}

func churn(seed int64) {
	rng := rand.New(rand.NewSource(seed))
	var ring [128]*node // keeps recent garbage alive for a while
	for i := 0; ; i++ {
		var head *node
		for j := 1 + rng.Intn(32); j > 0; j-- {
			size := 16 + rng.Intn(496)
			head = &node{next: head, payload: make([]byte, size)}
			atomic.AddUint64(&churnAllocs, 1)
			atomic.AddUint64(&churnBytes, uint64(size))
		}
		ring[i%len(ring)] = head
		if i%4 == 3 {
			time.Sleep(time.Millisecond)
		}
	}
}

func forceGC() {
	for range time.Tick(500 * time.Millisecond) {
		runtime.GC()
		atomic.AddUint64(&forcedGC, 1)
	}
}

// instance is drawn at start-up: a restored process answers its original's
// instance, a process started afresh a new one.
var instance = hex.EncodeToString(randomBytes(8))

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := crand.Read(b); err != nil {
		panic(err)
	}
	return b
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func numGC() uint32 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.NumGC
}

func handleChecksum(w http.ResponseWriter, r *http.Request) {
	var sum uint64
	bad := 0
	buf := make([]byte, 0, 32)
	for k, e := range table {
		sum += mix(k, e)
		// Same test as comparing with derive(k), without a million allocations.
		buf = strconv.AppendUint(append(buf[:0], "item-"...), k, 10)
		if e.sq != k*k^seed || e.name != string(buf) {
			bad++
		}
	}
	// Checksum and seed are strings: JSON numbers lose precision past 2^53.
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"checksum": strconv.FormatUint(sum, 16),
		"seed":     strconv.FormatUint(seed, 16),
		"len":      len(table),
		"bad":      bad,
	})
}

func handleState(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"pid":          os.Getpid(),
		"instance":     instance,
		"num_gc":       numGC(),
		"forced_gc":    atomic.LoadUint64(&forcedGC),
		"churn_allocs": atomic.LoadUint64(&churnAllocs),
		"churn_bytes":  atomic.LoadUint64(&churnBytes),
		"len":          len(table),
		"goroutines":   runtime.NumGoroutine(),
	})
}

func handleGC(w http.ResponseWriter, r *http.Request) {
	runtime.GC()
	writeJSON(w, http.StatusOK, map[string]interface{}{"num_gc": numGC()})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	n := flag.Int("n", 1000000, "number of map entries")
	workers := flag.Int("churn", 2, "number of churn goroutines")
	flag.Parse()

	seed = binary.LittleEndian.Uint64(randomBytes(8))
	buildTable(*n)
	for i := 0; i < *workers; i++ {
		go churn(int64(i + 1))
	}
	go forceGC()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/checksum", handleChecksum)
	http.HandleFunc("/state", handleState)
	http.HandleFunc("/gc", handleGC)
	log.Printf("heapmap: pid %d, %d entries, listening on %s", os.Getpid(), len(table), ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
