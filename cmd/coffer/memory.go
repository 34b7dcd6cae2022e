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

// remoteBackupBudget is backupBudget's counterpart for a backup into a
// vault server: no pack buffers (the server packs), but up to five 4 MiB
// upload batches (four in flight, one filling), the HTTPS client's
// buffers, and room for the collector: at 80 MiB it ran about 120 times a
// second and the mixed-set backup took 2.5 s instead of 2.0 s, at 140 MiB
// 1.95 s (docs/performance.md).
const remoteBackupBudget = 110 << 20

// restoreBudget covers a restore's workers: a sealed and a plain buffer
// each, about two average chunks. At 64 MiB the tree set's restore peaked
// at 83-91 MB RSS, above restic's 78-83 MB; at 52 MiB it peaks at 75 MB
// and the mixed set's restore is as fast (docs/performance.md).
const restoreBudget = 52 << 20

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
