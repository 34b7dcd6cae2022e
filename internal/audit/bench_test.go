package audit_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/audit"
)

// BenchmarkAppend measures Append on a real catalog, one goroutine and
// many (which group commit batches into shared transactions).
func BenchmarkAppend(b *testing.B) {
	for _, par := range []int{1, 16} {
		b.Run(map[int]string{1: "serial", 16: "parallel16"}[par], func(b *testing.B) {
			e := newEnv(b)
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/par + 1
			for g := range par {
				wg.Go(func() {
					for i := range per {
						if _, err := e.log.Append(b.Context(), entry(g*per+i)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// BenchmarkVerify measures Verify and VerifyExport of a log of 20,000
// entries; b.N is the number of verifications.
func BenchmarkVerify(b *testing.B) {
	e := newEnv(b)
	const n = 20000
	recs := make([]audit.Entry, n)
	for i := range recs {
		recs[i] = entry(i)
	}
	for i := range n {
		if i%500 == 0 {
			e.clock.Add(time.Minute)
		}
		if _, err := e.log.Append(b.Context(), recs[i]); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := e.log.Checkpoint(b.Context()); err != nil {
		b.Fatal(err)
	}
	var archive bytes.Buffer
	if err := audit.Export(b.Context(), e.cat, e.vkey, &archive); err != nil {
		b.Fatal(err)
	}
	b.Run("store", func(b *testing.B) {
		for b.Loop() {
			if r, err := audit.Verify(b.Context(), e.cat, e.vkey, audit.VerifyOptions{}); err != nil || !r.OK() {
				b.Fatal(err, r.Err())
			}
		}
	})
	b.Run("export", func(b *testing.B) {
		for b.Loop() {
			if r, err := audit.VerifyExport(bytes.NewReader(archive.Bytes()), e.vkey, audit.VerifyOptions{}); err != nil || !r.OK() {
				b.Fatal(err, r.Err())
			}
		}
	})
}
