package main

import (
	"runtime"
	"runtime/debug"

	"github.com/coffer-backup/coffer/internal/agent"
)

// backupBudget is the memory a backup needs beyond what the open vault
// holds: the pipeline's 80 MiB (two 17 MiB pack buffers, one filling, one
// being written or spare; four 3.25 MiB chunk buffers held by or kept for
// the two chunkers; 16 MiB of chunks in flight and zstd state) and the
// blob index's (indexBudget). See docs/performance.md.
const backupBudget = 80<<20 + indexBudget

// indexBudget is what the blob index of a local vault may take while a
// backup or restore runs: it is not loaded when the vault opens but
// queried, through a filter of 1.25 bytes a blob built on the first dedup
// probe (19 MiB at 10 million blobs, 10 TB of 1 MiB chunks, with room for
// half as many again) and a cache of at most 65,536 records (about 6.5
// MiB). A fixed sum: the heap no longer grows with each blob a backup
// stores, which made the collector run thousands of times against a limit
// set from the heap after opening (issue 15).
const indexBudget = 19<<20 + indexCacheBudget

// indexCacheBudget is the blob index cache's share of indexBudget, all a
// restore needs of it (it builds no filter).
const indexCacheBudget = 7 << 20

// remoteBackupBudget is backupBudget's counterpart for a backup into a
// vault server: no pack buffers (the server packs), but up to five 4 MiB
// upload batches (four in flight, one filling), the HTTPS client's
// buffers, and room for the collector: at 80 MiB it ran about 120 times a
// second and the mixed-set backup took 2.5 s instead of 2.0 s, at 140 MiB
// 1.95 s (docs/performance.md).
const remoteBackupBudget = 110 << 20

// restoreBudget covers a restore's workers: a sealed and a plain buffer
// each, about two average chunks; the blob index's cache (the filter
// is not built for reads): indexCacheBudget; and the trees the restore
// keeps between its passes (agent.RestoreTreeBudget). At 64 MiB for the
// workers the tree set's restore peaked at 83-91 MB RSS, above restic's
// 78-83 MB; at 52 MiB it peaks at 75 MB and the mixed set's restore is as
// fast (docs/performance.md).
const restoreBudget = 52<<20 + indexCacheBudget + agent.RestoreTreeBudget

// limitMemory sets a soft heap limit of what is live now (the open vault:
// keys and settings, no blob index) plus budget, so the garbage collector
// runs before the heap doubles (GOGC's default) instead of after. Users override it with GOMEMLIMIT. The
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
