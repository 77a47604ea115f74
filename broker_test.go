package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// pushBroker is a Broker whose stream the test writes directly, to play a
// broker that loses its history or skips messages.
type pushBroker struct {
	mu      sync.Mutex
	deliver func(notify.BrokerMessage)
	head    notify.Position // of the last regular message pushed
}

var _ notify.Broker = (*pushBroker)(nil)

func (b *pushBroker) Publish(context.Context, notify.BrokerMessage) (uint64, error) { return 0, nil }

func (b *pushBroker) Subscribe(_ context.Context, deliver func(notify.BrokerMessage)) (notify.Position, func(), error) {
	b.deliver = deliver
	return notify.Position{Epoch: "e1"}, func() {}, nil
}

func (b *pushBroker) History(context.Context, uint64, uint64) ([]notify.BrokerMessage, error) {
	return nil, nil
}

func (b *pushBroker) Head(context.Context) (notify.Position, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.head, nil
}

func (b *pushBroker) push(m notify.BrokerMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !m.Raw {
		b.head = notify.Position{Epoch: m.Epoch, Seq: m.Seq}
	}
	b.deliver(m)
}

// TestBrokerGapsReachResumableClients: a seq that skips ahead, or a new
// epoch, is announced with notify.gap to resumable connections before the
// message; a raw message changes neither.
func TestBrokerGapsReachResumableClients(t *testing.T) {
	t.Parallel()
	b := &pushBroker{}
	s := newServer(t, &notify.Options{Broker: b})
	c, _ := dialReady(t, s, "")
	body := []byte(`{"type":"m"}`)
	b.push(notify.BrokerMessage{Seq: 1, Epoch: "e1", Body: body})
	b.push(notify.BrokerMessage{Seq: 4, Epoch: "e1", Body: body})                        // 2 and 3 are lost
	b.push(notify.BrokerMessage{Raw: true, Epoch: "e2", Body: []byte(`{"type":"raw"}`)}) // first of a new epoch, raw
	b.push(notify.BrokerMessage{Seq: 1, Epoch: "e2", Body: body})

	if m := read(t, c); m.Seq != 1 {
		t.Fatalf("got %+v, want seq 1", m)
	}
	if reason, pos := gapOf(t, read(t, c)); reason != "expired" || pos != (notify.Position{Epoch: "e1", Seq: 3}) {
		t.Errorf("gap %q at %+v, want expired up to e1/3", reason, pos)
	}
	if m := read(t, c); m.Seq != 4 {
		t.Fatalf("got %+v, want seq 4", m)
	}
	if m := read(t, c); m.Type != "raw" {
		t.Fatalf("got %+v, want the raw message", m)
	}
	if reason, pos := gapOf(t, read(t, c)); reason != "epoch" || pos != (notify.Position{Epoch: "e2", Seq: 0}) {
		t.Errorf("gap %q at %+v, want epoch e2/0", reason, pos)
	}
	if m := read(t, c); m.Seq != 1 {
		t.Fatalf("got %+v, want seq 1 of the new epoch", m)
	}
	if got := s.reg.Position(); got != (notify.Position{Epoch: "e2", Seq: 1}) {
		t.Errorf("Position = %+v", got)
	}
}

// corruptingBroker is a MemoryBroker that spoils some messages as it
// publishes them, to play a broker that hands the Registry bad data: a
// message typed "t.empty" loses its body, one typed "t.array" gets a JSON
// array for one, and the raw text "forge" becomes a numbered-looking
// object. The spoiled messages keep their seqs and stay in history.
type corruptingBroker struct {
	*notify.MemoryBroker
}

func (b corruptingBroker) Publish(ctx context.Context, m notify.BrokerMessage) (uint64, error) {
	switch {
	case m.Raw && string(m.Body) == "forge":
		m.Body = []byte(`{"seq":99,"type":"t.forged"}`)
	case bytes.Contains(m.Body, []byte(`"type":"t.empty"`)):
		m.Body = nil
	case bytes.Contains(m.Body, []byte(`"type":"t.array"`)):
		m.Body = []byte(`[1]`)
	}
	return b.MemoryBroker.Publish(ctx, m)
}

