package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"
)

// Options configures a [Registry]. A nil *Options, or a zero Options, gives
// the defaults stated on each field. [New] copies the struct, so changing it
// afterwards has no effect; hooks can therefore never race with running
// connections.
type Options struct {
	// OriginPatterns lists the origins, besides the request's own host, whose
	// pages may open a connection. Patterns follow coder/websocket's
	// AcceptOptions.OriginPatterns: matched case-insensitively with
	// path.Match against the Origin's host ("example.com", "*.example.com"),
	// or against "scheme://host" when the pattern contains "://".
	//
	// Default: none, so only same-origin pages and non-browser clients (no
	// Origin header) may connect; foreign origins get 403 before the upgrade.
	// Do not use "*": a foreign page could then read every notification
	// with the user's cookies. Set InsecureAllowAnyOrigin instead if you
	// really mean it. A malformed pattern (see path.Match) refuses every
	// foreign origin, as coder/websocket does.
	OriginPatterns []string

	// InsecureAllowAnyOrigin disables the origin check entirely. Default
	// false. Only safe when connections carry no ambient credentials
	// (cookies, client certificates) and every message is public.
	InsecureAllowAnyOrigin bool

	// Authorize, if set, runs before the upgrade, after the origin check.
	// It returns the identity to attach to the connection, or an error to
	// refuse it: the handler answers 403 when the error wraps [ErrForbidden]
	// and 401 otherwise, with the error's text as the body, and never
	// upgrades. Default: every request is accepted anonymously.
	Authorize func(r *http.Request) (Identity, error)

	// AuthorizeTopic, if set, decides whether a connection may subscribe to
	// a topic, both from the upgrade URL (a refusal answers 403) and from a
	// run-time notify.subscribe message (a refusal sends a notify.error
	// message and leaves the connection open). Default: any valid topic name
	// may be joined, so give topics unguessable names or set this hook when
	// topics scope data per tenant or user.
	AuthorizeTopic func(ctx context.Context, id Identity, topic string) error

	// OnConnect, if set, is called once a connection is registered: from
	// then on every broadcast reaches it, so the hook may send it a targeted
	// welcome ([SocketMessage.ClientID]). Delivery may already have begun when
	// it runs. It runs on the connection's own goroutine, before the first
	// inbound frame is read; a slow hook delays only that connection.
	OnConnect func(c *Client)

	// OnDisconnect, if set, is called once after a connection is
	// unregistered and all its goroutines have ended. err is nil for a normal
	// close by either side and says why otherwise (see [Registry.Add]).
	OnDisconnect func(c *Client, err error)

	// OnMessage, if set, receives every inbound text frame that is not a
	// reserved notify.* message, on the connection's read goroutine: the
	// next frame is not read until it returns. data is valid only during
	// the call. Default: inbound application frames are discarded.
	OnMessage func(ctx context.Context, c *Client, data []byte)

	// Logger receives the Registry's events. Refused upgrades, slow
	// consumers and heartbeat timeouts are logged at Warn level at most once
	// a minute per kind (with a count of the rest), and at Debug level
	// otherwise; a panicking hook and broker failures at Error level. Query
	// strings are never logged, since they may carry tokens. Default:
	// slog.Default(), so that a developer sees why a page cannot connect
	// (often a foreign Origin: see OriginPatterns); pass
	// slog.New(slog.DiscardHandler) to log nothing.
	Logger *slog.Logger

	// Broker carries messages between Broadcast and the connections, assigns
	// sequence numbers and keeps the history used for resume. Default: a
	// [MemoryBroker] with default [MemoryBrokerOptions], private to the
	// Registry (a MemoryBroker holds no goroutine or connection, so there is
	// nothing to close). The Registry never closes a Broker: one passed here
	// is the caller's to close, after the Registry (see redisbroker).
	Broker Broker

	// ReadLimit is the largest inbound message, in bytes. A larger one closes
	// the connection with 1009 (message too big). Default 32 KiB.
	ReadLimit int64

	// QueueLength is how many frames may wait for one connection: messages,
	// and the library's own replies to it. Default 256: a burst of up to
	// that many broadcasts (within QueueBytes) fits in the queue even if
	// nothing of it is written until the burst ends.
	QueueLength int

	// QueueBytes bounds the bytes waiting for one connection. Default 1 MiB.
	// A connection that exceeds QueueLength or QueueBytes is closed with
	// [CloseSlowConsumer]; it can reconnect and resume from its last seq.
	// It leaves the Registry at once, but the frame being written and the
	// close frame still go out, within WriteTimeout. A resuming
	// connection's replay is streamed within the same bounds.
	QueueBytes int

	// WriteTimeout bounds one write to a connection. A connection whose
	// write takes longer is closed. Default 10s.
	WriteTimeout time.Duration

	// PingInterval is how often an idle connection is pinged. A peer that
	// has not answered a ping within another PingInterval is closed, so a
	// dead peer is removed within about two intervals. Default 30s. A
	// Server-Sent Events stream gets a ": ping" comment instead when
	// nothing else was written for an interval; it has no pong, so a dead
	// peer is found by a write that fails or takes WriteTimeout.
	PingInterval time.Duration

	// MaxConnections bounds the live connections of this Registry; the
	// handler answers 503 beyond it. Default 0: no limit.
	MaxConnections int

	// MaxConnectionsPerUser bounds the live connections of one
	// authenticated user, or of one remote IP address for anonymous
	// connections; the handler answers 429 beyond it. Default 0: no limit.
	MaxConnectionsPerUser int

	// MaxTopics bounds the topics one connection may subscribe to. Default 64.
	MaxTopics int

	// InboundRate and InboundBurst bound how many frames per second a
	// client may send (a token bucket). A client that exceeds them is
	// closed with 1008 (policy violation). Defaults: 20 per second, burst 40.
	InboundRate  float64
	InboundBurst int

	// ReconnectRate is how many connections per second the clients of a
	// Registry that shuts down should come back at, so that a restart
	// under many clients is not a stampede of upgrades and resumes. Close
	// and Shutdown draw each connection a wait at random over a window of
	// Len()/ReconnectRate seconds and send it with the 1001 close: in the
	// reason ("notify: server shutting down, reconnect in 1234ms") over
	// WebSocket, and as "wait" (milliseconds) in notify.close's data, with
	// a retry: field of the same delay, over Server-Sent Events. notify.js
	// waits that long; a client that ignores it reconnects when it likes.
	// Default 1000 per second: 10,000 clients come back over 10 seconds.
	// Under one second's worth the window stays a second, so a few clients
	// still do not return all in the same millisecond.
	ReconnectRate float64
}

