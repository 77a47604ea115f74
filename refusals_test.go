package notify_test

// Refusals: hostile handshakes and frames, connection limits and inbound
// violations each get their status or close code, and never affect other
// connections.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// TestHostileHandshakes extends TestHandlerRefusals with the tricks an
// attacker tries before the upgrade. Every request is refused with its
// documented status, nothing is upgraded, and a connected client is
// unaffected.
func TestHostileHandshakes(t *testing.T) {
	t.Parallel()
	upgrade, with := upgradeHeader(), upgradeHeader
	pinned := notify.Options{OriginPatterns: []string{"example.com", "https://secure.example"}}
	expired := func(r *http.Request) (notify.Identity, error) {
		if r.URL.Query().Has("expired") {
			return notify.Identity{User: "ada", Expires: time.Now().Add(-time.Second)}, nil
		}
		return notify.Identity{}, nil
	}
	noSecrets := func(ctx context.Context, id notify.Identity, topic string) error {
		if strings.HasPrefix(topic, "secret") {
			return errors.New("notify-test: not yours")
		}
		return nil
	}
	tests := []struct {
		name   string
		opts   notify.Options
		method string
		query  string
		header http.Header
		want   int
	}{
		{"POST with upgrade headers", notify.Options{}, "POST", "", upgrade, http.StatusUpgradeRequired},
		{"missing Sec-WebSocket-Key", notify.Options{}, "GET", "", with("Sec-Websocket-Key", ""), http.StatusBadRequest},
		{"malformed Sec-WebSocket-Key", notify.Options{}, "GET", "", with("Sec-Websocket-Key", "c2hvcnQ="), http.StatusBadRequest},
		{"unsupported WebSocket version", notify.Options{}, "GET", "", with("Sec-Websocket-Version", "8"), http.StatusUpgradeRequired},
		{"Origin null (sandboxed page)", notify.Options{}, "GET", "", with("Origin", "null"), http.StatusForbidden},
		{"Origin: same host, other port", notify.Options{}, "GET", "", with("Origin", "http://127.0.0.1:1"), http.StatusForbidden},
		{"Origin: look-alike suffix", pinned, "GET", "", with("Origin", "https://example.com.evil.example"), http.StatusForbidden},
		{"Origin: userinfo trick", pinned, "GET", "", with("Origin", "https://example.com@evil.example"), http.StatusForbidden},
		{"Origin: wrong scheme for pinned pattern", pinned, "GET", "", with("Origin", "http://secure.example"), http.StatusForbidden},
		{"Authorize returns an expired identity", notify.Options{Authorize: expired}, "GET", "?expired", upgrade, http.StatusUnauthorized},
		{"AuthorizeTopic refuses", notify.Options{AuthorizeTopic: noSecrets}, "GET", "?topic=public&topic=secret-42", upgrade, http.StatusForbidden},
		{"since overflows uint64", notify.Options{}, "GET", "?since=18446744073709551616", upgrade, http.StatusBadRequest},
		{"since with a sign", notify.Options{}, "GET", "?since=%2B5", upgrade, http.StatusBadRequest},
		{"since in hex", notify.Options{}, "GET", "?since=0x10", upgrade, http.StatusBadRequest},
		{"since empty", notify.Options{}, "GET", "?since=", upgrade, http.StatusBadRequest},
		{"repeated epoch", notify.Options{}, "GET", "?since=1&epoch=a&epoch=b", upgrade, http.StatusBadRequest},
		{"epoch too long", notify.Options{}, "GET", "?since=1&epoch=" + strings.Repeat("e", 65), upgrade, http.StatusBadRequest},
		{"topic too long", notify.Options{}, "GET", "?topic=" + strings.Repeat("t", 129), upgrade, http.StatusBadRequest},
		{"topic not ASCII", notify.Options{}, "GET", "?topic=caf%C3%A9", upgrade, http.StatusBadRequest},
		{"topic with NUL", notify.Options{}, "GET", "?topic=a%00b", upgrade, http.StatusBadRequest},
		{"topic with CRLF", notify.Options{}, "GET", "?topic=a%0D%0Ab", upgrade, http.StatusBadRequest},
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, &tt.opts)
			bystander := dial(t, s.ws+"?since=now&topic=public")
			read(t, bystander) // hello
			req, err := http.NewRequest(tt.method, s.srv.URL+tt.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = tt.header
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d (%q), want %d", resp.StatusCode, body, tt.want)
			}
			if n := s.reg.Len(); n != 1 {
				t.Errorf("Len = %d, want only the bystander", n)
			}
			checkBystander(t, s, bystander)
		})
	}
}

