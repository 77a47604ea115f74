package pgbroker_test

import (
	"database/sql"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/pgbroker"
	"github.com/wsnotify/notify/pgbroker/internal/pgtest"
)

func msg(label string) notify.SocketMessage {
	return notify.SocketMessage{Type: "test", Data: label}
}

// A notification written in a transaction that rolls back is never sent;
// one written in a transaction that commits is, with the next seq, through
// pgx and through database/sql alike, in commit order with plain
// Broadcasts.
func TestTransactionCommitsOrRollsBack(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	a := newNode(t, s, "A", nil)
	b := newNode(t, s, "B", nil)
	cl := connect(t, "client@B", b.ws+"?since=now")
	db := s.Conn(t)

	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.b.BroadcastTx(ctx, tx, msg("rolled back")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	a.broadcast(t, "plain", notify.SocketMessage{})
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return a.b.BroadcastTx(ctx, tx, msg("pgx")) })
	if err != nil {
		t.Fatal(err)
	}

	sqlDB := sql.OpenDB(stdlib.GetConnector(*db.Config()))
	defer sqlDB.Close()
	stx, err := sqlDB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.b.BroadcastSQL(ctx, stx, msg("sql rolled back")); err != nil {
		t.Fatal(err)
	}
	stx.Rollback()
	stx, err = sqlDB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.b.BroadcastSQL(ctx, stx, msg("database/sql")); err != nil {
		t.Fatal(err)
	}
	if err := stx.Commit(); err != nil {
		t.Fatal(err)
	}
	a.broadcast(t, "last", notify.SocketMessage{})

	got := cl.readUntil("last")
	if diff := cmp.Diff([]string{"plain", "pgx", "database/sql", "last"}, labels(got)); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(span(1, 4), seqs(got)); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}
	// An invalid message is refused before it touches the transaction.
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return a.b.BroadcastTx(ctx, tx, notify.SocketMessage{Type: "notify.gap"}) })
	if err == nil {
		t.Error("BroadcastTx accepted a reserved type")
	}
}

// A process that commits a notification and dies before doing anything
// else (its connection gone, no broker of its own running) loses nothing:
// the nodes still running deliver it, and a node started later has it in
// history for resuming clients.
func TestCommitThenProcessDies(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	a := newNode(t, s, "A", nil)
	cl := connect(t, "client@A", a.ws+"?since=now")

	// The dying process: a broker that never subscribes, and a raw
	// connection that commits and is then cut.
	dying := newBroker(t, s, pgbroker.Options{})
	c := s.Conn(t)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := dying.BroadcastTx(ctx, tx, msg("committed, then died")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	c.PgConn().Conn().Close() // no Terminate message: the process is gone
	dying.Close()

	got := cl.next()
	if got.label() != "committed, then died" || got.Seq != 1 {
		t.Fatalf("got %+v, want the dead process's message with seq 1", got)
	}

	// Every node down: the commit still lands, and a node started later
	// replays it to a client that resumes from before it.
	a.stop(t)
	later := newBroker(t, s, pgbroker.Options{}) // another publishing process
	c2 := s.Conn(t)
	if err := pgx.BeginFunc(ctx, c2, func(tx pgx.Tx) error { return later.BroadcastTx(ctx, tx, msg("while every node was down")) }); err != nil {
		t.Fatal(err)
	}
	b := newNode(t, s, "B", nil)
	r := connect(t, "resumer@B", fmt.Sprintf("%s?since=1&epoch=%s", b.ws, cl.hello.Epoch))
	if w := r.next(); w.label() != "while every node was down" || w.Seq != 2 {
		t.Fatalf("resumed on a node started later: got %+v, want the message with seq 2", w)
	}
}
