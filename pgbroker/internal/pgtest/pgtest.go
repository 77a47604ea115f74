// Package pgtest starts PostgreSQL servers for the tests of pgbroker and
// its examples: initdb once per test binary, then a copy of that data
// directory per server, on a free loopback port, run as nobody when the
// tests run as root (PostgreSQL refuses root), with fsync off.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// Main runs m: it says loudly when PostgreSQL is missing (the tests that
// need it skip), removes the template data directory afterwards, and
// checks for leaked goroutines. Call it from TestMain.
func Main(m *testing.M) {
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

// Server is a PostgreSQL server owned by one test: loopback only, on a
// free port, in a temporary directory, with fsync off (nothing here must
// survive a machine crash; a process crash loses nothing, since the WAL is
// written to the OS at every commit).
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

// Start starts a PostgreSQL server and stops it when the test ends.
// Without PostgreSQL the test is skipped, loudly, unless CI=true, where it
// fails.
func Start(t testing.TB) *Server {
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
	s := &Server{t: t, bin: bin, dir: dir}
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
	t.Cleanup(s.Stop)
	return s
}

// ConnString is the URL of the server's postgres database.
func (s *Server) ConnString() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// start runs postgres on s.port and waits until it accepts connections.
func (s *Server) start() error {
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

func (s *Server) ping() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := pgx.Connect(context.Background(), s.ConnString())
	if err != nil {
		return false
	}
	defer c.Close(ctx)
	return c.Ping(ctx) == nil
}

// Crash stops postgres as a crash would: SIGQUIT, its immediate shutdown,
// ends every backend at once, writes no checkpoint, and the next start
// recovers from the WAL.
func (s *Server) Crash() { s.signal(syscall.SIGQUIT) }

// Stop shuts postgres down (fast: backends are ended, nothing waits).
func (s *Server) Stop() { s.signal(syscall.SIGINT) }

func (s *Server) signal(sig os.Signal) {
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

// Restart starts postgres again on the same port and data.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// Conn opens a connection for the test, closed when it ends.
func (s *Server) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), s.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs sql on a fresh connection.
func (s *Server) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	c, err := pgx.Connect(context.Background(), s.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
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
