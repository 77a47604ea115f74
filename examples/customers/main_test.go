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
	base, stop, done := startRun(t, "127.0.0.1:0")

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

// startRun starts the command's server on addr and returns its URL, the
// function that stops it as SIGINT would, and run's result.
func startRun(t *testing.T, addr string) (base string, stop func(), done <-chan error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	out, w := io.Pipe()
	result := make(chan error, 1)
	go func() { result <- run(ctx, addr, w) }()
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
	base, stop, done := startRun(t, "localhost:0")
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
