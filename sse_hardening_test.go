package notify_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// TestStreamGaps: a stream that cannot be resumed exactly gets the hello
// (id: its own position, so a drop before the gap asks again) and a
// notify.gap whose id is the position to continue from, then live messages.
func TestStreamGaps(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{
		Broker: notify.NewMemoryBroker(&notify.MemoryBrokerOptions{HistoryLength: 2}),
	})
	for range 5 {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m"})
	}
	epoch := s.reg.Position().Epoch
	tests := []struct {
		name, query, lastID string
		reason, helloID     string
	}{
		{"stale epoch in the query", "since=3&epoch=old", "", "epoch", "3:old"},
		{"stale epoch in Last-Event-ID", "", "3:old", "epoch", "3:old"},
		{"expired history", "since=1&epoch=" + epoch, "", "expired", "1:" + epoch},
		{"expired history, Last-Event-ID", "", "1:" + epoch, "expired", "1:" + epoch},
		{"ahead of the stream", "", "99:" + epoch, "ahead", "99:" + epoch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.lastID != "" {
				h = lastEventID(tt.lastID)
			}
			cur := s.reg.Position()
			sc := stream(t, s.srv.Client(), s.srv.URL+"?"+tt.query, h)
			if hello := sc.read(); hello.ID != tt.helloID || hello.Event != notify.TypeHello {
				t.Errorf("hello %+v, want id %s", hello, tt.helloID)
			}
			ev := sc.read()
			reason, pos := gapOf(t, sc.decode(ev))
			if reason != tt.reason || pos != cur || ev.ID != fmt.Sprintf("%d:%s", cur.Seq, cur.Epoch) {
				t.Errorf("gap %+v: reason %s at %+v, want %s at %+v", ev, reason, pos, tt.reason, cur)
			}
			broadcast(t, s.reg, notify.SocketMessage{Type: "live"})
			if m := sc.msg(); m.Type != "live" {
				t.Errorf("after the gap %+v", m)
			}
			sc.close()
		})
	}
}

// TestStreamSlowConsumerResumes: a stream whose queue overflows gets what
// was being written, then notify.close with CloseSlowConsumer, and the
// stream ends; resuming from its Last-Event-ID gets the rest, nothing lost
// or twice.
func TestStreamSlowConsumerResumes(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			s := p.new(t, &notify.Options{QueueLength: 8})
			sc, _ := streamReady(t, s, "")
			payload := strings.Repeat("z", 32<<10)
			const n = 200 // about 6 MiB: more than socket buffers and HTTP/2 windows hold
			for range n {
				broadcast(t, s.reg, notify.SocketMessage{Type: "big", Data: payload})
			}
			if !waitFor(20*time.Second, func() bool { return s.reg.Stats().SlowConsumers == 1 }) {
				t.Fatalf("no slow consumer: %+v", s.reg.Stats())
			}
			got, end := sc.untilEnd()
			if end.Code != notify.CloseSlowConsumer {
				t.Fatalf("stream ended with %+v, want notify.close %d", end, notify.CloseSlowConsumer)
			}
			if err := s.waitGone(t, 1)[0]; !errors.Is(err, notify.ErrSlowConsumer) || closeCode(err) != notify.CloseSlowConsumer {
				t.Errorf("OnDisconnect got %v", err)
			}
			// Resume, as EventSource would, until everything is in. The
			// burst may still be on its way through the dispatcher when
			// the stream resumes (Broadcast returns once published), and
			// live messages queued behind the replay can overflow the
			// queue of 8 again: that stream too ends with notify.close
			// 4000, and the next resume goes on from its last id.
			for resumes := 1; len(got) < n; resumes++ {
				if resumes > 20 {
					t.Fatalf("%d of %d messages after %d resumes", len(got), n, resumes-1)
				}
				sc = stream(t, s.srv.Client(), s.srv.URL, lastEventID(sc.lastID))
				sc.hello()
				for len(got) < n {
					m := sc.msg()
					if m.Type == notify.TypeClose {
						var d closeEvent
						if err := json.Unmarshal(m.Data, &d); err != nil || d.Code != notify.CloseSlowConsumer {
							t.Fatalf("resumed stream ended with %s (%v), want code %d", m.Data, err, notify.CloseSlowConsumer)
						}
						t.Logf("resume %d closed as a slow consumer again after seq %d", resumes, len(got))
						break
					}
					got = append(got, m)
				}
			}
			for i, m := range got {
				if m.Seq != uint64(i+1) {
					t.Fatalf("message %d has seq %d: lost or duplicated across the slow-consumer close", i, m.Seq)
				}
			}
		})
	}
}

