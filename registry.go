package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	mrand "math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Registry is the set of live connections of one process, WebSocket and
// Server-Sent Events alike, and the sending side that reaches them. Create it with [New], serve connections
// with [Registry.Handler] or [Registry.Add], send with [Registry.Broadcast]
// and [Registry.NotifyText], and stop it with [Registry.Shutdown] or
// [Registry.Close].
//
// A Registry is safe for concurrent use by multiple goroutines. Sending
// never waits on a client's network: one dispatcher goroutine fans
// published messages out to every connection's bounded queue, and a few
// writer goroutines (GOMAXPROCS) write each connection's backlog with one
// system call; a connection whose socket is full gets a writer goroutine of
// its own until it drains (see writer.go).
type Registry struct {
	opts   Options
	broker Broker
	unsub  func()
	epoch  atomic.Pointer[string] // changes only when the broker loses history
	nodeID string
	nextID atomic.Uint64

	// base is the parent of the contexts of connections added with Add;
	// cancelling it drops them at once (Shutdown past its deadline), as
	// closing their sockets drops the Handler's.
	base     context.Context
	dropAll  context.CancelFunc
	stopBeat chan struct{}
	beatDone chan struct{}

	mu       sync.RWMutex // guards the fields below and Client.topics
	closed   bool
	last     atomic.Uint64 // seq of the last message queued to the connections; written under mu.RLock by the dispatcher
	clients  map[*Client]struct{}
	streams  int // of clients, those served over Server-Sent Events
	byID     map[string]*Client
	byTopic  map[string]map[*Client]struct{}
	byUser   map[string]map[*Client]struct{}
	byAddr   map[string]int // anonymous connections per remote IP
	active   sync.WaitGroup // one count per registered connection
	shutdown chan struct{}  // closed when the first Close or Shutdown finishes

	bg sync.WaitGroup // goroutines closing connections, and watchBroker

	disp    dispatcher // broker deliveries → connections' queues
	writers writerPool // connections' queues → sockets
	recent  recentFrames

	throttle logThrottle // see warnThrottled

	stats  counters
	health brokerHealth
}

// New returns a Registry configured by opts. If opts is nil, the default
// options are used. The Registry starts one goroutine for heartbeats and
// write timeouts and one that reads the broker's head once a second (see
// [Stats]); Close or Shutdown stops them.
func New(opts *Options) *Registry {
	o := opts.withDefaults()
	r := &Registry{
		opts:     o,
		broker:   o.Broker,
		clients:  map[*Client]struct{}{},
		byID:     map[string]*Client{},
		byTopic:  map[string]map[*Client]struct{}{},
		byUser:   map[string]map[*Client]struct{}{},
		byAddr:   map[string]int{},
		stopBeat: make(chan struct{}),
		beatDone: make(chan struct{}),
		shutdown: make(chan struct{}),
	}
	if r.broker == nil {
		r.broker = NewMemoryBroker(nil)
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	r.nodeID = hex.EncodeToString(id[:])
	r.base, r.dropAll = context.WithCancel(context.Background())
	r.epoch.Store(new(string))
	r.disp.init()

	pos, unsub, err := r.broker.Subscribe(r.base, r.deliver)
	if err != nil {
		// A broker that cannot subscribe leaves a registry that can only
		// refuse: report it the way every later call will.
		o.Logger.Error("notify: broker subscribe failed", "err", err)
		r.closed = true
		close(r.beatDone)
		close(r.shutdown)
		return r
	}
	r.unsub = unsub
	r.epoch.Store(&pos.Epoch)
	r.last.Store(pos.Seq)
	r.disp.seen = pos
	r.health.connected.Store(true) // it just answered Subscribe
	r.writers.start(runtime.GOMAXPROCS(0))
	go r.dispatchLoop()
	go r.heartbeat()
	r.bg.Add(1)
	go r.watchBroker()
	return r
}

// Len returns the number of live connections.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.clients)
}

// Position returns the stream's epoch and the seq of the last message the
// broker delivered to this Registry: with the default broker, that of the
// last Broadcast that returned. (It may not have reached the connections
// yet, see [Registry.Broadcast]; a connection that resumes from Position
// receives exactly what follows it all the same.)
//
// It is the REST-to-WebSocket handoff: read it before reading the state a
// page is rendered from, put it in the response, and have the page connect
// with ?since=Seq&epoch=Epoch. Every change saved after the read carries a
// larger seq and is replayed; every change with a smaller one was saved
// before the snapshot was read, so nothing falls between the two.
func (r *Registry) Position() Position {
	return r.disp.position()
}

