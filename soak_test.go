package notify_test

import (
	"bytes"
	"context"
	"flag"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

var soakFor = flag.Duration("soak", 0, "run TestSoak for this long, e.g. -soak=2m (0 skips it)")

// soakSample is one reading of the soak's gauges.
type soakSample struct {
	at         time.Duration
	conns      int
	goroutines int
	heap       uint64 // HeapInuse after a GC
	fds        int
	p50, p99   time.Duration // delivery latency over the last interval
	delivered  uint64        // frames written over the last interval
	connects   int64         // connections opened over the last interval
}

// TestSoak keeps 2,000 connections busy for -soak: each lives 5 to 35
// seconds (about 100 replacements a second) and leaves by a close
// handshake, by closing TCP or by a reset, while 20 messages a second are
// broadcast to all of them. Every second it records connections,
// goroutines, heap, file descriptors and the p50/p99 delivery latency
// (Broadcast to client read, measured by one client in ten). After a
// warm-up third, the last third's means must not exceed the middle third's
// beyond a tolerance: nothing grows with time.
//
//	go test -run Soak -soak=2m -v
func TestSoak(t *testing.T) {
	if *soakFor == 0 {
		t.Skip("a bounded soak; run it with: go test -run Soak -soak=2m -v")
	}
	const (
		slots     = 2000
		rate      = 20 // broadcasts per second
		minLife   = 5 * time.Second
		maxLife   = 35 * time.Second
		sampleDur = time.Second
	)
	// newServer's channel of ended connections would fill up over
	// thousands of them: drain it until the Registry is closed (this
	// cleanup, registered first, runs after newServer's).
	var s *server
	drained := make(chan struct{})
	t.Cleanup(func() {
		close(s.gone)
		<-drained
	})
	s = newServer(t, nil)
	var ended, abnormal atomic.Int64
	go func() {
		defer close(drained)
		for err := range s.gone {
			ended.Add(1)
			if err != nil {
				abnormal.Add(1)
			}
		}
	}()
	fdsBefore := countFDs(t)
	ctx, stop := context.WithCancel(context.Background())
	var bg sync.WaitGroup

	var latMu sync.Mutex
	var lats []time.Duration
	var connects, dialErrs atomic.Int64

	// Broadcaster: the payload is the send time.
	bg.Add(1)
	go func() {
		defer bg.Done()
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := s.reg.Broadcast(ctx, notify.SocketMessage{Type: "soak", Data: time.Now().UnixNano()}); err != nil && ctx.Err() == nil {
				t.Errorf("Broadcast: %v", err)
			}
		}
	}()

	// Slots: each keeps one connection alive at a time, replacing it when
	// its life ends. Starts are spread over the first seconds.
	for i := range slots {
		bg.Add(1)
		go func() {
			defer bg.Done()
			select {
			case <-time.After(time.Duration(i) * 2 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			for n := 0; ctx.Err() == nil; n++ {
				soakConn(ctx, s, i%10 == 0, (i+n)%4, minLife+rand.N(maxLife-minLife), &connects, &dialErrs, func(d time.Duration) {
					latMu.Lock()
					lats = append(lats, d)
					latMu.Unlock()
				})
			}
		}()
	}

	var samples []soakSample
	start := time.Now()
	lastSent := s.reg.Stats().Sent
	lastConnects := int64(0)
	tick := time.NewTicker(sampleDur)
	for time.Since(start) < *soakFor {
		<-tick.C
		latMu.Lock()
		window := lats
		lats = nil
		latMu.Unlock()
		slices.Sort(window)
		st := s.reg.Stats()
		sm := soakSample{
			at:         time.Since(start),
			conns:      st.Connections,
			goroutines: runtime.NumGoroutine(),
			heap:       heapInuse(),
			fds:        countFDs(t),
			delivered:  st.Sent - lastSent,
			connects:   connects.Load() - lastConnects,
		}
		if len(window) > 0 {
			sm.p50, sm.p99 = window[len(window)/2], window[len(window)*99/100]
		}
		lastSent, lastConnects = st.Sent, connects.Load()
		samples = append(samples, sm)
	}
	tick.Stop()
	stop()
	bg.Wait()
	// A dial cut short by the end of the soak may still have registered,
	// so at least as many connections end as clients saw open.
	total := connects.Load()
	if !waitFor(20*time.Second, func() bool { return s.reg.Len() == 0 && ended.Load() >= total }) {
		t.Errorf("Len = %d, %d of %d connections ended", s.reg.Len(), ended.Load(), total)
	}
	var fdsAfter int
	if !waitFor(10*time.Second, func() bool { fdsAfter = countFDs(t); return fdsAfter <= fdsBefore+2 }) {
		t.Errorf("file descriptors: %d before, %d after", fdsBefore, fdsAfter)
	}

	t.Logf("%8s %6s %10s %9s %6s %9s %9s %10s %9s", "t", "conns", "goroutines", "heap MiB", "fds", "p50", "p99", "frames/s", "dials/s")
	for i, sm := range samples {
		if i%10 == 9 || i == len(samples)-1 {
			t.Logf("%8v %6d %10d %9.1f %6d %9v %9v %10d %9d", sm.at.Round(time.Second), sm.conns, sm.goroutines,
				mib(sm.heap), sm.fds, sm.p50.Round(10*time.Microsecond), sm.p99.Round(10*time.Microsecond), sm.delivered, sm.connects)
		}
	}
	st := s.reg.Stats()
	t.Logf("soak of %v: %d connections opened (%d dial errors), %d ended abnormally (the resets and FINs, by design); %d broadcasts, %d frames sent, %d dropped, %d slow consumers, %d heartbeat timeouts; fds %d before, %d after",
		*soakFor, total, dialErrs.Load(), abnormal.Load(), st.Broadcasts, st.Sent, st.Dropped, st.SlowConsumers, st.HeartbeatTimeouts, fdsBefore, fdsAfter)

	third := len(samples) / 3
	if third < 3 {
		t.Fatalf("only %d samples: soak for at least 10s", len(samples))
	}
	middle, last := samples[third:2*third], samples[2*third:]
	mean := func(ss []soakSample, f func(soakSample) float64) float64 {
		sum := 0.0
		for _, s := range ss {
			sum += f(s)
		}
		return sum / float64(len(ss))
	}
	for _, g := range []struct {
		name        string
		f           func(soakSample) float64
		ratio, plus float64
	}{
		{"goroutines", func(s soakSample) float64 { return float64(s.goroutines) }, 1.10, 50},
		{"heap MiB", func(s soakSample) float64 { return mib(s.heap) }, 1.25, 4},
		{"fds", func(s soakSample) float64 { return float64(s.fds) }, 1.10, 50},
		{"p99 ms", func(s soakSample) float64 { return float64(s.p99) / 1e6 }, 2, 20},
	} {
		m, l := mean(middle, g.f), mean(last, g.f)
		t.Logf("%-10s middle third %9.2f, last third %9.2f (allowed up to %.2f)", g.name, m, l, m*g.ratio+g.plus)
		if l > m*g.ratio+g.plus {
			t.Errorf("%s grew: middle third %.2f, last third %.2f", g.name, m, l)
		}
	}
	if st.SlowConsumers != 0 || st.HeartbeatTimeouts != 0 {
		t.Errorf("the server closed %d slow consumers and %d silent peers; every client read all along", st.SlowConsumers, st.HeartbeatTimeouts)
	}
}

// soakConn runs one connection of the soak for life, then leaves: mode 0
// and 1 with a close handshake, 2 by closing TCP, 3 with a reset. A
// sampled connection reports each message's delivery latency.
func soakConn(ctx context.Context, s *server, sampled bool, mode int, life time.Duration,
	connects, dialErrs *atomic.Int64, latency func(time.Duration)) {
	var tcp net.Conn
	dctx, cancel := context.WithTimeout(context.WithValue(ctx, connKey{}, &tcp), 10*time.Second)
	c, _, err := websocket.Dial(dctx, s.ws, &websocket.DialOptions{HTTPClient: recordingClient})
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			dialErrs.Add(1)
		}
		return
	}
	connects.Add(1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			if sampled {
				if at, ok := soakSentAt(b); ok {
					latency(time.Since(time.Unix(0, at)))
				}
			}
		}
	}()
	select {
	case <-time.After(life):
	case <-ctx.Done():
	}
	switch mode {
	case 0, 1:
		c.Close(websocket.StatusNormalClosure, "")
	case 2:
		c.CloseNow()
	case 3:
		tcp.(*net.TCPConn).SetLinger(0)
		tcp.Close()
	}
	c.CloseNow()
	<-done
}

// soakSentAt reads the send time from a soak frame's "data" field.
func soakSentAt(b []byte) (int64, bool) {
	_, rest, ok := bytes.Cut(b, []byte(`"data":`))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return n, err == nil
}
