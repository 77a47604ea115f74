package notify_test

// This file holds the cases an outside review found by attacking the
// library, each failing on the commit it was found on, and the classes of
// defect they stand for. The review that followed went over every class
// again, across the whole library:
//
//   - amplification: a reply larger than the request that caused it
//     (refusals are short and never echo unbounded input);
//   - unbounded queues: any frame a connection queues, the library's own
//     replies and a resume's replay included, counts against QueueLength
//     and QueueBytes;
//   - hook panics: every hook in Options is contained (500 before the
//     upgrade, 1011 after it);
//   - replay cost: a resume is streamed in chunks within the queue's
//     bounds, shares frames, and reads the broker a chunk at a time;
//   - close-handshake races: what was queued before a close goes out,
//     then the close frame, whatever the peer sends meanwhile;
//   - control-frame floods: pings count against the inbound rate;
//   - limit ordering: cheap limits before the user's Authorize.
//
// Spoofing (raw text shaped like a library message) and decoder panics
// (bad broker data) have their own tests beside NotifyText and the broker.
//
// Most cases here run over an in-memory pipe (pipeServer, in
// helpers_test.go) instead of TCP: a pipe has no buffer, so a write blocks
// until the client reads it, and a test can hold a connection's writer in
// the middle of a frame for as long as it likes without any timing.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

// TestQueueLengthBoundary holds a connection's writer in the middle of a
// frame, so that nothing leaves its queue: QueueLength messages wait, one
// more closes it with 4000, and a client that catches up later still reads
// the frame in flight whole, then the close frame.
func TestQueueLengthBoundary(t *testing.T) {
	t.Parallel()
	const queue = 4
	for _, over := range []bool{false, true} {
		t.Run(fmt.Sprintf("over=%v", over), func(t *testing.T) {
			t.Parallel()
			s := newPipeServer(t, &notify.Options{QueueLength: queue})
			c := s.dialReady(t)
			s.holdWriters(t, 64<<10, c)
			n := queue
			if over {
				n++
			}
			for i := range n {
				broadcast(t, s.reg, notify.SocketMessage{Type: fmt.Sprint("m", i+1)})
			}
			if !over {
				if got := s.reg.Stats().SlowConsumers; got != 0 {
					t.Fatalf("%d slow consumers with exactly QueueLength messages queued", got)
				}
				go s.reg.Shutdown(context.Background())
				types, code := c.frames(t)
				want := []string{"first", "m1", "m2", "m3", "m4"}
				if fmt.Sprint(types) != fmt.Sprint(want) || code != websocket.StatusGoingAway {
					t.Errorf("got %v then close %d, want %v then 1001", types, code, want)
				}
				return
			}
			// The connection leaves the Registry at once, while its writer
			// is still blocked: only then does the client read on.
			if !waitFor(10*time.Second, func() bool { return s.reg.Len() == 0 }) {
				t.Fatal("the slow consumer is still registered")
			}
			types, code := c.frames(t)
			if fmt.Sprint(types) != "[first]" || code != 4000 {
				t.Errorf("got %v then close %d, want the frame in flight whole, then close 4000", types, code)
			}
			if err := <-s.gone; !errors.Is(err, notify.ErrSlowConsumer) || closeCode(err) != 4000 {
				t.Errorf("Add reported %v, want ErrSlowConsumer with 4000", err)
			}
		})
	}
}

