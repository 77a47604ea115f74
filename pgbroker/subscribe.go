package pgbroker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/wsnotify/notify"
)

const (
	// idleCheck is the longest a delivery goroutine waits for a wake-up
	// before it looks at the stream anyway: a NOTIFY is only a hint, and a
	// reset stream (a TRUNCATE) sends none.
	idleCheck = time.Second

	// trimEvery is how often a delivery goroutine trims the log.
	trimEvery = time.Second

	readBatch    = 1000
	firstBackoff = 50 * time.Millisecond
)

// subscription is one delivery goroutine: it LISTENs on its own
// connection, and at each wake-up runs the relay and reads the numbered
// rows after the last one it delivered, calling deliver for each in order.
type subscription struct {
	b       *Broker
	deliver func(notify.BrokerMessage)
	ctx     context.Context // cancelled by cancel
	stop    context.CancelFunc
	done    chan struct{}

	// Owned by run.
	conn     *pgx.Conn
	epoch    string
	pos      int64 // the last pos read in epoch
	lastTrim time.Time
	down     time.Time // when the connection was lost; zero while it works
	attempt  int       // failed attempts since
}

// Subscribe implements [notify.Broker]. It opens a connection of its own,
// LISTENs on it, numbers what has committed and starts a goroutine that
// delivers every message numbered after that, in order, calling deliver on
// that goroutine only. ctx bounds the setup only.
//
// The goroutine wakes on a NOTIFY from a committing publisher, and at least
// every second without one; at each wake-up it runs the relay (which
// numbers what committed since) and reads what was numbered. When its
// connection fails, it logs it, reconnects with backoff and continues after
// the last row it delivered, so nothing committed meanwhile is missed, as
// far as the log still holds it. When the stream was reset (tables
// truncated or recreated) it continues in the new epoch; the Registry then
// sends notify.gap to resumable connections. If rows were trimmed before
// this node read them, the next message's seq skips ahead and the Registry
// sends resumable connections a notify.gap.
//
// cancel stops the goroutine and waits for it; deliver is not called after
// cancel returns. cancel must not be called from deliver.
func (b *Broker) Subscribe(ctx context.Context, deliver func(notify.BrokerMessage)) (notify.Position, func(), error) {
	if b.isClosed() {
		return notify.Position{}, nil, ErrClosed
	}
	s := &subscription{b: b, deliver: deliver, done: make(chan struct{}), lastTrim: time.Now()}
	r, err := s.connect(ctx)
	if err != nil {
		return notify.Position{}, nil, fmt.Errorf("pgbroker: subscribing: %w", err)
	}
	s.epoch, s.pos = r.epoch, r.pos
	s.ctx, s.stop = context.WithCancel(context.Background())

	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		s.stop()
		s.closeConn()
		return notify.Position{}, nil, ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	b.epoch.Store(&r.epoch)

	go s.run()
	return notify.Position{Epoch: r.epoch, Seq: uint64(r.seq)}, s.cancel, nil
}

// cancel stops the delivery goroutine and waits for it. It is idempotent.
func (s *subscription) cancel() {
	s.stop()
	<-s.done
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
}

// connect opens the goroutine's connection, LISTENs, then runs the relay,
// so that every commit after the returned head wakes the goroutine.
func (s *subscription) connect(ctx context.Context) (relayResult, error) {
	cfg := s.b.connCfg.Copy()
	cfg.RuntimeParams["application_name"] = "pgbroker " + s.b.opts.Table + " listener"
	// Interrupt a wait by its deadline alone: the default sends the server
	// a cancel request (a new connection) at every idle timeout.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return relayResult{}, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.b.opts.Table}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return relayResult{}, err
	}
	r, err := s.b.relay(ctx, conn, 0)
	if err != nil {
		conn.Close(context.Background())
		return relayResult{}, err
	}
	s.conn = conn
	return r, nil
}

func (s *subscription) closeConn() {
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.conn.Close(ctx)
		cancel()
		s.conn = nil
	}
}

