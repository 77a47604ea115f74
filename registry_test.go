package notify_test

// Registry.Add and the connect and disconnect hooks.

import (
	"context"
	"net/http"
	"testing"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

func TestAddServesSelfAcceptedConnections(t *testing.T) {
	t.Parallel()
	reg := notify.New(nil)
	added := make(chan error, 1)
	srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		added <- reg.Add(context.Background(), conn, &notify.ConnOptions{ResumeNow: true})
	})
	c := dial(t, srv)
	if m := read(t, c); m.Type != notify.TypeHello {
		t.Fatalf("got %+v, want hello", m)
	}
	broadcast(t, reg, notify.SocketMessage{Type: "hi"})
	if m := read(t, c); m.Type != "hi" {
		t.Errorf("got %+v", m)
	}
	c.Close(websocket.StatusNormalClosure, "bye")
	if err := <-added; err != nil {
		t.Errorf("Add after a normal close = %v, want nil", err)
	}
	if n := reg.Len(); n != 0 {
		t.Errorf("Len = %d after the client left", n)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestHooksSeeConnectAndDisconnect(t *testing.T) {
	t.Parallel()
	connected := make(chan *notify.Client, 1)
	s := newServer(t, &notify.Options{
		Authorize: func(r *http.Request) (notify.Identity, error) { return notify.Identity{User: "ada"}, nil },
		OnConnect: func(c *notify.Client) { connected <- c },
	})
	c := dial(t, s.ws+"?topic=customers")
	cl := <-connected
	if cl.Identity().User != "ada" || !cmp.Equal(cl.Topics(), []string{"customers"}) || cl.ID() == "" || cl.RemoteAddr() == "" {
		t.Errorf("client: user %q topics %v id %q addr %q", cl.Identity().User, cl.Topics(), cl.ID(), cl.RemoteAddr())
	}
	c.Close(websocket.StatusGoingAway, "")
	if errs := s.waitGone(t, 1); errs[0] != nil {
		t.Errorf("OnDisconnect err = %v, want nil for 1001", errs[0])
	}
}
