package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The load generator: one process that holds every client connection. A
// connection is dialled and upgraded with the net package (deadlines,
// retries on EINTR), then its socket is detached from Go's poller and read
// by a few worker threads with level-triggered epoll: one read call per
// wake-up, no goroutine per connection.

// peer is how a contender speaks to its clients.
type peer struct {
	path string
	// lines: one WebSocket message may carry several notifications joined
	// by newlines (gorilla's chat hub, centrifuge's JSON protocol).
	lines bool
	// connect is a command the client must send after the upgrade; the
	// connection is ready once a reply arrives (centrifuge).
	connect []byte
	// appPing is a message the server sends as a ping and expects back
	// (centrifuge's "{}").
	appPing []byte
	// sse: the client asks for a Server-Sent Events stream (an HTTP/1.1
	// GET with Accept: text/event-stream) instead of upgrading, and reads
	// notifications from the events' data; nothing is sent back.
	sse bool
}

var peers = map[string]peer{
	"notify":     {path: "/ws"},
	"melody":     {path: "/ws"},
	"gorilla":    {path: "/ws", lines: true},
	"naive":      {path: "/ws"},
	"raw":        {path: "/ws"},
	"raw2":       {path: "/ws"},
	"rawq":       {path: "/ws"},
	"centrifuge": {path: "/connection/websocket", lines: true, connect: []byte(`{"id":1,"connect":{}}`), appPing: []byte("{}")},
	"notify-sse": {path: "/ws", sse: true},
	// centrifuge's SSE handler takes the connect command in the URL.
	"centrifuge-sse": {path: "/connection/sse?cf_connect=" + url.QueryEscape(`{"id":1,"connect":{}}`), sse: true},
}

// wsConn is one client connection. Only its worker touches the buffer and
// the frame state; counters are atomic so the harness can read them live.
type wsConn struct {
	idx     int
	fd      int
	nc      *net.TCPConn // stallers keep their net.Conn and never read it
	local   *net.TCPAddr
	healthy bool
	lg      *loadgen

	buf  []byte
	r, w int
	msg  []byte // an unfinished fragmented message; for a stream, an unfinished line
	frag bool

	// A stream's HTTP/1.1 chunked framing, and the data of the event being read.
	chunk int // bytes left in the current chunk
	skip  int // bytes of the CRLF that ends a chunk, still to skip
	data  []byte
	isEv  bool // data holds an event's data lines

	next      atomic.Int64 // the index expected next
	got       atomic.Int64 // notifications received
	missing   atomic.Int64 // indexes skipped
	reordered atomic.Int64 // indexes at or below one already seen
	closed    atomic.Bool
	closeCode atomic.Int32 // from the server's close frame; -1 without one
}

type loadgen struct {
	name    string
	peer    peer
	server  string
	conns   []*wsConn
	workers []*worker
	stop    atomic.Bool
	wg      sync.WaitGroup

	track   atomic.Pointer[tracker] // window accounting of a saturated run
	latency atomic.Bool             // record latencies
	// unordered: messages of one burst come from concurrent publishers, so
	// their order is not their indexes'; count them, keep next at the
	// highest index seen plus one.
	unordered atomic.Bool
}

type worker struct {
	lg    *loadgen
	epfd  int
	byFd  map[int32]*wsConn
	hist  histogram
	other atomic.Int64 // messages that were not notifications
	out   []byte
}

func newLoadgen(name, server string, workers int) (*loadgen, error) {
	lg := &loadgen{name: name, peer: peers[name], server: server}
	for range workers {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			lg.close()
			return nil, err
		}
		lg.workers = append(lg.workers, &worker{lg: lg, epfd: epfd, byFd: map[int32]*wsConn{}})
	}
	return lg, nil
}