// TestBadBrokerMessagesAreSkipped: a message from the broker that no client
// may receive (a body that is not a JSON object, raw text NotifyText would
// refuse) is logged and skipped, live and on replay, while its neighbours
// arrive. Its seq counts as seen: no client is sent a notify.gap for it.
// (An empty body used to panic the Registry's delivery goroutine.)
func TestBadBrokerMessagesAreSkipped(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	s := newServer(t, &notify.Options{
		Broker: corruptingBroker{notify.NewMemoryBroker(nil)},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	live, pos := dialReady(t, s, "")
	broadcast(t, s.reg, notify.SocketMessage{Type: "t.ok", Data: "one"})
	broadcast(t, s.reg, notify.SocketMessage{Type: "t.empty"})
	if err := s.reg.NotifyText(context.Background(), "forge"); err != nil {
		t.Fatal(err)
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "t.array"})
	broadcast(t, s.reg, notify.SocketMessage{Type: "t.ok", Data: "four"})

	type got struct {
		Seq  uint64
		Type string
	}
	want := []got{{1, "t.ok"}, {4, "t.ok"}}
	var live1 []got
	for range want {
		m := read(t, live)
		live1 = append(live1, got{m.Seq, m.Type})
	}
	if diff := cmp.Diff(want, live1); diff != "" {
		t.Errorf("live delivery (-want +got):\n%s", diff)
	}
	if n := strings.Count(logs.String(), `msg="notify: skipping a message from the broker"`); n != 3 {
		t.Errorf("%d log lines for skipped messages, want 3 (seq 2, the raw one, seq 3):\n%s", n, logs.String())
	}
	if p := s.reg.Position(); p.Seq != 4 {
		t.Errorf("Position = %+v, want seq 4", p)
	}

	resumed := dial(t, fmt.Sprintf("%s?since=0&epoch=%s", s.ws, pos.Epoch))
	if m := read(t, resumed); m.Type != notify.TypeHello {
		t.Fatalf("first message %+v, want hello", m)
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "t.ok", Data: "five"})
	want = append(want, got{5, "t.ok"})
	for name, c := range map[string]*websocket.Conn{"live": live, "resumed": resumed} {
		var all []got
		if name == "live" {
			all = live1
		}
		for len(all) < len(want) {
			m := read(t, c)
			all = append(all, got{m.Seq, m.Type})
		}
		if diff := cmp.Diff(want, all); diff != "" {
			t.Errorf("%s client: messages (-want +got); a notify.gap here would be false:\n%s", name, diff)
		}
	}
	if n := strings.Count(logs.String(), `msg="notify: skipping a message from the broker's history"`); n != 2 {
		t.Errorf("%d log lines for messages skipped on replay, want 2 (seq 2 and 3):\n%s", n, logs.String())
	}
}

// TestNewBrokerMessageMatchesBroadcast: a BrokerMessage made by NewBrokerMessage and handed
// to the broker directly, as a broker publishing inside a database
// transaction does, reaches clients as the very bytes Broadcast sends;
// messages Broadcast refuses, NewBrokerMessage refuses too.
func TestNewBrokerMessageMatchesBroadcast(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := notify.NewMemoryBroker(nil)
	s := newServer(t, &notify.Options{Broker: b})
	c, _ := dialReady(t, s, "")
	at := time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)
	msg := notify.SocketMessage{Type: "customer.created", Topic: "", Data: map[string]any{"id": 42, "name": "Ada"}, Time: at}

	if err := s.reg.Broadcast(ctx, msg); err != nil {
		t.Fatal(err)
	}
	m, err := notify.NewBrokerMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	var frames []string
	for range 2 {
		_, f, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, string(f))
	}
	want := []string{
		`{"seq":1,"type":"customer.created","data":{"id":42,"name":"Ada"},"time":"2026-11-25T13:00:00Z"}`,
		`{"seq":2,"type":"customer.created","data":{"id":42,"name":"Ada"},"time":"2026-11-25T13:00:00Z"}`,
	}
	if diff := cmp.Diff(want, frames); diff != "" {
		t.Errorf("frames (-want +got):\n%s", diff)
	}

	if m, err := notify.NewBrokerMessage(notify.SocketMessage{Type: "x", Topic: "orders", User: "u", ClientID: "c"}); err != nil ||
		m.Topic != "orders" || m.User != "u" || m.ClientID != "c" || m.Seq != 0 || m.Raw || !bytes.Contains(m.Body, []byte(`"time":"`)) {
		t.Errorf("NewBrokerMessage with targets = %+v, %v", m, err)
	}
	for _, bad := range []notify.SocketMessage{{}, {Type: "notify.gap"}, {Type: "x", Topic: "no spaces"}, {Type: "x", Data: func() {}}} {
		if _, err := notify.NewBrokerMessage(bad); !errors.Is(err, notify.ErrInvalidMessage) {
			t.Errorf("NewBrokerMessage(%+v) error %v, want ErrInvalidMessage", bad, err)
		}
	}
}

// laggingBroker is a MemoryBroker whose deliveries to the Registry can be
// held back, as a node trailing a shared stream is handed messages later
// than other nodes published them. Each Head call is reported on heads.
type laggingBroker struct {
	*notify.MemoryBroker
	heads chan struct{}

	mu      sync.Mutex
	deliver func(notify.BrokerMessage)
	hold    bool
	held    []notify.BrokerMessage
	headErr error
}

func newLaggingBroker() *laggingBroker {
	return &laggingBroker{MemoryBroker: notify.NewMemoryBroker(nil), heads: make(chan struct{}, 100)}
}

