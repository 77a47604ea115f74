package e2e_test

import (
	"context"
	"fmt"
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
// uncaught exceptions, and every WebSocket event with its frames), prints
// that timeline when the test fails, and keeps the text frames the page
// received for assertions.
type browser struct {
	t     *testing.T
	ctx   context.Context // the tab
	start time.Time

	mu       sync.Mutex
	timeline []string
	frames   []string      // text frames received by the page, in order
	created  int           // WebSockets the page opened (or tried to)
	closed   int           // of which have closed or failed
	changed  chan struct{} // closed and replaced when created or closed changes
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
	b := &browser{t: t, ctx: ctx, start: time.Now(), changed: make(chan struct{})}
	t.Cleanup(func() {
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
		b.countSocket(&b.created)
		line = fmt.Sprintf("ws#%s open %s", e.RequestID, e.URL)
	case *network.EventWebSocketHandshakeResponseReceived:
		line = fmt.Sprintf("ws#%s handshake %d", e.RequestID, int(e.Response.Status))
	case *network.EventWebSocketFrameReceived:
		payload := string(e.Response.PayloadData)
		if e.Response.Opcode == 1 {
			b.mu.Lock()
			b.frames = append(b.frames, payload)
			b.mu.Unlock()
		}
		line = fmt.Sprintf("ws#%s <- %s", e.RequestID, payload)
	case *network.EventWebSocketFrameSent:
		line = fmt.Sprintf("ws#%s -> %s", e.RequestID, e.Response.PayloadData)
	case *network.EventWebSocketFrameError:
		line = fmt.Sprintf("ws#%s error %s", e.RequestID, e.ErrorMessage)
	case *network.EventWebSocketClosed:
		b.countSocket(&b.closed)
		line = fmt.Sprintf("ws#%s closed", e.RequestID)
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
		line = fmt.Sprintf("EXCEPTION %s (%s:%d)", text, d.URL, d.LineNumber)
	case *log.EventEntryAdded:
		line = fmt.Sprintf("log.%s [%s] %s %s", e.Entry.Level, e.Entry.Source, e.Entry.Text, e.Entry.URL)
	default:
		return
	}
	b.note("%s", line)
}

func (b *browser) countSocket(n *int) {
	b.mu.Lock()
	*n++
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// waitSockets waits until cond holds for the number of WebSockets the page
// has created and the number of those that have closed (a refused attempt
// counts as both), for at most stepTimeout.
func (b *browser) waitSockets(what string, cond func(created, closed int) bool) {
	b.t.Helper()
	b.note("test: wait for %s", what)
	timeout := time.After(stepTimeout)
	for {
		b.mu.Lock()
		ok, changed := cond(b.created, b.closed), b.changed
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

// receivedFrames returns the text frames the page has received so far.
func (b *browser) receivedFrames() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.frames...)
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
