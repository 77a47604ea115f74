package redisbroker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/redisbroker"
)

// BenchmarkNodes measures a cluster as users run one: three nodes on one
// Redis, 1,000 WebSocket clients spread over them, and publishers calling
// Broadcast on node A. Each client subscribes to a topic of its own (a
// user's or a record's), and each message goes to one of them in turn, so
// two messages in three reach a client of another node: the benchmark
// measures the path through Redis, not the fan-out to many connections,
// which the core's benchmarks cover. Each case publishes b.N messages:
//
//   - publishers=1 and publishers=8: each publisher broadcasts in a loop,
//     as fast as Broadcast returns;
//   - rate=1000: one publisher offered 1,000 messages/s.
//
// It reports msgs/s (b.N over the time until the last Broadcast returned),
// delivered/s (b.N over the time until every client had every message of
// its topic), pub-p50/p99 (the duration of a Broadcast call) and
// e2e-p50/p99 (from the Broadcast call to the client's read, on the
// clients of nodes B and C), and the CPU time per message of this process
// (the three nodes, the publishers and the clients: proc-cpu-µs) and of
// redis-server (redis-cpu-µs), which a machine shared with other jobs
// disturbs less than rates and latencies, and from Redis's INFO
// commandstats the messages per publishing script call (msgs/eval) and
// the entries per XREAD call of the three nodes (entries/xread). Every
// client checks that its seqs only grow, and together they must have
// received every seq from 1 to b.N exactly once: nothing lost, duplicated
// or reordered.
//
//	go test -run '^$' -bench Nodes -benchtime 20000x -count 3
func BenchmarkNodes(b *testing.B) {
	for _, c := range []struct {
		name       string
		publishers int
		rate       int // messages per second offered; 0: as fast as Broadcast returns
	}{
		{"publishers=1", 1, 0},
		{"publishers=8", 8, 0},
		{"rate=1000", 1, 1000},
	} {
		b.Run(c.name, func(b *testing.B) { benchNodes(b, c.publishers, c.rate) })
	}
}

const benchClients = 1000

