package redisbroker_test

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/redisbroker"
)

// Publish while Redis is down returns an error to the caller of
// Broadcast, nothing is delivered, and publishing works again once Redis
// is back.
func TestPublishWhileRedisDown(t *testing.T) {
	t.Parallel()
	s, nodes := cluster(t, 1, nil)
	a := nodes[0]
	cl := connect(t, "client@A", a.ws+"?since=now")

	s.kill()
	err := a.reg.Broadcast(ctx, notify.SocketMessage{Type: "test", Data: "lost"})
	if err == nil {
		t.Fatal("Broadcast returned nil while Redis was down")
	}
	t.Logf("Broadcast while Redis is down: %v", err)
	if _, err := a.b.Publish(ctx, notify.BrokerMessage{Body: []byte(`{}`)}); err == nil {
		t.Error("Publish returned nil while Redis was down")
	}

	s.restart()
	a.broadcast(t, "after", notify.SocketMessage{})
	got := cl.readUntil("after")
	// The restarted Redis is empty: a new epoch, announced first.
	if diff := cmp.Diff([]string{notify.TypeGap, "after"}, labels(got)); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
}

// Redis crashes (SIGKILL, no persistence) mid-stream and comes back empty.
// Nodes log the loss, reconnect with backoff and log that; while it is
// down, Broadcast fails and resuming clients are told history is
// unavailable. Messages published just before the crash are either
// delivered or covered by the notify.gap (reason "epoch") every resumable
// client gets before the first message of the new epoch; everything
// published after recovery reaches every client, in one order.
func TestRedisRestartMidStream(t *testing.T) {
	t.Parallel()
	s, nodes := cluster(t, 3, nil)
	var clients []*client
	for i := range 6 {
		n := nodes[i%3]
		clients = append(clients, connect(t, fmt.Sprintf("%s/%d", n.name, i), n.ws+"?since=now"))
	}
	epoch := clients[0].hello.Epoch

	for i, n := range nodes {
		n.broadcast(t, "before"+strconv.Itoa(i), notify.SocketMessage{})
	}
	for _, c := range clients {
		c.read(3)
	}
	// In flight: published (Redis acknowledged them), then Redis crashes
	// before the nodes have necessarily read them.
	var inFlight []string
	for i := range 20 {
		l := "inflight" + strconv.Itoa(i)
		nodes[i%3].broadcast(t, l, notify.SocketMessage{})
		inFlight = append(inFlight, l)
	}
	s.kill()

	if err := nodes[1].reg.Broadcast(ctx, notify.SocketMessage{Type: "test", Data: "down"}); err == nil {
		t.Error("Broadcast succeeded while Redis was down")
	}
	// A client resuming now cannot be served from history.
	r := connect(t, "resumer@C", fmt.Sprintf("%s?since=1&epoch=%s", nodes[2].ws, epoch))
	if w := r.next(); w.Type != notify.TypeGap || w.gap(t).Reason != "unavailable" {
		t.Errorf("resuming while Redis is down: got %+v, want notify.gap (unavailable)", w)
	}

	s.restart()
	var after []string
	for i := range 30 {
		l := "after" + strconv.Itoa(i)
		nodes[i%3].broadcast(t, l, notify.SocketMessage{})
		after = append(after, l)
	}

	var order []string
	for _, c := range clients {
		got := c.readUntil(after[len(after)-1])
		i := slices.IndexFunc(got, func(w wire) bool { return w.Type == notify.TypeGap })
		if i < 0 {
			t.Fatalf("%s: no notify.gap after the restart: %v", c.name, labels(got))
		}
		// Before the gap: a prefix of the in-flight messages, in order.
		t.Logf("%s: %d of %d in-flight messages delivered, then the gap", c.name, i, len(inFlight))
		if diff := cmp.Diff(inFlight[:i], labels(got[:i])); diff != "" {
			t.Errorf("%s: before the gap (-want +got):\n%s", c.name, diff)
		}
		g := got[i].gap(t)
		if g.Reason != "epoch" || g.Epoch == epoch || g.Seq != 0 {
			t.Errorf("%s: gap %+v, want reason epoch, a new epoch, seq 0", c.name, g)
		}
		// After it: everything published after recovery, seq 1 on.
		rest := got[i+1:]
		if diff := cmp.Diff(span(1, uint64(len(after))), seqs(rest)); diff != "" {
			t.Errorf("%s: seqs after the gap (-want +got):\n%s", c.name, diff)
		}
		if order == nil {
			order = labels(rest)
			if diff := cmp.Diff(after, order, cmp.Transformer("sort", func(s []string) []string {
				return slices.Sorted(slices.Values(s))
			})); diff != "" {
				t.Errorf("%s: after recovery (-want +got):\n%s", c.name, diff)
			}
		} else if diff := cmp.Diff(order, labels(rest)); diff != "" {
			t.Errorf("%s: another order than %s (-want +got):\n%s", c.name, clients[0].name, diff)
		}
	}

	// The resumer, connected during the outage, gets the epoch gap too.
	if w := r.next(); w.Type != notify.TypeGap || w.gap(t).Reason != "epoch" {
		t.Errorf("resumer: got %+v, want notify.gap (epoch)", w)
	}
	for _, n := range nodes {
		for _, want := range []string{"WARN redisbroker: lost connection", "INFO redisbroker: reconnected", "WARN redisbroker: Redis lost the stream"} {
			if !n.logs.has(want) {
				t.Errorf("node %s did not log %q", n.name, want)
			}
		}
	}
}

