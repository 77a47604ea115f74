package e2e_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxy is a TCP proxy on 127.0.0.1 that pipes every connection it accepts
// to a backend address. The browser reaches the server only through it, so
// stopping it is the network, or the server, going away: every piped
// connection is dropped and new ones are refused. start listens again on
// the same address, so the page comes back to the same origin; setBackend
// points it at another server, as a restarted process would be. freeze
// stops forwarding on the connections piped so far without closing them, as
// a network that died silently would (a Wi-Fi switch, a NAT that forgot
// the flow): nothing arrives, nothing reports an error.
type proxy struct {
	t    *testing.T
	addr string // host:port, the same across restarts

	mu      sync.Mutex
	backend string
	ln      net.Listener       // nil while stopped
	halt    context.CancelFunc // ends the current run's context
	conns   map[net.Conn]struct{}
	pipes   map[*atomic.Bool]struct{} // each live pipe's frozen flag
	wg      sync.WaitGroup            // the accept loop and every pipe
}

// newProxy starts a proxy to backend on a free port; the test's cleanup
// stops it.
func newProxy(t *testing.T, backend string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &proxy{t: t, addr: ln.Addr().String(), backend: backend, conns: map[net.Conn]struct{}{}, pipes: map[*atomic.Bool]struct{}{}}
	p.serve(ln)
	t.Cleanup(p.stop)
	return p
}

// url is the proxy's address as an http URL, with a trailing slash.
func (p *proxy) url() string { return "http://" + p.addr + "/" }

// setBackend makes connections accepted from now on go to addr.
func (p *proxy) setBackend(addr string) {
	p.mu.Lock()
	p.backend = addr
	p.mu.Unlock()
}

// stop closes the listener and every piped connection, and returns once
// all of the proxy's goroutines have ended. Until start, connecting to the
// proxy's address is refused. It is idempotent.
func (p *proxy) stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
		p.halt()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// freeze makes every connection piped so far drop what it receives, both
// ways, from now on, and stay open. Connections accepted later are piped
// as usual.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for f := range p.pipes {
		f.Store(true)
	}
}

// start listens again on the proxy's address.
func (p *proxy) start() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy: listening again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

func (p *proxy) serve(ln net.Listener) {
	ctx, halt := context.WithCancel(context.Background())
	p.mu.Lock()
	p.ln, p.halt = ln, halt
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // stop closed the listener
			}
			p.wg.Add(1)
			go p.pipe(ctx, c)
		}
	}()
}

// pipe connects client to the backend and copies both ways until either
// side ends or the proxy stops, then closes both. If the backend cannot be
// reached the client's connection is closed, as a dead server's would be.
func (p *proxy) pipe(ctx context.Context, client net.Conn) {
	defer p.wg.Done()
	defer client.Close()
	if !p.track(ctx, client) {
		return
	}
	defer p.untrack(client)

	p.mu.Lock()
	backend := p.backend
	p.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	var d net.Dialer
	server, err := d.DialContext(dctx, "tcp", backend)
	cancel()
	if err != nil {
		return
	}
	defer server.Close()
	if !p.track(ctx, server) {
		return
	}
	defer p.untrack(server)

	frozen := new(atomic.Bool)
	p.mu.Lock()
	p.pipes[frozen] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pipes, frozen)
		p.mu.Unlock()
	}()
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		forward(server, client, frozen)
		server.Close()
	}()
	forward(client, server, frozen)
	client.Close()
	<-upDone
}

// forward copies src to dst until src ends or a write fails, dropping what
// it reads once frozen is set.
func forward(dst io.Writer, src io.Reader, frozen *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// track registers c to be closed by stop, unless the run of ctx has
// already stopped.
func (p *proxy) track(ctx context.Context, c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ctx.Err() != nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// TestProxy checks the proxy the browser tests rely on: it pipes, freeze
// silences the connections piped so far but not later ones, stop drops
// piped connections and refuses new ones, start serves again on the same
// address, and setBackend switches servers.
func TestProxy(t *testing.T) {
	t.Parallel()
	serve := func(body string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	one, two := serve("one"), serve("two")
	p := newProxy(t, one.Listener.Addr().String())

	// get sends one request on conn and returns the body.
	get := func(conn net.Conn) (string, error) {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	dial := func() net.Conn {
		t.Helper()
		conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dialing the proxy: %v", err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	held := dial()
	if body, err := get(held); err != nil || body != "one" {
		t.Fatalf("through the proxy: got %q, %v; want \"one\"", body, err)
	}

	frozen := dial()
	if body, err := get(frozen); err != nil || body != "one" {
		t.Fatalf("through the proxy: got %q, %v; want \"one\"", body, err)
	}
	p.freeze()
	frozen.SetDeadline(time.Now().Add(500 * time.Millisecond))
	io.WriteString(frozen, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if n, err := frozen.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after freeze, a piped connection read %d bytes, err %v; want nothing and no error until the deadline", n, err)
	}
	if body, err := get(dial()); err != nil || body != "one" {
		t.Fatalf("a connection made after freeze: got %q, %v; want \"one\"", body, err)
	}

	p.stop()
	held.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := held.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after stop, a piped connection read %d bytes, err %v; want it dropped", n, err)
	}
	if conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second); err == nil {
		conn.Close()
		t.Fatal("after stop, the proxy still accepts connections")
	}

	p.setBackend(two.Listener.Addr().String())
	p.start()
	if body, err := get(dial()); err != nil || body != "two" {
		t.Fatalf("after restart with a new backend: got %q, %v; want \"two\"", body, err)
	}
}
