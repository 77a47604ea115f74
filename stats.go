package notify

import "sync/atomic"

// Stats is a snapshot of a Registry's counters, for export as metrics. All
// counters except Connections only grow.
type Stats struct {
	Connections       int    // live connections
	Broadcasts        uint64 // messages accepted by Broadcast and NotifyText on this Registry
	Queued            uint64 // frames queued for connections (one per matching connection)
	Sent              uint64 // frames written to connections (or to their coalescing buffer, sent with the next write call)
	Writes            uint64 // write calls that carried those frames: fewer than Sent when a backlog was coalesced
	Dropped           uint64 // queued frames discarded because their connection closed first
	SlowConsumers     uint64 // connections closed with CloseSlowConsumer
	HeartbeatTimeouts uint64 // connections closed with CloseHeartbeatTimeout
	ReadErrors        uint64 // connections that ended with a protocol or read error
	Rejected          uint64 // upgrade requests refused before the upgrade
}

type counters struct {
	broadcasts, queued, sent, dropped   atomic.Uint64
	writes                              atomic.Uint64
	slow, heartbeat, readErrs, rejected atomic.Uint64
}

// Stats returns the current counters. It is safe to call at any time.
func (r *Registry) Stats() Stats {
	return Stats{
		Connections:       r.Len(),
		Broadcasts:        r.stats.broadcasts.Load(),
		Queued:            r.stats.queued.Load(),
		Sent:              r.stats.sent.Load(),
		Writes:            r.stats.writes.Load(),
		Dropped:           r.stats.dropped.Load(),
		SlowConsumers:     r.stats.slow.Load(),
		HeartbeatTimeouts: r.stats.heartbeat.Load(),
		ReadErrors:        r.stats.readErrs.Load(),
		Rejected:          r.stats.rejected.Load(),
	}
}
