package e2e_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wsnotify/notify"
)

// tokenSite is a site whose Registry authorizes by the access_token that
// notify.js's token option puts in the URL. GET /token issues a fresh
// token, valid for ttl; the token "good" is valid for ever; any other is
// refused (401). It counts probes and the tokens Authorize accepted.
type tokenSite struct {
	*clientSite
	mu       sync.Mutex
	expiries map[string]time.Time
	accepted []string // the tokens Authorize accepted, in order
	probes   atomic.Int32
}

func newTokenSite(t *testing.T, ttl time.Duration, tweak ...func(*notify.Options)) *tokenSite {
	ts := &tokenSite{expiries: map[string]time.Time{}}
	issued := 0
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get(notify.ProbeParam) == "1" {
				ts.probes.Add(1)
			}
			if r.URL.Path != "/token" {
				next.ServeHTTP(w, r)
				return
			}
			ts.mu.Lock()
			issued++
			tok := "tok-" + strconv.Itoa(issued)
			ts.expiries[tok] = time.Now().Add(ttl)
			ts.mu.Unlock()
			w.Header().Set("Cache-Control", "no-store")
			fmt.Fprint(w, tok)
		})
	}
	authorize := func(o *notify.Options) {
		o.PingInterval = time.Second // expiry is checked every 250 ms
		o.Authorize = func(r *http.Request) (notify.Identity, error) {
			tok := r.URL.Query().Get("access_token")
			ts.mu.Lock()
			defer ts.mu.Unlock()
			exp, ok := ts.expiries[tok]
			if tok != "good" && !ok {
				return notify.Identity{}, errors.New("bad token")
			}
			if r.URL.Query().Get(notify.ProbeParam) == "" {
				ts.accepted = append(ts.accepted, tok)
			}
			return notify.Identity{User: "ada", Expires: exp}, nil
		}
	}
	ts.clientSite = newSite(t, wrap, append([]func(*notify.Options){authorize}, tweak...)...)
	return ts
}

func (ts *tokenSite) acceptedTokens() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.accepted)
}

// TestClientTokenRenewedOnExpiry runs notify.js with a token function that
// fetches a token valid for 1.5 s. When the server closes the connection
// because the token expired (1008), the client must ask for a fresh token
// and reconnect at once (its minDelay is an hour), resume, and lose
// nothing: a message broadcast right after the close arrives, in order,
// with no gap. Over each transport.
func TestClientTokenRenewedOnExpiry(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newTokenSite(t, 1500*time.Millisecond)
			b := newBrowser(t)
			b.navigate(s.srv.URL + "/")
			b.waitFor("the harness", "window.ready === true")
			eval[chromedp.Void](b, fmt.Sprintf(`start("main", {transport: %s, minDelay: 3600000, maxDelay: 3600000, listen: ["t.msg"],
				token: async () => (await fetch("/token")).text()})`, jsString(tr)))
			receive(t, s.connected, "the client's connection")
			b.waitFor(`the client is "open"`, `clients.main.state === "open"`)
			one := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "one"})
			b.waitFor("one", hasEntry("main", "t.msg", "one"))

			b.waitFor("the server's close for the expired token", `closeCodes.includes(1008)`)
			two := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "two"})
			b.waitFor("two, after the reconnection", hasEntry("main", "t.msg", "two"))
			three := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "three"})
			b.waitFor("three", hasEntry("main", "t.msg", "three"))

			got := eval[clientLog](b, "logs.main")
			want := []logEntry{
				{Seq: one, Type: "t.msg", Data: "one"},
				{Seq: two, Type: "t.msg", Data: "two"},
				{Seq: three, Type: "t.msg", Data: "three"},
			}
			if diff := gocmp.Diff(want, got.All, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("what the client dispatched (-want +got):\n%s", diff)
			}
			if len(got.Gaps) != 0 {
				t.Errorf("onGap fired: %v", got.Gaps)
			}
			tokens := s.acceptedTokens()
			if len(tokens) < 2 || tokens[0] == tokens[1] {
				t.Errorf("tokens accepted: %q, want a fresh one for the reconnection", tokens)
			}
		})
	}
}