// FLUSHALL on a running Redis (no connection breaks) is noticed too:
// resumable clients get notify.gap (epoch) before the new epoch's first
// message, even when a raw message (which has no seq) comes first.
func TestFlushedRedis(t *testing.T) {
	t.Parallel()
	s, nodes := cluster(t, 2, nil)
	cl := connect(t, "client@B", nodes[1].ws+"?since=now")
	for i := range 3 {
		nodes[0].broadcast(t, "old"+strconv.Itoa(i), notify.SocketMessage{})
	}
	cl.read(3)
	if r := s.do("FLUSHALL"); r != "+OK" {
		t.Fatalf("FLUSHALL: %s", r)
	}
	if err := nodes[0].reg.NotifyText(ctx, "plain"); err != nil {
		t.Fatal(err)
	}
	nodes[0].broadcast(t, "new", notify.SocketMessage{})
	got := cl.read(3)
	if diff := cmp.Diff([]string{"plain", notify.TypeGap, "new"}, labels(got)); diff != "" {
		t.Fatalf("after FLUSHALL (-want +got):\n%s", diff)
	}
	if g := got[1].gap(t); g.Reason != "epoch" || g.Epoch == cl.hello.Epoch || g.Seq != 0 || got[2].Seq != 1 {
		t.Errorf("gap %+v then seq %d, want a new epoch from seq 1", g, got[2].Seq)
	}
}

