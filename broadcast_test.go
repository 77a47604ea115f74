package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
