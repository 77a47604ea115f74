package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// Server-Sent Events. The Handler serves a GET whose Accept header names
// text/event-stream as a stream of events instead of a WebSocket. One URL
// rather than a second handler: the requests pass the same checks in the
// same order with the same statuses, a deployment routes and protects one
// path, and notify.js's auto mode tries WebSocket and then SSE on the same
// URL. Such a connection is a Client like any other: it lives in the same
// Registry, gets the same messages from the same dispatcher in the same seq
// order, counts against the same limits, and has the same bounded queue.
//
// What differs is the writing. The stream is not hijacked: net/http's
// handler goroutine has to stay alive for as long as the response is open,
// so it is the connection's writer. It waits for its connection to need a
// writer (sseStream.kick), writes the whole backlog with one Write and one
// Flush through http.ResponseController, and waits again; the heartbeat's
// watchdog cuts short a write that takes longer than WriteTimeout. Each
// message's event is built once per Registry (in the dispatcher, beside its
// WebSocket frame), not once per connection. Nothing is read from the client after the request: a dead
// peer is found by a failed or timed-out write, or by net/http cancelling
// the request's context.
//
// The wire:
//
//	retry: 2345                            (first write only)
//
//	id: 41:4f1c…                           (the position the client has everything up to)
//	event: notify.hello
//	data: {"type":"notify.hello","data":{"epoch":"4f1c…","seq":41}}
//
//	id: 42:4f1c…                           (seq:epoch)
//	event: customer.created
//	data: {"seq":42,"type":"customer.created",…}
//
//	data: plain text from NotifyText        (no id, no event type)
//
//	: ping                                 (a comment, when nothing else was written)
//
//	event: notify.close                    (before the server ends the stream)
//	data: {"type":"notify.close","data":{"code":1001,"reason":"…"}}

// TypeClose is the last event of a Server-Sent Events stream that the
// server ends: {"type":"notify.close","data":{"code":1001,"reason":"…"}},
// with the WebSocket close code the same ending would have had (1001 on
// shutdown, [CloseSlowConsumer], 1008 when the authorisation expired, …).
// A client treats it as it treats that WebSocket close. WebSocket clients
// never receive it: they get the close frame.
const TypeClose = "notify.close"

// sseRetry and sseRetryJitter set the retry: field of each stream, the
// delay before a plain EventSource reconnects: spread over two seconds, so
// that the pages of a restarted server do not all come back at once.
const (
	sseRetry       = 2 * time.Second
	sseRetryJitter = 2 * time.Second
)

// sseStream is what a Client served over Server-Sent Events has instead
// of a WebSocket.
type sseStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	kick    chan struct{} // a writer is needed (see Client.schedule); capacity 1
	end     chan struct{} // closed when the stream must end
	endOnce sync.Once
	retry   int // milliseconds, written with the first write; 0 after it

	// guarded by Client.mu
	code   websocket.StatusCode // the close the library ends the stream with; 0: none
	reason string

	// the handler goroutine's own
	closeWritten bool
	writeErr     error // the write that failed: nothing more can be written

	cancelled atomic.Bool // cancel was called: no write may wait any more
	mu        sync.Mutex  // guards returned, and rc's use from other goroutines
	returned  bool
}

func newSSEStream(w http.ResponseWriter) *sseStream {
	return &sseStream{
		w:     w,
		rc:    http.NewResponseController(w),
		kick:  make(chan struct{}, 1),
		end:   make(chan struct{}),
		retry: int((sseRetry + rand.N(sseRetryJitter)).Milliseconds()),
	}
}

// stop asks the handler goroutine to end the stream.
func (s *sseStream) stop() { s.endOnce.Do(func() { close(s.end) }) }

// cancel ends the stream at once: a write in progress fails now rather
// than at its deadline. It is the Client's cancel.
func (s *sseStream) cancel() {
	s.cancelled.Store(true)
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.returned {
		_ = s.rc.SetWriteDeadline(time.Now())
	}
}

// finish records that the handler is returning, after which rc may not be
// used.
func (s *sseStream) finish() {
	s.mu.Lock()
	s.returned = true
	s.mu.Unlock()
}

