// Package brokertest checks, for the tests of the brokers that share one
// stream between nodes (redisbroker, pgbroker), the parts of the
// [notify.Broker] contract they keep the same way, so that each broker's
// tests run one copy of them. It is internal: its API may change with the
// tests that use it.
package brokertest

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// Broker is a notify.Broker that is closed by its owner.
type Broker interface {
	notify.Broker
	Close() error
}

// SubscribeDeliversInOrderUntilCancel checks that a subscriber receives,
// in order and exactly once, what is published after Subscribe, raw
// messages included; that cancel waits for its goroutine, after which
// nothing is delivered; and that Close is idempotent and later calls fail
// with errClosed. newBroker returns a new broker on the same, empty stream
// each time it is called (closing it at cleanup is its business).
func SubscribeDeliversInOrderUntilCancel(t *testing.T, newBroker func() Broker, errClosed error) {
	t.Helper()
	ctx := context.Background()
	publish := func(b Broker, m notify.BrokerMessage) {
		t.Helper()
		if _, err := b.Publish(ctx, m); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	pub := newBroker()
	publish(pub, notify.BrokerMessage{Body: []byte("before")})

	b := newBroker()
	got := make(chan notify.BrokerMessage, 100)
	pos, cancel, err := b.Subscribe(ctx, func(m notify.BrokerMessage) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	if pos.Seq != 1 || pos.Epoch == "" {
		t.Errorf("position %+v, want seq 1 of an epoch", pos)
	}
	publish(pub, notify.BrokerMessage{Body: []byte("a")})
	publish(pub, notify.BrokerMessage{Raw: true, Body: []byte("raw")})
	publish(pub, notify.BrokerMessage{Topic: "t", Body: []byte("b")})
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
	publish(pub, notify.BrokerMessage{Body: []byte("after cancel")})
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
	if _, err := b.Publish(ctx, notify.BrokerMessage{Body: []byte("x")}); !errors.Is(err, errClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, _, err := b.Subscribe(ctx, func(notify.BrokerMessage) {}); !errors.Is(err, errClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
}
