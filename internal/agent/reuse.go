package agent

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Reusing unchanged files through a vault server. A file whose metadata
// equal its parent-snapshot node is reused unread when every chunk of it
// is still stored. A local vault answers that from its index (Has); the
// HTTPS client knows only what this backup stored, so the walk collects
// such files and asks the server about their chunks in batches
// (storedProber): a handful of requests for thousands of files. The
// answer also makes the server's writer session hold those chunks until
// the snapshot is saved (client.Vault.Stored), as it holds what an upload
// found stored. A file whose chunks are not all stored is read after all.

// Batch bounds: a batch is sent once it names reuseBatchIDs chunks, or
// once its first file has waited reuseBatchWait (so that a slow walk
// still reads changed files, and keeps its server session alive), and
// when the walk ends.
const (
	reuseBatchIDs  = 16384
	reuseBatchWait = time.Second
)

// reuseBatch collects the files that may be reused.
type reuseBatch struct {
	b    *backup
	repo storedProber

	mu    sync.Mutex
	files []*reusable
	ids   int
	since time.Time // when the first file of the batch came

	wg sync.WaitGroup // batches being asked about
}

// reusable is a file whose metadata equal its parent node's.
type reusable struct {
	path    string
	node    *format.Node
	st      *unix.Stat_t
	content []vault.ID // the parent node's
	done    chan struct{}
}

// add queues file n (path, st) whose parent node had content; the future
// resolves once n is reused or read.
func (r *reuseBatch) add(ctx context.Context, path string, n *format.Node, st *unix.Stat_t, content []vault.ID) *treeFuture {
	f := &reusable{path: path, node: n, st: st, content: content, done: make(chan struct{})}
	// Wall-clock time only paces the batches; nothing is decided by it.
	now := time.Now()
	r.mu.Lock()
	if len(r.files) == 0 {
		r.since = now
	}
	r.files = append(r.files, f)
	r.ids += len(content)
	var batch []*reusable
	if r.ids >= reuseBatchIDs || now.Sub(r.since) >= reuseBatchWait {
		batch = r.take()
	}
	r.mu.Unlock()
	if batch != nil {
		r.send(ctx, batch)
	}
	return &treeFuture{done: f.done}
}

// take empties the batch being filled; r.mu must be held.
func (r *reuseBatch) take() []*reusable {
	batch := r.files
	r.files, r.ids = nil, 0
	return batch
}

// flush sends what has been collected (the walk has ended).
func (r *reuseBatch) flush(ctx context.Context) {
	r.mu.Lock()
	batch := r.take()
	r.mu.Unlock()
	if len(batch) > 0 {
		r.send(ctx, batch)
	}
}

// send asks about batch's chunks in the background, then reuses each file
// whose chunks are all stored and queues the others to be read.
func (r *reuseBatch) send(ctx context.Context, batch []*reusable) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		var ids []vault.ID
		for _, f := range batch {
			ids = append(ids, f.content...)
		}
		held, err := r.repo.Stored(ctx, vault.DataBlob, ids)
		if err != nil || len(held) != len(ids) {
			// Not knowing is no reason to fail: reading the files is
			// always right, and an unreachable server fails the uploads.
			held = nil
		}
		i := 0
		for _, f := range batch {
			all := held != nil
			for range f.content {
				all = all && held[i]
				i++
			}
			switch {
			case all:
				r.b.reuseFile(f.node, f.content)
				close(f.done)
			case ctx.Err() != nil:
				f.node.Kind = 0 // not saved: finishDir drops it
				close(f.done)
			default:
				r.b.readLater(ctx, f.path, f.node, f.st, nil, f.done)
			}
		}
	}()
}
