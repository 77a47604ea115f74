package notify

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Writing. A connection has at most one writer at a time (c.writing, one
// count in c.writers), which takes the connection's whole backlog and
// writes it with one writev. The writer is either
//
//   - one of the Registry's pooled writers, a few goroutines (GOMAXPROCS)
//     that take the connections with frames queued in turn. They only ever
//     try a write the socket takes at once (frameConn.tryWriteFrames), so
//     no connection holds them up; a connection that still has frames after
//     its turn goes to the back of the line, and its backlog builds
//     meanwhile, so a busy Registry writes many frames per call. Or
//   - a goroutine of the connection's own, for whatever may block: a
//     socket that is full (it finishes the cut frame and the rest, under
//     the WriteTimeout watchdog), a ping (which waits for its pong), a
//     close, a resume (which reads the broker's history), and connections
//     whose socket allows no such try (those added with Registry.Add, TLS,
//     in-memory pipes). It exits once the queue is empty; the connection's
//     next frames go to the pool again.
//
// Rejected: a goroutine per connection per burst (15–22% of the CPU at
// 10,000 connections went to starting and scheduling them, and every
// broadcast woke every writer at once, so each write carried one or two
// frames); write deadlines for the handoff (a timer operation per write).

// writerPool is the Registry's pooled writers and the connections waiting
// for them, in order.
type writerPool struct {
	mu      sync.Mutex
	wake    sync.Cond
	drained sync.Cond // signalled when ready empties
	ready   []*Client // waiting for a writer, from head on
	head    int
	stopped bool
	n       int
	done    sync.WaitGroup
}

// writerTake is the most connections a pooled writer takes at once.
const writerTake = 32

func (p *writerPool) start(n int) {
	p.wake.L = &p.mu
	p.drained.L = &p.mu
	p.n = n
	for range n {
		p.done.Add(1)
		go p.run()
	}
}

// stop ends the pooled writers once nothing waits for them.
func (p *writerPool) stop() {
	p.mu.Lock()
	p.stopped = true
	p.wake.Broadcast()
	p.mu.Unlock()
	p.done.Wait()
}

// waitDrained waits until every connection that was waiting for a pooled
// writer has had its turn. The dispatcher calls it before a pass when the
// last one left some connection's queue more than half full, so that while
// the writers are behind (a burst published faster than they got a CPU),
// messages build up in the dispatcher's backlog, where they cost one copy
// whatever the number of connections, rather than in connection queues,
// which would overflow and close healthy clients. Waiting before every
// pass would put the dispatcher in lockstep with the writers and cut the
// frames per write call in half at 10k connections (bench, saturated
// fan-out: 5.2 → 9.5 µs of CPU per delivery). The wait never depends on
// one client: a connection whose socket is full has a goroutine of its
// own and is not waiting here.
func (p *writerPool) waitDrained() {
	p.mu.Lock()
	for p.head < len(p.ready) && !p.stopped {
		p.drained.Wait()
	}
	p.mu.Unlock()
}

// push queues connections for a pooled writer.
func (p *writerPool) push(cs ...*Client) {
	if len(cs) == 0 {
		return
	}
	p.mu.Lock()
	p.ready = append(p.ready, cs...)
	if len(cs) == 1 {
		p.wake.Signal()
	} else {
		p.wake.Broadcast()
	}
	p.mu.Unlock()
}

func (p *writerPool) run() {
	defer p.done.Done()
	w := &pooledWriter{try: newTryWriter()}
	var taken []*Client
	for {
		p.mu.Lock()
		for p.head == len(p.ready) && !p.stopped {
			p.wake.Wait()
		}
		waiting := len(p.ready) - p.head
		if waiting == 0 {
			p.mu.Unlock()
			return
		}
		n := min(writerTake, max(1, waiting/p.n))
		taken = append(taken[:0], p.ready[p.head:p.head+n]...)
		clear(p.ready[p.head : p.head+n])
		p.head += n
		switch {
		case p.head == len(p.ready):
			p.ready, p.head = p.ready[:0], 0
			p.drained.Broadcast()
		case p.head >= 1024 && p.head*2 >= len(p.ready):
			k := copy(p.ready, p.ready[p.head:])
			clear(p.ready[k:])
			p.ready, p.head = p.ready[:k], 0
		}
		p.mu.Unlock()
		for _, c := range taken {
			c.writePooled(w)
		}
		clear(taken)
	}
}

// pooledWriter is a pooled writer goroutine's scratch, shared by the
// connections it writes, so that an idle connection keeps none.
type pooledWriter struct {
	try      *tryWriter
	vec, out net.Buffers
}

// startWriters starts the writers that enqueueFrames asked for: the pooled
// ones with one wake-up.
func (r *Registry) startWriters(cs []*Client) {
	n := 0
	for _, c := range cs {
		if c.pooled() {
			cs[n] = c
			n++
		} else {
			c.ownWriter()
		}
	}
	r.writers.push(cs[:n]...)
}

// schedule starts the writer counted by needWriter.
func (c *Client) schedule() {
	if c.pooled() {
		c.r.writers.push(c)
	} else {
		c.ownWriter()
	}
}

// ownWriter starts the connection's own writer: a goroutine, or for a
// Server-Sent Events stream its handler goroutine, which waits for the
// kick (see serveStream).
func (c *Client) ownWriter() {
	if c.sse != nil {
		select {
		case c.sse.kick <- struct{}{}:
		default: // cannot happen: one kick per writer counted, and it is taken before the next
		}
		return
	}
	go c.writeLoop(nil, 0)
}

// pooled reports whether the pooled writers serve c.
func (c *Client) pooled() bool { return c.fc != nil && c.fc.canTry() }

// writePooled is a pooled writer's turn at c: it writes the leading frames
// of c's backlog as far as the socket takes them at once, and hands
// whatever may block to a goroutine of c's own.
func (c *Client) writePooled(w *pooledWriter) {
	c.mu.Lock()
	switch {
	case c.dead || len(c.resume) == 0 && c.cursor == nil && len(c.queue) == 0:
		c.writing = false
		c.mu.Unlock()
		c.writers.Done()
		return
	case len(c.resume) > 0 || c.cursor != nil:
		c.mu.Unlock()
		go c.writeLoop(nil, 0) // a resume reads the broker
		return
	}
	batch := c.takeQueue()
	c.mu.Unlock()

	j := 0
	for ; j < len(batch) && batch[j].isFrame(); j++ {
		w.vec = append(w.vec, batch[j].b)
	}
	if j > 0 {
		w.out = w.vec
		state, err := c.fc.tryWriteFrames(w.try, &w.out)
		if state == tryFull {
			// The rest goes to the connection's own goroutine; fc.mu
			// stays held, as the frame cut in the middle must be
			// finished before anything else is written.
			c.vec = append(c.vec[:0], w.out...)
			c.out = c.vec
		}
		clear(w.vec)
		w.vec = w.vec[:0]
		switch {
		case err != nil:
			c.r.stats.dropped.Add(uint64(countMessages(batch)))
			c.stopWriting()
			return
		case state == tryFull:
			go c.writeLoop(batch, j)
			return
		case state == tryBusy:
			go c.writeLoop(batch, 0)
			return
		}
		c.r.stats.sent.Add(uint64(j))
		c.r.stats.writes.Add(1)
	}
	if j < len(batch) {
		go c.writeLoop(batch[j:], 0) // a ping waits for its pong; a close ends the connection
		return
	}

	c.mu.Lock()
	c.recycle(batch)
	if c.dead || len(c.queue) == 0 && len(c.resume) == 0 && c.cursor == nil {
		c.writing = false
		c.mu.Unlock()
		c.writers.Done()
		return
	}
	c.mu.Unlock()
	c.r.writers.push(c) // more arrived meanwhile: back of the line, where it builds up
}

// takeQueue takes the live queue as the next batch, and uncounts its frames
// from the queue's bounds (c.mu held).
func (c *Client) takeQueue() []item {
	batch := c.queue
	c.queue, c.spare = c.spare, nil
	c.uncount(batch)
	return batch
}

func (c *Client) uncount(batch []item) {
	for _, it := range batch {
		if it.isFrame() {
			c.queuedFrames--
			c.queuedBytes -= len(it.b)
		}
	}
}

// recycle keeps a written batch's array for the next burst (c.mu held).
func (c *Client) recycle(batch []item) {
	clear(batch)
	if c.spare == nil && cap(batch) > 0 {
		c.spare = batch[:0]
	}
}

func (c *Client) clearVec() {
	clear(c.vec)
	c.vec = c.vec[:0]
}

func (c *Client) stopWriting() {
	c.mu.Lock()
	c.writing = false
	c.mu.Unlock()
	c.writers.Done()
}

// writeLoop is the connection's own writer goroutine. It first writes
// batch, taken over from a pooled writer (of which the first cut frames
// sit in c.out, with fc.mu held, when cut > 0), then the resume (hello,
// then the replay, fetched a chunk at a time so that it never holds more
// than the queue's bounds), then the live queue, in batches, and exits
// when there is nothing left.
func (c *Client) writeLoop(batch []item, cut int) {
	defer c.writers.Done()
	if cut > 0 {
		c.writeStart.Store(time.Now().UnixNano())
		err := c.fc.finishFrames(&c.out)
		c.writeStart.Store(0)
		c.clearVec()
		if err != nil {
			c.r.stats.dropped.Add(uint64(countMessages(batch)))
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.r.stats.sent.Add(uint64(cut))
		c.r.stats.writes.Add(1)
	}
	if cut < len(batch) && !c.writeBatch(batch[cut:]) {
		c.mu.Lock()
		c.writing = false
		c.mu.Unlock()
		return
	}
	for {
		c.mu.Lock()
		if batch != nil {
			c.recycle(batch) // the next burst reuses it instead of allocating
			batch = nil
		}
		if !c.dead && len(c.resume) == 0 && c.cursor != nil {
			cur := *c.cursor
			room := c.replayRoom()
			c.mu.Unlock()
			chunk, next := c.r.replayChunk(c, cur, room)
			c.mu.Lock()
			if c.cursor != nil { // nil if the connection failed meanwhile
				c.cursor = next
				c.resume = chunk
				for _, it := range chunk {
					c.queuedFrames++
					c.queuedBytes += len(it.b)
				}
				c.r.stats.queued.Add(uint64(countMessages(chunk)))
			}
			c.mu.Unlock()
			continue
		}
		switch {
		case c.dead:
		case len(c.resume) > 0:
			batch, c.resume = c.resume, nil
			c.uncount(batch)
		case c.cursor == nil && len(c.queue) > 0:
			batch = c.takeQueue()
		}
		if batch == nil {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		if !c.writeBatch(batch) {
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			return
		}
	}
}

// writeBatch writes a batch in order, waiting as long as it takes, and
// reports whether to go on. On a connection from the Handler, each run of
// frames goes out with one writev system call (see frameConn); pings and
// closes go through coder/websocket.
func (c *Client) writeBatch(batch []item) bool {
	if c.sse != nil {
		return c.writeSSE(batch)
	}
	for i := 0; i < len(batch); {
		if c.fc == nil || !batch[i].isFrame() {
			if !c.write(batch[i]) {
				c.r.stats.dropped.Add(uint64(countMessages(batch[i+1:])))
				return false
			}
			i++
			continue
		}
		j := i
		for ; j < len(batch) && batch[j].isFrame(); j++ {
			c.vec = append(c.vec, batch[j].b)
		}
		c.writeStart.Store(time.Now().UnixNano())
		c.out = c.vec // writeFrames consumes c.out; c.vec keeps the backing array
		err := c.fc.writeFrames(&c.out)
		c.writeStart.Store(0)
		c.clearVec()
		if err != nil {
			c.r.stats.dropped.Add(uint64(countMessages(batch[i:])))
			return false
		}
		c.r.stats.sent.Add(uint64(j - i))
		c.r.stats.writes.Add(1)
		i = j
	}
	return true
}

func (it item) isFrame() bool { return it.kind == itemMessage || it.kind == itemControl }

// write performs one queued item and reports whether to go on.
func (c *Client) write(it item) bool {
	switch it.kind {
	case itemPing:
		return c.ping()
	case itemClose:
		c.conn.Close(websocket.StatusGoingAway, goingAwayReason(c.awayWait))
		return false
	}
	c.writeStart.Store(time.Now().UnixNano())
	err := c.conn.Write(context.Background(), websocket.MessageText, framePayload(it.b))
	c.writeStart.Store(0)
	if err != nil {
		return false // the connection is closed; the read loop reports why
	}
	c.r.stats.sent.Add(1)
	c.r.stats.writes.Add(1) // coder/websocket flushes every message
	return true
}
