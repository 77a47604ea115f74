package notify

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a Registry's counters, for export as metrics. All
// counters except Connections, SSEConnections, BrokerConnected and BrokerLag
// only grow. Each is something an operator can act on: connections and
// their transports for capacity, refusals, slow consumers and heartbeat
// timeouts for client or network trouble, broker health for readiness.
// How frames are batched into write calls is the library's business and is
// not reported (the benchmarks measure it).
type Stats struct {
	Connections       int    // live connections, of both transports
	SSEConnections    int    // of Connections, those served over Server-Sent Events
	Broadcasts        uint64 // messages accepted by Broadcast and NotifyText on this Registry
	Queued            uint64 // frames queued for connections (one per matching connection)
	Sent              uint64 // frames handed to connections' sockets
	Dropped           uint64 // queued frames discarded because their connection closed first
	SlowConsumers     uint64 // connections closed with CloseSlowConsumer
	HeartbeatTimeouts uint64 // connections closed with CloseHeartbeatTimeout
	ReadErrors        uint64 // connections that ended with a protocol or read error
	Rejected          uint64 // requests refused before the upgrade or the stream began

	// Broker health, from the Registry's look at the broker's head once a
	// second (see [Broker]): whether the broker answered, and how many
	// messages of the stream this Registry had not yet fanned out to its
	// connections then. A readiness probe can answer 503 while
	// !BrokerConnected or BrokerLag stays above what it tolerates, so that
	// a load balancer sends clients to nodes that can serve them.
	BrokerConnected bool
	BrokerLag       uint64
}

type counters struct {
	broadcasts, queued, sent, dropped   atomic.Uint64
	writes                              atomic.Uint64 // write calls; not in Stats, read by tests (export_test.go)
	slow, heartbeat, readErrs, rejected atomic.Uint64
}

// Stats returns the current counters. It is safe to call at any time.
func (r *Registry) Stats() Stats {
	r.mu.RLock()
	conns, streams := len(r.clients), r.streams
	r.mu.RUnlock()
	return Stats{
		Connections:       conns,
		SSEConnections:    streams,
		Broadcasts:        r.stats.broadcasts.Load(),
		Queued:            r.stats.queued.Load(),
		Sent:              r.stats.sent.Load(),
		Dropped:           r.stats.dropped.Load(),
		SlowConsumers:     r.stats.slow.Load(),
		HeartbeatTimeouts: r.stats.heartbeat.Load(),
		ReadErrors:        r.stats.readErrs.Load(),
		Rejected:          r.stats.rejected.Load(),
		BrokerConnected:   r.health.connected.Load(),
		BrokerLag:         r.health.lag.Load(),
	}
}

// warnThrottled logs msg at Warn level at most once a minute per key (an
// HTTP status or a close code), with the count of those not logged since,
// and at Debug level otherwise: events that a developer should notice, such
// as refused upgrades and slow consumers, without one line per connection
// in a production log.
func (r *Registry) warnThrottled(key int, msg string, attrs ...any) {
	suppressed, ok := r.throttle.allow(key, time.Now())
	if !ok {
		r.opts.Logger.Debug(msg, attrs...)
		return
	}
	if suppressed > 0 {
		attrs = append(attrs, "not_logged_in_last_minute", suppressed)
	}
	r.opts.Logger.Warn(msg, attrs...)
}

// logThrottle lets one event per key through per minute and counts the rest.
type logThrottle struct {
	mu   sync.Mutex
	keys map[int]*throttled
}

type throttled struct {
	last       time.Time
	suppressed int
}

// allow reports whether to log an event of key at now, and how many events
// of key were not logged since the last one that was.
func (t *logThrottle) allow(key int, now time.Time) (suppressed int, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.keys == nil {
		t.keys = map[int]*throttled{}
	}
	k := t.keys[key]
	if k == nil {
		k = &throttled{}
		t.keys[key] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < time.Minute {
		k.suppressed++
		return 0, false
	}
	suppressed, k.suppressed, k.last = k.suppressed, 0, now
	return suppressed, true
}
