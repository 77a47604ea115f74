package notify_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsnotify/notify"
)

// maskedFrame builds a client text frame (clients must mask).
func maskedFrame(payload string) []byte {
	key := [4]byte{1, 2, 3, 4}
	f := []byte{0x81, 0x80 | byte(len(payload))}
	f = append(f, key[:]...)
	for i := range len(payload) {
		f = append(f, payload[i]^key[i%4])
	}
	return f
}

// TestFrameSentWithHandshakeIsRead sends the upgrade request and a first
// frame in one write, so the HTTP server has buffered the frame when the
// connection is hijacked: it must still reach OnMessage.
func TestFrameSentWithHandshakeIsRead(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	s := newServer(t, &notify.Options{OnMessage: func(_ context.Context, _ *notify.Client, data []byte) { got <- string(data) }})
	nc, err := net.Dial("tcp", s.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET / HTTP/1.1\r\nHost: " + s.srv.Listener.Addr().String() + "\r\n" +
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := nc.Write(append([]byte(req), maskedFrame(`{"type":"early"}`)...)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	select {
	case m := <-got:
		if m != `{"type":"early"}` {
			t.Errorf("OnMessage got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the frame sent with the handshake never reached OnMessage")
	}
}

// TestBacklogIsCoalesced: a resuming client's replay is one backlog, which
// goes out in one write call rather than one per frame.
func TestBacklogIsCoalesced(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	const n = 100
	for i := range n {
		broadcast(t, s.reg, notify.SocketMessage{Type: "m", Data: i})
	}
	c := dial(t, s.ws+"?since=0")
	readN(t, c, n+1) // hello and the replay
	st := s.reg.Stats()
	if writes := notify.WriteCalls(s.reg); st.Sent != n+1 || writes > 2 {
		t.Errorf("%d frames in %d write calls; want %d frames in one or two", st.Sent, writes, n+1)
	}
}

// TestFrameLengths sends payloads across the frame header's length
// boundaries (125/126 and 65535/65536 bytes) and reads them back.
func TestFrameLengths(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c, _ := dialReady(t, s, "")
	overhead := len(`{"seq":1,"type":"m","data":"","time":"2026-01-01T00:00:00Z"}`)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var sizes []int
	for _, frameLen := range []int{125, 126, 65535, 65536, 200000} {
		data := strings.Repeat("x", frameLen-overhead)
		broadcast(t, s.reg, notify.SocketMessage{Type: "m", Data: data, Time: at})
		sizes = append(sizes, frameLen)
	}
	for i, want := range sizes {
		_, b, err := c.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// seq grows from 1 to 5: one digit throughout.
		if len(b) != want {
			t.Errorf("message %d: %d bytes, want %d", i, len(b), want)
		}
	}
	if err := s.reg.NotifyText(context.Background(), strings.Repeat("é", 40000)); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(context.Background()); err != nil || len(b) != 80000 {
		t.Errorf("NotifyText of 80000 bytes: got %d bytes, %v", len(b), err)
	}
}