// connect dials n connections, every stallEvery-th of them a staller (0:
// none), at most par at a time: the listen backlog is bounded (somaxconn).
func (lg *loadgen) connect(ctx context.Context, n, stallEvery, par int) error {
	lg.conns = make([]*wsConn, n)
	sem := make(chan struct{}, par)
	var mu sync.Mutex
	var firstErr error
	failed := 0
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			staller := stallEvery > 0 && i%stallEvery == stallEvery/2
			c, err := lg.dial(ctx, i, staller)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			lg.conns[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("%s: %d of %d connections failed, first: %w", lg.name, failed, n, firstErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, c := range lg.conns {
		if c.healthy {
			if err := lg.workers[c.idx%len(lg.workers)].add(c); err != nil {
				return err
			}
		}
	}
	for _, w := range lg.workers {
		lg.wg.Add(1)
		go w.run()
	}
	return nil
}

// sources spreads client sockets over several loopback addresses, so that
// repeated runs do not run out of ephemeral ports.
const sources = 8

func (lg *loadgen) dial(ctx context.Context, idx int, staller bool) (*wsConn, error) {
	d := net.Dialer{
		Timeout:   10 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+idx%sources))},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				// Take the port at connect time, so the 4-tuple (not the
				// source address alone) has to be unique.
				const ipBindAddressNoPort = 24
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
				if staller {
					// A staller looks like a remote client that stopped
					// reading: an Internet MSS and a small receive buffer.
					// On loopback (64 KiB MSS) the kernel would otherwise
					// buffer about 4 MB before the server felt anything.
					serr = errors.Join(
						syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1460),
						syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096))
				}
			})
			return errors.Join(err, serr)
		},
	}
	var nc *net.TCPConn
	for attempt := 0; ; attempt++ {
		conn, err := d.DialContext(ctx, "tcp", lg.server)
		if err == nil {
			nc = conn.(*net.TCPConn)
			break
		}
		if attempt == 2 || ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := &wsConn{idx: idx, nc: nc, local: nc.LocalAddr().(*net.TCPAddr), healthy: !staller, lg: lg, buf: make([]byte, 4096)}
	c.closeCode.Store(-1)
	handshake := lg.handshake
	if lg.peer.sse {
		handshake = lg.streamRequest
	}
	rest, err := handshake(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if staller {
		return c, nil
	}
	c.w = copy(c.buf, rest)
	// Detach: duplicate the descriptor, then close the original, which
	// takes it out of Go's poller; the duplicate shares the socket (and its
	// O_NONBLOCK flag) and is read only through the workers' epoll.
	rc, err := nc.SyscallConn()
	if err != nil {
		nc.Close()
		return nil, err
	}
	var dupErr error
	err = rc.Control(func(fd uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			dupErr = errno
		}
		c.fd = int(r)
	})
	nc.Close()
	if err = errors.Join(err, dupErr); err != nil {
		return nil, err
	}
	c.nc = nil
	return c, nil
}

// handshake upgrades the connection and, for peers that need it, sends
// the connect command and waits for its reply. It returns bytes read past
// the handshake.
func (lg *loadgen) handshake(nc *net.TCPConn) ([]byte, error) {
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	defer nc.SetDeadline(time.Time{})
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	req := "GET " + lg.peer.path + " HTTP/1.1\r\nHost: " + lg.server +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + k +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("upgrade answered %s", resp.Status)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != acceptKey([]byte(k)) {
		return nil, fmt.Errorf("bad Sec-WebSocket-Accept %q", got)
	}
	rest := make([]byte, br.Buffered())
	_, _ = br.Read(rest)
	if lg.peer.connect == nil {
		return rest, nil
	}
	if _, err := nc.Write(appendClientFrame(nil, opText, lg.peer.connect)); err != nil {
		return nil, err
	}
	buf := append(make([]byte, 0, 4096), rest...)
	for {
		op, _, payload, n, err := parseFrame(buf)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			if op == opClose {
				return nil, errors.New("closed during connect")
			}
			if op == opText && bytes.Contains(payload, []byte(`"id":1`)) {
				if bytes.Contains(payload, []byte(`"error"`)) {
					return nil, fmt.Errorf("connect refused: %s", payload)
				}
				return buf[n:], nil
			}
			buf = buf[n:]
			continue
		}
		m, err := br.Read(buf[len(buf):cap(buf)])
		if err != nil {
			return nil, err
		}
		buf = buf[:len(buf)+m]
	}
}

// streamRequest asks for a Server-Sent Events stream and returns the bytes
// of the (chunked) body read with the response's head.
func (lg *loadgen) streamRequest(nc *net.TCPConn) ([]byte, error) {
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	defer nc.SetDeadline(time.Time{})
	req := "GET " + lg.peer.path + " HTTP/1.1\r\nHost: " + lg.server + "\r\nAccept: text/event-stream\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	// The body is the stream: read on from br's bytes, never Close it
	// (that would read the stream to its end).
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return nil, fmt.Errorf("stream request answered %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		return nil, fmt.Errorf("stream not chunked: %v", resp.TransferEncoding)
	}
	rest := make([]byte, br.Buffered())
	_, _ = br.Read(rest)
	return rest, nil
}

