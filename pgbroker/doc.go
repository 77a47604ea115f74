// Package pgbroker runs a [notify.Registry] on PostgreSQL: a [Broker]
// whose notifications can be written in the same transaction as the change
// they announce, so that pages see exactly the committed changes, in one
// global order shared by every node, with nothing lost if the process dies
// right after the commit.
//
// # Switching from the in-memory broker
//
//	b, err := pgbroker.New(ctx, &pgbroker.Options{Pool: pool}) // your *pgxpool.Pool, or ConnString
//	if err != nil { … }                                        // PostgreSQL unreachable
//	reg := notify.New(&notify.Options{Broker: b})              // the rest is unchanged
//
// and, where a change is saved, in its transaction:
//
//	err := b.BroadcastTx(ctx, tx, notify.SocketMessage{Type: "customer.created", Data: c})
//
// Registry.Broadcast keeps working (each call its own short transaction).
// Close the Registry first, then the Broker.
//
// # Design
//
// Messages are rows of one table, Table_log, and LISTEN/NOTIFY serves
// only to wake the nodes up: a node that misses a NOTIFY (its connection
// dropped, it was restarted) loses nothing, since it reads the table from
// where it stopped.
//
// The hard part is one gap-free sequence. A BIGSERIAL column taken at
// insert time is not one: transactions commit in another order than they
// took their numbers, so a reader that has seen 7 may later find 6, or
// skip it for good. Three designs can fix that; this package uses the
// second:
//
//   - A counter row locked until commit gives each message the next number
//     inside the writer's transaction. Simple, but every writing
//     transaction then holds one global lock from its publish to its
//     commit: one long transaction stops every other publisher.
//   - A relay numbers rows after they commit (chosen). BroadcastTx only
//     inserts an unnumbered row and NOTIFYs; writers never wait for each
//     other. The relay, run by every node when woken and by Publish, takes
//     a transaction-scoped advisory lock, numbers every committed
//     unnumbered row (pos, and seq for non-raw rows) after the last number
//     given, in insertion order, and commits. Relays run one at a time and
//     each statement sees what the previous relay committed, so numbers are
//     gap-free and become visible in order: a node that sees pos N has seen
//     every pos below. A long transaction delays only its own message,
//     which gets the next number when it commits.
//   - A snapshot horizon (reading only rows below pg_snapshot_xmin of
//     pg_current_snapshot) avoids the second write, but every node must
//     derive the same numbers from it, and one long transaction holds back
//     every message committed after it began.
//
// The order is thus the order in which the relay sees commits; rows it
// sees committed together keep their insertion order. A transaction that
// changes a row another one is changing waits for the other's commit, so
// if each writes its notification after its change, the notifications are
// ordered as the changes were.
//
// Raw messages (NotifyText) are rows too, with a pos but no seq: they keep
// their place in the one order and History skips them.
//
// The epoch lives in Table_meta with the last pos and seq. When the stream
// is reset — Table_meta is missing (tables dropped and recreated, or both
// truncated), or Table_log lost its newest numbered row, which trimming
// never deletes (the log truncated) — the next relay starts a new epoch
// from seq 1, nodes follow it, and the Registry sends notify.gap (reason
// "epoch") to resumable connections.
//
// History is bounded by [Options.HistoryLength] and [Options.HistoryAge]:
// each delivery goroutine deletes older rows at most once a second, in a
// statement of its own that takes no lock publishers or the relay wait for.
// Age is also applied when history is read.
//
// # Guarantees
//
// A message written with BroadcastTx is delivered to every node if and
// only if its transaction commits, exactly once and in seq order, also if
// the writing process dies right after the commit: any node's next relay
// numbers it (a node started later has it in history). While PostgreSQL is
// up, every node delivers every message exactly once, in seq order. A node
// whose connection drops, or whose server restarts, reconnects with
// backoff and delivers what was committed meanwhile; if it missed more than
// the log retains, the seq skips ahead and the Registry sends resumable
// connections a notify.gap (reason "expired") first. While PostgreSQL is
// unreachable, Publish returns an error, so Broadcast does too, and so
// does the caller's own transaction.
//
// PostgreSQL 12 or later is needed; it is tested with 15.
package pgbroker
