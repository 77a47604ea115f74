package main

import (
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// naiveServer is the pattern notify replaces, on coder/websocket: a
// mutex-guarded list of connections, and a broadcast that writes to each
// connection in turn on the caller's goroutine, without a timeout. One
// client that stops reading stalls every broadcast.
type naiveServer struct {
	mu   sync.Mutex
	list []*websocket.Conn
	n    atomic.Int64 // len(list), readable while a broadcast holds mu
}

func newNaiveServer() *naiveServer { return &naiveServer{} }

func (s *naiveServer) serve(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.list = append(s.list, c)
		s.n.Store(int64(len(s.list)))
		s.mu.Unlock()
		ctx := context.Background()
		for {
			if _, _, err := c.Read(ctx); err != nil {
				break
			}
		}
		s.mu.Lock()
		if i := slices.Index(s.list, c); i >= 0 {
			s.list = slices.Delete(s.list, i, i+1)
		}
		s.n.Store(int64(len(s.list)))
		s.mu.Unlock()
		c.CloseNow()
	})
	return (&http.Server{Handler: mux}).Serve(ln)
}

func (s *naiveServer) broadcast(m *benchMsg) {
	b := m.encode()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.list {
		_ = c.Write(context.Background(), websocket.MessageText, b)
	}
}

func (s *naiveServer) conns() int { return int(s.n.Load()) }
