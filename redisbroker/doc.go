// Package redisbroker runs a [notify.Registry] on many nodes: a [Broker]
// backed by one Redis stream gives every node the same messages in the same
// order, with sequence numbers shared by all nodes and a bounded history,
// so a client can resume on any node.
//
// # Switching from the in-memory broker
//
//	b, err := redisbroker.New(ctx, &redisbroker.Options{Addr: "redis:6379"})
//	if err != nil { … }                                // Redis unreachable
//	reg := notify.New(&notify.Options{Broker: b})      // the rest is unchanged
//
// Close the Registry first, then the Broker.
//
// # Design
//
// Every message is one entry of a Redis stream ({notify}:log), appended by a
// Lua script that also assigns its seq: entry IDs are "<seq>-0", so stream
// order is seq order, one order for every node. The script trims the stream
// with XADD MAXLEN ~ [Options.HistoryLength]. Concurrent Publish calls on
// one Broker share script calls: what queues while batches are in flight
// goes out as one call that appends the batch in order and returns each
// seq. Each Subscribe runs one
// goroutine that follows the stream with blocking XREADs on its own
// connection and hands entries to the Registry; [Broker.History] is one
// XRANGE. Topic, User and ClientID travel in the entry, and every node applies
// them to its own connections. Nodes keep no state in Redis: a node that
// dies leaves nothing behind, and a new one starts at the stream's head.
//
// Raw messages (NotifyText) are entries too, with ID "<seq>-<n>" (n ≥ 1)
// after the last seq: they reach every node in their place in the one
// order, and survive a node's reconnection like the others, but use no
// seq and History skips them. (Redis Pub/Sub was the alternative: it would
// not count against history, but it is a second path with no order relative
// to the stream and no catch-up after a dropped connection.)
//
// The stream's epoch lives in {notify}:meta with the seq counter. When Redis
// has lost them (restarted without persistence, flushed, failed over to a
// replica that missed writes), the next script to run starts a new epoch and
// an empty stream; nodes follow it, and the Registry sends notify.gap to
// resumable connections.
//
// # Guarantees
//
// While Redis is up, every node delivers every message exactly once, in seq
// order, and a client can resume on any node, even one that has not yet
// delivered the seq it resumes from: the Registry reads the stream's head
// ([Broker.Head]) and waits for the node to catch up. A node whose own
// connection drops reconnects with backoff and
// delivers what it missed from the stream; if it missed more than the
// stream retains, the seq skips ahead and the Registry sends resumable
// connections a notify.gap (reason "expired") first. When Redis itself
// loses data, messages not yet delivered are lost with it, and resumable
// clients are told with a notify.gap (reason "epoch"); nothing is lost
// silently. While Redis is unreachable, Publish
// returns an error, so Broadcast does too.
//
// Redis 5.0 or later is needed (Streams, XADD MAXLEN ~, blocking XREAD,
// EVALSHA); it is tested with 7.0. Keep the history bounded with the
// options, not with Redis eviction: an evicted key starts a new epoch.
package redisbroker
