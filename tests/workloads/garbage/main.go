// garbage is a CheckSync test workload for the reachability scan of new
// objects (capture/reach.c): a key/value store over HTTP whose every request
// also allocates about 4 KB that is garbage as soon as the request is
// answered, while a /set retains only its key and value (about 100 bytes
// with the paper's values).
//
//	GET /set?k=K&v=V  stores K=V (a copy: the request's own buffers stay
//	                  garbage), then answers {"ok":true,"pid":N}.
//	GET /get?k=K      answers {"k":K,"v":V}, or 404 if K is not stored.
//	GET /items        answers every stored key and value as one JSON object.
//	GET /checksum     answers {"items":N,"sum":"HEX"}: FNV-1a over every key
//	                  and value in key order, so a restored copy's whole state
//	                  can be compared with a sum computed from /items.
//	GET /state        answers pid, instance, item count, NumGC, and how many
//	                  requests were served.
//	GET /gc           runs runtime.GC() and answers NumGC.
//
// The per-request garbage is -garbage bytes (default 4096) in pieces of
// the sizes a request parser allocates (a header map, strings, a buffer),
// filled with pseudo-random bytes (request data compresses little).
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"hash/fnv"
	"log"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

var (
	mu       sync.RWMutex
	store    = map[string]string{}
	served   int64
	instance = newInstance()
	garbageN = flag.Int("garbage", 4096, "bytes of garbage allocated per request")
	sink     atomic.Value // holds only the latest piece, so earlier ones are garbage
)

func newInstance() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

type piece struct {
	next *piece
	data []byte
	tags map[string]string
}

// makeGarbage allocates about n bytes in linked pieces and drops them.
func makeGarbage(n int, seed string) {
	var head *piece
	x := uint64(len(seed))*0x9E3779B97F4A7C15 | 1 + uint64(atomic.LoadInt64(&served))
	for n > 0 {
		size := 512
		if n < size {
			size = n
		}
		p := &piece{next: head, data: make([]byte, size), tags: map[string]string{"k": seed}}
		for i := range p.data {
			// xorshift: request data compresses little, unlike a pattern
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			p.data[i] = byte(x)
		}
		head = p
		n -= size + 64
	}
	sink.Store(head) // escapes to the heap; the previous request's pieces become garbage
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

func counted(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		makeGarbage(*garbageN, r.URL.RawQuery)
		h(w, r)
		atomic.AddInt64(&served, 1)
	}
}

func handleSet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("k") == "" || !q.Has("v") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "need k and v"})
		return
	}
	k, v := strings.Clone(q.Get("k")), strings.Clone(q.Get("v"))
	mu.Lock()
	store[k] = v
	mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]interface{}{"ok": true, "pid": os.Getpid()})
}

func handleGet(w http.ResponseWriter, r *http.Request) {
	k := r.URL.Query().Get("k")
	mu.RLock()
	v, found := store[k]
	mu.RUnlock()
	if !found {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found", "k": k})
		return
	}
	writeJSON(w, http.StatusOK, map[string]interface{}{"k": k, "v": v})
}

func handleItems(w http.ResponseWriter, r *http.Request) {
	mu.RLock()
	out := make(map[string]string, len(store))
	for k, v := range store {
		out[k] = v
	}
	mu.RUnlock()
	writeJSON(w, http.StatusOK, out)
}

func handleChecksum(w http.ResponseWriter, r *http.Request) {
	mu.RLock()
	keys := make([]string, 0, len(store))
	for k := range store {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := fnv.New64a()
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(store[k]))
		h.Write([]byte{0})
	}
	mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]interface{}{"items": len(keys), "sum": hex.EncodeToString(h.Sum(nil))})
}

func handleState(w http.ResponseWriter, r *http.Request) {
	mu.RLock()
	n := len(store)
	mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"pid": os.Getpid(), "instance": instance, "num_gc": numGC(),
		"goroutines": runtime.NumGoroutine(), "items": n, "served": atomic.LoadInt64(&served),
	})
}

func handleGC(w http.ResponseWriter, r *http.Request) {
	runtime.GC()
	writeJSON(w, http.StatusOK, map[string]interface{}{"num_gc": numGC()})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	http.HandleFunc("/set", counted(handleSet))
	http.HandleFunc("/get", counted(handleGet))
	http.HandleFunc("/items", handleItems)
	http.HandleFunc("/checksum", handleChecksum)
	http.HandleFunc("/state", handleState)
	http.HandleFunc("/gc", handleGC)
	log.Printf("garbage: pid %d listening on %s", os.Getpid(), *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
