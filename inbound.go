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
	limit := bucket{rate: c.r.opts.InboundRate, burst: float64(c.r.opts.InboundBurst)}
	limit.tokens = limit.burst
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
		case !limit.allow(time.Now()):
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
			c.enqueue(controlFrame(TypeError, map[string]string{
				"request": in.Type, "topic": in.Topic, "error": err.Error(),
			}), itemControl)
		}
	case TypeUnsubscribe:
		c.unsubscribe(in.Topic)
	default:
		c.fail(websocket.StatusPolicyViolation, truncateReason("notify: unknown reserved type "+in.Type), errReserved)
	}
}

// onMessage runs the OnMessage hook. A panic in it closes this connection
// with 1011 (internal error) instead of taking down the process or leaving
// the connection registered.
func (c *Client) onMessage(ctx context.Context, data []byte) {
	defer func() {
		if p := recover(); p != nil {
			c.r.opts.Logger.Error("notify: OnMessage panicked", "client", c.id, "panic", p)
			c.fail(websocket.StatusInternalError, "notify: internal error", fmt.Errorf("notify: OnMessage panicked: %v", p))
		}
	}()
	c.r.opts.OnMessage(ctx, c, data)
}

// subscribe adds a topic at run time. Messages broadcast from then on are
// delivered; earlier ones are not replayed.
func (c *Client) subscribe(ctx context.Context, topic string) error {
	if err := c.r.checkTopic(ctx, c.ident, topic); err != nil {
		return err
	}
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if _, ok := c.topics[topic]; ok {
		return nil
	}
	if len(c.topics) >= c.r.opts.MaxTopics {
		return fmt.Errorf("%w: at most %d topics allowed", errTopic, c.r.opts.MaxTopics)
	}
	c.topics[topic] = struct{}{}
	addToSet(c.r.byTopic, topic, c)
	return nil
}

func (c *Client) unsubscribe(topic string) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if _, ok := c.topics[topic]; ok {
		delete(c.topics, topic)
		removeFromSet(c.r.byTopic, topic, c)
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
