package pgbroker

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/wsnotify/notify"
)

// Broker is a [notify.Broker] backed by PostgreSQL tables, shared by every
// node that uses the same database and [Options.Table]. Create it with
// [New], pass it in [notify.Options.Broker], and Close it after the
// Registry. [Broker.BroadcastTx] and [Broker.BroadcastSQL] publish inside
// the caller's transaction.
//
// A Broker is safe for concurrent use by multiple goroutines. Each
// Subscribe runs one delivery goroutine with its own connection; its
// cancel function, or Close, stops it and waits for it.
type Broker struct {
	opts    Options
	pool    *pgxpool.Pool
	ownPool bool
	connCfg *pgx.ConnConfig // for the delivery goroutines' connections
	sql     struct{ enqueue, publish, relay, trim, history, head string }
	log     *slog.Logger

	// epoch is the epoch of the last message delivered, the one the
	// Registry believes in: History returns only messages of that epoch.
	epoch atomic.Pointer[string]

	closed atomic.Bool
	mu     sync.Mutex // guards subs, and closed's change from false to true
	subs   map[*subscription]struct{}
}

// Options configures a [Broker]. A nil *Options, or a zero Options, gives
// the defaults stated on each field. [New] copies the struct.
type Options struct {
	// ConnString is the database to use, as a URL or key=value string
	// (see pgxpool.ParseConfig); PG* environment variables fill in what it
	// leaves out. Ignored when Pool is set.
	ConnString string

	// Pool, if set, is used for Publish and History instead of a pool of
	// the broker's own, and its configuration for the connection of each
	// Subscribe. The broker does not close it.
	Pool *pgxpool.Pool

	// Table names the stream: the broker owns the tables Table_log and
	// Table_meta, the functions Table_enqueue, Table_relay, Table_publish and Table_trim,
	// and the LISTEN channel Table, and creates them if they are missing
	// (in the connection's search_path). Brokers with different tables in
	// one database are independent streams. Lower-case letters, digits and
	// underscores, starting with a letter, at most 40. Default "notify".
	Table string

	// HistoryLength is how many messages are kept for resume. Raw messages
	// (NotifyText) count too. Default 10,000.
	HistoryLength int

	// HistoryAge is the oldest a message may be and still be replayed to a
	// resuming client, measured on the database's clock from when the
	// message was numbered. Default 10 minutes.
	HistoryAge time.Duration

	// MaxBackoff bounds the wait between reconnection attempts of a
	// delivery goroutine whose connection failed: 50ms, doubling, with
	// jitter, up to MaxBackoff. Default 5s.
	MaxBackoff time.Duration

	// Logger receives connection losses and recoveries (Warn, Info),
	// epoch changes (Warn) and messages trimmed before this node read them
	// (Error). Default: discard.
	Logger *slog.Logger
}

const (
	defaultTable         = "notify"
	defaultHistoryLength = 10000
	defaultHistoryAge    = 10 * time.Minute
	defaultMaxBackoff    = 5 * time.Second
	minServerVersion     = 120000
)

// ErrClosed is returned by calls on a Broker after Close.
var ErrClosed = errors.New("pgbroker: broker closed")

var validTable = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

var _ notify.Broker = (*Broker)(nil)

