package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is a Registry behind a real HTTP server.
type server struct {
	reg  *notify.Registry
	srv  *httptest.Server
	ws   string // ws:// URL of the handler
	gone chan error
}

// newServer starts a Registry with opts behind httptest. Its OnDisconnect
// hook is wrapped to report every ended connection on s.gone.
func newServer(t testing.TB, opts *notify.Options) *server {
	t.Helper()
	if opts == nil {
		opts = &notify.Options{}
	}
	s := &server{gone: make(chan error, 10000)}
	reportDisconnects(opts, s.gone)
	s.reg = notify.New(opts)
	s.srv = httptest.NewServer(s.reg.Handler())
	s.ws = "ws" + strings.TrimPrefix(s.srv.URL, "http")
	t.Cleanup(func() {
		if err := s.reg.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		s.srv.Close()
	})
	return s
}

// reportDisconnects wraps opts.OnDisconnect to also send every ended
// connection's error on gone.
func reportDisconnects(opts *notify.Options, gone chan<- error) {
	user := opts.OnDisconnect
	opts.OnDisconnect = func(c *notify.Client, err error) {
		if user != nil {
			user(c, err)
		}
		gone <- err
	}
}

// dial connects a client; query is appended to the handler URL.
func dial(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// dialReady connects with since=now (plus query) and reads the hello, which
// the server sends only once the connection is registered: after it, every
// broadcast reaches this client.
func dialReady(t testing.TB, s *server, query string) (*websocket.Conn, notify.Position) {
	t.Helper()
	c := dial(t, s.ws+"?since=now"+query)
	var pos notify.Position
	m := read(t, c)
	if m.Type != notify.TypeHello {
		t.Fatalf("first message %+v, want %s", m, notify.TypeHello)
	}
	if err := json.Unmarshal(m.Data, &pos); err != nil {
		t.Fatal(err)
	}
	return c, pos
}

// wire is a message as a client decodes it.
type wire struct {
	Seq   uint64          `json:"seq"`
	Type  string          `json:"type"`
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
	Time  time.Time       `json:"time"`
}

func read(t testing.TB, c *websocket.Conn) wire {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("read a %v frame", typ)
	}
	var m wire
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("read %q: %v", b, err)
	}
	return m
}

// readUntilClose reads messages until the connection closes and returns them
// with the close status.
func readUntilClose(t testing.TB, c *websocket.Conn) ([]wire, websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []wire
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("no close within the deadline: %v", err)
			}
			return out, websocket.CloseStatus(err)
		}
		var m wire
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("read %q: %v", b, err)
		}
		out = append(out, m)
	}
}

func broadcast(t testing.TB, reg *notify.Registry, m notify.SocketMessage) {
	t.Helper()
	if err := reg.Broadcast(context.Background(), m); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
}

// waitGone waits for n connections to end and returns their errors.
func (s *server) waitGone(t testing.TB, n int) []error {
	t.Helper()
	var errs []error
	timeout := time.After(20 * time.Second)
	for len(errs) < n {
		select {
		case err := <-s.gone:
			errs = append(errs, err)
		case <-timeout:
			t.Fatalf("%d of %d connections ended within 20s", len(errs), n)
		}
	}
	return errs
}

func closeCode(err error) websocket.StatusCode {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// newHTTPServer serves h and returns the ws:// URL.
func newHTTPServer(t testing.TB, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// upgradeHeader returns the headers of a valid WebSocket upgrade request,
// with each key/value pair in kv set on top (an empty value deletes it).
func upgradeHeader(kv ...string) http.Header {
	h := http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			h.Del(kv[i])
		} else {
			h.Set(kv[i], kv[i+1])
		}
	}
	return h
}
