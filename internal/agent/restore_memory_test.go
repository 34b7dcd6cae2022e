package agent_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// wideRepo serves a snapshot of dirs directories of per entries each,
// made up on every load (it holds no tree itself): sockets with 100-byte
// names, which a restore counts and walks but does not create, so the
// trees' memory is all the test measures. At each load of a directory's
// tree it records the live heap. A restore loads trees from several
// walkers at once.
type wideRepo struct {
	dirs, per int
	mu        sync.Mutex
	base      uint64
	peak      uint64 // under mu
	loads     int    // under mu
}

func (r *wideRepo) LoadTree(_ context.Context, id vault.ID) (*format.Tree, error) {
	r.mu.Lock()
	r.loads++
	r.mu.Unlock()
	t := &format.Tree{}
	if id[0] == 0 { // the root
		for d := range r.dirs {
			var sub vault.ID
			sub[0], sub[1], sub[2] = 1, byte(d), byte(d>>8)
			t.Nodes = append(t.Nodes, format.Node{Name: fmt.Appendf(nil, "d%05d", d), Kind: format.KindDir, Perm: 0o700, Subtree: sub})
		}
		return t, nil
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	r.mu.Lock()
	r.peak = max(r.peak, ms.HeapAlloc)
	r.mu.Unlock()
	pad := make([]byte, 90)
	for i := range pad {
		pad[i] = 'x'
	}
	for i := range r.per {
		t.Nodes = append(t.Nodes, format.Node{Name: fmt.Appendf(nil, "%s%09d", pad, i), Kind: format.KindSocket, Perm: 0o600})
	}
	return t, nil
}

func (r *wideRepo) LoadBlob(context.Context, vault.BlobType, vault.ID, []byte) ([]byte, error) {
	return nil, vault.ErrNotFound
}

func (r *wideRepo) BlobSize(vault.BlobType, vault.ID) (uint32, error) { return 0, vault.ErrNotFound }

// TestRestoreTreesBounded: a restore holds at most about 16 MiB of a
// snapshot's trees, however many there are (docs/performance.md,
// "Memory"): here 48 directories of 4,000 entries, about 60 MiB of
// trees. It used to keep every tree from its first pass to its second,
// about 340 bytes a file: 340 MB for a million files.
func TestRestoreTreesBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("about 100 collections of a 60 MiB heap")
	}
	repo := &wideRepo{dirs: 48, per: 4000}
	dst := t.TempDir()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	repo.base = ms.HeapAlloc
	res, err := agent.Restore(context.Background(), repo, vault.ID{}, agent.RestoreOptions{Target: dst})
	if err != nil {
		t.Fatal(err)
	}
	if res.Dirs != 48 {
		t.Errorf("restored %d directories, want 48", res.Dirs)
	}
	if ents, err := os.ReadDir(dst); err != nil || len(ents) != 48 {
		t.Errorf("target holds %d entries (%v), want 48 directories", len(ents), err)
	}
	held := int64(repo.peak) - int64(repo.base)
	t.Logf("trees loaded %d times (%d directories); live heap at most %.1f MiB above the start", repo.loads, repo.dirs+1, float64(held)/(1<<20))
	if held > 24<<20 {
		t.Errorf("a restore held %.1f MiB of trees, bound about 16 MiB", float64(held)/(1<<20))
	}

	// A dry run walks the same trees the same way.
	repo.peak, repo.loads = 0, 0
	res, err = agent.Restore(context.Background(), repo, vault.ID{}, agent.RestoreOptions{Target: dst, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Dirs != 48 {
		t.Errorf("dry run: %d directories, want 48", res.Dirs)
	}
	if held := int64(repo.peak) - int64(repo.base); held > 24<<20 {
		t.Errorf("a dry run held %.1f MiB of trees, bound about 16 MiB", float64(held)/(1<<20))
	}
}
