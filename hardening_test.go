package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// This file is the hardening suite: hostile handshakes and frames, churn,
// slow and silent peers, expiring authorisation and shutdown under load.
// Each test logs the figure it proves (run with -v to see them).

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

// TestAbruptDisconnects drops connections in the middle of a frame, the
// way crashing clients and middleboxes do: the server notices, removes the
// connection and reports a read error, and nobody else notices.
func TestAbruptDisconnects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		drop func(c *rawConn)
	}{
		{"RST mid-header", func(c *rawConn) {
			c.Write([]byte{bitFin | opText, 0xFE}) // 16-bit length follows, never sent
			c.reset()
		}},
		{"RST mid-payload", func(c *rawConn) {
			c.Write(append(frameHeader(bitFin|opText, 1000, true), "only ten b"...))
			c.reset()
		}},
		{"RST mid-fragmented message", func(c *rawConn) {
			c.Write(clientFrame(opText, []byte("first half")))
			c.reset()
		}},
		{"FIN mid-payload (half-close)", func(c *rawConn) {
			c.Write(append(frameHeader(bitFin|opText, 1000, true), "partial"...))
			c.Conn.(*net.TCPConn).CloseWrite()
		}},
		{"RST right after the upgrade", func(c *rawConn) { c.reset() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, nil)
			bystander, _ := dialReady(t, s, "")
			c := dialRawReady(t, s, "")
			start := time.Now()
			tt.drop(c)
			err := s.waitGone(t, 1)[0]
			t.Logf("removed %v after the drop: %v", time.Since(start).Round(time.Millisecond), err)
			if err == nil || closeCode(err) != -1 || errors.Is(err, context.Canceled) {
				t.Errorf("OnDisconnect err = %v, want the read error, without a close code", err)
			}
			if st := s.reg.Stats(); st.ReadErrors != 1 {
				t.Errorf("Stats.ReadErrors = %d, want 1", st.ReadErrors)
			}
			if n := s.reg.Len(); n != 1 {
				t.Errorf("Len = %d, want only the bystander", n)
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

// TestQueryTokensAreNeverLogged puts a token in the query string of
// refused and accepted connections and checks that no log line, at Debug
// level, carries it.
func TestQueryTokensAreNeverLogged(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-t0k3n"
	var logs syncBuffer
	s := newServer(t, &notify.Options{
		Logger:       slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		InboundRate:  1,
		InboundBurst: 1,
		Authorize: func(r *http.Request) (notify.Identity, error) {
			if r.URL.Query().Get("token") != "good-"+secret {
				return notify.Identity{}, errors.New("notify-test: bad token")
			}
			return notify.Identity{User: "ada"}, nil
		},
	})
	for _, tt := range []struct {
		query, origin string
		want          int
	}{
		{"?token=" + secret + "&since=abc", "", http.StatusBadRequest},
		{"?token=" + secret, "", http.StatusUnauthorized},
		{"?token=good-" + secret, "https://evil.example", http.StatusForbidden},
		{"?token=good-" + secret + "&topic=a%20b", "", http.StatusBadRequest},
	} {
		h := http.Header{}
		if tt.origin != "" {
			h.Set("Origin", tt.origin)
		}
		_, resp, err := websocket.Dial(context.Background(), s.ws+tt.query, &websocket.DialOptions{HTTPHeader: h})
		if err == nil || resp.StatusCode != tt.want {
			t.Errorf("%s: %v, want %d", tt.query, err, tt.want)
		}
	}
	// A refused event stream is logged as one, token-free as well.
	if _, resp := openStream(t, nil, s.srv.URL+"?token="+secret, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("stream with a bad token: %d, want 401", resp.StatusCode)
	}
	// An accepted connection that is then closed for abuse is logged too.
	c := dial(t, s.ws+"?token=good-"+secret)
	for range 3 {
		c.Write(context.Background(), websocket.MessageText, []byte("flood"))
	}
	if _, code := readUntilClose(t, c); code != websocket.StatusPolicyViolation {
		t.Errorf("flooding client closed with %d, want 1008", code)
	}
	s.waitGone(t, 1)
	out := logs.String()
	if n := strings.Count(out, "upgrade refused"); n != 4 {
		t.Errorf("%d refused upgrades logged, want 4:\n%s", n, out)
	}
	if n := strings.Count(out, "event stream refused"); n != 1 {
		t.Errorf("%d refused streams logged, want 1:\n%s", n, out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("a log line carries the query token:\n%s", out)
	}
}

// TestCompressionIsOffByDefault: a client asking for permessage-deflate
// is answered without it.
func TestCompressionIsOffByDefault(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c, resp, err := websocket.Dial(context.Background(), s.ws, &websocket.DialOptions{CompressionMode: websocket.CompressionContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Errorf("server negotiated %q, want no extension", ext)
	}
}

// TestAuthorisationExpiry: a connection whose Identity.Expires passes is
// closed with 1008, never before; others stay. It logs how late the close
// came: within one heartbeat tick (a quarter of the smaller of PingInterval
// and WriteTimeout) on an idle machine.
func TestAuthorisationExpiry(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		opts notify.Options
		tick time.Duration
	}{
		{"PingInterval 400ms", notify.Options{PingInterval: 400 * time.Millisecond}, 100 * time.Millisecond},
		{"defaults", notify.Options{}, 2500 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const lifetime = 300 * time.Millisecond
			expires := make(chan time.Time, 1)
			tt.opts.Authorize = func(r *http.Request) (notify.Identity, error) {
				if !r.URL.Query().Has("expiring") {
					return notify.Identity{User: "forever"}, nil
				}
				at := time.Now().Add(lifetime)
				expires <- at
				return notify.Identity{User: "ada", Expires: at}, nil
			}
			s := newServer(t, &tt.opts)
			bystander, _ := dialReady(t, s, "")
			c, _ := dialReady(t, s, "&expiring")
			at := <-expires
			_, code := readUntilClose(t, c)
			late := time.Since(at)
			t.Logf("closed with %d, %v after Expires (tick %v)", code, late.Round(time.Millisecond), tt.tick)
			if code != websocket.StatusPolicyViolation {
				t.Errorf("close code %d, want 1008", code)
			}
			if late < 0 {
				t.Errorf("closed %v before Expires", -late)
			}
			s.waitGone(t, 1)
			checkBystander(t, s, bystander)
		})
	}
}

// TestWriteTimeout: with queues large enough never to overflow, a write
// stuck longer than WriteTimeout drops the connection as a slow consumer,
// on both write paths (Handler's coalescing one and Add's plain one).
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 250 * time.Millisecond
	opts := func() *notify.Options {
		return &notify.Options{WriteTimeout: timeout, QueueBytes: 256 << 20, QueueLength: 1 << 16}
	}
	check := func(t *testing.T, reg *notify.Registry, err error) {
		t.Helper()
		if !errors.Is(err, notify.ErrSlowConsumer) || closeCode(err) != notify.CloseSlowConsumer {
			t.Errorf("err = %v, want ErrSlowConsumer with code %d", err, notify.CloseSlowConsumer)
		}
		if st := reg.Stats(); st.SlowConsumers != 1 || st.Connections != 0 {
			t.Errorf("Stats = %+v, want one slow consumer and no connection", st)
		}
	}
	t.Run("Handler", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, opts())
		dialReady(t, s, "")
		stall(t, s.reg, 96) // 6 MiB
		check(t, s.reg, s.waitGone(t, 1)[0])
	})
	t.Run("Add", func(t *testing.T) {
		t.Parallel()
		reg := notify.New(opts())
		t.Cleanup(func() { reg.Close() })
		added := make(chan error, 1)
		srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
			conn, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			added <- reg.Add(context.Background(), conn, &notify.ConnOptions{ResumeNow: true})
		})
		read(t, dial(t, srv)) // hello; then it never reads again
		stall(t, reg, 96)
		select {
		case err := <-added:
			check(t, reg, err)
		case <-time.After(20 * time.Second):
			t.Fatal("the stalled connection was not dropped within 20s")
		}
	})
}