func benchNodes(b *testing.B, publishers, rate int) {
	s := startRedis(b)
	var urls []string
	var regs []*notify.Registry
	for range 3 {
		reg, url := benchNode(b, s, b.N)
		regs, urls = append(regs, reg), append(urls, url)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		mu        sync.Mutex
		e2e       []time.Duration
		got       = make([]int, b.N+1) // times each seq was received
		delivered sync.WaitGroup
		errs      = make(chan error, benchClients+publishers)
	)
	for i := range benchClients {
		node := i % 3
		cl := connect(b, fmt.Sprintf("client%d@%d", i, node), fmt.Sprintf("%s?since=now&topic=t%d", urls[node], i))
		share := b.N / benchClients // messages k with k % benchClients == i
		if i < b.N%benchClients {
			share++
		}
		delivered.Add(1)
		go func() {
			finished := false
			defer func() {
				if !finished {
					delivered.Done()
				}
			}()
			var m struct {
				Seq  uint64
				Data int64
			}
			lat := make([]time.Duration, 0, share)
			seqs := make([]uint64, 0, share)
			for range share {
				_, frame, err := cl.conn.Read(ctx)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", cl.name, err)
					return
				}
				now := time.Now()
				if err := json.Unmarshal(frame, &m); err != nil || len(seqs) > 0 && m.Seq <= seqs[len(seqs)-1] {
					errs <- fmt.Errorf("%s: got %q (%v) after seq %v", cl.name, frame, err, seqs)
					return
				}
				seqs = append(seqs, m.Seq)
				lat = append(lat, now.Sub(time.Unix(0, m.Data)))
			}
			mu.Lock()
			if node != 0 {
				e2e = append(e2e, lat...)
			}
			for _, q := range seqs {
				if q >= 1 && q <= uint64(b.N) {
					got[q]++
				}
			}
			mu.Unlock()
			finished = true
			delivered.Done()
			// Go on reading, so that the client answers the server's pings
			// until the benchmark closes it.
			for {
				if _, _, err := cl.conn.Read(ctx); err != nil {
					return
				}
			}
		}()
	}

	redisPid := s.pid()
	stats := newCommandStats(b, s)
	stats.reset()
	procCPU, redisCPU := cpuTime(os.Getpid()), cpuTime(redisPid)

	var next sync.Mutex
	k := 0 // the next message's topic number
	b.ResetTimer()
	start := time.Now()
	pub := publishAll(b.N, publishers, rate, errs, func(t time.Time) error {
		next.Lock()
		topic := "t" + strconv.Itoa(k%benchClients)
		k++
		next.Unlock()
		return regs[0].Broadcast(ctx, notify.SocketMessage{Type: "bench", Topic: topic, Data: t.UnixNano()})
	})
	published := time.Since(start)
	delivered.Wait()
	all := time.Since(start)
	b.StopTimer()
	procCPU, redisCPU = cpuTime(os.Getpid())-procCPU, cpuTime(redisPid)-redisCPU
	evals, xreads, _ := stats.calls()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	for q := 1; q <= b.N; q++ {
		if got[q] != 1 {
			b.Fatalf("seq %d received %d times, want once", q, got[q])
		}
	}

	b.ReportMetric(float64(b.N)/published.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/all.Seconds(), "delivered/s")
	if procCPU > 0 {
		b.ReportMetric(float64(procCPU.Microseconds())/float64(b.N), "proc-cpu-µs")
		b.ReportMetric(float64(redisCPU.Microseconds())/float64(b.N), "redis-cpu-µs")
	}
	if evals > 0 && xreads > 0 {
		b.ReportMetric(float64(b.N)/float64(evals), "msgs/eval")
		b.ReportMetric(float64(3*b.N)/float64(xreads), "entries/xread")
	}
	var pubs []time.Duration
	for _, l := range pub {
		pubs = append(pubs, l...)
	}
	for name, l := range map[string][]time.Duration{"pub": pubs, "e2e": e2e} {
		if len(l) == 0 { // b.N == 1: the message went to node A
			continue
		}
		slices.Sort(l)
		pct := func(p float64) float64 { return float64(l[int(p*float64(len(l)-1))].Microseconds()) }
		b.ReportMetric(pct(0.50), name+"-p50-µs")
		b.ReportMetric(pct(0.99), name+"-p99-µs")
	}
}

// cpuTime returns the CPU time (user and system) process pid has used, from
// /proc; 0 where there is no /proc.
func cpuTime(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start at state:
	// utime and stime are the 14th and 15th fields, in clock ticks of
	// 1/100 s on Linux.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

// benchNode starts a Registry on a Broker of its own on s, with history and
// queues that hold a whole run, so that nothing is trimmed or dropped
// while the fan-out trails the publishers.
func benchNode(b *testing.B, s *redisServer, n int) (*notify.Registry, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	br, err := redisbroker.New(ctx, &redisbroker.Options{Addr: s.addr, HistoryLength: max(n, 10000)})
	if err != nil {
		b.Fatal(err)
	}
	reg := notify.New(&notify.Options{Broker: br, QueueLength: 2 * n, QueueBytes: 1 << 30})
	srv := httptest.NewServer(reg.Handler())
	b.Cleanup(func() {
		reg.Close()
		srv.Close()
		br.Close()
	})
	return reg, "ws" + strings.TrimPrefix(srv.URL, "http")
}

// BenchmarkBroadcastAcrossNodes measures messages from Broadcast on node A,
// through Redis, to a WebSocket client of node B: throughput (msgs/s) and
// latency (p50, p99) from the Broadcast call to the client's read, with one
// publishing goroutine and with sixteen.
//
//	go test -run '^$' -bench BroadcastAcrossNodes -benchtime 20000x
func BenchmarkBroadcastAcrossNodes(b *testing.B) {
	for _, publishers := range []int{1, 16} {
		b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
			benchAcrossNodes(b, publishers)
		})
	}
}

