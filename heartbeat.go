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
//   - closes a connection whose authorisation expired (1008).
func (r *Registry) heartbeat() {
	defer close(r.beatDone)
	t := time.NewTicker(max(time.Millisecond, min(r.opts.PingInterval, r.opts.WriteTimeout)/4))
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
	}
}
