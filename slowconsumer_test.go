package notify_test

// Slow consumers: a connection that cannot keep up is closed with
// CloseSlowConsumer, and the others are unaffected.
// The tests under load log the figures they prove (run with -v).

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

func TestSlowConsumerIsClosedOthersUnaffected(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	slow, _ := dialReady(t, s, "")
	fast, _ := dialReady(t, s, "")

	// The slow client does not read, so once the socket buffers are full
	// the server's writes to it stall and its queue overflows (1 MiB by
	// default). The fast client reads each message before the next is
	// sent: the stalled one must not hold it up.
	payload := strings.Repeat("x", 64<<10)
	const n = 300 // about 19 MiB: far more than the loopback buffers hold
	for i := range n {
		broadcast(t, s.reg, notify.SocketMessage{Type: "big", Data: payload})
		if m := read(t, fast); m.Seq != uint64(i+1) {
			t.Fatalf("healthy client got seq %d, want %d", m.Seq, i+1)
		}
	}
	errs := s.waitGone(t, 1)
	if !errors.Is(errs[0], notify.ErrSlowConsumer) || closeCode(errs[0]) != notify.CloseSlowConsumer {
		t.Errorf("slow client ended with %v, want ErrSlowConsumer with code %d", errs[0], notify.CloseSlowConsumer)
	}
	if st := s.reg.Stats(); st.SlowConsumers != 1 || st.Connections != 1 {
		t.Errorf("Stats = %+v, want 1 slow consumer and 1 live connection", st)
	}
	ms, _ := readUntilClose(t, slow)
	for i, m := range ms {
		if m.Seq != uint64(i+1) {
			t.Fatalf("slow client got seq %d at %d: what it got must be in order", m.Seq, i)
		}
	}
}

// TestDefaultQueueAbsorbsBursts checks the default queue against bursts: 200
// broadcasts sent as fast as one goroutine can must not close clients that
// read as fast as they can.
func TestDefaultQueueAbsorbsBursts(t *testing.T) {
	t.Parallel()
	const clients, burst = 20, 200
	run := func(queueLength int) (uint64, int64) {
		s := newServer(t, &notify.Options{QueueLength: queueLength})
		var wg sync.WaitGroup
		var received atomic.Int64
		for range clients {
			c, _ := dialReady(t, s, "")
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for range burst {
					if _, _, err := c.Read(ctx); err != nil {
						return // closed as slow
					}
					received.Add(1)
				}
			}()
		}
		for i := range burst {
			broadcast(t, s.reg, notify.SocketMessage{Type: "burst", Data: i})
		}
		wg.Wait()
		return s.reg.Stats().SlowConsumers, received.Load()
	}
	if slow, got := run(0); slow != 0 || got != clients*burst {
		t.Errorf("default queue: %d clients closed as slow, %d of %d messages received", slow, got, clients*burst)
	}
}

// TestWriteTimeout: with queues large enough never to overflow, a write
// stuck longer than WriteTimeout drops the connection as a slow consumer,
// on both write paths (Handler's coalescing one and Add's plain one).
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 250 * time.Millisecond
	opts := func() *notify.Options {
		return &notify.Options{WriteTimeout: timeout, QueueBytes: 256 << 20, QueueLength: 1 << 16}
	}
	check := func(t *testing.T, reg *notify.Registry, err error) {
		t.Helper()
		if !errors.Is(err, notify.ErrSlowConsumer) || closeCode(err) != notify.CloseSlowConsumer {
			t.Errorf("err = %v, want ErrSlowConsumer with code %d", err, notify.CloseSlowConsumer)
		}
		if st := reg.Stats(); st.SlowConsumers != 1 || st.Connections != 0 {
			t.Errorf("Stats = %+v, want one slow consumer and no connection", st)
		}
	}
	t.Run("Handler", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, opts())
		dialReady(t, s, "")
		stall(t, s.reg, 96) // 6 MiB
		check(t, s.reg, s.waitGone(t, 1)[0])
	})
	t.Run("Add", func(t *testing.T) {
		t.Parallel()
		reg := notify.New(opts())
		t.Cleanup(func() { reg.Close() })
		added := make(chan error, 1)
		srv := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
			conn, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			added <- reg.Add(context.Background(), conn, &notify.ConnOptions{ResumeNow: true})
		})
		read(t, dial(t, srv)) // hello; then it never reads again
		stall(t, reg, 96)
		select {
		case err := <-added:
			check(t, reg, err)
		case <-time.After(20 * time.Second):
			t.Fatal("the stalled connection was not dropped within 20s")
		}
	})
}

