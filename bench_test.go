package notify_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsnotify/notify"
)

// BenchmarkBroadcast measures one Broadcast to n connections, through to
// the clients: each iteration waits until every client has read the
// message, so the figure includes the fan-out and the writes, not just the
// call. The clients are plain TCP sockets that count frames without
// allocating, so allocs/delivery is the server's alone (the JSON encoding
// of each broadcast included).
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			// The clients do not answer pings; a long run must not see one.
			s := newServer(b, &notify.Options{PingInterval: time.Hour})
			var got atomic.Int64
			var want atomic.Int64
			reached := make(chan struct{}, 1)
			var readers sync.WaitGroup
			conns := make([]net.Conn, n)
			for i := range conns {
				conns[i] = dialCounting(b, s, &readers, func(k int) {
					if got.Add(int64(k)) >= want.Load() {
						select {
						case reached <- struct{}{}:
						default:
						}
					}
				})
			}
			b.Cleanup(func() {
				for _, c := range conns {
					c.Close()
				}
				readers.Wait()
			})
			// Every client has its hello: the connections are registered.
			for want.Store(int64(n)); got.Load() < int64(n); {
				<-reached
			}
			ctx := context.Background()
			msg := notify.SocketMessage{Type: "customer.updated", Data: map[string]any{"id": 42, "name": "Ada Lovelace", "email": "ada@example.com"}}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				target := int64(n) * int64(i+2)
				want.Store(target)
				if err := s.reg.Broadcast(ctx, msg); err != nil {
					b.Fatal(err)
				}
				for got.Load() < target {
					<-reached
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*n), "allocs/delivery")
		})
	}
}

// dialCounting connects a raw WebSocket client that resumes from now (so
// its first frame is the hello) and reports every batch of complete text
// frames it reads to counted, from a goroutine of its own that ends when
// the connection does.
func dialCounting(b *testing.B, s *server, readers *sync.WaitGroup, counted func(int)) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(s.srv.URL, "http://"))
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(c, "GET /?since=now HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("upgrade: %v %v", resp, err)
	}
	readers.Add(1)
	go func() {
		defer readers.Done()
		buf := make([]byte, 64<<10)
		have := 0
		for {
			n, err := br.Read(buf[have:])
			if err != nil {
				if err != io.EOF && !strings.Contains(err.Error(), "closed") {
					b.Error(err)
				}
				return
			}
			have += n
			frames, used := 0, 0
			for {
				size, ok := frameSize(buf[used:have])
				if !ok {
					break
				}
				if buf[used]&0x0f == 1 {
					frames++
				}
				used += size
			}
			have = copy(buf, buf[used:have])
			if frames > 0 {
				counted(frames)
			}
		}
	}()
	return c
}

// frameSize returns the length of the unmasked frame at the start of p, if
// p holds all of it.
func frameSize(p []byte) (int, bool) {
	if len(p) < 2 {
		return 0, false
	}
	n, h := int(p[1]&0x7f), 2
	switch n {
	case 126:
		if len(p) < 4 {
			return 0, false
		}
		n, h = int(p[2])<<8|int(p[3]), 4
	case 127:
		if len(p) < 10 {
			return 0, false
		}
		n = 0
		for _, x := range p[2:10] {
			n = n<<8 | int(x)
		}
		h = 10
	}
	if len(p) < h+n {
		return 0, false
	}
	return h + n, true
}
