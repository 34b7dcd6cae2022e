package agent

import (
	"bytes"
	"context"
	"errors"
	"sync"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Loading the parent snapshot's trees ahead of the walk. The walk visits
// directories one after the other and needs each one's parent tree
// before it can compare its files; through a vault server that was one
// round trip per directory, in sequence, which dominated an unchanged
// re-run. With a BatchLoader (the HTTPS client) the trees are loaded
// breadth first instead, many per request and a few requests at once, as
// soon as the tree naming them has arrived, so the walk mostly finds its
// parent trees loaded. A local vault reads a tree from its own pack
// cache faster than a goroutine hand-off; it does not use this.
//
// Nothing is trusted more than before: each tree comes through the same
// client as LoadTree (checked against its ID with the domain's key), and
// a tree that could not be loaded ahead is loaded again with LoadTree
// when the walk asks for it, so its outcome is exactly LoadTree's.

// Prefetch bounds: trees a request (the server's batched read takes up
// to 1024 references), requests in flight, and trees loaded or loading
// that the walk has not taken yet, in number and raw bytes. Past the
// last two, subtrees are not loaded ahead; the walk loads them itself
// when it gets there, and loads their subtrees ahead. (The tree that
// crosses the byte bound is kept.)
const (
	prefetchBatch   = 256
	prefetchFlights = 4
	prefetchHeld    = 2048
	prefetchBytes   = 16 << 20
)

// errPrefetchFull ends a batch whose trees fill the byte bound.
var errPrefetchFull = errors.New("trees loaded ahead fill their budget")

type treeLoader interface {
	LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error)
}

type treePrefetch struct {
	ctx  context.Context // the backup's: its end stops the loads
	bl   BatchLoader
	repo treeLoader
	sem  chan struct{} // requests in flight

	// manual: only the trees want names are loaded ahead, never the
	// subtrees of a tree as it arrives (diff, which enters only the
	// directories that differ).
	manual bool

	mu    sync.Mutex
	slots map[vault.ID]*treeSlot // loaded or loading, not taken
	bytes int                    // raw bytes of the loaded slots
	wg    sync.WaitGroup
}

type treeSlot struct {
	done chan struct{}
	t    *format.Tree
	size int
	err  error
}

func newTreePrefetch(ctx context.Context, bl BatchLoader, repo treeLoader) *treePrefetch {
	return &treePrefetch{ctx: ctx, bl: bl, repo: repo, sem: make(chan struct{}, prefetchFlights), slots: map[vault.ID]*treeSlot{}}
}

// ahead starts loading the subtrees that trees name, as far as the
// bounds allow.
func (p *treePrefetch) ahead(trees ...*format.Tree) {
	p.dispatch(p.reserve(trees...))
}

// reserve makes a slot for each subtree trees name that has none, as far
// as the bounds allow, and returns the new ones to load. A walk that gets
// to a reserved tree waits for it rather than load it alone.
func (p *treePrefetch) reserve(trees ...*format.Tree) ([]vault.ID, []*treeSlot) {
	var ids []vault.ID
	var slots []*treeSlot
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range trees {
		if t == nil {
			continue
		}
		for i := range t.Nodes {
			n := &t.Nodes[i]
			if n.Kind != format.KindDir || n.Subtree.IsZero() {
				continue
			}
			if _, ok := p.slots[n.Subtree]; ok {
				continue
			}
			if len(p.slots) >= prefetchHeld || p.bytes >= prefetchBytes {
				return ids, slots
			}
			s := &treeSlot{done: make(chan struct{})}
			p.slots[n.Subtree] = s
			ids = append(ids, n.Subtree)
			slots = append(slots, s)
		}
	}
	return ids, slots
}

// dispatch loads reserved slots, prefetchBatch trees a request.
func (p *treePrefetch) dispatch(ids []vault.ID, slots []*treeSlot) {
	for len(ids) > 0 {
		k := min(len(ids), prefetchBatch)
		p.send(ids[:k], slots[:k])
		ids, slots = ids[k:], slots[k:]
	}
}

