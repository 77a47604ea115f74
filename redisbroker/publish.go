package redisbroker

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/wsnotify/notify"
)

// Concurrent publishers share round trips. A Publish that finds room (fewer
// than maxInFlight batches being sent) and nothing queued sends its message
// at once, on its own goroutine, in one script call: a lone publisher waits
// one round trip, as it always did. Publishes that arrive while the
// batches in flight fill that room queue up; when a batch returns, one
// goroutine (drain) sends everything queued as the next batch, in one
// script call that appends the messages in queue order and returns each
// one's seq, and so on until the queue is empty. Redis runs each script
// atomically, so seqs stay gap-free in one global order; a goroutine's
// messages keep their order, since its next Publish begins after the last
// one returned; each caller gets its own seq, or its batch's error.
//
// What a busy stream costs is round trips, not messages: each script call
// costs redis-server a fixed 20-40 µs (reading, EVALSHA, the reply) against
// about 4 µs per message in it, and every batch wakes each node's XREAD
// once, so every node pays per batch too. Batches are therefore made as
// large as the callers allow without waiting on a timer:
//
//   - one batch in flight, not two: with two, eight publishers split into
//     two halves that take turns, about 2.7 messages a call; with one, the
//     queue gathers everyone but the batch in flight;
//   - drain yields (runtime.Gosched) before it takes the queue, so that
//     the callers its last batch just woke, runnable but not yet running,
//     get to queue their next message first. Without the yield, the drain
//     sent the half that had queued while the woken half was still
//     waiting for a CPU (4.1 messages a call); with it, 7.3-7.7 of eight
//     publishers' messages go in one call, and each node's XREAD reads as
//     many per call. A yield costs no system call, and nothing waits on
//     a clock: a lone publisher never reaches drain.
//
// What that saves per message is measured by BenchmarkPublish, with the
// load at the time, in the README's "Measured" section.
//
// Rejected: a pipeline of one script call per message (Redis still parses
// and runs a script per message, and go-redis builds a command each),
// go-redis's AutoPipeliner (experimental, and after a failed write it may
// send a command again that Redis already ran: a publish twice), a
// long-lived sender goroutine (an extra hand-off for the lone publisher,
// and a goroutine that idles for the Broker's life), waiting on a timer
// for a batch to fill (Go's timers sleep a millisecond or more on a busy
// machine, not the 100-200 µs such a wait would need), holding one
// connection for the sender instead of taking it from the pool per call
// (it would skip go-redis's check of the connection, a system call, but
// that check is what lets the first publish after a Redis restart succeed
// on a new connection instead of failing on the dead one; no CPU saving
// was measurable either), and a leaner publishing script (calling XADD
// without building a table, trimming once per batch): Redis spends about
// 4 µs per message in it, mostly XADD, against a fixed 20-40 µs per call,
// and the difference did not rise above the noise.
type publisher struct {
	mu       sync.Mutex
	closed   bool           // set by Close: no new batch starts
	inflight int            // batches being sent
	queue    []*publish     // waiting for a batch, in arrival order
	active   sync.WaitGroup // one count per batch in flight, for Close to wait on
}

// publish is one Publish call's message and, once its batch returned, its
// result.
type publish struct {
	m    notify.BrokerMessage
	seq  uint64
	err  error
	done chan struct{} // closed when seq and err are set
}

const (
	maxInFlight   = 1       // batches sent at once
	maxBatch      = 512     // messages in one script call
	maxBatchBytes = 1 << 20 // their bodies' bytes (at least one message)
)

// Publish implements [notify.Broker]: a script appends m to the stream
// with the next seq (or, if m.Raw, without one), trims the stream to about
// HistoryLength, and returns the seq. It does not wait for delivery.
// Concurrent calls on one Broker share script calls: what queues while a
// batch is in flight goes out as the next one, and the messages of one
// goroutine are appended in the order of its calls.
//
// An error means the message may not have been published: Redis was
// unreachable, or the reply was lost (then it may have been). Publish
// never retries by itself, since a retry could publish twice. If ctx ends
// while the message waits for a batch, it is not published and ctx's error
// is returned; once its batch is sent, Publish returns ctx's error at once
// but the message may still be published.
func (b *Broker) Publish(ctx context.Context, m notify.BrokerMessage) (uint64, error) {
	if b.isClosed() {
		return 0, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	p := &b.pub
	req := &publish{m: m, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, ErrClosed
	}
	if p.inflight < maxInFlight && len(p.queue) == 0 {
		// Room, and nothing waits: send now, on this goroutine, with ctx.
		p.inflight++
		p.active.Add(1)
		p.mu.Unlock()
		b.send(ctx, []*publish{req})
		b.sent()
		return req.seq, req.err
	}
	p.queue = append(p.queue, req)
	p.mu.Unlock()
	select {
	case <-req.done:
		return req.seq, req.err
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, q := range p.queue {
			if q == req {
				p.queue = append(p.queue[:i], p.queue[i+1:]...)
				return 0, ctx.Err()
			}
		}
		return 0, fmt.Errorf("redisbroker: %w; the message may have been published", ctx.Err())
	}
}

// sent ends a batch: it leaves the publisher idle, or starts drain for what
// queued up meanwhile.
func (b *Broker) sent() {
	p := &b.pub
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		p.inflight--
		p.active.Done()
		return
	}
	go b.drain() // this batch's place in flight passes on to drain
}

// drain sends the queue in batches until it is empty. Its batches hold
// other callers' messages, so they are sent with the Broker's context,
// which Close cancels, rather than one caller's.
func (b *Broker) drain() {
	p := &b.pub
	for {
		runtime.Gosched() // let the callers just woken queue (see publisher)
		p.mu.Lock()
		n, bytes := 0, 0
		for n < len(p.queue) && n < maxBatch && (n == 0 || bytes+len(p.queue[n].m.Body) <= maxBatchBytes) {
			bytes += len(p.queue[n].m.Body)
			n++
		}
		if n == 0 {
			p.inflight--
			p.mu.Unlock()
			p.active.Done()
			return
		}
		batch := make([]*publish, n)
		copy(batch, p.queue)
		k := copy(p.queue, p.queue[n:])
		clear(p.queue[k:])
		p.queue = p.queue[:k]
		p.mu.Unlock()
		b.send(b.ctx, batch)
	}
}

// send appends batch to the stream with one script call and sets each
// message's seq, or the call's error, and closes its done.
func (b *Broker) send(ctx context.Context, batch []*publish) {
	args := make([]any, 0, 2+5*len(batch))
	args = append(args, newEpoch(), b.opts.HistoryLength)
	for _, q := range batch {
		raw := "0"
		if q.m.Raw {
			raw = "1"
		}
		args = append(args, raw, q.m.Topic, q.m.User, q.m.ClientID, q.m.Body)
	}
	r, err := publishScript.Run(ctx, b.rdb, b.keys, args...).Int64Slice()
	if err == nil && len(r) != len(batch) {
		err = fmt.Errorf("unexpected reply of %d seqs for %d messages", len(r), len(batch))
	}
	for i, q := range batch {
		switch {
		case err != nil:
			q.err = fmt.Errorf("redisbroker: %w", err)
		case !q.m.Raw && r[i] > 0:
			q.seq = uint64(r[i])
		}
		close(q.done)
	}
}

// close stops new batches and waits for those in flight; messages still
// queued are sent with the Broker's context, which Close has cancelled,
// so their callers get an error.
func (p *publisher) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.active.Wait()
}
