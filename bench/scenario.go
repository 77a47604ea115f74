package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// config holds a whole measurement's parameters; see flags in main.go.
type config struct {
	runs       int
	contenders []string
	workers    int // load-generator threads
	dialPar    int // dials in flight
	window     int // broadcasts in flight in a saturated run

	small, large  int           // connection counts
	warm, measure time.Duration // saturated fan-out

	smallRate, largeRate float64 // open-loop broadcasts per second
	smallDur, largeDur   time.Duration
	settle               time.Duration // before measuring idle memory

	stallConns, stallEvery int // 1% stalled: every stallEvery-th connection
	stallRate              float64
	stallDur               time.Duration
	stallPad               int           // bytes of padding per stall-scenario message
	stallWatch             time.Duration // how long after the stream's start evictions are awaited

	publishers int     // concurrent publishers of a burst in the calls step
	burstRate  float64 // bursts per second
	rateConns  int     // connections in the high-rate scenario
	rateWindow int     // broadcasts in flight there

	drain      time.Duration // longest wait for deliveries after a stream
	profile    []string      // contenders whose server is CPU-profiled
	profileDir string
}

// result is one scenario's figures for one contender in one run.
type result struct {
	Scenario  string             `json:"scenario"`
	Contender string             `json:"contender"`
	Run       int                `json:"run"`
	Err       string             `json:"err,omitempty"`
	V         map[string]float64 `json:"v"`
}

// env is one server process and the load generator's connections to it.
type env struct {
	cfg    *config
	name   string
	run    int
	srv    *serverProc
	lg     *loadgen
	n      int   // healthy connections
	issued int64 // broadcasts sent so far; indexes run on across steps
	base   serverStats
}

type step func(e *env) result

// runProcess starts a fresh server for contender name, connects conns
// clients and runs the steps in order. A step that fails ends the process.
func runProcess(cfg *config, name string, run, conns, stallEvery int, steps ...step) (out []result) {
	fail := func(err error) []result {
		return append(out, result{Scenario: "setup", Contender: name, Run: run, Err: err.Error()})
	}
	srv, err := startServer(name)
	if err != nil {
		return fail(err)
	}
	defer srv.stop()
	base, err := srv.stats(true)
	if err != nil {
		return fail(err)
	}
	lg, err := newLoadgen(name, srv.addr, cfg.workers)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer lg.close()
	if err := lg.connect(ctx, conns, stallEvery, cfg.dialPar); err != nil {
		return fail(err)
	}
	if err := srv.waitConns(conns, 30*time.Second); err != nil {
		return fail(err)
	}
	e := &env{cfg: cfg, name: name, run: run, srv: srv, lg: lg, n: len(lg.healthy()), base: base}
	for _, s := range steps {
		r := s(e)
		r.Contender, r.Run = name, run
		out = append(out, r)
		if r.Err != "" {
			break
		}
	}
	return out
}

// profile starts a CPU profile of the server for scenario scn when the
// contender is to be profiled; the returned function stops it.
func (e *env) profile(scn string) (stop func() error, err error) {
	if e.cfg.profileDir == "" || !slices.Contains(e.cfg.profile, e.name) {
		return func() error { return nil }, nil
	}
	file := filepath.Join(e.cfg.profileDir, fmt.Sprintf("%s-%s-run%d.pprof", e.name, scn, e.run))
	if err := e.srv.startProfile(file); err != nil {
		return nil, err
	}
	return e.srv.stopProfile, nil
}

// heapProfile writes a heap profile of the server (in use after a GC, and
// allocations since it started) when the contender is to be profiled.
func (e *env) heapProfile(scn string) error {
	if e.cfg.profileDir == "" || !slices.Contains(e.cfg.profile, e.name) {
		return nil
	}
	return e.srv.heapProfile(filepath.Join(e.cfg.profileDir, fmt.Sprintf("%s-%s-run%d.heap", e.name, scn, e.run)))
}

// received sums the notifications received by healthy connections.
func (e *env) received() (got, missing, reordered int64, closed int) {
	for _, c := range e.lg.healthy() {
		got += c.got.Load()
		missing += c.missing.Load()
		reordered += c.reordered.Load()
		if c.closed.Load() {
			closed++
		}
	}
	return
}

