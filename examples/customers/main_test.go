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
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRunServesAndShutsDown starts the command's server, uses it, then
// stops it as SIGINT would: the page's connection must get 1001 and run
// must return nil with nothing left running.
func TestRunServesAndShutsDown(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, "127.0.0.1:0", w) }()

	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	_, addr, ok := strings.Cut(line, "http://")
	if !ok {
		t.Fatalf("run printed %q, want a URL", line)
	}
	base := "http://" + strings.TrimSuffix(addr, "/\n")

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
