package pgbroker_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/internal/wiretest"
	"github.com/wsnotify/notify/pgbroker"
	"github.com/wsnotify/notify/pgbroker/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newBroker connects a Broker to s and closes it when the test ends.
func newBroker(t testing.TB, s *pgtest.Server, o pgbroker.Options) *pgbroker.Broker {
	t.Helper()
	o.ConnString = s.ConnString()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := pgbroker.New(ctx, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Broker.Close: %v", err)
		}
	})
	return b
}

// node is one server of a cluster: a Registry on a Postgres broker behind
// its own HTTP server.
type node struct {
	name string
	b    *pgbroker.Broker
	reg  *notify.Registry
	srv  *httptest.Server
	ws   string
	logs *logRecorder
	once sync.Once
}

// newNode starts a node; opts may set hooks, the rest is filled in.
func newNode(t testing.TB, s *pgtest.Server, name string, opts *notify.Options) *node {
	t.Helper()
	n := &node{name: name, logs: &logRecorder{}}
	n.b = newBroker(t, s, pgbroker.Options{Logger: slog.New(n.logs), MaxBackoff: 200 * time.Millisecond})
	if opts == nil {
		opts = &notify.Options{}
	}
	opts.Broker = n.b
	// Tests read one client at a time; roomy queues keep the others open.
	opts.QueueLength, opts.QueueBytes = 1<<14, 64<<20
	n.reg = notify.New(opts)
	n.srv = httptest.NewServer(n.reg.Handler())
	n.ws = "ws" + strings.TrimPrefix(n.srv.URL, "http")
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *node) stop(t testing.TB) {
	n.once.Do(func() {
		if err := n.reg.Close(); err != nil {
			t.Errorf("%s: Registry.Close: %v", n.name, err)
		}
		n.srv.Close()
		if err := n.b.Close(); err != nil {
			t.Errorf("%s: Broker.Close: %v", n.name, err)
		}
	})
}

func (n *node) broadcast(t testing.TB, label string, m notify.SocketMessage) {
	t.Helper()
	if m.Type == "" {
		m.Type = "test"
	}
	m.Data = label
	if err := n.reg.Broadcast(context.Background(), m); err != nil {
		t.Fatalf("%s: Broadcast %s: %v", n.name, label, err)
	}
}

// logRecorder is a slog.Handler that keeps every record's message.
type logRecorder struct {
	mu      sync.Mutex
	msgs    []string
	changed chan struct{} // closed and replaced at each record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Level.String()+" "+r.Message)
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
	return nil
}

// waitFor waits until a record's level and message start with prefix.
func (h *logRecorder) waitFor(t testing.TB, prefix string) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		h.mu.Lock()
		for _, m := range h.msgs {
			if strings.HasPrefix(m, prefix) {
				h.mu.Unlock()
				return
			}
		}
		if h.changed == nil {
			h.changed = make(chan struct{})
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no log record %q within 15s", prefix)
		}
	}
}

// has reports whether a record's level and message start with prefix.
func (h *logRecorder) has(prefix string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

// wire is a frame as a client decodes it; Text holds a frame that is not
// JSON (NotifyText).
type wire struct{ wiretest.Message }

// label is the Data string of a test message, the text of a raw frame, or
// the type of a reserved message.
func (w wire) label() string {
	switch {
	case w.Text != "":
		return w.Text
	case strings.HasPrefix(w.Type, "notify."):
		return w.Type
	}
	var s string
	json.Unmarshal(w.Data, &s)
	return s
}

// gap is the data of notify.gap and, with Reason empty, of notify.hello.
type gap struct {
	Reason string `json:"reason"`
	Since  uint64 `json:"since"`
	Epoch  string `json:"epoch"`
	Seq    uint64 `json:"seq"`
}

func (w wire) gap(t testing.TB) gap {
	t.Helper()
	var g gap
	if err := json.Unmarshal(w.Data, &g); err != nil {
		t.Fatalf("%s data %s: %v", w.Type, w.Data, err)
	}
	return g
}

// client is a WebSocket client of one node.
type client struct {
	t     testing.TB
	name  string
	conn  *websocket.Conn
	hello gap // the position notify.hello reported
}

// connect dials url and, since every test client resumes (since=…), reads
// the notify.hello that the server sends once the client is registered:
// every message published after connect returns reaches it.
func connect(t testing.TB, name, url string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, url, err)
	}
	conn.SetReadLimit(-1)
	t.Cleanup(func() { conn.CloseNow() })
	c := &client{t: t, name: name, conn: conn}
	w := c.next()
	if w.Type != notify.TypeHello {
		t.Fatalf("%s: first frame %+v, want %s", name, w, notify.TypeHello)
	}
	c.hello = w.gap(t)
	return c
}

// next reads one frame.
func (c *client) next() wire {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("%s: read: %v", c.name, err)
	}
	m, err := wiretest.Decode(b)
	if err != nil {
		c.t.Fatalf("%s: frame %q: %v", c.name, b, err)
	}
	return wire{m}
}

// read reads n frames.
func (c *client) read(n int) []wire {
	c.t.Helper()
	out := make([]wire, n)
	for i := range out {
		out[i] = c.next()
	}
	return out
}

// readUntil reads frames up to and including the first with label stop.
func (c *client) readUntil(stop string) []wire {
	c.t.Helper()
	var out []wire
	for {
		w := c.next()
		out = append(out, w)
		if w.label() == stop {
			return out
		}
	}
}

func labels(ws []wire) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.label()
	}
	return out
}

func seqs(ws []wire) []uint64 {
	out := make([]uint64, len(ws))
	for i, w := range ws {
		out[i] = w.Seq
	}
	return out
}

// span returns the seqs from..to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}
