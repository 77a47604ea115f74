package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram records durations in log-linear buckets: exact below 64 ns,
// then 64 buckets per power of two (under 1.6% error). Safe for concurrent
// use; each load-generator worker owns one, so adds are uncontended.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64
}

const (
	histSub     = 6
	histBuckets = (64 - histSub + 1) << histSub
)

func bucketOf(v int64) int {
	if v < 1<<histSub {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - histSub - 1
	return (e+1)<<histSub + int(v>>e) - 1<<histSub
}

// bucketHigh is the largest value that falls in bucket b.
func bucketHigh(b int) int64 {
	if b < 1<<histSub {
		return int64(b)
	}
	e := b>>histSub - 1
	m := int64(b&(1<<histSub-1) + 1<<histSub)
	return (m+1)<<e - 1
}

func (h *histogram) record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)].Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

func (h *histogram) reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.max.Store(0)
}

// summary is what the report keeps of a histogram.
type summary struct {
	N                   uint64
	P50, P99, P999, Max time.Duration
}

func summarize(hs ...*histogram) summary {
	var counts [histBuckets]uint64
	var s summary
	for _, h := range hs {
		for i := range counts {
			counts[i] += h.counts[i].Load()
		}
		s.Max = max(s.Max, time.Duration(h.max.Load()))
	}
	for _, c := range counts {
		s.N += c
	}
	if s.N == 0 {
		return s
	}
	q := func(p float64) time.Duration {
		rank := uint64(p * float64(s.N))
		if rank >= s.N {
			rank = s.N - 1
		}
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen > rank {
				return min(time.Duration(bucketHigh(i)), s.Max)
			}
		}
		return s.Max
	}
	s.P50, s.P99, s.P999 = q(0.50), q(0.99), q(0.999)
	return s
}
