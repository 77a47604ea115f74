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
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

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

// run serves the demo on addr until ctx ends, then shuts down.
func run(ctx context.Context, addr string, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	reg := notify.New(app.Limits(notify.Options{}))
	fmt.Fprintf(out, "customers demo on http://%s/\n", displayAddr(addr, ln.Addr()))
	return app.Serve(ctx, ln, reg, app.New(reg, app.NewMemoryStore()))
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