// TestHeartbeatClosesSilentPeerInTwoIntervals: a hand-written client that
// never reads, so never answers a ping, is found within about two
// PingIntervals (the first ping goes out one interval after connecting,
// within a heartbeat tick; its pong is awaited one interval) and removed
// at most closeGrace (1 s) later, since it does not answer the close
// either. A client that reads all along is kept.
//
// Not parallel: with 1,000 clients dialling in TestShutdownManyClients under
// -race on two cores, scheduling delays reached a second and the reading
// client's pong missed its interval. Alone, the figures are tight.
func TestHeartbeatClosesSilentPeerInTwoIntervals(t *testing.T) {
	const interval = time.Second
	type ended struct {
		err error
		at  time.Time
	}
	silentGone := make(chan ended, 1)
	s := newServer(t, &notify.Options{
		PingInterval: interval,
		Authorize: func(r *http.Request) (notify.Identity, error) {
			return notify.Identity{User: r.URL.Query().Get("who")}, nil
		},
		OnDisconnect: func(c *notify.Client, err error) {
			if c.Identity().User == "silent" {
				silentGone <- ended{err, time.Now()}
			}
		},
	})
	bystander := dial(t, s.ws+"?since=now")
	messages := make(chan wire, 16)
	go func() { // reads, and so answers pings, all along
		defer close(messages)
		for {
			_, b, err := bystander.Read(context.Background())
			if err != nil {
				return
			}
			var m wire
			json.Unmarshal(b, &m)
			messages <- m
		}
	}()
	<-messages                        // hello
	dialRawReady(t, s, "&who=silent") // then silence
	start := time.Now()
	if !waitFor(10*time.Second, func() bool { return s.reg.Stats().HeartbeatTimeouts > 0 }) {
		t.Fatal("no heartbeat timeout within 10s")
	}
	found := time.Since(start)
	var end ended
	select {
	case end = <-silentGone:
	case <-time.After(10 * time.Second):
		t.Fatal("the silent peer was not removed within 10s")
	}
	removed := end.at.Sub(start)
	t.Logf("silent peer found after %v (%.2f PingIntervals of %v), removed after %v",
		found.Round(time.Millisecond), float64(found)/float64(interval), interval, removed.Round(time.Millisecond))
	if closeCode(end.err) != notify.CloseHeartbeatTimeout || !errors.Is(end.err, notify.ErrHeartbeatTimeout) {
		t.Errorf("err = %v, want code %d and ErrHeartbeatTimeout", end.err, notify.CloseHeartbeatTimeout)
	}
	if found < interval {
		t.Errorf("found after %v, before the peer had a whole interval (%v) to answer", found, interval)
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "still.here"})
	if m := <-messages; m.Type != "still.here" {
		t.Errorf("bystander got %+v", m)
	}
	if st := s.reg.Stats(); st.HeartbeatTimeouts != 1 || st.Connections != 1 {
		t.Errorf("Stats = %+v, want one timeout and the bystander kept", st)
	}
}

