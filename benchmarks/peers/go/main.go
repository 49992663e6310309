// Go net/http peer for sluice's benchmarks; same interface as sluice's hello_server:
//
//	sluice-bench-peer [--port P] [--grace-ms G] [--cert CERT --key KEY]
//
// With --cert and --key it serves HTTPS, and net/http then offers h2 and http/1.1 by ALPN
// (Go 1.19 has no h2c without golang.org/x/net, so HTTP/2 is measured over TLS here).
// prints `listening on 127.0.0.1:P`; GET / -> "Hello, world!\n"; GET /slow?ms=X -> 200 after X ms.
// SIGINT (or a second signal): srv.Close(). SIGTERM: srv.Shutdown(ctx with deadline G), then
// srv.Close() if the deadline passed. Prints one JSON line {"event":"stopped",...} once that
// returned and exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var hello = []byte("Hello, world!\n")

// Connection bookkeeping for the counts in the JSON line (one map update per state change).
type tracker struct {
	mu         sync.Mutex
	state      map[net.Conn]http.ConnState
	stopping   bool
	forcing    bool
	idleClosed int
}

func (t *tracker) hook(c net.Conn, s http.ConnState) {
	t.mu.Lock()
	if s == http.StateClosed || s == http.StateHijacked {
		prev := t.state[c]
		delete(t.state, c)
		if t.stopping && !t.forcing && (prev == http.StateIdle || prev == http.StateNew) {
			t.idleClosed++
		}
	} else {
		t.state[c] = s
	}
	t.mu.Unlock()
}

// counts returns (idle or new, active, total) open connections.
func (t *tracker) counts() (idle, active, total int) {
	for _, s := range t.state {
		if s == http.StateActive {
			active++
		} else {
			idle++
		}
	}
	return idle, active, len(t.state)
}

func main() {
	port := flag.Int("port", 0, "port (0: any)")
	graceMs := flag.Int("grace-ms", 5000, "graceful-stop deadline in ms")
	cert := flag.String("cert", "", "PEM certificate chain: serve HTTPS (h2 and http/1.1)")
	key := flag.String("key", "", "PEM private key of --cert")
	flag.Parse()

	var stopping atomic.Bool
	var completed atomic.Int64
	write := func(w http.ResponseWriter) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{"14"}
		w.WriteHeader(200)
		w.Write(hello)
		if stopping.Load() {
			completed.Add(1)
		}
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			write(w)
		case "/slow":
			ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
			timer := time.NewTimer(time.Duration(ms) * time.Millisecond)
			select {
			case <-timer.C:
				write(w)
			case <-r.Context().Done():
				timer.Stop()
			}
		default:
			http.NotFound(w, r)
		}
	})

	tr := &tracker{state: make(map[net.Conn]http.ConnState)}
	srv := &http.Server{Handler: handler, ConnState: tr.hook}
	// Go's defaults: no read/idle timeouts (IdleTimeout 0 falls back to ReadTimeout 0 = none).

	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if *cert != "" {
		go srv.ServeTLS(ln, *cert, *key)
	} else {
		go srv.Serve(ln)
	}
	fmt.Printf("listening on 127.0.0.1:%d\n", ln.Addr().(*net.TCPAddr).Port)

	sig := <-sigs
	t0 := time.Now()
	stopping.Store(true)
	tr.mu.Lock()
	tr.stopping = true
	idleAt, activeAt, _ := tr.counts()
	tr.mu.Unlock()

	mode := "now"
	forced := 0
	idleClosed := 0
	if sig == syscall.SIGINT {
		tr.mu.Lock()
		tr.forcing = true
		tr.mu.Unlock()
		srv.Close()
		idleClosed, forced = idleAt, activeAt
	} else {
		mode = "graceful"
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*graceMs)*time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- srv.Shutdown(ctx) }()
		var err error
		select {
		case err = <-done:
		case <-sigs: // second signal: cut now
			err = context.Canceled
		}
		cancel()
		if err != nil {
			tr.mu.Lock()
			tr.forcing = true
			_, _, forced = tr.counts()
			tr.mu.Unlock()
			srv.Close()
		}
		tr.mu.Lock()
		idleClosed = tr.idleClosed
		tr.mu.Unlock()
	}
	ms := float64(time.Since(t0).Nanoseconds()) / 1e6
	fmt.Printf("{\"event\":\"stopped\",\"mode\":\"%s\",\"ms\":%.3f,\"idle_closed\":%d,\"completed\":%d,\"forced\":%d}\n",
		mode, ms, idleClosed, completed.Load(), forced)
	os.Exit(0)
}