// TestSlowConsumerIsolation: 50 clients read everything while one never
// reads. Big frames (64 KiB) fill the stalled client's socket buffers
// (about 4 MB on loopback), then its queue; the broadcast that would take
// the queue past QueueBytes closes it with CloseSlowConsumer: it leaves the
// Registry at once, and its socket once the close frame is written or
// given up on (the time is logged). Healthy clients receive every
// message, in order, and none is closed. The heap grows by no more than the
// stalled queue, the frames shared by everyone and what the test's own
// clients hold.
//
// Healthy here means keeping up: a message is broadcast once every healthy
// client has received all but the last few (the window), as a client on a
// good network would. Not parallel: it measures the heap of the process.
func TestSlowConsumerIsolation(t *testing.T) {
	const (
		healthy    = 50
		window     = 4
		frameSize  = 64<<10 + 64 // payload and envelope
		queueBytes = 1 << 20     // the default QueueBytes
		history    = 16
		maxFrames  = 400 // 25 MiB: far past any socket buffer
	)
	s := newServer(t, &notify.Options{Broker: notify.NewMemoryBroker(&notify.MemoryBrokerOptions{HistoryLength: history})})
	dialReady(t, s, "") // the staller: reads its hello, then nothing

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got [healthy]atomic.Uint64
	progress := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for i := range healthy {
		c, _ := dialReady(t, s, "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32)
			for {
				// Read the seq and discard the rest, so the test's own
				// clients allocate nothing per message.
				_, r, err := c.Reader(ctx)
				if err == nil {
					_, err = io.ReadFull(r, buf)
				}
				if err == nil {
					_, err = io.Copy(io.Discard, r)
				}
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("healthy client %d: %v", i, err)
					}
					return
				}
				seq, ok := parseSeq(buf)
				if want := got[i].Load() + 1; !ok || seq != want {
					t.Errorf("healthy client %d: seq %d, want %d", i, seq, want)
					return
				}
				got[i].Store(seq)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	slowest := func() uint64 {
		m := got[0].Load()
		for i := range got {
			m = min(m, got[i].Load())
		}
		return m
	}

	heapBefore := heapInuse()
	heapPeak := heapBefore
	payload := strings.Repeat("x", 64<<10)
	start := time.Now()
	var overflowAt time.Time
	var overflowSeq, sent uint64
	type ended struct {
		err error
		at  time.Time
	}
	gone := make(chan ended, 1)
	for sent < maxFrames {
		for slowest()+window < sent {
			select {
			case <-progress:
			case <-time.After(10 * time.Second):
				t.Fatalf("healthy clients stuck at %d of %d", slowest(), sent)
			}
		}
		broadcast(t, s.reg, notify.SocketMessage{Type: "big", Data: payload})
		sent++
		if overflowAt.IsZero() {
			if sent%4 == 0 {
				heapPeak = max(heapPeak, heapInuse())
			}
			if s.reg.Stats().SlowConsumers > 0 {
				overflowAt, overflowSeq = time.Now(), sent
				go func() {
					err := s.waitGone(t, 1)[0]
					gone <- ended{err, time.Now()}
				}()
			}
		} else if sent >= overflowSeq+10 {
			break // a few more after the close, to show nobody else was hurt
		}
	}
	if overflowAt.IsZero() {
		t.Fatalf("the staller was not closed after %d frames of 64 KiB", sent)
	}
	end := <-gone
	err, removed := end.err, end.at.Sub(overflowAt)
	if !waitFor(10*time.Second, func() bool { return slowest() == sent }) {
		t.Errorf("healthy clients received %d of %d messages", slowest(), sent)
	}
	if st := s.reg.Stats(); st.SlowConsumers != 1 || st.Connections != healthy {
		t.Errorf("Stats = %+v, want exactly one slow consumer and %d connections", st, healthy)
	}
	cancel()
	wg.Wait()
	heapAfter := heapInuse()

	// The bound: the stalled queue, the frames everyone shares (history and
	// the healthy clients' window), and per writing connection one
	// coalescing buffer (64 KiB and a frame), plus 4 MiB of slack.
	bound := uint64(queueBytes + (window+history)*frameSize + healthy*(64<<10+frameSize) + 4<<20)
	t.Logf("staller closed at broadcast %d (%.1f MiB sent to it: socket buffers + QueueBytes), %v after the first; "+
		"removed %v after the overflow; %d healthy clients got all %d messages. "+
		"HeapInuse before %.1f MiB, peak %.1f MiB (+%.1f MiB, bound %.1f MiB), after %.1f MiB",
		overflowSeq, float64(overflowSeq*frameSize)/(1<<20), overflowAt.Sub(start).Round(time.Millisecond),
		removed.Round(time.Millisecond), healthy, sent,
		mib(heapBefore), mib(heapPeak), mib(heapPeak-heapBefore), mib(bound), mib(heapAfter))
	if !errors.Is(err, notify.ErrSlowConsumer) || closeCode(err) != notify.CloseSlowConsumer {
		t.Errorf("staller ended with %v, want ErrSlowConsumer and code %d", err, notify.CloseSlowConsumer)
	}
	if heapPeak > heapBefore+bound {
		t.Errorf("heap grew by %.1f MiB, bound %.1f MiB", mib(heapPeak-heapBefore), mib(bound))
	}
}
