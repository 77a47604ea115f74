package main

import (
	"net"
	"slices"
	"sync"
	"sync/atomic"
)

// rawqServer is the coalescing floor, no WebSocket library: the same
// hand-written upgrade as rawServer, but a broadcast only appends its
// pre-encoded frame to the backlog of each of a few shards and returns;
// each shard's goroutine then writes every one of its sockets' whole
// backlog (every frame since its last pass) with one writev call per
// socket. Like raw it has no heartbeat and no protection against slow
// clients (a full socket holds its shard up): it estimates the floor of a
// server that batches.
type rawqServer struct {
	shards []*rawqShard
	next   atomic.Uint64
	n      atomic.Int64
}

type rawqShard struct {
	mu     sync.Mutex
	conns  []net.Conn
	frames [][]byte // broadcast since the shard's last pass
	wake   chan struct{}
}

func newRawqServer(shards int) *rawqServer {
	s := &rawqServer{}
	for range shards {
		sh := &rawqShard{wake: make(chan struct{}, 1)}
		s.shards = append(s.shards, sh)
		go sh.run()
	}
	return s
}

func (s *rawqServer) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go s.handle(c)
	}
}

func (s *rawqServer) handle(c net.Conn) {
	defer c.Close()
	if !rawUpgrade(c) {
		return
	}
	sh := s.shards[s.next.Add(1)%uint64(len(s.shards))]
	sh.mu.Lock()
	sh.conns = append(sh.conns, c)
	sh.mu.Unlock()
	s.n.Add(1)
	var buf [512]byte
	for { // read and discard until the client goes
		if _, err := c.Read(buf[:]); err != nil {
			break
		}
	}
	sh.mu.Lock()
	if i := slices.Index(sh.conns, c); i >= 0 {
		sh.conns = slices.Delete(sh.conns, i, i+1)
	}
	sh.mu.Unlock()
	s.n.Add(-1)
}

func (s *rawqServer) broadcast(m *benchMsg) {
	frame := rawFrame(m.encode())
	for _, sh := range s.shards {
		sh.mu.Lock()
		sh.frames = append(sh.frames, frame)
		sh.mu.Unlock()
		select {
		case sh.wake <- struct{}{}:
		default:
		}
	}
}

func (sh *rawqShard) run() {
	var conns []net.Conn
	var frames, spare [][]byte
	var v net.Buffers
	for range sh.wake {
		sh.mu.Lock()
		frames, sh.frames = sh.frames, spare[:0]
		conns = append(conns[:0], sh.conns...)
		sh.mu.Unlock()
		for _, c := range conns {
			v = append(v[:0], frames...)
			_, _ = v.WriteTo(c)
		}
		clear(frames)
		spare = frames
	}
}

func (s *rawqServer) conns() int { return int(s.n.Load()) }
