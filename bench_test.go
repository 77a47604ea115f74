package notify_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

// BenchmarkBroadcast measures one Broadcast to n connections, through to
// the clients: each iteration waits until every client has read the
// message, so the figure includes the writes, not just the enqueue.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			s := newServer(b, nil)
			read := make(chan struct{}, n)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range n {
				c, _ := dialReady(b, s, "")
				go func(c *websocket.Conn) {
					for {
						if _, _, err := c.Read(ctx); err != nil {
							return
						}
						read <- struct{}{}
					}
				}(c)
			}
			msg := notify.SocketMessage{Type: "customer.updated", Data: map[string]any{"id": 42, "name": "Ada Lovelace", "email": "ada@example.com"}}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := s.reg.Broadcast(ctx, msg); err != nil {
					b.Fatal(err)
				}
				for range n {
					<-read
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}
