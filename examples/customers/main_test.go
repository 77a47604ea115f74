package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify/examples/customers/app"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRunServesAndShutsDown starts the command's server, uses it, then
// stops it as SIGINT would: the page's connection must get 1001 and run
// must return nil with nothing left running.
func TestRunServesAndShutsDown(t *testing.T) {
	base, stop, done := startRun(t, "127.0.0.1:0", false)

	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(base, "http")+"/ws?since=now", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, msg, err := c.Read(dctx); err != nil || !strings.Contains(string(msg), `"notify.hello"`) {
		t.Fatalf("first message %s, %v; want notify.hello", msg, err) // registered from here on
	}
	res, err := http.Post(base+"/api/customers", "application/json", strings.NewReader(`{"name":"Ada","email":"ada@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if _, msg, err := c.Read(dctx); err != nil || !strings.Contains(string(msg), `"customer.created"`) {
		t.Fatalf("second message %s, %v; want customer.created", msg, err)
	}

	stop()
	if _, _, err := c.Read(dctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("after shutdown: %v, want close 1001", err)
	}
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

// startRun starts the command's server on addr (refusing WebSocket upgrades
// if noWebSocket) and returns its URL, the function that stops it as SIGINT
// would, and run's result.
func startRun(t *testing.T, addr string, noWebSocket bool) (base string, stop func(), done <-chan error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	out, w := io.Pipe()
	result := make(chan error, 1)
	go func() { result <- run(ctx, addr, noWebSocket, w) }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	_, url, ok := strings.Cut(line, "http://")
	if !ok {
		t.Fatalf("run printed %q, want a URL", line)
	}
	return "http://" + strings.TrimSuffix(url, "/\n"), stop, result
}

// TestRunLimitsConnections: the demo is safe to copy, so one address
// cannot hold more than app.MaxConnectionsPerAddr connections, and it prints
// the address as given.
func TestRunLimitsConnections(t *testing.T) {
	base, stop, done := startRun(t, "localhost:0", false)
	if !strings.HasPrefix(base, "http://localhost:") {
		t.Errorf("run printed %s, want the host as given (localhost)", base)
	}
	ws := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	for i := range app.MaxConnectionsPerAddr {
		c, _, err := websocket.Dial(ctx, ws+"?since=now", nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
		if _, _, err := c.Read(ctx); err != nil { // the hello: registered, so counted
			t.Fatalf("connection %d: %v", i+1, err)
		}
	}
	_, resp, err := websocket.Dial(ctx, ws, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("connection %d from one address: %v, %v; want 429", app.MaxConnectionsPerAddr+1, err, resp)
	}
	for _, c := range conns {
		c.Close(websocket.StatusNormalClosure, "")
	}
	conns = nil
	stop()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestRunNoWebSocket runs the command with -no-websocket: a WebSocket
// upgrade must be refused with 403, as a blocking proxy would, while the
// same endpoint serves the page's Server-Sent Events stream, which must
// carry the hello, a change made over the API, and on shutdown a
// notify.close with 1001 before it ends.
func TestRunNoWebSocket(t *testing.T) {
	base, stop, done := startRun(t, "127.0.0.1:0", true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws?since=now", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("WebSocket upgrade with -no-websocket: %v, %v; want 403", err, resp)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ws?since=now", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("GET /ws with Accept: text/event-stream: %s, Content-Type %q; want 200 text/event-stream", res.Status, ct)
	}
	events := newEventReader(res.Body)
	if ev, err := events.next(); err != nil || ev.event != "notify.hello" {
		t.Fatalf("first event %+v, %v; want notify.hello", ev, err) // registered from here on
	}
	post, err := http.Post(base+"/api/customers", "application/json", strings.NewReader(`{"name":"Ada","email":"ada@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	ev, err := events.next()
	if err != nil || ev.event != "customer.created" || !strings.HasPrefix(ev.id, "1:") || !strings.Contains(ev.data, `"name":"Ada"`) {
		t.Fatalf("second event %+v, %v; want customer.created for Ada with id 1:<epoch>", ev, err)
	}

	stop()
	ev, err = events.next()
	if err != nil || ev.event != "notify.close" || !strings.Contains(ev.data, `"code":1001`) {
		t.Errorf("after shutdown: event %+v, %v; want notify.close with code 1001", ev, err)
	}
	if ev, err := events.next(); err != io.EOF {
		t.Errorf("after notify.close: event %+v, %v; want the stream to end", ev, err)
	}
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

// sseEvent is one event of a Server-Sent Events stream.
type sseEvent struct{ id, event, data string }

// eventReader parses a Server-Sent Events stream as EventSource does:
// fields up to a blank line make an event, comment lines (": ping") and
// retry are skipped, data lines are joined with newlines.
type eventReader struct{ r *bufio.Reader }

func newEventReader(r io.Reader) *eventReader { return &eventReader{bufio.NewReader(r)} }

// next returns the next event, or io.EOF when the stream ended between
// events.
func (e *eventReader) next() (sseEvent, error) {
	var ev sseEvent
	var data []string
	started := false
	for {
		line, err := e.r.ReadString('\n')
		if err != nil {
			if err == io.EOF && (started || line != "") {
				err = io.ErrUnexpectedEOF
			}
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if !started {
				continue
			}
			ev.data = strings.Join(data, "\n")
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.id, started = value, true
		case "event":
			ev.event, started = value, true
		case "data":
			data, started = append(data, value), true
		}
	}
}
