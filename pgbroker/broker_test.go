package pgbroker_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/internal/brokertest"
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
	brokertest.SubscribeDeliversInOrderUntilCancel(t, func() brokertest.Broker {
		return newBroker(t, s, pgbroker.Options{})
	}, pgbroker.ErrClosed)
	if _, err := pgbroker.New(ctx, &pgbroker.Options{ConnString: s.ConnString(), Table: "Bad-Name"}); err == nil {
		t.Error("New accepted an invalid Table")
	}
}
