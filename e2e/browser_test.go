package e2e_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

const (
	// browserLifetime bounds one test's browser: when it passes, Chromium
	// is killed and every step still waiting fails.
	browserLifetime = 50 * time.Second

	// stepTimeout bounds one step: a navigation, an evaluation, or a wait
	// for the page to reach a condition.
	stepTimeout = 15 * time.Second
)

// browser is a headless Chromium with one tab, started for one test and
// closed by its cleanup. It records what the page did (console output,
// uncaught exceptions, every WebSocket event with its frames, every
// EventSource request with its events), prints that timeline when the test
// fails, fails the test if the page threw, and keeps what became of the
// page's WebSockets and EventSources for assertions.
type browser struct {
	t     *testing.T
	ctx   context.Context // the tab
	start time.Time

	mu       sync.Mutex
	timeline []string
	sockets  sockets
	streams  map[network.RequestID]bool   // the page's EventSource requests still open
	urls     map[network.RequestID]string // the URL of each WebSocket and EventSource
	changed  chan struct{}                // closed and replaced whenever sockets changes
	thrown   int                          // uncaught exceptions in the page
}

// sockets is what became of the page's connections to a server, its
// WebSockets and its EventSources alike, in the order the browser reported
// it.
type sockets struct {
	Created int      // connections opened, or tried
	Kinds   []string // "ws" or "sse", for each one created
	Closed  int      // of which have closed or failed

	// Handshakes lists what each attempt that reached a server was
	// answered: 101 (WebSocket) or 200 (EventSource), or the status of a
	// refusal (400, 403, 503, ...).
	Handshakes []int

	// Frames lists the text frames received over every socket, and the
	// data of the events received over every EventSource (named or not).
	Frames []string

	// Hellos lists the URL of the connection each notify.hello came over.
	Hellos []string
}

// newBrowser starts Chromium with a fresh profile. The flags matter on this
// kind of machine: as root Chromium only starts with --no-sandbox, and on a
// closed network its background services (component updates, sync,
// metrics, QUIC probes) would try to reach Google at every start and have
// their connections refused.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
	)
	// The browser's whole life is bounded, not each call: chromedp binds
	// the process to the context of the first Run.
	life, endLife := context.WithTimeout(context.Background(), browserLifetime)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(life, opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx, start: time.Now(), changed: make(chan struct{}), streams: map[network.RequestID]bool{}, urls: map[network.RequestID]string{}}
	t.Cleanup(func() {
		b.mu.Lock()
		thrown := b.thrown
		b.mu.Unlock()
		if thrown > 0 {
			t.Errorf("the page threw %d uncaught exceptions; see EXCEPTION in the timeline", thrown)
		}
		if t.Failed() {
			b.dump()
		}
		// Close Chromium gracefully, so that it has exited (and stopped
		// writing to its profile in t.TempDir) before the directory is
		// removed; then free chromedp's goroutines.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Cancel(cctx); err != nil && life.Err() == nil {
			t.Logf("closing chromium: %v", err)
		}
		cancelTab()
		cancelAlloc()
		endLife()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	if err := chromedp.Listen(ctx, b.record); err != nil {
		t.Fatalf("listening to the tab's events: %v", err)
	}
	return b
}

// record keeps one event of the tab. It runs on chromedp's reading
// goroutine, so it only appends under the lock.
func (b *browser) record(ev any) {
	var line string
	switch e := ev.(type) {
	case *network.EventWebSocketCreated:
		b.update(func(s *sockets) {
			b.urls[e.RequestID] = e.URL
			s.Created++
			s.Kinds = append(s.Kinds, "ws")
		})
		line = fmt.Sprintf("ws#%s open %s", e.RequestID, e.URL)
	case *network.EventWebSocketHandshakeResponseReceived:
		b.update(func(s *sockets) { s.Handshakes = append(s.Handshakes, int(e.Response.Status)) })
		line = fmt.Sprintf("ws#%s handshake %d", e.RequestID, int(e.Response.Status))
	case *network.EventWebSocketFrameReceived:
		payload := string(e.Response.PayloadData)
		if e.Response.Opcode == 1 {
			b.update(func(s *sockets) { b.received(s, e.RequestID, payload) })
		}
		line = fmt.Sprintf("ws#%s <- %s", e.RequestID, payload)
	case *network.EventWebSocketFrameSent:
		line = fmt.Sprintf("ws#%s -> %s", e.RequestID, e.Response.PayloadData)
	case *network.EventWebSocketFrameError:
		// A refused upgrade gets no handshake event, only this error.
		var status int
		if _, err := fmt.Sscanf(e.ErrorMessage, "Error during WebSocket handshake: Unexpected response code: %d", &status); err == nil {
			b.update(func(s *sockets) { s.Handshakes = append(s.Handshakes, status) })
		}
		line = fmt.Sprintf("ws#%s error %s", e.RequestID, e.ErrorMessage)
	case *network.EventWebSocketClosed:
		b.update(func(s *sockets) { s.Closed++ })
		line = fmt.Sprintf("ws#%s closed", e.RequestID)
	case *network.EventRequestWillBeSent:
		if e.Type != network.ResourceTypeEventSource {
			return
		}
		b.update(func(s *sockets) {
			b.streams[e.RequestID] = true
			b.urls[e.RequestID] = e.Request.URL
			s.Created++
			s.Kinds = append(s.Kinds, "sse")
		})
		line = fmt.Sprintf("sse#%s open %s", e.RequestID, e.Request.URL)
	case *network.EventResponseReceived:
		if e.Type != network.ResourceTypeEventSource {
			return
		}
		b.update(func(s *sockets) { s.Handshakes = append(s.Handshakes, int(e.Response.Status)) })
		line = fmt.Sprintf("sse#%s response %d %s", e.RequestID, int(e.Response.Status), e.Response.MimeType)
	case *network.EventEventSourceMessageReceived:
		b.update(func(s *sockets) { b.received(s, e.RequestID, e.Data) })
		line = fmt.Sprintf("sse#%s <- id %q event %q: %s", e.RequestID, e.EventID, e.EventName, e.Data)
	case *network.EventLoadingFailed:
		if !b.endStream(e.RequestID) {
			return
		}
		line = fmt.Sprintf("sse#%s failed %s (canceled %t)", e.RequestID, e.ErrorText, e.Canceled)
	case *network.EventLoadingFinished:
		if !b.endStream(e.RequestID) {
			return
		}
		line = fmt.Sprintf("sse#%s ended by the server", e.RequestID)
	case *runtime.EventConsoleAPICalled:
		args := make([]string, len(e.Args))
		for i, a := range e.Args {
			args[i] = remoteString(a)
		}
		line = fmt.Sprintf("console.%s %s", e.Type, strings.Join(args, " "))
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + remoteString(d.Exception)
		}
		b.mu.Lock()
		b.thrown++
		b.mu.Unlock()
		line = fmt.Sprintf("EXCEPTION %s (%s:%d)", text, d.URL, d.LineNumber)
	case *log.EventEntryAdded:
		line = fmt.Sprintf("log.%s [%s] %s %s", e.Entry.Level, e.Entry.Source, e.Entry.Text, e.Entry.URL)
	default:
		return
	}
	b.note("%s", line)
}