// send loads trees ids into slots in the background. The subtrees of
// each tree are reserved as it arrives and loaded once the batch ends.
func (p *treePrefetch) send(ids []vault.ID, slots []*treeSlot) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		var next []vault.ID
		var nextSlots []*treeSlot
		loaded := 0
		var err error
		select {
		case p.sem <- struct{}{}:
			p.mu.Lock()
			full := p.bytes >= prefetchBytes
			p.mu.Unlock()
			if full {
				<-p.sem
				err = errPrefetchFull
				break
			}
			err = p.bl.LoadBlobs(p.ctx, vault.TreeBlob, ids, func(i int, data []byte) error {
				// data is the client's buffer: the tree's names must not
				// alias it.
				t, err := format.DecodeTree(bytes.Clone(data))
				if err != nil {
					return err
				}
				p.mu.Lock()
				if p.bytes >= prefetchBytes {
					// The bound holds for what is kept, not only for what
					// is asked: this tree and the rest of the batch are
					// left to the walk, one at a time as without
					// prefetching.
					p.mu.Unlock()
					return errPrefetchFull
				}
				slots[i].t, slots[i].size = t, len(data)
				p.bytes += len(data)
				p.mu.Unlock()
				if !p.manual {
					n, ns := p.reserve(t)
					next, nextSlots = append(next, n...), append(nextSlots, ns...)
				}
				close(slots[i].done)
				loaded = i + 1
				return nil
			})
			<-p.sem
		case <-p.ctx.Done():
			err = p.ctx.Err()
		}
		// The trees after a failed one are not loaded: the walk asks
		// LoadTree for them, which answers as it would have.
		if err == nil {
			err = vault.ErrNotFound // an answer that ended early
		}
		for _, s := range slots[loaded:] {
			s.err = err
			close(s.done)
		}
		if p.ctx.Err() != nil {
			for _, s := range nextSlots {
				s.err = p.ctx.Err()
				close(s.done)
			}
			return
		}
		p.dispatch(next, nextSlots)
	}()
}

// load returns tree id: the one loaded ahead if there is one, else
// through LoadTree; either way its subtrees are loaded ahead.
func (p *treePrefetch) load(ctx context.Context, id vault.ID) (*format.Tree, error) {
	p.mu.Lock()
	s := p.slots[id]
	if s != nil {
		delete(p.slots, id)
	}
	p.mu.Unlock()
	if s != nil {
		select {
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		p.mu.Lock()
		p.bytes -= s.size
		p.mu.Unlock()
		if s.err == nil {
			return s.t, nil
		}
	}
	t, err := p.repo.LoadTree(ctx, id)
	if err == nil && !p.manual {
		p.ahead(t)
	}
	return t, err
}

// want starts loading trees ids (those without a slot), as far as the
// bounds allow.
func (p *treePrefetch) want(ids ...vault.ID) {
	var todo []vault.ID
	var slots []*treeSlot
	p.mu.Lock()
	for _, id := range ids {
		if _, ok := p.slots[id]; ok || id.IsZero() {
			continue
		}
		if len(p.slots) >= prefetchHeld || p.bytes >= prefetchBytes {
			break
		}
		s := &treeSlot{done: make(chan struct{})}
		p.slots[id] = s
		todo, slots = append(todo, id), append(slots, s)
	}
	p.mu.Unlock()
	p.dispatch(todo, slots)
}

// wait returns once no load is running (the backup's context has ended
// or every load has).
func (p *treePrefetch) wait() { p.wg.Wait() }

// PrefetchTrees returns a TreeLoader for a walk that enters every
// directory (find, stats, dump, ls without --no-recursive): through a
// BatchLoader (a vault server) it loads the trees ahead, breadth first
// and many per request, within the bounds above; otherwise it is repo.
// stop ends the loads ahead and waits for them; call it when the walk
// is done. What the walk gets is what repo.LoadTree would give it (see
// above), so a walk's result does not depend on it.
func PrefetchTrees(ctx context.Context, repo TreeLoader) (loader TreeLoader, stop func()) {
	bl, ok := repo.(BatchLoader)
	if !ok {
		return repo, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	p := newTreePrefetch(ctx, bl, repo)
	return prefetchLoader{p}, func() {
		cancel()
		p.wait()
	}
}

type prefetchLoader struct{ p *treePrefetch }

func (l prefetchLoader) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	return l.p.load(ctx, id)
}

// want loads trees ids ahead (a manual prefetch: diff).
func (l prefetchLoader) want(ids ...vault.ID) { l.p.want(ids...) }
