package agent

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// flatTrees serves a root naming n subtrees, each of files entries, in
// batches, counting what it serves.
type flatTrees struct {
	mu     sync.Mutex
	trees  map[vault.ID][]byte
	served int
}

func newFlatTrees(t *testing.T, n, files int) (*flatTrees, *format.Tree) {
	f := &flatTrees{trees: map[vault.ID][]byte{}}
	root := &format.Tree{}
	for i := range n {
		sub := &format.Tree{}
		for j := range files {
			sub.Nodes = append(sub.Nodes, format.Node{Name: []byte(fmt.Sprintf("file-with-a-longish-name-%06d", j)), Kind: format.KindFile, Perm: 0o600})
		}
		enc, err := format.EncodeTree(nil, sub)
		if err != nil {
			t.Fatal(err)
		}
		var id vault.ID
		id[0], id[1], id[2] = 5, byte(i>>8), byte(i)
		f.trees[id] = enc
		root.Nodes = append(root.Nodes, format.Node{Name: []byte(fmt.Sprintf("d%05d", i)), Kind: format.KindDir, Perm: 0o700, Subtree: id})
	}
	return f, root
}

func (f *flatTrees) LoadTree(_ context.Context, id vault.ID) (*format.Tree, error) {
	f.mu.Lock()
	enc, ok := f.trees[id]
	f.served++
	f.mu.Unlock()
	if !ok {
		return nil, vault.ErrNotFound
	}
	return format.DecodeTree(enc)
}

func (f *flatTrees) LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	for i, id := range ids {
		f.mu.Lock()
		enc, ok := f.trees[id]
		f.served++
		f.mu.Unlock()
		if !ok {
			return vault.ErrNotFound
		}
		if err := fn(i, enc); err != nil {
			return err
		}
	}
	return nil
}

// TestTreePrefetchBounds: with nothing taking the trees it loads (a walk
// that stalls, or a parent naming thousands of directories that are
// gone), loading ahead stops at its bounds: prefetchHeld trees, and
// prefetchBytes of them (plus the tree that crossed the line).
func TestTreePrefetchBounds(t *testing.T) {
	for _, c := range []struct {
		name     string
		n, files int
	}{
		{"count", 5000, 1},
		{"bytes", 2000, 400}, // about 16 KiB a tree
	} {
		t.Run(c.name, func(t *testing.T) {
			f, root := newFlatTrees(t, c.n, c.files)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := newTreePrefetch(ctx, f, f)
			p.ahead(root)
			p.wait()
			loaded, largest := 0, 0
			for _, enc := range f.trees {
				largest = max(largest, len(enc))
			}
			p.mu.Lock()
			for _, s := range p.slots {
				if s.t != nil {
					loaded++
				}
			}
			held, bytes := len(p.slots), p.bytes
			p.mu.Unlock()
			t.Logf("%d subtrees: %d served, %d held, %d loaded, %d bytes", c.n, f.served, held, loaded, bytes)
			if f.served > prefetchHeld || held > prefetchHeld {
				t.Errorf("%d trees served and %d held ahead of the walk; bound %d", f.served, held, prefetchHeld)
			}
			if bytes > prefetchBytes+largest {
				t.Errorf("%d bytes of trees held ahead of the walk; bound %d", bytes, prefetchBytes)
			}
			if loaded == 0 {
				t.Error("nothing was loaded ahead: the bounds were not tested")
			}
		})
	}
}