// The headers of the REST-to-WebSocket handoff, part of the protocol: a
// response that a page renders from carries the [Position] it was read at,
// and the page connects with ?since=<Notify-Seq>&epoch=<Notify-Epoch>
// (notify.js: connect(url, {since, epoch})).
const (
	HeaderEpoch = "Notify-Epoch"
	HeaderSeq   = "Notify-Seq"
)

// SetHeader writes p into h as [HeaderEpoch] and [HeaderSeq]. Read the
// position before reading the state the response carries (see
// [Registry.Position]), and call SetHeader before writing the body:
//
//	pos := reg.Position()
//	customers, err := store.List(ctx)
//	…
//	pos.SetHeader(w.Header())
//	json.NewEncoder(w).Encode(customers)
func (p Position) SetHeader(h http.Header) {
	h.Set(HeaderEpoch, p.Epoch)
	h.Set(HeaderSeq, strconv.FormatUint(p.Seq, 10))
}

// Close stops the Registry at once: the handler answers 503, sending returns
// [ErrClosed], queued messages are dropped (clients that resume get them
// from history), and every connection is sent 1001 (going away); those that
// do not complete the close handshake within a second are dropped. Close
// returns once every goroutine of the Registry has ended. It is idempotent.
func (r *Registry) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := r.stop(ctx, false)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // dropping stragglers is what Close promises
	}
	return err
}

// Shutdown stops the Registry gracefully: the handler answers 503 and
// sending returns [ErrClosed] at once; then every message already queued is
// written, every connection is closed with 1001 (going away), and Shutdown
// returns once every goroutine of the Registry has ended. If ctx ends first,
// the remaining connections are dropped without a close handshake, their
// goroutines are still waited for, and ctx's error is returned.
//
// Call it alongside http.Server.Shutdown, which does not know about
// hijacked connections, and wait for both before main returns (see
// ExampleRegistry_Shutdown): a Shutdown started from
// http.Server.RegisterOnShutdown is not waited for, so the process would
// exit in the middle of the flush. Shutdown is idempotent; a second call
// waits for the first to finish or for its own ctx.
func (r *Registry) Shutdown(ctx context.Context) error {
	return r.stop(ctx, true)
}

// stop is the one helper behind Close and Shutdown.
func (r *Registry) stop(ctx context.Context, flush bool) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		select {
		case <-r.shutdown:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.closed = true
	clients := make([]*Client, 0, len(r.clients))
	for c := range r.clients {
		clients = append(clients, c)
	}
	r.mu.Unlock()
	defer close(r.shutdown)

	// Deliveries end with unsub; then the dispatcher fans out what it
	// still holds (every message whose Broadcast returned), so that it is
	// queued ahead of the close.
	r.unsub()
	r.disp.discard.Store(!flush)
	close(r.disp.stop)
	<-r.disp.done
	window := reconnectWindow(len(clients), r.opts.ReconnectRate)
	for _, c := range clients {
		c.goAway(flush, mrand.N(window))
	}

	done := make(chan struct{})
	go func() {
		r.active.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		r.dropAll()
		for _, c := range clients {
			c.cancel()
		}
		<-done
	}
	r.dropAll()
	close(r.stopBeat)
	<-r.beatDone
	r.bg.Wait()
	r.writers.stop()
	return err
}

// reconnectWindow is the span over which n clients are asked to come back
// at rate per second (see Options.ReconnectRate): at least a second.
func reconnectWindow(n int, rate float64) time.Duration {
	return max(time.Second, time.Duration(float64(n)/rate*float64(time.Second)))
}

// goingAwayReason is the 1001 close reason that asks the client to wait
// before it reconnects. notify.js reads the number back.
func goingAwayReason(wait time.Duration) string {
	return "notify: server shutting down, reconnect in " + strconv.FormatInt(wait.Milliseconds(), 10) + "ms"
}

// newID returns a connection ID unique across nodes sharing a broker.
func (r *Registry) newID() string {
	return r.nodeID + "-" + strconv.FormatUint(r.nextID.Add(1), 36)
}

// addToSet and removeFromSet maintain the index maps.
func addToSet(m map[string]map[*Client]struct{}, key string, c *Client) {
	set := m[key]
	if set == nil {
		set = map[*Client]struct{}{}
		m[key] = set
	}
	set[c] = struct{}{}
}

func removeFromSet(m map[string]map[*Client]struct{}, key string, c *Client) {
	set := m[key]
	delete(set, c)
	if len(set) == 0 {
		delete(m, key)
	}
}
