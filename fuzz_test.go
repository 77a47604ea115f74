package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// Fuzz targets for everything that parses client input. Their seed corpora
// live in testdata/fuzz/<FuzzName>/ and run with every go test; `make fuzz`
// explores beyond them for a few seconds each.

// FuzzParseQuery feeds raw query strings, decoded as the handler decodes
// them, to ParseQuery: it accepts exactly what its contract allows, and
// what it accepts survives a round trip through an upgrade URL.
func FuzzParseQuery(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw) // what req.URL.Query() hands the handler: errors dropped
		o, err := notify.ParseQuery(q)

		since, epoch := q["since"], q["epoch"]
		valid := len(since) <= 1 && len(epoch) <= 1 && (len(epoch) == 0 || len(since) == 1 && len(epoch[0]) <= 64)
		for _, topic := range q["topic"] {
			valid = valid && notify.ValidTopic(topic)
		}
		if len(since) == 1 && since[0] != "now" {
			_, perr := strconv.ParseUint(since[0], 10, 64)
			valid = valid && perr == nil
		}
		if (err == nil) != valid {
			t.Fatalf("ParseQuery(%q) = %+v, %v; the contract says valid = %v", raw, o, err, valid)
		}
		if err != nil {
			return
		}
		numbered := len(since) == 1 && since[0] != "now"
		if (o.Resume != nil) != numbered || o.ResumeNow != (len(since) == 1 && !numbered) || len(o.Topics) != len(q["topic"]) {
			t.Fatalf("ParseQuery(%q) = %+v", raw, o)
		}

		back := url.Values{"topic": o.Topics}
		if o.ResumeNow {
			back.Set("since", "now")
		}
		if p := o.Resume; p != nil {
			back.Set("since", strconv.FormatUint(p.Seq, 10))
			if p.Epoch != "" {
				back.Set("epoch", p.Epoch)
			}
		}
		q2, err := url.ParseQuery(back.Encode())
		if err != nil {
			t.Fatal(err)
		}
		o2, err := notify.ParseQuery(q2)
		if err != nil {
			t.Fatalf("round trip of %+v through %q: %v", o, back.Encode(), err)
		}
		if diff := cmp.Diff(o, o2); diff != "" {
			t.Fatalf("round trip through %q (-first +second):\n%s", back.Encode(), diff)
		}
	})
}

var topicPattern = regexp.MustCompile(`^[A-Za-z0-9_.:/@-]{1,128}$`)

// FuzzValidTopic checks ValidTopic against its documented alphabet and
// length, and that every entry point agrees with it: a valid name survives
// the upgrade URL and is accepted there and by Broadcast; an invalid one is
// refused by both.
func FuzzValidTopic(f *testing.F) {
	reg := notify.New(nil)
	f.Cleanup(func() { reg.Close() })
	f.Fuzz(func(t *testing.T, name string) {
		valid := notify.ValidTopic(name)
		if valid != topicPattern.MatchString(name) {
			t.Fatalf("ValidTopic(%q) = %v, the documented rule says %v", name, valid, !valid)
		}
		q, err := url.ParseQuery(url.Values{"topic": {name}}.Encode())
		if err != nil || !slices.Equal(q["topic"], []string{name}) {
			t.Fatalf("topic %q does not survive a URL: %q, %v", name, q["topic"], err)
		}
		if _, err := notify.ParseQuery(q); (err == nil) != valid {
			t.Fatalf("ParseQuery(topic=%q) = %v, ValidTopic = %v", name, err, valid)
		}
		if name == "" {
			return // no topic: a message for everyone
		}
		err = reg.Broadcast(context.Background(), notify.SocketMessage{Type: "fuzz", Topic: name})
		if (err == nil) != valid {
			t.Fatalf("Broadcast(topic %q) = %v, ValidTopic = %v", name, err, valid)
		}
	})
}

