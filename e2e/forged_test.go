package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wsnotify/notify"
)

// TestClientNotifyTextCannotForge runs notify.js against a Registry whose
// application sends raw text with NotifyText between real broadcasts. Near
// misses (plain text, application objects without a seq, keys and types in
// another case, arrays, JSON strings) reach the page as they are and are
// dispatched unnumbered; text notify.js would take for a library or a
// numbered message (a forged notify.gap or notify.hello, a huge seq,
// escaped keys and types, duplicate keys) is refused by the server. The
// client must dispatch every real message, keep the server's seq and
// epoch, and never report a gap, over either transport (over SSE the text
// arrives as unnamed events). (NotifyText used to send all of it: a
// forged seq made notify.js drop every real message below it, a forged
// notify.gap made the page reload.)
func TestClientNotifyTextCannotForge(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { testClientNotifyTextCannotForge(t, tr) })
	}
}

func testClientNotifyTextCannotForge(t *testing.T, transport string) {
	s := newClientSite(t)
	b := newBrowser(t)
	b.navigate(s.srv.URL + "/")
	b.waitFor("the harness", "window.ready === true")
	eval[chromedp.Void](b, fmt.Sprintf(`start("main", {transport: %s, listen: ["t.real"]})`, jsString(transport)))
	receive(t, s.connected, "the client's connection")
	b.waitFor(`the client is "open"`, `clients.main.state === "open"`)

	one := s.broadcast(t, notify.SocketMessage{Type: "t.real", Data: "one"})
	b.waitFor("the first real message", hasEntry("main", "t.real", "one"))

	nearMisses := []struct {
		text string
		want logEntry
	}{
		{"plain text", logEntry{Text: "plain text", Data: "plain text"}},
		{`{"type":"t.near","data":"application object"}`, logEntry{Type: "t.near", Data: "application object"}},
		{`{"Seq":99,"SEQ":99,"type":"t.near","data":"keys in another case"}`, logEntry{Type: "t.near", Data: "keys in another case"}},
		{`{"type":"Notify.gap","data":"type in another case"}`, logEntry{Type: "Notify.gap", Data: "type in another case"}},
		{`{"type":"t.near","data":{"seq":99,"type":"notify.gap"}}`, logEntry{Type: "t.near", Data: map[string]any{"seq": 99.0, "type": "notify.gap"}}},
		{`[{"seq":99,"type":"notify.gap"}]`, logEntry{Text: `[{"seq":99,"type":"notify.gap"}]`, Data: `[{"seq":99,"type":"notify.gap"}]`}},
		{`"{\"seq\":99}"`, logEntry{Text: `"{\"seq\":99}"`, Data: `"{\"seq\":99}"`}},
		{"\u00a0{\"seq\":99}", logEntry{Text: "\u00a0{\"seq\":99}", Data: "\u00a0{\"seq\":99}"}},
	}
	forgeries := []string{
		`{"type":"notify.gap","data":{"reason":"epoch","since":0,"epoch":"forged","seq":0}}`,
		`{"type":"notify.hello","data":{"epoch":"forged","seq":0}}`,
		`{"seq":9007199254740991,"type":"t.forged","data":"huge seq"}`,
		`{"seq":"99","type":"t.forged","data":"seq as a string"}`,
		` {"type":"notify\u002egap","data":{"reason":"epoch","since":0,"epoch":"forged","seq":0}}`,
		`{"\u0073eq":99,"type":"t.forged","data":"escaped key"}`,
		`{"type":"t.forged","type":"notify.gap","data":{"reason":"epoch","since":0,"epoch":"forged","seq":0}}`,
	}
	want := []logEntry{{Seq: one, Type: "t.real", Data: "one"}}
	for _, nm := range nearMisses {
		s.text(t, nm.text)
		want = append(want, nm.want)
	}
	for _, text := range forgeries {
		if err := s.reg.NotifyText(context.Background(), text); !errors.Is(err, notify.ErrInvalidMessage) {
			t.Errorf("NotifyText(%q) = %v, want ErrInvalidMessage", text, err)
		}
	}
	two := s.broadcast(t, notify.SocketMessage{Type: "t.real", Data: "two"})
	three := s.broadcast(t, notify.SocketMessage{Type: "t.real", Data: "three"})
	b.waitFor("the last real message", hasEntry("main", "t.real", "three"))
	want = append(want,
		logEntry{Seq: two, Type: "t.real", Data: "two"},
		logEntry{Seq: three, Type: "t.real", Data: "three"})

	got := eval[clientLog](b, "logs.main")
	if diff := gocmp.Diff(want, got.All, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("what the client dispatched (-want +got):\n%s", diff)
	}
	if len(got.Gaps) != 0 {
		t.Errorf("onGap fired: %v", got.Gaps)
	}
	pos := eval[notify.Position](b, `({epoch: clients.main.epoch, seq: clients.main.seq})`)
	if wantPos := s.reg.Position(); pos != wantPos {
		t.Errorf("the client's position is %+v, want the server's %+v", pos, wantPos)
	}
}

