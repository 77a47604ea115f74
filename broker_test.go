package notify_test

import (
	"context"
	"sync"
	"testing"

	"github.com/wsnotify/notify"
)

// pushBroker is a Broker whose stream the test writes directly, to play a
// broker that loses its history or skips messages.
type pushBroker struct {
	mu      sync.Mutex
	deliver func(notify.Message)
}

var _ notify.Broker = (*pushBroker)(nil)

func (b *pushBroker) Publish(context.Context, notify.Message) (uint64, error) { return 0, nil }

func (b *pushBroker) Subscribe(_ context.Context, deliver func(notify.Message)) (notify.Position, func(), error) {
	b.deliver = deliver
	return notify.Position{Epoch: "e1"}, func() {}, nil
}

func (b *pushBroker) History(context.Context, uint64, uint64) ([]notify.Message, error) {
	return nil, nil
}

func (b *pushBroker) push(m notify.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deliver(m)
}

// TestBrokerGapsReachResumableClients: a seq that skips ahead, or a new
// epoch, is announced with notify.gap to resumable connections before the
// message; a raw message changes neither.
func TestBrokerGapsReachResumableClients(t *testing.T) {
	t.Parallel()
	b := &pushBroker{}
	s := newServer(t, &notify.Options{Broker: b})
	c, _ := dialReady(t, s, "")
	body := []byte(`{"type":"m"}`)
	b.push(notify.Message{Seq: 1, Epoch: "e1", Body: body})
	b.push(notify.Message{Seq: 4, Epoch: "e1", Body: body})                        // 2 and 3 are lost
	b.push(notify.Message{Raw: true, Epoch: "e2", Body: []byte(`{"type":"raw"}`)}) // first of a new epoch, raw
	b.push(notify.Message{Seq: 1, Epoch: "e2", Body: body})

	if m := read(t, c); m.Seq != 1 {
		t.Fatalf("got %+v, want seq 1", m)
	}
	if reason, pos := gapOf(t, read(t, c)); reason != "expired" || pos != (notify.Position{Epoch: "e1", Seq: 3}) {
		t.Errorf("gap %q at %+v, want expired up to e1/3", reason, pos)
	}
	if m := read(t, c); m.Seq != 4 {
		t.Fatalf("got %+v, want seq 4", m)
	}
	if m := read(t, c); m.Type != "raw" {
		t.Fatalf("got %+v, want the raw message", m)
	}
	if reason, pos := gapOf(t, read(t, c)); reason != "epoch" || pos != (notify.Position{Epoch: "e2", Seq: 0}) {
		t.Errorf("gap %q at %+v, want epoch e2/0", reason, pos)
	}
	if m := read(t, c); m.Seq != 1 {
		t.Fatalf("got %+v, want seq 1 of the new epoch", m)
	}
	if got := s.reg.Position(); got != (notify.Position{Epoch: "e2", Seq: 1}) {
		t.Errorf("Position = %+v", got)
	}
}
