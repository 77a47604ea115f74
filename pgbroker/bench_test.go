package pgbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/pgbroker/internal/pgtest"
)

// BenchmarkCommitToClient measures transactions that each commit one
// notification (BroadcastTx) on node A, to a WebSocket client of node B:
// committed notifications per second, and the latency from the return of
// Commit to the client's read (p50, p99), with 1, 8 and 32 concurrent
// writers, each on its own connection.
//
//	go test -run '^$' -bench CommitToClient -benchtime 5000x
func BenchmarkCommitToClient(b *testing.B) {
	for _, writers := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := pgtest.Start(b)
			a := newNode(b, s, "A", nil)
			nb := newNode(b, s, "B", nil)
			cl := connect(b, "client@B", nb.ws+"?since=now")
			pool, err := pgxpool.New(ctx, s.ConnString()+"&pool_max_conns="+fmt.Sprint(writers))
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			run(b, writers, cl, func(i int64) error {
				return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					return a.b.BroadcastTx(ctx, tx, notify.SocketMessage{Type: "bench", Data: i})
				})
			})
		})
	}
}

// BenchmarkBroadcastAcrossNodes is the same with Registry.Broadcast on
// node A (each call its own transaction, then the wait for its seq), and,
// for comparison, with the in-memory broker (one node: Broadcast to a
// client of the same Registry).
//
//	go test -run '^$' -bench BroadcastAcrossNodes -benchtime 5000x
func BenchmarkBroadcastAcrossNodes(b *testing.B) {
	for _, broker := range []string{"postgres", "memory"} {
		for _, writers := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("broker=%s/writers=%d", broker, writers), func(b *testing.B) {
				var reg *notify.Registry
				var cl *client
				if broker == "memory" {
					reg = notify.New(&notify.Options{QueueLength: 1 << 14, QueueBytes: 64 << 20})
					srv := httptest.NewServer(reg.Handler())
					b.Cleanup(func() { reg.Close(); srv.Close() })
					cl = connect(b, "client", "ws"+strings.TrimPrefix(srv.URL, "http")+"?since=now")
				} else {
					s := pgtest.Start(b)
					reg = newNode(b, s, "A", nil).reg
					cl = connect(b, "client@B", newNode(b, s, "B", nil).ws+"?since=now")
				}
				run(b, writers, cl, func(i int64) error {
					return reg.Broadcast(ctx, notify.SocketMessage{Type: "bench", Data: i})
				})
			})
		}
	}
}

// run publishes b.N messages from writers goroutines with publish(i),
// where i indexes the message, and reads them on cl; it reports msgs/s
// (until the last is read) and the latency from publish's return to the
// read.
func run(b *testing.B, writers int, cl *client, publish func(i int64) error) {
	published := make([]time.Time, b.N)
	received := make([]time.Time, b.N)
	read := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		var m struct{ Data int64 }
		for range b.N {
			_, frame, err := cl.conn.Read(ctx)
			if err == nil {
				err = json.Unmarshal(frame, &m)
			}
			if err != nil {
				read <- err
				return
			}
			received[m.Data] = time.Now()
		}
		read <- nil
	}()

	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
				if err := publish(i); err != nil {
					errs <- err
					return
				}
				published[i] = time.Now()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if err := <-read; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	latencies := make([]time.Duration, b.N)
	for i := range latencies {
		latencies[i] = max(0, received[i].Sub(published[i])) // the client may read before Commit returns
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
