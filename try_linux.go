package notify

import (
	"net"
	"syscall"
	"unsafe"
)

// A pooled writer writes to a TCP socket without waiting: one writev
// system call on the socket (which the runtime keeps non-blocking), made
// through syscall.RawConn, so that a full socket answers EAGAIN instead of
// parking the writer. A connection keeps only its RawConn; the callback and
// the iovec array belong to the pooled writer, made once, so a write
// allocates nothing and a connection holds no iovecs between writes.

// tryRaw is what a connection keeps for writes that never wait.
type tryRaw struct {
	raw syscall.RawConn // nil: not a socket (TLS, a pipe)
}

// tryWriter is a pooled writer's scratch for writes that never wait.
type tryWriter struct {
	fn     func(fd uintptr) bool // t.write, bound once
	iov    []syscall.Iovec
	frames net.Buffers
	n      int
	err    error
}

// maxIovecs is Linux's IOV_MAX: the most buffers one writev takes.
const maxIovecs = 1024

func newTryWriter() *tryWriter {
	t := &tryWriter{}
	t.fn = t.write
	return t
}

func (c *frameConn) initTry() {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return // TLS, in-memory pipes: the connection's own goroutine writes
	}
	if raw, err := sc.SyscallConn(); err == nil {
		c.try.raw = raw
	}
}

func (c *frameConn) canTry() bool { return c.try.raw != nil }

// tryWritev makes one writev call on c that does not wait, and returns how
// many bytes it wrote: 0 when the socket is full.
func (c *frameConn) tryWritev(t *tryWriter, frames net.Buffers) (int, error) {
	t.frames = frames
	err := c.try.raw.Write(t.fn)
	t.frames = nil
	clear(t.iov) // keep no frame alive
	if err == nil {
		err = t.err
	}
	t.err = nil
	return t.n, err
}

// write is the RawConn callback; returning true tells the runtime not to
// wait for the socket to become writable.
func (t *tryWriter) write(fd uintptr) bool {
	t.iov = t.iov[:0]
	for _, b := range t.frames {
		if len(t.iov) == maxIovecs {
			break
		}
		if len(b) > 0 {
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			t.iov = append(t.iov, v)
		}
	}
	t.n, t.err = 0, nil
	if len(t.iov) == 0 {
		return true
	}
	for {
		n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&t.iov[0])), uintptr(len(t.iov)))
		switch errno {
		case 0:
			t.n = int(n)
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		default:
			t.err = errno
		}
		return true
	}
}
