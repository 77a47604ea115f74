package main

import (
	"context"
	"net"
	"net/http"

	"github.com/wsnotify/notify"
)

// notifyServer is notify with default options, mounted as its docs say.
type notifyServer struct{ reg *notify.Registry }

func newNotifyServer() *notifyServer { return &notifyServer{reg: notify.New(nil)} }

func (s *notifyServer) serve(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /ws", s.reg.Handler())
	return (&http.Server{Handler: mux}).Serve(ln)
}

func (s *notifyServer) broadcast(m *benchMsg) {
	err := s.reg.Broadcast(context.Background(), notify.SocketMessage{
		Type: "bench",
		Data: benchData{I: m.I, T: m.T, P: m.Pad},
	})
	if err != nil {
		panic(err)
	}
}

func (s *notifyServer) conns() int { return s.reg.Len() }