// TestClientUnauthorized runs notify.js with a token the server refuses
// (401). Browsers hide that status from scripts; the client must find it
// out with one probe, report "unauthorized" and stop retrying although its
// backoff is a millisecond, and connect when the app calls reconnect()
// with a good token. Over each transport.
func TestClientUnauthorized(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newTokenSite(t, time.Hour)
			b := newBrowser(t)
			b.navigate(s.srv.URL + "/")
			b.waitFor("the harness", "window.ready === true")
			eval[chromedp.Void](b, fmt.Sprintf(`window.tok = "stolen";
				start("main", {transport: %s, minDelay: 1, maxDelay: 1, listen: ["t.msg"], token: () => window.tok})`, jsString(tr)))
			b.waitFor(`the client is "unauthorized"`, `clients.main.state === "unauthorized"`)
			// A client that kept retrying every millisecond would make
			// hundreds of attempts in this half second.
			eval[chromedp.Void](b, `setTimeout(() => window.settled = true, 500)`)
			b.waitFor("half a second", `window.settled === true`)
			// (Chromium reports a WebSocket's 401 as "HTTP Authentication
			// failed", without the status: count the attempts.)
			if got := b.socketsNow().Created; got != 1 {
				t.Errorf("%d connections tried while unauthorized, want 1", got)
			}
			if n := s.probes.Load(); n != 1 {
				t.Errorf("%d probes, want 1", n)
			}

			b.note("test: reconnect with a good token")
			eval[chromedp.Void](b, `window.tok = "good"; clients.main.reconnect()`)
			receive(t, s.connected, "the client's connection")
			b.waitFor(`the client is "open"`, `clients.main.state === "open"`)
			seq := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "welcome"})
			b.waitFor("the message", hasEntry("main", "t.msg", "welcome"))
			got := eval[clientLog](b, "logs.main")
			if diff := gocmp.Diff([]logEntry{{Seq: seq, Type: "t.msg", Data: "welcome"}}, got.All, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("what the client dispatched (-want +got):\n%s", diff)
			}
			if diff := gocmp.Diff([]string{"connecting", "closed", "unauthorized", "connecting", "open"}, got.States); diff != "" {
				t.Errorf("states (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientRetriesWhenBusy has the server refuse notify.js with 429 (the
// user's one connection is taken). That is not a refusal of the
// credentials: the client must keep retrying, never report
// "unauthorized", and connect once the other connection has gone.
func TestClientRetriesWhenBusy(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newTokenSite(t, time.Hour, func(o *notify.Options) { o.MaxConnectionsPerUser = 1 })
			other, _, err := websocket.Dial(t.Context(), "ws"+s.srv.URL[len("http"):]+"/ws?access_token=good", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer other.CloseNow()
			other.CloseRead(t.Context()) // reads, so that it answers the heartbeat's pings
			receive(t, s.connected, "the other connection")

			b := newBrowser(t)
			b.navigate(s.srv.URL + "/")
			b.waitFor("the harness", "window.ready === true")
			eval[chromedp.Void](b, fmt.Sprintf(`start("main", {transport: %s, minDelay: 50, maxDelay: 200, token: () => "good"})`, jsString(tr)))
			b.waitSockets("three refusals", func(s sockets) bool {
				return len(s.Handshakes) >= 3
			})
			other.Close(websocket.StatusNormalClosure, "")
			b.waitFor(`the client is "open"`, `clients.main.state === "open"`)
			hs := b.socketsNow().Handshakes
			for _, h := range hs[:len(hs)-1] {
				if h != http.StatusTooManyRequests {
					t.Errorf("handshakes %v: want 429 until the last", hs)
					break
				}
			}
			if states := eval[[]string](b, "logs.main.states"); slices.Contains(states, "unauthorized") {
				t.Errorf("states %q: a 429 is not a refusal of the credentials", states)
			}
			if n := s.probes.Load(); n < 3 {
				t.Errorf("%d probes for %d failed connections", n, len(hs)-1)
			}
		})
	}
}

// TestClientCrossOriginUnauthorized runs notify.js on a page of one origin
// against a Registry on another that allows the page's origin and
// authorizes by cookie. Without the cookie the client must report
// "unauthorized", which it can only learn if the refusal of its probe
// carries CORS headers (a cross-origin fetch of an answer without them
// fails like a network error); with the cookie set, reconnect() connects.
func TestClientCrossOriginUnauthorized(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			page := newClientSite(t)
			api := newClientSite(t, func(o *notify.Options) {
				o.OriginPatterns = []string{page.srv.Listener.Addr().String()}
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
			eval[chromedp.Void](b, fmt.Sprintf(`start("main", {url: %s, transport: %s, minDelay: 1, maxDelay: 1, listen: ["t.msg"]})`,
				jsString(api.srv.URL+"/ws"), jsString(tr)))
			b.waitFor(`the client is "unauthorized"`, `clients.main.state === "unauthorized"`)

			eval[chromedp.Void](b, `document.cookie = "session=ada; path=/"; clients.main.reconnect()`)
			receive(t, api.connected, "the client's connection")
			b.waitFor(`the client is "open"`, `clients.main.state === "open"`)
			api.broadcast(t, notify.SocketMessage{Type: "t.msg", User: "ada", Data: "for ada"})
			b.waitFor("the message", hasEntry("main", "t.msg", "for ada"))
		})
	}
}

// TestClientSSESubscribeFreshToken revokes the token an SSE client opened
// its stream with, then subscribes to a topic, which over SSE opens a new
// stream: it must be opened with a fresh token, and deliver the new
// topic's messages, not be refused and reported "unauthorized".
func TestClientSSESubscribeFreshToken(t *testing.T) {
	chromium(t)
	s := newTokenSite(t, time.Hour)
	b := newBrowser(t)
	b.navigate(s.srv.URL + "/")
	b.waitFor("the harness", "window.ready === true")
	eval[chromedp.Void](b, `start("main", {transport: "sse", listen: ["t.msg"], token: async () => (await fetch("/token")).text()})`)
	b.waitFor(`the client is "open"`, `clients.main.state === "open"`)
	first := s.acceptedTokens()[0]
	s.mu.Lock()
	delete(s.expiries, first) // revoked: Authorize refuses it from now on
	s.mu.Unlock()

	eval[chromedp.Void](b, `clients.main.subscribe("beta")`)
	b.waitHello("beta")
	seq := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Topic: "beta", Data: "beta 1"})
	b.waitFor("beta 1", hasEntry("main", "t.msg", "beta 1"))
	got := eval[clientLog](b, "logs.main")
	if diff := gocmp.Diff([]logEntry{{Seq: seq, Type: "t.msg", Topic: "beta", Data: "beta 1"}}, got.All, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("what the client dispatched (-want +got):\n%s", diff)
	}
	if diff := gocmp.Diff([]string{"connecting", "open"}, got.States); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
	if tokens := s.acceptedTokens(); len(tokens) != 2 || tokens[1] == first {
		t.Errorf("tokens accepted: %q, want the first and a fresh one for the new stream", tokens)
	}
}
