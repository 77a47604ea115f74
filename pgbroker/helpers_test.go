package pgbroker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/pgbroker"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if _, err := pgBinDir(); err != nil && os.Getenv("CI") != "true" {
		fmt.Fprintln(os.Stderr, "pgbroker: "+err.Error()+", so the PostgreSQL integration tests are SKIPPED; install it with `apt-get install -y postgresql`")
	}
	code := m.Run()
	template.cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// pgBinDir finds initdb and postgres: on PATH, or in Debian's
// /usr/lib/postgresql/<version>/bin.
func pgBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("postgres"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "postgres")); err == nil {
			return dirs[i], nil
		}
	}
	return "", errors.New("PostgreSQL's initdb and postgres were not found")
}

// asUser returns the command that runs name as an unprivileged user when
// the tests run as root (PostgreSQL refuses to run as root, and CI runs as
// root): setpriv, from util-linux, switches to nobody.
func asUser(name string, args ...string) *exec.Cmd {
	if os.Geteuid() != 0 {
		return exec.Command(name, args...)
	}
	return exec.Command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", name}, args...)...)
}

// makeDir creates an empty directory the server's user owns.
func makeDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			return "", err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// template is one initdb'd data directory per test binary, which every
// server copies: initdb costs seconds, a copy a fraction of one.
var template templateData

type templateData struct {
	once sync.Once
	dir  string // holds data/
	err  error
}

func (tpl *templateData) cleanup() {
	if tpl.dir != "" {
		os.RemoveAll(tpl.dir)
	}
}

func templateDir(bin string) (string, error) {
	template.once.Do(func() {
		dir, err := makeDir("pgbroker-template-")
		if err != nil {
			template.err = err
			return
		}
		template.dir = dir
		cmd := asUser(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
			"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
		if out, err := cmd.CombinedOutput(); err != nil {
			template.err = fmt.Errorf("initdb: %v: %s", err, out)
		}
	})
	return filepath.Join(template.dir, "data"), template.err
}

// pgServer is a PostgreSQL server owned by one test: loopback only, on a
// free port, in a temporary directory, with fsync off (nothing here must
// survive a machine crash; a process crash loses nothing, since the WAL is
// written to the OS at every commit).
type pgServer struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

// startPG starts a PostgreSQL server and stops it when the test ends.
// Without PostgreSQL the test is skipped, loudly, unless CI=true, where it
// fails.
func startPG(t testing.TB) *pgServer {
	t.Helper()
	bin, err := pgBinDir()
	if err != nil {
		msg := err.Error() + "; install them with `apt-get install -y postgresql` to run the PostgreSQL integration tests"
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: these tests must run)", msg)
		}
		t.Skip("SKIPPED: " + msg)
	}
	tpl, err := templateDir(bin)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := makeDir("pgbroker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := asUser("cp", "-a", tpl, filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Fatalf("copying the template data directory: %v: %s", err, out)
	}
	s := &pgServer{t: t, bin: bin, dir: dir}
	for attempt := 0; ; attempt++ {
		s.port = freePort(t)
		err := s.start()
		if err == nil {
			break
		}
		if attempt == 2 { // the port was taken between freePort and the bind
			t.Fatal(err)
		}
	}
	t.Cleanup(s.stop)
	return s
}

// connString is the URL of the server's postgres database.
func (s *pgServer) connString() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// start runs postgres on s.port and waits until it accepts connections.
func (s *pgServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := asUser(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.dir, "data"),
		"-p", strconv.Itoa(s.port), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
		"-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
		"-c", "log_min_messages=FATAL")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.out = cmd, exited, out

	// Polling is the only way to learn that postgres accepts connections;
	// nothing else in the tests polls.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s.ping() {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("postgres did not answer within 30s: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *pgServer) ping() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.connString())
	if err != nil {
		return false
	}
	defer c.Close(ctx)
	return c.Ping(ctx) == nil
}

// crash stops postgres as a crash would: SIGQUIT, its immediate shutdown,
// ends every backend at once, writes no checkpoint, and the next start
// recovers from the WAL.
func (s *pgServer) crash() { s.signal(syscall.SIGQUIT) }

// stop shuts postgres down (fast: backends are ended, nothing waits).
func (s *pgServer) stop() { s.signal(syscall.SIGINT) }

func (s *pgServer) signal(sig os.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// restart starts postgres again on the same port and data.
func (s *pgServer) restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// conn opens a connection for the test, closed when it ends.
func (s *pgServer) conn(t testing.TB) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, s.connString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// exec runs sql on a fresh connection.
func (s *pgServer) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	c, err := pgx.Connect(ctx, s.connString())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
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
func newBroker(t testing.TB, s *pgServer, o pgbroker.Options) *pgbroker.Broker {
	t.Helper()
	o.ConnString = s.connString()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := pgbroker.New(ctx, &o)
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

// node is one server of a cluster: a Registry on a Postgres broker behind
// its own HTTP server.
type node struct {
	name string
	b    *pgbroker.Broker
	reg  *notify.Registry
	srv  *httptest.Server
	ws   string
	logs *logRecorder
	raw  *connTracker
	once sync.Once
}

// newNode starts a node; opts may set hooks, the rest is filled in.
func newNode(t testing.TB, s *pgServer, name string, opts *notify.Options) *node {
	t.Helper()
	n := &node{name: name, logs: &logRecorder{}}
	n.b = newBroker(t, s, pgbroker.Options{Logger: slog.New(n.logs), MaxBackoff: 200 * time.Millisecond})
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
type wire struct {
	Seq   uint64          `json:"seq"`
	Type  string          `json:"type"`
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
	Text  string          `json:"-"`
}

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
	var w wire
	if len(b) == 0 || b[0] != '{' {
		return wire{Text: string(b)}
	}
	if err := json.Unmarshal(b, &w); err != nil {
		c.t.Fatalf("%s: frame %q: %v", c.name, b, err)
	}
	return w
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
