package redisbroker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/internal/brokertest"
	"github.com/wsnotify/notify/redisbroker"
)

var ctx = context.Background()

func publish(t testing.TB, b *redisbroker.Broker, m notify.BrokerMessage) uint64 {
	t.Helper()
	seq, err := b.Publish(ctx, m)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return seq
}

func bodies(ms []notify.BrokerMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Body)
	}
	return out
}

// Redis unreachable at start: New fails at once with an error that says
// where it looked.
func TestNewFailsWhenRedisUnreachable(t *testing.T) {
	t.Parallel()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t)) // nothing listens here
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, err := redisbroker.New(ctx, &redisbroker.Options{Addr: addr})
	if err == nil {
		b.Close()
		t.Fatal("New succeeded without a Redis")
	}
	if !strings.Contains(err.Error(), "cannot reach Redis at "+addr) {
		t.Errorf("error %q does not say which Redis it could not reach", err)
	}
}

// Sequence numbers are one counter for every broker on the stream, raw
// messages take none, and History returns regular messages only, in order,
// with their epoch and targets.
func TestPublishAndHistory(t *testing.T) {
	t.Parallel()
	s := startRedis(t)
	a := newBroker(t, s, redisbroker.Options{})
	b := newBroker(t, s, redisbroker.Options{})

	var got []uint64
	got = append(got, publish(t, a, notify.BrokerMessage{Body: []byte(`{"n":1}`)}))
	got = append(got, publish(t, b, notify.BrokerMessage{Topic: "orders", User: "u1", ClientID: "c1", Body: []byte(`{"n":2}`)}))
	got = append(got, publish(t, a, notify.BrokerMessage{Raw: true, Body: []byte("raw")}))
	got = append(got, publish(t, b, notify.BrokerMessage{Body: []byte(`{"n":3}`)}))
	if diff := cmp.Diff([]uint64{1, 2, 0, 3}, got); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}

	ms, err := b.History(ctx, 0, 3)
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	if len(ms) != 3 || ms[0].Epoch == "" || ms[1].Epoch != ms[0].Epoch {
		t.Fatalf("History = %+v, want 3 messages of one epoch", ms)
	}
	epoch := ms[0].Epoch
	want := []notify.BrokerMessage{
		{Seq: 1, Epoch: epoch, Body: []byte(`{"n":1}`)},
		{Seq: 2, Epoch: epoch, Topic: "orders", User: "u1", ClientID: "c1", Body: []byte(`{"n":2}`)},
		{Seq: 3, Epoch: epoch, Body: []byte(`{"n":3}`)},
	}
	if diff := cmp.Diff(want, ms); diff != "" {
		t.Errorf("History(0, 3) (-want +got):\n%s", diff)
	}
	ms, err = a.History(ctx, 1, 2)
	if err != nil || len(ms) != 1 || ms[0].Seq != 2 {
		t.Errorf("History(1, 2) = %+v, %v; want message 2", ms, err)
	}
	if ms, err := a.History(ctx, 3, 3); err != nil || len(ms) != 0 {
		t.Errorf("History(3, 3) = %+v, %v; want nothing", ms, err)
	}
}

// History is bounded by count: trimmed messages are reported as a gap, and
// the stream stays near HistoryLength entries.
func TestHistoryTrimmedByLength(t *testing.T) {
	t.Parallel()
	// Small stream nodes let MAXLEN ~ trim close to the limit.
	s := startRedis(t, "--stream-node-max-entries", "4")
	b := newBroker(t, s, redisbroker.Options{HistoryLength: 10})
	for i := 1; i <= 50; i++ {
		publish(t, b, notify.BrokerMessage{Body: []byte(strconv.Itoa(i))})
	}
	ms, err := b.History(ctx, 0, 50)
	if !errors.Is(err, notify.ErrHistoryGap) {
		t.Fatalf("History(0, 50) error = %v, want ErrHistoryGap", err)
	}
	if n := len(ms); n < 10 || n > 14 || ms[n-1].Seq != 50 {
		t.Errorf("History(0, 50) returned seqs %d..%d, want the last 10 to 14", ms[0].Seq, ms[n-1].Seq)
	}
	if _, err := b.History(ctx, 45, 50); err != nil {
		t.Errorf("History(45, 50): %v, want the retained tail without error", err)
	}
	if n, _ := strconv.Atoi(strings.TrimPrefix(s.do("XLEN", "{notify}:log"), ":")); n > 14 {
		t.Errorf("XLEN = %d, want at most HistoryLength plus one stream node", n)
	}
}

