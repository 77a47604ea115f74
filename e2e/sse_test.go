package e2e_test

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/examples/customers/app"
)

//go:embed testdata/eventsource.html
var eventSourcePage []byte

// TestEventSourceResumesAfterDrop opens notify's endpoint with the
// browser's own EventSource, no library and no query, and drops its
// connection twice: once before any message (it has seen only the
// notify.hello, whose id is its position) and once after some. While it is
// away messages are broadcast. EventSource reconnects by itself with
// Last-Event-ID, and must receive every message once, in order, each with
// the id <seq>:<epoch>, and nothing about a gap.
func TestEventSourceResumesAfterDrop(t *testing.T) {
	s := newClientSite(t)
	px := newProxy(t, s.srv.Listener.Addr().String())
	b := newBrowser(t)
	b.navigate(px.url() + "eventsource")
	b.waitFor("the hello", `events.some((e) => e.type === "notify.hello")`)

	var sent []notify.Position // each message's seq, with the epoch
	epoch := s.reg.Position().Epoch
	broadcast := func(data string) {
		sent = append(sent, notify.Position{Epoch: epoch, Seq: s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: data})})
	}
	drop := func(while ...string) {
		t.Helper()
		opens := eval[int](b, "opens")
		b.note("test: stop the proxy")
		px.stop()
		b.waitFor("the EventSource to lose its connection", `source.readyState !== EventSource.OPEN`)
		for _, data := range while {
			broadcast(data)
		}
		b.note("test: restart the proxy")
		px.start()
		b.waitFor("the EventSource to reconnect", fmt.Sprintf(`opens > %d && source.readyState === EventSource.OPEN`, opens))
	}

	drop("one", "two")
	b.waitFor("two", `events.some((e) => e.data.data === "two")`)
	broadcast("three")
	b.waitFor("three", `events.some((e) => e.data.data === "three")`)
	drop("four", "five")
	broadcast("six")
	b.waitFor("six", `events.some((e) => e.data.data === "six")`)

	type event struct {
		Type string
		ID   string
		Data string
	}
	got := eval[[]event](b, `events.filter((e) => e.type !== "notify.hello").map((e) => ({type: e.type, id: e.id, data: e.data.data}))`)
	var want []event
	for i, data := range []string{"one", "two", "three", "four", "five", "six"} {
		want = append(want, event{Type: "t.msg", ID: fmt.Sprintf("%d:%s", sent[i].Seq, sent[i].Epoch), Data: data})
	}
	if diff := gocmp.Diff(want, got); diff != "" {
		t.Errorf("what the EventSource received (-want +got):\n%s", diff)
	}
	if n := eval[int](b, `events.filter((e) => e.type === "notify.hello").length`); n != 3 {
		t.Errorf("the EventSource received %d notify.hello, want 3 (one per connection)", n)
	}
}