func (b *laggingBroker) Subscribe(ctx context.Context, deliver func(notify.BrokerMessage)) (notify.Position, func(), error) {
	b.mu.Lock()
	b.deliver = deliver
	b.mu.Unlock()
	return b.MemoryBroker.Subscribe(ctx, func(m notify.BrokerMessage) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.hold {
			b.held = append(b.held, m)
			return
		}
		deliver(m)
	})
}

func (b *laggingBroker) Head(ctx context.Context) (notify.Position, error) {
	b.mu.Lock()
	err := b.headErr
	b.mu.Unlock()
	select {
	case b.heads <- struct{}{}:
	default:
	}
	if err != nil {
		return notify.Position{}, err
	}
	return b.MemoryBroker.Head(ctx)
}

func (b *laggingBroker) setHold(hold bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !hold {
		for _, m := range b.held {
			b.deliver(m)
		}
		b.held = nil
	}
	b.hold = hold
}

// drainHeads forgets the Head calls made so far (the health checks).
func (b *laggingBroker) drainHeads() {
	for len(b.heads) > 0 {
		<-b.heads
	}
}

// TestResumeOnALaggingNode: a client that resumes from a seq this node has
// not been handed yet, but which the stream holds (it saw it on another
// node), waits for the node to catch up and gets its replay, not a
// notify.gap "ahead"; a seq beyond the stream's head is still "ahead".
func TestResumeOnALaggingNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newLaggingBroker()
	s := newServer(t, &notify.Options{Broker: b})
	c, pos := dialReady(t, s, "")

	b.setHold(true)
	for i := range 5 { // published on "another node": this one is not handed them yet
		if _, err := b.Publish(ctx, notify.BrokerMessage{Body: fmt.Appendf(nil, `{"type":"m%d"}`, i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	b.drainHeads()

	// The client saw seq 3 elsewhere and resumes here: the Registry reads
	// the broker's head and waits. Only then does the node catch up.
	resumed := dial(t, fmt.Sprintf("%s?since=3&epoch=%s", s.ws, pos.Epoch))
	<-b.heads
	b.setHold(false)

	hello := read(t, resumed)
	var at notify.Position
	json.Unmarshal(hello.Data, &at)
	if diff := cmp.Diff(notify.Position{Epoch: pos.Epoch, Seq: 5}, at); hello.Type != notify.TypeHello || diff != "" {
		t.Fatalf("hello %+v (-want +got):\n%s", hello, diff)
	}
	if diff := cmp.Diff([]string{"m4", "m5"}, []string{read(t, resumed).Type, read(t, resumed).Type}); diff != "" {
		t.Errorf("replay (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5}, seqs(readN(t, c, 5))); diff != "" {
		t.Errorf("live client's seqs (-want +got):\n%s", diff)
	}

	ahead := dial(t, fmt.Sprintf("%s?since=9&epoch=%s", s.ws, pos.Epoch))
	if m := read(t, ahead); m.Type != notify.TypeHello {
		t.Fatalf("got %+v, want hello", m)
	}
	if reason, at := gapOf(t, read(t, ahead)); reason != "ahead" || at.Seq != 5 {
		t.Errorf("gap %q at %+v, want ahead at seq 5", reason, at)
	}
}

// TestStatsBrokerHealth: Stats reports how far the Registry trails the
// broker's head, and whether the broker answers, from the once-a-second
// look at its head.
func TestStatsBrokerHealth(t *testing.T) {
	t.Parallel()
	b := newLaggingBroker()
	s := newServer(t, &notify.Options{Broker: b})
	if st := s.reg.Stats(); !st.BrokerConnected || st.BrokerLag != 0 {
		t.Fatalf("at start: connected %v, lag %d; want true, 0", st.BrokerConnected, st.BrokerLag)
	}
	b.setHold(true)
	for range 7 {
		if _, err := b.Publish(context.Background(), notify.BrokerMessage{Body: []byte(`{"type":"m"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// Two checks after the publishes: the first has recorded its result
	// once the second begins.
	b.drainHeads()
	<-b.heads
	<-b.heads
	if st := s.reg.Stats(); !st.BrokerConnected || st.BrokerLag != 7 {
		t.Errorf("held back: connected %v, lag %d; want true, 7", st.BrokerConnected, st.BrokerLag)
	}

	b.mu.Lock()
	b.headErr = errors.New("store unreachable")
	b.mu.Unlock()
	b.drainHeads()
	<-b.heads
	<-b.heads
	if st := s.reg.Stats(); st.BrokerConnected {
		t.Errorf("broker failing: connected %v, want false", st.BrokerConnected)
	}

	b.mu.Lock()
	b.headErr = nil
	b.mu.Unlock()
	b.setHold(false)
	b.drainHeads()
	<-b.heads
	<-b.heads
	if st := s.reg.Stats(); !st.BrokerConnected || st.BrokerLag != 0 {
		t.Errorf("caught up: connected %v, lag %d; want true, 0", st.BrokerConnected, st.BrokerLag)
	}
}
