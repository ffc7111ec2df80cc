// kvserver is a CheckSync test workload: a key/value store over HTTP whose
// state is a go-cache (github.com/patrickmn/go-cache) holding every key.
//
//	GET /set?k=K&v=V  stores K=V, then answers {"ok":true,"pid":N}; the answer
//	                  is written only after the value is stored, so a client
//	                  that got it may count on the write.
//	GET /get?k=K      answers {"k":K,"v":V}, or 404 if K is not stored.
//	GET /items        answers every stored key and value as one JSON object,
//	                  so a test can check thousands of keys in one request.
//	GET /state        answers pid, instance (see below), item count and NumGC.
//	GET /gc           runs runtime.GC() and answers NumGC.
//	GET /uname        calls uname(2) and answers {"errno":N} (0 if it worked),
//	                  so a test sees a seccomp filter at work.
//	GET /say?m=TEXT   writes "kvserver: say TEXT" to standard output and
//	                  "kvserver: say TEXT (stderr)" to standard error, then
//	                  answers {"ok":true,"pid":N}: output a test can look for
//	                  where the host files it (B's journal after a takeover).
//
// With -savefile PATH the cache is also saved with go-cache's own SaveFile
// every -save-interval-ms (default 100), into PATH.tmp and renamed to PATH,
// so PATH always holds a whole save: the persistence a service could have
// without CheckSync, for bench/failover_bench.py to compare with. Then
//
//	GET /saves        answers how many saves were made and how long each of
//	                  the last 10000 took (microseconds; SaveFile holds the
//	                  cache's read lock meanwhile, so writers wait).
//
// With -save-after-items N the saves begin only once the cache holds N
// items, so that a benchmark can fill it first at full speed.
//
// With -preload N the server stores N keys p0..p(N-1) of -preload-size
// bytes each from its start, as fast as it can, while it already serves
// (a write burst: a large heap written in a few seconds); /state counts
// "preloaded" keys so far and says "preload_done".
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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/patrickmn/go-cache"
)

var store = cache.New(cache.NoExpiration, 0)

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

func handleSet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("k") == "" || !q.Has("v") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "need k and v"})
		return
	}
	store.Set(q.Get("k"), q.Get("v"), cache.NoExpiration)
	writeJSON(w, http.StatusOK, map[string]interface{}{"ok": true, "pid": os.Getpid()})
}

func handleGet(w http.ResponseWriter, r *http.Request) {
	k := r.URL.Query().Get("k")
	v, found := store.Get(k)
	if !found {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found", "k": k})
		return
	}
	writeJSON(w, http.StatusOK, map[string]interface{}{"k": k, "v": v})
}

func handleItems(w http.ResponseWriter, r *http.Request) {
	items := store.Items()
	out := make(map[string]interface{}, len(items))
	for k, it := range items {
		out[k] = it.Object
	}
	writeJSON(w, http.StatusOK, out)
}

func handleState(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"pid":          os.Getpid(),
		"instance":     instance,
		"num_gc":       numGC(),
		"goroutines":   runtime.NumGoroutine(),
		"items":        store.ItemCount(),
		"preloaded":    atomic.LoadInt64(&preloaded),
		"preload_done": atomic.LoadInt32(&preloadDone) == 1,
	})
}

func handleGC(w http.ResponseWriter, r *http.Request) {
	runtime.GC()
	writeJSON(w, http.StatusOK, map[string]interface{}{"num_gc": numGC()})
}

func handleUname(w http.ResponseWriter, r *http.Request) {
	var u syscall.Utsname
	errno := 0
	if err := syscall.Uname(&u); err != nil {
		errno = int(err.(syscall.Errno))
	}
	writeJSON(w, http.StatusOK, map[string]int{"errno": errno})
}

func handleSay(w http.ResponseWriter, r *http.Request) {
	m := r.URL.Query().Get("m")
	_, err1 := fmt.Fprintf(os.Stdout, "kvserver: say %s\n", m)
	_, err2 := fmt.Fprintf(os.Stderr, "kvserver: say %s (stderr)\n", m)
	if err1 != nil || err2 != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{
			"error": fmt.Sprintf("stdout: %v, stderr: %v", err1, err2)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]interface{}{"ok": true, "pid": os.Getpid()})
}

// saves records the -savefile loop's work.
var saves struct {
	sync.Mutex
	count    int
	failures int
	us       []int64 // durations of the last maxSaves saves
}

const maxSaves = 10000

var preloaded int64
var preloadDone int32

func preload(n, size int) {
	pad := strings.Repeat("x", size)
	for i := 0; i < n; i++ {
		k := "p" + strconv.Itoa(i)
		// a fresh string per key, so every value is its own heap object
		v := (k + pad)[:size]
		store.Set(k, strings.Clone(v), cache.NoExpiration)
		atomic.AddInt64(&preloaded, 1)
	}
	atomic.StoreInt32(&preloadDone, 1)
}

func saveLoop(path string, interval time.Duration, after int) {
	for store.ItemCount() < after {
		time.Sleep(interval)
	}
	for range time.Tick(interval) {
		t0 := time.Now()
		err := store.SaveFile(path + ".tmp")
		if err == nil {
			err = os.Rename(path+".tmp", path)
		}
		us := time.Since(t0).Microseconds()
		saves.Lock()
		saves.count++
		if err != nil {
			saves.failures++
			log.Printf("kvserver: save to %s: %v", path, err)
		}
		saves.us = append(saves.us, us)
		if len(saves.us) > maxSaves {
			saves.us = saves.us[len(saves.us)-maxSaves:]
		}
		saves.Unlock()
	}
}

func handleSaves(w http.ResponseWriter, r *http.Request) {
	saves.Lock()
	defer saves.Unlock()
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"count": saves.count, "failures": saves.failures, "us": saves.us,
	})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	savefile := flag.String("savefile", "", "save the cache with go-cache's SaveFile into this file periodically")
	saveInterval := flag.Int("save-interval-ms", 100, "how often -savefile saves, in milliseconds")
	saveAfter := flag.Int("save-after-items", 0, "begin saving once the cache holds this many items")
	preloadN := flag.Int("preload", 0, "store this many keys from the start")
	preloadSize := flag.Int("preload-size", 256, "bytes per preloaded value")
	flag.Parse()
	if *preloadN > 0 {
		go preload(*preloadN, *preloadSize)
	} else {
		atomic.StoreInt32(&preloadDone, 1)
	}
	if *savefile != "" {
		if *saveInterval < 1 {
			log.Fatalf("kvserver: -save-interval-ms must be at least 1, got %d", *saveInterval)
		}
		http.HandleFunc("/saves", handleSaves)
		go saveLoop(*savefile, time.Duration(*saveInterval)*time.Millisecond, *saveAfter)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/set", handleSet)
	http.HandleFunc("/get", handleGet)
	http.HandleFunc("/items", handleItems)
	http.HandleFunc("/state", handleState)
	http.HandleFunc("/gc", handleGC)
	http.HandleFunc("/uname", handleUname)
	http.HandleFunc("/say", handleSay)
	log.Printf("kvserver: pid %d listening on %s", os.Getpid(), ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
