package notify_test

// The read loop: application frames for OnMessage, and its hook contained.

import (
	"context"
	"testing"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

func TestOnMessageReceivesApplicationFrames(t *testing.T) {
	t.Parallel()
	got := make(chan string, 2)
	s := newServer(t, &notify.Options{OnMessage: func(ctx context.Context, c *notify.Client, data []byte) {
		got <- string(data)
	}})
	c, _ := dialReady(t, s, "")
	for _, m := range []string{`{"type":"chat","text":"hi"}`, "plain text"} {
		if err := c.Write(context.Background(), websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
		if g := <-got; g != m {
			t.Errorf("OnMessage got %q, want %q", g, m)
		}
	}
}

func TestPanickingOnMessageClosesOnlyThatConnection(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{OnMessage: func(context.Context, *notify.Client, []byte) { panic("boom") }})
	bystander, _ := dialReady(t, s, "")
	c, _ := dialReady(t, s, "")
	c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"x"}`))
	if _, code := readUntilClose(t, c); code != websocket.StatusInternalError {
		t.Errorf("close code %d, want 1011", code)
	}
	if errs := s.waitGone(t, 1); closeCode(errs[0]) != websocket.StatusInternalError {
		t.Errorf("OnDisconnect err %v", errs[0])
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "still.here"})
	if m := read(t, bystander); m.Type != "still.here" {
		t.Errorf("bystander got %+v", m)
	}
}
