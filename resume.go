package notify

import (
	"context"
	"errors"
	"sync"
	"time"
)

// gapInfo is the data of a notify.gap message.
type gapInfo struct {
	Reason string `json:"reason"` // "expired", "epoch", "ahead" or "unavailable"
	Since  uint64 `json:"since"`  // what the client asked for
	Epoch  string `json:"epoch"`  // the stream's epoch and position: continue from here
	Seq    uint64 `json:"seq"`
}

// replayCursor is what a resuming connection still has to replay: the
// retained messages with after < seq <= upto that match topics, the
// connection's subscriptions when it connected.
type replayCursor struct {
	after, upto uint64
	since       uint64 // what the client asked for, for a gap's data
	epoch       string
	topics      map[string]struct{}
}

// resumeCatchUp bounds how long a resuming connection waits for this
// Registry to be handed the messages up to the seq it resumes from, when
// the broker's head shows they exist (see catchUpTo).
const resumeCatchUp = 5 * time.Second

// catchUpTo runs before a resuming client is registered when it names a
// position this Registry has not fanned out: a seq above the last one, or
// another epoch. First it waits for the dispatcher to fan out what the
// broker delivered (a page that read Position right after a Broadcast).
// If the client is still ahead, it asks the broker for the stream's head:
// a node that trails a shared stream (a loaded node, a slow round trip)
// may not yet have been handed messages that other nodes published and
// the client saw. If the head holds the client's position, it waits, at
// most resumeCatchUp, until this Registry has fanned it out, so that the
// client gets its replay instead of a notify.gap (reason "ahead") and a
// needless reload. Only a position beyond the head, or a node that cannot
// catch up in time, is answered "ahead".
func (r *Registry) catchUpTo(o ConnOptions) {
	r.disp.catchUp()
	want := *o.Resume
	if want.Epoch == "" {
		want.Epoch = *r.epoch.Load()
	}
	if r.reached(want) {
		return
	}
	ctx, cancel := context.WithTimeout(r.base, resumeCatchUp)
	defer cancel()
	head, err := r.broker.Head(ctx)
	if err != nil {
		r.opts.Logger.Debug("notify: reading the broker's head for a resume", "err", err)
		return
	}
	if head.Epoch != want.Epoch || head.Seq < want.Seq {
		return // beyond the stream, or of an epoch that is gone: startResume says so
	}
	start := time.Now()
	if !r.waitReached(ctx, want) {
		r.opts.Logger.Warn("notify: a resuming client waited for this node to catch up with the stream, in vain",
			"since", want.Seq, "epoch", want.Epoch, "head", head.Seq, "fanned_out", r.last.Load(), "waited", time.Since(start).Round(time.Millisecond))
	}
}

// reached reports whether the dispatcher has fanned out p.
func (r *Registry) reached(p Position) bool {
	return *r.epoch.Load() == p.Epoch && r.last.Load() >= p.Seq
}

// waitReached waits until the dispatcher has fanned out p, or ctx ends. The
// dispatcher stores r.epoch and r.last before it signals the end of a pass
// under d.mu, so checking under d.mu misses no pass.
func (r *Registry) waitReached(ctx context.Context, p Position) bool {
	d := &r.disp
	stop := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		d.passed.Broadcast()
		d.mu.Unlock()
	})
	defer stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	for !r.reached(p) {
		if ctx.Err() != nil {
			return false
		}
		d.passed.Wait()
	}
	return true
}

// helloInfo is notify.hello's data: the stream's position and, for a client
// that asked for keep-alives, the interval it gets them at.
type helloInfo struct {
	Epoch     string `json:"epoch"`
	Seq       uint64 `json:"seq"`
	KeepAlive int64  `json:"keepalive,omitempty"` // milliseconds
}