// A node dies (every connection cut, no close frames) while the others go
// on broadcasting. The others' clients see nothing of it; its clients
// resume on the surviving nodes and miss nothing.
func TestNodeKilled(t *testing.T) {
	t.Parallel()
	_, nodes := cluster(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	survivors := []*client{connect(t, "s@A", a.ws+"?since=now"), connect(t, "s@B", b.ws+"?since=now")}
	victims := []*client{connect(t, "v1@C", c.ws+"?since=now"), connect(t, "v2@C", c.ws+"?since=now")}

	var want []string
	for i := range 10 {
		l := fmt.Sprintf("%s%d", nodes[i%3].name, i)
		nodes[i%3].broadcast(t, l, notify.SocketMessage{})
		want = append(want, l)
	}
	last := make([]uint64, len(victims))
	for i, v := range victims {
		got := v.read(10)
		last[i] = got[9].Seq
	}

	c.kill(t)
	for i := 10; i < 30; i++ {
		l := fmt.Sprintf("%s%d", nodes[i%2].name, i)
		nodes[i%2].broadcast(t, l, notify.SocketMessage{})
		want = append(want, l)
	}

	for _, s := range survivors {
		if diff := cmp.Diff(want, labels(s.read(30))); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
	}
	for i, v := range victims {
		if _, _, err := v.conn.Read(ctx); err == nil {
			t.Fatalf("%s: connection to the killed node still open", v.name)
		}
		to := nodes[i%2]
		r := connect(t, v.name+"→"+to.name, fmt.Sprintf("%s?since=%d&epoch=%s", to.ws, last[i], v.hello.Epoch))
		got := r.read(20)
		if diff := cmp.Diff(want[10:], labels(got)); diff != "" {
			t.Errorf("%s resumed on %s (-want +got):\n%s", v.name, to.name, diff)
		}
		if diff := cmp.Diff(span(11, 30), seqs(got)); diff != "" {
			t.Errorf("%s resumed on %s, seqs (-want +got):\n%s", v.name, to.name, diff)
		}
	}
}

// Redis comes back with less than it acknowledged (here: restarted from an
// older snapshot; a failover to a lagging replica is alike), so the same
// seqs would name different messages. Nodes notice it from what they had
// read, start a new epoch, and clients get notify.gap (epoch) instead of
// silently missing the messages published under reused seqs.
func TestRedisLostAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	s, nodes := cluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	cl := connect(t, "client@B", b.ws+"?since=now")
	for i := range 3 {
		a.broadcast(t, "saved"+strconv.Itoa(i), notify.SocketMessage{})
	}
	if r := s.do("SAVE"); r != "+OK" { // dump.rdb holds seqs 1..3
		t.Fatalf("SAVE: %s", r)
	}
	for i := range 3 {
		a.broadcast(t, "unsaved"+strconv.Itoa(i), notify.SocketMessage{})
	}
	if diff := cmp.Diff(span(1, 6), seqs(cl.read(6))); diff != "" {
		t.Fatalf("before the crash (-want +got):\n%s", diff)
	}

	s.kill()
	s.restart() // loads dump.rdb: same epoch, seq 3
	// Published under reused seqs 4.., unless a node noticed first.
	var reused []string
	for i := range 5 {
		l := "reused" + strconv.Itoa(i)
		a.broadcast(t, l, notify.SocketMessage{})
		reused = append(reused, l)
	}
	b.logs.waitFor(t, "WARN redisbroker: Redis lost the stream")
	var after []string
	for i := range 3 {
		l := "after" + strconv.Itoa(i)
		a.broadcast(t, l, notify.SocketMessage{})
		after = append(after, l)
	}

	got := cl.readUntil(after[len(after)-1])
	if got[0].Type != notify.TypeGap || got[0].gap(t).Reason != "epoch" || got[0].gap(t).Epoch == cl.hello.Epoch {
		t.Fatalf("after the restart got %v, want notify.gap (epoch) first", labels(got))
	}
	// What follows is the new epoch from seq 1: the reused-seq messages
	// published after the new epoch began, then the later ones.
	rest := labels(got[1:])
	kept := reused[len(reused)-(len(rest)-len(after)):]
	if diff := cmp.Diff(append(kept, after...), rest); diff != "" {
		t.Errorf("after the gap (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(span(1, uint64(len(rest))), seqs(got[1:])); diff != "" {
		t.Errorf("seqs after the gap (-want +got):\n%s", diff)
	}
	t.Logf("%d of %d messages published before the nodes noticed were dropped with the old epoch", len(reused)-len(kept), len(reused))
}

// A stream entry written by something other than the broker, without its
// body field, is skipped and logged; its neighbours reach live and
// resuming clients, and nobody is told to reload: the regular entry keeps
// its place in the order (no notify.gap for its seq), and a raw one sends
// no empty frame. (An entry without a body used to reach the Registry with
// an empty body, which made it panic; a raw one became an empty frame.)
func TestMalformedEntriesAreSkipped(t *testing.T) {
	t.Parallel()
	s, nodes := cluster(t, 1, nil)
	a := nodes[0]
	live := connect(t, "live", a.ws+"?since=now")
	epoch := live.hello.Epoch
	now := strconv.FormatInt(time.Now().UnixMicro(), 10)

	a.broadcast(t, "one", notify.SocketMessage{})
	// Seq 2 without a body, as a foreign writer would add it; meta counts it.
	if r := s.do("XADD", "{notify}:log", "2-0", "e", epoch, "t", now); r != "$3" {
		t.Fatalf("XADD 2-0: %s", r)
	}
	if r := s.do("HSET", "{notify}:meta", "seq", "2"); r != ":0" {
		t.Fatalf("HSET meta seq: %s", r)
	}
	a.broadcast(t, "three", notify.SocketMessage{})
	// A raw entry after seq 3 without a body.
	if r := s.do("XADD", "{notify}:log", "3-1", "e", epoch, "t", now); r != "$3" {
		t.Fatalf("XADD 3-1: %s", r)
	}
	if r := s.do("HSET", "{notify}:meta", "sub", "1"); r != ":0" {
		t.Fatalf("HSET meta sub: %s", r)
	}
	a.broadcast(t, "four", notify.SocketMessage{})

	want := []string{"one", "three", "four"}
	if diff := cmp.Diff(want, labels(live.readUntil("four"))); diff != "" {
		t.Errorf("live client received (-want +got):\n%s", diff)
	}
	if !a.logs.has("ERROR redisbroker: skipping malformed stream entry") {
		t.Error("no log record for the malformed entries")
	}

	resumed := connect(t, "resumed", fmt.Sprintf("%s?since=0&epoch=%s", a.ws, epoch))
	a.broadcast(t, "five", notify.SocketMessage{})
	got := resumed.readUntil("five")
	if diff := cmp.Diff([]string{"one", "three", "four", "five"}, labels(got)); diff != "" {
		t.Errorf("resuming client received (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{1, 3, 4, 5}, seqs(got)); diff != "" {
		t.Errorf("resuming client's seqs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"five"}, labels(live.readUntil("five"))); diff != "" {
		t.Errorf("live client after the resume (-want +got):\n%s", diff)
	}
}

// go-redis's own log lines (here: its connection pool failing to dial a
// Redis that is gone) go to the Broker's Logger, not to stderr. Not
// parallel: go-redis has one logger per process, and this test must be the
// last to create a Broker with a Logger while it runs.
func TestRedisLogsReachTheLogger(t *testing.T) {
	s := startRedis(t)
	logs := &logRecorder{}
	b := newBroker(t, s, redisbroker.Options{Logger: slog.New(logs)})
	s.kill()
	if _, err := b.Publish(ctx, notify.BrokerMessage{Body: []byte(`{}`)}); err == nil {
		t.Fatal("Publish succeeded without a Redis")
	}
	logs.waitFor(t, "WARN redis: connection pool: failed to dial")
}

// Stats tells a readiness probe whether the broker answers: false within
// about a second of Redis going away, true again within about a second of
// its return.
func TestStatsBrokerConnected(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	s, nodes := cluster(t, 1, func() *notify.Options { return &notify.Options{Logger: slog.New(logs)} })
	a := nodes[0]
	if st := a.reg.Stats(); !st.BrokerConnected || st.BrokerLag != 0 {
		t.Fatalf("at start: connected %v, lag %d; want true, 0", st.BrokerConnected, st.BrokerLag)
	}
	s.kill()
	logs.waitFor(t, "WARN notify: broker unreachable")
	if st := a.reg.Stats(); st.BrokerConnected {
		t.Error("Redis down: BrokerConnected true")
	}
	s.restart()
	logs.waitFor(t, "INFO notify: broker reachable again")
	if st := a.reg.Stats(); !st.BrokerConnected {
		t.Error("Redis back: BrokerConnected false")
	}
}
