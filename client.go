package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Client is one registered connection, as the hooks in [Options] see it.
// Its methods are safe for concurrent use.
type Client struct {
	r         *Registry
	conn      *websocket.Conn
	id        string
	ident     Identity
	remote    string
	resumable bool                // asked for resume: hears about epoch changes
	topics    map[string]struct{} // guarded by r.mu
	listed    bool                // in the Registry's maps; guarded by r.mu
	cancel    context.CancelFunc  // drops the connection without a handshake
	fc        *frameConn          // the hijacked connection, for writing frames directly; nil for Add
	sse       *sseStream          // set for a Server-Sent Events stream, which has no conn

	limit, refused bucket // inbound frames and refused requests; the read loop's alone

	mu           sync.Mutex
	queue        []item // live frames, written once the resume is done
	spare        []item // the previous batch, reused to avoid allocation
	resume       []item // hello, gap and the current replay chunk: written before queue
	cursor       *replayCursor
	queuedFrames int           // frames in queue and resume, counted against QueueLength
	queuedBytes  int           // their bytes, counted against QueueBytes
	writing      bool          // a writer (pooled or the connection's own) owns the connection
	held         bool          // resume pending: queue live frames, but do not write yet
	closing      bool          // no more messages are accepted
	dead         bool          // nothing more is written
	closeBegun   bool          // a close handshake has been started
	pingQueued   bool          // a ping waits in the queue or is in flight
	err          error         // why the library closed the connection; nil for going away
	awayWait     time.Duration // how long the client should wait after the 1001 close (see goAway)

	pass       uint64       // the dispatcher's: the last pass that listed c
	vec, out   net.Buffers  // the writer's scratch for one writev
	writeStart atomic.Int64 // UnixNano when the current write began, 0 when idle
	nextPing   atomic.Int64 // UnixNano when the next ping is due
	keepAlive  int64        // nanoseconds between keep-alives; 0: none (see ConnOptions.KeepAlive)
	nextKeep   atomic.Int64 // UnixNano when the next keep-alive is due
	writers    sync.WaitGroup
}

type itemKind uint8

const (
	itemMessage itemKind = iota
	itemControl          // a reserved message to this client only (hello, gap, error)
	itemPing
	itemClose // close with 1001 once everything before it is written, asking the client to wait awayWait
)

// item is one queued thing to write; b is a complete frame (see wireFrame),
// or for a Server-Sent Events stream a complete event (see appendEvent).
type item struct {
	b    []byte
	kind itemKind
}

// ID returns the connection's identifier, unique across the nodes that share
// a broker. Put it in [SocketMessage.ClientID] to send to this connection only.
func (c *Client) ID() string { return c.id }

// Identity returns what [Options.Authorize] attached to the connection.
func (c *Client) Identity() Identity { return c.ident }

// RemoteAddr returns the peer's address as the handler saw it ("" if the
// connection was added with [Registry.Add] without one).
func (c *Client) RemoteAddr() string { return c.remote }

// Topics returns the topics the connection is subscribed to, in no
// particular order.
func (c *Client) Topics() []string {
	c.r.mu.RLock()
	defer c.r.mu.RUnlock()
	out := make([]string, 0, len(c.topics))
	for t := range c.topics {
		out = append(out, t)
	}
	return out
}

// matches reports whether a targeted message is for c (r.mu held).
func (c *Client) matches(m *BrokerMessage) bool {
	if m.ClientID != "" && m.ClientID != c.id {
		return false
	}
	if m.User != "" && m.User != c.ident.User {
		return false
	}
	if m.Topic != "" {
		_, ok := c.topics[m.Topic]
		return ok
	}
	return true
}

// enqueue queues one frame without blocking. A frame that does not fit
// closes the connection as a slow consumer: it resumes from its last seq.
func (c *Client) enqueue(b []byte, kind itemKind) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.add(b, kind) {
		c.startWriter()
	}
}

// enqueueFrames queues a dispatch pass's frames for c, all or none, with
// one lock round trip, and reports the frames now queued. When the
// connection needs a writer it reports true, with the writer counted, and
// the caller starts it (see Registry.startWriters) once the pass is done,
// with one wake-up for the whole pass.
func (c *Client) enqueueFrames(items []item) (start bool, depth int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	bytes := 0
	for _, it := range items {
		bytes += len(it.b)
	}
	if !c.fits(len(items), bytes) {
		return false, 0
	}
	c.queue = append(c.queue, items...)
	c.queuedFrames += len(items)
	c.queuedBytes += bytes
	c.r.stats.queued.Add(uint64(countMessages(items)))
	return c.needWriter(), c.queuedFrames
}

