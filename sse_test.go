package notify_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

func lastEventID(header string) http.Header { return http.Header{"Last-Event-ID": {header}} }

// TestStreamDeliversInOrder: a stream gets the hello, whose id is the
// current position, then every broadcast in seq order with id seq:epoch
// and the message's type as the event type, and NotifyText's text as a
// plain message, interleaved in publish order; Stats counts it by transport.
func TestStreamDeliversInOrder(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			testStreamDeliversInOrder(t, p.new(t, nil), p.major)
		})
	}
}

func testStreamDeliversInOrder(t *testing.T, s *server, major int) {
	broadcast(t, s.reg, notify.SocketMessage{Type: "before"})
	sc := stream(t, s.srv.Client(), s.srv.URL, nil)
	if sc.resp.ProtoMajor != major {
		t.Fatalf("served over %s", sc.resp.Proto)
	}
	for k, want := range map[string]string{"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Access-Control-Allow-Origin": ""} {
		if got := sc.resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	hello := sc.read()
	pos := sc.decode(hello)
	if want := fmt.Sprintf("1:%s", s.reg.Position().Epoch); hello.ID != want {
		t.Errorf("hello id %q, want %q", hello.ID, want)
	}
	if sc.retry < 2000 || sc.retry > 4000 {
		t.Errorf("retry %d ms, want 2000 to 4000", sc.retry)
	}
	if pos.Type != notify.TypeHello {
		t.Fatalf("first event %+v", pos)
	}
	if st := s.reg.Stats(); st.Connections != 1 || st.SSEConnections != 1 {
		t.Errorf("Stats %+v, want one connection, an SSE one", st)
	}
	var ws *websocket.Conn // beside the stream, over HTTP/1.1 (coder/websocket does not dial HTTP/2)
	if major == 1 {
		ws, _ = dialReady(t, s, "")
		if st := s.reg.Stats(); st.Connections != 2 || st.SSEConnections != 1 {
			t.Errorf("Stats %+v, want two connections, one SSE", st)
		}
	}
	for i := range 5 {
		broadcast(t, s.reg, notify.SocketMessage{Type: fmt.Sprintf("t%d", i), Data: map[string]int{"i": i}})
	}
	if err := s.reg.NotifyText(context.Background(), "plain"); err != nil {
		t.Fatal(err)
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "after"})
	for i := range 5 {
		ev := sc.read()
		m := sc.decode(ev)
		if want := fmt.Sprintf("%d:%s", i+2, s.reg.Position().Epoch); ev.ID != want || m.Type != fmt.Sprintf("t%d", i) || string(m.Data) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Errorf("event %d: %+v, want id %s", i, ev, want)
		}
		if ws == nil {
			continue
		}
		if w := read(t, ws); w.Seq != m.Seq || w.Type != m.Type {
			t.Errorf("WebSocket got %+v, the stream %+v", w, m)
		}
	}
	if ev := sc.read(); ev != (event{Data: "plain"}) {
		t.Errorf("NotifyText arrived as %+v", ev)
	}
	if m := sc.msg(); m.Type != "after" || m.Seq != 7 {
		t.Errorf("last event %+v", m)
	}
}

// TestStreamNotifyTextLines: NotifyText's text is split into data lines on
// every line end, so nothing in it can end the event early or add a field;
// EventSource joins the lines with LF.
func TestStreamNotifyTextLines(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	sc, _ := streamReady(t, s, "")
	texts := []string{
		"one line",
		"two\nlines",
		"windows\r\nline\r\nends",
		"old mac\rline ends",
		"mixed\r\n\r\n\n\rend",
		"trailing\n",
		"\nleading",
		"id: 99:forged\nevent: notify.gap\ndata: {\"type\":\"notify.gap\"}\n\n",
		": not a comment\r\n\r\nretry: 1",
		" leading space",
		"", // dispatches no event: EventSource drops empty data
		"after the empty one",
	}
	for _, text := range texts {
		if err := s.reg.NotifyText(context.Background(), text); err != nil {
			t.Fatal(err)
		}
	}
	for _, text := range texts {
		if text == "" {
			continue
		}
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(text)
		if diff := cmp.Diff(event{Data: want}, sc.read()); diff != "" {
			t.Errorf("NotifyText(%q) (-want +got):\n%s", text, diff)
		}
	}
	if sc.lastID != "0:"+s.reg.Position().Epoch {
		t.Errorf("text events changed the last event id to %q", sc.lastID)
	}
}

// TestStreamResume: a stream that reconnects as EventSource does, with
// Last-Event-ID, or as notify.js does, with since and epoch, gets a hello
// and exactly what it missed, then live messages.
func TestStreamResume(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		open func(t testing.TB, s *server, sc *streamClient, last uint64, epoch string) *streamClient
	}{
		{"Last-Event-ID", func(t testing.TB, s *server, sc *streamClient, _ uint64, _ string) *streamClient {
			return stream(t, s.srv.Client(), s.srv.URL, lastEventID(sc.lastID))
		}},
		{"Last-Event-ID without epoch", func(t testing.TB, s *server, _ *streamClient, last uint64, _ string) *streamClient {
			return stream(t, s.srv.Client(), s.srv.URL, lastEventID(fmt.Sprint(last)))
		}},
		{"since and epoch", func(t testing.TB, s *server, _ *streamClient, last uint64, epoch string) *streamClient {
			return stream(t, s.srv.Client(), fmt.Sprintf("%s?since=%d&epoch=%s", s.srv.URL, last, epoch), nil)
		}},
		{"query wins over Last-Event-ID", func(t testing.TB, s *server, _ *streamClient, last uint64, epoch string) *streamClient {
			return stream(t, s.srv.Client(), fmt.Sprintf("%s?since=%d&epoch=%s", s.srv.URL, last, epoch), lastEventID("1:"+epoch))
		}},
	}
	for _, tt := range tests {
		for _, p := range protocols {
			t.Run(tt.name+"/"+p.name, func(t *testing.T) {
				t.Parallel()
				testStreamResume(t, p.new(t, nil), tt.open)
			})
		}
	}
}

func testStreamResume(t *testing.T, s *server, open func(t testing.TB, s *server, sc *streamClient, last uint64, epoch string) *streamClient) {
	sc, pos := streamReady(t, s, "")
	for range 3 {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m"})
	}
	got := sc.msgs(2)
	sc.close()
	for range 3 {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m"})
	}
	sc = open(t, s, sc, got[1].Seq, pos.Epoch)
	hello := sc.read()
	if want := fmt.Sprintf("2:%s", pos.Epoch); hello.ID != want || hello.Event != notify.TypeHello {
		t.Errorf("hello %+v, want id %s: the client's own position", hello, want)
	}
	got = append(got, sc.msgs(4)...)
	broadcast(t, s.reg, notify.SocketMessage{Type: "live"})
	got = append(got, sc.msg())
	if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5, 6, 7}, seqs(got)); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}
}
