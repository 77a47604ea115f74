// Command customers serves the notify demo: a customers REST API and a web
// page that shows every change live, in every open tab.
//
//	go run ./examples/customers [-addr localhost:8080] [-no-websocket]
//
// With -no-websocket it refuses every WebSocket upgrade with 403, as a
// corporate proxy that blocks WebSocket would, and the page carries on over
// Server-Sent Events.
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
	noWebSocket := flag.Bool("no-websocket", false, "refuse WebSocket upgrades (403), as a proxy that blocks them would; the page uses Server-Sent Events")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *noWebSocket, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run serves the demo on addr until ctx ends, then shuts down. With
// noWebSocket, WebSocket upgrades are refused (app.RefuseUpgrades).
func run(ctx context.Context, addr string, noWebSocket bool, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	reg := notify.New(app.Limits(notify.Options{}))
	site := app.New(reg, app.NewMemoryStore())
	if noWebSocket {
		site = app.RefuseUpgrades(site)
	}
	fmt.Fprintf(out, "customers demo on http://%s/\n", displayAddr(addr, ln.Addr()))
	return app.Serve(ctx, ln, reg, site)
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