// add queues one frame if it fits, and reports whether it did (c.mu held).
func (c *Client) add(b []byte, kind itemKind) bool {
	if !c.fits(1, len(b)) {
		return false
	}
	c.queue = append(c.queue, item{b, kind})
	c.queuedFrames++
	c.queuedBytes += len(b)
	if kind == itemMessage {
		c.r.stats.queued.Add(1)
	}
	return true
}

// fits reports whether frames more frames of bytes fit the queue; if they
// do not, it closes the connection as a slow consumer (c.mu held). A closing
// connection takes nothing.
//
// Every frame counts against QueueLength and QueueBytes, the library's own
// replies included: a client that provokes replies and never reads is a
// slow consumer like any other.
func (c *Client) fits(frames, bytes int) bool {
	if c.closing {
		return false
	}
	o := &c.r.opts
	if c.queuedFrames+frames <= o.QueueLength && c.queuedBytes+bytes <= o.QueueBytes {
		return true
	}
	c.r.stats.slow.Add(1)
	c.r.warnThrottled(int(CloseSlowConsumer), "notify: closing slow consumer", "client", c.id, "frames", c.queuedFrames, "bytes", c.queuedBytes)
	c.failLocked(CloseSlowConsumer, "notify: slow consumer, resume from your last seq", ErrSlowConsumer)
	return false
}

// startWriter starts the writer unless one runs (c.mu held).
func (c *Client) startWriter() {
	if c.needWriter() {
		c.schedule()
	}
}

// needWriter reports whether a writer must be started, and if so counts it
// as running (c.mu held).
func (c *Client) needWriter() bool {
	if c.writing || c.held || c.dead {
		return false
	}
	if len(c.resume) == 0 && c.cursor == nil && len(c.queue) == 0 {
		return false
	}
	c.writing = true
	c.writers.Add(1)
	return true
}

// ping sends a ping and waits up to PingInterval for the pong, holding the
// writer meanwhile: one writer per connection, control frames included.
func (c *Client) ping() bool {
	interval := c.r.opts.PingInterval
	ctx, cancel := context.WithTimeout(context.Background(), interval)
	defer cancel()
	err := c.conn.Ping(ctx)
	c.mu.Lock()
	c.pingQueued = false
	c.mu.Unlock()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			c.r.stats.heartbeat.Add(1)
			c.r.warnThrottled(int(CloseHeartbeatTimeout), "notify: heartbeat timeout", "client", c.id)
			c.fail(CloseHeartbeatTimeout, "notify: no pong within the ping interval", ErrHeartbeatTimeout)
		}
		return false
	}
	c.nextPing.Store(time.Now().Add(interval).UnixNano())
	return true
}

// queuePing queues a heartbeat ping unless one is pending.
func (c *Client) queuePing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pingQueued || c.closing {
		return
	}
	c.pingQueued = true
	c.queue = append(c.queue, item{kind: itemPing})
	c.startWriter()
}

// fail closes the connection with code and reason, dropping what is queued,
// and records err as the reason [Registry.Add] returns. The connection
// leaves the Registry at once, so it gets nothing new, but the frame being
// written and the close frame still go out: the close handshake runs on its
// own goroutine, and the connection is dropped if it has not ended within
// closeGrace (plus WriteTimeout for a slow consumer, whose socket may still
// be full). fail never blocks its caller.
func (c *Client) fail(code websocket.StatusCode, reason string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(code, reason, err)
}

// failLocked is fail with c.mu held.
func (c *Client) failLocked(code websocket.StatusCode, reason string, err error) {
	if c.dead {
		return
	}
	c.closing, c.dead = true, true
	c.err = fmt.Errorf("%w (%w)", err, websocket.CloseError{Code: code, Reason: reason})
	c.r.stats.dropped.Add(uint64(c.dropQueued()))
	begin := !c.closeBegun
	c.closeBegun = true
	c.r.bg.Add(1)
	if c.sse != nil {
		// The stream's handler goroutine writes the close event and ends
		// the response (see serveStream).
		c.sse.code, c.sse.reason = code, reason
		c.sse.stop()
		go func() {
			defer c.r.bg.Done()
			c.r.unregister(c)
		}()
		return
	}
	go func() {
		defer c.r.bg.Done()
		c.r.unregister(c) // not under fail's caller's locks: the dispatcher calls fail with r.mu held
		if !begin {
			return
		}
		grace := closeGrace
		if code == CloseSlowConsumer {
			grace += c.r.opts.WriteTimeout // a frame may still be on its way to a slow reader
		}
		drop := time.AfterFunc(grace, c.cancel)
		defer drop.Stop()
		stop := context.AfterFunc(c.r.base, c.cancel) // Shutdown past its deadline drops it too
		defer stop()
		c.conn.Close(code, reason)
	}()
}

