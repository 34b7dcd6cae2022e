package main

import (
	"runtime"
	"runtime/debug"

	"github.com/coffer-backup/coffer/internal/agent"
)

// backupBudget is the memory a backup needs beyond what the open vault
// holds: the pipeline's 76 MiB and the blob index's 7 MiB cache
// (indexCacheBudget). The pipeline: two 16 MiB data pack buffers, one
// filling, one being written or spare; a tree pack of up to 16 MiB, 24 MiB
// while its buffer doubles; the chunkers' 3.25 MiB buffers and 16 MiB of
// chunks in flight (big files) or the entries of the directories being
// walked (small files); zstd state. The dedup filter, built on a backup's
// first dedup probe, is 1.875 bytes a stored blob: 1.25 MiB up to 700,000
// blobs, 18.75 MB at 10 million (10 TB of 1 MiB chunks). It is not added:
// at 10 TB it takes its room from the pipeline's and the collector runs
// more often (docs/performance.md, "Heap limits").
const backupBudget = 76<<20 + indexCacheBudget

// indexCacheBudget is the blob index cache's share of backupBudget (at
// most 65,536 records, about 7 MiB), all a restore needs of the index (it
// builds no filter).
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
// runs before the heap doubles (GOGC's default) instead of after. Users
// override it with GOMEMLIMIT. The runtime caps the GC's CPU share if the
// live heap outgrows the limit, so a low limit costs time, never failure.
func (a *app) limitMemory(budget int64) {
	if a.getenv("GOMEMLIMIT") != "" {
		return
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	debug.SetMemoryLimit(int64(ms.HeapAlloc) + budget)
}
