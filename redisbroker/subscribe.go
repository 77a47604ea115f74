package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsnotify/notify"
)

const (
	// idleCheck is how long one XREAD blocks. When it returns empty the
	// loop re-reads meta: a FLUSHALL or a failover does not break the
	// blocked connection, and a new epoch's entries (IDs from 1 again)
	// would never satisfy an XREAD waiting for IDs above the old ones.
	idleCheck = time.Second

	readBatch    = 1024
	firstBackoff = 50 * time.Millisecond
)

// subscription is one delivery goroutine: it reads the stream with
// blocking XREADs on its own connection and calls deliver for each entry,
// in stream order.
type subscription struct {
	b       *Broker
	rdb     redis.UniversalClient // dedicated: closing it interrupts a blocking XREAD
	deliver func(notify.BrokerMessage)
	ctx     context.Context // cancelled by cancel
	stop    context.CancelFunc
	once    sync.Once
	done    chan struct{}

	// Owned by run.
	epoch  string
	seq    uint64 // last seq read in epoch (the stream's head at Subscribe)
	lastID string // ID of the last entry read, where XREAD continues
	lastT  string // its t field, which tells it from another entry with its ID; "" if unknown

	down    time.Time // when the connection was lost; zero while it works
	attempt int       // failed attempts since
}

// Subscribe implements [notify.Broker]. It reads the stream's head on a
// connection of its own and starts a goroutine that delivers every message
// added after it, in stream order, calling deliver on that goroutine only.
// ctx bounds the setup only.
//
// When the connection fails, the goroutine logs it, retries with backoff
// and continues after the last entry it delivered, so a node that lost
// Redis for a while catches up on what the others published meanwhile, as
// far as the stream still holds it. When Redis has lost the stream (a
// restart without persistence, FLUSHALL, a failover that lost writes) it
// continues in the new epoch; the Registry then sends notify.gap to
// resumable connections. If entries were trimmed before this node read
// them, the next message's seq skips ahead and the Registry sends
// resumable connections a notify.gap.
//
// cancel stops the goroutine and waits for it; deliver is not called after
// cancel returns. cancel must not be called from deliver.
func (b *Broker) Subscribe(ctx context.Context, deliver func(notify.BrokerMessage)) (notify.Position, func(), error) {
	if b.isClosed() {
		return notify.Position{}, nil, ErrClosed
	}
	s := &subscription{
		b:       b,
		rdb:     redis.NewUniversalClient(&b.subRdb),
		deliver: deliver,
		done:    make(chan struct{}),
	}
	epoch, seq, sub, top, err := s.open(ctx)
	if err != nil {
		s.rdb.Close()
		return notify.Position{}, nil, fmt.Errorf("redisbroker: subscribing: %w", err)
	}
	s.epoch, s.seq, s.lastID, s.lastT = epoch, seq, fmt.Sprintf("%d-%d", seq, sub), top
	s.ctx, s.stop = context.WithCancel(context.Background())

	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		s.stop()
		s.rdb.Close()
		return notify.Position{}, nil, ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	b.epoch.Store(&epoch)

	go s.run()
	return notify.Position{Epoch: epoch, Seq: seq}, s.cancel, nil
}

// cancel stops the delivery goroutine and waits for it. It is idempotent.
func (s *subscription) cancel() {
	s.once.Do(func() {
		s.stop()
		s.rdb.Close()
	})
	<-s.done
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
}

// open runs syncScript: it returns the stream's epoch, its head (seq and
// sub) and the newest entry's t, creating the epoch if Redis has none, or
// replacing it if Redis lost writes this loop had read.
func (s *subscription) open(ctx context.Context) (epoch string, seq uint64, sub int64, top string, err error) {
	r, err := syncScript.Run(ctx, s.rdb, s.b.keys, newEpoch(), s.epoch, s.seq, s.lastID, s.lastT).Slice()
	if err != nil {
		return "", 0, 0, "", err
	}
	if len(r) != 4 {
		return "", 0, 0, "", fmt.Errorf("unexpected reply %v", r)
	}
	epoch, _ = r[0].(string)
	n, _ := r[1].(int64)
	sub, _ = r[2].(int64)
	top, _ = r[3].(string)
	return epoch, uint64(n), sub, top, nil
}