func (b *browser) update(f func(*sockets)) {
	b.mu.Lock()
	f(&b.sockets)
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// received records a text frame or an event's data that came over the
// connection id. It runs under b.mu, from update.
func (b *browser) received(s *sockets, id network.RequestID, data string) {
	s.Frames = append(s.Frames, data)
	if strings.HasPrefix(data, `{"type":"notify.hello",`) {
		s.Hellos = append(s.Hellos, b.urls[id])
	}
}

// endStream counts the end of request id if it is one of the page's
// EventSources, and reports whether it was.
func (b *browser) endStream(id network.RequestID) bool {
	b.mu.Lock()
	ok := b.streams[id]
	delete(b.streams, id)
	b.mu.Unlock()
	if ok {
		b.update(func(s *sockets) { s.Closed++ })
	}
	return ok
}

// socketsNow returns a copy of what the page's WebSockets did so far.
func (b *browser) socketsNow() sockets {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sockets
	s.Kinds = slices.Clone(s.Kinds)
	s.Handshakes = slices.Clone(s.Handshakes)
	s.Frames = slices.Clone(s.Frames)
	s.Hellos = slices.Clone(s.Hellos)
	return s
}

// waitSockets waits until cond holds for the page's WebSockets, for at
// most stepTimeout. cond runs under the browser's lock and must not keep s.
func (b *browser) waitSockets(what string, cond func(s sockets) bool) {
	b.t.Helper()
	b.note("test: wait for %s", what)
	timeout := time.After(stepTimeout)
	for {
		b.mu.Lock()
		ok, changed := cond(b.sockets), b.changed
		b.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			b.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// note adds a line to the timeline; tests use it to mark their own steps.
func (b *browser) note(format string, args ...any) {
	line := fmt.Sprintf("%7.3fs  ", time.Since(b.start).Seconds()) + fmt.Sprintf(format, args...)
	b.mu.Lock()
	b.timeline = append(b.timeline, line)
	b.mu.Unlock()
}

func (b *browser) dump() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.t.Logf("browser timeline (%d events):\n%s", len(b.timeline), strings.Join(b.timeline, "\n"))
}

func remoteString(o *runtime.RemoteObject) string {
	switch {
	case o == nil:
		return "<nil>"
	case len(o.Value) > 0:
		return string(o.Value)
	case o.Description != "":
		return o.Description
	}
	return string(o.Type)
}

// run runs one action in the tab, bounded by stepTimeout; an error ends
// the test.
func run[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout+2*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// navigate loads url in the tab.
func (b *browser) navigate(url string) {
	b.t.Helper()
	b.note("test: navigate to %s", url)
	run(b, "navigate to "+url, chromedp.Navigate(url))
}

// waitFor waits until the JavaScript expression cond is truthy in the page,
// checking every 20ms, for at most stepTimeout.
func (b *browser) waitFor(what, cond string) {
	b.t.Helper()
	b.note("test: wait for %s", what)
	run(b, "waiting for "+what, chromedp.Poll[chromedp.Void](cond,
		chromedp.WithPollingInterval(20*time.Millisecond),
		chromedp.WithPollingTimeout(stepTimeout)))
}

// eval evaluates a JavaScript expression in the page and decodes its
// JSON value into a T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	return run(b, "evaluating "+expr, chromedp.Evaluate[T](expr))
}

// waitHello waits for a notify.hello over a connection whose URL
// subscribes to exactly topics, in any order.
func (b *browser) waitHello(topics ...string) {
	b.t.Helper()
	want := slices.Sorted(slices.Values(topics))
	b.waitSockets(fmt.Sprintf("a notify.hello over a connection with topics %q", want), func(s sockets) bool {
		return slices.ContainsFunc(s.Hellos, func(raw string) bool {
			u, err := url.Parse(raw)
			return err == nil && slices.Equal(slices.Sorted(slices.Values(u.Query()["topic"])), want)
		})
	})
}