// write sends b and flushes it. A write that takes longer than
// WriteTimeout is cut short by the heartbeat's watchdog, as on WebSocket:
// it sees writeStart, aborts the client, and cancel sets a write deadline
// in the past, which fails the write on HTTP/1.1 and resets the stream on
// HTTP/2. Rejected: a write deadline around every write, two timer
// updates per write on HTTP/1.1 and two round trips to the connection's
// goroutine on HTTP/2. Only a write the watchdog no longer sees, the close
// event of a stream already unregistered, gets a deadline (timeout > 0).
func (s *sseStream) write(c *Client, b []byte, timeout time.Duration) error {
	if timeout > 0 {
		_ = s.rc.SetWriteDeadline(time.Now().Add(timeout))
	}
	c.writeStart.Store(time.Now().UnixNano())
	var err error
	if s.cancelled.Load() { // after writeStart and the deadline: see cancel
		err = errStreamCancelled
	} else if _, err = s.w.Write(b); err == nil {
		err = s.rc.Flush()
	}
	c.writeStart.Store(0)
	if err != nil {
		s.writeErr = err
		s.stop()
		return err
	}
	c.nextPing.Store(time.Now().Add(c.r.opts.PingInterval).UnixNano())
	return nil
}

var errStreamCancelled = errors.New("notify: stream cancelled")

// sseBufs holds the buffers a stream's backlog is assembled in for its one
// Write, so that an idle stream keeps none.
var sseBufs = sync.Pool{New: func() any { return new([]byte) }}

// writeSSE is writeBatch for a stream: the whole batch, pings and a final
// close included, goes out with one Write and one Flush.
func (c *Client) writeSSE(batch []item) bool {
	s := c.sse
	bp := sseBufs.Get().(*[]byte)
	b := (*bp)[:0]
	if s.retry > 0 {
		b = append(b, "retry: "...)
		b = strconv.AppendInt(b, int64(s.retry), 10)
		b = append(b, "\n\n"...)
		s.retry = 0
	}
	frames, msgs, n := 0, 0, 0
	pinged, closed := false, false
	for _, it := range batch {
		n++
		switch it.kind {
		case itemMessage:
			msgs++
			frames++
			b = append(b, it.b...)
		case itemControl:
			frames++
			b = append(b, it.b...)
		case itemPing:
			pinged = true
			b = append(b, ": ping\n\n"...)
		case itemClose:
			// A plain EventSource waits retry: before it reconnects;
			// notify.js reads wait from notify.close.
			closed = true
			wait := c.awayWait.Milliseconds()
			b = append(b, "retry: "...)
			b = strconv.AppendInt(b, wait, 10)
			b = append(b, "\n\n"...)
			b = appendClose(b, websocket.StatusGoingAway, goingAwayReason(c.awayWait), wait)
		}
		if closed {
			break
		}
	}
	err := s.write(c, b, 0)
	if cap(b) <= 64<<10 { // a burst's buffer is not kept for the next
		*bp = b[:0]
		sseBufs.Put(bp)
	}
	if pinged {
		c.mu.Lock()
		c.pingQueued = false
		c.mu.Unlock()
	}
	if err != nil {
		c.r.stats.dropped.Add(uint64(countMessages(batch)))
		return false
	}
	c.r.stats.sent.Add(uint64(frames))
	c.r.stats.writes.Add(1)
	if closed {
		s.closeWritten = true
		c.r.stats.dropped.Add(uint64(countMessages(batch[n:])))
		s.stop()
		return false
	}
	return true
}