// TestRepliesCountAgainstTheQueue: the library's own replies (here
// notify.error for refused subscriptions) are bounded like messages, so a
// client that provokes them and never reads is a slow consumer.
func TestRepliesCountAgainstTheQueue(t *testing.T) {
	t.Parallel()
	s := newPipeServer(t, &notify.Options{QueueLength: 4})
	c := s.dialReady(t)
	s.holdWriters(t, 64<<10, c)
	refused := clientFrame(bitFin|opText, []byte(`{"type":"notify.subscribe","topic":"no such topic"}`))
	// The pipe's Write returns once the server has read the frame, and the
	// server reads the next frame only after handling this one: the
	// unsubscribe (which has no reply) makes sure all five were handled.
	barrier := clientFrame(bitFin|opText, []byte(`{"type":"notify.unsubscribe","topic":"none"}`))
	for _, f := range [][]byte{refused, refused, refused, refused, refused, barrier} {
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	types, code := c.frames(t)
	if fmt.Sprint(types) != "[first]" || code != 4000 {
		t.Errorf("got %v then close %d, want the frame in flight, then 4000", types, code)
	}
}

// TestRefusalsAreSmallAndLimited: a refused subscription is answered with a
// short notify.error that does not echo the request, and a client that
// keeps being refused is closed with 1008.
func TestRefusalsAreSmallAndLimited(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c := dialRawReady(t, s, "")
	big := clientFrame(bitFin|opText, []byte(`{"type":"notify.subscribe","topic":"`+strings.Repeat("<", 30<<10)+`"}`))
	var replies []int
	for {
		if _, err := c.Write(big); err != nil {
			t.Fatal(err)
		}
		op, p, err := c.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if op == opClose {
			if code := binary.BigEndian.Uint16(p); code != 1008 {
				t.Errorf("closed with %d, want 1008", code)
			}
			break
		}
		if bytes.Contains(p, []byte("<")) || bytes.Contains(p, []byte(`\u003c`)) || len(p) > 256 {
			t.Fatalf("reply of %d bytes echoes the request: %.200q", len(p), p)
		}
		replies = append(replies, len(p))
		if len(replies) > 20 {
			t.Fatal("20 refusals and the connection is still open")
		}
	}
	if len(replies) != 8 {
		t.Errorf("%d refusals answered before the close, want 8 (sizes %v)", len(replies), replies)
	}
}

// TestHooksArePanicSafe makes each hook panic: the request is refused with
// 500 or the connection closed with 1011, the panic is logged with its
// stack, and the process and the other connections go on.
func TestHooksArePanicSafe(t *testing.T) {
	t.Parallel()
	boom := func() { panic("notify-test: boom") }
	tests := []struct {
		hook   string
		opts   notify.Options
		query  string
		status int                  // refused before the upgrade with this status
		code   websocket.StatusCode // else closed with this code after it (0: not closed)
		send   string
	}{
		{hook: "Authorize", opts: notify.Options{Authorize: func(r *http.Request) (notify.Identity, error) {
			if r.URL.Query().Has("boom") {
				boom()
			}
			return notify.Identity{}, nil
		}}, query: "?boom", status: 500},
		{hook: "AuthorizeTopic", opts: notify.Options{AuthorizeTopic: func(ctx context.Context, id notify.Identity, topic string) error {
			if topic == "boom" {
				boom()
			}
			return nil
		}}, query: "?topic=boom", status: 500},
		{hook: "AuthorizeTopic", opts: notify.Options{AuthorizeTopic: func(ctx context.Context, id notify.Identity, topic string) error {
			if topic == "boom" {
				boom()
			}
			return nil
		}}, query: "?since=now", code: websocket.StatusInternalError, send: `{"type":"notify.subscribe","topic":"boom"}`},
		{hook: "OnConnect", opts: notify.Options{OnConnect: func(c *notify.Client) {
			if c.Identity().User == "boom" {
				boom()
			}
		}}, query: "?boom", code: websocket.StatusInternalError},
		{hook: "OnMessage", opts: notify.Options{OnMessage: func(ctx context.Context, c *notify.Client, data []byte) {
			boom()
		}}, query: "?since=now", code: websocket.StatusInternalError, send: "hello"},
		{hook: "OnDisconnect", opts: notify.Options{OnDisconnect: func(c *notify.Client, err error) {
			if c.Identity().User == "boom" {
				boom()
			}
		}}, query: "?boom", code: websocket.StatusNormalClosure},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d %d", tt.hook, tt.status, tt.code), func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			tt.opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			if tt.hook == "OnConnect" || tt.hook == "OnDisconnect" {
				tt.opts.Authorize = func(r *http.Request) (notify.Identity, error) {
					if r.URL.Query().Has("boom") {
						return notify.Identity{User: "boom"}, nil
					}
					return notify.Identity{}, nil
				}
			}
			s := newServer(t, &tt.opts)
			bystander, _ := dialReady(t, s, "")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, s.ws+tt.query, nil)
			if tt.status != 0 {
				if err == nil || resp == nil || resp.StatusCode != tt.status {
					t.Fatalf("dial: %v, response %v; want %d", err, resp, tt.status)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseNow()
				if tt.send != "" {
					c.Write(ctx, websocket.MessageText, []byte(tt.send))
				}
				if tt.code == websocket.StatusNormalClosure {
					c.Close(websocket.StatusNormalClosure, "")
				} else {
					for {
						if _, _, err = c.Read(ctx); err != nil {
							break
						}
					}
					if got := websocket.CloseStatus(err); got != tt.code {
						t.Errorf("closed with %d (%v), want %d", got, err, tt.code)
					}
				}
				if tt.code == websocket.StatusInternalError {
					if err := <-s.gone; closeCode(err) != 1011 {
						t.Errorf("Add reported %v, want a 1011 close", err)
					}
				}
			}
			if !waitFor(10*time.Second, func() bool { return strings.Contains(logs.String(), "hook="+tt.hook) }) {
				t.Fatalf("no log of the panic: %s", logs.String())
			}
			if l := logs.String(); !strings.Contains(l, "notify-test: boom") || !strings.Contains(l, "goroutine") {
				t.Errorf("the log has no panic value or stack: %s", l)
			}
			if n := s.reg.Len(); n != 1 {
				t.Errorf("Len = %d, want only the bystander", n)
			}
			checkBystander(t, s, bystander)
		})
	}
}

