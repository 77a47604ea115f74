package e2e_test

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wsnotify/notify"
)

// transports are notify.js's two transports: the client tests whose
// behaviour applies to both run on each, with the option set explicitly.
var transports = []string{"websocket", "sse"}

// openStatus is the status of a transport's accepted handshake.
func openStatus(transport string) int {
	if transport == "sse" {
		return http.StatusOK
	}
	return http.StatusSwitchingProtocols
}

// TestClientTopicsAndDedup runs notify.js, as notify.ScriptHandler serves
// it, in Chromium against a Registry, over each transport. A client
// subscribed to "alpha" must receive untopiced and "alpha" messages but not
// "beta" ones; on("*") must see every message in order (envelopes and plain
// text), a typed handler only its type; and subscribe/unsubscribe on an
// open connection must change what it receives (over SSE by reopening the
// stream; the state stays "open"). (Frames repeating a seq the client has
// seen are dropped: TestClientIgnoresMalformedLibraryMessages sends them,
// since no Registry does.) Over SSE the browser hands notify.js only the
// event types it listens for, so the harness listens for the test's types.
func TestClientTopicsAndDedup(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newClientSite(t)
			b := newBrowser(t)
			b.navigate(s.srv.URL + "/")
			b.waitFor("the harness", "window.ready === true")

			eval[chromedp.Void](b, fmt.Sprintf(`start("main", {transport: %s, topics: ["alpha"], listen: ["t.all", "t.beta", "t.fence"]}, "t.alpha")`, jsString(tr)))
			receive(t, s.connected, "the client's connection")
			b.waitFor(`the client is "open"`, `clients.main.state === "open"`)

			b.note("test: broadcast to everyone, to alpha, to beta; plain text")
			all := s.broadcast(t, notify.SocketMessage{Type: "t.all", Data: "to everyone"})
			alpha := s.broadcast(t, notify.SocketMessage{Type: "t.alpha", Topic: "alpha", Data: "alpha 1"})
			s.broadcast(t, notify.SocketMessage{Type: "t.beta", Topic: "beta", Data: "beta 1"})
			s.text(t, "plain text") // not an envelope: it goes to "text"
			fence := s.broadcast(t, notify.SocketMessage{Type: "t.fence", Data: "fence 1"})
			b.waitFor("fence 1", hasEntry("main", "t.fence", "fence 1"))

			want := clientLog{
				All: []logEntry{
					{Seq: all, Type: "t.all", Data: "to everyone"},
					{Seq: alpha, Type: "t.alpha", Topic: "alpha", Data: "alpha 1"},
					{Text: "plain text", Data: "plain text"},
					{Seq: fence, Type: "t.fence", Data: "fence 1"},
				},
				Typed:  []logEntry{{Seq: alpha, Type: "t.alpha", Topic: "alpha", Data: "alpha 1"}},
				States: []string{"connecting", "open"},
			}
			if diff := gocmp.Diff(want, eval[clientLog](b, "logs.main"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("what the client's handlers saw (-want +got):\n%s", diff)
			}

			b.note("test: subscribe to beta, unsubscribe from alpha")
			eval[chromedp.Void](b, `(() => {
				const c = clients.main;
				c.subscribe("beta");
				c.unsubscribe("alpha");
				c.send({type: "sync"});
			})()`)
			s.settle(t, b, tr, "beta")
			s.broadcast(t, notify.SocketMessage{Type: "t.alpha", Topic: "alpha", Data: "alpha 2"})
			beta := s.broadcast(t, notify.SocketMessage{Type: "t.beta", Topic: "beta", Data: "beta 2"})
			fence = s.broadcast(t, notify.SocketMessage{Type: "t.fence", Data: "fence 2"})
			b.waitFor("fence 2", hasEntry("main", "t.fence", "fence 2"))

			want.All = append(want.All,
				logEntry{Seq: beta, Type: "t.beta", Topic: "beta", Data: "beta 2"},
				logEntry{Seq: fence, Type: "t.fence", Data: "fence 2"})
			if diff := gocmp.Diff(want, eval[clientLog](b, "logs.main"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("after subscribe(beta) and unsubscribe(alpha) (-want +got):\n%s", diff)
			}
			if got := eval[string](b, "clients.main.transport"); got != tr {
				t.Errorf("the client's transport is %q, want %q", got, tr)
			}
		})
	}
}

