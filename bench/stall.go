package main

import (
	"net"
	"slices"
	"time"
)

// stall runs the open-loop stream of the stall scenario and, where the
// process has stallers, watches them through the kernel's socket table
// (tcpstate.go): how many bytes sit in their buffers (server send queue
// plus client receive queue) and when the server closes its end. Stallers
// never read, so the harness cannot learn this from the WebSocket stream.
func stall(scn string) step {
	return func(e *env) result {
		cfg := e.cfg
		srvAddr, err := net.ResolveTCPAddr("tcp", e.srv.addr)
		if err != nil {
			return result{Scenario: scn, Err: err.Error()}
		}
		type watch struct {
			srvKey, cliKey tcpKey
			evictAt        time.Duration // -1 while the server's end is open
			times          []time.Duration
			bufs           []int64
		}
		var ws []*watch
		want := map[tcpKey]bool{}
		for _, c := range e.lg.conns {
			if !c.healthy {
				w := &watch{srvKey: makeKey(srvAddr, c.local), cliKey: makeKey(c.local, srvAddr), evictAt: -1}
				want[w.srvKey], want[w.cliKey] = true, true
				ws = append(ws, w)
			}
		}
		// The watcher polls every 100 ms until stopped, in the baseline too
		// (with nothing to watch), so both runs bear its cost; allGone is
		// closed once every staller has been evicted.
		stop, done, allGone := make(chan struct{}), make(chan struct{}), make(chan struct{})
		start := time.Now()
		go func() {
			defer close(done)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			open := len(ws)
			for {
				socks, err := readTCP(want)
				if err == nil && open > 0 {
					at := time.Since(start)
					for _, w := range ws {
						if w.evictAt >= 0 {
							continue
						}
						s, ok := socks[w.srvKey]
						if !ok || !s.established() {
							w.evictAt = at
							if open--; open == 0 {
								close(allGone)
							}
							continue
						}
						w.times = append(w.times, at)
						w.bufs = append(w.bufs, s.txQ+socks[w.cliKey].rxQ)
					}
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		r := latency(scn, false, cfg.stallRate, cfg.stallDur, cfg.stallPad)(e)
		r.Scenario = scn
		var s serverStats
		if r.Err == "" {
			s, err = e.srv.stats(false)
		}
		// Give stallers until stallWatch after the start to be evicted:
		// some peers only notice at a write timeout.
		if len(ws) > 0 {
			select {
			case <-allGone:
			case <-time.After(time.Until(start.Add(cfg.stallWatch))):
			}
		}
		close(stop)
		<-done
		if r.Err != "" {
			return r
		}
		if err != nil {
			r.Err = err.Error()
			return r
		}
		r.V["rss_mb"] = float64(s.RSS) / (1 << 20)
		r.V["heap_mb"] = float64(s.HeapInuse) / (1 << 20)
		if len(ws) == 0 {
			return r
		}
		var evicted, afterFull, bufKB []float64
		for _, w := range ws {
			peak := slices.Max(append(w.bufs, 0))
			bufKB = append(bufKB, float64(peak)/1024)
			if w.evictAt < 0 {
				continue
			}
			evicted = append(evicted, w.evictAt.Seconds())
			// The buffers were full once they held 90% of their peak.
			for i, b := range w.bufs {
				if b >= peak*9/10 {
					afterFull = append(afterFull, (w.evictAt - w.times[i]).Seconds())
					break
				}
			}
		}
		r.V["stallers"] = float64(len(ws))
		r.V["evicted"] = float64(len(evicted))
		r.V["stall_buf_kb"] = median(bufKB)
		if len(evicted) > 0 {
			r.V["evict_s"] = median(evicted)
		}
		if len(afterFull) > 0 {
			r.V["evict_after_full_s"] = median(afterFull)
		}
		return r
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
