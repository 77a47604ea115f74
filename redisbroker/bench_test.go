package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/redisbroker"
)

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
	_, cancel, err := sub.Subscribe(ctx, func(m notify.Message) {
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
		if _, err := pub.Publish(ctx, notify.Message{Body: body}); err != nil {
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
