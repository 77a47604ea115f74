package notify_test

// Shutdown: queues flushed, then 1001, within the caller's context.
// The tests under load log the figures they prove (run with -v).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

func TestShutdownFlushesQueueThenGoingAway(t *testing.T) {
	t.Parallel()
	reg := notify.New(nil)
	srv := newHTTPServer(t, reg.Handler().ServeHTTP)
	const clients, msgs = 20, 100
	var conns []*websocket.Conn
	for range clients {
		c := dial(t, srv+"?since=now")
		read(t, c) // hello: registered
		conns = append(conns, c)
	}
	for i := range msgs {
		broadcast(t, reg, notify.SocketMessage{Type: "m", Data: i})
	}
	results := make(chan error, clients)
	for _, c := range conns {
		go func() {
			ms, code := readUntilClose(t, c)
			if len(ms) != msgs || code != websocket.StatusGoingAway {
				results <- fmt.Errorf("got %d messages and code %d, want %d and 1001", len(ms), code, msgs)
				return
			}
			results <- nil
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for range clients {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	if err := reg.Broadcast(context.Background(), notify.SocketMessage{Type: "late"}); !errors.Is(err, notify.ErrClosed) {
		t.Errorf("Broadcast after Shutdown = %v, want ErrClosed", err)
	}
	if err := reg.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if n := reg.Len(); n != 0 {
		t.Errorf("Len = %d after Shutdown", n)
	}
}

func TestShutdownRespectsContextWhenClientsStall(t *testing.T) {
	t.Parallel()
	reg := notify.New(nil)
	srv := newHTTPServer(t, reg.Handler().ServeHTTP)
	c := dial(t, srv+"?since=now")
	read(t, c)
	payload := strings.Repeat("y", 64<<10)
	for range 15 { // about 1 MiB: more than loopback socket buffers hold
		broadcast(t, reg, notify.SocketMessage{Type: "big", Data: payload})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := reg.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a stalled client = %v, want DeadlineExceeded", err)
	}
	if n := reg.Len(); n != 0 {
		t.Errorf("Len = %d after Shutdown", n)
	}
}

// TestShutdownManyClients: 1,000 connected clients with messages queued
// for each when Shutdown starts receive every one, in order, then 1001
// going away. The clients are pipes whose writers are held in the middle of
// a first message, so the backlog is exactly what was broadcast after it.
func TestShutdownManyClients(t *testing.T) {
	t.Parallel()
	const clients, msgs = 1000, 20
	s := newPipeServer(t, nil)
	conns := make([]*rawConn, clients)
	for i := range conns {
		conns[i] = s.dialReady(t)
	}
	s.holdWriters(t, 64<<10, conns...)
	for i := range msgs {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m", Data: i})
	}
	// Broadcast returns once the message is published; wait until the
	// dispatcher has queued them all. Sent counts the hellos too, so this
	// understates the backlog.
	var backlog uint64
	if !waitFor(10*time.Second, func() bool {
		st := s.reg.Stats()
		backlog = st.Queued - st.Sent
		return backlog >= clients*msgs
	}) {
		t.Fatalf("%d frames queued when Shutdown starts, want at least %d", backlog, clients*msgs)
	}

	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- s.reg.Shutdown(context.Background()) }()
	results := make(chan error, clients)
	for _, c := range conns {
		go func() {
			code, texts := c.readClose()
			want := uint64(2) // after "first"
			for _, text := range texts[1:] {
				if seq, ok := parseSeq([]byte(text)); !ok || seq != want {
					results <- fmt.Errorf("got seq %d, want %d", seq, want)
					return
				}
				want++
			}
			if code != websocket.StatusGoingAway || want != msgs+2 {
				results <- fmt.Errorf("got %d messages then close %d, want %d then 1001", want-2, code, msgs)
				return
			}
			results <- nil
		}()
	}
	failed := 0
	for range clients {
		if err := <-results; err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	st := s.reg.Stats()
	t.Logf("Shutdown of %d clients with %d frames queued took %v; %d clients got all %d messages then 1001; %d frames dropped",
		clients, clients*msgs, time.Since(start).Round(time.Millisecond), clients-failed, msgs, st.Dropped)
	if st.Dropped != 0 || st.Connections != 0 {
		t.Errorf("Stats = %+v, want nothing dropped and no connection left", st)
	}
}

// TestShutdownRespectsContextWithManyStalledClients: 16 clients that
// never read have megabytes queued each; 100 others read along. Shutdown
// gives up at its deadline, drops whoever is left and returns once every
// connection's goroutines have ended.
func TestShutdownRespectsContextWithManyStalledClients(t *testing.T) {
	t.Parallel()
	const stalled, readers = 16, 100
	s := newServer(t, &notify.Options{QueueBytes: 64 << 20, QueueLength: 1 << 12})
	dialMany(t, s, stalled, "&topic=big") // never read again
	var wg sync.WaitGroup
	for _, c := range dialMany(t, s, readers, "") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
	}
	payload := strings.Repeat("x", 64<<10)
	for i := range 96 { // 6 MiB for each stalled client: more than its socket holds
		broadcast(t, s.reg, notify.SocketMessage{Type: "big", Topic: "big", Data: payload})
		broadcast(t, s.reg, notify.SocketMessage{Type: "small", Data: i})
	}
	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := s.reg.Shutdown(ctx)
	took := time.Since(start)
	errs := s.waitGone(t, stalled+readers)
	wg.Wait()
	dropped := 0
	for _, err := range errs {
		if err != nil {
			dropped++
		}
	}
	errs = slices.DeleteFunc(errs, func(err error) bool { return err == nil })[:min(dropped, 1)]
	t.Logf("Shutdown with %d stalled and %d reading clients returned %v after %v (deadline %v); %d connections reported an error",
		stalled, readers, err, took.Round(time.Millisecond), deadline, dropped)
	if dropped != 0 {
		t.Errorf("%d connections reported an error to OnDisconnect, want nil for every connection Shutdown ended (e.g. %v)", dropped, errs)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if n := s.reg.Len(); n != 0 {
		t.Errorf("Len = %d after Shutdown", n)
	}
}
