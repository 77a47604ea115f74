package pgbroker_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/pgbroker/internal/pgtest"
)

// cluster starts a PostgreSQL and n nodes on it, named A, B, C, …
func cluster(t *testing.T, n int) (*pgtest.Server, []*node) {
	t.Helper()
	s := pgtest.Start(t)
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = newNode(t, s, string(rune('A'+i)), nil)
	}
	return s, nodes
}

// Three nodes commit transactions concurrently, each through its own
// connection pool; clients are spread over the nodes. Every client gets
// every committed message exactly once, all in the same order, seqs 1..N,
// and each writer's messages in its commit order.
func TestThreeNodesOneGlobalOrder(t *testing.T) {
	t.Parallel()
	s, nodes := cluster(t, 3)
	var clients []*client
	for i := range 9 {
		n := nodes[i%3]
		clients = append(clients, connect(t, fmt.Sprintf("%s/%d", n.name, i), n.ws+"?since=now"))
	}
	const perWriter = 60
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for w := range 6 {
		n := nodes[w%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, s.ConnString())
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			for i := range perWriter {
				l := fmt.Sprintf("%c%d", 'a'+w, i)
				var err error
				if i%3 == 0 { // some plain Broadcasts among the transactions
					err = n.reg.Broadcast(ctx, msg(l))
				} else {
					err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return n.b.BroadcastTx(ctx, tx, msg(l)) })
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 6 * perWriter
	first := clients[0].read(total)
	if diff := cmp.Diff(span(1, uint64(total)), seqs(first)); diff != "" {
		t.Fatalf("%s: seqs (-want +got):\n%s", clients[0].name, diff)
	}
	order := labels(first)
	next := map[byte]int{}
	for _, l := range order {
		if want := fmt.Sprintf("%c%d", l[0], next[l[0]]); l != want {
			t.Fatalf("got %s, want %s: a writer's messages arrived out of order", l, want)
		}
		next[l[0]]++
	}
	for _, c := range clients[1:] {
		if diff := cmp.Diff(order, labels(c.read(total))); diff != "" {
			t.Errorf("%s received another order than %s (-want +got):\n%s", c.name, clients[0].name, diff)
		}
	}
}

// A client that read up to seq S on node A, disconnected, and resumes on
// node B gets every message after S exactly once and in order: those
// committed while it was away (from history) and those committed while it
// reconnects (live).
func TestResumeOnAnotherNode(t *testing.T) {
	t.Parallel()
	_, nodes := cluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	witness := connect(t, "witness@B", b.ws+"?since=now")
	x := connect(t, "x@A", a.ws+"?since=now")
	for i := range 5 {
		c.broadcast(t, "c"+strconv.Itoa(i), notify.SocketMessage{})
	}
	seen := x.read(5)
	x.conn.CloseNow()
	for i := range 5 {
		a.broadcast(t, "a"+strconv.Itoa(i), notify.SocketMessage{})
	}
	witness.read(10) // B has delivered through seq 10, so it can resume x

	done := make(chan error, 1)
	go func() {
		for i := range 40 {
			if err := c.reg.Broadcast(ctx, msg("live"+strconv.Itoa(i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	y := connect(t, "x@B", fmt.Sprintf("%s?since=%d&epoch=%s", b.ws, seen[4].Seq, x.hello.Epoch))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := y.read(45)
	if diff := cmp.Diff(span(6, 50), seqs(got)); diff != "" {
		t.Fatalf("after resuming on B, seqs (-want +got):\n%s", diff)
	}
	want := []string{"a0", "a1", "a2", "a3", "a4"}
	for i := range 40 {
		want = append(want, "live"+strconv.Itoa(i))
	}
	if diff := cmp.Diff(want, labels(got)); diff != "" {
		t.Errorf("after resuming on B (-want +got):\n%s", diff)
	}
}
