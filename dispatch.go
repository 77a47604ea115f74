package notify

import (
	"sync"
	"sync/atomic"
)

// The fan-out runs off the publisher's goroutine. The broker hands every
// message to deliver, which only appends it to the Registry's backlog; one
// dispatcher goroutine per Registry takes everything that arrived since its
// last pass and gives each matching connection all of its new frames at
// once: one lock round trip per connection per pass, however many
// messages the pass holds, and at most one writer wake-up. While the
// writers are busy, passes grow and each connection's backlog with them,
// so a write call carries many frames; when the Registry is idle a pass
// holds one message and goes out at once.
//
// Rejected: fanning out on the publisher's goroutine (Broadcast blocked its
// caller for 70 ms at 10,000 connections) and a hub goroutine fed by a
// channel per message (one channel operation per message and no batching).

// dispatchBacklog bounds the messages published but not yet fanned out,
// and dispatchBytes their bodies: past either, deliver waits for the
// dispatcher, which holds up Publish, so a publisher faster than the
// fan-out is slowed down instead of growing memory. The dispatcher never
// waits on a client, so the wait is short.
const (
	dispatchBacklog = 1024
	dispatchBytes   = 8 << 20
)

// dispatcher is the Registry's fan-out goroutine and its backlog.
type dispatcher struct {
	mu      sync.Mutex
	room    sync.Cond       // signalled when the dispatcher takes the backlog
	passed  sync.Cond       // signalled when the dispatcher finished a pass
	pending []BrokerMessage // delivered by the broker, not yet fanned out
	bytes   int             // their bodies' bytes
	in, out uint64          // messages delivered by the broker; fanned out
	seen    Position        // of the last regular message the broker delivered
	wake    chan struct{}
	stop    chan struct{} // closed by Registry.stop once deliveries ended
	done    chan struct{} // closed when the dispatcher has exited
	discard atomic.Bool   // Close: pending messages are not queued any more

	// The dispatcher goroutine's own.
	behind bool // the last pass left a queue more than half full
	spare  []BrokerMessage
	ents   []entry
	cands  []*Client
	items  []item
	events []item // items' Server-Sent Events counterparts
	start  []*Client
	pass   uint64
}

// entry is one frame of a pass: a message, or a notify.gap for the
// resumable connections (m nil). ev is the same as a Server-Sent Event,
// built only while the Registry has such connections.
type entry struct {
	m  *BrokerMessage
	b  []byte
	ev []byte
}

func (d *dispatcher) init() {
	d.room.L = &d.mu
	d.passed.L = &d.mu
	d.wake = make(chan struct{}, 1)
	d.stop = make(chan struct{})
	d.done = make(chan struct{})
}

