package main

import (
	"runtime"
	"runtime/debug"
)

// pipelineBudget is the memory a backup's pipeline needs beyond what the
// open vault holds (its blob index): two 16 MiB packs (one filling, one
// being written), two chunker windows of 9 MiB, chunks in flight and zstd
// state. See docs/performance.md.
const pipelineBudget = 80 << 20

// limitMemory sets a soft heap limit of what is live now plus the pipeline
// budget, so the garbage collector runs before the heap doubles (GOGC's
// default) instead of after. Users override it with GOMEMLIMIT. The
// runtime caps the GC's CPU share if the live heap outgrows the limit, so a
// low limit costs time, never failure.
func (a *app) limitMemory() {
	if a.getenv("GOMEMLIMIT") != "" {
		return
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	debug.SetMemoryLimit(int64(ms.HeapAlloc) + pipelineBudget)
}
