package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

func seqs(ms []wire) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.Seq)
	}
	return out
}

func readN(t testing.TB, c *websocket.Conn, n int) []wire {
	t.Helper()
	var out []wire
	for range n {
		out = append(out, read(t, c))
	}
	return out
}

// gapOf decodes a notify.gap message.
func gapOf(t testing.TB, m wire) (reason string, pos notify.Position) {
	t.Helper()
	if m.Type != notify.TypeGap {
		t.Fatalf("got %+v, want %s", m, notify.TypeGap)
	}
	var d struct {
		Reason string `json:"reason"`
		notify.Position
	}
	if err := json.Unmarshal(m.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d.Reason, d.Position
}

func TestResumeReplaysExactlyWhatWasMissed(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c, pos := dialReady(t, s, "")
	if pos.Seq != 0 || pos.Epoch == "" {
		t.Fatalf("hello position %+v, want seq 0 and an epoch", pos)
	}
	for range 3 {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m"})
	}
	last := readN(t, c, 3)[2].Seq
	c.Close(websocket.StatusNormalClosure, "")
	s.waitGone(t, 1)

	for range 3 { // missed while away
		broadcast(t, s.reg, notify.SocketMessage{Type: "m"})
	}
	c = dial(t, fmt.Sprintf("%s?since=%d&epoch=%s", s.ws, last, pos.Epoch))
	hello := read(t, c)
	var now notify.Position
	json.Unmarshal(hello.Data, &now)
	if diff := cmp.Diff(notify.Position{Epoch: pos.Epoch, Seq: 6}, now); hello.Type != notify.TypeHello || diff != "" {
		t.Fatalf("hello %+v (-want +got):\n%s", hello, diff)
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "live"})
	if diff := cmp.Diff([]uint64{4, 5, 6, 7}, seqs(readN(t, c, 4))); diff != "" {
		t.Errorf("seqs after resume (-want +got):\n%s", diff)
	}
	if got := s.reg.Position(); got != (notify.Position{Epoch: pos.Epoch, Seq: 7}) {
		t.Errorf("Position = %+v", got)
	}
}

func TestResumeGaps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, query, reason string
	}{
		{"expired", "since=2", "expired"},
		{"other epoch", "since=9&epoch=0123456789abcdef", "epoch"},
		{"ahead", "since=99", "ahead"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, &notify.Options{Broker: notify.NewMemoryBroker(&notify.MemoryBrokerOptions{HistoryLength: 3})})
			for range 10 {
				broadcast(t, s.reg, notify.SocketMessage{Type: "m"})
			}
			c := dial(t, s.ws+"?"+tt.query)
			if m := read(t, c); m.Type != notify.TypeHello {
				t.Fatalf("got %+v, want hello", m)
			}
			reason, pos := gapOf(t, read(t, c))
			if reason != tt.reason || pos.Seq != 10 {
				t.Errorf("gap reason %q at %+v, want %q at seq 10", reason, pos, tt.reason)
			}
			broadcast(t, s.reg, notify.SocketMessage{Type: "live"})
			if m := read(t, c); m.Seq != 11 {
				t.Errorf("after the gap got %+v, want live seq 11", m)
			}
		})
	}
}

// TestResumeRacesBroadcasts reconnects a client again and again while
// another goroutine broadcasts, paced faster than the client reads, until
// the client is done: every message must arrive exactly once, in order,
// across all the reconnects, each of which races the broadcasts. It runs
// for both transports.
func TestResumeRacesBroadcasts(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			testResumeRacesBroadcasts(t, tr)
		})
	}
}

// transport connects a test client over one of the two transports.
type transport struct {
	name   string
	server func(testing.TB, *notify.Options) *server
	// connect opens a connection with query, reads its hello, and returns
	// a function reading the next message and one dropping the connection
	// (politely when polite, as far as the transport has a way).
	connect func(t testing.TB, s *server, query string) (next func() wire, drop func(polite bool))
}

var transports = []transport{
	{"WebSocket", newServer, func(t testing.TB, s *server, query string) (func() wire, func(bool)) {
		c := dial(t, s.ws+"?"+query)
		if m := read(t, c); m.Type != notify.TypeHello {
			t.Fatalf("got %+v, want hello", m)
		}
		return func() wire { return read(t, c) }, func(polite bool) {
			if polite {
				c.Close(websocket.StatusNormalClosure, "")
			} else {
				c.CloseNow()
			}
		}
	}},
	{"SSE", newServer, connectStream},
	{"SSE over HTTP/2", newServerH2, connectStream},
}

