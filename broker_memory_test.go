package notify

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestMemoryBrokerHistoryBounds checks both bounds with a fake clock.
func TestMemoryBrokerHistoryBounds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := NewMemoryBroker(&MemoryBrokerOptions{HistoryLength: 3, HistoryAge: time.Minute})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.now = func() time.Time { return now }
	seqsOf := func(ms []BrokerMessage) []uint64 {
		var out []uint64
		for _, m := range ms {
			out = append(out, m.Seq)
		}
		return out
	}
	for i := range 5 {
		if seq, err := b.Publish(ctx, BrokerMessage{Body: []byte(`{}`)}); err != nil || seq != uint64(i+1) {
			t.Fatalf("Publish = %d, %v", seq, err)
		}
	}
	if _, err := b.Publish(ctx, BrokerMessage{Raw: true, Body: []byte("raw")}); err != nil {
		t.Fatal(err)
	}
	got, err := b.History(ctx, 2, 5)
	if err != nil || !cmp.Equal(seqsOf(got), []uint64{3, 4, 5}) {
		t.Errorf("History(2, 5) = %v, %v; want 3 4 5 (raw messages are not retained)", seqsOf(got), err)
	}
	got, err = b.History(ctx, 0, 5)
	if !errors.Is(err, ErrHistoryGap) || !cmp.Equal(seqsOf(got), []uint64{3, 4, 5}) {
		t.Errorf("History(0, 5) = %v, %v; want 3 4 5 and ErrHistoryGap (count bound)", seqsOf(got), err)
	}
	now = now.Add(2 * time.Minute)
	b.Publish(ctx, BrokerMessage{Body: []byte(`{}`)})
	got, err = b.History(ctx, 4, 6)
	if !errors.Is(err, ErrHistoryGap) || !cmp.Equal(seqsOf(got), []uint64{6}) {
		t.Errorf("History(4, 6) = %v, %v; want 6 and ErrHistoryGap (age bound)", seqsOf(got), err)
	}
	if got, err := b.History(ctx, 6, 6); err != nil || len(got) != 0 {
		t.Errorf("History(6, 6) = %v, %v; want nothing", got, err)
	}
}