// TestStreamWriteTimeout: a reader that stops reading, with queues that
// never overflow, is dropped as a slow consumer once a write has taken
// WriteTimeout; the registry is unaffected.
func TestStreamWriteTimeout(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			s := p.new(t, &notify.Options{WriteTimeout: 250 * time.Millisecond, QueueBytes: 256 << 20, QueueLength: 1 << 16})
			streamReady(t, s, "")
			start := time.Now()
			stall(t, s.reg, 96) // 6 MiB
			err := s.waitGone(t, 1)[0]
			t.Logf("dropped %v after the stall began", time.Since(start))
			if !errors.Is(err, notify.ErrSlowConsumer) || closeCode(err) != notify.CloseSlowConsumer {
				t.Errorf("err = %v, want ErrSlowConsumer with code %d", err, notify.CloseSlowConsumer)
			}
			if st := s.reg.Stats(); st.SlowConsumers != 1 || st.Connections != 0 {
				t.Errorf("Stats = %+v, want one slow consumer and no connection", st)
			}
		})
	}
}

// TestStreamShutdown: Shutdown writes everything queued, then notify.close
// with 1001, then ends the response, and returns once the handler has.
func TestStreamShutdown(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			s := p.new(t, &notify.Options{QueueLength: 1024})
			sc, _ := streamReady(t, s, "")
			const n = 500
			for range n {
				broadcast(t, s.reg, notify.SocketMessage{Type: "m", Data: strings.Repeat("q", 1000)})
			}
			done := make(chan error, 1)
			go func() { done <- s.reg.Shutdown(context.Background()) }()
			got, end := sc.untilEnd()
			if err := <-done; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if len(got) != n || got[n-1].Seq != n {
				t.Errorf("got %d messages before the end, want %d", len(got), n)
			}
			if end.Code != websocket.StatusGoingAway {
				t.Errorf("ended with %+v, want notify.close 1001", end)
			}
			if err := s.waitGone(t, 1)[0]; err != nil {
				t.Errorf("OnDisconnect got %v, want nil for a shutdown", err)
			}
			if st := s.reg.Stats(); st.Connections != 0 {
				t.Errorf("Stats %+v after Shutdown", st)
			}
		})
	}
}

// TestStreamCloseStalled: Close drops a stream whose reader stopped, with
// its handler stuck in a write: Close returns, and the handler with it
// (TestMain's leak check would find it otherwise).
func TestStreamCloseStalled(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			s := p.new(t, &notify.Options{QueueBytes: 256 << 20, QueueLength: 1 << 16})
			streamReady(t, s, "")
			stall(t, s.reg, 96)
			start := time.Now()
			if err := s.reg.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("Close returned after %v", time.Since(start))
			if err := s.waitGone(t, 1)[0]; err != nil {
				t.Errorf("OnDisconnect got %v, want nil for a Close", err)
			}
		})
	}
}

// TestStreamLimitsShared: streams and WebSockets count against the same
// MaxConnections and MaxConnectionsPerUser.
func TestStreamLimitsShared(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{MaxConnections: 2})
	dialReady(t, s, "")
	streamReady(t, s, "")
	if _, resp := openStream(t, nil, s.srv.URL, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a third connection as a stream: %d, want 503", resp.StatusCode)
	}
	if _, resp, err := websocket.Dial(context.Background(), s.ws, nil); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a third connection as a WebSocket: %v, want 503", err)
	}

	s = newServer(t, &notify.Options{MaxConnectionsPerUser: 2})
	streamReady(t, s, "")
	dialReady(t, s, "")
	if _, resp := openStream(t, nil, s.srv.URL, nil); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a third connection from one address as a stream: %d, want 429", resp.StatusCode)
	}
	if st := s.reg.Stats(); st.Connections != 2 || st.SSEConnections != 1 || st.Rejected != 1 {
		t.Errorf("Stats %+v", st)
	}
}

