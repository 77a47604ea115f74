package main

import (
	"context"
	"net"
	"net/http"

	"github.com/centrifugal/centrifuge"
)

// centrifugeServer is centrifuge v0.40.1 with its in-memory broker: every
// connection is subscribed server-side to one channel when it connects,
// and each broadcast is one Node.Publish to that channel. It serves its
// WebSocket handler and its Server-Sent Events handler (NewSSEHandler: a
// GET carrying the connect command in cf_connect, replies and pushes as
// data: lines), for the centrifuge and centrifuge-sse contenders.
type centrifugeServer struct{ node *centrifuge.Node }

const centrifugeChannel = "bench"

func newCentrifugeServer() (*centrifugeServer, error) {
	node, err := centrifuge.New(centrifuge.Config{})
	if err != nil {
		return nil, err
	}
	node.OnConnecting(func(ctx context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		return centrifuge.ConnectReply{
			Credentials:   &centrifuge.Credentials{}, // anonymous
			Subscriptions: map[string]centrifuge.SubscribeOptions{centrifugeChannel: {}},
		}, nil
	})
	node.OnConnect(func(*centrifuge.Client) {})
	if err := node.Run(); err != nil {
		return nil, err
	}
	return &centrifugeServer{node: node}, nil
}

func (s *centrifugeServer) serve(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /connection/websocket", centrifuge.NewWebsocketHandler(s.node, centrifuge.WebsocketConfig{}))
	// Its pings stay on (every 25 s, as data: {}); the pong check is off,
	// since an SSE client can answer only through centrifuge's separate
	// emulation endpoint, which a plain stream reader does not use.
	mux.Handle("GET /connection/sse", centrifuge.NewSSEHandler(s.node, centrifuge.SSEConfig{
		PingPongConfig: centrifuge.PingPongConfig{PongTimeout: -1},
	}))
	return (&http.Server{Handler: mux}).Serve(ln)
}

func (s *centrifugeServer) broadcast(m *benchMsg) {
	if _, err := s.node.Publish(centrifugeChannel, m.encode()); err != nil {
		panic(err)
	}
}

func (s *centrifugeServer) conns() int { return s.node.Hub().NumSubscribers(centrifugeChannel) }
