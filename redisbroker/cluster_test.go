package redisbroker_test

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// cluster starts a Redis and n nodes on it, named A, B, C, …
func cluster(t *testing.T, n int, opts func() *notify.Options) (*redisServer, []*node) {
	t.Helper()
	s := startRedis(t)
	nodes := make([]*node, n)
	for i := range nodes {
		var o *notify.Options
		if opts != nil {
			o = opts()
		}
		nodes[i] = newNode(t, s, string(rune('A'+i)), o)
	}
	return s, nodes
}

// Three Registries on three HTTP servers share one Redis; clients are
// spread over them; every node broadcasts at once. Every client receives
// every message exactly once, all of them in the same order, with seqs
// 1..N, and each node's messages in the order it sent them.
func TestThreeNodesOneGlobalOrder(t *testing.T) {
	t.Parallel()
	_, nodes := cluster(t, 3, nil)
	var clients []*client
	for i := range 12 {
		n := nodes[i%3]
		clients = append(clients, connect(t, fmt.Sprintf("%s/%d", n.name, i), n.ws+"?since=now"))
	}

	const perNode = 100
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perNode {
				m := notify.SocketMessage{Type: "test", Data: n.name + strconv.Itoa(i)}
				if err := n.reg.Broadcast(ctx, m); err != nil {
					errs <- fmt.Errorf("%s: %w", n.name, err)
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

	total := perNode * len(nodes)
	first := clients[0].read(total)
	if diff := cmp.Diff(span(1, uint64(total)), seqs(first)); diff != "" {
		t.Fatalf("%s: seqs (-want +got):\n%s", clients[0].name, diff)
	}
	order := labels(first)
	next := map[byte]int{} // per node, the index of its next message
	for _, l := range order {
		if want := fmt.Sprintf("%c%d", l[0], next[l[0]]); l != want {
			t.Fatalf("got %s, want %s: a node's messages arrived out of order", l, want)
		}
		next[l[0]]++
	}
	for _, c := range clients[1:] {
		got := c.read(total)
		if diff := cmp.Diff(order, labels(got)); diff != "" {
			t.Errorf("%s received another order than %s (-want +got):\n%s", c.name, clients[0].name, diff)
		}
		if diff := cmp.Diff(seqs(first), seqs(got)); diff != "" {
			t.Errorf("%s: seqs (-want +got):\n%s", c.name, diff)
		}
	}
}

// Topic, user and connection targets survive the trip through Redis: a
// message sent on one node reaches exactly the matching connections on
// every node.
func TestTargetingAcrossNodes(t *testing.T) {
	t.Parallel()
	ids := make(chan string, 10)
	_, nodes := cluster(t, 3, func() *notify.Options {
		return &notify.Options{
			Authorize: func(r *http.Request) (notify.Identity, error) {
				return notify.Identity{User: r.URL.Query().Get("user")}, nil
			},
			OnConnect: func(c *notify.Client) { ids <- c.ID() },
		}
	})
	a, b, c := nodes[0], nodes[1], nodes[2]
	alice := connect(t, "alice@A", a.ws+"?since=now&topic=orders&user=alice")
	aliceID := <-ids
	bob := connect(t, "bob@B", b.ws+"?since=now&user=bob")
	<-ids
	bob2 := connect(t, "bob@C", c.ws+"?since=now&topic=orders&user=bob")
	<-ids
	anon := connect(t, "anon@C", c.ws+"?since=now")
	<-ids

	a.broadcast(t, "orders", notify.SocketMessage{Topic: "orders"})
	b.broadcast(t, "to bob", notify.SocketMessage{User: "bob"})
	c.broadcast(t, "to alice's connection", notify.SocketMessage{ClientID: aliceID})
	a.broadcast(t, "bob's orders", notify.SocketMessage{User: "bob", Topic: "orders"})
	b.broadcast(t, "everyone", notify.SocketMessage{})

	for _, tc := range []struct {
		c    *client
		want []string
	}{
		{alice, []string{"orders", "to alice's connection", "everyone"}},
		{bob, []string{"to bob", "everyone"}},
		{bob2, []string{"orders", "to bob", "bob's orders", "everyone"}},
		{anon, []string{"everyone"}},
	} {
		if diff := cmp.Diff(tc.want, labels(tc.c.readUntil("everyone"))); diff != "" {
			t.Errorf("%s received (-want +got):\n%s", tc.c.name, diff)
		}
	}
}

// NotifyText on one node reaches the clients of every node, in its place
// among the broadcasts, without taking a seq; it is not replayed on resume.
func TestNotifyTextAcrossNodes(t *testing.T) {
	t.Parallel()
	_, nodes := cluster(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	watcher := connect(t, "watcher@C", c.ws+"?since=now")

	b.broadcast(t, "one", notify.SocketMessage{})
	if err := a.reg.NotifyText(ctx, "plain text"); err != nil {
		t.Fatal(err)
	}
	b.broadcast(t, "two", notify.SocketMessage{})

	got := watcher.read(3)
	if diff := cmp.Diff([]string{"one", "plain text", "two"}, labels(got)); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{1, 0, 2}, seqs(got)); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}

	late := connect(t, "late@A", a.ws+"?since=0&epoch="+watcher.hello.Epoch)
	if diff := cmp.Diff([]string{"one", "two"}, labels(late.read(2))); diff != "" {
		t.Errorf("replay (-want +got):\n%s", diff)
	}
}

// A client that read up to seq S on node A, disconnected, and resumes on
// node B with ?since=S&epoch=E gets every message after S exactly once and
// in order: those published while it was away (from history) and those
// broadcast while it reconnects (live), with no gap between the two.
func TestResumeOnAnotherNode(t *testing.T) {
	t.Parallel()
	_, nodes := cluster(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	witness := connect(t, "witness@B", b.ws+"?since=now") // shows what B has delivered
	x := connect(t, "x@A", a.ws+"?since=now")

	for i := range 5 {
		c.broadcast(t, "c"+strconv.Itoa(i), notify.SocketMessage{})
	}
	seen := x.read(5)
	if diff := cmp.Diff(span(1, 5), seqs(seen)); diff != "" {
		t.Fatalf("before disconnecting (-want +got):\n%s", diff)
	}
	x.conn.CloseNow()

	for i := range 5 {
		a.broadcast(t, "a"+strconv.Itoa(i), notify.SocketMessage{})
	}
	witness.read(10) // B has delivered through seq 10, so it can resume x

	// More broadcasts race with the reconnection.
	done := make(chan error, 1)
	go func() {
		for i := range 40 {
			if err := c.reg.Broadcast(ctx, notify.SocketMessage{Type: "test", Data: "live" + strconv.Itoa(i)}); err != nil {
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
	if y.hello.Epoch != x.hello.Epoch {
		t.Errorf("node B reports epoch %s, node A %s", y.hello.Epoch, x.hello.Epoch)
	}
}

// A client that reconnects at once, to a node that may trail the stream,
// from a seq it has just seen on another node, while a publisher runs flat
// out on a third: the node catches up instead of answering notify.gap
// "ahead". The client watches a topic that one message in ten goes to, so
// it always holds one of the newest seqs, which the node it reconnects to
// may not have delivered yet. Under -race every node is slowed, as a loaded
// node is, and before the catch-up some of these reconnects were answered
// "ahead".
func TestImmediateReconnectToALaggingNode(t *testing.T) {
	t.Parallel()
	_, nodes := cluster(t, 3, nil)
	pub, ends := nodes[0], [2]*node{nodes[1], nodes[2]}

	stop := make(chan struct{})
	published := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				published <- nil
				return
			default:
			}
			m := notify.SocketMessage{Type: "test", Topic: "load", Data: strconv.Itoa(i)}
			if i%10 == 0 {
				m.Topic = "watched"
			}
			if err := pub.reg.Broadcast(ctx, m); err != nil {
				published <- err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-published; err != nil {
			t.Error(err)
		}
	}()

	const reconnects = 100
	cl := connect(t, "client@B", ends[0].ws+"?since=now&topic=watched")
	epoch := cl.hello.Epoch
	last := cl.next().Seq
	behind := 0 // reconnects to a node that had not delivered the client's seq yet
	for i := range reconnects {
		cl.conn.CloseNow()
		to := ends[(i+1)%2]
		if to.reg.Position().Seq < last {
			behind++
		}
		cl = connect(t, fmt.Sprintf("client@%s#%d", to.name, i), fmt.Sprintf("%s?since=%d&epoch=%s&topic=watched", to.ws, last, epoch))
		if cl.hello.Seq < last {
			t.Fatalf("reconnect %d to %s: hello at %+v, before seq %d", i, to.name, cl.hello, last)
		}
		w := cl.next()
		if w.Type == notify.TypeGap {
			t.Fatalf("reconnect %d to %s from seq %d: notify.gap %+v", i, to.name, last, w.gap(t))
		}
		if w.Seq <= last || w.Topic != "watched" {
			t.Fatalf("reconnect %d to %s from seq %d: got %+v", i, to.name, last, w)
		}
		last = w.Seq
	}
	t.Logf("%d reconnects, %d to a node that had not yet delivered the client's last seq; 0 notify.gap", reconnects, behind)
}
