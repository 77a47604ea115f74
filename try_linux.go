package notify

import (
	"net"
	"syscall"
	"unsafe"
)

// tryState lets a pooled writer write to a TCP socket without waiting: one
// writev system call on the socket (which the runtime keeps non-blocking),
// through syscall.RawConn, so that a full socket answers EAGAIN instead of
// parking the writer. The callback, the iovec array and the RawConn are
// made once per connection, so a write allocates nothing.
type tryState struct {
	raw    syscall.RawConn
	fn     func(fd uintptr) bool // c.tryWrite, bound once
	iov    []syscall.Iovec
	n      int
	err    error
	frames net.Buffers
}

// maxIovecs is Linux's IOV_MAX: the most buffers one writev takes.
const maxIovecs = 1024

func (c *frameConn) initTry() {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return // TLS, in-memory pipes: the connection's own goroutine writes
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.try.raw = raw
	c.try.fn = c.tryWrite
}

func (c *frameConn) canTry() bool { return c.try.raw != nil }

// tryWritev makes one writev call that does not wait, and returns how
// many bytes it wrote: 0 when the socket is full.
func (c *frameConn) tryWritev(frames net.Buffers) (int, error) {
	t := &c.try
	t.frames = frames
	err := t.raw.Write(t.fn)
	t.frames = nil
	clear(t.iov) // keep no frame alive
	if err == nil {
		err = t.err
	}
	t.err = nil
	return t.n, err
}

// tryWrite is the RawConn callback; returning true tells the runtime not
// to wait for the socket to become writable.
func (c *frameConn) tryWrite(fd uintptr) bool {
	t := &c.try
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