// run is the delivery goroutine.
func (s *subscription) run() {
	defer close(s.done)
	defer s.closeConn()
	for s.ctx.Err() == nil {
		if s.conn == nil {
			if _, err := s.connect(s.ctx); err != nil {
				s.failed(err)
				continue
			}
			if !s.down.IsZero() {
				s.b.log.Info("pgbroker: reconnected to PostgreSQL", "table", s.b.opts.Table,
					"after", time.Since(s.down).Round(time.Millisecond), "attempts", s.attempt)
				s.down, s.attempt = time.Time{}, 0
			}
		} else if err := s.wait(); err != nil {
			s.failed(err)
			continue
		}
		if err := s.pass(); err != nil {
			s.failed(err)
		}
	}
}

// wait returns after a NOTIFY or idleCheck. The notifications that were
// already received are consumed first: they came before the pass that
// follows, which therefore sees their commits.
func (s *subscription) wait() error {
	ctx, cancel := context.WithTimeout(s.ctx, idleCheck)
	defer cancel()
	_, err := s.conn.WaitForNotification(ctx)
	if err != nil && !pgconn.Timeout(err) {
		return err
	}
	if err != nil && s.conn.IsClosed() {
		return errors.New("connection closed")
	}
	done, stop := context.WithCancel(context.Background())
	stop()
	for {
		if _, err := s.conn.WaitForNotification(done); err != nil {
			return nil // none left buffered
		}
	}
}

// pass numbers what has committed and delivers every row numbered after
// the last one delivered, in order.
func (s *subscription) pass() error {
	for s.ctx.Err() == nil {
		r, err := s.b.relay(s.ctx, s.conn, 0)
		if err != nil {
			return err
		}
		if r.epoch != s.epoch {
			s.b.log.Warn("pgbroker: the stream was reset (tables truncated or recreated); following its new epoch",
				"table", s.b.opts.Table, "old", s.epoch, "new", r.epoch, "last_pos", s.pos)
			s.epoch, s.pos = r.epoch, 0
		}
		n, reset, err := s.read()
		if err != nil {
			return err
		}
		if reset || r.more || n == readBatch {
			continue
		}
		break
	}
	if time.Since(s.lastTrim) >= trimEvery {
		s.lastTrim = time.Now()
		if _, err := s.conn.Exec(s.ctx, s.b.sql.trim, s.b.opts.HistoryLength, s.b.opts.HistoryAge); err != nil {
			return fmt.Errorf("trimming: %w", err)
		}
	}
	return nil
}

// read delivers up to readBatch rows after s.pos. reset reports a row of
// another epoch: the stream was reset since the relay ran.
func (s *subscription) read() (n int, reset bool, err error) {
	rows, err := s.conn.Query(s.ctx,
		"SELECT pos, seq, epoch, topic, usr, client, raw, body FROM "+s.b.opts.Table+"_log WHERE pos > $1 ORDER BY pos LIMIT $2",
		s.pos, readBatch)
	if err != nil {
		return 0, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			pos   int64
			seq   *int64
			epoch string
			m     notify.BrokerMessage
		)
		if err := rows.Scan(&pos, &seq, &epoch, &m.Topic, &m.User, &m.ClientID, &m.Raw, &m.Body); err != nil {
			return n, false, err
		}
		if epoch != s.epoch {
			return n, true, nil
		}
		if pos != s.pos+1 && n == 0 {
			s.b.log.Error("pgbroker: messages were trimmed before this node read them",
				"table", s.b.opts.Table, "from_pos", s.pos+1, "to_pos", pos-1)
		}
		if seq != nil {
			m.Seq = uint64(*seq)
		}
		m.Epoch = epoch
		s.pos = pos
		n++
		if s.ctx.Err() != nil {
			return n, false, nil
		}
		s.deliver(m)
		if !m.Raw {
			if p := s.b.epoch.Load(); p == nil || *p != epoch {
				s.b.epoch.Store(&epoch)
			}
		}
	}
	return n, false, rows.Err()
}

// failed logs a failure, drops the connection and waits before the next
// attempt, or until cancel.
func (s *subscription) failed(err error) {
	s.closeConn()
	if s.ctx.Err() != nil {
		return
	}
	d := backoff(s.attempt, s.b.opts.MaxBackoff)
	if s.down.IsZero() {
		s.down = time.Now()
		s.b.log.Warn("pgbroker: lost connection to PostgreSQL; reconnecting", "table", s.b.opts.Table, "err", err, "retry_in", d)
	} else {
		s.b.log.Debug("pgbroker: PostgreSQL still unreachable", "table", s.b.opts.Table, "err", err, "attempt", s.attempt, "retry_in", d)
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