// settle waits until the server serves the page's client with exactly
// topics, after a change of its subscriptions. Over WebSocket the client
// sent {"type":"sync"} after the changes, and the server reads a
// connection's frames in order: once OnMessage has it, they are in effect.
// Over SSE the client reopened its stream with the new topics, and the
// server registers a stream before it writes its notify.hello: once a
// hello came over a stream with these topics, it is in effect.
func (s *clientSite) settle(t *testing.T, b *browser, transport string, topics ...string) {
	t.Helper()
	if transport == "sse" {
		b.waitHello(topics...)
		return
	}
	if got := receive(t, s.inbound, "the client's sync message"); got != `{"type":"sync"}` {
		t.Fatalf("OnMessage got %s, want the client's sync message", got)
	}
}

// TestClientSubscribeWhileConnecting calls subscribe and unsubscribe right
// after connect, before the socket is open, as a page that sets up its
// subscriptions in one go does. The changes must take effect on the
// connection being opened (over SSE, on the stream reopened at once with
// the new topics). (notify.js used to drop them: send() failed
// while connecting and the upgrade URL had been built before, so the client
// had the wrong topics until its next reconnection.)
func TestClientSubscribeWhileConnecting(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newClientSite(t)
			b := newBrowser(t)
			b.navigate(s.srv.URL + "/")
			b.waitFor("the harness", "window.ready === true")

			eval[chromedp.Void](b, fmt.Sprintf(`start("early", {transport: %s, topics: ["delta"], listen: ["t.gamma", "t.delta", "t.fence"]}, null, (c) => {
				c.subscribe("gamma");
				c.unsubscribe("delta");
			})`, jsString(tr)))
			receive(t, s.connected, "the client's connection")
			b.waitFor(`the client is "open"`, `clients.early.state === "open"`)
			// Anything the client sends on open is read before this.
			eval[chromedp.Void](b, `clients.early.send({type: "sync"})`)
			s.settle(t, b, tr, "gamma")

			gamma := s.broadcast(t, notify.SocketMessage{Type: "t.gamma", Topic: "gamma", Data: "gamma"})
			s.broadcast(t, notify.SocketMessage{Type: "t.delta", Topic: "delta", Data: "delta"})
			fence := s.broadcast(t, notify.SocketMessage{Type: "t.fence", Data: "fence"})
			b.waitFor("the fence", hasEntry("early", "t.fence", "fence"))

			want := []logEntry{
				{Seq: gamma, Type: "t.gamma", Topic: "gamma", Data: "gamma"},
				{Seq: fence, Type: "t.fence", Data: "fence"},
			}
			if diff := gocmp.Diff(want, eval[clientLog](b, "logs.early").All, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("after subscribe(gamma) and unsubscribe(delta) while connecting (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientReconnectsAfterRefusedSubscribe has a client ask, at run
// time, for a topic the server's AuthorizeTopic refuses, then drops its
// connection. The client must come back, still subscribed to what it was
// allowed. Over WebSocket the server answers notify.error and the client
// stays connected; over SSE the stream reopened with the topic is refused
// (403), and notify.js must report it as a notify.error itself and
// reconnect without it. (notify.js used to keep the refused topic and put
// it on every reconnection URL, where the server refuses the whole request
// with 403, so the client never came back.)
func TestClientReconnectsAfterRefusedSubscribe(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newClientSite(t)
			px := newProxy(t, s.srv.Listener.Addr().String())
			b := newBrowser(t)
			b.navigate(px.url())
			b.waitFor("the harness", "window.ready === true")
			eval[chromedp.Void](b, fmt.Sprintf(`start("main", {transport: %s, topics: ["alpha"]}, "t.alpha")`, jsString(tr)))
			receive(t, s.connected, "the client's connection")
			b.waitFor(`the client is "open"`, `clients.main.state === "open"`)

			eval[chromedp.Void](b, `clients.main.subscribe("private-to-someone-else")`)
			b.waitFor("the refusal", `logs.main.all.some((e) => e.type === "notify.error" && e.data.topic === "private-to-someone-else")`)
			if topics := eval[[]string](b, `[...clients.main.topics]`); !slices.Equal(topics, []string{"alpha"}) {
				t.Errorf("after the refusal the client's topics are %q, want [alpha]", topics)
			}

			b.note("test: drop the connection")
			before := len(b.socketsNow().Handshakes)
			px.stop()
			b.waitFor(`the client leaves "open"`, `clients.main.state !== "open"`)
			px.start()
			b.waitSockets("the server's answer to a reconnection", func(s sockets) bool { return len(s.Handshakes) > before })
			if got := b.socketsNow().Handshakes[before]; got != openStatus(tr) {
				t.Fatalf("the reconnection was answered %d, want %d", got, openStatus(tr))
			}
			s.broadcast(t, notify.SocketMessage{Type: "t.alpha", Topic: "alpha", Data: "after"})
			b.waitFor("the message after the reconnection", hasEntry("main", "t.alpha", "after"))
		})
	}
}

