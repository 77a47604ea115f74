package notify

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Reserved message types, exchanged between the library and its clients.
// One more, [TypeClose], ends a Server-Sent Events stream and is documented
// with the stream.
const (
	// TypeHello is the first message a resuming client receives:
	// {"type":"notify.hello","data":{"epoch":"…","seq":N}}.
	TypeHello = "notify.hello"

	// TypeGap tells a resuming client that messages it asked for are no
	// longer retained (reason "expired"), belong to another history (reason
	// "epoch") or were never published (reason "ahead": a seq beyond the
	// stream's head, e.g. from before a server restart, or one this node
	// could not catch up with in time; see [Broker]). The client should
	// reload its state; live messages follow.
	TypeGap = "notify.gap"

	// TypeSubscribe and TypeUnsubscribe are sent by clients to change their
	// subscriptions: {"type":"notify.subscribe","topic":"orders"}.
	TypeSubscribe   = "notify.subscribe"
	TypeUnsubscribe = "notify.unsubscribe"

	// TypeError answers a client request that was refused but does not
	// warrant closing the connection, e.g. a subscription the
	// [Options.AuthorizeTopic] hook denied.
	TypeError = "notify.error"

	// TypeKeepAlive is the keep-alive a client that asks for one
	// (keepalive=MS in the query, see [ParseQuery]) receives at its
	// interval, on both transports: {"type":"notify.keepalive"}. Unlike a
	// WebSocket ping or a Server-Sent Events comment, a script sees it, so
	// a page can tell a silent dead connection from a quiet one.
	TypeKeepAlive = "notify.keepalive"
)

const reservedPrefix = "notify."

// encodeBody encodes m without its seq, which the broker assigns later:
// the result is the JSON object {"type":…,"topic":…,"data":…,"time":…}.
func encodeBody(m *SocketMessage) ([]byte, error) {
	if m.Type == "" || strings.HasPrefix(m.Type, reservedPrefix) {
		return nil, fmt.Errorf("%w: type %q is empty or reserved", ErrInvalidMessage, m.Type)
	}
	if m.Topic != "" && !ValidTopic(m.Topic) {
		return nil, fmt.Errorf("%w: topic %q", ErrInvalidMessage, m.Topic)
	}
	body, err := json.Marshal(struct {
		Type  string    `json:"type"`
		Topic string    `json:"topic,omitempty"`
		Data  any       `json:"data,omitempty"`
		Time  time.Time `json:"time"`
	}{m.Type, m.Topic, m.Data, m.Time})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	return body, nil
}

// frame returns the WebSocket frame of a broker message (see wireFrame):
// raw text as given, or the body with its seq spliced in front,
// {"seq":N,…}. It is built once per message and node and shared by every
// connection.
//
// Whatever a [Broker] hands over, frame does not panic: it returns an error
// wrapping [ErrInvalidMessage] for a message no client may receive, a body
// that is not a JSON object, or raw text that [Registry.NotifyText] would
// refuse (a broker shared with older nodes may carry such text).
func frame(m *BrokerMessage) ([]byte, error) {
	if m.Raw {
		if err := checkText(m.Body); err != nil {
			return nil, err
		}
		return wireFrame(m.Body), nil
	}
	if n := len(m.Body); n < 2 || m.Body[0] != '{' || m.Body[n-1] != '}' {
		return nil, fmt.Errorf("%w: body is not a JSON object", ErrInvalidMessage)
	}
	b := make([]byte, 0, len(m.Body)+28)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, m.Seq, 10)
	if len(m.Body) > 2 {
		b = append(b, ',')
	}
	return wireFrame(append(b, m.Body[1:]...)), nil
}

// controlFrame encodes a reserved message from the library to one client,
// as a WebSocket frame (see wireFrame).
func controlFrame(typ string, data any) []byte {
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		Data any    `json:"data"`
	}{typ, data})
	if err != nil {
		panic("notify: encoding " + typ + ": " + err.Error()) // only library-made values are encoded here
	}
	return wireFrame(b)
}

// wireFrame returns payload as a complete unmasked text frame, the form in
// which every frame is queued: the header is built once per message, not
// once per connection.
func wireFrame(payload []byte) []byte {
	n := len(payload)
	var b []byte
	switch {
	case n < 126:
		b = append(make([]byte, 0, 2+n), 0x81, byte(n))
	case n < 1<<16:
		b = append(make([]byte, 0, 4+n), 0x81, 126, byte(n>>8), byte(n))
	default:
		b = append(make([]byte, 0, 10+n), 0x81, 127)
		for shift := 56; shift >= 0; shift -= 8 {
			b = append(b, byte(uint64(n)>>shift))
		}
	}
	return append(b, payload...)
}

// framePayload returns the payload of a frame built by wireFrame.
func framePayload(f []byte) []byte {
	switch f[1] {
	case 126:
		return f[4:]
	case 127:
		return f[10:]
	}
	return f[2:]
}

// truncateReason fits a close reason into the 123 bytes a close frame allows.
func truncateReason(s string) string {
	if len(s) > 123 {
		s = strings.ToValidUTF8(s[:120], "") + "..."
	}
	return s
}
