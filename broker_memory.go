package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// MemoryBroker is the default [Broker]: one process, sequence numbers and a
// bounded history held in memory. Its epoch is random, so clients of a
// restarted process are told about the gap instead of misreading old
// sequence numbers. It is safe for concurrent use. It holds no goroutine
// or connection and has no Close: a subscription ends with its cancel
// function, which the Registry calls when it closes.
type MemoryBroker struct {
	opts  MemoryBrokerOptions
	epoch string
	now   func() time.Time

	mu      sync.Mutex
	seq     uint64
	history []retained // oldest first, trimmed by count and age
	subs    map[int]func(BrokerMessage)
	nextSub int
}

// MemoryBrokerOptions bounds a [MemoryBroker]'s history. A zero value
// consists entirely of defaults.
type MemoryBrokerOptions struct {
	// HistoryLength is the most messages retained. Default 1,000.
	HistoryLength int

	// HistoryAge is the longest a message is retained. Default 10 minutes.
	HistoryAge time.Duration
}

type retained struct {
	msg BrokerMessage
	at  time.Time
}

var _ Broker = (*MemoryBroker)(nil)

// NewMemoryBroker returns an empty broker with a fresh epoch. If opts is nil,
// the default options are used.
func NewMemoryBroker(opts *MemoryBrokerOptions) *MemoryBroker {
	var o MemoryBrokerOptions
	if opts != nil {
		o = *opts
	}
	if o.HistoryLength <= 0 {
		o.HistoryLength = 1000
	}
	if o.HistoryAge <= 0 {
		o.HistoryAge = 10 * time.Minute
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return &MemoryBroker{opts: o, epoch: hex.EncodeToString(id[:]), now: time.Now, subs: map[int]func(BrokerMessage){}}
}

// Publish assigns m the next seq, retains it and hands it to every
// subscriber before returning. Subscribers receive messages in seq order
// because delivery happens under the broker's lock.
func (b *MemoryBroker) Publish(ctx context.Context, m BrokerMessage) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m.Seq, m.Epoch = 0, b.epoch
	if !m.Raw {
		b.seq++
		m.Seq = b.seq
		now := b.now()
		b.trim(now)
		if len(b.history) == b.opts.HistoryLength {
			b.history[0] = retained{}
			b.history = b.history[1:] // append reallocates, and so compacts, once capacity runs out
		}
		b.history = append(b.history, retained{m, now})
	}
	for _, deliver := range b.subs {
		deliver(m)
	}
	return m.Seq, nil
}

// trim drops messages older than HistoryAge.
func (b *MemoryBroker) trim(now time.Time) {
	cut := 0
	for cut < len(b.history) && now.Sub(b.history[cut].at) > b.opts.HistoryAge {
		cut++
	}
	clear(b.history[:cut])
	b.history = b.history[cut:]
}

// Subscribe implements [Broker].
func (b *MemoryBroker) Subscribe(ctx context.Context, deliver func(BrokerMessage)) (Position, func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := b.nextSub
	b.nextSub++
	b.subs[id] = deliver
	cancel := func() {
		b.mu.Lock()
		delete(b.subs, id)
		b.mu.Unlock()
	}
	return Position{Epoch: b.epoch, Seq: b.seq}, cancel, nil
}

// Head implements [Broker]. Publish delivers before it returns, so the
// head is also what every subscriber has been handed.
func (b *MemoryBroker) Head(ctx context.Context) (Position, error) {
	if err := ctx.Err(); err != nil {
		return Position{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return Position{Epoch: b.epoch, Seq: b.seq}, nil
}

// History implements [Broker]. It copies the requested range under the
// broker's lock, which it finds by position (retained seqs are
// consecutive), so a resuming client's read holds up Publish only for the
// copy of that range.
func (b *MemoryBroker) History(ctx context.Context, after, upto uint64) ([]BrokerMessage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trim(b.now())
	oldest := b.seq + 1
	if len(b.history) > 0 {
		oldest = b.history[0].msg.Seq
	}
	var out []BrokerMessage
	if lo, hi := max(after+1, oldest), min(upto, b.seq); lo <= hi {
		out = make([]BrokerMessage, 0, hi-lo+1)
		for _, r := range b.history[lo-oldest : hi-oldest+1] {
			out = append(out, r.msg)
		}
	}
	if after+1 < oldest && after < upto {
		return out, fmt.Errorf("%w: oldest retained seq is %d, asked for %d", ErrHistoryGap, oldest, after+1)
	}
	return out, nil
}