// serveStream runs a stream until it ends: the handler goroutine is the
// connection's writer. Then it writes the close event the library decided
// on, if any and if the stream can still take it, unregisters the client
// and reports why it ended (see [Registry.Add]; a client that goes away is
// a normal end, since EventSource has no close handshake).
func (c *Client) serveStream(ctx context.Context) error {
	s := c.sse
	if hook := c.r.opts.OnConnect; hook != nil {
		if err := c.r.contain("OnConnect", func() { hook(c) }, "client", c.id); err != nil {
			c.fail(websocket.StatusInternalError, "notify: internal error", err)
		}
	}
	for running := true; running; {
		select {
		case <-s.kick:
			c.writeLoop(nil, 0)
		case <-ctx.Done():
			running = false
		case <-s.end:
			running = false
		}
	}

	c.mu.Lock()
	c.closing, c.dead = true, true
	dropped := c.dropQueued()
	c.closeBegun = true
	result := c.err
	code, reason := s.code, s.reason
	pending := c.writing // counted by needWriter, its kick never taken
	c.writing = false
	c.mu.Unlock()
	if pending {
		c.writers.Done()
	}
	c.r.stats.dropped.Add(uint64(dropped))
	if code != 0 && !s.closeWritten && s.writeErr == nil && ctx.Err() == nil {
		timeout := closeGrace
		if code == CloseSlowConsumer {
			timeout += c.r.opts.WriteTimeout // a backlog may still be on its way to a slow reader
		}
		_ = s.write(c, appendClose(nil, code, reason, -1), timeout)
	}
	s.finish()
	c.r.unregister(c)

	if result == nil && s.writeErr != nil && !errors.Is(s.writeErr, errStreamCancelled) && c.r.base.Err() == nil && !c.r.isClosed() {
		result = fmt.Errorf("notify: stream %s: %w", c.id, s.writeErr)
	}
	if hook := c.r.opts.OnDisconnect; hook != nil {
		_ = c.r.contain("OnDisconnect", func() { hook(c, result) }, "client", c.id)
	}
	c.r.active.Done()
	return result
}

