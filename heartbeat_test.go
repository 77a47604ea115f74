package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// helloKeepAlive decodes notify.hello's keepalive (0 when absent).
func helloKeepAlive(t *testing.T, data json.RawMessage) int64 {
	t.Helper()
	var d struct {
		KeepAlive *int64 `json:"keepalive"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("hello %s: %v", data, err)
	}
	if d.KeepAlive == nil {
		return 0
	}
	if *d.KeepAlive == 0 {
		t.Fatalf("hello %s: keepalive 0 written, want it omitted", data)
	}
	return *d.KeepAlive
}

// TestKeepAlive checks the keep-alive on both transports: a client that
// asks for one every MS milliseconds is told the interval it gets in
// notify.hello (raised to the one-second floor when it asks for less) and
// then receives notify.keepalive messages, visible to a script, with
// nothing else happening; a client that does not ask gets neither. The
// intervals measured are logged, not asserted.
func TestKeepAlive(t *testing.T) {
	t.Parallel()
	// A heartbeat tick of 250 ms: the floor is the one second minimum.
	s := newServer(t, &notify.Options{PingInterval: time.Second})

	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		for query, want := range map[string]int64{"": 0, "&keepalive=1": 1000, "&keepalive=1500": 1500} {
			c := dial(t, s.ws+"?since=now"+query)
			hello := read(t, c)
			if got := helloKeepAlive(t, hello.Data); hello.Type != notify.TypeHello || got != want {
				t.Errorf("%q: hello %+v with keepalive %d, want %d", query, hello, got, want)
			}
			if want == 0 {
				continue
			}
			start := time.Now()
			for i := range 2 {
				if m := read(t, c); m.Type != notify.TypeKeepAlive {
					t.Fatalf("%q: got %+v, want %s", query, m, notify.TypeKeepAlive)
				}
				t.Logf("%q: keep-alive %d after %v", query, i+1, time.Since(start))
			}
		}
		if _, resp, err := websocket.Dial(context.Background(), s.ws+"?keepalive=soon", nil); err == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("keepalive=soon: %v, want 400", err)
		}
	})
	t.Run("sse", func(t *testing.T) {
		t.Parallel()
		sc := stream(t, s.srv.Client(), s.srv.URL+"?keepalive=1000", nil)
		hello := sc.msg()
		if got := helloKeepAlive(t, hello.Data); got != 1000 {
			t.Errorf("hello %+v: keepalive %d, want 1000", hello, got)
		}
		start := time.Now()
		for i := range 2 {
			ev := sc.read()
			want := event{Event: notify.TypeKeepAlive, Data: `{"type":"notify.keepalive"}`}
			if diff := cmp.Diff(want, ev); diff != "" {
				t.Fatalf("keep-alive event (-want +got):\n%s", diff)
			}
			t.Logf("keep-alive %d after %v", i+1, time.Since(start))
		}
	})
}

// TestShutdownSpreadsReconnects checks that Shutdown asks each connection,
// on both transports, to wait before it reconnects, drawn over a window of
// Len()/ReconnectRate seconds: in the 1001 close reason over WebSocket, and
// over Server-Sent Events in notify.close's wait with a retry: field of the
// same delay, so that a plain EventSource waits too.
func TestShutdownSpreadsReconnects(t *testing.T) {
	t.Parallel()
	const n = 20 // 10 of each, at 5 per second: a 4 s window
	s := newServer(t, &notify.Options{ReconnectRate: 5})
	var sockets []*websocket.Conn
	var streams []*streamClient
	for range n / 2 {
		c, _ := dialReady(t, s, "")
		sockets = append(sockets, c)
		sc, _ := streamReady(t, s, "")
		streams = append(streams, sc)
	}
	go s.reg.Shutdown(context.Background())

	reason := regexp.MustCompile(`^notify: server shutting down, reconnect in (\d+)ms$`)
	waits := map[int64]bool{}
	check := func(what string, wait int64) {
		t.Helper()
		if wait < 0 || wait >= 4000 {
			t.Errorf("%s: wait %d ms, want within the 4 s window", what, wait)
		}
		waits[wait] = true
	}
	for i, c := range sockets {
		_, _, err := c.Read(context.Background())
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway {
			t.Fatalf("socket %d: %v, want a 1001 close", i, err)
		}
		m := reason.FindStringSubmatch(ce.Reason)
		if m == nil {
			t.Fatalf("socket %d: close reason %q", i, ce.Reason)
		}
		wait, _ := strconv.ParseInt(m[1], 10, 64)
		check("socket", wait)
	}
	for i, sc := range streams {
		_, end := sc.untilEnd()
		if end.Code != websocket.StatusGoingAway || end.Wait == nil || !reason.MatchString(end.Reason) {
			t.Fatalf("stream %d: notify.close %+v, want 1001 with a wait", i, end)
		}
		if int64(sc.retry) != *end.Wait {
			t.Errorf("stream %d: retry: %d, want the wait, %d", i, sc.retry, *end.Wait)
		}
		check("stream", *end.Wait)
	}
	// 20 draws over 4,000 ms: all equal only if the spreading is broken.
	if len(waits) < 2 {
		t.Errorf("every connection was told the same wait: %v", waits)
	}
	t.Logf("%d distinct waits among %d connections", len(waits), n)
}

// TestHeartbeatClosesUnresponsivePeer: a client that never reads swallows
// pings and is closed with CloseHeartbeatTimeout. (That a client that reads
// is kept is TestHeartbeatClosesSilentPeerInTwoIntervals's part.)
func TestHeartbeatClosesUnresponsivePeer(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{PingInterval: 300 * time.Millisecond})
	c := dialRawReady(t, s, "") // never reads again: swallows pings

	errs := s.waitGone(t, 1)
	if closeCode(errs[0]) != notify.CloseHeartbeatTimeout {
		t.Errorf("unresponsive peer ended with %v, want code %d", errs[0], notify.CloseHeartbeatTimeout)
	}
	if code, _ := c.readClose(); code != 4001 { // the number on the wire, which clients hard-code
		t.Errorf("the peer read close code %d, want 4001", code)
	}
	if st := s.reg.Stats(); st.HeartbeatTimeouts != 1 || st.Connections != 0 {
		t.Errorf("Stats = %+v, want one timeout", st)
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