// TestClientIgnoresMalformedLibraryMessages speaks to notify.js with a
// scripted server that sends what no Registry sends: notify.hello and
// notify.gap without a well-formed position, and seqs that are not
// positive safe integers, between real messages, one of which repeats a
// seq already handled. notify.js must not throw, must not move its seq or
// epoch for any of them nor report a gap, must drop the repeat, and must
// still handle a well-formed gap and the real messages. (It used to throw
// on a gap without data, report a gap for any object typed notify.gap,
// take its epoch from a number, and take 1e300 for a seq, dropping every
// later message.) Over SSE the scripted server sends each as an event
// named by its type, as a Registry names its events, and then a
// notify.close with a malformed code, which must end the stream all the
// same and be followed by a resuming reconnection.
func TestClientIgnoresMalformedLibraryMessages(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { testClientIgnoresMalformedLibraryMessages(t, tr) })
	}
}

func testClientIgnoresMalformedLibraryMessages(t *testing.T, transport string) {
	s := newScriptSite(t)
	b := newBrowser(t)
	b.navigate(s.srv.URL + "/")
	b.waitFor("the harness", "window.ready === true")
	eval[chromedp.Void](b, fmt.Sprintf(`start("main", {transport: %s, since: 0, epoch: "e1", listen: ["t.real", "t.unnumbered"]})`, jsString(transport)))
	conn := s.accepted(t)
	if got := conn.query.Get("since") + "/" + conn.query.Get("epoch"); got != "0/e1" {
		t.Errorf("the client connected with since/epoch %s, want 0/e1", got)
	}
	b.waitFor(`the client is "open"`, `clients.main.state === "open"`)

	conn.send(t,
		`{"type":"notify.hello","data":{"epoch":"e1","seq":0}}`,
		`{"seq":1,"type":"t.real","data":"one"}`,
		`{"seq":1,"type":"t.real","data":"repeat of one"}`,
		`{"type":"notify.gap"}`,
		`{"type":"notify.gap","data":null}`,
		`{"type":"notify.gap","data":[]}`,
		`{"type":"notify.gap","data":{"reason":"epoch","epoch":5,"seq":0}}`,
		`{"type":"notify.gap","data":{"reason":"epoch","epoch":"forged","seq":-1}}`,
		`{"type":"notify.gap","data":{"reason":"epoch","epoch":"forged","seq":1.5}}`,
		`{"type":"notify.gap","data":{"reason":"epoch","epoch":"forged","seq":"0"}}`,
		`{"type":"notify.gap","data":{"reason":"epoch","epoch":"forged","seq":9007199254740992}}`,
		`{"type":"notify.hello","data":null}`,
		`{"type":"notify.hello","data":{"epoch":"forged"}}`,
		`{"type":"notify.hello","data":{"epoch":"forged","seq":-1}}`,
		`{"seq":1e300,"type":"t.unnumbered","data":"seq 1e300"}`,
		`{"seq":9007199254740992,"type":"t.unnumbered","data":"seq 2^53"}`,
		`{"seq":2.5,"type":"t.unnumbered","data":"seq 2.5"}`,
		`{"seq":"99","type":"t.unnumbered","data":"seq as a string"}`,
		`{"seq":2,"type":"t.real","data":"two"}`,
		`{"type":"notify.gap","data":{"reason":"expired","since":2,"epoch":"e1","seq":10}}`,
		`{"seq":11,"type":"t.real","data":"eleven"}`,
	)
	b.waitFor("the last real message", hasEntry("main", "t.real", "eleven"))

	reals := eval[[]logEntry](b, `logs.main.all.filter((e) => e.type === "t.real")`)
	wantReal := []logEntry{
		{Seq: 1, Type: "t.real", Data: "one"},
		{Seq: 2, Type: "t.real", Data: "two"},
		{Seq: 11, Type: "t.real", Data: "eleven"},
	}
	if diff := gocmp.Diff(wantReal, reals, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("real messages dispatched (-want +got):\n%s", diff)
	}
	unnumbered := eval[[]string](b, `logs.main.all.filter((e) => e.type === "t.unnumbered").map((e) => e.data)`)
	if diff := gocmp.Diff([]string{"seq 1e300", "seq 2^53", "seq 2.5", "seq as a string"}, unnumbered); diff != "" {
		t.Errorf("messages with an invalid seq, dispatched unnumbered (-want +got):\n%s", diff)
	}
	gaps := eval[[]map[string]any](b, `logs.main.gaps`)
	wantGaps := []map[string]any{{"reason": "expired", "since": 2.0, "epoch": "e1", "seq": 10.0}}
	if diff := gocmp.Diff(wantGaps, gaps); diff != "" {
		t.Errorf("gaps reported (-want +got):\n%s", diff)
	}
	pos := eval[notify.Position](b, `({epoch: clients.main.epoch, seq: clients.main.seq})`)
	if want := (notify.Position{Epoch: "e1", Seq: 11}); pos != want {
		t.Errorf("the client's position is %+v, want %+v", pos, want)
	}
	if transport != "sse" {
		return
	}

	// A notify.close whose code is not a number still ends the stream, as
	// a WebSocket closed abnormally (1006) would: the client comes back,
	// resuming from where it was.
	conn.send(t, `{"type":"notify.close","data":{"code":"1001"}}`)
	again := s.accepted(t)
	if got := again.query.Get("since") + "/" + again.query.Get("epoch"); got != "11/e1" {
		t.Errorf("after notify.close the client reconnected with since/epoch %s, want 11/e1", got)
	}
}