// FuzzOriginCheck runs the handler's origin check against coder/websocket's
// own, which runs again during the upgrade. Properties:
//   - whatever the handler lets through, coder/websocket accepts too, so
//     Authorize never runs for a request the upgrade would then refuse;
//   - where they differ the handler is the stricter one, and only for an
//     Origin without a host ("null"), which no pattern may let in;
//   - a foreign origin passes only by matching a pattern.
//
// Both checks are driven through their public entry points with a
// ResponseRecorder: one that passes the origin check fails later, at the
// hijack, with a status other than 403.
func FuzzOriginCheck(f *testing.F) {
	prev := log.Writer()
	log.SetOutput(io.Discard) // coder/websocket logs malformed patterns
	f.Cleanup(func() { log.SetOutput(prev) })
	f.Fuzz(func(t *testing.T, origin, host, pattern1, pattern2 string) {
		patterns := []string{pattern1, pattern2}
		request := func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Host = host
			r.Header = http.Header{
				"Connection":            {"Upgrade"},
				"Upgrade":               {"websocket"},
				"Sec-Websocket-Version": {"13"},
				"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
				"Origin":                {origin},
			}
			return r
		}
		reg := notify.New(&notify.Options{OriginPatterns: patterns})
		ours := httptest.NewRecorder()
		reg.Handler().ServeHTTP(ours, request())
		reg.Close()
		theirs := httptest.NewRecorder()
		websocket.Accept(theirs, request(), &websocket.AcceptOptions{OriginPatterns: patterns})

		refused := ours.Code == http.StatusForbidden && strings.HasPrefix(ours.Body.String(), "notify:")
		if !refused && ours.Code == http.StatusForbidden {
			t.Fatalf("origin %q, host %q, patterns %q: the handler let it through, the upgrade refused it: %q",
				origin, host, patterns, ours.Body.String())
		}
		if refused && theirs.Code != http.StatusForbidden {
			if u, err := url.Parse(origin); err != nil || u.Host != "" {
				t.Fatalf("origin %q, host %q, patterns %q: refused (%q), though coder/websocket accepts it",
					origin, host, patterns, ours.Body.String())
			}
		}
		if !refused && origin != "" {
			u, err := url.Parse(origin)
			if err != nil || u.Host == "" {
				t.Fatalf("origin %q without a host was accepted", origin)
			}
			ok := strings.EqualFold(u.Host, host)
			for _, p := range patterns {
				target := u.Host
				if strings.Contains(p, "://") {
					target = u.Scheme + "://" + u.Host
				}
				m, _ := path.Match(strings.ToLower(p), strings.ToLower(target))
				ok = ok || m
			}
			if !ok {
				t.Fatalf("origin %q, host %q, patterns %q: accepted without a match", origin, host, patterns)
			}
		}
	})
}

// inboundWant is what the server must do with one inbound frame, by the
// wire protocol's rules (not by the code's): data frames over the read
// limit, binary frames and invalid UTF-8 are closed with their codes;
// a JSON object whose type begins with "notify." is reserved, and closed
// with 1008 if malformed or unknown; every other text frame is the
// application's.
type inboundWant struct {
	close       websocket.StatusCode
	app         bool
	subscribe   string
	unsubscribe string
	isSub       bool
	isUnsub     bool
}

func expectInbound(binary bool, data []byte, readLimit int) inboundWant {
	switch {
	case len(data) > readLimit:
		return inboundWant{close: websocket.StatusMessageTooBig}
	case binary:
		return inboundWant{close: websocket.StatusUnsupportedData}
	case !utf8.Valid(data):
		return inboundWant{close: websocket.StatusInvalidFramePayloadData}
	}
	var in struct {
		Type  string `json:"type"`
		Topic string `json:"topic"`
	}
	err := json.Unmarshal(data, &in)
	switch {
	case !strings.HasPrefix(in.Type, "notify."):
		return inboundWant{app: true}
	case err != nil:
		return inboundWant{close: websocket.StatusPolicyViolation}
	case in.Type == notify.TypeSubscribe:
		return inboundWant{isSub: true, subscribe: in.Topic}
	case in.Type == notify.TypeUnsubscribe:
		return inboundWant{isUnsub: true, unsubscribe: in.Topic}
	}
	return inboundWant{close: websocket.StatusPolicyViolation}
}