// serveSSE serves a request that passed every check as a stream. The
// response stays open until the client goes away or the library ends it.
func (r *Registry) serveSSE(w http.ResponseWriter, req *http.Request, o ConnOptions) {
	if !canFlush(w) {
		r.stats.rejected.Add(1)
		r.opts.Logger.Error("notify: cannot stream: the ResponseWriter hides http.Flusher (wrap it with an Unwrap method)", "path", req.URL.Path)
		http.Error(w, "notify: internal error", http.StatusInternalServerError)
		return
	}
	s := newSSEStream(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx would otherwise buffer the stream
	r.allowOrigin(h, req)            // check allowed it: a same-origin page, or one OriginPatterns names
	c, err := r.register(nil, o, s.cancel, nil, s)
	if err != nil {
		r.stats.rejected.Add(1)
		status := http.StatusServiceUnavailable
		if errors.Is(err, errTooManyUser) {
			status = http.StatusTooManyRequests
		}
		h.Del("Content-Type")
		http.Error(w, err.Error(), status)
		return
	}
	// http.Server.ReadTimeout would end the stream: net/http watches the
	// connection for the client going away, and that read's deadline
	// cancels the request's context. Its WriteTimeout would too, even for
	// an idle HTTP/2 stream; the watchdog bounds writes instead.
	_ = s.rc.SetReadDeadline(time.Time{})
	_ = s.rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(http.StatusOK) // sent with the first write, the hello
	if err := c.serveStream(req.Context()); err != nil {
		r.opts.Logger.Debug("notify: stream ended", "remote", req.RemoteAddr, "err", err)
	}
}

// canFlush reports whether http.ResponseController can flush w, looking
// through Unwrap methods as it does: a middleware that wraps the
// ResponseWriter without either would make every stream fail at its first
// write, and EventSource retry for ever.
func canFlush(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case interface{ FlushError() error }, http.Flusher:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// isEventStream reports whether req asks for a Server-Sent Events stream:
// a GET that accepts text/event-stream and is not a WebSocket upgrade.
func isEventStream(req *http.Request) bool {
	if req.Method != http.MethodGet || headerHasToken(req.Header, "Upgrade", "websocket") {
		return false
	}
	for _, v := range req.Header.Values("Accept") {
		for _, t := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(t, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// parseLastEventID reads the Last-Event-ID header EventSource sends when it
// reconnects: "SEQ:EPOCH" as the stream's ids are written, or a bare "SEQ"
// (resume without an epoch check, like since without epoch). An empty
// value means no resume (nil).
func parseLastEventID(v string) (*Position, error) {
	if v == "" {
		return nil, nil
	}
	seq, epoch, hasEpoch := strings.Cut(v, ":")
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || seq[0] == '+' {
		return nil, fmt.Errorf("notify: Last-Event-ID must be SEQ or SEQ:EPOCH, not %q", truncateReason(v))
	}
	if hasEpoch && (len(epoch) > 64 || !lineSafe(epoch) || !utf8.ValidString(epoch)) {
		return nil, errors.New("notify: Last-Event-ID's epoch is too long or not one the server wrote")
	}
	return &Position{Epoch: epoch, Seq: n}, nil
}

// sseControl encodes a reserved message from the library to one client as
// an event whose id is at, or with no id if at is nil.
func sseControl(typ string, data any, at *Position) []byte {
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		Data any    `json:"data"`
	}{typ, data})
	if err != nil {
		panic("notify: encoding " + typ + ": " + err.Error()) // only library-made values are encoded here
	}
	return appendEvent(nil, at, []byte(typ), b)
}

// appendClose appends the notify.close event, with the milliseconds to wait
// before reconnecting unless wait < 0.
func appendClose(b []byte, code websocket.StatusCode, reason string, wait int64) []byte {
	var w *int64
	if wait >= 0 {
		w = &wait
	}
	data, _ := json.Marshal(struct {
		Type string `json:"type"`
		Data any    `json:"data"`
	}{TypeClose, struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
		Wait   *int64 `json:"wait,omitempty"`
	}{int(code), reason, w}})
	return appendEvent(b, nil, []byte(TypeClose), data)
}

// sseMessage returns the event of a broker message, given its WebSocket
// frame f (see frame): NotifyText's text as data lines only, or the same
// JSON envelope with the id seq:epoch and its type as the event type.
func sseMessage(m *BrokerMessage, f []byte, epoch string) []byte {
	payload := framePayload(f)
	if m.Raw {
		return appendEvent(make([]byte, 0, len(payload)+16), nil, nil, payload)
	}
	return appendEvent(make([]byte, 0, len(payload)+len(epoch)+64), &Position{Epoch: epoch, Seq: m.Seq}, eventType(m.Body), payload)
}

// appendEvent appends one event: an id line if at is set, an event line if
// typ is set, data split into data lines on every line end SSE knows (CR
// LF, CR, LF: EventSource joins them with LF), and the blank line that
// dispatches it.
func appendEvent(b []byte, at *Position, typ, data []byte) []byte {
	if at != nil && lineSafe(at.Epoch) {
		b = append(b, "id: "...)
		b = strconv.AppendUint(b, at.Seq, 10)
		b = append(b, ':')
		b = append(b, at.Epoch...)
		b = append(b, '\n')
	}
	if len(typ) > 0 {
		b = append(b, "event: "...)
		b = append(b, typ...)
		b = append(b, '\n')
	}
	for {
		i := bytes.IndexAny(data, "\r\n")
		line := data
		if i >= 0 {
			line = data[:i]
		}
		b = append(b, "data: "...)
		b = append(b, line...)
		b = append(b, '\n')
		if i < 0 {
			return append(b, '\n')
		}
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// lineSafe reports whether s can be written in an id field: no line end,
// and no NUL, which makes EventSource ignore the field.
func lineSafe(s string) bool { return !strings.ContainsAny(s, "\r\n\x00") }

// eventType returns the type of a message body ({"type":"…",…}) for the
// event line: nil, so that EventSource dispatches it as "message", if it
// has none or one that cannot be written on one line.
func eventType(body []byte) []byte {
	const prefix = `{"type":"` // as encodeBody writes it
	if rest, ok := bytes.CutPrefix(body, []byte(prefix)); ok {
		if i := bytes.IndexByte(rest, '"'); i > 0 && !bytes.ContainsAny(rest[:i], "\\\r\n\x00") {
			return rest[:i]
		}
	}
	var v struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(body, &v) != nil || !lineSafe(v.Type) {
		return nil
	}
	return []byte(v.Type)
}
