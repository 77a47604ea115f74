package notify_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/internal/wiretest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is a Registry behind a real HTTP server.
type server struct {
	reg  *notify.Registry
	srv  *httptest.Server
	ws   string // ws:// URL of the handler
	gone chan error
}

// newServer starts a Registry with opts behind httptest. Its OnDisconnect
// hook is wrapped to report every ended connection on s.gone.
func newServer(t testing.TB, opts *notify.Options) *server {
	t.Helper()
	if opts == nil {
		opts = &notify.Options{}
	}
	s := &server{gone: make(chan error, 10000)}
	reportDisconnects(opts, s.gone)
	s.reg = notify.New(opts)
	s.srv = httptest.NewServer(s.reg.Handler())
	s.ws = "ws" + strings.TrimPrefix(s.srv.URL, "http")
	t.Cleanup(func() {
		if err := s.reg.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		s.srv.Close()
	})
	return s
}

// reportDisconnects wraps opts.OnDisconnect to also send every ended
// connection's error on gone.
func reportDisconnects(opts *notify.Options, gone chan<- error) {
	user := opts.OnDisconnect
	opts.OnDisconnect = func(c *notify.Client, err error) {
		if user != nil {
			user(c, err)
		}
		gone <- err
	}
}

// dial connects a client; query is appended to the handler URL.
func dial(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// dialReady connects with since=now (plus query) and reads the hello, which
// the server sends only once the connection is registered: after it, every
// broadcast reaches this client.
func dialReady(t testing.TB, s *server, query string) (*websocket.Conn, notify.Position) {
	t.Helper()
	c := dial(t, s.ws+"?since=now"+query)
	var pos notify.Position
	m := read(t, c)
	if m.Type != notify.TypeHello {
		t.Fatalf("first message %+v, want %s", m, notify.TypeHello)
	}
	if err := json.Unmarshal(m.Data, &pos); err != nil {
		t.Fatal(err)
	}
	return c, pos
}

// wire is a message as a client decodes it.
type wire = wiretest.Message

func read(t testing.TB, c *websocket.Conn) wire {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("read a %v frame", typ)
	}
	m, err := wiretest.Decode(b)
	if err != nil || m.Text != "" {
		t.Fatalf("read %q, not an envelope: %v", b, err)
	}
	return m
}

// readUntilClose reads messages until the connection closes and returns them
// with the close status.
func readUntilClose(t testing.TB, c *websocket.Conn) ([]wire, websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []wire
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("no close within the deadline: %v", err)
			}
			return out, websocket.CloseStatus(err)
		}
		var m wire
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("read %q: %v", b, err)
		}
		out = append(out, m)
	}
}

func broadcast(t testing.TB, reg *notify.Registry, m notify.SocketMessage) {
	t.Helper()
	if err := reg.Broadcast(context.Background(), m); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
}

// waitGone waits for n connections to end and returns their errors.
func (s *server) waitGone(t testing.TB, n int) []error {
	t.Helper()
	var errs []error
	timeout := time.After(20 * time.Second)
	for len(errs) < n {
		select {
		case err := <-s.gone:
			errs = append(errs, err)
		case <-timeout:
			t.Fatalf("%d of %d connections ended within 20s", len(errs), n)
		}
	}
	return errs
}

func closeCode(err error) websocket.StatusCode {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// newHTTPServer serves h and returns the ws:// URL.
func newHTTPServer(t testing.TB, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// upgradeHeader returns the headers of a valid WebSocket upgrade request,
// with each key/value pair in kv set on top (an empty value deletes it).
func upgradeHeader(kv ...string) http.Header {
	h := http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			h.Del(kv[i])
		} else {
			h.Set(kv[i], kv[i+1])
		}
	}
	return h
}

// countFDs returns how many file descriptors this process has open.
func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// waitFor polls cond until it holds or timeout passes, and reports whether
// it held. It is for conditions nothing signals (fd counts, goroutine
// counts, counters), never a stand-in for a channel.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return cond()
		}
		<-tick.C
	}
	return true
}