// closeGrace bounds how long a peer the library closes for cause (slow,
// unresponsive, abusive) has to answer the close frame once it is written.
const closeGrace = time.Second

// dropQueued empties the queue and the resume and returns how many
// messages it dropped (c.mu held).
func (c *Client) dropQueued() int {
	n := countMessages(c.queue) + countMessages(c.resume)
	clear(c.queue)
	c.queue = c.queue[:0]
	c.resume, c.cursor = nil, nil
	c.queuedFrames, c.queuedBytes = 0, 0
	return n
}

// abort drops the connection at once, without a close handshake: for a
// write stuck past WriteTimeout, where no close frame could get through.
// It reports false if the connection was closing already.
func (c *Client) abort(err error) bool {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return false
	}
	c.closing, c.dead = true, true
	c.err = err
	dropped := c.dropQueued()
	c.mu.Unlock()
	c.r.stats.dropped.Add(uint64(dropped))
	c.cancel()
	return true
}

// goAway closes the connection with 1001 after writing what is queued (or
// at once, dropping it, if !flush), asking the client to wait before it
// reconnects (see Options.ReconnectRate).
func (c *Client) goAway(flush bool, wait time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.closing = true
	if !flush {
		c.r.stats.dropped.Add(uint64(c.dropQueued()))
	}
	c.closeBegun = true
	// A held queue stays held: the resume must still go first, and
	// register starts it right away.
	c.awayWait = wait // read by the writer, which takes the item under c.mu
	c.queue = append(c.queue, item{kind: itemClose})
	c.startWriter()
}

// queueKeepAlive queues a keep-alive unless the connection is closing
// (c.mu held by no one). Like every frame it counts against the queue's
// bounds.
func (c *Client) queueKeepAlive() {
	b := keepAliveFrame
	if c.sse != nil {
		b = keepAliveEvent
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.add(b, itemControl) {
		c.startWriter()
	}
}

func countMessages(items []item) int {
	n := 0
	for _, it := range items {
		if it.kind == itemMessage {
			n++
		}
	}
	return n
}

// serve runs the connection until it ends: the read loop on the calling
// goroutine, the writer on demand. It unregisters the client, waits for its
// writer and reports why it ended.
func (c *Client) serve(ctx context.Context) error {
	if hook := c.r.opts.OnConnect; hook != nil {
		if err := c.r.contain("OnConnect", func() { hook(c) }, "client", c.id); err != nil {
			c.fail(websocket.StatusInternalError, "notify: internal error", err)
		}
	}
	readErr := c.readLoop(ctx)

	c.mu.Lock()
	c.closing, c.dead = true, true
	dropped := c.dropQueued()
	begin := !c.closeBegun
	c.closeBegun = true
	result := c.err
	c.mu.Unlock()
	c.r.stats.dropped.Add(uint64(dropped))
	if begin {
		c.conn.CloseNow() // the read failed, so the connection is already closing; make sure
	}
	ended := ctx.Err() // whether ctx ended the connection, read before cancelling it below
	c.cancel()         // unblocks a writer stuck in a write
	c.writers.Wait()
	c.r.unregister(c)

	if result == nil {
		result = c.endReason(ended, readErr)
	}
	if hook := c.r.opts.OnDisconnect; hook != nil {
		_ = c.r.contain("OnDisconnect", func() { hook(c, result) }, "client", c.id) // logged; the connection is gone already
	}
	c.r.active.Done()
	return result
}

// endReason turns the read loop's error into Add's result when the library
// did not close the connection itself. ended is the connection context's
// error as it was when the read loop returned.
func (c *Client) endReason(ended, readErr error) error {
	c.mu.Lock()
	leaving := c.closeBegun && c.err == nil
	c.mu.Unlock()
	switch websocket.CloseStatus(readErr) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway:
		return nil
	}
	if c.r.base.Err() != nil || (leaving && c.r.isClosed()) {
		return nil // the Registry is shutting down; it also cancels ctx when dropping stragglers
	}
	if ended != nil {
		return ended
	}
	c.r.stats.readErrs.Add(1)
	return fmt.Errorf("notify: connection %s: %w", c.id, readErr)
}
