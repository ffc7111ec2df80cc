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
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"

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
		"pid":        os.Getpid(),
		"instance":   instance,
		"num_gc":     numGC(),
		"goroutines": runtime.NumGoroutine(),
		"items":      store.ItemCount(),
	})
}

func handleGC(w http.ResponseWriter, r *http.Request) {
	runtime.GC()
	writeJSON(w, http.StatusOK, map[string]interface{}{"num_gc": numGC()})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/set", handleSet)
	http.HandleFunc("/get", handleGet)
	http.HandleFunc("/items", handleItems)
	http.HandleFunc("/state", handleState)
	http.HandleFunc("/gc", handleGC)
	log.Printf("kvserver: pid %d listening on %s", os.Getpid(), ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