// stream handles a stream's bytes: it undoes the chunked framing and hands
// each event's data to message. It reports false when the stream ends or
// breaks; bytes of an unfinished chunk-size line stay in c.buf.
func (w *worker) stream(c *wsConn, now time.Time) bool {
	for c.r < c.w {
		b := c.buf[c.r:c.w]
		switch {
		case c.skip > 0:
			n := min(c.skip, len(b))
			c.r += n
			c.skip -= n
		case c.chunk > 0:
			n := min(c.chunk, len(b))
			w.lines(c, b[:n], now)
			c.r += n
			if c.chunk -= n; c.chunk == 0 {
				c.skip = 2
			}
		default:
			i := bytes.Index(b, []byte("\r\n"))
			if i < 0 {
				return true
			}
			size, ok := hexSize(b[:i])
			if !ok || size == 0 { // a malformed chunk, or the end of the response
				return false
			}
			c.chunk = size
			c.r += i + 2
		}
	}
	return true
}

// hexSize parses a chunk-size line (extensions ignored).
func hexSize(b []byte) (int, bool) {
	n, digits := 0, 0
	for _, ch := range b {
		switch {
		case '0' <= ch && ch <= '9':
			n = n<<4 | int(ch-'0')
		case 'a' <= ch && ch <= 'f':
			n = n<<4 | int(ch-'a'+10)
		case 'A' <= ch && ch <= 'F':
			n = n<<4 | int(ch-'A'+10)
		case ch == ';':
			return n, digits > 0
		default:
			return 0, false
		}
		if digits++; digits > 8 {
			return 0, false
		}
	}
	return n, digits > 0
}

// lines parses event-stream text: data lines are collected, a blank line
// ends an event, comments and other fields are skipped. Lines end in LF,
// with or without CR (centrifuge writes a CRLF first).
func (w *worker) lines(c *wsConn, b []byte, now time.Time) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			c.msg = append(c.msg, b...)
			return
		}
		line := b[:i]
		if len(c.msg) > 0 {
			c.msg = append(c.msg, line...)
			line = c.msg
		}
		b = b[i+1:]
		line = bytes.TrimSuffix(line, []byte("\r"))
		switch {
		case len(line) == 0:
			if c.isEv {
				w.message(c, c.data, now)
				c.data, c.isEv = c.data[:0], false
			}
		case bytes.HasPrefix(line, []byte("data:")):
			if c.isEv {
				c.data = append(c.data, '\n')
			}
			c.data, c.isEv = append(c.data, bytes.TrimPrefix(line[5:], []byte(" "))...), true
		}
		c.msg = c.msg[:0]
	}
}

func (w *worker) add(c *wsConn) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(c.fd)}
	if err := syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		return err
	}
	w.byFd[int32(c.fd)] = c
	return nil
}

func (w *worker) run() {
	defer w.lg.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]syscall.EpollEvent, 256)
	for !w.lg.stop.Load() {
		n, err := syscall.EpollWait(w.epfd, events, 50)
		if err != nil && err != syscall.EINTR {
			panic(err)
		}
		if n <= 0 {
			continue
		}
		now := time.Now()
		for _, ev := range events[:n] {
			if c := w.byFd[ev.Fd]; c != nil {
				w.read(c, now)
			}
		}
	}
}

// read does one read call and handles every whole frame it completed.
func (w *worker) read(c *wsConn, now time.Time) {
	if c.w == len(c.buf) {
		c.buf = append(c.buf, make([]byte, len(c.buf))...)
	}
	n, err := syscall.Read(c.fd, c.buf[c.w:])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return
	}
	if n <= 0 {
		w.drop(c)
		return
	}
	c.w += n
	if w.lg.peer.sse {
		if !w.stream(c, now) {
			w.drop(c)
			return
		}
	}
	for c.r < c.w && !w.lg.peer.sse {
		op, fin, payload, k, err := parseFrame(c.buf[c.r:c.w])
		if err != nil {
			w.drop(c)
			return
		}
		if k == 0 {
			if need := needed(c.buf[c.r:c.w]); need > len(c.buf) {
				c.buf = append(c.buf[:c.w], make([]byte, need-c.w)...)
			}
			break
		}
		c.r += k
		if !w.frame(c, op, fin, payload, now) {
			w.drop(c)
			return
		}
	}
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if c.r > 0 {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
}

