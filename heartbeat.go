package notify

import (
	"fmt"
	"time"

	"github.com/coder/websocket"
)

// heartbeat is the Registry's one timer goroutine. Rather than a ticker per
// connection, it visits every connection a few times per PingInterval and
// WriteTimeout and:
//   - queues a ping when one is due (the connection's writer sends it and
//     waits for the pong, closing the connection if none comes in time);
//   - drops a connection whose current write has taken longer than
//     WriteTimeout (a cancellable context per write would cost an
//     allocation and a timer on every delivery);
//   - closes a connection whose authorisation expired (1008);
//   - queues a keep-alive for a connection that asked for one when it is
//     due (see ConnOptions.KeepAlive).
func (r *Registry) heartbeat() {
	defer close(r.beatDone)
	t := time.NewTicker(r.tick())
	defer t.Stop()
	for {
		select {
		case <-r.stopBeat:
			return
		case now := <-t.C:
			r.visit(now)
		}
	}
}

func (r *Registry) visit(now time.Time) {
	n := now.UnixNano()
	timeout := r.opts.WriteTimeout.Nanoseconds()
	r.mu.RLock()
	defer r.mu.RUnlock()
	for c := range r.clients {
		switch {
		case c.writeStart.Load() != 0 && n-c.writeStart.Load() > timeout:
			// The write may still be stuck at the next visit: count it once.
			if !c.abort(fmt.Errorf("%w: write took longer than %v (%w)", ErrSlowConsumer, r.opts.WriteTimeout,
				websocket.CloseError{Code: CloseSlowConsumer, Reason: "notify: write timeout"})) {
				break
			}
			r.stats.slow.Add(1)
			r.warnThrottled(int(CloseSlowConsumer), "notify: write timeout", "client", c.id)
		case !c.ident.Expires.IsZero() && now.After(c.ident.Expires):
			c.fail(websocket.StatusPolicyViolation, "notify: authorisation expired", errExpired)
		case n >= c.nextPing.Load():
			c.queuePing()
		}
		if c.keepAlive > 0 && n >= c.nextKeep.Load() {
			c.nextKeep.Store(n + c.keepAlive)
			c.queueKeepAlive()
		}
	}
}

// tick is the heartbeat's period.
func (r *Registry) tick() time.Duration {
	return max(time.Millisecond, min(r.opts.PingInterval, r.opts.WriteTimeout)/4)
}

// minKeepAlive is the shortest keep-alive interval a client may ask for.
const minKeepAlive = time.Second

// keepAliveInterval is the interval a client that asked for keep-alives
// every d gets: at least minKeepAlive and the heartbeat's tick, so that a
// client cannot make the Registry work for it more often than it visits
// connections anyway; at most an hour.
func (r *Registry) keepAliveInterval(d time.Duration) time.Duration {
	return min(max(d, minKeepAlive, r.tick()), time.Hour)
}

// The keep-alive, encoded once: a WebSocket frame and an event.
var (
	keepAliveFrame = wireFrame([]byte(`{"type":"` + TypeKeepAlive + `"}`))
	keepAliveEvent = appendEvent(nil, nil, []byte(TypeKeepAlive), []byte(`{"type":"`+TypeKeepAlive+`"}`))
)