// topicsAfter returns the subscriptions a connection that had before
// should have once the input was handled, and whether it should have been
// refused (answered with a notify.error).
func (want inboundWant) topicsAfter(before []string, maxTopics int) ([]string, bool) {
	before = slices.Sorted(slices.Values(before))
	switch {
	case want.isSub && !notify.ValidTopic(want.subscribe):
		return before, true
	case want.isSub && slices.Contains(before, want.subscribe):
	case want.isSub && len(before) >= maxTopics:
		return before, true
	case want.isSub:
		return slices.Sorted(slices.Values(append(slices.Clone(before), want.subscribe))), false
	case want.isUnsub:
		return slices.DeleteFunc(slices.Clone(before), func(s string) bool { return s == want.unsubscribe }), false
	}
	return before, false
}

// refusalsBeforeClose is how many refused requests a connection may make
// before the next one closes it (1008).
const refusalsBeforeClose = 8

// fuzzPeer is one live connection of FuzzInboundFrame.
type fuzzPeer struct {
	ws       *websocket.Conn
	c        *notify.Client
	frames   chan []byte
	closed   chan struct{}
	code     websocket.StatusCode // valid once closed is closed
	refusals int                  // requests refused so far
}

// FuzzInboundFrame sends each input as one frame, text or binary, over a
// real connection and checks what the server did against expectInbound:
// the close code, what OnMessage received, the subscriptions and the
// notify.error answers.
//
// It drives a real connection rather than calling the read path of a fake
// Client in package notify: the checks that matter (read limit, UTF-8,
// binary, reserved types) are spread over coder/websocket and the read loop,
// and a fake would test our assumptions about the transport instead of the
// transport. The connection is reused until an input closes it, so an input
// costs two round trips on loopback (a sentinel frame, then a targeted
// message back): thousands of inputs per second, enough to fuzz.
func FuzzInboundFrame(f *testing.F) {
	const readLimit, maxTopics = 4 << 10, 4
	const sentinel = "fuzz-sync"
	app := make(chan []byte, 4)
	clients := make(chan *notify.Client, 1)
	reg := notify.New(&notify.Options{
		ReadLimit:    readLimit,
		MaxTopics:    maxTopics,
		InboundRate:  1e9,
		InboundBurst: 1 << 30,
		OnConnect:    func(c *notify.Client) { clients <- c },
		OnMessage: func(_ context.Context, _ *notify.Client, data []byte) {
			app <- bytes.Clone(data)
		},
	})
	srv := httptest.NewServer(reg.Handler())
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http")
	var p *fuzzPeer
	f.Cleanup(func() {
		if p != nil {
			p.ws.CloseNow()
			<-p.closed
		}
		reg.Close()
		srv.Close()
	})
	connect := func(t *testing.T) *fuzzPeer {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, wsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.SetReadLimit(-1)
		np := &fuzzPeer{ws: ws, c: <-clients, frames: make(chan []byte, 16), closed: make(chan struct{})}
		go func() {
			defer close(np.closed)
			for {
				_, b, err := ws.Read(context.Background())
				if err != nil {
					np.code = websocket.CloseStatus(err)
					return
				}
				np.frames <- b
			}
		}()
		return np
	}

	f.Fuzz(func(t *testing.T, binary bool, data []byte) {
		if string(data) == sentinel {
			t.Skip("the sentinel itself")
		}
		if p == nil {
			p = connect(t)
		}
		want := expectInbound(binary, data, readLimit)
		before := p.c.Topics()
		if _, refused := want.topicsAfter(before, maxTopics); refused && p.refusals >= refusalsBeforeClose {
			// The next refusal would close the connection (the
			// refused-request limit): start afresh instead.
			p.ws.CloseNow()
			<-p.closed
			p = connect(t)
			before = p.c.Topics()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		typ := websocket.MessageText
		if binary {
			typ = websocket.MessageBinary
		}
		if err := p.ws.Write(ctx, typ, data); err != nil {
			t.Fatalf("write: %v", err)
		}

		if want.close != 0 {
			select {
			case <-p.closed:
			case <-ctx.Done():
				t.Fatalf("%q (binary %v): still open, want close %d", data, binary, want.close)
			}
			code := p.code
			p = nil
			if code != want.close {
				t.Fatalf("%q (binary %v): closed with %d, want %d", data, binary, code, want.close)
			}
			select {
			case m := <-app:
				t.Fatalf("%q: OnMessage got %q from a frame that closed the connection", data, m)
			default:
			}
			return
		}

		// The sentinel is read after the input was handled; what the input
		// provoked reached OnMessage and the client's queue before it.
		if err := p.ws.Write(ctx, websocket.MessageText, []byte(sentinel)); err != nil {
			t.Fatalf("write: %v", err)
		}
		var gotApp [][]byte
	sync:
		for {
			select {
			case m := <-app:
				if string(m) == sentinel {
					break sync
				}
				gotApp = append(gotApp, m)
			case <-p.closed:
				code := p.code
				p = nil
				t.Fatalf("%q: closed with %d, want it open (%+v)", data, code, want)
			case <-ctx.Done():
				t.Fatalf("%q: the sentinel never reached OnMessage", data)
			}
		}
		if want.app != (len(gotApp) == 1) || len(gotApp) > 1 || want.app && !bytes.Equal(gotApp[0], data) {
			t.Fatalf("%q: OnMessage got %q, want app=%v", data, gotApp, want.app)
		}
		if err := reg.Broadcast(ctx, notify.SocketMessage{Type: "fuzz.sync", ClientID: p.c.ID()}); err != nil {
			t.Fatal(err)
		}
		refusals := 0
	answers:
		for {
			select {
			case b := <-p.frames:
				var m wire
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatalf("frame %q: %v", b, err)
				}
				switch m.Type {
				case "fuzz.sync":
					break answers
				case notify.TypeError:
					refusals++
					p.refusals++
					// A refusal is short and names the topic only if it
					// is a valid name: it never echoes the request.
					if len(b) > 512 || !notify.ValidTopic(want.subscribe) && want.subscribe != "" && bytes.Contains(b, []byte(want.subscribe)) {
						t.Fatalf("%q: refusal of %d bytes echoes the request: %q", data, len(b), b)
					}
				default:
					t.Fatalf("%q: unexpected frame %q", data, b)
				}
			case <-p.closed:
				t.Fatalf("%q: closed with %d while reading answers", data, p.code)
			case <-ctx.Done():
				t.Fatalf("%q: the targeted message never arrived", data)
			}
		}

		after := p.c.Topics()
		slices.Sort(after)
		wantAfter, wantRefused := want.topicsAfter(before, maxTopics)
		if (refusals != 0) != wantRefused || refusals > 1 {
			t.Fatalf("%q: %d notify.error answers, want refused=%v", data, refusals, wantRefused)
		}
		if diff := cmp.Diff(wantAfter, after, cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })); diff != "" {
			t.Fatalf("%q: topics (-want +got):\n%s", data, diff)
		}
	})
}

