package main

import (
	"runtime"
	"runtime/debug"
)

// backupBudget is the memory a backup's pipeline needs beyond what the
// open vault holds (its blob index): two 17 MiB pack buffers (one filling,
// one being written or spare), four 3.25 MiB chunk buffers held by or kept
// for the two chunkers, 16 MiB of chunks in flight and zstd state. See
// docs/performance.md.
const backupBudget = 80 << 20

// restoreBudget covers a restore's workers: a sealed and a plain buffer
// each, about two average chunks.
const restoreBudget = 64 << 20

// limitMemory sets a soft heap limit of what is live now plus budget, so
// the garbage collector runs before the heap doubles (GOGC's default)
// instead of after. Users override it with GOMEMLIMIT. The
// runtime caps the GC's CPU share if the live heap outgrows the limit, so a
// low limit costs time, never failure.
func (a *app) limitMemory(budget int64) {
	if a.getenv("GOMEMLIMIT") != "" {
		return
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	debug.SetMemoryLimit(int64(ms.HeapAlloc) + budget)
}
