package pgbroker_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/pgbroker"
	"github.com/wsnotify/notify/pgbroker/internal/pgtest"
)

var ctx = context.Background()

func publish(t testing.TB, b *pgbroker.Broker, m notify.Message) uint64 {
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
	got = append(got, publish(t, a, notify.Message{Body: []byte(`{"n":1}`)}))
	got = append(got, publish(t, b, notify.Message{Topic: "orders", User: "u1", Client: "c1", Body: []byte(`{"n":2}`)}))
	got = append(got, publish(t, a, notify.Message{Raw: true, Body: []byte("raw")}))
	got = append(got, publish(t, b, notify.Message{Body: []byte(`{"n":3}`)}))
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
	want := []notify.Message{
		{Seq: 1, Epoch: epoch, Body: []byte(`{"n":1}`)},
		{Seq: 2, Epoch: epoch, Topic: "orders", User: "u1", Client: "c1", Body: []byte(`{"n":2}`)},
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