// waitDrain waits until every healthy connection has received every
// broadcast issued (or has been closed), at most cfg.drain.
func (e *env) waitDrain() {
	deadline := time.Now().Add(e.cfg.drain)
	for time.Now().Before(deadline) {
		done := true
		for _, c := range e.lg.healthy() {
			if c.next.Load() < e.issued && !c.closed.Load() {
				done = false
				break
			}
		}
		if done {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fanout saturates the server: a new broadcast as soon as the one window
// broadcasts back has reached every connection (window 0: cfg.window).
func fanout(scn string, window int) step {
	return func(e *env) result {
		r := result{Scenario: scn, V: map[string]float64{}}
		cfg := e.cfg
		if window <= 0 {
			window = cfg.window
		}
		tr := newTracker(e.n)
		e.lg.track.Store(tr)
		defer e.lg.track.Store(nil)
		var complete [trackRing]bool
		wait := func(k int64) error {
			timeout := time.NewTimer(10 * time.Second)
			defer timeout.Stop()
			for !complete[k%trackRing] {
				select {
				case i := <-tr.done:
					complete[i%trackRing] = true
				case <-timeout.C:
					return fmt.Errorf("broadcast %d did not reach every connection within 10s", k)
				}
			}
			return nil
		}
		stopProfile := func() error { return nil }

		first := e.issued
		_, missing0, _, _ := e.received()
		start := time.Now()
		warmEnd, end := start.Add(cfg.warm), start.Add(cfg.warm+cfg.measure)
		var (
			s0, s1     serverStats
			g0, g1     int64
			t0, t1     time.Time
			b0, b1     int64
			lg0, lg1   float64
			err        error
			measuring  bool
			k          = first
			profileErr error
		)
		for {
			now := time.Now()
			if !measuring && !now.Before(warmEnd) {
				if stopProfile, err = e.profile(scn); err != nil {
					break
				}
				if s0, err = e.srv.stats(false); err != nil {
					break
				}
				g0, _, _, _ = e.received()
				t0, b0, lg0 = time.Now(), k, selfCPU()
				measuring = true
			}
			if measuring && !now.Before(end) {
				if s1, err = e.srv.stats(false); err != nil {
					break
				}
				g1, _, _, _ = e.received()
				t1, b1, lg1 = time.Now(), k, selfCPU()
				profileErr = errors.Join(stopProfile(), e.heapProfile(scn))
				break
			}
			if k-first >= int64(window) {
				if err = wait(k - int64(window)); err != nil {
					break
				}
			}
			complete[k%trackRing] = false
			tr.counts[k%trackRing].Store(0)
			if err = e.srv.broadcast(k, time.Now().UnixNano(), 0); err != nil {
				break
			}
			k++
		}
		e.issued = k
		for j := max(first, k-int64(window)); err == nil && j < k; j++ {
			err = wait(j)
		}
		if err = errors.Join(err, profileErr); err != nil {
			r.Err = err.Error()
			return r
		}
		d := g1 - g0
		if d <= 0 {
			r.Err = "delivered nothing"
			return r
		}
		secs := t1.Sub(t0).Seconds()
		r.V["dps"] = float64(d) / secs
		r.V["bps"] = float64(b1-b0) / secs
		r.V["cpu_us"] = (s1.CPU - s0.CPU) * 1e6 / float64(d)
		r.V["allocs"] = float64(s1.Mallocs-s0.Mallocs) / float64(d)
		r.V["lg_us"] = (lg1 - lg0) * 1e6 / float64(d)
		e.check(&r, missing0)
		return r
	}
}

// check records what healthy connections had not received by the end of
// a step (late past the drain, or skipped), given the skips counted
// before it, and how many arrived out of order or were closed by the
// server (counts since the process started).
func (e *env) check(r *result, missing0 int64) {
	_, missing, reordered, closed := e.received()
	var behind int64
	for _, c := range e.lg.healthy() {
		behind += max(0, e.issued-c.next.Load())
	}
	r.V["lost"] = float64(behind + missing - missing0)
	r.V["reordered"] = float64(reordered)
	r.V["closed"] = float64(closed)
}

// latency sends broadcasts open loop, on a fixed schedule whatever the
// server does; each carries its scheduled time, so queueing anywhere
// counts. With calls it also reports how long each broadcast call took.
func latency(scn string, calls bool, rate float64, dur time.Duration, pad int) step {
	return func(e *env) result {
		r := result{Scenario: scn, V: map[string]float64{}}
		n := int64(rate * dur.Seconds())
		_, missing0, _, _ := e.received()
		for _, h := range e.lg.hists() {
			h.reset()
		}
		if err := e.srv.resetCalls(); err != nil {
			r.Err = err.Error()
			return r
		}
		stopProfile, err := e.profile(scn)
		if err != nil {
			r.Err = err.Error()
			return r
		}
		e.lg.latency.Store(true)
		period := time.Duration(float64(time.Second) / rate)
		start := time.Now().Add(10 * time.Millisecond)
		for j := range n {
			at := start.Add(time.Duration(j) * period)
			time.Sleep(time.Until(at))
			if err := e.srv.broadcast(e.issued+j, at.UnixNano(), pad); err != nil {
				r.Err = err.Error()
				return r
			}
		}
		e.issued += n
		e.waitDrain()
		e.lg.latency.Store(false)
		if err := stopProfile(); err != nil {
			r.Err = err.Error()
			return r
		}
		s := summarize(e.lg.hists()...)
		if s.N == 0 {
			r.Err = "delivered nothing"
			return r
		}
		setLatency(r.V, "", s)
		e.check(&r, missing0)
		if calls {
			calls, err := e.srv.calls()
			if err != nil {
				r.Err = err.Error()
				return r
			}
			slices.Sort(calls)
			if len(calls) > 0 {
				q := func(p float64) float64 { return us(calls[min(len(calls)-1, int(p*float64(len(calls))))]) }
				r.V["call_p50_us"], r.V["call_p99_us"], r.V["call_max_us"] = q(0.5), q(0.99), us(calls[len(calls)-1])
			}
		}
		return r
	}
}

// burstCalls has the server broadcast bursts of cfg.publishers messages,
// each from a publisher goroutine of its own, started together, at
// cfg.burstRate bursts per second for dur, and reports how long each call
// blocked its publisher, and what healthy connections did not receive.
func burstCalls(scn string, dur time.Duration) step {
	return func(e *env) result {
		r := result{Scenario: scn, V: map[string]float64{}}
		k := e.cfg.publishers
		bursts := max(1, int64(e.cfg.burstRate*dur.Seconds()))
		got0, missing0, _, _ := e.received()
		if err := e.srv.resetCalls(); err != nil {
			r.Err = err.Error()
			return r
		}
		e.lg.unordered.Store(true)
		defer e.lg.unordered.Store(false)
		period := time.Duration(float64(time.Second) / e.cfg.burstRate)
		start := time.Now().Add(10 * time.Millisecond)
		for j := range bursts {
			at := start.Add(time.Duration(j) * period)
			time.Sleep(time.Until(at))
			if err := e.srv.burst(e.issued, at.UnixNano(), k); err != nil {
				r.Err = err.Error()
				return r
			}
			e.issued += int64(k)
		}
		e.waitDrain()
		got1, _, _, _ := e.received()
		e.check(&r, missing0)
		r.V["lost"] = float64(int64(e.n)*bursts*int64(k) - (got1 - got0))
		calls, err := e.srv.calls()
		if err != nil {
			r.Err = err.Error()
			return r
		}
		slices.Sort(calls)
		if len(calls) == 0 {
			r.Err = "no calls recorded"
			return r
		}
		q := func(p float64) float64 { return us(calls[min(len(calls)-1, int(p*float64(len(calls))))]) }
		r.V["call_p50_us"], r.V["call_p99_us"], r.V["call_max_us"] = q(0.5), q(0.99), us(calls[len(calls)-1])
		r.V["calls"] = float64(len(calls))
		return r
	}
}

func setLatency(v map[string]float64, prefix string, s summary) {
	v[prefix+"p50_ms"] = ms(s.P50)
	v[prefix+"p99_ms"] = ms(s.P99)
	v[prefix+"p999_ms"] = ms(s.P999)
	v[prefix+"max_ms"] = ms(s.Max)
}

func ms(d time.Duration) float64 { return d.Seconds() * 1e3 }
func us(d time.Duration) float64 { return d.Seconds() * 1e6 }

// idle measures what the connections cost at rest, after a GC.
func idle(scn string) step {
	return func(e *env) result {
		r := result{Scenario: scn, V: map[string]float64{}}
		time.Sleep(e.cfg.settle)
		s, err := e.srv.stats(true)
		if err != nil {
			r.Err = err.Error()
			return r
		}
		if err := e.heapProfile(scn); err != nil {
			r.Err = err.Error()
			return r
		}
		n := float64(len(e.lg.conns))
		r.V["rss_kb"] = float64(int64(s.RSS)-int64(e.base.RSS)) / n / 1024
		r.V["heap_kb"] = float64(int64(s.HeapInuse)-int64(e.base.HeapInuse)) / n / 1024
		r.V["stack_kb"] = float64(int64(s.StackInuse)-int64(e.base.StackInuse)) / n / 1024
		r.V["goroutines"] = float64(s.Goroutines-e.base.Goroutines) / n
		return r
	}
}
