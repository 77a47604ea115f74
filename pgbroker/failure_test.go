package pgbroker_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/pgbroker"
	"github.com/wsnotify/notify/pgbroker/internal/pgtest"
)

// PostgreSQL unreachable at start: New fails at once with an error that
// says where it looked.
func TestNewFailsWhenPostgresUnreachable(t *testing.T) {
	t.Parallel()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t)) // nothing listens here
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, err := pgbroker.New(ctx, &pgbroker.Options{ConnString: "postgres://postgres@" + addr + "/postgres?connect_timeout=5"})
	if err == nil {
		b.Close()
		t.Fatal("New succeeded without a PostgreSQL")
	}
	if !strings.Contains(err.Error(), "cannot reach PostgreSQL at 127.0.0.1:") {
		t.Errorf("error %q does not say which server it could not reach", err)
	}
}

// PostgreSQL crashes (immediate shutdown) mid-stream, with transactions
// committing from three nodes, and restarts. Nodes log the loss, reconnect
// with backoff and log that. Nothing committed is lost, nothing is
// delivered twice, no gap is reported: every client gets every committed
// message in one order with seqs 1..N, and the epoch stays the same.
func TestPostgresRestartMidStream(t *testing.T) {
	t.Parallel()
	s, nodes := cluster(t, 3)
	var clients []*client
	for i := range 6 {
		n := nodes[i%3]
		clients = append(clients, connect(t, fmt.Sprintf("%s/%d", n.name, i), n.ws+"?since=now"))
	}
	var committed []string
	for i := range 20 {
		l := "before" + strconv.Itoa(i)
		nodes[i%3].broadcast(t, l, notify.SocketMessage{})
		committed = append(committed, l)
	}
	s.Crash()
	if err := nodes[1].reg.Broadcast(ctx, msg("down")); err == nil {
		t.Error("Broadcast succeeded while PostgreSQL was down")
	}
	s.Restart()
	// A pooled connection that died with the server fails the first
	// publish that uses it (the broker never retries: a retry could
	// publish twice). Nothing was sent on it, so publishing again is safe
	// here; a duplicate would show below.
	for _, n := range nodes {
		for attempt := 0; ; attempt++ {
			err := n.reg.Broadcast(ctx, msg("reconnect "+n.name))
			if err == nil {
				committed = append(committed, "reconnect "+n.name)
				break
			}
			if attempt == 10 {
				t.Fatalf("%s: Broadcast after the restart: %v", n.name, err)
			}
			t.Logf("%s: Broadcast after the restart: %v", n.name, err)
		}
	}
	for i := range 20 {
		l := "after" + strconv.Itoa(i)
		nodes[i%3].broadcast(t, l, notify.SocketMessage{})
		committed = append(committed, l)
	}
	for _, c := range clients {
		got := c.readUntil(committed[len(committed)-1])
		if diff := cmp.Diff(committed, labels(got)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
		if diff := cmp.Diff(span(1, uint64(len(committed))), seqs(got)); diff != "" {
			t.Errorf("%s: seqs (-want +got):\n%s", c.name, diff)
		}
	}
	for _, n := range nodes {
		for _, want := range []string{"WARN pgbroker: lost connection", "INFO pgbroker: reconnected"} {
			n.logs.waitFor(t, want)
		}
		if n.logs.has("WARN pgbroker: the stream was reset") {
			t.Errorf("node %s saw a new epoch after a restart that lost nothing", n.name)
		}
	}
}

// The listening connections are killed (pg_terminate_backend) while
// transactions commit: the NOTIFYs sent meanwhile are lost, the messages
// are not. Each node reconnects and delivers everything, once, in order.
func TestListenerKilled(t *testing.T) {
	t.Parallel()
	s, nodes := cluster(t, 2)
	a, b := nodes[0], nodes[1]
	cl := connect(t, "client@B", b.ws+"?since=now")
	db := s.Conn(t)

	var want []string
	for i := range 5 {
		l := "before" + strconv.Itoa(i)
		a.broadcast(t, l, notify.SocketMessage{})
		want = append(want, l)
	}
	cl.read(5)
	var killed int
	err := db.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'pgbroker notify listener'`).Scan(&killed)
	if err != nil || killed != 2 {
		t.Fatalf("terminated %d listeners (%v), want 2", killed, err)
	}
	for i := range 10 {
		l := "meanwhile" + strconv.Itoa(i)
		if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return a.b.BroadcastTx(ctx, tx, msg(l)) }); err != nil {
			t.Fatal(err)
		}
		want = append(want, l)
	}
	b.logs.waitFor(t, "INFO pgbroker: reconnected")
	a.broadcast(t, "after", notify.SocketMessage{})
	want = append(want, "after")
	got := cl.readUntil("after")
	if diff := cmp.Diff(want[5:], labels(got)); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(span(6, 16), seqs(got)); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}
	if !b.logs.has("WARN pgbroker: lost connection") {
		t.Error("node B did not log the lost connection")
	}
}

// A transaction that publishes and stays open for a long time holds up
// nobody: messages others commit meanwhile are delivered at once, in
// order; the long one gets the next seq when it commits, and nothing is
// lost or reordered.
func TestLongTransactionDoesNotHoldUpOthers(t *testing.T) {
	t.Parallel()
	s, nodes := cluster(t, 2)
	a, b := nodes[0], nodes[1]
	cl := connect(t, "client@B", b.ws+"?since=now")

	long, err := s.Conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.b.BroadcastTx(ctx, long, msg("long")); err != nil {
		t.Fatal(err)
	}
	db := s.Conn(t)
	for i := range 5 {
		l := "short" + strconv.Itoa(i)
		if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return b.b.BroadcastTx(ctx, tx, msg(l)) }); err != nil {
			t.Fatal(err)
		}
	}
	got := cl.read(5)
	if diff := cmp.Diff([]string{"short0", "short1", "short2", "short3", "short4"}, labels(got)); diff != "" {
		t.Errorf("while the long transaction is open (-want +got):\n%s", diff)
	}
	if err := long.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a.broadcast(t, "after", notify.SocketMessage{})
	got = append(got, cl.read(2)...)
	if diff := cmp.Diff([]string{"short0", "short1", "short2", "short3", "short4", "long", "after"}, labels(got)); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(span(1, 7), seqs(got)); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}
}

// Resetting the stream (its log truncated, or both tables dropped and
// recreated) starts a new epoch: resumable clients get notify.gap (reason
// "epoch") before the first message of the new one, which has seq 1.
func TestStreamReset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sql string }{
		{"truncate log", "TRUNCATE notify_log"},
		{"drop tables", "DROP TABLE notify_log, notify_meta CASCADE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, nodes := cluster(t, 2)
			cl := connect(t, "client@B", nodes[1].ws+"?since=now")
			for i := range 3 {
				nodes[0].broadcast(t, "old"+strconv.Itoa(i), notify.SocketMessage{})
			}
			cl.read(3)
			s.Exec(t, tc.sql)
			if tc.name == "drop tables" {
				// A node (re)started after the drop creates them again.
				newBroker(t, s, pgbroker.Options{})
			}
			nodes[0].broadcast(t, "new", notify.SocketMessage{})
			got := cl.read(2)
			if diff := cmp.Diff([]string{notify.TypeGap, "new"}, labels(got)); diff != "" {
				t.Fatalf("after the reset (-want +got):\n%s", diff)
			}
			if g := got[0].gap(t); g.Reason != "epoch" || g.Epoch == cl.hello.Epoch || got[1].Seq != 1 {
				t.Errorf("gap %+v then seq %d, want a new epoch from seq 1", g, got[1].Seq)
			}
			nodes[1].logs.waitFor(t, "WARN pgbroker: the stream was reset")
		})
	}
}

// History is bounded by count and by age; trimmed messages are reported
// as a gap, and trimming runs beside publishers without blocking them.
func TestHistoryTrimmed(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	b := newBroker(t, s, pgbroker.Options{HistoryLength: 10})
	_, cancel, err := b.Subscribe(ctx, func(notify.BrokerMessage) {}) // its goroutine trims
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := b.Publish(ctx, notify.BrokerMessage{Body: []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	db := s.Conn(t)
	// Trimming runs at most once a second on each delivery goroutine;
	// waiting for its result is polling the table, once per trim period.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM notify_log").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log holds %d rows, want HistoryLength (10)", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ms, err := b.History(ctx, 0, 200)
	if !errors.Is(err, notify.ErrHistoryGap) || len(ms) != 10 || ms[0].Seq != 191 {
		t.Errorf("History(0, 200) = %d messages from %v, %v; want 191..200 and ErrHistoryGap", len(ms), firstSeq(ms), err)
	}
	if ms, err := b.History(ctx, 190, 200); err != nil || len(ms) != 10 {
		t.Errorf("History(190, 200) = %d messages, %v; want the retained tail", len(ms), err)
	}

	aged := newBroker(t, s, pgbroker.Options{HistoryAge: time.Microsecond})
	if ms, err := aged.History(ctx, 195, 200); !errors.Is(err, notify.ErrHistoryGap) || len(ms) != 0 {
		t.Errorf("History with HistoryAge 1µs = %d messages, %v; want none and ErrHistoryGap", len(ms), err)
	}
}

func firstSeq(ms []notify.BrokerMessage) any {
	if len(ms) == 0 {
		return nil
	}
	return ms[0].Seq
}