// run is the delivery goroutine.
func (s *subscription) run() {
	defer close(s.done)
	needSync := false
	for s.ctx.Err() == nil {
		if needSync {
			if _, err := s.sync(); err != nil {
				s.failed(err)
				continue
			}
			needSync = false
		}
		// go-redis parses each entry into a map, the largest allocation
		// per message here; a generic Do("XREAD", ...) would avoid it, but
		// only XRead makes go-redis wait past Block for the reply instead
		// of failing at a ReadTimeout shorter than it.
		streams, err := s.rdb.XRead(s.ctx, &redis.XReadArgs{
			Streams: []string{s.b.keys[1], s.lastID},
			Count:   readBatch,
			Block:   idleCheck,
		}).Result()
		switch {
		case s.ctx.Err() != nil:
			return
		case errors.Is(err, redis.Nil):
			needSync = true // idle: check that the stream is still the same
			continue
		case err != nil:
			s.failed(err)
			needSync = true
			continue
		}
	batch:
		for _, st := range streams {
			for _, x := range st.Messages {
				if s.ctx.Err() != nil {
					return
				}
				if !s.handle(x) {
					needSync = true
					break batch
				}
			}
		}
	}
}

// sync re-reads meta after an error or an idle period and follows a new
// epoch from its first entry, since every epoch starts at seq 1. It
// reports whether the epoch changed.
func (s *subscription) sync() (changed bool, err error) {
	epoch, _, _, _, err := s.open(s.ctx)
	if err != nil {
		return false, err
	}
	if !s.down.IsZero() {
		s.b.log.Info("redisbroker: reconnected to Redis", "key", s.b.opts.Key, "after", time.Since(s.down).Round(time.Millisecond), "attempts", s.attempt)
		s.down, s.attempt = time.Time{}, 0
	}
	if epoch != s.epoch {
		s.b.log.Warn("redisbroker: Redis lost the stream (restart, flush or failover); following its new epoch",
			"key", s.b.opts.Key, "old", s.epoch, "new", epoch, "last_seq", s.seq)
		s.epoch, s.seq, s.lastID, s.lastT = epoch, 0, "0-0", ""
		return true, nil
	}
	return false, nil
}

// handle delivers one entry and reports whether to go on with the batch;
// false means the entry belongs to another epoch and meta must be re-read.
func (s *subscription) handle(x redis.XMessage) bool {
	e, err := decode(x)
	if err != nil {
		s.b.log.Error("redisbroker: skipping malformed stream entry", "key", s.b.opts.Key, "id", x.ID, "err", err)
		s.lastID, s.lastT = x.ID, ""
		return true
	}
	if e.msg.Epoch != s.epoch {
		// The stream was replaced since the last sync: follow meta.
		if changed, err := s.sync(); err != nil || changed {
			return false
		}
		// Meta still names our epoch, so the entry is a stray (the scripts
		// never write one): skip it rather than read it forever.
		s.b.log.Error("redisbroker: skipping entry of another epoch", "key", s.b.opts.Key, "id", x.ID, "epoch", e.msg.Epoch)
		s.lastID, s.lastT = x.ID, ""
		return true
	}
	// A seq that skips ahead (entries trimmed before this node read them)
	// is passed on as it is: the Registry sees the jump and sends
	// resumable connections a notify.gap.
	if e.sub == 0 || e.seq > s.seq {
		s.seq = e.seq
	}
	s.lastID, s.lastT = x.ID, e.t
	if e.bad != nil {
		s.b.log.Error("redisbroker: skipping malformed stream entry", "key", s.b.opts.Key, "id", x.ID, "err", e.bad)
		if e.msg.Raw {
			return true
		}
		// A regular message is passed on with its seq and an empty body,
		// which the Registry skips while counting the seq as delivered:
		// dropping it here would look like a trimmed message, and every
		// resumable client would be told to reload (notify.gap).
	}
	s.deliver(e.msg)
	if !e.msg.Raw && (s.b.epoch.Load() == nil || *s.b.epoch.Load() != s.epoch) {
		epoch := s.epoch
		s.b.epoch.Store(&epoch)
	}
	return true
}

// failed logs a failure and waits before the next attempt, or until cancel.
func (s *subscription) failed(err error) {
	if s.ctx.Err() != nil {
		return
	}
	d := backoff(s.attempt, s.b.opts.MaxBackoff)
	if s.down.IsZero() {
		s.down = time.Now()
		s.b.log.Warn("redisbroker: lost connection to Redis; reconnecting", "key", s.b.opts.Key, "err", err, "retry_in", d)
	} else {
		s.b.log.Debug("redisbroker: Redis still unreachable", "key", s.b.opts.Key, "err", err, "attempt", s.attempt, "retry_in", d)
	}
	s.attempt++
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// backoff is 50ms doubling per attempt up to max, with ±25% jitter so
// that nodes do not reconnect in lockstep.
func backoff(attempt int, max time.Duration) time.Duration {
	d := firstBackoff << min(attempt, 16)
	if d > max || d <= 0 {
		d = max
	}
	return d*3/4 + rand.N(d/2+1)
}
