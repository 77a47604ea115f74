package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Broadcast sends msg as JSON to every matching connection: all of them
// when msg.Topic is empty, else the topic's subscribers, narrowed further
// by msg.User and msg.ClientID. The message is encoded once, given the next
// seq by the broker and kept in its history for resuming clients.
//
// Broadcast returns once the message is published: it has its seq, it is
// retained in history (a client that resumes after Broadcast returned is
// guaranteed to get it), and it will reach every matching connection, in
// seq order. The fan-out to this Registry's connections runs off the
// caller's goroutine, so the call costs microseconds whatever the number of
// connections; it never waits on a client's network. A publisher faster
// than the fan-out is slowed down (Broadcast waits for room in a bounded
// backlog) rather than losing or reordering messages; [Registry.Shutdown]
// still delivers every message whose Broadcast returned before it was
// called. Broadcast returns [ErrInvalidMessage] for a message it cannot
// send, [ErrClosed] after Close or Shutdown, and the broker's error if
// publishing failed (then no client received the message).
func (r *Registry) Broadcast(ctx context.Context, msg SocketMessage) error {
	m, err := NewBrokerMessage(msg)
	if err != nil {
		return err
	}
	return r.publish(ctx, m)
}

// NewBrokerMessage encodes msg as [Registry.Broadcast] does, into the [BrokerMessage]
// a [Broker] carries: Time is set to the current time (UTC) when zero, the
// body is encoded once, and Topic, User and ClientID are copied. A broker
// that publishes without a Registry, for example inside the caller's
// database transaction, uses it so that clients receive exactly the frames
// Broadcast would send. It returns an error wrapping [ErrInvalidMessage]
// for a message Broadcast would refuse.
func NewBrokerMessage(msg SocketMessage) (BrokerMessage, error) {
	if msg.Time.IsZero() {
		msg.Time = time.Now().UTC()
	}
	body, err := encodeBody(&msg)
	if err != nil {
		return BrokerMessage{}, err
	}
	return BrokerMessage{Topic: msg.Topic, User: msg.User, ClientID: msg.ClientID, Body: body}, nil
}

// NotifyText sends text unchanged, as one text frame, to every connection.
// It keeps parity with plain WebSocket servers whose clients log
// event.data; such messages carry no seq, are not kept in history and so
// are not replayed to resuming clients. Use [Registry.Broadcast] for
// anything a client must not miss. Errors are as for Broadcast.
//
// Raw text must never pass for a message of the library or for a numbered
// one, which clients such as notify.js trust: a forged notify.gap would
// make them reload, a forged seq would make them drop the real messages
// below it. So NotifyText returns an error wrapping [ErrInvalidMessage],
// and sends nothing, for text that is not valid UTF-8 or that begins (after
// JSON whitespace) with '{' and
//   - is not a JSON object that encoding/json can decode (for example one
//     nested deeper than its limit), or
//   - has a "seq" member, whatever its value, or
//   - has a "type" that is a string beginning with "notify.", however it
//     is escaped.
//
// Keys are matched exactly, as JavaScript matches them: {"Seq":1} and
// {"type":"customer.created"} pass, and so do plain text, arrays and other
// JSON values. A client receives what passes exactly as given.
func (r *Registry) NotifyText(ctx context.Context, text string) error {
	body := []byte(text)
	if err := checkText(body); err != nil {
		return err
	}
	return r.publish(ctx, BrokerMessage{Raw: true, Body: body})
}

func (r *Registry) publish(ctx context.Context, m BrokerMessage) error {
	if r.isClosed() {
		return ErrClosed
	}
	if _, err := r.broker.Publish(ctx, m); err != nil {
		return fmt.Errorf("notify: publish: %w", err)
	}
	r.stats.broadcasts.Add(1)
	return nil
}

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
