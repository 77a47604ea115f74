package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsnotify/notify"
)

// Broker is a [notify.Broker] backed by one Redis stream, shared by every
// node that uses the same Redis and [Options.Key]. Create it with [New],
// pass it in [notify.Options.Broker], and Close it after the Registry.
//
// A Broker is safe for concurrent use by multiple goroutines. Each
// Subscribe runs one delivery goroutine with its own Redis connection;
// its cancel function, or Close, stops it and waits for it.
type Broker struct {
	opts   Options
	rdb    redis.UniversalClient // Publish and History
	subRdb redis.UniversalOptions
	keys   []string // meta, log
	log    *slog.Logger

	// epoch is the epoch of the last regular message delivered, the one the
	// Registry believes in: History returns only messages of that epoch.
	epoch atomic.Pointer[string]

	// ctx is cancelled by Close; batches of queued publishes are sent with
	// it (see publisher).
	ctx    context.Context
	cancel context.CancelFunc
	pub    publisher

	closed atomic.Bool
	mu     sync.Mutex // guards subs, and closed's change from false to true
	subs   map[*subscription]struct{}
}

// Options configures a [Broker]. A nil *Options, or a zero Options, gives
// the defaults stated on each field. [New] copies the struct.
type Options struct {
	// Addr is the Redis server's host:port. Default "localhost:6379".
	// Ignored when Redis is set.
	Addr string

	// Redis, if set, configures the connections instead of Addr: password,
	// TLS, database, Sentinel (MasterName) or Cluster (several Addrs). The
	// broker copies it and sets MaxRetries to -1, because retrying a
	// publish whose reply was lost could publish it twice.
	Redis *redis.UniversalOptions

	// Key names the stream. The broker owns two keys, "{Key}:log" (the
	// stream) and "{Key}:meta" (its epoch and counters); nothing else may
	// write them. Brokers with different keys in one Redis are independent
	// streams. Default "notify".
	Key string

	// HistoryLength is about how many messages Redis keeps for resume:
	// XADD trims with MAXLEN ~ HistoryLength, so at least this many are
	// kept, plus at most one stream node (stream-node-max-entries, 100 by
	// default). Raw messages (NotifyText) count too. Default 10,000.
	HistoryLength int

	// HistoryAge is the oldest a message may be and still be replayed to a
	// resuming client; older ones count as expired. Age is measured on
	// Redis's clock and applied when history is read: memory is bounded by
	// HistoryLength alone. Default 10 minutes.
	HistoryAge time.Duration

	// MaxBackoff bounds the wait between reconnection attempts of a
	// delivery goroutine whose connection failed: 50ms, doubling, with
	// jitter, up to MaxBackoff. Default 5s.
	MaxBackoff time.Duration

	// Logger receives connection losses and recoveries (Warn, Info),
	// epoch changes (Warn), messages trimmed before this node read them
	// and malformed stream entries, which are skipped (Error). Pass the
	// Registry's logger. Default: discard.
	//
	// If set, it also receives go-redis's own log lines (dial failures,
	// pool warnings; at Warn, with source=go-redis), which go-redis
	// otherwise prints to stderr. go-redis has one logger per process
	// (redis.SetLogger), so this is process-wide: New points it at the
	// Logger of the last Broker created with one, and it stays there
	// after Close. A program that calls redis.SetLogger itself should do
	// so after New.
	Logger *slog.Logger
}

const (
	defaultAddr          = "localhost:6379"
	defaultKey           = "notify"
	defaultHistoryLength = 10000
	defaultHistoryAge    = 10 * time.Minute
	defaultMaxBackoff    = 5 * time.Second
)

// ErrClosed is returned by calls on a Broker after Close.
var ErrClosed = errors.New("redisbroker: broker closed")

var _ notify.Broker = (*Broker)(nil)

