package notify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// SocketMessage is one notification. [Registry.Broadcast] sends it to every
// matching connection as a JSON text frame:
//
//	{"seq":42,"type":"customer.created","topic":"customers","data":{…},"time":"2026-11-25T13:00:00Z"}
//
// A message with an empty Topic goes to every connection; one with a Topic
// goes only to that topic's subscribers. User and ClientID narrow delivery
// further and never appear on the wire.
type SocketMessage struct {
	// Seq is assigned by the Registry's [Broker] when the message is
	// broadcast: it increases with every broadcast and identifies the
	// message for resume. A value set by the caller is ignored; the field
	// is there for the receiving side, so that a Go client can decode the
	// envelope it reads into a SocketMessage.
	Seq uint64 `json:"seq"`

	// Type names the event, e.g. "customer.created". Required. Types that
	// begin with "notify." are reserved for the library.
	Type string `json:"type"`

	// Topic, if set, restricts delivery to the topic's subscribers. See
	// [ValidTopic] for the allowed names.
	Topic string `json:"topic,omitempty"`

	// Data is the payload, encoded with encoding/json once per broadcast.
	Data any `json:"data,omitempty"`

	// Time is when the change happened. Broadcast sets it to the current
	// time when it is zero.
	Time time.Time `json:"time"`

	// User, if set, restricts delivery to the connections of that
	// authenticated user (see [Identity]). Such messages are kept in history
	// and replayed to the same user's resuming connections.
	User string `json:"-"`

	// ClientID, if set, restricts delivery to the one connection with that
	// [ClientID.ID]. Such messages are not replayed on resume, since a
	// reconnecting client gets a new ID.
	ClientID string `json:"-"`
}

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

const maxTopicLen = 128

// ValidTopic reports whether name can be used as a topic: 1 to 128 bytes of
// ASCII letters, digits and the punctuation - _ . : / @.
func ValidTopic(name string) bool {
	if name == "" || len(name) > maxTopicLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-_.:/@", c) >= 0:
		default:
			return false
		}
	}
	return true
}

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

// checkText enforces the rule of [Registry.NotifyText]: text must be valid
// UTF-8, and must not be taken by a client for a library message or a
// numbered one. A client that runs JSON.parse on a frame (notify.js does)
// trusts an object with a "seq" member, or with a "type" beginning with
// "notify.", as coming from the library: a forged notify.gap makes it
// reload, a forged seq makes it drop every real message below it.
//
// So text whose first non-whitespace byte is '{' must be a JSON object
// encoding/json can decode (nothing it cannot check can pass, e.g. nesting
// deeper than its limit, which JSON.parse may accept), with no "seq" key
// and no "type" string beginning with "notify.". Keys are compared after
// unescaping and exactly, as JavaScript does ("Seq" is another key); of
// duplicate keys every occurrence counts. Any other text, arrays included,
// is not an object to JSON.parse and passes.
func checkText(text []byte) error {
	if !utf8.Valid(text) {
		return fmt.Errorf("%w: text is not valid UTF-8", ErrInvalidMessage)
	}
	if t := bytes.TrimLeft(text, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil // JSON.parse gives no object: a string, number, array or error
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	if err := spoofCheck(dec); err != nil {
		return fmt.Errorf("%w: text %w", ErrInvalidMessage, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: text begins with a JSON object but does not end with it", ErrInvalidMessage)
	}
	return nil
}

// spoofCheck reads one JSON object from dec, key by key, so that every
// occurrence of a duplicate key is seen.
func spoofCheck(dec *json.Decoder) error {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("begins with '{' but is not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errors.New("is not a valid JSON object")
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return errors.New("is not a valid JSON object")
		}
		switch key {
		case "seq":
			return errors.New(`has a "seq" member, as numbered messages do`)
		case "type":
			var typ string
			if json.Unmarshal(v, &typ) == nil && strings.HasPrefix(typ, reservedPrefix) {
				return fmt.Errorf("has type %q, reserved for the library", typ)
			}
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return errors.New("is not a valid JSON object")
	}
	return nil
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