func benchAcrossNodes(b *testing.B, publishers int) {
	s := startRedis(b)
	a := newNode(b, s, "A", nil)
	nb := newNode(b, s, "B", nil)
	cl := connect(b, "client@B", nb.ws+"?since=now")

	latencies := make([]time.Duration, 0, b.N)
	received := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var m struct{ Data int64 }
		for range b.N {
			_, frame, err := cl.conn.Read(ctx)
			if err != nil {
				received <- err
				return
			}
			now := time.Now()
			if err := json.Unmarshal(frame, &m); err != nil {
				received <- err
				return
			}
			latencies = append(latencies, now.Sub(time.Unix(0, m.Data)))
		}
		received <- nil
	}()

	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		n := b.N / publishers
		if p < b.N%publishers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				m := notify.SocketMessage{Type: "bench", Data: time.Now().UnixNano()}
				if err := a.reg.Broadcast(context.Background(), m); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if err := <-received; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	report(b, elapsed, latencies)
}

// BenchmarkPublishToDeliver measures the broker alone, without the
// Registry and WebSocket: Publish on one Broker to the deliver function of
// another's subscription, one publishing goroutine.
//
//	go test -run '^$' -bench PublishToDeliver -benchtime 20000x
func BenchmarkPublishToDeliver(b *testing.B) {
	s := startRedis(b)
	pub := newBroker(b, s, redisbroker.Options{})
	sub := newBroker(b, s, redisbroker.Options{})
	latencies := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	_, cancel, err := sub.Subscribe(ctx, func(m notify.BrokerMessage) {
		sent, _ := strconv.ParseInt(string(m.Body), 10, 64)
		latencies = append(latencies, time.Since(time.Unix(0, sent)))
		if len(latencies) == b.N {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cancel()

	b.ResetTimer()
	start := time.Now()
	for range b.N {
		body := strconv.AppendInt(nil, time.Now().UnixNano(), 10)
		if _, err := pub.Publish(ctx, notify.BrokerMessage{Body: body}); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	elapsed := time.Since(start)
	b.StopTimer()
	report(b, elapsed, latencies)
}

// report adds msgs/s and latency percentiles to a benchmark's result.
func report(b *testing.B, elapsed time.Duration, latencies []time.Duration) {
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkPublish measures the Redis path without WebSocket or the
// Registry: publishers call Publish on Broker A while Brokers B and C, the
// other nodes, only read (a subscription each whose deliver checks that
// seqs arrive in order, gap-free). Each case publishes b.N messages of
// about 100 bytes:
//
//   - publishers=1, publishers=8: each publisher calls Publish in a loop;
//   - rate=1000: one publisher offered 1,000 messages/s.
//
// Besides msgs/s (b.N over the time until both readers had every message)
// and the Publish call's pub-p50/p99, it reports what a machine shared with
// other jobs disturbs least: the CPU time per message of this process (the
// three Brokers and the publishers: proc-cpu-µs) and of redis-server
// (redis-cpu-µs), and, from Redis's INFO commandstats, messages per
// publishing script call (msgs/eval), entries per XREAD call
// (entries/xread) and the time Redis spent in the publishing script per
// message (script-µs).
//
//	go test -run '^$' -bench '^BenchmarkPublish$' -benchtime 50000x
func BenchmarkPublish(b *testing.B) {
	for _, c := range []struct {
		name       string
		publishers int
		rate       int
	}{
		{"publishers=1", 1, 0},
		{"publishers=8", 8, 0},
		{"rate=1000", 1, 1000},
	} {
		b.Run(c.name, func(b *testing.B) { benchPublish(b, c.publishers, c.rate) })
	}
}

func benchPublish(b *testing.B, publishers, rate int) {
	s := startRedis(b)
	o := redisbroker.Options{HistoryLength: max(b.N, 10000)}
	a := newBroker(b, s, o)
	var readers sync.WaitGroup
	errs := make(chan error, 2+publishers)
	for range 2 {
		r := newBroker(b, s, o)
		readers.Add(1)
		want := uint64(1)
		done := false
		_, cancel, err := r.Subscribe(ctx, func(m notify.BrokerMessage) {
			if done {
				return
			}
			if m.Seq != want {
				errs <- fmt.Errorf("reader got seq %d, want %d", m.Seq, want)
				done = true
				readers.Done()
				return
			}
			want++
			if want > uint64(b.N) {
				done = true
				readers.Done()
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(cancel)
	}
	body := bytes.Repeat([]byte("x"), 100)
	stats := newCommandStats(b, s)

	b.ResetTimer()
	stats.reset()
	procCPU, redisCPU := cpuTime(os.Getpid()), cpuTime(s.pid())
	start := time.Now()
	pub := publishAll(b.N, publishers, rate, errs, func(time.Time) error {
		_, err := a.Publish(ctx, notify.BrokerMessage{Body: body})
		return err
	})
	readers.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	procCPU, redisCPU = cpuTime(os.Getpid())-procCPU, cpuTime(s.pid())-redisCPU
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	evals, xreads, evalTime := stats.calls()

	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(procCPU.Microseconds())/float64(b.N), "proc-cpu-µs")
	b.ReportMetric(float64(redisCPU.Microseconds())/float64(b.N), "redis-cpu-µs")
	if evals > 0 {
		b.ReportMetric(float64(evalTime.Microseconds())/float64(b.N), "script-µs")
		b.ReportMetric(float64(b.N)/float64(evals), "msgs/eval")
	}
	if xreads > 0 {
		b.ReportMetric(float64(2*b.N)/float64(xreads), "entries/xread")
	}
	var all []time.Duration
	for _, l := range pub {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "pub-p50-µs")
	b.ReportMetric(pct(0.99), "pub-p99-µs")
}

// commandStats reads Redis's per-command call counts (INFO commandstats),
// which count round trips whatever the machine's load.
type commandStats struct {
	t   testing.TB
	rdb *redis.Client
}

func newCommandStats(t testing.TB, s *redisServer) commandStats {
	rdb := redis.NewClient(&redis.Options{Addr: s.addr})
	t.Cleanup(func() { rdb.Close() })
	return commandStats{t, rdb}
}

// reset zeroes the counts (CONFIG RESETSTAT).
func (c commandStats) reset() {
	if err := c.rdb.ConfigResetStat(ctx).Err(); err != nil {
		c.t.Fatal(err)
	}
}

// calls returns how many publishing script calls (EVALSHA and EVAL) and
// XREAD calls Redis served since reset, and the time Redis spent running
// the scripts (commands called from them included).
func (c commandStats) calls() (evals, xreads int, evalTime time.Duration) {
	info, err := c.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		c.t.Fatal(err)
	}
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		var n, usec int
		for f := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "calls":
				n, _ = strconv.Atoi(v)
			case "usec":
				usec, _ = strconv.Atoi(v)
			}
		}
		switch name {
		case "cmdstat_evalsha", "cmdstat_eval":
			evals += n
			evalTime += time.Duration(usec) * time.Microsecond
		case "cmdstat_xread":
			xreads += n
		}
	}
	return evals, xreads, evalTime
}

// publishAll makes n publish calls from publishers goroutines, each at rate
// calls a second (flat out when rate is 0), and returns each goroutine's
// call latencies. publish gets the time its call began; a goroutine whose
// call fails sends the error on errs and stops.
func publishAll(n, publishers, rate int, errs chan<- error, publish func(time.Time) error) [][]time.Duration {
	pub := make([][]time.Duration, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		calls := n / publishers
		if p < n%publishers {
			calls++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, calls)
			var tick *time.Ticker
			if rate > 0 {
				tick = time.NewTicker(time.Second / time.Duration(rate))
				defer tick.Stop()
			}
			for range calls {
				if tick != nil {
					<-tick.C
				}
				t := time.Now()
				if err := publish(t); err != nil {
					errs <- err
					return
				}
				lat = append(lat, time.Since(t))
			}
			pub[p] = lat
		}()
	}
	wg.Wait()
	return pub
}
