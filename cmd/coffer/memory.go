package main

import (
	"runtime"
	"runtime/debug"

	"github.com/coffer-backup/coffer/internal/agent"
)

// backupBudget is the memory a backup needs beyond what the open vault
// holds: the pipeline's 76 MiB and the blob index cache's 7 MiB
// (indexCacheBudget). The pipeline: two 16 MiB data pack buffers, one
// filling, one being written or spare; a tree pack of up to 16 MiB, 24 MiB
// while its buffer doubles; the entries of the directories being walked;
// zstd state. The dedup filter, built on a backup's first dedup probe, is
// 1.875 bytes a stored blob: 1.25 MiB up to 700,000 blobs, 18.75 MB at 10
// million (10 TB of 1 MiB chunks); it takes its room from this budget.
// A backup that chunks a file (one of at least the minimum chunk size)
// gets chunkRoom more, less the filter's size (see rebudget).
const backupBudget = 76<<20 + indexCacheBudget

// chunkRoom is what a backup that chunks files adds to backupBudget: the
// chunkers' 3.25 MiB windows, those kept idle for the next file, and 16
// MiB of chunks in flight. At 83 MiB in all a 1 GB file took 194–260
// collections and a quarter more time than with this room (11–17).
const chunkRoom = 17 << 20

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
	a.memLimit.Store(int64(ms.HeapAlloc) + budget)
	debug.SetMemoryLimit(a.memLimit.Load())
}

// collectAtLimit turns off the collector's proportional trigger (GOGC), so
// that it runs only when the heap reaches the limit limitMemory set: the
// budget is the backup's to use. A re-run of a million unchanged files
// keeps 12–15 MB live, and at GOGC's default it collected whenever the
// heap doubled that, 170–190 times, a quarter of its user CPU
// (docs/performance.md, "Heap limits"). Users override it with GOGC or
// GOMEMLIMIT (without a limit, turning the trigger off would let the
// heap grow unbounded).
func (a *app) collectAtLimit() {
	if a.getenv("GOMEMLIMIT") != "" || a.getenv("GOGC") != "" || a.memLimit.Load() <= 0 {
		return
	}
	a.gcPercent.Store(int64(debug.SetGCPercent(-1)))
	a.gcOff.Store(true)
}

// restoreGC turns the collector's trigger back on if collectAtLimit
// turned it off.
func (a *app) restoreGC() {
	if a.gcOff.CompareAndSwap(true, false) {
		debug.SetGCPercent(int(a.gcPercent.Load()))
	}
}

// filterBuilt and chunkingStarted are told, by the engine and the
// agent, when a backup builds its dedup filter (its size) and when it
// first chunks a file; rebudget then sets the limit again.
func (a *app) filterBuilt(bytes int) {
	a.memFilter.Store(int64(bytes))
	a.rebudget()
}

func (a *app) chunkingStarted() {
	a.memChunking.Store(true)
	a.rebudget()
}

// rebudget sets a backup's heap limit to what limitMemory set, plus
// chunkRoom less the filter's size once the backup chunks files: a vault
// of up to 700,000 blobs gives a backup of big files nearly all of it, a
// vault of 10 TB none (its filter takes that room), so that a backup of
// small files, and any backup into a 10 TB vault, stays within 150 MiB
// (docs/performance.md, "Heap limits").
func (a *app) rebudget() {
	limit := a.memLimit.Load()
	if limit <= 0 || a.getenv("GOMEMLIMIT") != "" {
		return
	}
	if a.memChunking.Load() {
		limit += max(0, chunkRoom-a.memFilter.Load())
	}
	debug.SetMemoryLimit(limit)
}
