package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// makeManyFiles writes the tree of issue 15's benchmark, scaled: n files
// in directories of 1,000, each 100 B–8 KB of random bytes.
func makeManyFiles(tb testing.TB, dir string, n int) {
	tb.Helper()
	r := rand.New(rand.NewPCG(15, uint64(n)))
	buf := make([]byte, 8192)
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("d%04d", i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				tb.Fatal(err)
			}
		}
		size := 100 + r.IntN(8192-100)
		for j := 0; j < size; j += 8 {
			v := r.Uint64()
			for k := 0; k < 8 && j+k < size; k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%06d", i)), buf[:size], 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkBackupManyFiles backs up COFFER_BENCH_FILES small files
// (default 100,000) into a new local vault, then again unchanged, with
// the heap limit the backup command sets. It reports each backup's time
// and how many collections it ran: run it with GODEBUG=gctrace=1 to see
// them one by one (docs/performance.md, "Memory").
func BenchmarkBackupManyFiles(b *testing.B) {
	n := 100_000
	if s := os.Getenv("COFFER_BENCH_FILES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	src := filepath.Join(b.TempDir(), "src")
	makeManyFiles(b, src, n)
	for b.Loop() {
		home := b.TempDir()
		e := &testEnv{home: home, vars: map[string]string{"COFFER_HOME": home}, clock: clockStart}
		for _, phase := range []string{"first", "unchanged"} {
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			stop, peak := make(chan struct{}), make(chan uint64)
			go func() {
				var top uint64
				t := time.NewTicker(10 * time.Millisecond)
				defer t.Stop()
				for {
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					top = max(top, ms.HeapAlloc)
					select {
					case <-stop:
						peak <- top
						return
					case <-t.C:
					}
				}
			}()
			start := time.Now()
			var out, errb bytes.Buffer
			e.tick()
			code := runWith(context.Background(), []string{"backup", "--json", src}, strings.NewReader(""), &out, &errb, e.getenv, e.now)
			if code != exitOK {
				b.Fatalf("backup: exit %d: %s", code, errb.String())
			}
			el := time.Since(start)
			close(stop)
			b.ReportMetric(float64(<-peak)/(1<<20), phase+"-peak-heap-MiB")
			runtime.ReadMemStats(&ms1)
			b.ReportMetric(el.Seconds(), phase+"-s")
			b.ReportMetric(float64(ms1.NumGC-ms0.NumGC), phase+"-GCs")
		}
	}
}