// scriptSite serves the harness page and notify.js, like clientSite, but
// its /ws is a scripted server: the test writes each frame itself, as a
// WebSocket text frame or, to a request that accepts text/event-stream, as
// a Server-Sent Event.
type scriptSite struct {
	srv   *httptest.Server
	conns chan *scriptConn
	wg    sync.WaitGroup // every handler
}

// scriptConn is one connection to a scriptSite: a WebSocket, or an SSE
// stream whose handler writes what arrives on events.
type scriptConn struct {
	ws     *websocket.Conn
	events chan string // SSE only
	ended  chan struct{}
	query  url.Values
}

func newScriptSite(t *testing.T) *scriptSite {
	s := &scriptSite{conns: make(chan *scriptConn, 8)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(clientPage)
	})
	mux.Handle("GET /notify.js", notify.ScriptHandler())
	var (
		mu     sync.Mutex
		open   []*websocket.Conn
		closed bool
	)
	stop := make(chan struct{}) // closed by the cleanup: SSE handlers return
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
			mu.Lock()
			if closed {
				mu.Unlock()
				http.Error(w, "closed", http.StatusServiceUnavailable)
				return
			}
			s.wg.Add(1)
			mu.Unlock()
			defer s.wg.Done()
			s.stream(w, r, stop)
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		if closed {
			mu.Unlock()
			ws.CloseNow()
			return
		}
		open = append(open, ws)
		s.wg.Add(1)
		mu.Unlock()
		defer s.wg.Done()
		select {
		case s.conns <- &scriptConn{ws: ws, query: r.URL.Query()}:
		default: // more connections than any test waits for
		}
		// Read until the connection ends, so that pings and the close
		// handshake are answered; the test writes.
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		mu.Lock()
		closed = true
		for _, ws := range open {
			ws.CloseNow()
		}
		close(stop)
		mu.Unlock()
		s.wg.Wait()
		s.srv.Close()
	})
	return s
}

// accepted returns the next connection the site accepted.
func (s *scriptSite) accepted(t *testing.T) *scriptConn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(stepTimeout):
		t.Fatal("timed out waiting for the client's connection")
		return nil
	}
}

// stream serves one scripted SSE stream until the client leaves or the
// site closes.
func (s *scriptSite) stream(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
	c := &scriptConn{events: make(chan string), ended: make(chan struct{}), query: r.URL.Query()}
	defer close(c.ended)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	select {
	case s.conns <- c:
	default: // more connections than any test waits for
	}
	for {
		select {
		case ev := <-c.events:
			if _, err := io.WriteString(w, ev); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-stop:
			return
		}
	}
}

// sseEvent is frame as a Server-Sent Event, named by its type as a
// Registry names its events (unnamed if it has none).
func sseEvent(frame string) string {
	var env struct{ Type any }
	ev := ""
	if json.Unmarshal([]byte(frame), &env) == nil {
		if typ, ok := env.Type.(string); ok {
			ev = "event: " + typ + "\n"
		}
	}
	return ev + "data: " + frame + "\n\n"
}

// send writes each frame as a text message, or over SSE as an event.
func (c *scriptConn) send(t *testing.T, frames ...string) {
	t.Helper()
	if c.events != nil {
		for _, f := range frames {
			select {
			case c.events <- sseEvent(f):
			case <-c.ended:
				t.Fatalf("the stream ended before %s", f)
			}
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	for _, f := range frames {
		if err := c.ws.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
			t.Fatalf("writing %s: %v", f, err)
		}
	}
}
