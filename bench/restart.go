package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

// The restart measurement (-restart N): N WebSocket clients connected to a
// notify Registry on 127.0.0.1, the Registry shut down, and a new one
// serving the same address at once, as when a node restarts. Each client
// reconnects by notify.js's rule, in one of two versions:
//
//	jitter  before issue 14: a random delay up to minDelay (500 ms), then
//	        exponential backoff with full jitter while connecting fails
//	spread  after: the wait the server's 1001 close reason asks for
//	        (Options.ReconnectRate, default 1000 per second), then the same
//	        backoff
//
// It reports the peak rate of upgrades the new server accepted (over any
// one second), the time from Shutdown until every client has resumed (its
// notify.hello read), and the connection attempts that failed. Server and
// clients share this process: a restart's server is the one under test,
// and on this 2-core machine the clients' own work competes with it, as it
// does in every scenario of the harness.

// restartResult is one rule's measurement.
type restartResult struct {
	Rule       string
	Clients    int
	Peak       int           // upgrades accepted in the busiest second
	Resumed    time.Duration // from Shutdown until the last client read its hello
	P50, P99   time.Duration // of the clients' resume times
	Failed     int64         // connection attempts that failed
	Shutdown   time.Duration // how long Shutdown took
	NotResumed int           // clients not resumed within the limit
}

var waitReason = regexp.MustCompile(`reconnect in (\d+)ms$`)

// restartMain runs both rules with n clients and prints a table.
func restartMain(n int, limit time.Duration) int {
	fmt.Fprintf(stderr, "bench: restart, %d clients, load %s\n", n, loadavg())
	var results []restartResult
	for _, rule := range []string{"jitter", "spread"} {
		r, err := measureRestart(rule, n, limit)
		if err != nil {
			fmt.Fprintln(stderr, "bench: restart:", err)
			return 1
		}
		fmt.Fprintf(stderr, "bench: restart %s done, load %s\n", rule, loadavg())
		results = append(results, r)
	}
	fmt.Printf("| reconnect rule | clients | Shutdown took | peak upgrades/s (busiest second) | all resumed after | resume p50 / p99 | failed attempts | not resumed |\n|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range results {
		fmt.Printf("| %s | %d | %.2f s | %d | %.2f s | %.2f / %.2f s | %d | %d |\n", r.Rule, r.Clients, r.Shutdown.Seconds(), r.Peak, r.Resumed.Seconds(), r.P50.Seconds(), r.P99.Seconds(), r.Failed, r.NotResumed)
	}
	for _, r := range results {
		if r.NotResumed > 0 {
			return 1
		}
	}
	return 0
}

// restartServer is a Registry served on ln.
type restartServer struct {
	reg *notify.Registry
	srv *http.Server
	mu  sync.Mutex
	at  []time.Time // each accepted connection's registration
}

func startRestartServer(ln net.Listener, rate float64) *restartServer {
	s := &restartServer{}
	s.reg = notify.New(&notify.Options{
		ReconnectRate: rate,
		Logger:        discardLogger,
		OnConnect: func(*notify.Client) {
			s.mu.Lock()
			s.at = append(s.at, time.Now())
			s.mu.Unlock()
		},
	})
	mux := http.NewServeMux()
	mux.Handle("GET /ws", s.reg.Handler())
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardHTTPLog}
	go s.srv.Serve(ln)
	return s
}

func (s *restartServer) stop(ctx context.Context) {
	_ = s.srv.Shutdown(ctx)
	_ = s.reg.Shutdown(ctx)
}

// measureRestart runs one rule.
func measureRestart(rule string, n int, limit time.Duration) (restartResult, error) {
	res := restartResult{Rule: rule, Clients: n}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	addr := ln.Addr().String()
	url := "ws://" + addr + "/ws?since=now"
	old := startRestartServer(ln, 0)

	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var failed atomic.Int64
	var shutdownAt atomic.Pointer[time.Time]
	resumed := make([]time.Duration, n)
	connected := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // dials in flight while connecting the first time
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			c, err := dialHello(ctx, url)
			<-sem
			connected <- err
			if err != nil {
				return
			}
			// Read until the server closes, as notify.js would.
			var reason string
			for {
				if _, _, err := c.Read(ctx); err != nil {
					var ce websocket.CloseError
					if errors.As(err, &ce) {
						reason = ce.Reason
					}
					break
				}
			}
			c.CloseNow()
			const minDelay, maxDelay = 500 * time.Millisecond, 30 * time.Second
			delay := rand.N(minDelay)
			if m := waitReason.FindStringSubmatch(reason); m != nil && rule == "spread" {
				ms, _ := strconv.Atoi(m[1])
				delay = time.Duration(ms) * time.Millisecond
			}
			for attempt := 1; ; attempt++ {
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return
				}
				c, err := dialHello(ctx, url)
				if err == nil {
					resumed[i] = time.Since(*shutdownAt.Load())
					c.Close(websocket.StatusNormalClosure, "")
					return
				}
				if ctx.Err() != nil {
					return
				}
				failed.Add(1)
				delay = rand.N(min(maxDelay, minDelay<<attempt))
			}
		})
	}
	for range n {
		if err := <-connected; err != nil {
			cancel()
			wg.Wait()
			old.stop(context.Background())
			return res, fmt.Errorf("connecting: %w", err)
		}
	}
	for old.reg.Len() < n { // every client registered: its hello was read
		time.Sleep(10 * time.Millisecond)
	}

	// The restart: stop accepting, shut down (each client is told its
	// wait), and serve the same address again at once.
	t0 := time.Now()
	shutdownAt.Store(&t0)
	_ = ln.Close()
	old.stop(ctx)
	res.Shutdown = time.Since(t0)
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		cancel()
		wg.Wait()
		return res, fmt.Errorf("listening again on %s: %w", addr, err)
	}
	next := startRestartServer(ln2, 0)
	wg.Wait()
	next.stop(context.Background())

	var times []time.Duration
	for _, d := range resumed {
		if d == 0 {
			res.NotResumed++
			continue
		}
		times = append(times, d)
	}
	slices.Sort(times)
	if len(times) > 0 {
		res.Resumed = times[len(times)-1]
		res.P50 = times[len(times)/2]
		res.P99 = times[len(times)*99/100]
	}
	res.Failed = failed.Load()
	res.Peak = peakPerSecond(next.at)
	return res, nil
}

// dialHello connects and reads the notify.hello, which the server sends
// once the connection is registered.
func dialHello(ctx context.Context, url string) (*websocket.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(dctx, url, nil)
	if err != nil {
		return nil, err
	}
	if _, _, err := c.Read(dctx); err != nil {
		c.CloseNow()
		return nil, err
	}
	return c, nil
}

// peakPerSecond is the most events in any one-second span of times.
func peakPerSecond(times []time.Time) int {
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	peak, j := 0, 0
	for i := range times {
		for times[i].Sub(times[j]) >= time.Second {
			j++
		}
		peak = max(peak, i-j+1)
	}
	return peak
}

var (
	stderr         = os.Stderr
	discardLogger  = slog.New(slog.DiscardHandler)
	discardHTTPLog = log.New(io.Discard, "", 0)
)
