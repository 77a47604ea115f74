package notify

// Every exported error and close code of the package, in one place.

import (
	"errors"

	"github.com/coder/websocket"
)

// Close codes the library sends, beyond the standard ones of RFC 6455
// (1001 going away on shutdown, 1003 unsupported data for binary frames,
// 1007 invalid UTF-8, 1008 policy violation, 1009 message too big).
const (
	// CloseSlowConsumer closes a connection whose queue overflowed
	// ([Options.QueueLength], [Options.QueueBytes]) or whose write timed out.
	// The client should reconnect at once and resume from its last seq.
	CloseSlowConsumer websocket.StatusCode = 4000

	// CloseHeartbeatTimeout closes a connection that did not answer a ping
	// within [Options.PingInterval].
	CloseHeartbeatTimeout websocket.StatusCode = 4001
)

// The errors a caller can test for with errors.Is. Every error the library
// returns begins "notify: "; the rest (a policy violation, a bad query) are
// not sentinels: their HTTP status or close code is the part to rely on.
// [ErrHistoryGap], below, is part of the [Broker] contract.
var (
	// ErrClosed is returned by calls on a Registry after Close or Shutdown.
	ErrClosed = errors.New("notify: registry closed")

	// ErrForbidden, wrapped by an error from [Options.Authorize] or
	// [Options.AuthorizeTopic], makes the handler answer 403 instead of 401.
	ErrForbidden = errors.New("notify: forbidden")

	// ErrSlowConsumer and ErrHeartbeatTimeout are wrapped by the error
	// [Registry.Add] returns, and [Options.OnDisconnect] receives, for a
	// connection closed with [CloseSlowConsumer] or [CloseHeartbeatTimeout]:
	// each close code the library defines has its sentinel, for a metric
	// or a log line keyed by errors.Is. (The error also wraps a
	// websocket.CloseError with the code, for every code the library sends.)
	ErrSlowConsumer     = errors.New("notify: slow consumer")
	ErrHeartbeatTimeout = errors.New("notify: heartbeat timeout")

	// ErrInvalidMessage is returned by Broadcast for a message that cannot be
	// sent: an empty or reserved type, an invalid topic, or data that
	// encoding/json cannot encode; and by NotifyText for text that is not
	// valid UTF-8 or could pass for a library or numbered message.
	ErrInvalidMessage = errors.New("notify: invalid message")
)

// ErrHistoryGap is wrapped by [Broker.History] when part of the requested
// range is no longer retained.
var ErrHistoryGap = errors.New("notify: history no longer retained")