// TestClientAutoFallsBackToSSE runs notify.js in its default mode, "auto",
// against a server that refuses WebSocket upgrades (403, as a blocking
// proxy would). The client must fall back to SSE at once, receive every
// message, keep SSE for the page's life (its reconnections and a second
// client on the page go straight to it), and across a dropped connection
// lose nothing and repeat nothing. A new page tries WebSocket again.
func TestClientAutoFallsBackToSSE(t *testing.T) {
	s := newSite(t, app.RefuseUpgrades)
	px := newProxy(t, s.srv.Listener.Addr().String())
	b := newBrowser(t)
	b.navigate(px.url())
	b.waitFor("the harness", "window.ready === true")

	eval[chromedp.Void](b, `start("main", {listen: ["t.msg"]})`)
	receive(t, s.connected, "the client's connection")
	b.waitFor(`the client is "open"`, `clients.main.state === "open"`)
	if got := eval[string](b, "clients.main.transport"); got != "sse" {
		t.Fatalf("the client's transport is %q, want sse", got)
	}
	got := b.socketsNow()
	if diff := gocmp.Diff([]string{"ws", "sse"}, got.Kinds); diff != "" {
		t.Errorf("connections tried (-want +got):\n%s", diff)
	}
	if diff := gocmp.Diff([]int{http.StatusForbidden, http.StatusOK}, got.Handshakes); diff != "" {
		t.Errorf("handshakes (-want +got):\n%s", diff)
	}

	var want []logEntry
	broadcast := func(data string) {
		want = append(want, logEntry{Seq: s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: data}), Type: "t.msg", Data: data})
	}
	broadcast("one")
	broadcast("two")
	b.waitFor("two", hasEntry("main", "t.msg", "two"))

	b.note("test: a second client on the same page")
	eval[chromedp.Void](b, `start("second", {listen: ["t.msg"]})`)
	receive(t, s.connected, "the second client's connection")
	b.waitFor(`the second client is "open"`, `clients.second.state === "open"`)
	eval[chromedp.Void](b, `clients.second.close()`)

	b.note("test: drop the connection")
	created := b.socketsNow().Created
	px.stop()
	b.waitFor(`the client leaves "open"`, `clients.main.state !== "open"`)
	broadcast("three")
	broadcast("four")
	b.waitSockets("a failed reconnection attempt", func(s sockets) bool {
		return s.Created > created && s.Closed >= s.Created
	})
	px.start()
	b.waitFor("four", hasEntry("main", "t.msg", "four"))
	broadcast("five")
	b.waitFor("five", hasEntry("main", "t.msg", "five"))

	log := eval[clientLog](b, "logs.main")
	if diff := gocmp.Diff(want, log.All, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("what the client dispatched (-want +got):\n%s", diff)
	}
	if len(log.Gaps) != 0 {
		t.Errorf("onGap fired: %v", log.Gaps)
	}
	kinds := b.socketsNow().Kinds
	if slices.Index(kinds[1:], "ws") >= 0 {
		t.Errorf("connections tried %v: after the fallback, WebSocket was tried again", kinds)
	}

	b.note("test: a new page")
	b.navigate(px.url())
	b.waitFor("the harness", "window.ready === true")
	eval[chromedp.Void](b, `start("main", {listen: ["t.msg"]})`)
	b.waitFor(`the new page's client is "open"`, `clients.main.state === "open"`)
	if got := b.socketsNow().Kinds[len(kinds):]; !slices.Equal(got, []string{"ws", "sse"}) {
		t.Errorf("a new page tried %v, want [ws sse]: the choice is kept for one page's life", got)
	}
}

// TestClientSSESubscribeResumes changes a client's topics over SSE at run
// time while messages are broadcast to every topic, racing with the new
// stream's registration. notify.js reopens the stream with the new topics,
// resuming from the last seq it saw, so it must receive every message of
// its new set broadcast after that seq, and every untopiced one, exactly
// once and in order, and none of a topic it left.
func TestClientSSESubscribeResumes(t *testing.T) {
	s := newClientSite(t)
	b := newBrowser(t)
	b.navigate(s.srv.URL + "/")
	b.waitFor("the harness", "window.ready === true")
	eval[chromedp.Void](b, `start("main", {transport: "sse", topics: ["alpha"], listen: ["t.msg"]})`)
	receive(t, s.connected, "the client's connection")
	b.waitHello("alpha")

	var want []logEntry
	broadcast := func(topic, data string, wanted bool) {
		seq := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Topic: topic, Data: data})
		if wanted {
			want = append(want, logEntry{Seq: seq, Type: "t.msg", Topic: topic, Data: data})
		}
	}
	broadcast("", "before, to all", true)
	broadcast("alpha", "before, to alpha", true)
	// The new stream resumes after the last seq the client saw (this
	// alpha message's), so this beta message, broadcast after it, is
	// delivered once the client subscribes to beta.
	broadcast("beta", "before, to beta", true)
	b.waitFor("the messages before", hasEntry("main", "t.msg", "before, to alpha"))

	b.note("test: subscribe to beta, unsubscribe from alpha; broadcast meanwhile")
	eval[chromedp.Void](b, `clients.main.subscribe("beta"), clients.main.unsubscribe("alpha")`)
	for i := range 30 {
		topic := []string{"", "alpha", "beta", "gamma"}[i%4]
		broadcast(topic, fmt.Sprintf("during %d, to %q", i, topic), topic == "" || topic == "beta")
	}
	b.waitHello("beta")
	broadcast("", "fence", true)
	b.waitFor("the fence", hasEntry("main", "t.msg", "fence"))

	log := eval[clientLog](b, "logs.main")
	if diff := gocmp.Diff(want, log.All, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("what the client dispatched (-want +got):\n%s", diff)
	}
	if diff := gocmp.Diff([]string{"connecting", "open"}, log.States); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
	if kinds := b.socketsNow().Kinds; !slices.Equal(kinds, []string{"sse", "sse"}) {
		t.Errorf("connections %v, want two streams", kinds)
	}
}

