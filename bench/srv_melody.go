package main

import (
	"net"
	"net/http"

	"github.com/olahol/melody"
)

// melodyServer is melody v1.1.4 with its defaults: a hub goroutine, a
// 256-message channel and a writer goroutine per session, one write call
// per message, and messages dropped (not the session) when a channel is full.
type melodyServer struct{ m *melody.Melody }

func newMelodyServer() *melodyServer { return &melodyServer{m: melody.New()} }

func (s *melodyServer) serve(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		_ = s.m.HandleRequest(w, r)
	})
	return (&http.Server{Handler: mux}).Serve(ln)
}

func (s *melodyServer) broadcast(m *benchMsg) {
	if err := s.m.Broadcast(m.encode()); err != nil {
		panic(err)
	}
}

func (s *melodyServer) conns() int { return s.m.Len() }