// TestReplayStaysWithinTheQueueBounds resumes many clients from seq 0 of a
// full history of large messages while none of them reads: the server holds
// a bounded chunk per connection, with frames shared, not a copy of the
// history each. A client that reads gets all of it, in order.
func TestReplayStaysWithinTheQueueBounds(t *testing.T) {
	const history, size, clients = 1000, 4 << 10, 40
	s := newServer(t, &notify.Options{QueueLength: 64})
	for range history {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m", Data: strings.Repeat("x", size)})
	}
	before := heapInuse()
	for range clients {
		dialRaw(t, s, "?since=0")
	}
	if !waitFor(10*time.Second, func() bool { return s.reg.Len() == clients }) {
		t.Fatalf("%d of %d clients registered", s.reg.Len(), clients)
	}
	after := heapInuse()
	grown := float64(after) - float64(before)
	t.Logf("heap grew %.1f MiB for %d clients resuming %d x %d B without reading", grown/(1<<20), clients, history, size)
	if limit := float64(clients) * (1 << 20) / 4; grown > limit {
		t.Errorf("heap grew %.1f MiB, want under %.1f MiB (a quarter MiB per connection)", grown/(1<<20), limit/(1<<20))
	}

	reader := dial(t, s.ws+"?since=0")
	if m := read(t, reader); m.Type != notify.TypeHello {
		t.Fatalf("got %+v, want hello", m)
	}
	for want := uint64(1); want <= history; want++ {
		if m := read(t, reader); m.Seq != want {
			t.Fatalf("got seq %d, want %d", m.Seq, want)
		}
	}
}

// TestShutdownFlushesToAPingingClient: a client that pings while the
// server shuts down still gets every queued message, then 1001.
func TestShutdownFlushesToAPingingClient(t *testing.T) {
	t.Parallel()
	const n = 300
	s := newServer(t, &notify.Options{InboundRate: 1e6, InboundBurst: 1e6})
	c := dialRawReady(t, s, "")
	for i := range n {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m", Data: strings.Repeat("x", 1000+i)})
	}
	shut := make(chan error, 1)
	go func() { shut <- s.reg.Shutdown(context.Background()) }()
	if !waitFor(10*time.Second, func() bool { return s.reg.Stats().Sent >= n }) {
		t.Fatalf("the backlog was not written: %+v", s.reg.Stats())
	}
	for range 200 {
		if _, err := c.Write(clientFrame(bitFin|opPing, []byte("p"))); err != nil {
			break // the server may close once it has the client's close
		}
	}
	types, code := c.frames(t)
	if len(types) != n || code != websocket.StatusGoingAway {
		t.Errorf("got %d of %d messages, then close %d; want all, then 1001", len(types), n, code)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestPingFloodIsRateLimited: pings count against the inbound rate.
func TestPingFloodIsRateLimited(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c := dialRawReady(t, s, "")
	go func() {
		for range 200 {
			if _, err := c.Write(clientFrame(bitFin|opPing, []byte("p"))); err != nil {
				return
			}
		}
	}()
	pongs := 0
	for {
		op, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("after %d pongs: %v, want a close frame", pongs, err)
		}
		if op == opPong {
			pongs++
			continue
		}
		if op == opClose {
			if code := binary.BigEndian.Uint16(p); code != 1008 {
				t.Errorf("closed with %d, want 1008", code)
			}
			break
		}
	}
	if pongs > 40 {
		t.Errorf("%d pongs, want at most the inbound burst (40)", pongs)
	}
}

// TestCapacityIsCheckedBeforeAuthorize: a server at MaxConnections answers
// 503 without running the user's Authorize.
func TestCapacityIsCheckedBeforeAuthorize(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	s := newServer(t, &notify.Options{
		MaxConnections: 1,
		Authorize: func(r *http.Request) (notify.Identity, error) {
			calls.Add(1)
			return notify.Identity{}, nil
		},
	})
	dialReady(t, s, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, s.ws, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial at capacity: %v, %v; want 503", err, resp)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("Authorize ran %d times, want once (not for the refused request)", n)
	}
}

// publishingBroker publishes a message from inside the first History call,
// as a broadcast racing with a handshake would: the replay must stop where
// live delivery begins, so that message arrives once.
type publishingBroker struct {
	*notify.MemoryBroker
	once sync.Once
}

func (b *publishingBroker) History(ctx context.Context, after, upto uint64) ([]notify.BrokerMessage, error) {
	b.once.Do(func() {
		if _, err := b.MemoryBroker.Publish(ctx, notify.BrokerMessage{Body: []byte(`{"type":"raced"}`)}); err != nil {
			panic(err)
		}
	})
	return b.MemoryBroker.History(ctx, after, upto)
}

func TestReplayLiveBoundaryHasNoDuplicate(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{Broker: &publishingBroker{MemoryBroker: notify.NewMemoryBroker(nil)}})
	for range 5 {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m"})
	}
	c := dial(t, s.ws+"?since=2")
	if m := read(t, c); m.Type != notify.TypeHello {
		t.Fatalf("got %+v, want hello", m)
	}
	got := seqs(readN(t, c, 4))
	broadcast(t, s.reg, notify.SocketMessage{Type: "after"})
	got = append(got, read(t, c).Seq)
	if want := []uint64{3, 4, 5, 6, 7}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got seqs %v, want %v", got, want)
	}
}
