package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The server side: the harness re-executes its own binary with
// BENCH_SERVE=<contender>, so every server runs in a fresh process of its
// own. The process listens on 127.0.0.1, prints "ready ADDR", then obeys
// one-line commands on stdin:
//
//	b I T PAD   broadcast message I, sent at T (UnixNano), padded by PAD bytes
//	B I T K     broadcast messages I … I+K-1 at once, each from a publisher goroutine of its own
//	s           reply with a stats line (JSON)
//	g           collect garbage, return memory to the OS, then as s
//	c           reply with the durations of the broadcast calls since the last r (JSON, ns)
//	r           forget the broadcast call durations recorded so far
//	p FILE      start a CPU profile into FILE; P stops it
//	h FILE      collect garbage, then write a heap profile into FILE
//	q           exit
//
// Broadcasts are handed to one application goroutine, which calls the
// contender's broadcast in order, as an application would; commands are
// answered by the reader even while that goroutine is stuck in a call.

// benchServer is one contender's server.
type benchServer interface {
	serve(ln net.Listener) error
	broadcast(m *benchMsg)
	conns() int // connections registered and ready to receive broadcasts
}

// benchMsg is one broadcast. Every contender sends it as the same JSON
// envelope, {"seq":N,"type":"bench","data":{"i":I,"t":T,"p":"…"},"time":"…"},
// about 110 bytes without padding, encoded once per broadcast.
type benchMsg struct {
	I, T int64
	Pad  string
}

type benchData struct {
	I int64  `json:"i"`
	T int64  `json:"t"`
	P string `json:"p,omitempty"`
}

type envelope struct {
	Seq  uint64    `json:"seq"`
	Type string    `json:"type"`
	Data benchData `json:"data"`
	Time time.Time `json:"time"`
}

// encode is the one encoding per broadcast of the contenders that are not
// notify (notify encodes inside Broadcast).
func (m *benchMsg) encode() []byte {
	b, err := json.Marshal(envelope{
		Seq:  uint64(m.I) + 1,
		Type: "bench",
		Data: benchData{I: m.I, T: m.T, P: m.Pad},
		Time: time.Now().UTC(),
	})
	if err != nil {
		panic(err)
	}
	return b
}

func newServer(name string) (benchServer, error) {
	switch name {
	case "notify", "notify-sse": // one Handler serves both transports
		return newNotifyServer(), nil
	case "melody":
		return newMelodyServer(), nil
	case "centrifuge", "centrifuge-sse":
		return newCentrifugeServer()
	case "gorilla":
		return newGorillaServer(), nil
	case "naive":
		return newNaiveServer(), nil
	case "raw":
		return newRawServer(1), nil
	case "raw2":
		return newRawServer(2), nil
	case "rawq":
		return newRawqServer(2), nil
	}
	return nil, fmt.Errorf("bench: unknown contender %q", name)
}

// serverStats is the reply to s and g.
type serverStats struct {
	Conns      int     `json:"conns"`
	CPU        float64 `json:"cpu_s"` // user + system time of the whole process
	Mallocs    uint64  `json:"mallocs"`
	HeapInuse  uint64  `json:"heap_inuse"`
	StackInuse uint64  `json:"stack_inuse"`
	RSS        uint64  `json:"rss"`
	Goroutines int     `json:"goroutines"`
	Done       int64   `json:"done"`    // broadcast calls returned
	Pending    int     `json:"pending"` // broadcasts waiting for the application goroutine
}

type serverProcess struct {
	srv     benchServer
	queue   chan benchMsg
	mu      sync.Mutex
	calls   []int64
	done    int64
	profile *os.File
}

func serverMain(name string) error {
	srv, err := newServer(name)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		if err := srv.serve(ln); err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			os.Exit(2)
		}
	}()
	p := &serverProcess{srv: srv, queue: make(chan benchMsg, 1<<16)}
	go p.app()
	fmt.Printf("ready %s\n", ln.Addr())
	return p.control(bufio.NewScanner(os.Stdin), bufio.NewWriter(os.Stdout))
}