// TestClientSlowConsumerClose has the server close a client as a slow
// consumer: a message larger than the Registry's QueueBytes does it at
// once. The page must see close code 4000 on the wire (over SSE, in the
// server's notify.close), and notify.js must come back at once although
// its backoff (minDelay) is an hour, resume from its last seq so that the
// message it was closed for is replayed, and report no gap. (notify.js
// used to wait up to minDelay after a 4000 close like after any other.)
func TestClientSlowConsumerClose(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newClientSite(t, func(o *notify.Options) { o.QueueBytes = 1 << 10 })
			b := newBrowser(t)
			b.navigate(s.srv.URL + "/")
			b.waitFor("the harness", "window.ready === true")
			eval[chromedp.Void](b, fmt.Sprintf(`start("main", {transport: %s, minDelay: 3600000, maxDelay: 3600000, listen: ["t.msg", "t.big"]})`, jsString(tr)))
			receive(t, s.connected, "the client's connection")
			b.waitFor(`the client is "open"`, `clients.main.state === "open"`)

			one := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "one"})
			b.waitFor("the first message", hasEntry("main", "t.msg", "one"))
			big := strings.Repeat("x", 2<<10)
			bigSeq := s.broadcast(t, notify.SocketMessage{Type: "t.big", Data: big})
			receive(t, s.connected, "the client's reconnection within the step timeout, not minDelay")
			b.waitFor("the replayed message", hasEntry("main", "t.big", big))
			after := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "after"})
			b.waitFor("the message after the reconnection", hasEntry("main", "t.msg", "after"))

			if codes := eval[[]int](b, "closeCodes"); !slices.Equal(codes, []int{4000}) {
				t.Errorf("the page's connections were closed with %v, want [4000] (slow consumer)", codes)
			}
			want := []logEntry{
				{Seq: one, Type: "t.msg", Data: "one"},
				{Seq: bigSeq, Type: "t.big", Data: big},
				{Seq: after, Type: "t.msg", Data: "after"},
			}
			got := eval[clientLog](b, "logs.main")
			if diff := gocmp.Diff(want, got.All, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("what the client dispatched (-want +got):\n%s", diff)
			}
			if len(got.Gaps) != 0 {
				t.Errorf("onGap fired: %v", got.Gaps)
			}
			ok := openStatus(tr)
			if diff := gocmp.Diff([]int{ok, ok}, b.socketsNow().Handshakes); diff != "" {
				t.Errorf("handshakes (-want +got):\n%s", diff)
			}
		})
	}
}

