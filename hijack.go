package notify

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"sync"
)

// Beneath coder/websocket, connections accepted by the Handler get two
// changes through a ResponseWriter whose Hijack the library controls:
//
//   - Small buffers. net/http hands a hijacked connection 4 KiB read and
//     4 KiB write buffers, which coder/websocket keeps for the connection's
//     life; most notification connections are idle, and their inbound frames
//     tiny. hijackBufSize buffers keep idle connections light.
//   - Frames written directly. A frame from server to client is unmasked,
//     so its bytes are the same for every connection: the Registry builds
//     each one once (see wireFrame) and a connection's writer sends its whole
//     backlog with one writev system call, with no copy per connection and
//     without coder/websocket's per-message write path. coder/websocket still
//     does everything else (reading, pongs, pings, the close handshake); its
//     control frames and these data frames never interleave, since both go
//     through frameConn's lock, and no data frame follows a close frame.
//
// Connections passed to Registry.Add by callers are written through
// coder/websocket's Conn.Write, one message per call.

// hijackBufSize is the size of the read and write buffers a hijacked
// connection gets.
const hijackBufSize = 512

// hijacker wraps a ResponseWriter so that Hijack returns a frameConn with
// small buffers.
type hijacker struct {
	http.ResponseWriter
	conn *frameConn // filled in by Hijack
}

func (h *hijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c := h.conn // made by the handler, so that hooks can refer to it before the hijack
	c.Conn = nc
	c.initTry()
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right after its handshake: coder/websocket
		// reads through the returned net.Conn, so that is where they go.
		b, _ := brw.Reader.Peek(n)
		c.pending = bytes.Clone(b)
	}
	if n := brw.Writer.Buffered(); n > 0 {
		// Nothing should be left, but never drop response bytes.
		if err := brw.Writer.Flush(); err != nil {
			nc.Close()
			return nil, nil, err
		}
	}
	h.conn = c
	return c, bufio.NewReadWriter(bufio.NewReaderSize(c, hijackBufSize), bufio.NewWriterSize(c, hijackBufSize)), nil
}

// frameConn is a hijacked connection that the connection's writer can
// also send ready-made frames through.
type frameConn struct {
	net.Conn
	pending []byte // read before the network; only the reading goroutine touches it

	// onPing, set before the first read, decides whether coder/websocket
	// answers a ping (see Client.onPing); only the reading goroutine uses it.
	onPing func(ctx context.Context, payload []byte) bool

	mu        sync.Mutex // orders coder/websocket's writes and ours
	closeSent bool       // coder/websocket wrote a close frame: no data may follow

	try tryRaw // for tryWriteFrames, where the platform allows it
}

func (c *frameConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// opClose is the first byte of a close frame (FIN and opcode 8). Every
// write coder/websocket makes here starts a frame: it flushes its buffer at
// the end of each frame, and its control frames fit the buffer.
const opClose = 0x88

// Write carries coder/websocket's own writes: control frames, and data
// frames of connections it writes itself.
func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) > 0 && p[0] == opClose {
		c.closeSent = true
	}
	return c.Conn.Write(p)
}

// writeFrames sends complete frames, built by wireFrame, with one writev
// system call (more only past the kernel's iovec limit). It consumes
// *frames (the slice and its headers), never the bytes they point to;
// taking a pointer keeps the slice from escaping to the heap on every call.
func (c *frameConn) writeFrames(frames *net.Buffers) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return net.ErrClosed
	}
	_, err := frames.WriteTo(c.Conn)
	if err != nil {
		c.Conn.Close() // so coder/websocket's reader notices and the connection ends
	}
	return err
}

// tryResult is what tryWriteFrames did.
type tryResult uint8

const (
	tryDone tryResult = iota // everything was written
	tryFull                  // the socket is full: the rest waits, and c.mu stays held
	tryBusy                  // another write holds the connection: nothing was written
)

// tryWriteFrames writes as much of *frames as the socket takes at once,
// with writev calls that never wait, and consumes what it wrote. If the
// socket fills up first it returns tryFull with c.mu still held: a frame may
// have been cut in the middle, and nothing else may be written before its
// rest, so the caller must pass what remains of *frames to finishFrames,
// from any goroutine, which unlocks. If coder/websocket is writing (a pong,
// a close frame, perhaps blocked on a full socket) it returns tryBusy at
// once, having written nothing. Only connections for which canTry reports
// true support it.
func (c *frameConn) tryWriteFrames(t *tryWriter, frames *net.Buffers) (tryResult, error) {
	if !c.mu.TryLock() {
		return tryBusy, nil
	}
	if c.closeSent {
		c.mu.Unlock()
		return tryDone, net.ErrClosed
	}
	for len(*frames) > 0 {
		n, err := c.tryWritev(t, *frames)
		if err != nil {
			c.Conn.Close() // so coder/websocket's reader notices and the connection ends
			c.mu.Unlock()
			return tryDone, err
		}
		if n == 0 {
			return tryFull, nil
		}
		consume(frames, n)
	}
	c.mu.Unlock()
	return tryDone, nil
}

// finishFrames writes the rest of a write that tryWriteFrames left with
// tryFull, waiting as long as that takes, and unlocks c.mu.
func (c *frameConn) finishFrames(frames *net.Buffers) error {
	defer c.mu.Unlock()
	_, err := frames.WriteTo(c.Conn)
	if err != nil {
		c.Conn.Close()
	}
	return err
}

// consume drops the first n bytes of *v.
func consume(v *net.Buffers, n int) {
	for len(*v) > 0 && n > 0 {
		if n < len((*v)[0]) {
			(*v)[0] = (*v)[0][n:]
			return
		}
		n -= len((*v)[0])
		(*v)[0] = nil
		*v = (*v)[1:]
	}
}
