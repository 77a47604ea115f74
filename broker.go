package notify

import (
	"context"
)

// Broker carries messages from Broadcast to every Registry that shares it,
// assigns their sequence numbers and keeps the history that resuming
// clients replay. [MemoryBroker] serves one process; the nested module
// github.com/wsnotify/notify/redisbroker serves many nodes.
//
// A Broker must keep this contract, which the Registry relies on for exact
// resume:
//
//   - Publish gives each non-raw message the next sequence number of one
//     global order (1, 2, 3, … within an epoch) and retains it for History.
//     Raw messages (NotifyText) get seq 0, are delivered but never retained.
//   - Every subscriber receives every message published after it subscribed,
//     exactly once and in seq order, on one goroutine at a time. Delivery
//     must not block on clients; the Registry's deliver function never does.
//     A broker that cannot deliver some messages (it fell behind its own
//     retention) skips them: the Registry sees the seq jump and sends
//     resumable connections a notify.gap (reason "expired").
//   - History(after, upto) returns the retained messages with
//     after < seq <= upto in order. If some of them are no longer retained it
//     returns the ones that are together with an error wrapping
//     [ErrHistoryGap].
//   - The epoch changes whenever history is lost (a restarted in-memory
//     broker, a flushed Redis), so that sequence numbers from another epoch
//     are never mistaken for this one's. Delivered messages, and those
//     History returns, carry the epoch they were published in; when a
//     regular message brings a new one, the Registry tells its resumable
//     connections with a notify.gap (reason "epoch").
//   - The Registry does not trust what it is handed. A message no client may
//     receive (a regular Body that is not a JSON object, raw text that
//     NotifyText would refuse) is logged and skipped, delivered or replayed;
//     its seq still counts as delivered, so it causes no notify.gap. A broker
//     that finds a retained entry it cannot decode, but whose seq and epoch
//     it knows, may deliver it with an empty Body to keep the order unbroken.
//   - Head reports where the stream stands now: its epoch and the seq of the
//     last message Publish gave a seq to (on any node), whether or not this
//     process's subscribers have been handed it yet. A subscriber may trail
//     the head (a broker shared by many nodes delivers a round trip or more
//     after Publish returns); a client that resumes from a seq between the
//     two is waiting for messages that exist, not ahead of the stream. The
//     Registry asks Head before answering such a client with notify.gap
//     (reason "ahead"), and once a second for [Stats] (BrokerConnected,
//     BrokerLag), so it should cost about one round trip and must not
//     create, trim or otherwise change the stream.
//
// Methods may be called concurrently. ExampleBroker is a minimal Broker that
// keeps this contract, a starting point for one of your own.
type Broker interface {
	// Publish appends m to the stream (m.Seq is ignored) and returns the seq
	// it was given.
	Publish(ctx context.Context, m BrokerMessage) (seq uint64, err error)

	// Subscribe starts delivering messages to deliver and returns the
	// position just before the first message it will deliver. cancel stops
	// delivery; deliver is not called after cancel returns.
	Subscribe(ctx context.Context, deliver func(BrokerMessage)) (pos Position, cancel func(), err error)

	// History returns retained messages with after < seq <= upto.
	History(ctx context.Context, after, upto uint64) ([]BrokerMessage, error)

	// Head returns the stream's epoch and the seq of the last message
	// published to it. An error means the broker could not tell (its
	// store is unreachable).
	Head(ctx context.Context) (Position, error)
}

// BrokerMessage is a notification as a [Broker] carries it: the encoded body
// plus what the Registry needs to route it. Applications send a
// [SocketMessage] with [Registry.Broadcast] and never build a BrokerMessage;
// only code that implements a Broker, or publishes to one without a Registry
// (see [NewBrokerMessage]), handles it.
type BrokerMessage struct {
	Seq      uint64 // assigned by Publish; 0 for raw messages
	Epoch    string // set by the broker on delivery and in History
	Topic    string // empty: every connection
	User     string // if set, only this user's connections
	ClientID string // if set, only the connection with this ID
	Raw      bool   // Body is sent as is (NotifyText), not retained
	Body     []byte // JSON object without seq, or raw text; never modified after Publish
}

// Position names a point in a broker's stream: the epoch and the last seq.
// Clients resume from a Position with ?since=Seq&epoch=Epoch.
type Position struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}
