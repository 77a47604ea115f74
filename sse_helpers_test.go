package notify_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

// event is one Server-Sent Event as EventSource dispatches it.
type event struct {
	ID    string // the id line of this event; "" if it had none
	Event string // "" for a plain message
	Data  string
}

// streamClient reads a Server-Sent Events stream the way EventSource
// does (WHATWG HTML, "Parsing an event stream"): lines ending in LF (the
// server writes no CR, and the reader fails on one), fields split at the
// first colon with one leading space dropped, comments counted, and an
// event dispatched on a blank line when its data is not empty.
type streamClient struct {
	t        testing.TB
	resp     *http.Response
	br       *bufio.Reader
	cancel   context.CancelFunc
	lastID   string // as EventSource keeps it: sent as Last-Event-ID on reconnect
	retry    int    // the last retry field, in ms
	comments int
}

// openStream requests a stream of url with header added and returns the
// response, which the caller checks; the stream is closed at cleanup.
func openStream(t testing.TB, client *http.Client, url string, header http.Header) (*streamClient, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, vs := range header {
		req.Header[k] = vs
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	sc := &streamClient{t: t, resp: resp, br: bufio.NewReader(resp.Body), cancel: cancel}
	t.Cleanup(sc.close)
	return sc, resp
}

// stream opens a stream that must be accepted (200, text/event-stream).
func stream(t testing.TB, client *http.Client, url string, header http.Header) *streamClient {
	t.Helper()
	sc, resp := openStream(t, client, url, header)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %q", url, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	return sc
}

// streamReady opens a stream with query and reads its hello.
func streamReady(t testing.TB, s *server, query string) (*streamClient, notify.Position) {
	t.Helper()
	sc := stream(t, s.srv.Client(), s.srv.URL+"?"+query, nil)
	return sc, sc.hello()
}

func (sc *streamClient) close() {
	sc.cancel()
	sc.resp.Body.Close()
}

// next returns the next event, or an error at the end of the stream.
func (sc *streamClient) next() (event, error) {
	var ev event
	var data []string
	hasData := false
	for {
		line, err := sc.br.ReadString('\n')
		if err != nil {
			return event{}, err
		}
		line = strings.TrimSuffix(line, "\n")
		if strings.ContainsRune(line, '\r') {
			return event{}, fmt.Errorf("line %q has a CR", line)
		}
		if line == "" {
			ev.Data = strings.Join(data, "\n")
			if !hasData || ev.Data == "" {
				ev, data, hasData = event{}, nil, false // EventSource dispatches nothing, but keeps an id
				continue
			}
			return ev, nil
		}
		if line[0] == ':' {
			sc.comments++
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.ID, sc.lastID = value, value
		case "event":
			ev.Event = value
		case "data":
			data, hasData = append(data, value), true
		case "retry":
			n, err := strconv.Atoi(value)
			if err != nil {
				return event{}, fmt.Errorf("retry %q", value)
			}
			sc.retry = n
		default:
			return event{}, fmt.Errorf("unknown field in %q", line)
		}
	}
}

// read returns the next event, failing the test at the end of the stream.
func (sc *streamClient) read() event {
	sc.t.Helper()
	ev, err := sc.next()
	if err != nil {
		sc.t.Fatalf("reading the stream: %v", err)
	}
	return ev
}

// msg reads the next event and decodes its data as a message, checking
// that the event's type and id agree with it.
func (sc *streamClient) msg() wire {
	sc.t.Helper()
	ev := sc.read()
	return sc.decode(ev)
}

func (sc *streamClient) decode(ev event) wire {
	sc.t.Helper()
	var m wire
	if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
		sc.t.Fatalf("event %+v: %v", ev, err)
	}
	if ev.Event != m.Type {
		sc.t.Fatalf("event %+v: type %q", ev, m.Type)
	}
	if m.Seq != 0 {
		if seq, _, _ := strings.Cut(ev.ID, ":"); seq != strconv.FormatUint(m.Seq, 10) {
			sc.t.Fatalf("event %+v: id is not seq %d", ev, m.Seq)
		}
	}
	return m
}

// msgs reads n messages.
func (sc *streamClient) msgs(n int) []wire {
	sc.t.Helper()
	var out []wire
	for range n {
		out = append(out, sc.msg())
	}
	return out
}

// hello reads the hello and returns its position.
func (sc *streamClient) hello() notify.Position {
	sc.t.Helper()
	m := sc.msg()
	if m.Type != notify.TypeHello {
		sc.t.Fatalf("first event %+v, want %s", m, notify.TypeHello)
	}
	var pos notify.Position
	if err := json.Unmarshal(m.Data, &pos); err != nil {
		sc.t.Fatal(err)
	}
	return pos
}

// closeEvent is a notify.close's data.
type closeEvent struct {
	Code   websocket.StatusCode `json:"code"`
	Reason string               `json:"reason"`
	Wait   *int64               `json:"wait"`
}

// untilEnd reads messages until the stream ends and returns them and the
// notify.close that preceded the end (Code -1 if there was none).
func (sc *streamClient) untilEnd() ([]wire, closeEvent) {
	sc.t.Helper()
	var out []wire
	end := closeEvent{Code: -1}
	for {
		ev, err := sc.next()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return out, end
		}
		if err != nil {
			sc.t.Fatalf("reading the stream: %v", err)
		}
		if end.Code != -1 {
			sc.t.Fatalf("event %+v after notify.close", ev)
		}
		if ev.Event == notify.TypeClose {
			var d struct{ Data closeEvent }
			if err := json.Unmarshal([]byte(ev.Data), &d); err != nil || ev.ID != "" {
				sc.t.Fatalf("close event %+v: %v", ev, err)
			}
			end = d.Data
			continue
		}
		out = append(out, sc.decode(ev))
	}
}

// newServerH2 is newServer over TLS with HTTP/2 enabled: its Client
// speaks HTTP/2, as browsers do with such a server.
func newServerH2(t testing.TB, opts *notify.Options) *server {
	t.Helper()
	if opts == nil {
		opts = &notify.Options{}
	}
	s := &server{gone: make(chan error, 10000)}
	reportDisconnects(opts, s.gone)
	s.reg = notify.New(opts)
	s.srv = httptest.NewUnstartedServer(s.reg.Handler())
	s.srv.EnableHTTP2 = true
	s.srv.StartTLS()
	t.Cleanup(func() {
		if err := s.reg.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		s.srv.Close()
	})
	return s
}

// protocols are the two ways a stream is served.
var protocols = []struct {
	name  string
	major int
	new   func(testing.TB, *notify.Options) *server
}{
	{"HTTP/1.1", 1, newServer},
	{"HTTP/2", 2, newServerH2},
}
