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
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

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
	reg := notify.New(app.Limits(notify.Options{Broker: b}))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		reg.Close()
		return err
	}
	fmt.Fprintf(out, "customers demo on PostgreSQL, http://%s/\n", ln.Addr())
	return app.Serve(ctx, ln, reg, app.New(reg, store))
}
