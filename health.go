package notify

import (
	"context"
	"sync/atomic"
	"time"
)

// healthInterval is how often a Registry asks its broker for the stream's
// head, for Stats.BrokerConnected and Stats.BrokerLag.
const healthInterval = time.Second

// brokerHealth is what the last look at the broker found.
type brokerHealth struct {
	connected atomic.Bool
	lag       atomic.Uint64
}

// watchBroker is the Registry's health goroutine: once per healthInterval
// it reads the broker's head (bounded by the interval) and compares it with
// what the dispatcher has fanned out. It runs apart from the heartbeat so
// that a broker that does not answer never delays pings. It exits when the
// Registry is dropped (r.base ends).
func (r *Registry) watchBroker() {
	defer r.bg.Done()
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		select {
		case <-r.base.Done():
			return
		case <-t.C:
			r.checkBroker()
		}
	}
}

// checkBroker reads the broker's head once and records the result.
func (r *Registry) checkBroker() {
	ctx, cancel := context.WithTimeout(r.base, healthInterval)
	defer cancel()
	head, err := r.broker.Head(ctx)
	if err != nil {
		if r.health.connected.Swap(false) && r.base.Err() == nil {
			r.opts.Logger.Warn("notify: broker unreachable", "err", err)
		}
		return
	}
	if !r.health.connected.Swap(true) {
		r.opts.Logger.Info("notify: broker reachable again")
	}
	var lag uint64
	switch last := r.last.Load(); {
	case head.Epoch != *r.epoch.Load():
		lag = head.Seq // a new epoch, none of which is fanned out yet
	case head.Seq > last:
		lag = head.Seq - last
	}
	r.health.lag.Store(lag)
}
