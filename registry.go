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

	"github.com/coder/websocket"
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

// Add registers a connection that the caller accepted with
// websocket.Accept and serves it until it ends: it reads (answering pings,
// handing application frames to [Options.OnMessage]), pings on the
// heartbeat, and writes what is sent to it. Then it unregisters the
// connection and returns. If opts is nil, the connection is anonymous, with
// no topics and no resume.
//
// Add returns nil when either side closed the connection normally (1000 or
// 1001, including Close and Shutdown), ctx's error if ctx ended it, and
// otherwise an error saying why: [ErrSlowConsumer], [ErrHeartbeatTimeout],
// a policy violation, or the read error. Errors for connections the library
// closed wrap a websocket.CloseError with the code it sent. Add closes the
// connection in every case.
func (r *Registry) Add(ctx context.Context, conn *websocket.Conn, opts *ConnOptions) error {
	var o ConnOptions
	if opts != nil {
		o = *opts
	}
	if o.Resume != nil && o.ResumeNow {
		conn.Close(websocket.StatusInternalError, "notify: server error")
		return errResumeBoth
	}
	if err := r.checkTopics(ctx, o.Identity, o.Topics); err != nil {
		conn.Close(websocket.StatusPolicyViolation, truncateReason(err.Error()))
		return err
	}
	return r.serveConn(ctx, conn, o, nil)
}

// serveConn is Add once the topics are checked.
func (r *Registry) serveConn(ctx context.Context, conn *websocket.Conn, o ConnOptions, fc *frameConn) error {
	conn.SetReadLimit(r.opts.ReadLimit)
	var cancel context.CancelFunc
	if fc != nil {
		// A connection from the Handler is read with a context that never
		// ends, which spares coder/websocket a context timer on every read
		// and the connection a cancellable context: it is dropped by
		// closing its socket instead.
		ctx, cancel = context.Background(), func() { fc.Conn.Close() }
	} else {
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(r.base, cancel)
		defer stop()
	}

	c, err := r.register(conn, o, cancel, fc, nil)
	if err != nil {
		code := websocket.StatusTryAgainLater
		if errors.Is(err, ErrClosed) {
			code = websocket.StatusGoingAway
		}
		conn.Close(code, truncateReason(err.Error()))
		return err
	}
	return c.serve(ctx)
}

// errTooManyConns and errTooManyUser are returned when a connection limit
// is reached: Options.MaxConnections (503) and Options.MaxConnectionsPerUser
// (429).
var (
	errTooManyConns = errors.New("notify: too many connections")
	errTooManyUser  = errors.New("notify: too many connections for this user or address")
)

// register adds a client to the registry and, for a resuming client, queues
// its hello and replay ahead of any live message. A client is either a
// WebSocket (conn, and fc when it came through the Handler) or a
// Server-Sent Events stream (s).
func (r *Registry) register(conn *websocket.Conn, o ConnOptions, cancel context.CancelFunc, fc *frameConn, s *sseStream) (*Client, error) {
	c := &Client{
		r:         r,
		conn:      conn,
		id:        r.newID(),
		ident:     o.Identity,
		remote:    o.RemoteAddr,
		topics:    make(map[string]struct{}, len(o.Topics)),
		cancel:    cancel,
		fc:        fc,
		sse:       s,
		held:      o.resumable(),
		resumable: o.resumable(),
	}
	c.limit = bucket{rate: r.opts.InboundRate, burst: float64(r.opts.InboundBurst), tokens: float64(r.opts.InboundBurst)}
	c.refused = bucket{rate: refusedRate, burst: refusedBurst, tokens: refusedBurst}
	c.nextPing.Store(time.Now().Add(r.opts.PingInterval).UnixNano())
	if o.KeepAlive > 0 {
		c.keepAlive = int64(r.keepAliveInterval(o.KeepAlive))
		c.nextKeep.Store(time.Now().UnixNano() + c.keepAlive)
	}
	if fc != nil {
		fc.onPing = c.onPing // before the first read, on the goroutine that reads
	}

	if p := o.Resume; p != nil && (p.Seq > r.last.Load() || p.Epoch != "" && p.Epoch != *r.epoch.Load()) {
		r.catchUpTo(o) // see there; register below must see the position the client names
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	if err := r.overLimit(o.Identity.User, o.RemoteAddr, 0); err != nil {
		r.mu.Unlock()
		return nil, err
	}
	c.listed = true
	r.clients[c] = struct{}{}
	if s != nil {
		r.streams++
	}
	r.byID[c.id] = c
	for _, t := range o.Topics {
		c.topics[t] = struct{}{}
		addToSet(r.byTopic, t, c)
	}
	if u := o.Identity.User; u != "" {
		addToSet(r.byUser, u, c)
	} else if o.RemoteAddr != "" {
		r.byAddr[o.RemoteAddr]++
	}
	last := r.last.Load() // every message after this one is queued live
	r.active.Add(1)
	r.mu.Unlock()

	if o.resumable() {
		c.startResume(o, last)
	}
	return c, nil
}

// overLimit reports whether one more connection (beyond extra pending ones)
// would exceed a connection limit (r.mu held).
func (r *Registry) overLimit(user, addr string, extra int) error {
	if max := r.opts.MaxConnections; max > 0 && len(r.clients)+extra >= max {
		return errTooManyConns
	}
	max := r.opts.MaxConnectionsPerUser
	if max <= 0 {
		return nil
	}
	n := r.byAddr[addr]
	if user != "" {
		n = len(r.byUser[user])
	} else if addr == "" {
		return nil
	}
	if n+extra >= max {
		return errTooManyUser
	}
	return nil
}

// unregister takes c out of the Registry's maps, so that nothing more is
// queued for it. It may be called more than once.
func (r *Registry) unregister(c *Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !c.listed {
		return
	}
	c.listed = false
	delete(r.clients, c)
	if c.sse != nil {
		r.streams--
	}
	delete(r.byID, c.id)
	for t := range c.topics {
		removeFromSet(r.byTopic, t, c)
	}
	if u := c.ident.User; u != "" {
		removeFromSet(r.byUser, u, c)
	} else if c.remote != "" {
		if r.byAddr[c.remote]--; r.byAddr[c.remote] <= 0 {
			delete(r.byAddr, c.remote)
		}
	}
}

func (r *Registry) isClosed() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.closed
}