// New connects to PostgreSQL, creates the stream's tables and functions if
// they are missing, and returns a Broker. It fails with an error naming the
// server if the database cannot be reached before ctx ends, if the server
// is older than PostgreSQL 12, or if the tables cannot be created. If opts
// is nil, the default options are used.
func New(ctx context.Context, opts *Options) (*Broker, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Table == "" {
		o.Table = defaultTable
	}
	if !validTable.MatchString(o.Table) {
		return nil, fmt.Errorf("pgbroker: invalid Table %q: use lower-case letters, digits and _, starting with a letter, at most 40", o.Table)
	}
	if o.HistoryLength <= 0 {
		o.HistoryLength = defaultHistoryLength
	}
	if o.HistoryAge <= 0 {
		o.HistoryAge = defaultHistoryAge
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = defaultMaxBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Broker{opts: o, pool: o.Pool, log: o.Logger, subs: map[*subscription]struct{}{}}
	b.opts.Pool = nil
	if b.pool == nil {
		cfg, err := pgxpool.ParseConfig(o.ConnString)
		if err != nil {
			return nil, fmt.Errorf("pgbroker: %w", err)
		}
		if b.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
			return nil, fmt.Errorf("pgbroker: %w", err)
		}
		b.ownPool = true
	}
	b.connCfg = b.pool.Config().ConnConfig.Copy()
	p := o.Table
	b.sql.enqueue = "SELECT " + p + "_enqueue($1, $2, $3, $4, $5)"
	b.sql.publish = "SELECT " + p + "_publish($1, $2, $3, $4, $5, $6)"
	b.sql.relay = "SELECT * FROM " + p + "_relay($1, $2, $3)"
	b.sql.trim = "SELECT " + p + "_trim($1, $2)"
	b.sql.head = "SELECT epoch, seq FROM " + p + "_meta"
	b.sql.history = `SELECT m.epoch, clock_timestamp() - $3::interval, l.seq, l.epoch, l.at,
			coalesce(l.topic, ''), coalesce(l.usr, ''), coalesce(l.client, ''), coalesce(l.body, '')
		FROM ` + p + `_meta m LEFT JOIN LATERAL (
			SELECT * FROM ` + p + `_log WHERE seq > $1 AND seq <= $2 ORDER BY seq
		) l ON true`

	where := fmt.Sprintf("%s:%d/%s", b.connCfg.Host, b.connCfg.Port, b.connCfg.Database)
	fail := func(format string, args ...any) (*Broker, error) {
		if b.ownPool {
			b.pool.Close()
		}
		return nil, fmt.Errorf("pgbroker: "+format, args...)
	}
	var version int
	if err := b.pool.QueryRow(ctx, "SELECT current_setting('server_version_num')::integer").Scan(&version); err != nil {
		return fail("cannot reach PostgreSQL at %s: %w", where, err)
	}
	if version < minServerVersion {
		return fail("PostgreSQL at %s is version %d; 12 or later is needed", where, version)
	}
	if err := ensureSchema(ctx, b.pool, p); err != nil {
		return fail("PostgreSQL at %s: %w", where, err)
	}
	return b, nil
}

// Publish implements [notify.Broker]: in one statement, a transaction of
// its own, it appends m and numbers it (with whatever else committed
// before), and returns its seq, or 0 for a raw message, which the next
// relay numbers. It does not wait for delivery.
//
// An error means the message may not have been published: the database
// was unreachable, or the reply was lost (then it may have been). Publish
// never retries by itself, since a retry could publish twice.
func (b *Broker) Publish(ctx context.Context, m notify.BrokerMessage) (uint64, error) {
	if b.isClosed() {
		return 0, ErrClosed
	}
	var seq int64
	if err := b.pool.QueryRow(ctx, b.sql.publish, newEpoch(), m.Topic, m.User, m.ClientID, m.Raw, m.Body).Scan(&seq); err != nil {
		return 0, fmt.Errorf("pgbroker: publishing: %w", err)
	}
	return uint64(seq), nil
}

// BroadcastTx writes msg in the caller's transaction tx: it is delivered to
// every node's clients, with the next seq, if and only if tx commits, and
// nothing is sent if tx rolls back. msg is encoded as [notify.Registry.Broadcast]
// encodes it ([notify.NewBrokerMessage]); an invalid message returns an error
// wrapping [notify.ErrInvalidMessage] and leaves tx untouched.
//
// The seq is given after the commit, in the order the relay sees
// transactions committed; messages of transactions it sees committed
// together keep the order of their BroadcastTx calls. So call it after the
// change it announces: a transaction that changes a row another one is
// changing waits for the other's commit, and its message then comes after
// the other's. tx must not be a prepared (two-phase) transaction, which
// cannot LISTEN or NOTIFY.
func (b *Broker) BroadcastTx(ctx context.Context, tx pgx.Tx, msg notify.SocketMessage) error {
	m, err := notify.NewBrokerMessage(msg)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, b.sql.enqueue, m.Topic, m.User, m.ClientID, false, m.Body); err != nil {
		return fmt.Errorf("pgbroker: publishing in transaction: %w", err)
	}
	return nil
}

// BroadcastSQL is [Broker.BroadcastTx] for database/sql: tx must be a
// transaction on the same database, through any PostgreSQL driver (pgx's
// stdlib, lib/pq).
func (b *Broker) BroadcastSQL(ctx context.Context, tx *sql.Tx, msg notify.SocketMessage) error {
	m, err := notify.NewBrokerMessage(msg)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, b.sql.enqueue, m.Topic, m.User, m.ClientID, false, m.Body); err != nil {
		return fmt.Errorf("pgbroker: publishing in transaction: %w", err)
	}
	return nil
}

