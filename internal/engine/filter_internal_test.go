package engine

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The filter never answers "absent" for a key it holds, and answers
// "present" for under 1% of keys it does not hold at its capacity.
func TestBlobFilter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n = 200_000
	f := newBlobFilter(n)
	keys := make([]uint64, n)
	for i := range keys {
		keys[i] = r.Uint64()
		f.add(keys[i])
	}
	for _, k := range keys {
		if !f.mayHave(k) {
			t.Fatalf("key %x added but reported absent", k)
		}
	}
	// Filled to its capacity (filterMinKeys, at least n).
	for f.n < f.cap {
		f.add(r.Uint64())
	}
	fp := 0
	const probes = 1_000_000
	for range probes {
		if f.mayHave(r.Uint64()) {
			fp++
		}
	}
	if rate := float64(fp) / probes; rate > 0.01 {
		t.Errorf("false-positive rate %.4f at capacity, want below 0.01", rate)
	}
	if f.full() {
		t.Errorf("full at its capacity")
	}
	f.add(1)
	if !f.full() {
		t.Errorf("not full past its capacity")
	}
}

// BenchmarkFilter compares the two structures docs/performance.md
// weighs for answering "not stored": the Bloom filter the engine uses
// (10 bits a key) and a sorted array of 8-byte keys, at 10 million blobs
// (10 TB of 1 MiB chunks). It reports bytes per key and the false-positive
// rate, and times a probe of an absent key.
func BenchmarkFilter(b *testing.B) {
	const n = 10_000_000
	r := rand.New(rand.NewPCG(3, 4))
	keys := make([]uint64, n)
	for i := range keys {
		keys[i] = r.Uint64()
	}
	b.Run("bloom", func(b *testing.B) {
		f := newBlobFilter(n)
		for _, k := range keys {
			f.add(k)
		}
		fp := 0
		for range 1_000_000 {
			if f.mayHave(r.Uint64()) {
				fp++
			}
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			f.mayHave(uint64(i) * 0x9E3779B97F4A7C15)
		}
		b.ReportMetric(float64(f.Bytes())/n, "B/key")
		b.ReportMetric(float64(fp)/1e6, "fp-rate")
	})
	b.Run("sorted", func(b *testing.B) {
		s := slices.Clone(keys)
		slices.Sort(s)
		hits := 0
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, ok := slices.BinarySearch(s, uint64(i)*0x9E3779B97F4A7C15); ok {
				hits++
			}
		}
		b.StopTimer()
		if hits > 1 {
			b.Logf("%d random probes hit", hits)
		}
		b.ReportMetric(8, "B/key")
		b.ReportMetric(float64(n)/(1<<64), "fp-rate")
	})
}
