package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

func TestBroadcastReachesEveryClientInOrder(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	var clients []*websocket.Conn
	for range 3 {
		c, _ := dialReady(t, s, "")
		clients = append(clients, c)
	}
	at := time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)
	for i := range 5 {
		broadcast(t, s.reg, notify.SocketMessage{Type: "customer.created", Data: map[string]int{"id": i}, Time: at})
	}
	var want []wire
	for i := range 5 {
		want = append(want, wire{Seq: uint64(i + 1), Type: "customer.created", Data: json.RawMessage(fmt.Sprintf(`{"id":%d}`, i)), Time: at})
	}
	for _, c := range clients {
		var got []wire
		for range 5 {
			got = append(got, read(t, c))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("messages (-want +got):\n%s", diff)
		}
	}
	if st := s.reg.Stats(); st.Broadcasts != 5 || st.Connections != 3 {
		t.Errorf("Stats = %+v, want 5 broadcasts to 3 connections", st)
	}
}

func TestEnvelopeOnTheWire(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c, _ := dialReady(t, s, "")
	broadcast(t, s.reg, notify.SocketMessage{Type: "customer.created", Data: map[string]string{"name": "Ada"}, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	broadcast(t, s.reg, notify.SocketMessage{Type: "ping"}) // no data, time set by Broadcast
	ctx := context.Background()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`{"seq":1,"type":"customer.created","data":{"name":"Ada"},"time":"2026-01-02T03:04:05Z"}`, string(b)); diff != "" {
		t.Errorf("frame (-want +got):\n%s", diff)
	}
	m := read(t, c)
	if m.Seq != 2 || m.Type != "ping" || time.Since(m.Time) > time.Minute {
		t.Errorf("second message %+v: want seq 2 with a current time", m)
	}
}

func TestNotifyTextSendsRawFrame(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c, _ := dialReady(t, s, "")
	if err := s.reg.NotifyText(context.Background(), "Customer 42 was created"); err != nil {
		t.Fatal(err)
	}
	typ, b, err := c.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if typ != websocket.MessageText || string(b) != "Customer 42 was created" {
		t.Errorf("got %v %q", typ, b)
	}
	if err := s.reg.NotifyText(context.Background(), "\xff"); !errors.Is(err, notify.ErrInvalidMessage) {
		t.Errorf("NotifyText(invalid UTF-8) = %v, want ErrInvalidMessage", err)
	}
}

func TestBroadcastRejectsInvalidMessages(t *testing.T) {
	t.Parallel()
	reg := notify.New(nil)
	defer reg.Close()
	for _, m := range []notify.SocketMessage{
		{},
		{Type: "notify.hello"},
		{Type: "x", Topic: "bad topic"},
		{Type: "x", Data: func() {}},
	} {
		if err := reg.Broadcast(context.Background(), m); !errors.Is(err, notify.ErrInvalidMessage) {
			t.Errorf("Broadcast(%+v) = %v, want ErrInvalidMessage", m, err)
		}
	}
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

func TestAddServesSelfAcceptedConnections(t *testing.T) {
	t.Parallel()
	reg := notify.New(nil)
	added := make(chan error, 1)
	srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		added <- reg.Add(context.Background(), conn, &notify.ConnOptions{ResumeNow: true})
	})
	c := dial(t, srv)
	if m := read(t, c); m.Type != notify.TypeHello {
		t.Fatalf("got %+v, want hello", m)
	}
	broadcast(t, reg, notify.SocketMessage{Type: "hi"})
	if m := read(t, c); m.Type != "hi" {
		t.Errorf("got %+v", m)
	}
	c.Close(websocket.StatusNormalClosure, "bye")
	if err := <-added; err != nil {
		t.Errorf("Add after a normal close = %v, want nil", err)
	}
	if n := reg.Len(); n != 0 {
		t.Errorf("Len = %d after the client left", n)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSlowConsumerIsClosedOthersUnaffected(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	slow, _ := dialReady(t, s, "")
	fast, _ := dialReady(t, s, "")

	// The slow client does not read, so once the socket buffers are full
	// the server's writes to it stall and its queue overflows (1 MiB by
	// default). The fast client reads each message before the next is
	// sent: the stalled one must not hold it up.
	payload := strings.Repeat("x", 64<<10)
	const n = 300 // about 19 MiB: far more than the loopback buffers hold
	for i := range n {
		broadcast(t, s.reg, notify.SocketMessage{Type: "big", Data: payload})
		if m := read(t, fast); m.Seq != uint64(i+1) {
			t.Fatalf("healthy client got seq %d, want %d", m.Seq, i+1)
		}
	}
	errs := s.waitGone(t, 1)
	if !errors.Is(errs[0], notify.ErrSlowConsumer) || closeCode(errs[0]) != notify.CloseSlowConsumer {
		t.Errorf("slow client ended with %v, want ErrSlowConsumer with code %d", errs[0], notify.CloseSlowConsumer)
	}
	if st := s.reg.Stats(); st.SlowConsumers != 1 || st.Connections != 1 {
		t.Errorf("Stats = %+v, want 1 slow consumer and 1 live connection", st)
	}
	ms, _ := readUntilClose(t, slow)
	for i, m := range ms {
		if m.Seq != uint64(i+1) {
			t.Fatalf("slow client got seq %d at %d: what it got must be in order", m.Seq, i)
		}
	}
}

// TestDefaultQueueAbsorbsBursts checks the default queue against bursts: 200
// broadcasts sent as fast as one goroutine can must not close clients that
// read as fast as they can.
func TestDefaultQueueAbsorbsBursts(t *testing.T) {
	t.Parallel()
	const clients, burst = 20, 200
	run := func(queueLength int) (uint64, int64) {
		s := newServer(t, &notify.Options{QueueLength: queueLength})
		var wg sync.WaitGroup
		var received atomic.Int64
		for range clients {
			c, _ := dialReady(t, s, "")
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for range burst {
					if _, _, err := c.Read(ctx); err != nil {
						return // closed as slow
					}
					received.Add(1)
				}
			}()
		}
		for i := range burst {
			broadcast(t, s.reg, notify.SocketMessage{Type: "burst", Data: i})
		}
		wg.Wait()
		return s.reg.Stats().SlowConsumers, received.Load()
	}
	if slow, got := run(0); slow != 0 || got != clients*burst {
		t.Errorf("default queue: %d clients closed as slow, %d of %d messages received", slow, got, clients*burst)
	}
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

func TestOnMessageReceivesApplicationFrames(t *testing.T) {
	t.Parallel()
	got := make(chan string, 2)
	s := newServer(t, &notify.Options{OnMessage: func(ctx context.Context, c *notify.Client, data []byte) {
		got <- string(data)
	}})
	c, _ := dialReady(t, s, "")
	for _, m := range []string{`{"type":"chat","text":"hi"}`, "plain text"} {
		if err := c.Write(context.Background(), websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
		if g := <-got; g != m {
			t.Errorf("OnMessage got %q, want %q", g, m)
		}
	}
}

func TestHooksSeeConnectAndDisconnect(t *testing.T) {
	t.Parallel()
	connected := make(chan *notify.Client, 1)
	s := newServer(t, &notify.Options{
		Authorize: func(r *http.Request) (notify.Identity, error) { return notify.Identity{User: "ada"}, nil },
		OnConnect: func(c *notify.Client) { connected <- c },
	})
	c := dial(t, s.ws+"?topic=customers")
	cl := <-connected
	if cl.Identity().User != "ada" || !cmp.Equal(cl.Topics(), []string{"customers"}) || cl.ID() == "" || cl.RemoteAddr() == "" {
		t.Errorf("client: user %q topics %v id %q addr %q", cl.Identity().User, cl.Topics(), cl.ID(), cl.RemoteAddr())
	}
	c.Close(websocket.StatusGoingAway, "")
	if errs := s.waitGone(t, 1); errs[0] != nil {
		t.Errorf("OnDisconnect err = %v, want nil for 1001", errs[0])
	}
}

func TestShutdownFlushesQueueThenGoingAway(t *testing.T) {
	t.Parallel()
	reg := notify.New(nil)
	srv := newHTTPServer(t, reg.Handler().ServeHTTP)
	const clients, msgs = 20, 100
	var conns []*websocket.Conn
	for range clients {
		c := dial(t, srv+"?since=now")
		read(t, c) // hello: registered
		conns = append(conns, c)
	}
	for i := range msgs {
		broadcast(t, reg, notify.SocketMessage{Type: "m", Data: i})
	}
	results := make(chan error, clients)
	for _, c := range conns {
		go func() {
			ms, code := readUntilClose(t, c)
			if len(ms) != msgs || code != websocket.StatusGoingAway {
				results <- fmt.Errorf("got %d messages and code %d, want %d and 1001", len(ms), code, msgs)
				return
			}
			results <- nil
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for range clients {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	if err := reg.Broadcast(context.Background(), notify.SocketMessage{Type: "late"}); !errors.Is(err, notify.ErrClosed) {
		t.Errorf("Broadcast after Shutdown = %v, want ErrClosed", err)
	}
	if err := reg.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if n := reg.Len(); n != 0 {
		t.Errorf("Len = %d after Shutdown", n)
	}
}

func TestShutdownRespectsContextWhenClientsStall(t *testing.T) {
	t.Parallel()
	reg := notify.New(nil)
	srv := newHTTPServer(t, reg.Handler().ServeHTTP)
	c := dial(t, srv+"?since=now")
	read(t, c)
	payload := strings.Repeat("y", 64<<10)
	for range 15 { // about 1 MiB: more than loopback socket buffers hold
		broadcast(t, reg, notify.SocketMessage{Type: "big", Data: payload})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := reg.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a stalled client = %v, want DeadlineExceeded", err)
	}
	if n := reg.Len(); n != 0 {
		t.Errorf("Len = %d after Shutdown", n)
	}
}

// TestConcurrentChurn connects, disconnects and broadcasts from many
// goroutines at once; run it with -race. TestMain checks that nothing leaks.
func TestConcurrentChurn(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	for range 4 { // each broadcasts every millisecond: steady load, not a flood
		bg.Add(1)
		go func() {
			defer bg.Done()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if err := s.reg.Broadcast(ctx, notify.SocketMessage{Type: "tick"}); err != nil && ctx.Err() == nil {
					t.Errorf("Broadcast: %v", err)
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := websocket.Dial(ctx, s.ws+"?since=now", nil)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer c.CloseNow()
			for range 3 {
				if _, _, err := c.Read(ctx); err != nil {
					t.Errorf("read: %v", err)
					return
				}
			}
			if i%2 == 0 {
				c.Close(websocket.StatusNormalClosure, "")
			} // else: dropped by CloseNow, without a handshake
		}()
	}
	wg.Wait()
	cancel()
	bg.Wait()
	s.waitGone(t, 100)
	if n := s.reg.Len(); n != 0 {
		t.Errorf("Len = %d after every client left", n)
	}
}

func TestPanickingOnMessageClosesOnlyThatConnection(t *testing.T) {
	t.Parallel()
	s := newServer(t, &notify.Options{OnMessage: func(context.Context, *notify.Client, []byte) { panic("boom") }})
	bystander, _ := dialReady(t, s, "")
	c, _ := dialReady(t, s, "")
	c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"x"}`))
	if _, code := readUntilClose(t, c); code != websocket.StatusInternalError {
		t.Errorf("close code %d, want 1011", code)
	}
	if errs := s.waitGone(t, 1); closeCode(errs[0]) != websocket.StatusInternalError {
		t.Errorf("OnDisconnect err %v", errs[0])
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "still.here"})
	if m := read(t, bystander); m.Type != "still.here" {
		t.Errorf("bystander got %+v", m)
	}
}

// TestNotifyTextCannotPassForLibraryMessages: raw text that a client
// running JSON.parse (notify.js) would take for a library message
// (notify.hello, notify.gap, any notify.* type) or for a numbered message
// (any "seq" member) is refused with ErrInvalidMessage and reaches no
// client; near misses are sent exactly as given.
func TestNotifyTextCannotPassForLibraryMessages(t *testing.T) {
	t.Parallel()
	deep := `{"data":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`
	cases := []struct {
		name, text string
		refused    bool
	}{
		{"forged gap", `{"type":"notify.gap","data":{"reason":"epoch","epoch":"x","seq":0}}`, true},
		{"forged hello", `{"type":"notify.hello","data":{"epoch":"x","seq":9}}`, true},
		{"forged error", `{"type":"notify.error","data":{"request":"notify.subscribe","topic":"t"}}`, true},
		{"bare prefix", `{"type":"notify."}`, true},
		{"huge seq", `{"seq":9007199254740991,"type":"customer.created"}`, true},
		{"seq as string", `{"seq":"5","type":"customer.created"}`, true},
		{"seq null", `{"seq":null}`, true},
		{"seq zero", `{"seq":0,"type":"customer.created"}`, true},
		{"leading whitespace", " \t\r\n{\"type\":\"notify.gap\"}", true},
		{"escaped type", `{"type":"notify\u002egap","data":{"epoch":"x","seq":0}}`, true},
		{"escaped first letter", `{"type":"\u006eotify.hello"}`, true},
		{"escaped key", `{"\u0073eq":5,"type":"x"}`, true},
		{"reserved last of duplicates", `{"type":"customer.created","type":"notify.gap"}`, true},
		{"reserved first of duplicates", `{"type":"notify.gap","type":"customer.created"}`, true},
		{"seq after nesting", `{"data":{"a":[1,{"b":2}]},"seq":3}`, true},
		{"deeper than encoding/json decodes", deep, true},
		{"object then more", `{"type":"x"} {"seq":1}`, true},
		{"object then junk", `{"type":"x"} junk`, true},
		{"unparsable object", `{seq: 1}`, true},
		{"invalid UTF-8", "\xff", true},

		{"plain text", "Customer 42 was created", false},
		{"empty", "", false},
		{"application object", `{"type":"customer.created","data":{"id":7}}`, false},
		{"key in another case", `{"Seq":5,"SEQ":6,"type":"customer.created"}`, false},
		{"type in another case", `{"type":"Notify.gap","data":{"epoch":"x","seq":0}}`, false},
		{"type without the dot", `{"type":"notify"}`, false},
		{"type not a string", `{"type":["notify.gap"]}`, false},
		{"reserved words nested", `{"type":"customer.created","data":{"seq":5,"type":"notify.gap"}}`, false},
		{"reserved words as values", `{"note":"seq","kind":"notify.gap"}`, false},
		{"array", `[{"seq":1,"type":"notify.gap"}]`, false},
		{"JSON string", `"{\"seq\":1,\"type\":\"notify.gap\"}"`, false},
		{"number", `42`, false},
		{"no-break space first", "\u00a0{\"seq\":1}", false}, // JSON.parse fails: text
		{"byte order mark first", "\ufeff{\"seq\":1}", false},
		{"whitespace around object", " {\"type\":\"customer.created\"} \n", false},
	}
	s := newServer(t, nil)
	c, _ := dialReady(t, s, "")
	var want []string
	for _, tc := range cases {
		err := s.reg.NotifyText(context.Background(), tc.text)
		if tc.refused != errors.Is(err, notify.ErrInvalidMessage) || !tc.refused && err != nil {
			t.Errorf("%s: NotifyText(%.60q) = %v, want refused %v", tc.name, tc.text, err, tc.refused)
		}
		if err == nil {
			want = append(want, tc.text)
		}
	}
	broadcast(t, s.reg, notify.SocketMessage{Type: "fence"})
	var got []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		typ, b, err := c.Read(ctx)
		cancel()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if typ != websocket.MessageText {
			t.Fatalf("read a %v frame", typ)
		}
		if strings.Contains(string(b), `"type":"fence"`) {
			break
		}
		got = append(got, string(b))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("frames the client received before the fence (-want +got):\n%s", diff)
	}
}

// TestCloseCodeNumbers pins the close codes clients depend on to their
// numbers: notify.js, and any client written against the README, compares
// with 4000 and 4001, not with our constants. A slow consumer (here: one
// message larger than QueueBytes) must see 4000 on the wire.
func TestCloseCodeNumbers(t *testing.T) {
	t.Parallel()
	if notify.CloseSlowConsumer != 4000 || notify.CloseHeartbeatTimeout != 4001 {
		t.Errorf("CloseSlowConsumer = %d, CloseHeartbeatTimeout = %d; clients expect 4000 and 4001",
			notify.CloseSlowConsumer, notify.CloseHeartbeatTimeout)
	}
	s := newServer(t, &notify.Options{QueueBytes: 1 << 10})
	c, _ := dialReady(t, s, "")
	broadcast(t, s.reg, notify.SocketMessage{Type: "big", Data: strings.Repeat("x", 2<<10)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if code := websocket.CloseStatus(err); code != 4000 {
		t.Errorf("the slow client read %q, %v; want the close code 4000 (slow consumer)", b, err)
	}
}
