package notify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// tokenOptions authorizes a request whose access_token is "good" (as user
// ada), forbids one whose token is "banned", refuses any other with 401,
// refuses topics named private-…, and allows the origin page.example.
func tokenOptions() *notify.Options {
	return &notify.Options{
		OriginPatterns:        []string{"page.example"},
		MaxConnectionsPerUser: 1,
		Authorize: func(r *http.Request) (notify.Identity, error) {
			switch r.URL.Query().Get("access_token") {
			case "good":
				return notify.Identity{User: "ada"}, nil
			case "banned":
				return notify.Identity{}, fmt.Errorf("banned: %w", notify.ErrForbidden)
			}
			return notify.Identity{}, errors.New("bad token")
		},
		AuthorizeTopic: func(ctx context.Context, id notify.Identity, topic string) error {
			if strings.HasPrefix(topic, "private-") {
				return notify.ErrForbidden
			}
			return nil
		},
	}
}

// probe GETs url with probe=1 added and origin (if not empty) as Origin,
// and returns the status and the CORS origin it was allowed.
func probe(t *testing.T, s *server, query, origin string) (status int, allowOrigin string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.srv.URL+"?probe=1&"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusNoContent && resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("probe %q: Cache-Control %q, want no-store", query, resp.Header.Get("Cache-Control"))
	}
	return resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin")
}

// TestProbe checks that a probe answers what an upgrade with the same URL
// and Origin would be answered, without upgrading or registering anyone:
// 204 when it would be accepted, else the refusal's status; that answers
// to an allowed foreign origin carry CORS headers, so that its page can
// read the status, and those to a refused origin do not; and that probes
// are not counted as refused connections.
func TestProbe(t *testing.T) {
	t.Parallel()
	s := newServer(t, tokenOptions())
	held, _ := dialReady(t, s, "&access_token=good") // ada's one connection
	_ = held
	other := newServer(t, tokenOptions())
	rejected := s.reg.Stats().Rejected

	for _, tc := range []struct {
		name, query, origin string
		want                int
		wantCORS            bool
	}{
		{"accepted", "access_token=good&topic=news", "", http.StatusNoContent, false},
		{"accepted cross-origin", "access_token=good", "https://page.example", http.StatusNoContent, true},
		{"no token", "", "https://page.example", http.StatusUnauthorized, true},
		{"bad token", "access_token=bad", "", http.StatusUnauthorized, false},
		{"forbidden user", "access_token=banned", "https://page.example", http.StatusForbidden, true},
		{"forbidden topic", "access_token=good&topic=private-x", "https://page.example", http.StatusForbidden, true},
		{"bad query", "access_token=good&since=x", "https://page.example", http.StatusBadRequest, true},
		{"foreign origin", "access_token=good", "https://evil.example", http.StatusForbidden, false},
	} {
		srv := other
		status, cors := probe(t, srv, tc.query, tc.origin)
		if status != tc.want {
			t.Errorf("%s: probe status %d, want %d", tc.name, status, tc.want)
		}
		if want := map[bool]string{true: tc.origin}[tc.wantCORS]; cors != want {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", tc.name, cors, want)
		}
	}

	// ada already holds her one connection on s.
	if status, cors := probe(t, s, "access_token=good", "https://page.example"); status != http.StatusTooManyRequests || cors != "https://page.example" {
		t.Errorf("over the per-user limit: probe %d (CORS %q), want 429 with CORS", status, cors)
	}
	if n := s.reg.Len(); n != 1 {
		t.Errorf("after the probes the Registry has %d connections, want 1: a probe registers no one", n)
	}
	if got := s.reg.Stats().Rejected; got != rejected {
		t.Errorf("Stats.Rejected went from %d to %d: probes are not refused connections", rejected, got)
	}
	if err := other.reg.Close(); err != nil {
		t.Fatal(err)
	}
	if status, _ := probe(t, other, "access_token=good", ""); status != http.StatusServiceUnavailable {
		t.Errorf("after Close: probe %d, want 503", status)
	}
}