// TestChurnLeavesNothingBehind connects 1,000 clients, at most 50 at a
// time, while a message is broadcast every millisecond. Each reads three
// messages and leaves: half with a close handshake, a quarter by closing
// TCP without one, a quarter with a TCP reset. Afterwards the Registry is
// empty and the process has the file descriptors and goroutines it had
// before (TestMain's goleak check covers the rest).
//
// Not parallel: it counts the descriptors and goroutines of the whole
// process, so it runs before the parallel tests start.
func TestChurnLeavesNothingBehind(t *testing.T) {
	const clients, concurrent = 1000, 50
	s := newServer(t, nil)
	fdsBefore, goBefore := countFDs(t), runtime.NumGoroutine()
	start := time.Now()

	ctx, cancel := context.WithCancel(context.Background())
	var peakFDs, peakLen int
	sent := 0
	broadcasting := make(chan struct{})
	go func() {
		defer close(broadcasting)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := s.reg.Broadcast(ctx, notify.SocketMessage{Type: "tick"}); err != nil && ctx.Err() == nil {
				t.Errorf("Broadcast: %v", err)
			}
			sent++
			if i%20 == 0 {
				peakFDs, peakLen = max(peakFDs, countFDs(t)), max(peakLen, s.reg.Len())
			}
		}
	}()

	sem := make(chan struct{}, concurrent)
	var wg sync.WaitGroup
	for i := range clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var tcp net.Conn
			dctx, dcancel := context.WithTimeout(context.WithValue(ctx, connKey{}, &tcp), 20*time.Second)
			defer dcancel()
			c, _, err := websocket.Dial(dctx, s.ws, &websocket.DialOptions{HTTPClient: recordingClient})
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			defer c.CloseNow()
			for range 3 {
				if _, _, err := c.Read(dctx); err != nil {
					t.Errorf("client %d: read: %v", i, err)
					return
				}
			}
			switch i % 4 {
			case 0, 1:
				c.Close(websocket.StatusNormalClosure, "")
			case 2:
				c.CloseNow() // FIN, no close frame
			case 3:
				tcp.(*net.TCPConn).SetLinger(0)
				tcp.Close() // RST
			}
		}()
	}
	wg.Wait()
	cancel()
	<-broadcasting
	errs := s.waitGone(t, clients)
	elapsed := time.Since(start)
	if n := s.reg.Len(); n != 0 {
		t.Errorf("Len = %d after every client left", n)
	}
	var fdsAfter, goAfter int
	fdsBack := waitFor(10*time.Second, func() bool { fdsAfter = countFDs(t); return fdsAfter <= fdsBefore+2 })
	goBack := waitFor(10*time.Second, func() bool { goAfter = runtime.NumGoroutine(); return goAfter <= goBefore+2 })
	abnormal := 0
	for _, err := range errs {
		if err != nil {
			abnormal++
		}
	}
	st := s.reg.Stats()
	t.Logf("%d clients (%d at a time) in %v while %d broadcasts went out: %d frames sent, %d dropped, "+
		"%d ended with a read error (the resets and FINs); peak %d connections; fds before %d, peak %d, after %d; goroutines before %d, after %d",
		clients, concurrent, elapsed.Round(time.Millisecond), sent, st.Sent, st.Dropped, abnormal, peakLen,
		fdsBefore, peakFDs, fdsAfter, goBefore, goAfter)
	if !fdsBack {
		t.Errorf("file descriptors: %d before, %d after", fdsBefore, fdsAfter)
	}
	if !goBack {
		t.Errorf("goroutines: %d before, %d after", goBefore, goAfter)
	}
	if st.SlowConsumers != 0 || st.HeartbeatTimeouts != 0 {
		t.Errorf("Stats = %+v: no client should have been closed by the server", st)
	}
}

