package pgbroker_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/pgbroker"
	"github.com/wsnotify/notify/pgbroker/internal/pgtest"
)

var ctx = context.Background()

func publish(t testing.TB, b *pgbroker.Broker, m notify.BrokerMessage) uint64 {
	t.Helper()
	seq, err := b.Publish(ctx, m)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return seq
}

// Sequence numbers are one counter for every broker on the stream, raw
// messages take none, and History returns regular messages only, in order,
// with their epoch and targets.
func TestPublishAndHistory(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	a := newBroker(t, s, pgbroker.Options{})
	b := newBroker(t, s, pgbroker.Options{})

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
	// Head is the stream's, whichever broker published: the raw message
	// takes no seq.
	for _, x := range []*pgbroker.Broker{a, b} {
		if head, err := x.Head(ctx); err != nil || head != (notify.Position{Epoch: epoch, Seq: 3}) {
			t.Errorf("Head = %+v, %v; want %s/3", head, err, epoch)
		}
	}
}

// A subscriber receives, in order and exactly once, what is published after
// Subscribe, raw messages included; cancel waits for its goroutine, after
// which nothing is delivered; Close is idempotent and later calls fail.
func TestSubscribeDeliversInOrderUntilCancel(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	pub := newBroker(t, s, pgbroker.Options{})
	publish(t, pub, notify.BrokerMessage{Body: []byte("before")})

	b := newBroker(t, s, pgbroker.Options{})
	got := make(chan notify.BrokerMessage, 100)
	pos, cancel, err := b.Subscribe(ctx, func(m notify.BrokerMessage) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	if pos.Seq != 1 || pos.Epoch == "" {
		t.Errorf("position %+v, want seq 1 of an epoch", pos)
	}
	publish(t, pub, notify.BrokerMessage{Body: []byte("a")})
	publish(t, pub, notify.BrokerMessage{Raw: true, Body: []byte("raw")})
	publish(t, pub, notify.BrokerMessage{Topic: "t", Body: []byte("b")})
	var ms []notify.BrokerMessage
	for range 3 {
		ms = append(ms, <-got)
	}
	want := []notify.BrokerMessage{
		{Seq: 2, Epoch: pos.Epoch, Body: []byte("a")},
		{Epoch: pos.Epoch, Raw: true, Body: []byte("raw")},
		{Seq: 3, Epoch: pos.Epoch, Topic: "t", Body: []byte("b")},
	}
	if diff := cmp.Diff(want, ms); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}

	cancel()
	cancel() // idempotent
	publish(t, pub, notify.BrokerMessage{Body: []byte("after cancel")})
	select { // cancel waited for the goroutine, so nothing can arrive
	case m := <-got:
		t.Errorf("delivered %q after cancel", m.Body)
	default:
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Publish(ctx, notify.BrokerMessage{Body: []byte("x")}); !errors.Is(err, pgbroker.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, _, err := b.Subscribe(ctx, func(notify.BrokerMessage) {}); !errors.Is(err, pgbroker.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	if _, err := pgbroker.New(ctx, &pgbroker.Options{ConnString: s.ConnString(), Table: "Bad-Name"}); err == nil {
		t.Error("New accepted an invalid Table")
	}
}
