// tickers is a CheckSync test workload whose state lives in goroutines,
// timers and channels rather than in one big data structure.
//
// Several goroutines each advance their own counter on their own
// time.Ticker. Beside them a three-stage channel pipeline runs:
// the producer sends 1, 2, 3, ...; the transformer turns x into 2x-1;
// the consumer counts what it receives and sums it. The sum of the first
// n odd numbers is n*n, so `sum == count*count` must hold at every moment;
// the consumer also checks that each value is the one that must come next,
// so a value lost or repeated in a channel buffer is caught at once.
//
// A timer goroutine re-arms a 10 ms time.Timer each time it fires and counts
// the fires; `started` is the time.Now() of start-up. GET /state answers pid,
// instance, the counters, timer_fires, since_start_ns (time.Since(started),
// measured on the monotonic clock), the pipeline's count and sum, and `ok`
// (both invariants hold). GET /gc runs runtime.GC() and answers
// NumGC and that collection's stop-the-world pause.
//
// GET /spin?ms=N starts a goroutine spinning N ms in a loop without calls:
// the GC can stop it only by asynchronous preemption, a signal sent to the
// thread id the runtime recorded for its M. While it spins, a /gc pause
// near N ms means those signals miss.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

type pipeline struct {
	mu     sync.Mutex
	count  uint64
	sum    uint64
	broken string // first violation seen by the consumer, "" if none
}

var (
	counters   []uint64 // counters[i] is advanced only by ticker goroutine i
	timerFires uint64
	started    = time.Now()
	pipe       pipeline
)

// timers re-arms a one-shot timer every time it fires.
func timers(period time.Duration) {
	for {
		t := time.NewTimer(period)
		<-t.C
		atomic.AddUint64(&timerFires, 1)
	}
}

func tick(i int, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for range t.C {
		atomic.AddUint64(&counters[i], 1)
	}
}

// produce sends 1, 2, 3, ... in bursts, one burst per tick, so the
// pipeline always has values in flight without spinning a CPU.
func produce(out chan<- uint64) {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	next := uint64(1)
	for range t.C {
		for j := 0; j < 16; j++ {
			out <- next
			next++
		}
	}
}

func transform(in <-chan uint64, out chan<- uint64) {
	for x := range in {
		out <- 2*x - 1
	}
}

func consume(in <-chan uint64) {
	for v := range in {
		pipe.mu.Lock()
		want := 2*(pipe.count+1) - 1
		if v != want && pipe.broken == "" {
			pipe.broken = fmt.Sprintf("consumer received %d, expected %d", v, want)
		}
		pipe.count++
		pipe.sum += v
		pipe.mu.Unlock()
	}
}

// instance is drawn at start-up: a restored process answers its original's
// instance, a process started afresh a new one.
var instance = newInstance()

func newInstance() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
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

func handleState(w http.ResponseWriter, r *http.Request) {
	c := make([]uint64, len(counters))
	for i := range counters {
		c[i] = atomic.LoadUint64(&counters[i])
	}
	pipe.mu.Lock()
	count, sum, broken := pipe.count, pipe.sum, pipe.broken
	pipe.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"pid":            os.Getpid(),
		"instance":       instance,
		"num_gc":         numGC(),
		"goroutines":     runtime.NumGoroutine(),
		"counters":       c,
		"timer_fires":    atomic.LoadUint64(&timerFires),
		"since_start_ns": time.Since(started).Nanoseconds(),
		"count":          count,
		"sum":            sum,
		"broken":         broken,
		"ok":             broken == "" && sum == count*count,
	})
}

func handleGC(w http.ResponseWriter, r *http.Request) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"num_gc": ms.NumGC, "pause_ns": ms.PauseNs[(ms.NumGC+255)%256]})
}

var spinSink uint64

func handleSpin(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms <= 0 || ms > 60000 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "need ms in 1..60000"})
		return
	}
	var stop uint32
	started := make(chan struct{})
	go func() {
		close(started)
		x := atomic.LoadUint64(&spinSink)
		// atomic loads are intrinsics: this loop makes no call, so only a signal preempts it.
		for atomic.LoadUint32(&stop) == 0 {
			x = x*6364136223846793005 + 1
		}
		atomic.StoreUint64(&spinSink, x)
	}()
	time.AfterFunc(time.Duration(ms)*time.Millisecond, func() { atomic.StoreUint32(&stop, 1) })
	<-started
	writeJSON(w, http.StatusOK, map[string]int{"spinning_ms": ms})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	n := flag.Int("tickers", 4, "number of ticker goroutines")
	flag.Parse()

	counters = make([]uint64, *n)
	for i := 0; i < *n; i++ {
		go tick(i, time.Duration(5+5*(i%4))*time.Millisecond) // 5..20 ms
	}
	go timers(10 * time.Millisecond)
	raw := make(chan uint64, 64)
	odd := make(chan uint64, 64)
	go produce(raw)
	go transform(raw, odd)
	go consume(odd)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/state", handleState)
	http.HandleFunc("/gc", handleGC)
	http.HandleFunc("/spin", handleSpin)
	log.Printf("tickers: pid %d listening on %s", os.Getpid(), ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