// TestHostileFrames sends, over a hand-written client, what no browser
// sends: every case gets its close code (or, where the connection may stay,
// the answer it should get), and a bystander keeps receiving.
func TestHostileFrames(t *testing.T) {
	t.Parallel()
	text := func(s string) []byte { return clientFrame(bitFin|opText, []byte(s)) }
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	fragments := func(n, size int) []byte {
		out := clientFrame(opText, bytes.Repeat([]byte("a"), size))
		for i := 1; i < n; i++ {
			b0 := byte(opCont)
			if i == n-1 {
				b0 |= bitFin
			}
			out = append(out, clientFrame(b0, bytes.Repeat([]byte("a"), size))...)
		}
		return out
	}
	tests := []struct {
		name string
		send []byte
		// wantClose is the close code expected; -1 means dropped without a
		// close frame, 0 means the connection stays open.
		wantClose websocket.StatusCode
		// wantTexts are the reserved message types the client is sent
		// before the bystander probe; wantApp what OnMessage receives.
		wantTexts []string
		wantApp   []string
	}{
		{"fragments adding up past ReadLimit", fragments(33, 1<<10), websocket.StatusMessageTooBig, nil, nil},
		{"header announcing 2^62 bytes", cat(frameHeader(bitFin|opText, 1<<62, true), bytes.Repeat([]byte("a"), 33<<10)), websocket.StatusMessageTooBig, nil, nil},
		{"invalid UTF-8 split across fragments", cat(clientFrame(opText, []byte("\xe2\x82")), clientFrame(bitFin|opCont, []byte("\x28"))), websocket.StatusInvalidFramePayloadData, nil, nil},
		{"overlong UTF-8 encoding", text("\xc0\xaf"), websocket.StatusInvalidFramePayloadData, nil, nil},
		{"UTF-16 surrogate in UTF-8", text("\xed\xa0\x80"), websocket.StatusInvalidFramePayloadData, nil, nil},
		{"client sends notify.hello", text(`{"type":"notify.hello","data":{"epoch":"x","seq":1}}`), websocket.StatusPolicyViolation, nil, nil},
		{"client sends notify.gap", text(`{"type":"notify.gap","data":{"reason":"epoch"}}`), websocket.StatusPolicyViolation, nil, nil},
		{"client sends notify.error", text(`{"type":"notify.error"}`), websocket.StatusPolicyViolation, nil, nil},
		{"reserved type spelled with a JSON escape", text(`{"type":"\u006eotify.hello"}`), websocket.StatusPolicyViolation, nil, nil},
		{"reserved message with a malformed field", text(`{"type":"notify.subscribe","topic":42}`), websocket.StatusPolicyViolation, nil, nil},
		{"binary, fragmented", cat(clientFrame(opBinary, []byte{1}), clientFrame(bitFin|opCont, []byte{2})), websocket.StatusUnsupportedData, nil, nil},
		{"continuation without a first frame", clientFrame(bitFin|opCont, []byte("x")), websocket.StatusProtocolError, nil, nil},
		{"new message inside a fragmented one", cat(clientFrame(opText, []byte("a")), text("b")), websocket.StatusProtocolError, nil, nil},
		{"reserved opcode 0x3", clientFrame(bitFin|0x3, []byte("x")), websocket.StatusProtocolError, nil, nil},
		{"RSV1 set without compression", clientFrame(bitFin|bitRSV1|opText, []byte("x")), websocket.StatusProtocolError, nil, nil},
		{"ping payload over 125 bytes", clientFrame(bitFin|opPing, bytes.Repeat([]byte("p"), 126)), websocket.StatusProtocolError, nil, nil},
		{"fragmented ping", clientFrame(opPing, []byte("p")), websocket.StatusProtocolError, nil, nil},
		{"close with a reserved code (1005)", clientFrame(bitFin|opClose, []byte{0x03, 0xED}), websocket.StatusProtocolError, nil, nil},
		{"unmasked frame", append(frameHeader(bitFin|opText, 1, false), 'x'), -1, nil, nil},
		// Refused requests that do not warrant a close.
		{"subscribe without a topic", text(`{"type":"notify.subscribe"}`), 0, []string{notify.TypeError}, nil},
		{"subscribe to an invalid topic", text(`{"type":"notify.subscribe","topic":"a b"}`), 0, []string{notify.TypeError}, nil},
		{"unsubscribe from a topic never joined", text(`{"type":"notify.unsubscribe","topic":"nope"}`), 0, nil, nil},
		// Not a JSON object, so not a reserved message: it is the
		// application's, as the wire protocol says.
		{"truncated JSON naming a reserved type", text(`{"type":"notify.subscribe","topic":"a"`), 0, nil, []string{`{"type":"notify.subscribe","topic":"a"`}},
		{"valid UTF-8 split across fragments", cat(clientFrame(opText, []byte("\xe2\x82")), clientFrame(bitFin|opCont, []byte("\xac"))), 0, nil, []string{"€"}},
		{"unsolicited pong", cat(clientFrame(bitFin|opPong, []byte("x")), text("after pong")), 0, nil, []string{"after pong"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := make(chan string, 8)
			s := newServer(t, &notify.Options{OnMessage: func(ctx context.Context, c *notify.Client, data []byte) {
				app <- string(data)
			}})
			bystander, _ := dialReady(t, s, "")
			bad := dialRawReady(t, s, "")
			if _, err := bad.Write(tt.send); err != nil && tt.wantClose == 0 {
				t.Fatal(err) // where a close is due, the server may reset before the write ends
			}
			if tt.wantClose != 0 {
				if code, _ := bad.readClose(); code != tt.wantClose {
					t.Errorf("close code %d, want %d", code, tt.wantClose)
				}
				if err := s.waitGone(t, 1)[0]; err == nil || errors.Is(err, context.Canceled) {
					t.Errorf("OnDisconnect err = %v, want the violation", err)
				}
				checkBystander(t, s, bystander)
				return
			}
			// The connection stays: a sentinel frame, then a probe sent
			// to everyone, come back in order after whatever the case
			// provoked.
			if _, err := bad.Write(text("sync")); err != nil {
				t.Fatal(err)
			}
			var gotApp []string
			timeout := time.After(10 * time.Second)
		sync:
			for {
				select {
				case m := <-app:
					if m == "sync" {
						break sync
					}
					gotApp = append(gotApp, m)
				case <-timeout:
					t.Fatalf("the sentinel frame did not reach OnMessage; got %q", gotApp)
				}
			}
			broadcast(t, s.reg, notify.SocketMessage{Type: "still.here"})
			var gotTexts []string
			for {
				op, p, err := bad.readFrame()
				if err != nil {
					t.Fatalf("connection closed: %v", err)
				}
				if op != opText {
					continue
				}
				var m wire
				if err := json.Unmarshal(p, &m); err != nil {
					t.Fatalf("frame %q: %v", p, err)
				}
				if m.Type == "still.here" {
					break
				}
				gotTexts = append(gotTexts, m.Type)
			}
			if diff := cmp.Diff(tt.wantTexts, gotTexts); diff != "" {
				t.Errorf("reserved messages to the client (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantApp, gotApp); diff != "" {
				t.Errorf("OnMessage (-want +got):\n%s", diff)
			}
			if n := s.reg.Len(); n != 2 {
				t.Errorf("Len = %d, want both connections open", n)
			}
			checkBystander(t, s, bystander)
		})
	}
}

// TestConnectionLimitsHold checks the limits where a simple count would
// fail: many dials racing for the last slots, and slots coming back when
// their connections leave.
func TestConnectionLimitsHold(t *testing.T) {
	t.Parallel()
	t.Run("MaxConnections under concurrent dials", func(t *testing.T) {
		t.Parallel()
		const limit, dials = 6, 40 // the bystander takes one slot
		var reg atomic.Pointer[notify.Registry]
		var over atomic.Int64
		s := newServer(t, &notify.Options{MaxConnections: limit, OnConnect: func(*notify.Client) {
			if reg.Load().Len() > limit {
				over.Add(1)
			}
		}})
		reg.Store(s.reg)
		bystander, _ := dialReady(t, s, "")

		var admitted, before, after atomic.Int64
		var kept sync.Map
		var wg sync.WaitGroup
		for i := range dials {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, resp, err := websocket.Dial(ctx, s.ws+"?since=now", nil)
				if err != nil {
					if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
						before.Add(1)
						return
					}
					t.Errorf("dial: %v", err)
					return
				}
				_, _, err = c.Read(ctx)
				switch {
				case err == nil:
					admitted.Add(1)
					kept.Store(i, c)
				case websocket.CloseStatus(err) == websocket.StatusTryAgainLater:
					after.Add(1)
					c.CloseNow()
				default:
					t.Errorf("read: %v", err)
					c.CloseNow()
				}
			}()
		}
		wg.Wait()
		t.Logf("%d concurrent dials for %d free slots: %d admitted, %d refused with 503, %d upgraded then closed with 1013",
			dials, limit-1, admitted.Load(), before.Load(), after.Load())
		if admitted.Load() != limit-1 || admitted.Load()+before.Load()+after.Load() != dials || over.Load() != 0 {
			t.Errorf("want exactly %d admitted, every other dial refused, Len never above %d (%d times above)", limit-1, limit, over.Load())
		}
		// A slot comes back when its connection leaves.
		kept.Range(func(_, v any) bool {
			v.(*websocket.Conn).Close(websocket.StatusNormalClosure, "")
			return false
		})
		s.waitGone(t, 1)
		dialReady(t, s, "")
		checkBystander(t, s, bystander)
		// Those refused with 503 or 1013 were never registered, so they
		// had no OnDisconnect: the one connection closed above was the only
		// one to end.
		if n := len(s.gone); n != 0 {
			t.Errorf("%d more OnDisconnect calls, want none for refused connections", n)
		}
		kept.Range(func(_, v any) bool { v.(*websocket.Conn).CloseNow(); return true })
	})

	t.Run("MaxConnectionsPerUser counts users, not addresses", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, &notify.Options{MaxConnectionsPerUser: 2,
			Authorize: func(r *http.Request) (notify.Identity, error) {
				return notify.Identity{User: r.URL.Query().Get("user")}, nil
			}})
		ada1, _ := dialReady(t, s, "&user=ada")
		dialReady(t, s, "&user=ada")
		_, resp, err := websocket.Dial(context.Background(), s.ws+"?user=ada", nil)
		if err == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("third connection of one user: %v, want 429", err)
		}
		bob, _ := dialReady(t, s, "&user=bob") // same address, another user
		ada1.Close(websocket.StatusNormalClosure, "")
		s.waitGone(t, 1)
		dialReady(t, s, "&user=ada")
		checkBystander(t, s, bob)
	})
}