// app is the application goroutine: it broadcasts in order and times each call.
func (p *serverProcess) app() {
	for m := range p.queue {
		start := time.Now()
		p.srv.broadcast(&m)
		d := time.Since(start)
		p.mu.Lock()
		if len(p.calls) < 1<<20 {
			p.calls = append(p.calls, int64(d))
		}
		p.done++
		p.mu.Unlock()
	}
}

// burst broadcasts k messages from k publisher goroutines started
// together, and times each call.
func (p *serverProcess) burst(i, t int64, k int) {
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	for j := range int64(k) {
		ready.Add(1)
		wg.Go(func() {
			ready.Done()
			<-start
			m := benchMsg{I: i + j, T: t}
			t0 := time.Now()
			p.srv.broadcast(&m)
			d := time.Since(t0)
			p.mu.Lock()
			if len(p.calls) < 1<<20 {
				p.calls = append(p.calls, int64(d))
			}
			p.done++
			p.mu.Unlock()
		})
	}
	ready.Wait()
	close(start)
	go wg.Wait() // the reader answers commands meanwhile; calls are read later
}

func (p *serverProcess) control(in *bufio.Scanner, out *bufio.Writer) error {
	var pad string
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "b":
			if len(f) != 4 {
				return fmt.Errorf("bench server: bad command %q", in.Text())
			}
			i, _ := strconv.ParseInt(f[1], 10, 64)
			t, _ := strconv.ParseInt(f[2], 10, 64)
			n, _ := strconv.Atoi(f[3])
			if len(pad) != n {
				pad = strings.Repeat("x", n)
			}
			p.queue <- benchMsg{I: i, T: t, Pad: pad}
			continue
		case "B":
			if len(f) != 4 {
				return fmt.Errorf("bench server: bad command %q", in.Text())
			}
			i, _ := strconv.ParseInt(f[1], 10, 64)
			t, _ := strconv.ParseInt(f[2], 10, 64)
			k, _ := strconv.Atoi(f[3])
			p.burst(i, t, k)
			continue
		case "s", "g":
			if f[0] == "g" {
				runtime.GC()
				debug.FreeOSMemory()
			}
			b, _ := json.Marshal(p.stats())
			out.Write(b)
		case "c":
			p.mu.Lock()
			b, _ := json.Marshal(p.calls)
			p.mu.Unlock()
			out.Write(b)
		case "r":
			p.mu.Lock()
			p.calls = p.calls[:0]
			p.mu.Unlock()
			out.WriteString("ok")
		case "p":
			f, err := os.Create(f[1])
			if err == nil {
				err = pprof.StartCPUProfile(f)
			}
			if err != nil {
				return err
			}
			p.profile = f
			out.WriteString("ok")
		case "h":
			runtime.GC()
			f, err := os.Create(f[1])
			if err == nil {
				err = errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
			}
			if err != nil {
				return err
			}
			out.WriteString("ok")
		case "P":
			if p.profile != nil {
				pprof.StopCPUProfile()
				p.profile.Close()
				p.profile = nil
			}
			out.WriteString("ok")
		case "q":
			return nil
		default:
			return fmt.Errorf("bench server: unknown command %q", in.Text())
		}
		out.WriteByte('\n')
		if err := out.Flush(); err != nil {
			return err
		}
	}
	return in.Err()
}

func (p *serverProcess) stats() serverStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	s := serverStats{
		Conns:      p.srv.conns(),
		CPU:        tv(ru.Utime) + tv(ru.Stime),
		Mallocs:    ms.Mallocs,
		HeapInuse:  ms.HeapInuse,
		StackInuse: ms.StackInuse,
		RSS:        rss(),
		Goroutines: runtime.NumGoroutine(),
		Pending:    len(p.queue),
	}
	p.mu.Lock()
	s.Done = p.done
	p.mu.Unlock()
	return s
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// rss reads the resident set size from /proc/self/statm.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}