// FuzzNotifyText checks NotifyText's rule against an oracle that decodes
// the text as JavaScript's JSON.parse does where it matters (exact keys,
// the last of duplicate keys wins): whatever NotifyText accepts is valid
// UTF-8 and, if it is a JSON object, has no "seq" key and no "type" string
// beginning with "notify.", so notify.js cannot take it for a library or a
// numbered message; text that does not begin with '{' is refused only for
// invalid UTF-8.
func FuzzNotifyText(f *testing.F) {
	reg := notify.New(nil)
	f.Cleanup(func() { reg.Close() })
	f.Fuzz(func(t *testing.T, text string) {
		err := reg.NotifyText(context.Background(), text)
		if err != nil && !errors.Is(err, notify.ErrInvalidMessage) {
			t.Fatalf("NotifyText(%q) = %v, want nil or ErrInvalidMessage", text, err)
		}
		trimmed := strings.TrimLeft(text, " \t\r\n")
		if !strings.HasPrefix(trimmed, "{") {
			if (err == nil) != utf8.ValidString(text) {
				t.Fatalf("NotifyText(%q) = %v: text that is no JSON object is refused only for invalid UTF-8", text, err)
			}
			return
		}
		if err != nil {
			return
		}
		if !utf8.ValidString(text) {
			t.Fatalf("NotifyText(%q) accepted invalid UTF-8", text)
		}
		// UseNumber: a number too large for a float64 (9e991) is still
		// JSON, and JSON.parse makes it Infinity, no spoof.
		var obj map[string]any
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber()
		if derr := dec.Decode(&obj); derr != nil {
			t.Fatalf("NotifyText(%q) accepted text that begins with '{' but is no JSON object: %v", text, derr)
		}
		if _, derr := dec.Token(); derr != io.EOF {
			t.Fatalf("NotifyText(%q) accepted text that goes on after its JSON object", text)
		}
		if _, ok := obj["seq"]; ok {
			t.Fatalf("NotifyText(%q) accepted an object with a seq", text)
		}
		if typ, ok := obj["type"].(string); ok && strings.HasPrefix(typ, "notify.") {
			t.Fatalf("NotifyText(%q) accepted an object of reserved type %q", text, typ)
		}
	})
}