// New connects to Redis and returns a Broker. It fails with an error naming
// the address if Redis cannot be reached before ctx ends, or if the server
// is older than Redis 5.0 (no Streams). If opts is nil, the default options
// are used. It does not create any key: the first Publish or Subscribe does.
func New(ctx context.Context, opts *Options) (*Broker, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Key == "" {
		o.Key = defaultKey
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
	} else {
		routeRedisLogs(o.Logger)
	}
	var ro redis.UniversalOptions
	if o.Redis != nil {
		ro = *o.Redis
	} else {
		addr := o.Addr
		if addr == "" {
			addr = defaultAddr
		}
		ro.Addrs = []string{addr}
	}
	ro.MaxRetries = -1
	o.Redis = nil

	b := &Broker{
		opts:   o,
		rdb:    redis.NewUniversalClient(&ro),
		subRdb: ro,
		keys:   []string{"{" + o.Key + "}:meta", "{" + o.Key + "}:log"},
		log:    o.Logger,
		subs:   map[*subscription]struct{}{},
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	// A delivery loop needs one connection, held by a blocking XREAD, and
	// closes its client to interrupt it.
	b.subRdb.PoolSize = 1
	b.subRdb.MinIdleConns = 0
	b.subRdb.MaxIdleConns = 1
	b.subRdb.PipelinePoolSize = -1

	where := strings.Join(ro.Addrs, ",")
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		b.cancel()
		b.rdb.Close()
		return nil, fmt.Errorf("redisbroker: cannot reach Redis at %s: %w", where, err)
	}
	// Servers that refuse INFO (some managed offerings) are given the
	// benefit of the doubt; an old one fails at the first XADD instead.
	if info, err := b.rdb.Info(ctx, "server").Result(); err == nil {
		if v := infoField(info, "redis_version"); v != "" && !atLeast(v, 5) {
			b.cancel()
			b.rdb.Close()
			return nil, fmt.Errorf("redisbroker: Redis at %s is version %s; Streams need 5.0 or later", where, v)
		}
	}
	return b, nil
}

// Head implements [notify.Broker] with one HMGET of the meta key: the
// stream's epoch and the last seq given, by any node. Before the first
// publish or subscribe (no meta) it returns a zero Position; it never
// creates the key.
func (b *Broker) Head(ctx context.Context) (notify.Position, error) {
	if b.isClosed() {
		return notify.Position{}, ErrClosed
	}
	r, err := b.rdb.HMGet(ctx, b.keys[0], "epoch", "seq").Result()
	if err != nil {
		return notify.Position{}, fmt.Errorf("redisbroker: reading the head: %w", err)
	}
	epoch, _ := r[0].(string)
	s, _ := r[1].(string)
	seq, _ := strconv.ParseUint(s, 10, 64)
	return notify.Position{Epoch: epoch, Seq: seq}, nil
}

// History implements [notify.Broker] with one XRANGE. It returns the
// regular messages with after < seq <= upto of the epoch the subscribers
// last delivered. Messages that were trimmed, are older than HistoryAge, or
// belong to a history Redis has since lost are not returned, and their
// absence is reported with an error wrapping [notify.ErrHistoryGap]. Other
// errors mean Redis could not be read.
func (b *Broker) History(ctx context.Context, after, upto uint64) ([]notify.BrokerMessage, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	if after >= upto {
		return nil, nil
	}
	var (
		now   *redis.TimeCmd
		epoch *redis.StringCmd
		xr    *redis.XMessageSliceCmd
	)
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		now = p.Time(ctx)
		epoch = p.HGet(ctx, b.keys[0], "epoch")
		xr = p.XRange(ctx, b.keys[1], fmt.Sprintf("%d-0", after+1), fmt.Sprintf("%d-0", upto))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisbroker: reading history: %w", err)
	}
	current := epoch.Val()
	want := current
	if p := b.epoch.Load(); p != nil {
		want = *p
	}
	if current != want {
		return nil, fmt.Errorf("%w: Redis lost the history of epoch %s (now %q)", notify.ErrHistoryGap, want, current)
	}
	cutoff := now.Val().Add(-b.opts.HistoryAge).UnixMicro()
	var out []notify.BrokerMessage
	next := after + 1 // the seq the next returned message must have
	missing := false
	for _, x := range xr.Val() {
		e, err := decode(x)
		if err != nil {
			b.log.Error("redisbroker: skipping malformed stream entry", "id", x.ID, "err", err)
			continue
		}
		if e.sub != 0 || e.msg.Epoch != want || e.at < cutoff {
			continue
		}
		if e.msg.Seq != next {
			missing = true
		}
		next = e.msg.Seq + 1
		if e.bad != nil {
			// Its seq is accounted for: no client can have it, and none
			// misses it (live, it is delivered empty; see handle).
			b.log.Error("redisbroker: skipping malformed stream entry", "key", b.opts.Key, "id", x.ID, "err", e.bad)
			continue
		}
		out = append(out, e.msg)
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
// the connections to Redis; Publish, Subscribe and History then return
// [ErrClosed]. Close is idempotent. Close the Registries that use the
// Broker first.
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
	b.cancel()
	b.pub.close()
	if err := b.rdb.Close(); err != nil {
		return fmt.Errorf("redisbroker: closing: %w", err)
	}
	return nil
}

