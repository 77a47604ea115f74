package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/examples/customers/app"
	"github.com/wsnotify/notify/internal/wiretest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// site is the demo behind a real HTTP server.
type site struct {
	url       string // http://host:port
	reg       *notify.Registry
	connected chan struct{} // one value per registered WebSocket connection
}

func newSite(t *testing.T) *site {
	t.Helper()
	s := &site{connected: make(chan struct{}, 16)}
	s.reg = notify.New(&notify.Options{
		OnConnect: func(*notify.Client) { s.connected <- struct{}{} },
	})
	srv := httptest.NewServer(app.New(s.reg, app.NewMemoryStore()))
	s.url = srv.URL
	t.Cleanup(func() {
		if err := s.reg.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		srv.Close()
	})
	return s
}

// response is what a test looks at in an HTTP answer.
type response struct {
	status int
	header http.Header
	body   string
}

// request sends one request; contentType is set when not empty.
func (s *site) request(t *testing.T, method, path, contentType, body string) response {
	t.Helper()
	r, err := s.try(method, path, contentType, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// try is request for goroutines other than the test's.
func (s *site) try(method, path, contentType, body string) (response, error) {
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, string(b)}, err
}

// send sends a JSON request (no body when body is empty) and fails the
// test unless the status is want.
func (s *site) send(t *testing.T, method, path, body string, want int) response {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	r := s.request(t, method, path, ct, body)
	if r.status != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, want, r.body)
	}
	return r
}

// decode unmarshals a JSON body into a T.
func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	return v
}

// dial connects a WebSocket client to /ws with query appended and waits
// until the Registry has registered it, so every later broadcast reaches it.
func (s *site) dial(t *testing.T, query string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/ws"+query, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	select {
	case <-s.connected:
	case <-ctx.Done():
		t.Fatal("connection not registered within 10s")
	}
	return c
}

// event is a notification as a test compares it: Data is an app.Customer,
// or a notify.Position for notify.hello.
type event struct {
	Seq  uint64
	Type string
	Data any
}

// read reads n notifications from c.
func read(t *testing.T, c *websocket.Conn, n int) []event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []event
	for range n {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read message %d of %d: %v", len(out)+1, n, err)
		}
		m, err := wiretest.Decode(b)
		if err != nil || m.Text != "" {
			t.Fatalf("message %d of %d, %q, is not an envelope: %v", len(out)+1, n, b, err)
		}
		e := event{Seq: m.Seq, Type: m.Type}
		if m.Type == notify.TypeHello {
			e.Data = decode[notify.Position](t, string(m.Data))
		} else {
			e.Data = decode[app.Customer](t, string(m.Data))
		}
		out = append(out, e)
	}
	return out
}