// Head implements [notify.Broker] with one read of the meta row: the
// stream's epoch and the last seq the relay gave. Committed rows not yet
// numbered are not part of it; no node has delivered them either. Before
// the first relay (no meta row) it returns a zero Position.
func (b *Broker) Head(ctx context.Context) (notify.Position, error) {
	if b.isClosed() {
		return notify.Position{}, ErrClosed
	}
	var p notify.Position
	var seq int64
	err := b.pool.QueryRow(ctx, b.sql.head).Scan(&p.Epoch, &seq)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return notify.Position{}, nil
	case err != nil:
		return notify.Position{}, fmt.Errorf("pgbroker: reading the head: %w", err)
	}
	p.Seq = uint64(seq)
	return p, nil
}

// History implements [notify.Broker] with one query. It returns the
// regular messages with after < seq <= upto of the epoch the subscribers
// last delivered. Messages that were trimmed, are older than HistoryAge,
// or belong to a stream that has since been reset are not returned, and
// their absence is reported with an error wrapping [notify.ErrHistoryGap].
// Other errors mean the database could not be read.
func (b *Broker) History(ctx context.Context, after, upto uint64) ([]notify.BrokerMessage, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	if after >= upto {
		return nil, nil
	}
	rows, err := b.pool.Query(ctx, b.sql.history, int64(after), int64(upto), b.opts.HistoryAge)
	if err != nil {
		return nil, fmt.Errorf("pgbroker: reading history: %w", err)
	}
	var (
		current string
		out     []notify.BrokerMessage
		next    = after + 1 // the seq the next returned message must have
		missing bool
	)
	want := ""
	if p := b.epoch.Load(); p != nil {
		want = *p
	}
	for rows.Next() {
		var (
			cutoff time.Time
			seq    *int64
			epoch  *string
			at     *time.Time
			m      notify.BrokerMessage
		)
		if err := rows.Scan(&current, &cutoff, &seq, &epoch, &at, &m.Topic, &m.User, &m.ClientID, &m.Body); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pgbroker: reading history: %w", err)
		}
		if seq == nil || epoch == nil || at == nil {
			continue
		}
		if want == "" {
			want = current
		}
		if *epoch != want || at.Before(cutoff) {
			continue
		}
		m.Seq, m.Epoch = uint64(*seq), *epoch
		if m.Seq != next {
			missing = true
		}
		next = m.Seq + 1
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgbroker: reading history: %w", err)
	}
	if want != "" && current != want {
		return nil, fmt.Errorf("%w: the stream was reset: epoch %s is gone (now %q)", notify.ErrHistoryGap, want, current)
	}
	if missing || next != upto+1 {
		oldest := upto + 1
		if len(out) > 0 {
			oldest = out[0].Seq
		}
		return out, fmt.Errorf("%w: asked for %d to %d, oldest retained is %d", notify.ErrHistoryGap, after+1, upto, oldest)
	}
	return out, nil
}

// Close stops every subscription, waiting for their goroutines, and closes
// the broker's own pool (not one passed in Options.Pool); Publish,
// Subscribe and History then return [ErrClosed]. Close is idempotent.
// Close the Registries that use the Broker first.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed.Swap(true) {
		b.mu.Unlock()
		return nil
	}
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.cancel()
	}
	if b.ownPool {
		b.pool.Close()
	}
	return nil
}

func (b *Broker) isClosed() bool { return b.closed.Load() }

// relayResult is what one call of the relay function returns.
type relayResult struct {
	epoch string
	pos   int64 // the last pos given
	seq   int64 // the last seq given
	more  bool  // a full batch was numbered: more rows may wait
	mine  int64 // the seq of the row asked about, 0 if none
}

// relayBatch is the most rows one relay call numbers.
const relayBatch = 10000

// relay runs the relay function on q: it numbers what has committed and
// returns the stream's head, and the seq of row mine if mine > 0.
func (b *Broker) relay(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, mine int64) (relayResult, error) {
	var (
		r  relayResult
		id *int64
		s  *int64
	)
	if mine > 0 {
		id = &mine
	}
	if err := q.QueryRow(ctx, b.sql.relay, newEpoch(), relayBatch, id).Scan(&r.epoch, &r.pos, &r.seq, &r.more, &s); err != nil {
		return relayResult{}, err
	}
	if s != nil {
		r.mine = *s
	}
	return r, nil
}

// newEpoch returns a random epoch name, offered to the relay in case the
// stream needs a new one.
func newEpoch() string {
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(id[:])
}