// deliver is the Registry's broker subscription: it appends m to the
// backlog and wakes the dispatcher. It waits only while the backlog is
// full.
func (r *Registry) deliver(m BrokerMessage) {
	d := &r.disp
	d.mu.Lock()
	for len(d.pending) > 0 && (len(d.pending) >= dispatchBacklog || d.bytes+len(m.Body) > dispatchBytes) {
		d.room.Wait()
	}
	d.pending = append(d.pending, m)
	d.bytes += len(m.Body)
	d.in++
	if !m.Raw {
		d.seen.Seq = m.Seq
		if m.Epoch != "" {
			d.seen.Epoch = m.Epoch
		}
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// dispatchLoop is the dispatcher goroutine. It exits once stop is closed
// and what was delivered before is fanned out.
func (r *Registry) dispatchLoop() {
	d := &r.disp
	defer close(d.done)
	for {
		select {
		case <-d.wake:
			r.dispatchPending()
		case <-d.stop:
			r.dispatchPending()
			return
		}
	}
}

// dispatchPending fans out the backlog until it is empty.
func (r *Registry) dispatchPending() {
	d := &r.disp
	for {
		if d.behind {
			// The last pass left a connection's queue more than half
			// full: let the writers catch up first (see waitDrained).
			r.writers.waitDrained()
		}
		d.mu.Lock()
		if len(d.pending) == 0 {
			d.mu.Unlock()
			return
		}
		// A pass takes at most half a connection's queue, so that a burst
		// published at once never overflows a connection that keeps up.
		msgs := d.pending
		if n := max(1, r.opts.QueueLength/2); len(msgs) > n {
			msgs = d.spare[:0]
			msgs = append(msgs, d.pending[:n]...)
			k := copy(d.pending, d.pending[n:])
			clear(d.pending[k:])
			d.pending = d.pending[:k]
			d.bytes = 0
			for i := range d.pending {
				d.bytes += len(d.pending[i].Body)
			}
		} else {
			d.pending, d.bytes = d.spare[:0], 0
		}
		d.spare = nil
		d.room.Broadcast()
		d.mu.Unlock()

		r.dispatch(msgs)
		d.mu.Lock()
		d.out += uint64(len(msgs))
		d.passed.Broadcast()
		d.mu.Unlock()
		clear(msgs)
		d.spare = msgs[:0]
	}
}

// position is Registry.Position: where the stream delivered to this
// Registry stands, whether or not the dispatcher has fanned it out yet.
func (d *dispatcher) position() Position {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seen
}

// catchUp waits until the dispatcher has fanned out every message
// delivered so far. A resuming connection whose since is ahead of what was
// fanned out, but not of what was delivered (a page that read Position
// right after a Broadcast), waits here for a pass rather than being told
// it is ahead of the stream. The dispatcher never waits on a client, so
// this takes at most the rest of one pass.
func (d *dispatcher) catchUp() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for target := d.in; d.out < target; {
		d.passed.Wait()
	}
}

// dispatch fans out one pass of messages, in seq order, and then records
// the last seq as delivered: the pass holds r.mu for reading throughout, so
// a connection that registers (r.mu held for writing) either receives all
// of the pass live or none of it, and then replays it (see register).
//
// It also watches the stream: a regular message of another epoch means the
// broker lost its history, and a seq that skips ahead means messages this
// node will never see (a broker fell behind its own retention). Either way
// resumable connections are sent a notify.gap first, so they reload their
// state instead of silently missing changes. Raw messages carry no seq and
// change neither.
//
// A message no client may receive (see frame) is logged and skipped, after
// that bookkeeping: its seq counts as seen, so skipping it is no gap.
func (r *Registry) dispatch(msgs []BrokerMessage) {
	d := &r.disp
	r.mu.RLock()
	defer r.mu.RUnlock()

	ents := d.ents[:0]
	last := r.last.Load()
	streams := r.streams > 0    // SSE connections: build each message's event too
	all, uniform := false, true // some entry goes to every connection; every entry does
	for i := range msgs {
		m := &msgs[i]
		f, ferr := frame(m)
		if !m.Raw {
			var gap *gapInfo
			switch {
			case m.Epoch != "" && m.Epoch != *r.epoch.Load():
				r.opts.Logger.Warn("notify: broker history lost; new epoch", "epoch", m.Epoch)
				epoch := m.Epoch // not &m.Epoch: msgs is reused
				r.epoch.Store(&epoch)
				gap = &gapInfo{Reason: "epoch", Epoch: m.Epoch, Seq: m.Seq - 1}
			case m.Seq > last+1:
				r.opts.Logger.Warn("notify: broker skipped messages", "after", last, "next", m.Seq)
				gap = &gapInfo{Reason: "expired", Since: last, Epoch: *r.epoch.Load(), Seq: m.Seq - 1}
			}
			if gap != nil {
				e := entry{b: controlFrame(TypeGap, gap)}
				if streams {
					e.ev = sseControl(TypeGap, gap, &Position{Epoch: gap.Epoch, Seq: gap.Seq})
				}
				ents = append(ents, e)
				all, uniform = true, false
			}
			last = m.Seq
		}
		var ev []byte
		if streams && ferr == nil {
			ev = sseMessage(m, f, *r.epoch.Load())
		}
		if !m.Raw {
			r.recent.put(*r.epoch.Load(), m.Seq, f, ev)
		}
		if ferr != nil {
			r.opts.Logger.Error("notify: skipping a message from the broker", "seq", m.Seq, "raw", m.Raw, "err", ferr)
			continue
		}
		ents = append(ents, entry{m: m, b: f, ev: ev})
		if m.Topic == "" && m.User == "" && m.ClientID == "" {
			all = true
		} else {
			uniform = false
		}
	}
	d.ents = ents
	defer func() {
		clear(d.ents)
		d.ents = d.ents[:0]
		r.last.Store(last)
	}()
	if len(ents) == 0 || d.discard.Load() {
		return
	}

	start := d.start[:0]
	items, events := d.items[:0], d.events[:0]
	depth := 0 // the most frames a connection now has queued
	if uniform {
		// The common case: every message to every connection. They all
		// get the same frames (or events).
		for _, e := range ents {
			items = append(items, item{b: e.b, kind: itemMessage})
			if streams {
				events = append(events, item{b: e.ev, kind: itemMessage})
			}
		}
		for c := range r.clients {
			its := items
			if c.sse != nil {
				its = events
			}
			ok, n := c.enqueueFrames(its)
			if ok {
				start = append(start, c)
			}
			depth = max(depth, n)
		}
	} else {
		cands := d.cands[:0]
		if all {
			for c := range r.clients {
				cands = append(cands, c)
			}
		} else {
			d.pass++
			add := func(c *Client) {
				if c.pass != d.pass {
					c.pass = d.pass
					cands = append(cands, c)
				}
			}
			for _, e := range ents {
				switch m := e.m; {
				case m.ClientID != "":
					if c := r.byID[m.ClientID]; c != nil {
						add(c)
					}
				case m.User != "":
					for c := range r.byUser[m.User] {
						add(c)
					}
				default:
					for c := range r.byTopic[m.Topic] {
						add(c)
					}
				}
			}
		}
		for _, c := range cands {
			items = items[:0]
			for _, e := range ents {
				b := e.b
				if c.sse != nil {
					b = e.ev
				}
				switch {
				case e.m == nil:
					if c.resumable {
						items = append(items, item{b: b, kind: itemControl})
					}
				case c.matches(e.m):
					items = append(items, item{b: b, kind: itemMessage})
				}
			}
			if len(items) == 0 {
				continue
			}
			ok, n := c.enqueueFrames(items)
			if ok {
				start = append(start, c)
			}
			depth = max(depth, n)
		}
		clear(cands)
		d.cands = cands[:0]
	}
	clear(items)
	d.items = items[:0]
	clear(events)
	d.events = events[:0]
	d.behind = depth > r.opts.QueueLength/2
	r.startWriters(start)
	clear(start)
	d.start = start[:0]
}