// History is bounded by age, measured on Redis's clock: with an age of a
// microsecond, everything published before the call has expired.
func TestHistoryTrimmedByAge(t *testing.T) {
	t.Parallel()
	s := startRedis(t)
	b := newBroker(t, s, redisbroker.Options{HistoryAge: time.Microsecond})
	publish(t, b, notify.BrokerMessage{Body: []byte("1")})
	publish(t, b, notify.BrokerMessage{Body: []byte("2")})
	ms, err := b.History(ctx, 0, 2)
	if !errors.Is(err, notify.ErrHistoryGap) || len(ms) != 0 {
		t.Errorf("History = %+v, %v; want nothing and ErrHistoryGap", ms, err)
	}
}

// A subscriber receives, in order and exactly once, what is published after
// Subscribe, raw messages included; cancel waits for its goroutine, after
// which nothing is delivered; Close is idempotent and later calls fail.
func TestSubscribeDeliversInOrderUntilCancel(t *testing.T) {
	t.Parallel()
	s := startRedis(t)
	brokertest.SubscribeDeliversInOrderUntilCancel(t, func() brokertest.Broker {
		return newBroker(t, s, redisbroker.Options{})
	}, redisbroker.ErrClosed)
}

// A subscriber that falls further behind than the stream retains skips
// what was trimmed: the next seq it delivers jumps ahead, which the
// Registry reports to resumable connections as a notify.gap (the core's
// TestBrokerGapsReachResumableClients covers that end).
func TestLaggingSubscriberSkipsTrimmed(t *testing.T) {
	t.Parallel()
	s := startRedis(t, "--stream-node-max-entries", "2")
	pub := newBroker(t, s, redisbroker.Options{HistoryLength: 5})
	b := newBroker(t, s, redisbroker.Options{HistoryLength: 5})

	got := make(chan notify.BrokerMessage)
	held := make(chan struct{})
	done := make(chan struct{})
	_, cancel, err := b.Subscribe(ctx, func(m notify.BrokerMessage) {
		select {
		case got <- m:
		case <-done:
			return
		}
		select {
		case <-held:
		case <-done:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	defer close(done) // before cancel: lets a delivery blocked on got return
	publish(t, pub, notify.BrokerMessage{Body: []byte("1")})
	if m := <-got; string(m.Body) != "1" {
		t.Fatalf("first delivery %q, want 1", m.Body)
	}
	// The subscriber is held inside deliver while 29 more messages are
	// published and the stream is trimmed to about 5.
	for i := 2; i <= 30; i++ {
		publish(t, pub, notify.BrokerMessage{Body: []byte(strconv.Itoa(i))})
	}
	close(held)
	next := <-got
	if next.Raw || next.Seq < 20 {
		t.Fatalf("after falling behind got %+v, want a seq near the head (trimmed ones skipped)", next)
	}
	for want := next.Seq + 1; want <= 30; want++ {
		if m := <-got; m.Seq != want {
			t.Fatalf("delivered seq %d, want %d", m.Seq, want)
		}
	}
}

// History answers for the epoch the subscribers are in: once Redis has
// lost that history, it reports a gap, even before the delivery goroutine
// has caught up with the new epoch's messages.
func TestHistoryRefusesAnotherEpoch(t *testing.T) {
	t.Parallel()
	s := startRedis(t)
	b := newBroker(t, s, redisbroker.Options{})
	got := make(chan notify.BrokerMessage)
	_, cancel, err := b.Subscribe(ctx, func(m notify.BrokerMessage) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	publish(t, b, notify.BrokerMessage{Body: []byte("old 1")})
	publish(t, b, notify.BrokerMessage{Body: []byte("old 2")})
	first := <-got // the goroutine cannot deliver more until the test reads

	if r := s.do("FLUSHALL"); r != "+OK" {
		t.Fatalf("FLUSHALL: %s", r)
	}
	publish(t, b, notify.BrokerMessage{Body: []byte("new 1")})
	publish(t, b, notify.BrokerMessage{Body: []byte("new 2")})
	ms, err := b.History(ctx, 0, 2)
	if !errors.Is(err, notify.ErrHistoryGap) || len(ms) != 0 {
		t.Errorf("History(0, 2) = %q, %v; want nothing and ErrHistoryGap", bodies(ms), err)
	}

	// The goroutine goes on with the new epoch, after "old 2" if it read
	// that before the flush.
	m := <-got
	if string(m.Body) == "old 2" {
		m = <-got
	}
	for _, want := range []string{"new 1", "new 2"} {
		if string(m.Body) != want || m.Epoch == first.Epoch {
			t.Fatalf("got %q in epoch %s, want %q in a new epoch", m.Body, m.Epoch, want)
		}
		if want == "new 1" {
			m = <-got
		}
	}
	if ms, err := b.History(ctx, 0, 2); err != nil || len(ms) != 2 {
		t.Errorf("History in the new epoch = %q, %v", bodies(ms), err)
	}
}

// Concurrent publishers on one Broker share script calls, and still every
// caller gets its own seq, the seqs are gap-free, each goroutine's messages
// keep their order, and the stream holds each message under the seq its
// caller was given.
func TestConcurrentPublishers(t *testing.T) {
	t.Parallel()
	s := startRedis(t)
	pub := newBroker(t, s, redisbroker.Options{})
	other := newBroker(t, s, redisbroker.Options{})
	const publishers, each = 8, 300
	got := make([][]uint64, publishers)
	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				seq, err := pub.Publish(ctx, notify.BrokerMessage{Body: fmt.Appendf(nil, `{"p":%d,"i":%d}`, p, i)})
				if err != nil {
					errs <- err
					return
				}
				got[p] = append(got[p], seq)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	body := map[uint64]string{} // what each seq must hold
	for p, seqs := range got {
		if !slices.IsSorted(seqs) {
			t.Errorf("publisher %d: seqs out of order: %v", p, seqs)
		}
		for i, seq := range seqs {
			if prev, dup := body[seq]; dup {
				t.Fatalf("seq %d given twice: %s and publisher %d's %d", seq, prev, p, i)
			}
			body[seq] = fmt.Sprintf(`{"p":%d,"i":%d}`, p, i)
		}
	}
	ms, err := other.History(ctx, 0, publishers*each)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != publishers*each {
		t.Fatalf("History holds %d messages, want %d", len(ms), publishers*each)
	}
	for i, m := range ms {
		if m.Seq != uint64(i+1) || string(m.Body) != body[m.Seq] {
			t.Fatalf("History[%d] = seq %d %s, want seq %d %s", i, m.Seq, m.Body, i+1, body[uint64(i+1)])
		}
	}
	if head, err := other.Head(ctx); err != nil || head != (notify.Position{Epoch: ms[0].Epoch, Seq: publishers * each}) {
		t.Errorf("Head = %+v, %v; want %s/%d", head, err, ms[0].Epoch, publishers*each)
	}
}

// Head reads the stream's position without creating it, and fails after
// Close.
func TestHead(t *testing.T) {
	t.Parallel()
	s := startRedis(t)
	a := newBroker(t, s, redisbroker.Options{})
	if head, err := a.Head(ctx); err != nil || head != (notify.Position{}) {
		t.Errorf("Head of a new Redis = %+v, %v; want a zero Position", head, err)
	}
	if got := s.do("EXISTS", "{notify}:meta"); got != ":0" {
		t.Errorf("Head created the meta key: EXISTS = %s", got)
	}
	publish(t, a, notify.BrokerMessage{Body: []byte(`{}`)})
	publish(t, a, notify.BrokerMessage{Raw: true, Body: []byte("raw")})
	head, err := a.Head(ctx)
	if err != nil || head.Seq != 1 || head.Epoch == "" {
		t.Errorf("Head = %+v, %v; want seq 1 of an epoch", head, err)
	}
	a.Close()
	if _, err := a.Head(ctx); !errors.Is(err, redisbroker.ErrClosed) {
		t.Errorf("Head after Close: %v, want ErrClosed", err)
	}
}