// checkBystander proves a connection that did nothing wrong still receives
// broadcasts.
func checkBystander(t testing.TB, s *server, c *websocket.Conn) {
	t.Helper()
	broadcast(t, s.reg, notify.SocketMessage{Type: "still.here"})
	if m := read(t, c); m.Type != "still.here" {
		t.Errorf("bystander got %+v, want still.here", m)
	}
}

// WebSocket opcodes and header bits, for frames written by hand.
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
	bitFin   = 0x80
	bitRSV1  = 0x40
)

// frameHeader encodes a frame header: b0 carries FIN, RSV and the opcode;
// declared is the payload length announced, which the caller may then not
// send. Masked headers use the all-zero key, so the payload goes as is.
func frameHeader(b0 byte, declared uint64, masked bool) []byte {
	h := []byte{b0, 0}
	switch {
	case declared < 126:
		h[1] = byte(declared)
	case declared <= 0xFFFF:
		h[1] = 126
		h = binary.BigEndian.AppendUint16(h, uint16(declared))
	default:
		h[1] = 127
		h = binary.BigEndian.AppendUint64(h, declared)
	}
	if masked {
		h[1] |= 0x80
		h = append(h, 0, 0, 0, 0)
	}
	return h
}

// clientFrame is a complete masked client frame.
func clientFrame(b0 byte, payload []byte) []byte {
	return append(frameHeader(b0, uint64(len(payload)), true), payload...)
}

// rawConn is a WebSocket client written by hand over TCP, for what a
// well-behaved client library will not do: malformed and partial frames,
// resets, silence.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

