// Command customers serves notify's customers demo on PostgreSQL: the
// customers live in a table, and each change and its notification commit
// in one transaction, so every page sees exactly the committed changes,
// in one order, even if the process dies right after a commit. Run as many
// as you like against one database: a page can resume on any of them.
//
//	DATABASE_URL=postgres://user:pass@localhost/db go run ./examples/customers [-addr localhost:8080]
//
// It creates the table customers and pgbroker's tables (notify_log,
// notify_meta) if they are missing.
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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/examples/customers/app"
	"github.com/wsnotify/notify/pgbroker"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	db := flag.String("db", os.Getenv("DATABASE_URL"), "PostgreSQL URL or key=value string (default $DATABASE_URL; empty: PG* variables, then localhost)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *db, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run serves the demo on addr, with the database at db, until ctx ends.
func run(ctx context.Context, addr, db string, out io.Writer) error {
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		return err
	}
	defer pool.Close()
	b, err := pgbroker.New(ctx, &pgbroker.Options{Pool: pool})
	if err != nil {
		return err
	}
	defer b.Close()
	store, err := newStore(ctx, pool, b)
	if err != nil {
		return err
	}
	reg := notify.New(&notify.Options{Broker: b, MaxConnections: 10_000, MaxConnectionsPerUser: 50})

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		reg.Close()
		return err
	}
	srv := &http.Server{
		Handler:           app.New(reg, store),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	fmt.Fprintf(out, "customers demo on PostgreSQL, http://%s/\n", ln.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		reg.Close()
		return err
	case <-ctx.Done():
	}
	// As in examples/customers: the Registry closes its own (hijacked)
	// connections, under the same deadline as the HTTP server.
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