func (b *Broker) isClosed() bool { return b.closed.Load() }

// entry is a decoded stream entry.
type entry struct {
	seq uint64 // the ID's first part: the message's seq, or the last seq before a raw message
	sub int64  // the ID's second part: 0 for a regular message, >0 for a raw one
	t   string // when it was added, in Unix microseconds (Redis's clock)
	at  int64  // t parsed
	msg notify.BrokerMessage
	bad error // why the entry cannot be sent, if it cannot
}

// decode turns a stream entry into a notify.BrokerMessage: ID "<seq>-<sub>", fields
// e (epoch), t (time), b (body) and optional p (topic), u (user), c (client).
// It fails for an entry whose ID or epoch it cannot read. An entry without
// a body is returned with bad set (and an empty Body): it keeps its place,
// and its seq, in the stream, but no client may receive it. What a body
// holds is the Registry's to check: it skips one that no client may
// receive, and counts its seq.
func decode(x redis.XMessage) (entry, error) {
	s, u, ok := strings.Cut(x.ID, "-")
	seq, err1 := strconv.ParseUint(s, 10, 64)
	sub, err2 := strconv.ParseInt(u, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return entry{}, fmt.Errorf("malformed ID %q", x.ID)
	}
	str := func(k string) string { v, _ := x.Values[k].(string); return v }
	e := entry{seq: seq, sub: sub, msg: notify.BrokerMessage{
		Epoch:    str("e"),
		Topic:    str("p"),
		User:     str("u"),
		ClientID: str("c"),
		Raw:      sub != 0,
		Body:     []byte(str("b")),
	}}
	if e.msg.Epoch == "" {
		return entry{}, errors.New("no epoch field")
	}
	if !e.msg.Raw {
		e.msg.Seq = seq
	}
	if _, ok := x.Values["b"].(string); !ok {
		e.bad = errors.New("no body field")
	}
	e.t = str("t")
	e.at, _ = strconv.ParseInt(e.t, 10, 64)
	return e, nil
}

// newEpoch returns a random epoch name, offered to the scripts in case
// the stream needs a new one.
func newEpoch() string {
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(id[:])
}

// redisLogs is where go-redis's log lines go once routeRedisLogs ran.
var (
	redisLogs     atomic.Pointer[slog.Logger]
	redisLogsOnce sync.Once
)

// routeRedisLogs points go-redis's process-wide logger at l.
func routeRedisLogs(l *slog.Logger) {
	redisLogs.Store(l)
	redisLogsOnce.Do(func() { redis.SetLogger(redisLogger{}) })
}

// redisLogger is go-redis's logger (redis.SetLogger) writing to redisLogs.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	redisLogs.Load().WarnContext(ctx, fmt.Sprintf(format, v...), "source", "go-redis")
}

// infoField returns one "name:value" line of an INFO reply.
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// atLeast reports whether version "X.Y.Z" has X >= major.
func atLeast(version string, major int) bool {
	m, _, _ := strings.Cut(version, ".")
	n, err := strconv.Atoi(m)
	return err == nil && n >= major
}
