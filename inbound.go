package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

var (
	errBinary      = errors.New("notify: binary frame")
	errInvalidUTF8 = errors.New("notify: text frame is not valid UTF-8")
	errRate        = errors.New("notify: inbound message rate exceeded")
	errReserved    = errors.New("notify: unknown reserved message")
	errExpired     = errors.New("notify: authorisation expired")
	errRefusals    = errors.New("notify: too many refused requests")
)

// A connection may have refusedBurst requests refused, and one more every
// 1/refusedRate seconds; past that it is closed with 1008. Honest clients
// are refused rarely (a topic they may not join); a client that keeps
// asking is probing or broken.
const (
	refusedRate  = 0.1
	refusedBurst = 8
)

// inbound is a client's request. Frames that are JSON objects whose type
// begins with "notify." are reserved; every other text frame is for
// [Options.OnMessage].
type inbound struct {
	Type  string `json:"type"`
	Topic string `json:"topic"`
}

// readLoop reads until the connection fails or closes. Frames that break
// the rules close the connection with a specific code; the loop goes on
// reading until the close handshake ends, so the peer's close is seen.
func (c *Client) readLoop(ctx context.Context) error {
	for {
		typ, data, err := c.conn.Read(ctx)
		if err != nil {
			return err
		}
		c.mu.Lock()
		dead := c.dead
		c.mu.Unlock()
		switch {
		case dead:
		case !c.limit.allow(time.Now()):
			c.fail(websocket.StatusPolicyViolation, "notify: too many messages", errRate)
		case typ != websocket.MessageText:
			c.fail(websocket.StatusUnsupportedData, "notify: binary frames are not supported", errBinary)
		case !utf8.Valid(data):
			c.fail(websocket.StatusInvalidFramePayloadData, "notify: text frame is not valid UTF-8", errInvalidUTF8)
		default:
			c.handle(ctx, data)
		}
	}
}

// onPing decides whether to answer a ping; coder/websocket calls it on the
// read loop's goroutine. Pings count against the inbound rate like any
// frame, so a ping flood closes the connection with 1008. Once the library
// has begun to close the connection, pings are not answered: coder/websocket
// would refuse to write a pong after the close frame and fail the read,
// and the connection would be torn down before the peer has read what was
// flushed to it.
func (c *Client) onPing(context.Context, []byte) bool {
	c.mu.Lock()
	closing := c.closeBegun
	c.mu.Unlock()
	if closing {
		return false
	}
	if !c.limit.allow(time.Now()) {
		c.fail(websocket.StatusPolicyViolation, "notify: too many messages", errRate)
		return false
	}
	return true
}

// handle acts on one valid text frame.
func (c *Client) handle(ctx context.Context, data []byte) {
	var in inbound
	var err error
	// Only frames that could be reserved are decoded: the prefix appears
	// plainly or, spelled with JSON escapes, after a \u.
	if bytes.Contains(data, []byte(`"`+reservedPrefix)) || bytes.Contains(data, []byte(`\u`)) {
		err = json.Unmarshal(data, &in)
	}
	if !strings.HasPrefix(in.Type, reservedPrefix) {
		if c.r.opts.OnMessage != nil {
			c.onMessage(ctx, data)
		}
		return
	}
	if err != nil { // a JSON object of a reserved type with a field of the wrong type
		c.fail(websocket.StatusPolicyViolation, truncateReason("notify: malformed "+in.Type+" message"),
			fmt.Errorf("notify: malformed reserved message: %w", err))
		return
	}
	switch in.Type {
	case TypeSubscribe:
		if err := c.subscribe(ctx, in.Topic); err != nil {
			c.refuse(in.Type, in.Topic, err)
		}
	case TypeUnsubscribe:
		c.unsubscribe(in.Topic)
	default:
		c.fail(websocket.StatusPolicyViolation, truncateReason("notify: unknown reserved type "+in.Type), errReserved)
	}
}

// refuse answers a refused request with a short notify.error, which names
// the topic only when it is a valid name and says why in at most 123 bytes
// (so it is never more than a few hundred bytes, whatever the request). A panicking hook closes the connection with
// 1011 instead, and so does a client that keeps being refused, with 1008.
func (c *Client) refuse(request, topic string, err error) {
	if errors.Is(err, errHookPanic) {
		c.fail(websocket.StatusInternalError, "notify: internal error", err)
		return
	}
	if !c.refused.allow(time.Now()) {
		c.fail(websocket.StatusPolicyViolation, "notify: too many refused requests", errRefusals)
		return
	}
	reply := refusal{Request: request, Error: "notify: invalid topic name"}
	if ValidTopic(topic) {
		reply.Topic, reply.Error = topic, truncateReason(err.Error())
	}
	c.enqueue(controlFrame(TypeError, reply), itemControl)
}

// refusal is the data of a notify.error message.
type refusal struct {
	Request string `json:"request"`
	Topic   string `json:"topic,omitempty"`
	Error   string `json:"error"`
}

// onMessage runs the OnMessage hook. A panic in it closes this connection
// with 1011 (internal error) instead of taking down the process or leaving
// the connection registered.
func (c *Client) onMessage(ctx context.Context, data []byte) {
	if err := c.r.contain("OnMessage", func() { c.r.opts.OnMessage(ctx, c, data) }, "client", c.id); err != nil {
		c.fail(websocket.StatusInternalError, "notify: internal error", err)
	}
}

// bucket is a token bucket: rate tokens per second, at most burst saved.
// Only the read loop uses it, so it needs no lock.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *bucket) allow(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