// FuzzLastEventID drives the Last-Event-ID header of a stream request
// through the handler. By the wire's rules a value is "SEQ" or
// "SEQ:EPOCH" (SEQ a decimal uint64, EPOCH at most 64 bytes); anything else
// is refused with 400 before a stream starts, and an accepted one starts a
// stream whose hello, if written before the request ended, carries the
// client's own position as its id.
func FuzzLastEventID(f *testing.F) {
	for _, seed := range []string{"", "0", "7", "7:abc", "7:", ":", "x", "-1", "+1", "18446744073709551615:e", "18446744073709551616", "1:a:b", "1:\x00", "01:e"} {
		f.Add(seed)
	}
	valid := regexp.MustCompile(`^([0-9]+)(?::(.{0,64}))?$`)
	f.Fuzz(func(t *testing.T, id string) {
		reg := notify.New(&notify.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		defer reg.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the stream, if any, ends at once
		req := httptest.NewRequestWithContext(ctx, "GET", "/", nil)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Last-Event-ID", id)
		rec := httptest.NewRecorder()
		reg.Handler().ServeHTTP(rec, req)

		m := valid.FindStringSubmatch(id)
		if m != nil {
			if _, err := strconv.ParseUint(m[1], 10, 64); err != nil {
				m = nil
			}
		}
		wantOK := id == "" || m != nil && !strings.ContainsAny(m[2], "\r\n\x00") && utf8.ValidString(m[2])
		if wantOK != (rec.Code == http.StatusOK) {
			t.Fatalf("Last-Event-ID %q: %d %q", id, rec.Code, rec.Body.String())
		}
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			return
		}
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if after, ok := strings.CutPrefix(line, "id: "); ok {
				want := "0:" + reg.Position().Epoch // a fresh stream: the current position
				if m != nil {
					seq, _ := strconv.ParseUint(m[1], 10, 64)
					epoch := m[2]
					if epoch == "" {
						epoch = reg.Position().Epoch
					}
					want = strconv.FormatUint(seq, 10) + ":" + epoch
				}
				if after != want {
					t.Fatalf("Last-Event-ID %q: the hello's id is %q, want %q", id, after, want)
				}
				return
			}
		}
	})
}