// Identity is what [Options.Authorize] attaches to a connection.
type Identity struct {
	// User identifies the authenticated user; empty means anonymous.
	// Messages can be targeted at every connection of one user (see
	// [SocketMessage]).
	User string

	// Expires, if not zero, is when the authorisation ends: the connection
	// is closed with 1008 (policy violation) at the first heartbeat tick
	// after it, at most a quarter of the smaller of PingInterval and
	// WriteTimeout late (2.5 s with the defaults), and the client must
	// reconnect, which runs Authorize again. The handler refuses with 401
	// an identity that has already expired.
	Expires time.Time
}

const (
	defaultReadLimit    = 32 << 10
	defaultQueueLength  = 256
	defaultQueueBytes   = 1 << 20
	defaultWriteTimeout = 10 * time.Second
	defaultPingInterval = 30 * time.Second
	defaultMaxTopics    = 64
	defaultInboundRate  = 20
	defaultInboundBurst = 40
	defaultReconnect    = 1000
)

// withDefaults returns a copy of opts with every zero field set to its default.
func (opts *Options) withDefaults() Options {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.OriginPatterns = append([]string(nil), o.OriginPatterns...)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = defaultReadLimit
	}
	if o.QueueLength <= 0 {
		o.QueueLength = defaultQueueLength
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = defaultQueueBytes
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = defaultWriteTimeout
	}
	if o.PingInterval <= 0 {
		o.PingInterval = defaultPingInterval
	}
	if o.MaxTopics <= 0 {
		o.MaxTopics = defaultMaxTopics
	}
	if o.InboundRate <= 0 {
		o.InboundRate = defaultInboundRate
	}
	if o.InboundBurst <= 0 {
		o.InboundBurst = defaultInboundBurst
	}
	if !(o.ReconnectRate > 0) { // NaN too
		o.ReconnectRate = defaultReconnect
	}
	return o
}

