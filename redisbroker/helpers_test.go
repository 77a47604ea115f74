package redisbroker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/internal/wiretest"
	"github.com/wsnotify/notify/redisbroker"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("redis-server"); err != nil && os.Getenv("CI") != "true" {
		fmt.Fprintln(os.Stderr, "redisbroker: redis-server not found, so the Redis integration tests are SKIPPED; install it with `apt-get install -y redis-server`")
	}
	code := m.Run()
	if code == 0 {
		// go-redis probes a server it could not dial from a pool goroutine
		// that sleeps a second between attempts and exits at its next wake
		// once the pool is closed, so allow it that second and a margin.
		deadline := time.Now().Add(5 * time.Second)
		for err := goleak.Find(); err != nil; err = goleak.Find() {
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
				code = 1
				break
			}
		}
	}
	os.Exit(code)
}

// redisServer is a redis-server process owned by one test: loopback only,
// no persistence, its own temporary directory.
type redisServer struct {
	t     testing.TB
	path  string
	addr  string
	dir   string
	extra []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

// startRedis starts a redis-server on a free loopback port and stops it
// when the test ends. Without redis-server the test is skipped, loudly,
// unless CI=true, where it fails. extra are further server arguments.
func startRedis(t testing.TB, extra ...string) *redisServer {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not installed; install it with `apt-get install -y redis-server` to run the Redis integration tests"
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: these tests must run)", msg)
		}
		t.Skip("SKIPPED: " + msg)
	}
	s := &redisServer{t: t, path: path, dir: t.TempDir(), extra: extra}
	for attempt := 0; ; attempt++ {
		s.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
		err := s.start()
		if err == nil {
			break
		}
		if attempt == 2 { // the port was taken between freePort and the bind
			t.Fatal(err)
		}
	}
	t.Cleanup(s.kill)
	return s
}

// start runs redis-server on s.addr and waits until it answers PING.
func (s *redisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, port, _ := net.SplitHostPort(s.addr)
	args := append([]string{
		"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--logfile", "",
	}, s.extra...)
	cmd := exec.Command(s.path, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.out = cmd, exited, out

	// Polling is the only way to learn that redis-server accepts
	// connections; nothing else in the tests polls.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ping(s.addr) {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server did not answer within 10s: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill stops redis-server at once (SIGKILL: a crash, nothing saved).
func (s *redisServer) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// pid returns redis-server's process ID.
func (s *redisServer) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}

// restart starts redis-server again on the same port: an empty Redis, as
// after a crash without persistence.
func (s *redisServer) restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// do runs one command on a fresh connection and returns the reply line.
func (s *redisServer) do(args ...string) string {
	s.t.Helper()
	c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(a), a)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

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

// newBroker connects a Broker to s and closes it when the test ends.
func newBroker(t testing.TB, s *redisServer, o redisbroker.Options) *redisbroker.Broker {
	t.Helper()
	o.Addr = s.addr
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := redisbroker.New(ctx, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Broker.Close: %v", err)
		}
	})
	return b
}

// node is one server of a cluster: a Registry on a Redis broker behind
// its own HTTP server.
type node struct {
	name string
	b    *redisbroker.Broker
	reg  *notify.Registry
	srv  *httptest.Server
	ws   string
	logs *logRecorder
	raw  *connTracker
	once sync.Once
}

// newNode starts a node; opts may set hooks, the rest is filled in.
func newNode(t testing.TB, s *redisServer, name string, opts *notify.Options) *node {
	t.Helper()
	n := &node{name: name, logs: &logRecorder{}}
	n.b = newBroker(t, s, redisbroker.Options{Logger: slog.New(n.logs), MaxBackoff: 200 * time.Millisecond})
	if opts == nil {
		opts = &notify.Options{}
	}
	opts.Broker = n.b
	// Tests read one client at a time; roomy queues keep the others open.
	opts.QueueLength, opts.QueueBytes = 1<<14, 64<<20
	n.reg = notify.New(opts)
	n.srv = httptest.NewUnstartedServer(n.reg.Handler())
	n.raw = &connTracker{Listener: n.srv.Listener}
	n.srv.Listener = n.raw
	n.srv.Start()
	n.ws = "ws" + strings.TrimPrefix(n.srv.URL, "http")
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *node) stop(t testing.TB) {
	n.once.Do(func() {
		if err := n.reg.Close(); err != nil {
			t.Errorf("%s: Registry.Close: %v", n.name, err)
		}
		n.srv.Close()
		if err := n.b.Close(); err != nil {
			t.Errorf("%s: Broker.Close: %v", n.name, err)
		}
	})
}

