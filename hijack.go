package notify

import (
	"bufio"
	"bytes"
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
//     tiny. hijackBufSize buffers cut the resident memory per idle
//     connection roughly in half.
//   - Coalesced writes. coder/websocket flushes every message with its own
//     write system call. A corkConn lets the connection's writer gather a
//     backlog of frames in memory and send it with one call, which under
//     bursts is several times cheaper per delivery than one call per frame.
//
// Connections passed to Registry.Add by callers keep coder/websocket's own
// behaviour.

// hijackBufSize is the size of the read and write buffers a hijacked
// connection gets.
const hijackBufSize = 512

// maxCork is how many bytes a corked connection gathers before it writes
// them out even mid-batch, bounding the memory of one flush.
const maxCork = 64 << 10

// hijacker wraps a ResponseWriter so that Hijack returns a corkConn with
// small buffers.
type hijacker struct {
	http.ResponseWriter
	conn *corkConn // set by Hijack
}

func (h *hijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c := &corkConn{Conn: nc}
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

// corkConn is a hijacked connection whose writes can be held back in
// memory (cork) and sent with one write (uncork).
type corkConn struct {
	net.Conn
	pending []byte // read before the network; only the reading goroutine touches it

	mu      sync.Mutex
	corked  bool
	buf     *[]byte
	flushes int // write calls since cork
}

var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (c *corkConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Write sends p, or gathers it while the connection is corked. Control
// frames that coder/websocket writes from other goroutines (pongs, close)
// go through here too and keep their order.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= maxCork {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// cork starts gathering writes.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	if c.buf == nil {
		c.buf = corkBufs.Get().(*[]byte)
	}
	c.mu.Unlock()
}

// uncork sends what was gathered, with one write, and stops gathering. It
// returns how many write calls the gathered bytes took since cork: 0 if
// there were none, 1, or more when a batch passed maxCork.
func (c *corkConn) uncork() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	err := c.flush()
	if cap(*c.buf) <= maxCork*2 {
		corkBufs.Put(c.buf)
	}
	c.buf = nil
	n := c.flushes
	c.flushes = 0
	return n, err
}

// flush writes the gathered bytes (c.mu held). A failed write closes the
// connection, so coder/websocket's reader notices and the connection ends.
func (c *corkConn) flush() error {
	b := *c.buf
	*c.buf = b[:0]
	if len(b) == 0 {
		return nil
	}
	c.flushes++
	_, err := c.Conn.Write(b)
	if err != nil {
		c.Conn.Close()
	}
	return err
}