// TestAddRefusesResumeAndResumeNow: ConnOptions cannot ask for a replay
// and for none at once; Add says so rather than picking one.
func TestAddRefusesResumeAndResumeNow(t *testing.T) {
	t.Parallel()
	reg := notify.New(nil)
	defer reg.Close()
	added := make(chan error, 1)
	srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		added <- reg.Add(context.Background(), conn, &notify.ConnOptions{Resume: &notify.Position{Seq: 1}, ResumeNow: true})
	})
	c := dial(t, srv)
	_, _, err := c.Read(context.Background())
	if got := websocket.CloseStatus(err); got != websocket.StatusInternalError {
		t.Errorf("client read %v, want close 1011", err)
	}
	if err := <-added; err == nil || !strings.Contains(err.Error(), "Resume and ResumeNow") {
		t.Errorf("Add = %v, want the Resume and ResumeNow error", err)
	}
	if n := reg.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
}

func TestInboundViolationsGetCloseCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		typ  websocket.MessageType
		data []byte
		want websocket.StatusCode
	}{
		{"oversize", websocket.MessageText, []byte(strings.Repeat("a", 40<<10)), websocket.StatusMessageTooBig},
		{"invalid UTF-8", websocket.MessageText, []byte{'{', 0xff, 0xfe, '}'}, websocket.StatusInvalidFramePayloadData},
		{"binary", websocket.MessageBinary, []byte{1, 2, 3}, websocket.StatusUnsupportedData},
		{"unknown reserved type", websocket.MessageText, []byte(`{"type":"notify.explode"}`), websocket.StatusPolicyViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, nil)
			bystander, _ := dialReady(t, s, "")
			bad, _ := dialReady(t, s, "")
			// The write may fail part way: the server closes as soon as it
			// has read too much, and the unread rest makes its kernel reset
			// the connection, which can also hide the close frame from the
			// client. What the server decided is checked on its side.
			writeErr := bad.Write(context.Background(), tt.typ, tt.data)
			_, code := readUntilClose(t, bad)
			oversize := tt.want == websocket.StatusMessageTooBig
			if code != tt.want && !(oversize && code == -1) {
				t.Errorf("client saw close code %d (write: %v), want %d", code, writeErr, tt.want)
			}
			err := s.waitGone(t, 1)[0]
			if closeCode(err) != tt.want && !(oversize && errors.Is(err, websocket.ErrMessageTooBig)) {
				t.Errorf("server ended the connection with %v, want code %d", err, tt.want)
			}
			broadcast(t, s.reg, notify.SocketMessage{Type: "still.here"})
			if m := read(t, bystander); m.Type != "still.here" {
				t.Errorf("bystander got %+v", m)
			}
		})
	}
}

func TestInboundRateLimit(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{InboundRate: 1, InboundBurst: 5})
	c, _ := dialReady(t, s, "")
	for range 10 {
		if err := c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"chat"}`)); err != nil {
			break
		}
	}
	if _, code := readUntilClose(t, c); code != websocket.StatusPolicyViolation {
		t.Errorf("close code %d, want 1008", code)
	}
}
