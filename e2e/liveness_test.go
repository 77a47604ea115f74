package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wsnotify/notify"
)

// stateTimes is a run callback for start(): it records in window.times
// each state the client enters with performance.now().
const stateTimes = `(c) => { window.times = []; c.onState((s) => times.push([s, performance.now()])); }`

// frozenSite starts a site behind a proxy and a page whose client "main"
// (over transport tr, with extra options) is open and has received one
// message. It returns the site, the proxy, the browser and that message.
func frozenSite(t *testing.T, tr, extra string) (*clientSite, *proxy, *browser, logEntry) {
	t.Helper()
	// A heartbeat tick of 250 ms, so that a client may ask for a keep-alive
	// every second.
	s := newClientSite(t, func(o *notify.Options) { o.PingInterval = time.Second })
	// Without keep-alives the browser holds no idle connection to the
	// page's origin that freeze would silence too, and that it would reuse
	// for the next EventSource: only the notification stream is frozen.
	s.srv.Config.SetKeepAlivesEnabled(false)
	px := newProxy(t, s.srv.Listener.Addr().String())
	b := newBrowser(t)
	b.navigate(px.url())
	b.waitFor("the harness", "window.ready === true")
	eval[chromedp.Void](b, fmt.Sprintf(`start("main", {transport: %s, listen: ["t.msg"], %s}, null, %s)`, jsString(tr), extra, stateTimes))
	receive(t, s.connected, "the client's connection")
	b.waitFor(`the client is "open"`, `clients.main.state === "open"`)
	one := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "one"})
	b.waitFor("one", hasEntry("main", "t.msg", "one"))
	return s, px, b, logEntry{Seq: one, Type: "t.msg", Data: "one"}
}

// catchUp broadcasts "two" on a connection that is frozen, waits for the
// client to replace it (a second "open") and receive "two", broadcasts
// "three", and checks that the client dispatched every message once, in
// order, with no gap.
func catchUp(t *testing.T, s *clientSite, b *browser, one logEntry) {
	t.Helper()
	two := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "two"})
	b.waitFor("a new connection", `logs.main.states.filter((s) => s === "open").length === 2`)
	b.waitFor("two, replayed", hasEntry("main", "t.msg", "two"))
	three := s.broadcast(t, notify.SocketMessage{Type: "t.msg", Data: "three"})
	b.waitFor("three", hasEntry("main", "t.msg", "three"))
	got := eval[clientLog](b, "logs.main")
	want := []logEntry{one, {Seq: two, Type: "t.msg", Data: "two"}, {Seq: three, Type: "t.msg", Data: "three"}}
	if diff := gocmp.Diff(want, got.All, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("what the client dispatched (-want +got):\n%s", diff)
	}
	if len(got.Gaps) != 0 {
		t.Errorf("onGap fired: %v", got.Gaps)
	}
}

// TestClientNoticesDeadConnection silences the page's connection (the
// proxy stops forwarding without closing anything, as a network that died
// silently would) while the client asks for a keep-alive every second:
// nothing arrives any more, and the browser reports nothing. The client
// must notice within its window (2 × 1 s + 1 s), replace the connection,
// and catch up with nothing lost. Over each transport.
func TestClientNoticesDeadConnection(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s, px, b, one := frozenSite(t, tr, "keepAlive: 1000")
			if got := eval[int](b, "clients.main.granted"); got != 1000 {
				t.Fatalf("the server granted a keep-alive every %d ms, want 1000", got)
			}
			eval[chromedp.Void](b, `window.frozenAt = performance.now()`)
			b.note("test: freeze the connection")
			px.freeze()
			catchUp(t, s, b, one)
			// The window is 3 s from the last thing received; generous
			// slack for a loaded machine, the figure is logged.
			noticed := eval[float64](b, `times.find(([s, at]) => s === "closed" && at > frozenAt)[1] - frozenAt`)
			t.Logf("noticed the dead connection %.0f ms after it froze (window 3000 ms)", noticed)
			if noticed > 3000+2500 {
				t.Errorf("noticed the dead connection after %.0f ms, want within the 3 s window", noticed)
			}
		})
	}
}

