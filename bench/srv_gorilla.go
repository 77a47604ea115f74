package main

import (
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// gorillaServer is a gorilla/websocket v1.5.3 hub shaped like the library's
// chat example: one hub goroutine owns the client set and serves register,
// unregister and broadcast channels; each client has a 256-message send
// channel and two goroutines. The writer joins whatever is queued into one
// message with newlines, and the hub drops a client whose channel is full.
type gorillaServer struct {
	upgrader   websocket.Upgrader
	clients    map[*gorillaClient]bool // owned by run
	n          atomic.Int64
	broadcasts chan []byte
	register   chan *gorillaClient
	unregister chan *gorillaClient
}

type gorillaClient struct {
	s    *gorillaServer
	conn *websocket.Conn
	send chan []byte
}

// The chat example's timing constants.
const (
	gorillaWriteWait  = 10 * time.Second
	gorillaPongWait   = 60 * time.Second
	gorillaPingPeriod = gorillaPongWait * 9 / 10
	gorillaReadLimit  = 512
)

func newGorillaServer() *gorillaServer {
	s := &gorillaServer{
		upgrader:   websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024},
		clients:    map[*gorillaClient]bool{},
		broadcasts: make(chan []byte),
		register:   make(chan *gorillaClient),
		unregister: make(chan *gorillaClient),
	}
	go s.run()
	return s
}

func (s *gorillaServer) run() {
	for {
		select {
		case c := <-s.register:
			s.clients[c] = true
		case c := <-s.unregister:
			if s.clients[c] {
				delete(s.clients, c)
				close(c.send)
			}
		case msg := <-s.broadcasts:
			for c := range s.clients {
				select {
				case c.send <- msg:
				default: // too slow: drop the client
					delete(s.clients, c)
					close(c.send)
				}
			}
		}
		s.n.Store(int64(len(s.clients)))
	}
}

func (s *gorillaServer) serve(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		conn, err := s.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &gorillaClient{s: s, conn: conn, send: make(chan []byte, 256)}
		s.register <- c
		go c.writePump()
		go c.readPump()
	})
	return (&http.Server{Handler: mux}).Serve(ln)
}

func (s *gorillaServer) broadcast(m *benchMsg) { s.broadcasts <- m.encode() }

func (s *gorillaServer) conns() int { return int(s.n.Load()) }

func (c *gorillaClient) readPump() {
	defer func() {
		c.s.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(gorillaReadLimit)
	c.conn.SetReadDeadline(time.Now().Add(gorillaPongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(gorillaPongWait))
	})
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			return
		}
	}
}

func (c *gorillaClient) writePump() {
	ping := time.NewTicker(gorillaPingPeriod)
	defer func() {
		ping.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case msg, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(gorillaWriteWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, nil)
				return
			}
			w, err := c.conn.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			w.Write(msg)
			for range len(c.send) {
				w.Write([]byte{'\n'})
				w.Write(<-c.send)
			}
			if err := w.Close(); err != nil {
				return
			}
		case <-ping.C:
			c.conn.SetWriteDeadline(time.Now().Add(gorillaWriteWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}