// TestRefusalCORS checks that a refusal after the origin check carries
// CORS headers for an allowed origin, on both transports, so that a page
// of that origin could read it, and that one for a foreign origin does
// not.
func TestRefusalCORS(t *testing.T) {
	t.Parallel()
	s := newServer(t, tokenOptions())
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"websocket", upgradeHeader()},
		{"sse", http.Header{"Accept": {"text/event-stream"}}},
	} {
		for origin, want := range map[string]string{"https://page.example": "https://page.example", "https://evil.example": ""} {
			req, err := http.NewRequest(http.MethodGet, s.srv.URL+"?access_token=bad", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = tc.header.Clone()
			req.Header.Set("Origin", origin)
			resp, err := s.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			wantStatus := http.StatusUnauthorized
			if want == "" {
				wantStatus = http.StatusForbidden
			}
			got := resp.Header.Get("Access-Control-Allow-Origin")
			if resp.StatusCode != wantStatus || got != want {
				t.Errorf("%s from %s: %d with Access-Control-Allow-Origin %q, want %d with %q", tc.name, origin, resp.StatusCode, got, wantStatus, want)
			}
			if want != "" && resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
				t.Errorf("%s from %s: no Access-Control-Allow-Credentials: true", tc.name, origin)
			}
		}
	}
}

// TestTokenNeverLoggedAnyTransport is TestQueryTokensAreNeverLogged with
// notify.js's carrier, access_token, over both transports and probes: it
// runs such URLs through what the Registry logs at Debug level (refused
// upgrades, streams and probes, a hook that panics, a connection closed
// for abuse, a stream that ends) and checks that the log, which did record
// those events, never contains the token.
func TestTokenNeverLoggedAnyTransport(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-T0KEN"
	var log syncBuffer
	opts := tokenOptions()
	authorize := opts.Authorize
	opts.Authorize = func(r *http.Request) (notify.Identity, error) {
		if r.URL.Query().Get("panic") != "" {
			panic("Authorize panicked")
		}
		if r.URL.Query().Get("access_token") == secret {
			return notify.Identity{User: "grace"}, nil
		}
		return authorize(r)
	}
	opts.InboundRate, opts.InboundBurst = 1, 1
	opts.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newServer(t, opts)

	c, _ := dialReady(t, s, "&access_token="+secret)
	for range 3 {
		c.Write(context.Background(), websocket.MessageText, []byte("flood"))
	}
	if _, code := readUntilClose(t, c); code != websocket.StatusPolicyViolation {
		t.Errorf("flooding client closed with %d, want 1008", code)
	}
	for _, q := range []string{"access_token=" + secret + "x", "access_token=" + secret + "&panic=1", "access_token=" + secret + "&topic=private-x"} {
		if _, _, err := websocket.Dial(context.Background(), s.ws+"?"+q, nil); err == nil {
			t.Fatalf("dial with %s: accepted, want refused", q)
		}
		if _, resp := openStream(t, s.srv.Client(), s.srv.URL+"?"+q, http.Header{"Origin": {"https://evil.example"}}); resp.StatusCode == http.StatusOK {
			t.Fatalf("stream with %s: accepted, want refused", q)
		}
		probe(t, s, q, "")
	}
	sc, _ := streamReady(t, s, "access_token="+secret)
	sc.close()
	s.waitGone(t, 2)
	if err := s.reg.Close(); err != nil {
		t.Fatal(err)
	}

	out := log.String()
	for _, want := range []string{"upgrade refused", "hook panicked", "connection ended"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log has no %q: the test did not exercise what it checks\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) {
		t.Errorf("the log contains the token:\n%s", out)
	}
	t.Logf("%d bytes of log, no token", len(out))
}

// TestProbeAnswersWithoutUpgrade checks that a probe with the headers of
// a WebSocket upgrade is an upgrade, not a probe: probe=1 only marks a
// plain GET, so a client cannot use it to skip the handshake checks.
func TestProbeAnswersWithoutUpgrade(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	req, err := http.NewRequest(http.MethodGet, s.srv.URL+"?probe=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = upgradeHeader("Sec-Websocket-Version", "8")
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if diff := cmp.Diff(http.StatusUpgradeRequired, resp.StatusCode); diff != "" {
		t.Errorf("an upgrade with probe=1 (-want +got):\n%s", diff)
	}
}
