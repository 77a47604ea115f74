package notify_test

// The close codes, part of the protocol.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

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