// dialRaw upgrades a TCP connection to the server's handler with query
// (which starts with "?" or is empty).
func dialRaw(t testing.TB, s *server, query string) *rawConn {
	t.Helper()
	host := strings.TrimPrefix(s.srv.URL, "http://")
	nc, err := net.DialTimeout("tcp", host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return upgradeRaw(t, nc, host, query)
}

// upgradeRaw sends a WebSocket handshake for query over nc, checks the
// 101, and returns the connection for hand-written frames.
func upgradeRaw(t testing.TB, nc net.Conn, host, query string) *rawConn {
	t.Helper()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(nc, "GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", query, host)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	return &rawConn{nc, br}
}

// dialRawReady is dialRaw with since=now (and query, which starts with
// "&" or is empty): it returns once the hello was read, so the connection
// is registered.
func dialRawReady(t testing.TB, s *server, query string) *rawConn {
	t.Helper()
	c := dialRaw(t, s, "?since=now"+query)
	op, p, err := c.readFrame()
	if err != nil || op != opText || !bytes.Contains(p, []byte(notify.TypeHello)) {
		t.Fatalf("first frame: op %d %q %v, want the hello", op, p, err)
	}
	return c
}

// readFrame reads one unfragmented server frame (servers do not mask).
func (c *rawConn) readFrame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		_, err = io.ReadFull(c.br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, err = io.ReadFull(c.br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	if err != nil {
		return 0, nil, err
	}
	if n > 1<<24 {
		return 0, nil, fmt.Errorf("server frame of %d bytes", n)
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.br, payload)
	return h[0] & 0x0F, payload, err
}

// readClose reads until the server's close frame and returns its code, or
// -1 if the connection ended without one. It answers the close, as a
// client should. Text frames before it are returned too.
func (c *rawConn) readClose() (websocket.StatusCode, []string) {
	var texts []string
	for {
		op, p, err := c.readFrame()
		if err != nil {
			return -1, texts
		}
		switch op {
		case opText:
			texts = append(texts, string(p))
		case opClose:
			c.Write(clientFrame(bitFin|opClose, p))
			if len(p) < 2 {
				return websocket.StatusNoStatusRcvd, texts
			}
			return websocket.StatusCode(binary.BigEndian.Uint16(p)), texts
		}
	}
}

// reset drops the connection with a TCP RST (SO_LINGER 0), as a crashing
// peer or a middlebox would.
func (c *rawConn) reset() {
	c.Conn.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// stall broadcasts frames of 64 KiB. A client that read its hello and never
// reads again has its socket buffers (about 4 MB on Linux loopback) filled
// by them, and the server's writes to it block.
func stall(t *testing.T, reg *notify.Registry, frames int) {
	t.Helper()
	payload := strings.Repeat("x", 64<<10)
	for range frames {
		broadcast(t, reg, notify.SocketMessage{Type: "big", Data: payload})
	}
}

// connKey carries, in a dial's context, where to store its TCP connection.
type connKey struct{}

// recordingClient is an HTTP client for websocket.Dial that hands the
// dialled TCP connection to whoever put a *net.Conn under connKey in the
// dial's context, so a test can reset it.
var recordingClient = &http.Client{Transport: &http.Transport{
	DisableKeepAlives: true,
	DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if p, ok := ctx.Value(connKey{}).(*net.Conn); ok && err == nil {
			*p = c
		}
		return c, err
	},
}}

// parseSeq reads the seq from the front of a broadcast frame, {"seq":N,….
func parseSeq(b []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"seq":`))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	return n, err == nil
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// dialMany connects n clients with since=now, at most 50 dials at a time
// (the listen backlog is finite), and returns them once each has read its
// hello.
func dialMany(t *testing.T, s *server, n int, query string) []*websocket.Conn {
	t.Helper()
	conns := make([]*websocket.Conn, n)
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for i := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, s.ws+"?since=now"+query, nil)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			c.SetReadLimit(-1)
			if _, _, err := c.Read(ctx); err != nil {
				t.Errorf("hello: %v", err)
				c.CloseNow()
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.CloseNow()
		}
	})
	return conns
}

// pipeServer is a Registry behind an http.Server that accepts in-memory
// pipes.
type pipeServer struct {
	reg   *notify.Registry
	conns chan net.Conn
	gone  chan error
}

func newPipeServer(t *testing.T, opts *notify.Options) *pipeServer {
	t.Helper()
	if opts == nil {
		opts = &notify.Options{}
	}
	s := &pipeServer{conns: make(chan net.Conn), gone: make(chan error, 10000)}
	reportDisconnects(opts, s.gone)
	s.reg = notify.New(opts)
	l := &pipeListener{conns: s.conns, done: make(chan struct{})}
	srv := &http.Server{Handler: s.reg.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		if err := s.reg.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		srv.Close()
		<-served
	})
	return s
}

// dial opens a pipe to the server and upgrades it with query.
func (s *pipeServer) dial(t *testing.T, query string) *rawConn {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close() })
	s.conns <- server
	return upgradeRaw(t, client, "pipe", query)
}

// dialReady is dial with since=now: it returns once the hello was read, so
// the connection is registered and its writer idle.
func (s *pipeServer) dialReady(t *testing.T) *rawConn {
	t.Helper()
	c := s.dial(t, "?since=now")
	if op, p, err := c.readFrame(); err != nil || op != opText || !bytes.Contains(p, []byte(notify.TypeHello)) {
		t.Fatalf("first frame: op %d %q %v, want the hello", op, p, err)
	}
	return c
}

// holdWriters broadcasts a message of size bytes (more than a client's
// read buffer) and has each client read its first bytes: from then on each
// connection's writer is blocked in the middle of that frame, with nothing
// else taken from its queue, until the client reads on.
func (s *pipeServer) holdWriters(t *testing.T, size int, conns ...*rawConn) {
	t.Helper()
	broadcast(t, s.reg, notify.SocketMessage{Type: "first", Data: strings.Repeat("x", size)})
	for _, c := range conns {
		if _, err := c.br.Peek(1); err != nil {
			t.Fatal(err)
		}
	}
}

type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }

func (pipeAddr) String() string { return "pipe" }

// frames reads text frames until the close frame, and returns their types
// and the close code (-1 if the connection ended without one).
func (c *rawConn) frames(t *testing.T) ([]string, websocket.StatusCode) {
	t.Helper()
	code, texts := c.readClose()
	types := make([]string, len(texts))
	for i, text := range texts {
		var m wire
		if err := json.Unmarshal([]byte(text), &m); err != nil {
			t.Fatalf("frame %q: %v", text, err)
		}
		types[i] = m.Type
	}
	return types, code
}
