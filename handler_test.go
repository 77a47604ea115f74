package notify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

// TestHandlerRefusals checks each documented status, that the body is one
// line, that nothing was upgraded, and that a connected client is unaffected.
func TestHandlerRefusals(t *testing.T) {
	t.Parallel()
	upgrade := upgradeHeader()
	tests := []struct {
		name   string
		opts   notify.Options
		query  string
		header http.Header
		want   int
	}{
		{"plain GET", notify.Options{}, "", http.Header{}, http.StatusBadRequest},
		{"upgrade without Connection", notify.Options{}, "", upgradeHeader("Connection", "keep-alive"), http.StatusUpgradeRequired},
		{"foreign origin", notify.Options{}, "", upgradeHeader("Origin", "https://evil.example"), http.StatusForbidden},
		{"origin not matching patterns", notify.Options{OriginPatterns: []string{"*.example.com"}}, "", upgradeHeader("Origin", "https://example.org"), http.StatusForbidden},
		{"malformed origin", notify.Options{}, "", upgradeHeader("Origin", "::"), http.StatusForbidden},
		{"bad since", notify.Options{}, "?since=abc", upgrade, http.StatusBadRequest},
		{"negative since", notify.Options{}, "?since=-1", upgrade, http.StatusBadRequest},
		{"repeated since", notify.Options{}, "?since=1&since=2", upgrade, http.StatusBadRequest},
		{"epoch without since", notify.Options{}, "?epoch=abc", upgrade, http.StatusBadRequest},
		{"bad topic", notify.Options{}, "?topic=a%20b", upgrade, http.StatusBadRequest},
		{"empty topic", notify.Options{}, "?topic=", upgrade, http.StatusBadRequest},
		{"too many topics", notify.Options{MaxTopics: 2}, "?topic=a&topic=b&topic=c", upgrade, http.StatusBadRequest},
		{"unauthenticated", notify.Options{Authorize: refuse(errors.New("notify-test: no token"))}, "?deny", upgrade, http.StatusUnauthorized},
		{"forbidden", notify.Options{Authorize: refuse(fmt.Errorf("banned: %w", notify.ErrForbidden))}, "?deny", upgrade, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, &tt.opts)
			bystander, _ := dialReady(t, s, "")
			req, _ := http.NewRequest("GET", s.srv.URL+tt.query, nil)
			req.Header = tt.header
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d (%q), want %d", resp.StatusCode, body, tt.want)
			}
			if lines := strings.Count(strings.TrimSpace(string(body)), "\n"); lines != 0 || len(body) == 0 {
				t.Errorf("body %q, want one line", body)
			}
			if n := s.reg.Len(); n != 1 {
				t.Errorf("Len = %d, want only the bystander", n)
			}
			broadcast(t, s.reg, notify.SocketMessage{Type: "still.here"})
			if m := read(t, bystander); m.Type != "still.here" {
				t.Errorf("bystander got %+v", m)
			}
		})
	}
}

// refuse returns an Authorize hook that refuses requests with ?deny.
func refuse(err error) func(*http.Request) (notify.Identity, error) {
	return func(r *http.Request) (notify.Identity, error) {
		if r.URL.Query().Has("deny") {
			return notify.Identity{}, err
		}
		return notify.Identity{}, nil
	}
}

func TestHandlerAllowsConfiguredOrigins(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{OriginPatterns: []string{"*.example.com", "http://localhost:*"}})
	for _, origin := range []string{"https://app.example.com", "http://localhost:3000", ""} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, _, err := websocket.Dial(context.Background(), s.ws, &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			t.Errorf("origin %q: %v", origin, err)
			continue
		}
		c.CloseNow()
	}
}

func TestHandlerConnectionLimits(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{MaxConnections: 3, MaxConnectionsPerUser: 2})
	dialReady(t, s, "")
	dialReady(t, s, "")
	// A third from the same address is over the per-address limit.
	_, resp, err := websocket.Dial(context.Background(), s.ws, nil)
	if err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("third connection from one address: %v %v, want 429", err, resp)
	}

	s2 := newServer(t, &notify.Options{MaxConnections: 1})
	dialReady(t, s2, "")
	_, resp, err = websocket.Dial(context.Background(), s2.ws, nil)
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("over MaxConnections: %v %v, want 503", err, resp)
	}
}

func TestHandlerAfterClose(t *testing.T) {
	t.Parallel()
	reg := notify.New(nil)
	srv := httptest.NewServer(reg.Handler())
	defer srv.Close()
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	_, resp, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Close: %v %v, want 503", err, resp)
	}
	if err := reg.Broadcast(context.Background(), notify.SocketMessage{Type: "x"}); !errors.Is(err, notify.ErrClosed) {
		t.Errorf("Broadcast after Close = %v", err)
	}
	if err := reg.NotifyText(context.Background(), "x"); !errors.Is(err, notify.ErrClosed) {
		t.Errorf("NotifyText after Close = %v", err)
	}
}

func TestScriptHandler(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(notify.ScriptHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/notify.js")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") ||
		!strings.Contains(string(body), "export function connect(") {
		t.Errorf("GET notify.js: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
}

func TestParseQuery(t *testing.T) {
	t.Parallel()
	q := map[string][]string{"topic": {"a", "b"}, "since": {"42"}, "epoch": {"e1"}}
	o, err := notify.ParseQuery(q)
	if err != nil || o.Resume == nil || *o.Resume != (notify.Position{Epoch: "e1", Seq: 42}) || o.ResumeNow || len(o.Topics) != 2 {
		t.Errorf("ParseQuery = %+v, %v", o, err)
	}
	o, err = notify.ParseQuery(map[string][]string{"since": {"now"}})
	if err != nil || o.Resume != nil || !o.ResumeNow {
		t.Errorf("ParseQuery(since=now) = %+v, %v", o, err)
	}
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
