package notify_test

// Churn: clients that come and go, cleanly or not, leave nothing behind.
// The tests under load log the figures they prove (run with -v).

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

// TestConcurrentChurn connects, disconnects and broadcasts from many
// goroutines at once; run it with -race. TestMain checks that nothing leaks.
func TestConcurrentChurn(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	for range 4 { // each broadcasts every millisecond: steady load, not a flood
		bg.Add(1)
		go func() {
			defer bg.Done()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if err := s.reg.Broadcast(ctx, notify.SocketMessage{Type: "tick"}); err != nil && ctx.Err() == nil {
					t.Errorf("Broadcast: %v", err)
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := websocket.Dial(ctx, s.ws+"?since=now", nil)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer c.CloseNow()
			for range 3 {
				if _, _, err := c.Read(ctx); err != nil {
					t.Errorf("read: %v", err)
					return
				}
			}
			if i%2 == 0 {
				c.Close(websocket.StatusNormalClosure, "")
			} // else: dropped by CloseNow, without a handshake
		}()
	}
	wg.Wait()
	cancel()
	bg.Wait()
	s.waitGone(t, 100)
	if n := s.reg.Len(); n != 0 {
		t.Errorf("Len = %d after every client left", n)
	}
}

// TestAbruptDisconnects drops connections in the middle of a frame, the
// way crashing clients and middleboxes do: the server notices, removes the
// connection and reports a read error, and nobody else notices.
func TestAbruptDisconnects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		drop func(c *rawConn)
	}{
		{"RST mid-header", func(c *rawConn) {
			c.Write([]byte{bitFin | opText, 0xFE}) // 16-bit length follows, never sent
			c.reset()
		}},
		{"RST mid-payload", func(c *rawConn) {
			c.Write(append(frameHeader(bitFin|opText, 1000, true), "only ten b"...))
			c.reset()
		}},
		{"RST mid-fragmented message", func(c *rawConn) {
			c.Write(clientFrame(opText, []byte("first half")))
			c.reset()
		}},
		{"FIN mid-payload (half-close)", func(c *rawConn) {
			c.Write(append(frameHeader(bitFin|opText, 1000, true), "partial"...))
			c.Conn.(*net.TCPConn).CloseWrite()
		}},
		{"RST right after the upgrade", func(c *rawConn) { c.reset() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, nil)
			bystander, _ := dialReady(t, s, "")
			c := dialRawReady(t, s, "")
			start := time.Now()
			tt.drop(c)
			err := s.waitGone(t, 1)[0]
			t.Logf("removed %v after the drop: %v", time.Since(start).Round(time.Millisecond), err)
			if err == nil || closeCode(err) != -1 || errors.Is(err, context.Canceled) {
				t.Errorf("OnDisconnect err = %v, want the read error, without a close code", err)
			}
			if st := s.reg.Stats(); st.ReadErrors != 1 {
				t.Errorf("Stats.ReadErrors = %d, want 1", st.ReadErrors)
			}
			if n := s.reg.Len(); n != 1 {
				t.Errorf("Len = %d, want only the bystander", n)
			}
			checkBystander(t, s, bystander)
		})
	}
}

// TestChurnLeavesNothingBehind connects 1,000 clients, at most 50 at a
// time, while a message is broadcast every millisecond. Each reads three
// messages and leaves: half with a close handshake, a quarter by closing
// TCP without one, a quarter with a TCP reset. Afterwards the Registry is
// empty and the process has the file descriptors and goroutines it had
// before (TestMain's goleak check covers the rest).
//
// Not parallel: it counts the descriptors and goroutines of the whole
// process, so it runs before the parallel tests start.
func TestChurnLeavesNothingBehind(t *testing.T) {
	const clients, concurrent = 1000, 50
	s := newServer(t, nil)
	fdsBefore, goBefore := countFDs(t), runtime.NumGoroutine()
	start := time.Now()

	ctx, cancel := context.WithCancel(context.Background())
	var peakFDs, peakLen int
	sent := 0
	broadcasting := make(chan struct{})
	go func() {
		defer close(broadcasting)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := s.reg.Broadcast(ctx, notify.SocketMessage{Type: "tick"}); err != nil && ctx.Err() == nil {
				t.Errorf("Broadcast: %v", err)
			}
			sent++
			if i%20 == 0 {
				peakFDs, peakLen = max(peakFDs, countFDs(t)), max(peakLen, s.reg.Len())
			}
		}
	}()

	sem := make(chan struct{}, concurrent)
	var wg sync.WaitGroup
	for i := range clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var tcp net.Conn
			dctx, dcancel := context.WithTimeout(context.WithValue(ctx, connKey{}, &tcp), 20*time.Second)
			defer dcancel()
			c, _, err := websocket.Dial(dctx, s.ws, &websocket.DialOptions{HTTPClient: recordingClient})
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			defer c.CloseNow()
			for range 3 {
				if _, _, err := c.Read(dctx); err != nil {
					t.Errorf("client %d: read: %v", i, err)
					return
				}
			}
			switch i % 4 {
			case 0, 1:
				c.Close(websocket.StatusNormalClosure, "")
			case 2:
				c.CloseNow() // FIN, no close frame
			case 3:
				tcp.(*net.TCPConn).SetLinger(0)
				tcp.Close() // RST
			}
		}()
	}
	wg.Wait()
	cancel()
	<-broadcasting
	errs := s.waitGone(t, clients)
	elapsed := time.Since(start)
	if n := s.reg.Len(); n != 0 {
		t.Errorf("Len = %d after every client left", n)
	}
	var fdsAfter, goAfter int
	fdsBack := waitFor(10*time.Second, func() bool { fdsAfter = countFDs(t); return fdsAfter <= fdsBefore+2 })
	goBack := waitFor(10*time.Second, func() bool { goAfter = runtime.NumGoroutine(); return goAfter <= goBefore+2 })
	abnormal := 0
	for _, err := range errs {
		if err != nil {
			abnormal++
		}
	}
	st := s.reg.Stats()
	t.Logf("%d clients (%d at a time) in %v while %d broadcasts went out: %d frames sent, %d dropped, "+
		"%d ended with a read error (the resets and FINs); peak %d connections; fds before %d, peak %d, after %d; goroutines before %d, after %d",
		clients, concurrent, elapsed.Round(time.Millisecond), sent, st.Sent, st.Dropped, abnormal, peakLen,
		fdsBefore, peakFDs, fdsAfter, goBefore, goAfter)
	if !fdsBack {
		t.Errorf("file descriptors: %d before, %d after", fdsBefore, fdsAfter)
	}
	if !goBack {
		t.Errorf("goroutines: %d before, %d after", goBefore, goAfter)
	}
	if st.SlowConsumers != 0 || st.HeartbeatTimeouts != 0 {
		t.Errorf("Stats = %+v: no client should have been closed by the server", st)
	}
}
