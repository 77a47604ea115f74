package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"slices"
	"sync"
	"sync/atomic"
)

// rawServer is the calibration baseline, no WebSocket library: it answers
// the upgrade by hand, then writes each broadcast as one pre-encoded frame
// to every socket with one write call each, sequentially (workers == 1) or
// split across workers goroutines. It has no queues, no heartbeat and no
// protection against slow clients: it estimates the floor of this machine.
type rawServer struct {
	workers int
	mu      sync.Mutex
	list    []net.Conn
	n       atomic.Int64 // len(list), readable while a broadcast holds mu
}

func newRawServer(workers int) *rawServer { return &rawServer{workers: workers} }

func (s *rawServer) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go s.handle(c)
	}
}

func (s *rawServer) handle(c net.Conn) {
	defer c.Close()
	if !rawUpgrade(c) {
		return
	}
	var buf [1024]byte
	s.mu.Lock()
	s.list = append(s.list, c)
	s.n.Store(int64(len(s.list)))
	s.mu.Unlock()
	for { // read and discard until the client goes
		if _, err := c.Read(buf[:]); err != nil {
			break
		}
	}
	s.mu.Lock()
	if i := slices.Index(s.list, c); i >= 0 {
		s.list = slices.Delete(s.list, i, i+1)
	}
	s.n.Store(int64(len(s.list)))
	s.mu.Unlock()
}

// rawUpgrade reads an upgrade request and answers it by hand.
func rawUpgrade(c net.Conn) bool {
	var buf [1024]byte
	n := 0
	for !bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
		if n == len(buf) {
			return false
		}
		m, err := c.Read(buf[n:])
		if err != nil {
			return false
		}
		n += m
	}
	key := headerValue(buf[:n], "Sec-WebSocket-Key")
	if key == nil {
		return false
	}
	_, err := c.Write(acceptResponse(key))
	return err == nil
}

// headerValue finds a header in a raw HTTP request (names are matched
// case-insensitively).
func headerValue(req []byte, name string) []byte {
	for _, line := range bytes.Split(req, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}

const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func acceptKey(key []byte) string {
	h := sha1.Sum(append(slices.Clip(key), websocketGUID...))
	return base64.StdEncoding.EncodeToString(h[:])
}

func acceptResponse(key []byte) []byte {
	return []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + acceptKey(key) + "\r\n\r\n")
}

func (s *rawServer) broadcast(m *benchMsg) {
	frame := rawFrame(m.encode())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.workers == 1 {
		writeAll(s.list, frame)
		return
	}
	var wg sync.WaitGroup
	per := (len(s.list) + s.workers - 1) / s.workers
	for part := range slices.Chunk(s.list, max(per, 1)) {
		wg.Go(func() { writeAll(part, frame) })
	}
	wg.Wait()
}

// rawFrame returns payload as an unmasked text frame.
func rawFrame(payload []byte) []byte {
	frame := make([]byte, 0, len(payload)+4)
	if len(payload) < 126 {
		frame = append(frame, 0x81, byte(len(payload)))
	} else {
		frame = append(frame, 0x81, 126, byte(len(payload)>>8), byte(len(payload)))
	}
	return append(frame, payload...)
}

func writeAll(conns []net.Conn, frame []byte) {
	for _, c := range conns {
		_, _ = c.Write(frame)
	}
}

func (s *rawServer) conns() int { return int(s.n.Load()) }
