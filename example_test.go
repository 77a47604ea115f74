package notify_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

// A service mounts the handler and broadcasts after each change; every
// connected client receives the JSON envelope.
func ExampleRegistry_Handler() {
	connected := make(chan struct{})
	reg := notify.New(&notify.Options{OnConnect: func(*notify.Client) { connected <- struct{}{} }})
	defer reg.Close()
	mux := http.NewServeMux()
	mux.Handle("GET /ws", reg.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()
	<-connected

	reg.Broadcast(ctx, notify.SocketMessage{
		Type: "customer.created",
		Data: map[string]any{"id": 42, "name": "Ada"},
		Time: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
	})
	_, msg, _ := c.Read(ctx)
	fmt.Println(string(msg))
	// Output: {"seq":1,"type":"customer.created","data":{"id":42,"name":"Ada"},"time":"2026-11-25T12:00:00Z"}
}

// NotifyText sends a string unchanged, as the original pattern's
// NotifyClientsAsync did.
func ExampleRegistry_NotifyText() {
	connected := make(chan struct{})
	reg := notify.New(&notify.Options{OnConnect: func(*notify.Client) { connected <- struct{}{} }})
	defer reg.Close()
	srv := httptest.NewServer(reg.Handler())
	defer srv.Close()

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()
	<-connected

	reg.NotifyText(ctx, "Customer 42 was deleted")
	_, msg, _ := c.Read(ctx)
	fmt.Println(string(msg))
	// Output: Customer 42 was deleted
}

// Callers that accept connections themselves (to pick subprotocols, say)
// hand them to Add, which serves them until they end.
func ExampleRegistry_Add() {
	reg := notify.New(nil)
	defer reg.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		opts, err := notify.ParseQuery(r.URL.Query())
		if err != nil {
			conn.Close(websocket.StatusPolicyViolation, err.Error())
			return
		}
		err = reg.Add(context.Background(), conn, opts)
		fmt.Println("Add returned:", err)
	}))
	defer srv.Close()

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, srv.URL+"?since=now", nil)
	if err != nil {
		panic(err)
	}
	_, hello, _ := c.Read(ctx) // sent once registered
	fmt.Println(strings.Contains(string(hello), `"type":"notify.hello"`))
	c.Close(websocket.StatusNormalClosure, "done")
	reg.Close() // waits for Add to return
	// Output:
	// true
	// Add returned: <nil>
}