// TestClientReconnectsWhenOnline silences the page's connection, with a
// keep-alive window of two minutes, and fires the browser's "online"
// event, as when a laptop's network comes back: the client must replace
// the connection at once, not after the window, and catch up with nothing
// lost. Over each transport.
func TestClientReconnectsWhenOnline(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s, px, b, one := frozenSite(t, tr, "keepAlive: 60000")
			px.freeze()
			eval[chromedp.Void](b, `window.dispatchEvent(new Event("online"))`)
			catchUp(t, s, b, one)
		})
	}
}

// TestClientReconnectsWhenVisibleAgain hides the page (as the browser
// reports it) for longer than the client's window, with its connection
// silenced, then shows it: the client must replace the connection as soon
// as the page is visible, and catch up with nothing lost. A page hidden
// for less than the window keeps its connection. Over each transport.
func TestClientReconnectsWhenVisibleAgain(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			// A 60 s keep-alive: the liveness timer cannot be what
			// replaces the connection within the test.
			s, px, b, one := frozenSite(t, tr, "keepAlive: 60000")
			eval[chromedp.Void](b, `(() => {
				window.visibility = "visible";
				Object.defineProperty(document, "visibilityState", { get: () => window.visibility, configurable: true });
				window.setVisibility = (v) => { window.visibility = v; document.dispatchEvent(new Event("visibilitychange")); };
			})()`)
			b.note("test: hide and show the page at once")
			eval[chromedp.Void](b, `setVisibility("hidden"); setVisibility("visible")`)
			if n := eval[int](b, `logs.main.states.length`); n != 2 {
				t.Fatalf("a page hidden briefly changed its client's state: %v", eval[[]string](b, "logs.main.states"))
			}
			px.freeze()
			b.note("test: hide the page for longer than the window")
			eval[chromedp.Void](b, `setVisibility("hidden"); clients.main.hiddenAt -= clients.main.window() + 1`)
			eval[chromedp.Void](b, `setVisibility("visible")`)
			catchUp(t, s, b, one)
		})
	}
}

// TestClientFollowsShutdownWait shuts down the page's server, which asks
// each client to wait a random delay before it reconnects (over a 4 s
// window: Options.ReconnectRate 0.25, one client), while a second server
// takes its place behind the proxy. notify.js's own backoff is a
// millisecond; it must wait the delay the server asked for. Over each
// transport.
func TestClientFollowsShutdownWait(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := newClientSite(t, func(o *notify.Options) { o.ReconnectRate = 0.25 })
			next := newClientSite(t)
			// The browser must not reuse an idle connection to the old
			// server for its next request, as it could not to a process
			// that exited.
			s.srv.Config.SetKeepAlivesEnabled(false)
			px := newProxy(t, s.srv.Listener.Addr().String())
			b := newBrowser(t)
			b.navigate(px.url())
			b.waitFor("the harness", "window.ready === true")
			// Record the wait the page was told, as it came over the wire.
			eval[chromedp.Void](b, `(() => {
				window.waits = [];
				const WS = window.WebSocket, ES = window.EventSource;
				window.WebSocket = class extends WS {
					constructor(...a) { super(...a); this.addEventListener("close", (e) => { const m = /reconnect in (\d+)ms/.exec(e.reason); if (m) waits.push(Number(m[1])); }); }
				};
				window.EventSource = class extends ES {
					constructor(...a) { super(...a); this.addEventListener("notify.close", (e) => waits.push(JSON.parse(e.data).data.wait)); }
				};
			})()`)
			eval[chromedp.Void](b, fmt.Sprintf(`start("main", {transport: %s, minDelay: 1, maxDelay: 1}, null, %s)`, jsString(tr), stateTimes))
			b.waitFor(`the client is "open"`, `clients.main.state === "open"`)

			px.setBackend(next.srv.Listener.Addr().String())
			b.note("test: shut the server down")
			if err := s.reg.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			receive(t, next.connected, "the client's connection to the next server")
			wait := eval[float64](b, "waits[0]")
			waited := eval[float64](b, `(() => {
				const closed = times.findIndex(([s]) => s === "closed");
				return times[closed + 1][1] - times[closed][1];
			})()`)
			t.Logf("told to wait %.0f ms, waited %.0f ms", wait, waited)
			if wait < 0 || wait >= 4000 {
				t.Errorf("told to wait %.0f ms, want within the 4 s window", wait)
			}
			if waited < wait-5 { // timers are not early; a millisecond's rounding
				t.Errorf("waited %.0f ms before reconnecting, want at least the %.0f ms the server asked", waited, wait)
			}
		})
	}
}
