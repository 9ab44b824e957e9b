package main

import "math/bits"

// histogram counts latencies in microseconds in log-linear buckets: exact below 128 us, then 64
// buckets per power of two (at most 1/64 relative error), up to 2^40 us. It is not safe for
// concurrent use; each subscriber owns one under its mutex.
type histogram struct {
	counts []uint32 // allocated on the first record
	n      uint64
	sumNs  int64
	maxNs  int64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // exact buckets below this value
	histHalf    = histSub / 2      // buckets per power of two above it
	histMaxUs   = 1<<40 - 1
	histMaxExp  = 40 - histSubBits
	histBuckets = histSub + histMaxExp*histHalf
)

func histIndex(us uint64) int {
	if us > histMaxUs {
		us = histMaxUs
	}
	if us < histSub {
		return int(us)
	}
	e := bits.Len64(us) - histSubBits
	return histSub + (e-1)*histHalf + int(us>>uint(e)) - histHalf
}

// histValue is the middle of bucket i in microseconds.
func histValue(i int) float64 {
	if i < histSub {
		return float64(i)
	}
	k := i - histSub
	e := uint(k/histHalf + 1)
	m := uint64(k%histHalf + histHalf)
	low, high := m<<e, (m+1)<<e-1
	return float64(low+high) / 2
}

// record adds one latency in nanoseconds (negative values, from clock skew, count as 0).
func (h *histogram) record(ns int64) {
	if ns < 0 {
		ns = 0
	}
	if h.counts == nil {
		h.counts = make([]uint32, histBuckets)
	}
	h.counts[histIndex(uint64(ns)/1000)]++
	h.n++
	h.sumNs += ns
	if ns > h.maxNs {
		h.maxNs = ns
	}
}

// merge adds o into the aggregate a (counts in uint64, so the sum cannot overflow).
type aggHistogram struct {
	counts []uint64
	n      uint64
	sumNs  int64
	maxNs  int64
}

func (a *aggHistogram) merge(h *histogram) {
	if h.n == 0 {
		return
	}
	if a.counts == nil {
		a.counts = make([]uint64, histBuckets)
	}
	for i, c := range h.counts {
		a.counts[i] += uint64(c)
	}
	a.n += h.n
	a.sumNs += h.sumNs
	if h.maxNs > a.maxNs {
		a.maxNs = h.maxNs
	}
}

// quantileMs is the q-quantile (0 < q <= 1) in milliseconds, never above the exact maximum.
func (a *aggHistogram) quantileMs(q float64) float64 {
	if a.n == 0 {
		return 0
	}
	rank := uint64(q*float64(a.n) + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for i, c := range a.counts {
		cum += c
		if cum >= rank {
			v := histValue(i) / 1000
			if m := a.maxMs(); v > m {
				v = m
			}
			return v
		}
	}
	return a.maxMs()
}

func (a *aggHistogram) maxMs() float64 { return float64(a.maxNs) / 1e6 }

func (a *aggHistogram) meanMs() float64 {
	if a.n == 0 {
		return 0
	}
	return float64(a.sumNs) / float64(a.n) / 1e6
}
