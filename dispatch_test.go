package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// readAll reads messages until the close frame, for a goroutine other than
// the test's: it returns an error instead of failing the test.
func readAll(c *websocket.Conn) ([]wire, websocket.StatusCode, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []wire
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return out, -1, fmt.Errorf("no close within the deadline: %w", err)
			}
			return out, websocket.CloseStatus(err), nil
		}
		var m wire
		if err := json.Unmarshal(b, &m); err != nil {
			return out, -1, fmt.Errorf("read %q: %w", b, err)
		}
		out = append(out, m)
	}
}

// TestShutdownDeliversEveryPublishedMessage: Broadcast returns before the
// fan-out; Shutdown called right after still delivers every message whose
// Broadcast returned, in order, before 1001.
func TestShutdownDeliversEveryPublishedMessage(t *testing.T) {
	t.Parallel()
	const clients, msgs = 20, 200
	s := newServer(t, nil)
	type got struct {
		seqs []uint64
		code websocket.StatusCode
		err  error
	}
	results := make(chan got, clients)
	for range clients {
		c, _ := dialReady(t, s, "")
		go func() {
			ms, code, err := readAll(c)
			g := got{code: code, err: err}
			for _, m := range ms {
				g.seqs = append(g.seqs, m.Seq)
			}
			results <- g
		}()
	}
	want := make([]uint64, msgs)
	for i := range want {
		want[i] = uint64(i + 1)
		broadcast(t, s.reg, notify.SocketMessage{Type: "m"})
	}
	if err := s.reg.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for range clients {
		g := <-results
		if g.err != nil {
			t.Fatal(g.err)
		}
		if diff := cmp.Diff(want, g.seqs); diff != "" || g.code != websocket.StatusGoingAway {
			t.Fatalf("close %d after seqs (-want +got):\n%s", g.code, diff)
		}
	}
}

// TestConcurrentPublishersReachEveryMatchingConnectionInOrder: publishers
// racing each other, some to a topic and some to everyone, so that the
// dispatcher's passes mix both; every connection gets exactly the messages
// that match it, each once, in seq order.
func TestConcurrentPublishersReachEveryMatchingConnectionInOrder(t *testing.T) {
	t.Parallel()
	const publishers, each, clients = 8, 50, 6
	// Queues hold everything: the publishers run ahead of the clients.
	s := newServer(t, &notify.Options{QueueLength: publishers * each})
	type got struct {
		topic bool
		seqs  []uint64
		types map[string]int
		code  websocket.StatusCode
		err   error
	}
	results := make(chan got, clients)
	for i := range clients {
		query := ""
		if i%2 == 0 {
			query = "&topic=a"
		}
		c, _ := dialReady(t, s, query)
		go func() {
			ms, code, err := readAll(c)
			g := got{topic: query != "", types: map[string]int{}, code: code, err: err}
			for _, m := range ms {
				g.seqs = append(g.seqs, m.Seq)
				g.types[m.Type]++
			}
			results <- g
		}()
	}
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := notify.SocketMessage{Type: "all"}
			if p%2 == 0 {
				msg = notify.SocketMessage{Type: "a", Topic: "a"}
			}
			for range each {
				if err := s.reg.Broadcast(context.Background(), msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := s.reg.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for range clients {
		g := <-results
		if g.err != nil || g.code != websocket.StatusGoingAway {
			t.Fatalf("closed with %d: %v", g.code, g.err)
		}
		want := map[string]int{"all": publishers / 2 * each}
		if g.topic {
			want["a"] = publishers / 2 * each
		}
		if diff := cmp.Diff(want, g.types); diff != "" {
			t.Errorf("topic %v: messages by type (-want +got):\n%s", g.topic, diff)
		}
		for i := 1; i < len(g.seqs); i++ {
			if g.seqs[i] <= g.seqs[i-1] {
				t.Fatalf("topic %v: seq %d after %d", g.topic, g.seqs[i], g.seqs[i-1])
			}
		}
		if !g.topic {
			continue
		}
		for i, seq := range g.seqs { // a subscriber to a gets everything
			if seq != uint64(i+1) {
				t.Fatalf("subscriber: seq %d at %d, want every seq from 1", seq, i)
			}
		}
	}
}