// frame handles one frame; it reports false when the connection ends.
func (w *worker) frame(c *wsConn, op byte, fin bool, payload []byte, now time.Time) bool {
	switch op {
	case opPing:
		w.write(c, opPong, payload)
		return true
	case opPong:
		return true
	case opClose:
		code := int32(1005)
		if len(payload) >= 2 {
			code = int32(payload[0])<<8 | int32(payload[1])
		}
		c.closeCode.Store(code)
		return false
	case opContinuation:
		if !c.frag {
			return false
		}
		c.msg = append(c.msg, payload...)
	default:
		if c.frag {
			return false
		}
		if fin {
			w.message(c, payload, now)
			return true
		}
		c.msg = append(c.msg[:0], payload...)
	}
	c.frag = !fin
	if fin {
		w.message(c, c.msg, now)
	}
	return true
}

func (w *worker) message(c *wsConn, m []byte, now time.Time) {
	if !w.lg.peer.lines {
		w.notification(c, m, now)
		return
	}
	for len(m) > 0 {
		line := m
		if i := bytes.IndexByte(m, '\n'); i >= 0 {
			line, m = m[:i], m[i+1:]
		} else {
			m = nil
		}
		w.notification(c, line, now)
	}
}

func (w *worker) notification(c *wsConn, m []byte, now time.Time) {
	i, t, ok := fields(m)
	if !ok {
		if p := w.lg.peer.appPing; p != nil && bytes.Equal(m, p) {
			w.write(c, opText, p)
		} else {
			w.other.Add(1)
		}
		return
	}
	switch next := c.next.Load(); {
	case w.lg.unordered.Load():
		c.next.Store(max(next, i+1))
	case i < next:
		c.reordered.Add(1)
		return
	case i > next:
		c.missing.Add(i - next)
		c.next.Store(i + 1)
	default:
		c.next.Store(i + 1)
	}
	c.got.Add(1)
	if tr := w.lg.track.Load(); tr != nil {
		tr.delivered(i)
	}
	if w.lg.latency.Load() {
		w.hist.record(now.Sub(time.Unix(0, t)))
	}
}

// write sends a small control reply. The socket is non-blocking; a reply
// that does not fit at once is dropped (the server then closes the
// connection, which the run reports).
func (w *worker) write(c *wsConn, op byte, payload []byte) {
	w.out = appendClientFrame(w.out[:0], op, payload)
	_, _ = syscall.Write(c.fd, w.out)
}

func (w *worker) drop(c *wsConn) {
	if c.closed.Swap(true) {
		return
	}
	_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	delete(w.byFd, int32(c.fd))
}

// close stops the workers and closes every socket with a reset, so no
// TIME_WAIT is left on the client side.
func (lg *loadgen) close() {
	lg.stop.Store(true)
	lg.wg.Wait()
	for _, c := range lg.conns {
		switch {
		case c == nil:
		case c.nc != nil:
			_ = c.nc.SetLinger(0)
			_ = c.nc.Close()
		default:
			_ = syscall.SetsockoptLinger(c.fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
			_ = syscall.Close(c.fd)
		}
	}
	for _, w := range lg.workers {
		_ = syscall.Close(w.epfd)
	}
}

// healthy returns the connections that read.
func (lg *loadgen) healthy() []*wsConn {
	var out []*wsConn
	for _, c := range lg.conns {
		if c.healthy {
			out = append(out, c)
		}
	}
	return out
}

func (lg *loadgen) hists() []*histogram {
	var hs []*histogram
	for _, w := range lg.workers {
		hs = append(hs, &w.hist)
	}
	return hs
}

// tracker counts deliveries per broadcast, to bound the broadcasts in
// flight in a saturated run: broadcast k is complete once every healthy
// connection has it.
type tracker struct {
	target int64
	counts [trackRing]atomic.Int64
	done   chan int64
}

const trackRing = 1024

func newTracker(target int) *tracker {
	return &tracker{target: int64(target), done: make(chan int64, trackRing)}
}

func (t *tracker) delivered(i int64) {
	if t.counts[i%trackRing].Add(1) == t.target {
		t.done <- i
	}
}
