// churn is a CheckSync test workload for live-memory capture: it allocates
// and drops about 1 GiB of garbage, then keeps about 50 MiB live while it
// goes on allocating, growing and shrinking a map and collecting garbage.
// Every live object carries content derived from its key and version, so
// the process can check its own heap: a page that a capture wrongly left
// out comes back as zeros and fails the check.
//
//	GET /state  phase ("garbage", "steady"), MemStats figures, counters,
//	            and ok (no check has ever failed)
//	GET /check  verifies every live object now and answers {ok, checked, bad}
//	GET /gc     runs runtime.GC() and answers NumGC
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"hash/fnv"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

type object struct {
	key     uint64
	version uint64
	data    []byte
}

var (
	mu       sync.Mutex
	live     = map[uint64]*object{}
	nextKey  uint64
	phase    atomic.Value
	checks   int64
	bad      int64
	ops      int64
	garbage  int64
	liveGoal = flag.Int("live-mib", 50, "live heap to keep, in MiB")
	junkGoal = flag.Int("garbage-mib", 1024, "garbage to allocate first, in MiB")
)

func fill(o *object) {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], o.key)
	binary.LittleEndian.PutUint64(b[8:], o.version)
	h.Write(b[:])
	seed := h.Sum64()
	for i := 0; i+8 <= len(o.data); i += 8 {
		seed = seed*6364136223846793005 + 1442695040888963407
		binary.LittleEndian.PutUint64(o.data[i:], seed)
	}
}

func valid(o *object) bool {
	want := &object{key: o.key, version: o.version, data: make([]byte, len(o.data))}
	fill(want)
	for i := range o.data {
		if o.data[i] != want.data[i] {
			return false
		}
	}
	return true
}

func newObject(r *rand.Rand) *object {
	nextKey++
	o := &object{key: nextKey, version: 1, data: make([]byte, 64+r.Intn(16*1024))}
	fill(o)
	return o
}

func liveBytes() int {
	n := 0
	for _, o := range live {
		n += len(o.data)
	}
	return n
}

// makeGarbage allocates objects of mixed sizes, all reachable until the
// end, then drops them together: the heap grows to the garbage goal and its
// pages stay with the process after the collection frees them.
func makeGarbage(r *rand.Rand) {
	var keep [][]byte
	for total := 0; total < *junkGoal<<20; {
		b := make([]byte, 16+r.Intn(32*1024))
		b[0] = 1
		total += len(b)
		keep = append(keep, b)
		atomic.AddInt64(&garbage, int64(len(b)))
	}
	keep = nil
}

// mutate replaces, adds and removes objects around the live goal, forever.
func mutate(r *rand.Rand) {
	for {
		mu.Lock()
		for i := 0; i < 64; i++ {
			switch {
			case liveBytes() < *liveGoal<<20 || r.Intn(3) == 0:
				o := newObject(r)
				live[o.key] = o
			default:
				for k, o := range live {
					if r.Intn(2) == 0 {
						delete(live, k)
					} else {
						o.version++
						o.data = make([]byte, len(o.data))
						fill(o)
					}
					break
				}
			}
			atomic.AddInt64(&ops, 1)
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
}

func checkAll() (int, int) {
	mu.Lock()
	defer mu.Unlock()
	n, nbad := 0, 0
	for k, o := range live {
		n++
		if o.key != k || !valid(o) {
			nbad++
		}
	}
	atomic.AddInt64(&checks, 1)
	atomic.AddInt64(&bad, int64(nbad))
	return n, nbad
}

func writeJSON(w http.ResponseWriter, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func handleState(w http.ResponseWriter, _ *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mu.Lock()
	n, lb := len(live), liveBytes()
	mu.Unlock()
	writeJSON(w, map[string]interface{}{
		"pid": os.Getpid(), "phase": phase.Load(), "objects": n, "live_bytes": lb,
		"ops": atomic.LoadInt64(&ops), "garbage_bytes": atomic.LoadInt64(&garbage),
		"checks": atomic.LoadInt64(&checks), "bad": atomic.LoadInt64(&bad),
		"ok": atomic.LoadInt64(&bad) == 0, "num_gc": ms.NumGC,
		"heap_inuse": ms.HeapInuse, "stack_inuse": ms.StackInuse,
		"mspan_inuse": ms.MSpanInuse, "mcache_inuse": ms.MCacheInuse,
		"buckhash_sys": ms.BuckHashSys, "gc_sys": ms.GCSys, "other_sys": ms.OtherSys,
		"heap_sys": ms.HeapSys, "heap_released": ms.HeapReleased,
	})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	phase.Store("garbage")
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/state", handleState)
	http.HandleFunc("/check", func(w http.ResponseWriter, _ *http.Request) {
		n, nbad := checkAll()
		writeJSON(w, map[string]interface{}{"ok": nbad == 0, "checked": n, "bad": nbad})
	})
	http.HandleFunc("/gc", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		writeJSON(w, map[string]uint32{"num_gc": ms.NumGC})
	})
	go func() {
		r := rand.New(rand.NewSource(1))
		makeGarbage(r)
		runtime.GC()
		phase.Store("steady")
		go mutate(rand.New(rand.NewSource(2)))
		for range time.Tick(time.Second) {
			checkAll()
		}
	}()
	log.Fatal(http.Serve(ln, nil))
}