// TestStreamOrigins: a stream from an allowed origin (the server's own, or
// one OriginPatterns names) gets the CORS headers that let the page read
// it with credentials; a foreign one gets 403 and none; a request without
// Origin (same-origin EventSource, curl) gets none and is served.
func TestStreamOrigins(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{OriginPatterns: []string{"*.example.com"}})
	self := "http://" + strings.TrimPrefix(s.srv.URL, "http://")
	for _, origin := range []string{"https://app.example.com", self, ""} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		sc := stream(t, nil, s.srv.URL, h)
		want := map[string]string{"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "", "Vary": ""}
		if origin != "" {
			want["Access-Control-Allow-Credentials"], want["Vary"] = "true", "Origin"
		}
		got := map[string]string{}
		for k := range want {
			got[k] = sc.resp.Header.Get(k)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("origin %q (-want +got):\n%s", origin, diff)
		}
		sc.hello()
		sc.close()
	}
	for _, origin := range []string{"https://evil.example", "null", "::"} {
		_, resp := openStream(t, nil, s.srv.URL, http.Header{"Origin": {origin}})
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("origin %q: %d %v, want 403 without CORS headers", origin, resp.StatusCode, resp.Header)
		}
	}
}

// TestStreamHostileRequests: each malformed or refused request gets its
// documented status before any stream starts, and a stream already open
// is unaffected.
func TestStreamHostileRequests(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{
		Authorize: func(r *http.Request) (notify.Identity, error) {
			switch r.URL.Query().Get("auth") {
			case "no":
				return notify.Identity{}, errors.New("notify-test: no token")
			case "banned":
				return notify.Identity{}, fmt.Errorf("notify-test: %w", notify.ErrForbidden)
			}
			return notify.Identity{}, nil
		},
		AuthorizeTopic: func(_ context.Context, _ notify.Identity, topic string) error {
			if topic == "secret" {
				return errors.New("notify-test: not yours")
			}
			return nil
		},
	})
	bystander, _ := streamReady(t, s, "")
	sse := "text/event-stream"
	tests := []struct {
		name, method, query string
		header              http.Header
		want                int
	}{
		{"bad Last-Event-ID", "GET", "", http.Header{"Accept": {sse}, "Last-Event-ID": {"abc"}}, 400},
		{"negative Last-Event-ID", "GET", "", http.Header{"Accept": {sse}, "Last-Event-ID": {"-1:e"}}, 400},
		{"signed Last-Event-ID", "GET", "", http.Header{"Accept": {sse}, "Last-Event-ID": {"+1"}}, 400},
		{"Last-Event-ID overflowing", "GET", "", http.Header{"Accept": {sse}, "Last-Event-ID": {"18446744073709551616"}}, 400},
		{"Last-Event-ID with a long epoch", "GET", "", http.Header{"Accept": {sse}, "Last-Event-ID": {"1:" + strings.Repeat("e", 65)}}, 400},
		{"Last-Event-ID with only a colon", "GET", "", http.Header{"Accept": {sse}, "Last-Event-ID": {":"}}, 400},
		{"huge header", "GET", "", http.Header{"Accept": {sse}, "Last-Event-ID": {strings.Repeat("1", 2<<20)}}, 431},
		{"POST asking for a stream", "POST", "", http.Header{"Accept": {sse}}, 400},
		{"HEAD asking for a stream", "HEAD", "", http.Header{"Accept": {sse}}, 400},
		{"plain GET", "GET", "", http.Header{"Accept": {"text/html"}}, 400},
		{"stream and a broken upgrade", "GET", "", http.Header{"Accept": {sse}, "Upgrade": {"websocket"}}, 426},
		{"bad since", "GET", "?since=x", http.Header{"Accept": {sse}}, 400},
		{"epoch without since", "GET", "?epoch=e", http.Header{"Accept": {sse}}, 400},
		{"bad topic", "GET", "?topic=a%0Ab", http.Header{"Accept": {sse}}, 400},
		{"unauthenticated", "GET", "?auth=no", http.Header{"Accept": {sse}}, 401},
		{"forbidden", "GET", "?auth=banned", http.Header{"Accept": {sse}}, 403},
		{"forbidden topic", "GET", "?topic=secret", http.Header{"Accept": {sse}}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, s.srv.URL+tt.query, nil)
			req.Header = tt.header
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || resp.Header.Get("Content-Type") == "text/event-stream" {
				t.Errorf("%d %s %q, want %d", resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.want)
			}
			if n := s.reg.Len(); n != 1 {
				t.Errorf("Len = %d, want only the bystander", n)
			}
		})
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "still.here"})
	if m := bystander.msg(); m.Type != "still.here" {
		t.Errorf("bystander got %+v", m)
	}
}