func connectStream(t testing.TB, s *server, query string) (func() wire, func(bool)) {
	sc := stream(t, s.srv.Client(), s.srv.URL+"?"+query, nil)
	sc.hello()
	return sc.msg, func(bool) { sc.close() }
}

func testResumeRacesBroadcasts(t *testing.T, tr transport) {
	const rounds, history = 100, 100_000
	s := tr.server(t, &notify.Options{
		QueueLength: history, QueueBytes: 64 << 20,
		Broker: notify.NewMemoryBroker(&notify.MemoryBrokerOptions{HistoryLength: history}),
	})
	pos := s.reg.Position()
	stop, done := make(chan struct{}), make(chan int)
	go func() {
		sent := 0
		defer func() { done <- sent }()
		tick := time.NewTicker(100 * time.Microsecond) // paces the load; nothing waits on it
		defer tick.Stop()
		for sent < history*9/10 { // never past what history holds
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := s.reg.Broadcast(context.Background(), notify.SocketMessage{Type: "m"}); err != nil {
				t.Errorf("Broadcast: %v", err)
				return
			}
			sent++
		}
	}()
	var last uint64
	raced := 0
	for round := range rounds {
		next, drop := tr.connect(t, s, fmt.Sprintf("since=%d&epoch=%s", last, pos.Epoch))
		for range 1 + round*37%200 {
			m := next()
			if m.Seq != last+1 {
				t.Fatalf("round %d: got seq %d after %d", round, m.Seq, last)
			}
			last = m.Seq
		}
		if s.reg.Position().Seq > last {
			raced++ // broadcasts went on while this connection resumed and read
		}
		drop(round%2 == 0)
	}
	close(stop)
	sent := <-done
	t.Logf("%d messages received exactly once over %d connections, %d of which raced the broadcaster (%d broadcast)",
		last, rounds, raced, sent)
	if raced < rounds/4 { // a precondition: most resumes must race broadcasts
		t.Errorf("only %d of %d connections raced the broadcaster", raced, rounds)
	}
}