//go:embed testdata/client.html
var clientPage []byte

// clientSite serves the harness page, the plain EventSource page
// (/eventsource), notify.js and a Registry, and reports the Registry's connections and inbound application messages.
type clientSite struct {
	reg       *notify.Registry
	srv       *httptest.Server
	connected chan string // the ID of each registered connection
	inbound   chan string // each frame OnMessage receives
}

// newClientSite starts the site; tweak, if given, adjusts the Registry's
// options.
func newClientSite(t *testing.T, tweak ...func(*notify.Options)) *clientSite {
	return newSite(t, nil, tweak...)
}

// newSite starts the site with its handler wrapped in wrap, if not nil.
func newSite(t *testing.T, wrap func(http.Handler) http.Handler, tweak ...func(*notify.Options)) *clientSite {
	s := &clientSite{connected: make(chan string, 8), inbound: make(chan string, 8)}
	opts := &notify.Options{
		// Topics named private-… belong to someone else.
		AuthorizeTopic: func(ctx context.Context, id notify.Identity, topic string) error {
			if strings.HasPrefix(topic, "private-") {
				return errors.New("not your topic")
			}
			return nil
		},
		OnConnect: func(c *notify.Client) {
			select {
			case s.connected <- c.ID():
			default: // more connections than any test waits for
			}
		},
		OnMessage: func(ctx context.Context, c *notify.Client, data []byte) {
			select {
			case s.inbound <- string(data):
			case <-ctx.Done():
			}
		},
	}
	for _, f := range tweak {
		f(opts)
	}
	s.reg = notify.New(opts)
	t.Cleanup(func() { s.reg.Close() })
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(clientPage)
	})
	mux.HandleFunc("GET /eventsource", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(eventSourcePage)
	})
	mux.Handle("GET /notify.js", notify.ScriptHandler())
	mux.Handle("GET /ws", s.reg.Handler())
	var h http.Handler = mux
	if wrap != nil {
		h = wrap(mux)
	}
	s.srv = httptest.NewServer(h)
	t.Cleanup(s.srv.Close)
	return s
}

// broadcast sends msg and returns the seq it was given.
func (s *clientSite) broadcast(t *testing.T, msg notify.SocketMessage) uint64 {
	t.Helper()
	if err := s.reg.Broadcast(context.Background(), msg); err != nil {
		t.Fatalf("Broadcast(%+v): %v", msg, err)
	}
	return s.reg.Position().Seq // the test is the only sender
}

func (s *clientSite) text(t *testing.T, text string) {
	t.Helper()
	if err := s.reg.NotifyText(context.Background(), text); err != nil {
		t.Fatalf("NotifyText(%q): %v", text, err)
	}
}

func receive(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(stepTimeout):
		t.Fatalf("timed out waiting for %s", what)
		return ""
	}
}

// clientLog is what the harness recorded for one client.
type clientLog struct {
	All    []logEntry `json:"all"`   // on("*")
	Typed  []logEntry `json:"typed"` // on(typed)
	States []string   `json:"states"`
	Gaps   []any      `json:"gaps"`
}

// logEntry is one handler call: an envelope's fields, or a text frame.
type logEntry struct {
	Seq   uint64 `json:"seq"`
	Type  string `json:"type"`
	Topic string `json:"topic"`
	Text  string `json:"text"`
	Data  any    `json:"data"`
}

// hasEntry is a JavaScript condition: client name recorded a message of
// type typ with this data.
func hasEntry(name, typ, data string) string {
	return fmt.Sprintf(`(logs[%s]?.all ?? []).some((e) => e.type === %s && e.data === %s)`,
		jsString(name), jsString(typ), jsString(data))
}