// errHookPanic is wrapped by the error a connection ends with when one of
// the hooks in Options panicked: the handler answers 500, a live connection
// is closed with 1011 (internal error), and nothing else is affected.
var errHookPanic = errors.New("notify: hook panicked")

// contain runs a user hook and turns a panic in it into an error wrapping
// errHookPanic, logged with its stack. Hooks run on goroutines of the
// Registry's, where an unrecovered panic would end the process.
// attrs say whose call it was, for the log.
func (r *Registry) contain(hook string, f func(), attrs ...any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			attrs = append(attrs, "hook", hook, "panic", p, "stack", string(debug.Stack()))
			r.opts.Logger.Error("notify: hook panicked", attrs...)
			err = fmt.Errorf("%w: %s: %v", errHookPanic, hook, p)
		}
	}()
	f()
	return nil
}

// ConnOptions describes one connection to [Registry.Add]. The handler
// builds it from the upgrade request ([ParseQuery] and [Options.Authorize]);
// callers that accept connections themselves build their own.
type ConnOptions struct {
	// Identity is attached to the connection; see [Identity].
	Identity Identity

	// Topics the connection subscribes to from the start; each must satisfy
	// [ValidTopic], and there may be at most [Options.MaxTopics].
	Topics []string

	// Resume, if not nil, makes the connection resumable from that
	// [Position]: it first receives a notify.hello with the stream's
	// position, then every retained message with a seq above Resume.Seq
	// that matches it, then live messages, with no gap and no duplicate.
	// An empty Resume.Epoch stands for the stream's current epoch. If
	// Resume.Epoch is not the stream's, or Resume.Seq is not retained any
	// more, or is ahead of the stream, a notify.gap follows the hello
	// instead of the replay. A seq that this node has not fanned out yet
	// but the broker's stream holds (it trails a shared stream) is waited
	// for, at most 5 seconds, rather than called ahead. A page resumes
	// from the Position its REST response carried ([Position.SetHeader]).
	Resume *Position

	// ResumeNow makes the connection resumable from wherever the stream
	// stands when it registers (since=now in the query): the notify.hello
	// tells the client that position, and live messages follow, with no
	// replay. Setting both Resume and ResumeNow is an error: [Registry.Add]
	// refuses the connection. With neither, the connection is not
	// resumable: no notify.hello, no notify.gap, live messages only, as a
	// plain WebSocket client expects.
	ResumeNow bool

	// RemoteAddr is reported by [Client.RemoteAddr] and keys
	// [Options.MaxConnectionsPerUser] for anonymous connections.
	RemoteAddr string

	// KeepAlive, if not zero, asks for a [TypeKeepAlive] message at this
	// interval, whatever else is sent. The Registry raises it to at least
	// a second and at least its heartbeat's tick (see
	// [Options.PingInterval]), and tells a resuming client the interval
	// it will keep in notify.hello ("keepalive", in milliseconds). A keep-
	// alive is sent at most one tick late, so a client that has received
	// nothing for twice the interval may take the connection for dead.
	KeepAlive time.Duration
}

var errResumeBoth = errors.New("notify: ConnOptions sets both Resume and ResumeNow")

// resumable reports whether the connection gets a hello and hears of gaps.
func (o *ConnOptions) resumable() bool { return o.Resume != nil || o.ResumeNow }
