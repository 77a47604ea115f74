// Command customers serves the notify demo: a customers REST API and a web
// page that shows every change live, in every open tab.
//
//	go run ./examples/customers [-addr localhost:8080]
//
// SIGINT or SIGTERM stops the HTTP server and the notify Registry together;
// connected pages are closed with 1001 (going away) and reconnect on their
// own once the server is back.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/examples/customers/app"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// Limits for a server open to the Internet; copy them with the rest. The
// demo has no login, so the per-user limit applies per remote address.
const (
	maxConnections        = 10_000
	maxConnectionsPerAddr = 50
)

// run serves the demo on addr until ctx ends, then shuts down.
func run(ctx context.Context, addr string, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	reg := notify.New(&notify.Options{
		MaxConnections:        maxConnections,
		MaxConnectionsPerUser: maxConnectionsPerAddr,
	})
	srv := &http.Server{
		Handler: app.New(reg, app.NewMemoryStore()),
		// Timeouts against clients that open connections and then trickle
		// or stall: the headers, a whole request, a whole response, and an
		// idle keep-alive connection each get a bound. WebSocket connections
		// are not cut by them: net/http clears a connection's deadlines when
		// it is hijacked, and notify has its own (WriteTimeout, heartbeats).
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	fmt.Fprintf(out, "customers demo on http://%s/\n", displayAddr(addr, ln.Addr()))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		reg.Close()
		return err
	case <-ctx.Done():
	}

	// http.Server.Shutdown does not wait for hijacked connections, so the
	// Registry flushes and closes its own, under the same deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	regDone := make(chan error, 1)
	go func() { regDone <- reg.Shutdown(ctx) }()
	err = srv.Shutdown(ctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, <-regDone)
}

// displayAddr is the address to print: the host as given (localhost by
// default, so that the URL works for IPv4 and IPv6 browsers alike) with the
// port actually bound.
func displayAddr(asked string, bound net.Addr) string {
	host, _, err := net.SplitHostPort(asked)
	_, port, perr := net.SplitHostPort(bound.String())
	if err != nil || perr != nil {
		return bound.String()
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