// kill ends the node as a crash would: every TCP connection is cut without
// a WebSocket close, then its goroutines are released.
func (n *node) kill(t testing.TB) {
	n.raw.Close()
	n.raw.cut()
	n.stop(t)
}

func (n *node) broadcast(t testing.TB, label string, m notify.SocketMessage) {
	t.Helper()
	if m.Type == "" {
		m.Type = "test"
	}
	m.Data = label
	if err := n.reg.Broadcast(context.Background(), m); err != nil {
		t.Fatalf("%s: Broadcast %s: %v", n.name, label, err)
	}
}

// connTracker is a listener that remembers its connections so that a test
// can cut them; httptest forgets hijacked ones.
type connTracker struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *connTracker) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *connTracker) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// logRecorder is a slog.Handler that keeps every record's message.
type logRecorder struct {
	mu      sync.Mutex
	msgs    []string
	changed chan struct{} // closed and replaced at each record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Level.String()+" "+r.Message)
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
	return nil
}

// waitFor waits until a record's level and message start with prefix.
func (h *logRecorder) waitFor(t testing.TB, prefix string) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		h.mu.Lock()
		for _, m := range h.msgs {
			if strings.HasPrefix(m, prefix) {
				h.mu.Unlock()
				return
			}
		}
		if h.changed == nil {
			h.changed = make(chan struct{})
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no log record %q within 15s", prefix)
		}
	}
}

// has reports whether a record's level and message start with prefix.
func (h *logRecorder) has(prefix string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

// wire is a frame as a client decodes it; Text holds a frame that is not
// JSON (NotifyText).
type wire struct{ wiretest.Message }

// label is the Data string of a test message, the text of a raw frame, or
// the type of a reserved message.
func (w wire) label() string {
	switch {
	case w.Text != "":
		return w.Text
	case strings.HasPrefix(w.Type, "notify."):
		return w.Type
	}
	var s string
	json.Unmarshal(w.Data, &s)
	return s
}

// gap is the data of notify.gap and, with Reason empty, of notify.hello.
type gap struct {
	Reason string `json:"reason"`
	Since  uint64 `json:"since"`
	Epoch  string `json:"epoch"`
	Seq    uint64 `json:"seq"`
}

func (w wire) gap(t testing.TB) gap {
	t.Helper()
	var g gap
	if err := json.Unmarshal(w.Data, &g); err != nil {
		t.Fatalf("%s data %s: %v", w.Type, w.Data, err)
	}
	return g
}

// client is a WebSocket client of one node.
type client struct {
	t     testing.TB
	name  string
	conn  *websocket.Conn
	hello gap // the position notify.hello reported
}

// connect dials url and, since every test client resumes (since=…), reads
// the notify.hello that the server sends once the client is registered:
// every message published after connect returns reaches it.
func connect(t testing.TB, name, url string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, url, err)
	}
	conn.SetReadLimit(-1)
	t.Cleanup(func() { conn.CloseNow() })
	c := &client{t: t, name: name, conn: conn}
	w := c.next()
	if w.Type != notify.TypeHello {
		t.Fatalf("%s: first frame %+v, want %s", name, w, notify.TypeHello)
	}
	c.hello = w.gap(t)
	return c
}

// next reads one frame.
func (c *client) next() wire {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("%s: read: %v", c.name, err)
	}
	m, err := wiretest.Decode(b)
	if err != nil {
		c.t.Fatalf("%s: frame %q: %v", c.name, b, err)
	}
	return wire{m}
}

// read reads n frames.
func (c *client) read(n int) []wire {
	c.t.Helper()
	out := make([]wire, n)
	for i := range out {
		out[i] = c.next()
	}
	return out
}

// readUntil reads frames up to and including the first with label stop.
func (c *client) readUntil(stop string) []wire {
	c.t.Helper()
	var out []wire
	for {
		w := c.next()
		out = append(out, w)
		if w.label() == stop {
			return out
		}
	}
}

func labels(ws []wire) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.label()
	}
	return out
}

func seqs(ws []wire) []uint64 {
	out := make([]uint64, len(ws))
	for i, w := range ws {
		out[i] = w.Seq
	}
	return out
}

// span returns the seqs from..to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}