// TestStreamHeartbeat: an idle stream gets a comment every PingInterval,
// which keeps proxies from timing it out; EventSource ignores it.
func TestStreamHeartbeat(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{PingInterval: 20 * time.Millisecond})
	sc, _ := streamReady(t, s, "")
	for pings := 0; pings < 3; {
		line, err := sc.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		switch line {
		case ": ping\n":
			pings++
		case "\n":
		default:
			t.Fatalf("an idle stream got %q", line)
		}
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "after.pings"})
	if m := sc.msg(); m.Type != "after.pings" {
		t.Errorf("got %+v", m)
	}
}

// TestStreamAuthExpiry: a stream whose authorisation expires is ended with
// notify.close 1008, as a WebSocket would be closed.
func TestStreamAuthExpiry(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{
		WriteTimeout: 40 * time.Millisecond,
		Authorize: func(*http.Request) (notify.Identity, error) {
			return notify.Identity{User: "u", Expires: time.Now().Add(100 * time.Millisecond)}, nil
		},
	})
	sc, _ := streamReady(t, s, "")
	_, end := sc.untilEnd()
	if end.Code != websocket.StatusPolicyViolation {
		t.Errorf("ended with %+v, want 1008", end)
	}
}

// TestStreamRawClient reads a stream over a plain TCP connection, as a
// proxy or curl sees it: the response is chunked HTTP/1.1 with the
// documented headers, and each event arrives whole.
func TestStreamRawClient(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	nc, err := net.Dial("tcp", s.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "GET /?topic=a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := &streamClient{t: t, resp: resp, br: bufio.NewReader(resp.Body), cancel: func() {}}
	if resp.StatusCode != 200 || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("response %d %v", resp.StatusCode, resp.TransferEncoding)
	}
	sc.hello()
	broadcast(t, s.reg, notify.SocketMessage{Type: "t", Topic: "a", Data: json.RawMessage(`"x"`)})
	broadcast(t, s.reg, notify.SocketMessage{Type: "t", Topic: "b"})
	broadcast(t, s.reg, notify.SocketMessage{Type: "t", Topic: "a"})
	if diff := cmp.Diff([]uint64{1, 3}, seqs(sc.msgs(2))); diff != "" {
		t.Errorf("topic a (-want +got):\n%s", diff)
	}
}

// hidingWriter is a middleware's ResponseWriter that hides every optional
// interface of the one it wraps.
type hidingWriter struct{ w http.ResponseWriter }

func (h hidingWriter) Header() http.Header         { return h.w.Header() }
func (h hidingWriter) Write(b []byte) (int, error) { return h.w.Write(b) }
func (h hidingWriter) WriteHeader(status int)      { h.w.WriteHeader(status) }

// TestStreamNeedsFlush: behind a middleware whose ResponseWriter cannot
// flush, a stream request gets 500 at once rather than a stream that never
// arrives; WebSocket upgrades are unaffected by the check.
func TestStreamNeedsFlush(t *testing.T) {
	t.Parallel()
	reg := notify.New(&notify.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer reg.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reg.Handler().ServeHTTP(hidingWriter{w}, r)
	}))
	defer srv.Close()
	_, resp := openStream(t, nil, srv.URL, nil)
	if resp.StatusCode != http.StatusInternalServerError || reg.Len() != 0 {
		t.Errorf("status %d, Len %d; want 500 and no connection", resp.StatusCode, reg.Len())
	}
}

// TestStreamClientGoesAway: a client that closes its stream (EventSource
// has no close handshake) leaves the Registry, with no error reported, on
// both protocols; the next broadcast does not count it.
func TestStreamClientGoesAway(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			s := p.new(t, nil)
			sc, _ := streamReady(t, s, "")
			sc.close()
			if err := s.waitGone(t, 1)[0]; err != nil {
				t.Errorf("OnDisconnect got %v, want nil", err)
			}
			if st := s.reg.Stats(); st.Connections != 0 || st.SSEConnections != 0 {
				t.Errorf("Stats %+v after the client left", st)
			}
		})
	}
}