// startResume queues what a resuming client receives before live messages:
// a hello, then either a gap or a cursor from which the writer streams the
// retained messages after o.Resume that match it. last is the seq of the
// last message delivered live before c was registered, so the replay ends
// exactly where live delivery begins.
func (c *Client) startResume(o ConnOptions, last uint64) {
	epoch := *c.r.epoch.Load()
	pos := Position{Epoch: epoch, Seq: last}
	// A stream's hello carries, as its id, the position the client has
	// everything up to once it has read the hello: its own since if it
	// resumes (a gap or a replay follows), so that an EventSource dropped
	// right after the hello asks for the same again.
	at := pos
	var since Position // what the client asks to resume after (ResumeNow: where the stream stands)
	if p := o.Resume; p != nil {
		since = *p
		at.Seq = since.Seq
		if since.Epoch != "" {
			at.Epoch = since.Epoch
		}
	}
	items := []item{{b: c.control(TypeHello, helloInfo{pos.Epoch, pos.Seq, c.keepAlive / int64(time.Millisecond)}, &at), kind: itemControl}}
	var cur *replayCursor
	gap := func(reason string) {
		items = append(items, item{b: c.control(TypeGap, gapInfo{reason, since.Seq, epoch, last}, &pos), kind: itemControl})
	}
	switch {
	case o.Resume == nil || since.Seq == last && (since.Epoch == "" || since.Epoch == epoch):
	case since.Epoch != "" && since.Epoch != epoch:
		gap("epoch")
	case since.Seq > last:
		gap("ahead")
	default:
		cur = &replayCursor{after: since.Seq, upto: last, since: since.Seq, epoch: epoch, topics: make(map[string]struct{}, len(o.Topics))}
		for _, t := range o.Topics {
			cur.topics[t] = struct{}{}
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	if c.dead {
		return
	}
	c.resume, c.cursor = items, cur
	for _, it := range items {
		c.queuedFrames++
		c.queuedBytes += len(it.b)
	}
	c.startWriter()
}

// replayRoom is how many messages the next replay chunk may hold: at most
// half the queue, so that live messages arriving meanwhile still fit, and
// never more than what is left of it (c.mu held).
func (c *Client) replayRoom() int {
	return max(1, min(c.r.opts.QueueLength/2, c.r.opts.QueueLength-c.queuedFrames))
}

// replayChunk returns the next chunk of a replay: the messages of up to
// room seqs after cur.after, as frames shared with the connections that
// received them live where they are still held, and the cursor to continue from (nil when
// the replay is done). A replay that cannot go on ends with a gap.
//
// It runs on the connection's writer, without the Registry's or the
// broker's locks held across the chunk: a handshake that asks for the
// whole history costs the broker one short read per chunk and never holds
// up Publish.
func (r *Registry) replayChunk(c *Client, cur replayCursor, room int) ([]item, *replayCursor) {
	upto := min(cur.upto, cur.after+uint64(room))
	ctx, cancel := context.WithTimeout(r.base, r.opts.WriteTimeout)
	defer cancel()
	msgs, err := r.broker.History(ctx, cur.after, upto)
	gap := func(reason string) ([]item, *replayCursor) {
		g := gapInfo{Reason: reason, Since: cur.since, Epoch: *r.epoch.Load(), Seq: cur.upto}
		return []item{{b: c.control(TypeGap, g, &Position{Epoch: g.Epoch, Seq: g.Seq}), kind: itemControl}}, nil
	}
	switch {
	case errors.Is(err, ErrHistoryGap):
		return gap("expired")
	case err != nil:
		r.opts.Logger.Warn("notify: reading history for resume", "client", c.id, "err", err)
		return gap("unavailable")
	}
	for i := range msgs {
		if msgs[i].Epoch != "" && msgs[i].Epoch != cur.epoch {
			return gap("epoch") // the broker's history moved on since the replay began
		}
	}
	frames := make([][]byte, len(msgs))
	r.recent.fill(cur.epoch, msgs, frames, c.sse != nil)
	var items []item
	bytes := 0
	for i := range msgs {
		m := &msgs[i]
		if !cur.matches(c, m) {
			continue
		}
		if frames[i] == nil { // skipped live too (see deliver)
			r.opts.Logger.Error("notify: skipping a message from the broker's history", "client", c.id, "seq", m.Seq)
			continue
		}
		if len(items) > 0 && bytes+len(frames[i]) > r.opts.QueueBytes/2 {
			upto = m.Seq - 1 // the rest comes with the next chunk
			break
		}
		items = append(items, item{b: frames[i], kind: itemMessage})
		bytes += len(frames[i])
	}
	if upto >= cur.upto {
		return items, nil
	}
	cur.after = upto
	return items, &cur
}

// matches is Client.matches for a replayed message, against the topics the
// connection had when it connected: later subscriptions are not replayed.
func (cur *replayCursor) matches(c *Client, m *BrokerMessage) bool {
	if m.ClientID != "" && m.ClientID != c.id || m.User != "" && m.User != c.ident.User {
		return false
	}
	if m.Topic != "" {
		_, ok := cur.topics[m.Topic]
		return ok
	}
	return true
}

// recentFrames keeps the frames of the last messages delivered to the
// Registry, so that resuming connections share the frames live delivery
// built instead of each building its own. The broker's History stays the
// authority on what is retained; this only saves the copies. It holds at
// most recentLength frames and recentBytes, of consecutive seqs of one
// epoch. events holds their Server-Sent Events, where the dispatcher built
// them: it is empty until it built one (so that a Registry without streams
// pays nothing for it), then as long as frames.
type recentFrames struct {
	mu     sync.Mutex
	epoch  string
	first  uint64 // seq of frames[0]
	frames [][]byte
	events [][]byte
	bytes  int
}

const (
	recentLength = 1024
	recentBytes  = 8 << 20
)

// put appends the frame (and event, if built) of a delivered message.
func (f *recentFrames) put(epoch string, seq uint64, frame, ev []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if epoch != f.epoch || len(f.frames) > 0 && seq != f.first+uint64(len(f.frames)) {
		clear(f.frames)
		clear(f.events)
		f.frames, f.events, f.bytes, f.epoch = f.frames[:0], f.events[:0], 0, epoch
	}
	if len(f.frames) == 0 {
		f.first = seq
	}
	if ev != nil && len(f.events) == 0 {
		f.events = append(f.events, make([][]byte, len(f.frames))...)
	}
	f.frames = append(f.frames, frame)
	if len(f.events) > 0 {
		f.events = append(f.events, ev)
	}
	f.bytes += len(frame) + len(ev)
	for len(f.frames) > 1 && (len(f.frames) > recentLength || f.bytes > recentBytes) {
		f.bytes -= len(f.frames[0])
		f.frames[0] = nil
		f.frames = f.frames[1:] // append reallocates, and so compacts, once capacity runs out
		if len(f.events) > 0 {
			f.bytes -= len(f.events[0])
			f.events[0] = nil
			f.events = f.events[1:]
		}
		f.first++
	}
}

// fill sets frames[i] to the frame of msgs[i], or its Server-Sent Event if
// events, shared when it is held and built otherwise; it stays nil for a
// message no client may receive (see frame).
func (f *recentFrames) fill(epoch string, msgs []BrokerMessage, frames [][]byte, events bool) {
	f.mu.Lock()
	held := f.frames
	if events {
		held = f.events
	}
	for i := range msgs {
		if s := msgs[i].Seq; epoch == f.epoch && s >= f.first && s-f.first < uint64(len(held)) {
			frames[i] = held[s-f.first]
		}
	}
	f.mu.Unlock()
	for i := range msgs {
		if frames[i] == nil {
			b, err := frame(&msgs[i])
			if err == nil && events {
				b = sseMessage(&msgs[i], b, epoch)
			}
			frames[i] = b
		}
	}
}

// control encodes a reserved message from the library to c: a WebSocket
// frame, or for a stream an event whose id is at.
func (c *Client) control(typ string, data any, at *Position) []byte {
	if c.sse != nil {
		return sseControl(typ, data, at)
	}
	return controlFrame(typ, data)
}