// TestClientAutoFallsBackWhenUpgradeHangs runs notify.js in "auto" mode
// against a server in front of which something swallows WebSocket
// upgrades: the request is read and never answered, so the socket stays
// connecting with no error. After notify.js's 5 s the client must give up
// on it and open an SSE stream, and receive what is broadcast.
func TestClientAutoFallsBackWhenUpgradeHangs(t *testing.T) {
	var (
		mu   sync.Mutex
		held []net.Conn
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	swallow := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") == "" {
				h.ServeHTTP(w, r)
				return
			}
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijacking the upgrade: %v", err)
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		})
	}
	s := newSite(t, swallow)
	b := newBrowser(t)
	b.navigate(s.srv.URL + "/")
	b.waitFor("the harness", "window.ready === true")

	eval[chromedp.Void](b, `start("main", {listen: ["t.msg"]})`)
	receive(t, s.connected, "the client's connection over SSE, after the WebSocket's 5 s")
	b.waitFor(`the client is "open"`, `clients.main.state === "open"`)
	if got := eval[string](b, "clients.main.transport"); got != "sse" {
		t.Fatalf("the client's transport is %q, want sse", got)
	}
	if kinds := b.socketsNow().Kinds; !slices.Equal(kinds, []string{"ws", "sse"}) {
		t.Errorf("connections tried %v, want [ws sse]", kinds)
	}
	seq := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "one"})
	b.waitFor("the message", hasEntry("main", "t.msg", "one"))
	want := []logEntry{{Seq: seq, Type: "t.msg", Data: "one"}}
	if diff := gocmp.Diff(want, eval[clientLog](b, "logs.main").All, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("what the client dispatched (-want +got):\n%s", diff)
	}
}

// TestClientCrossOrigin runs notify.js on a page of one origin against a
// Registry on another (another port) that allows the page's origin and
// authorizes by cookie, as an API on its own host would. notify.js must
// connect over each transport with the page's cookie: a WebSocket sends it
// by itself, an EventSource only with withCredentials, which the server's
// CORS answer must then allow. A plain EventSource without credentials is
// refused (401), which shows that the cookie is what lets notify.js in.
func TestClientCrossOrigin(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			page := newClientSite(t)
			pageHost := page.srv.Listener.Addr().String()
			api := newClientSite(t, func(o *notify.Options) {
				o.OriginPatterns = []string{pageHost}
				o.Authorize = func(r *http.Request) (notify.Identity, error) {
					if c, err := r.Cookie("session"); err != nil || c.Value != "ada" {
						return notify.Identity{}, errors.New("no session")
					}
					return notify.Identity{User: "ada"}, nil
				}
			})
			b := newBrowser(t)
			b.navigate(page.srv.URL + "/")
			b.waitFor("the harness", "window.ready === true")
			eval[chromedp.Void](b, `document.cookie = "session=ada; path=/"`)

			b.note("test: a plain EventSource without credentials")
			eval[chromedp.Void](b, fmt.Sprintf(`window.bare = new EventSource(%s)`, jsString(api.srv.URL+"/ws")))
			// EventSource gives up for good on the 401. (It carries CORS
			// headers, the origin being allowed, so that notify.js's probe
			// could read it.)
			b.waitFor("the bare EventSource to fail for good", `bare.readyState === EventSource.CLOSED`)

			eval[chromedp.Void](b, fmt.Sprintf(`start("main", {url: %s, transport: %s, listen: ["t.msg"]})`,
				jsString(api.srv.URL+"/ws"), jsString(tr)))
			receive(t, api.connected, "the client's connection")
			b.waitFor(`the client is "open"`, `clients.main.state === "open"`)
			seq := api.broadcast(t, notify.SocketMessage{Type: "t.msg", User: "ada", Data: "for ada"})
			b.waitFor("the message", hasEntry("main", "t.msg", "for ada"))
			want := []logEntry{{Seq: seq, Type: "t.msg", Data: "for ada"}}
			if diff := gocmp.Diff(want, eval[clientLog](b, "logs.main").All, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("what the client dispatched (-want +got):\n%s", diff)
			}
			// The bare EventSource's 401, then notify.js's connection.
			wantHandshakes := []int{http.StatusUnauthorized, openStatus(tr)}
			if got := b.socketsNow().Handshakes; !slices.Equal(got, wantHandshakes) {
				t.Errorf("handshakes: %v, want %v", got, wantHandshakes)
			}
		})
	}
}