// TestSlowConsumerIsolation: 50 clients read everything while one never
// reads. Big frames (64 KiB) fill the stalled client's socket buffers
// (about 4 MB on loopback), then its queue; the broadcast that would take
// the queue past QueueBytes closes it with CloseSlowConsumer: it leaves the
// Registry at once, and its socket once the close frame is written or
// given up on (the time is logged). Healthy clients receive every
// message, in order, and none is closed. The heap grows by no more than the
// stalled queue, the frames shared by everyone and what the test's own
// clients hold.
//
// Healthy here means keeping up: a message is broadcast once every healthy
// client has received all but the last few (the window), as a client on a
// good network would. Not parallel: it measures the heap of the process.
func TestSlowConsumerIsolation(t *testing.T) {
	const (
		healthy    = 50
		window     = 4
		frameSize  = 64<<10 + 64 // payload and envelope
		queueBytes = 1 << 20     // the default QueueBytes
		history    = 16
		maxFrames  = 400 // 25 MiB: far past any socket buffer
	)
	s := newServer(t, &notify.Options{Broker: notify.NewMemoryBroker(&notify.MemoryBrokerOptions{HistoryLength: history})})
	dialReady(t, s, "") // the staller: reads its hello, then nothing

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got [healthy]atomic.Uint64
	progress := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for i := range healthy {
		c, _ := dialReady(t, s, "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32)
			for {
				// Read the seq and discard the rest, so the test's own
				// clients allocate nothing per message.
				_, r, err := c.Reader(ctx)
				if err == nil {
					_, err = io.ReadFull(r, buf)
				}
				if err == nil {
					_, err = io.Copy(io.Discard, r)
				}
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("healthy client %d: %v", i, err)
					}
					return
				}
				seq, ok := parseSeq(buf)
				if want := got[i].Load() + 1; !ok || seq != want {
					t.Errorf("healthy client %d: seq %d, want %d", i, seq, want)
					return
				}
				got[i].Store(seq)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	slowest := func() uint64 {
		m := got[0].Load()
		for i := range got {
			m = min(m, got[i].Load())
		}
		return m
	}

	heapBefore := heapInuse()
	heapPeak := heapBefore
	payload := strings.Repeat("x", 64<<10)
	start := time.Now()
	var overflowAt time.Time
	var overflowSeq, sent uint64
	type ended struct {
		err error
		at  time.Time
	}
	gone := make(chan ended, 1)
	for sent < maxFrames {
		for slowest()+window < sent {
			select {
			case <-progress:
			case <-time.After(10 * time.Second):
				t.Fatalf("healthy clients stuck at %d of %d", slowest(), sent)
			}
		}
		broadcast(t, s.reg, notify.SocketMessage{Type: "big", Data: payload})
		sent++
		if overflowAt.IsZero() {
			if sent%4 == 0 {
				heapPeak = max(heapPeak, heapInuse())
			}
			if s.reg.Stats().SlowConsumers > 0 {
				overflowAt, overflowSeq = time.Now(), sent
				go func() {
					err := s.waitGone(t, 1)[0]
					gone <- ended{err, time.Now()}
				}()
			}
		} else if sent >= overflowSeq+10 {
			break // a few more after the close, to show nobody else was hurt
		}
	}
	if overflowAt.IsZero() {
		t.Fatalf("the staller was not closed after %d frames of 64 KiB", sent)
	}
	end := <-gone
	err, removed := end.err, end.at.Sub(overflowAt)
	if !waitFor(10*time.Second, func() bool { return slowest() == sent }) {
		t.Errorf("healthy clients received %d of %d messages", slowest(), sent)
	}
	if st := s.reg.Stats(); st.SlowConsumers != 1 || st.Connections != healthy {
		t.Errorf("Stats = %+v, want exactly one slow consumer and %d connections", st, healthy)
	}
	cancel()
	wg.Wait()
	heapAfter := heapInuse()

	// The bound: the stalled queue, the frames everyone shares (history and
	// the healthy clients' window), and per writing connection one
	// coalescing buffer (64 KiB and a frame), plus 4 MiB of slack.
	bound := uint64(queueBytes + (window+history)*frameSize + healthy*(64<<10+frameSize) + 4<<20)
	t.Logf("staller closed at broadcast %d (%.1f MiB sent to it: socket buffers + QueueBytes), %v after the first; "+
		"removed %v after the overflow; %d healthy clients got all %d messages. "+
		"HeapInuse before %.1f MiB, peak %.1f MiB (+%.1f MiB, bound %.1f MiB), after %.1f MiB",
		overflowSeq, float64(overflowSeq*frameSize)/(1<<20), overflowAt.Sub(start).Round(time.Millisecond),
		removed.Round(time.Millisecond), healthy, sent,
		mib(heapBefore), mib(heapPeak), mib(heapPeak-heapBefore), mib(bound), mib(heapAfter))
	if !errors.Is(err, notify.ErrSlowConsumer) || closeCode(err) != notify.CloseSlowConsumer {
		t.Errorf("staller ended with %v, want ErrSlowConsumer and code %d", err, notify.CloseSlowConsumer)
	}
	if heapPeak > heapBefore+bound {
		t.Errorf("heap grew by %.1f MiB, bound %.1f MiB", mib(heapPeak-heapBefore), mib(bound))
	}
}

// TestShutdownManyClients: 1,000 connected clients with messages queued
// for each when Shutdown starts receive every one, in order, then 1001
// going away. The clients are pipes whose writers are held in the middle of
// a first message, so the backlog is exactly what was broadcast after it.
func TestShutdownManyClients(t *testing.T) {
	t.Parallel()
	const clients, msgs = 1000, 20
	s := newPipeServer(t, nil)
	conns := make([]*rawConn, clients)
	for i := range conns {
		conns[i] = s.dialReady(t)
	}
	s.holdWriters(t, 64<<10, conns...)
	for i := range msgs {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m", Data: i})
	}
	// Broadcast returns once the message is published; wait until the
	// dispatcher has queued them all. Sent counts the hellos too, so this
	// understates the backlog.
	var backlog uint64
	if !waitFor(10*time.Second, func() bool {
		st := s.reg.Stats()
		backlog = st.Queued - st.Sent
		return backlog >= clients*msgs
	}) {
		t.Fatalf("%d frames queued when Shutdown starts, want at least %d", backlog, clients*msgs)
	}

	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- s.reg.Shutdown(context.Background()) }()
	results := make(chan error, clients)
	for _, c := range conns {
		go func() {
			code, texts := c.readClose()
			want := uint64(2) // after "first"
			for _, text := range texts[1:] {
				if seq, ok := parseSeq([]byte(text)); !ok || seq != want {
					results <- fmt.Errorf("got seq %d, want %d", seq, want)
					return
				}
				want++
			}
			if code != websocket.StatusGoingAway || want != msgs+2 {
				results <- fmt.Errorf("got %d messages then close %d, want %d then 1001", want-2, code, msgs)
				return
			}
			results <- nil
		}()
	}
	failed := 0
	for range clients {
		if err := <-results; err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	st := s.reg.Stats()
	t.Logf("Shutdown of %d clients with %d frames queued took %v; %d clients got all %d messages then 1001; %d frames dropped",
		clients, clients*msgs, time.Since(start).Round(time.Millisecond), clients-failed, msgs, st.Dropped)
	if st.Dropped != 0 || st.Connections != 0 {
		t.Errorf("Stats = %+v, want nothing dropped and no connection left", st)
	}
}

// TestShutdownRespectsContextWithManyStalledClients: 16 clients that
// never read have megabytes queued each; 100 others read along. Shutdown
// gives up at its deadline, drops whoever is left and returns once every
// connection's goroutines have ended.
func TestShutdownRespectsContextWithManyStalledClients(t *testing.T) {
	t.Parallel()
	const stalled, readers = 16, 100
	s := newServer(t, &notify.Options{QueueBytes: 64 << 20, QueueLength: 1 << 12})
	dialMany(t, s, stalled, "&topic=big") // never read again
	var wg sync.WaitGroup
	for _, c := range dialMany(t, s, readers, "") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
	}
	payload := strings.Repeat("x", 64<<10)
	for i := range 96 { // 6 MiB for each stalled client: more than its socket holds
		broadcast(t, s.reg, notify.SocketMessage{Type: "big", Topic: "big", Data: payload})
		broadcast(t, s.reg, notify.SocketMessage{Type: "small", Data: i})
	}
	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := s.reg.Shutdown(ctx)
	took := time.Since(start)
	errs := s.waitGone(t, stalled+readers)
	wg.Wait()
	dropped := 0
	for _, err := range errs {
		if err != nil {
			dropped++
		}
	}
	errs = slices.DeleteFunc(errs, func(err error) bool { return err == nil })[:min(dropped, 1)]
	t.Logf("Shutdown with %d stalled and %d reading clients returned %v after %v (deadline %v); %d connections reported an error",
		stalled, readers, err, took.Round(time.Millisecond), deadline, dropped)
	if dropped != 0 {
		t.Errorf("%d connections reported an error to OnDisconnect, want nil for every connection Shutdown ended (e.g. %v)", dropped, errs)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if n := s.reg.Len(); n != 0 {
		t.Errorf("Len = %d after Shutdown", n)
	}
}