func TestTopicsFilterDeliveryAndReplay(t *testing.T) {
	t.Parallel()
	marker := make(chan struct{}, 1)
	s := newServer(t, &notify.Options{OnMessage: func(context.Context, *notify.Client, []byte) { marker <- struct{}{} }})
	sub, _ := dialReady(t, s, "&topic=orders")
	all, _ := dialReady(t, s, "")
	broadcast(t, s.reg, notify.SocketMessage{Type: "o", Topic: "orders"})
	broadcast(t, s.reg, notify.SocketMessage{Type: "i", Topic: "invoices"})
	broadcast(t, s.reg, notify.SocketMessage{Type: "e"})
	if diff := cmp.Diff([]uint64{1, 3}, seqs(readN(t, sub, 2))); diff != "" {
		t.Errorf("subscriber (-want +got):\n%s", diff)
	}
	if m := read(t, all); m.Seq != 3 {
		t.Errorf("unsubscribed client got %+v, want only seq 3", m)
	}

	// At run time: subscribe to invoices, unsubscribe from orders. Reads are
	// in order, so once OnMessage sees the marker both were applied.
	for _, f := range []string{`{"type":"notify.subscribe","topic":"invoices"}`, `{"type":"notify.unsubscribe","topic":"orders"}`, `{"type":"marker"}`} {
		if err := sub.Write(context.Background(), websocket.MessageText, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	<-marker
	broadcast(t, s.reg, notify.SocketMessage{Type: "o", Topic: "orders"})
	broadcast(t, s.reg, notify.SocketMessage{Type: "i", Topic: "invoices"})
	if m := read(t, sub); m.Seq != 5 {
		t.Errorf("after resubscribing got %+v, want seq 5", m)
	}

	// Replay honours topics too.
	c := dial(t, s.ws+"?since=0&topic=invoices")
	read(t, c)                                                                 // hello
	if diff := cmp.Diff([]uint64{2, 3, 5}, seqs(readN(t, c, 3))); diff != "" { // 3 had no topic: for everyone
		t.Errorf("replay for invoices (-want +got):\n%s", diff)
	}
}

func TestTopicAuthorization(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{
		Authorize: func(r *http.Request) (notify.Identity, error) {
			return notify.Identity{User: r.Header.Get("X-User")}, nil
		},
		AuthorizeTopic: func(ctx context.Context, id notify.Identity, topic string) error {
			if !strings.HasPrefix(topic, "tenant:"+id.User+":") {
				return fmt.Errorf("not your tenant")
			}
			return nil
		},
	})
	header := http.Header{"X-User": {"acme"}}
	ctx := context.Background()
	_, resp, err := websocket.Dial(ctx, s.ws+"?topic=tenant:globex:orders", &websocket.DialOptions{HTTPHeader: header})
	if err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign tenant topic at upgrade: err %v, response %v; want 403", err, resp)
	}
	c, _, err := websocket.Dial(ctx, s.ws+"?since=now&topic=tenant:acme:orders", &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	read(t, c) // hello
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"notify.subscribe","topic":"tenant:globex:orders"}`))
	if m := read(t, c); m.Type != notify.TypeError || !strings.Contains(string(m.Data), "not your tenant") {
		t.Errorf("run-time subscribe to a foreign tenant: got %+v, want notify.error", m)
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "x", Topic: "tenant:globex:orders"})
	broadcast(t, s.reg, notify.SocketMessage{Type: "y", Topic: "tenant:acme:orders"})
	if m := read(t, c); m.Type != "y" {
		t.Errorf("got %+v, want only the own tenant's message", m)
	}
}

func TestTargetUserAndClient(t *testing.T) {
	t.Parallel()
	ids := make(chan string, 3)
	s := newServer(t, &notify.Options{
		Authorize: func(r *http.Request) (notify.Identity, error) {
			return notify.Identity{User: r.URL.Query().Get("user")}, nil
		},
		OnConnect: func(c *notify.Client) { ids <- c.ID() },
	})
	ada1, _ := dialReady(t, s, "&user=ada")
	id1 := <-ids
	ada2, _ := dialReady(t, s, "&user=ada")
	<-ids
	bob, _ := dialReady(t, s, "&user=bob")
	<-ids

	broadcast(t, s.reg, notify.SocketMessage{Type: "for.ada", User: "ada"})
	broadcast(t, s.reg, notify.SocketMessage{Type: "for.one", ClientID: id1})
	broadcast(t, s.reg, notify.SocketMessage{Type: "for.all"})
	got := map[string][]string{}
	for name, c := range map[string]*websocket.Conn{"ada1": ada1, "ada2": ada2, "bob": bob} {
		n := map[string]int{"ada1": 3, "ada2": 2, "bob": 1}[name]
		for _, m := range readN(t, c, n) {
			got[name] = append(got[name], m.Type)
		}
	}
	want := map[string][]string{
		"ada1": {"for.ada", "for.one", "for.all"},
		"ada2": {"for.ada", "for.all"},
		"bob":  {"for.all"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}

	// A user's messages are replayed to that user only.
	c := dial(t, s.ws+"?since=0&user=bob")
	read(t, c) // hello
	broadcast(t, s.reg, notify.SocketMessage{Type: "live"})
	if diff := cmp.Diff([]uint64{3, 4}, seqs(readN(t, c, 2))); diff != "" {
		t.Errorf("bob's replay (-want +got):\n%s", diff)
	}
}

// TestSlowConsumerResumesWithoutLoss: a client closed for overflow keeps
// what it received, reconnects from its last seq and ends with everything.
func TestSlowConsumerResumesWithoutLoss(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{QueueLength: 8})
	c, pos := dialReady(t, s, "")
	payload := strings.Repeat("z", 32<<10)
	const n = 200 // about 6 MiB, more than loopback buffers hold: the queue overflows
	for range n {
		broadcast(t, s.reg, notify.SocketMessage{Type: "big", Data: payload})
	}
	errs := s.waitGone(t, 1)
	if closeCode(errs[0]) != notify.CloseSlowConsumer {
		t.Fatalf("ended with %v, want a slow-consumer close", errs[0])
	}
	got, _ := readUntilClose(t, c)
	last := uint64(0)
	if len(got) > 0 {
		last = got[len(got)-1].Seq
	}
	c = dial(t, fmt.Sprintf("%s?since=%d&epoch=%s", s.ws, last, pos.Epoch))
	read(t, c) // hello
	got = append(got, readN(t, c, n-int(last))...)
	for i, m := range got {
		if m.Seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d: lost or duplicated across the slow-consumer close", i, m.Seq)
		}
	}
	t.Logf("closed as slow after %d of %d messages; resumed the other %d", last, n, n-int(last))
}
