package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// batchRepo is sessionRepo with a batched read, as the HTTPS client has:
// it counts single tree loads and batches, and the most batches running
// at once. failBatch makes every batch fail after its first tree (as an
// answer that ends early); failTree makes LoadTree fail for one tree.
type batchRepo struct {
	*sessionRepo
	bmu                  sync.Mutex
	singles, batches     int
	running, maxRunning  int
	maxIDs, treesInBatch int
	failBatch            bool
	failTree             vault.ID
}

func (r *batchRepo) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	r.bmu.Lock()
	r.singles++
	fail := id == r.failTree
	r.bmu.Unlock()
	if fail {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), vault.ErrCorrupt)
	}
	return r.sessionRepo.LoadTree(ctx, id)
}

func (r *batchRepo) LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	r.bmu.Lock()
	r.batches++
	r.running++
	r.maxRunning = max(r.maxRunning, r.running)
	r.maxIDs = max(r.maxIDs, len(ids))
	r.treesInBatch += len(ids)
	fail := r.failBatch
	r.bmu.Unlock()
	defer func() { r.bmu.Lock(); r.running--; r.bmu.Unlock() }()
	if t != vault.TreeBlob {
		return errors.New("a backup asked the batched read for data blobs")
	}
	for i, id := range ids {
		if fail && i > 0 {
			return fmt.Errorf("tree %s: %w: the answer ended early", id.Short(), vault.ErrTruncated)
		}
		if id == r.failTree {
			return fmt.Errorf("tree %s: %w", id.Short(), vault.ErrCorrupt)
		}
		b, err := r.sessionRepo.LoadBlob(ctx, t, id, nil)
		if err != nil {
			return err
		}
		// The caller must not keep data past the call: scribble on it.
		if err := fn(i, b); err != nil {
			return err
		}
		for j := range b {
			b[j] = 0xA5
		}
	}
	return nil
}

// TestTreePrefetch: through a repository that reads many blobs a request
// (the HTTPS client), an unchanged re-run loads its parent's trees in a
// few batches, not one request per directory, within the bounds (trees a
// batch, batches at once), and gets the very snapshot tree a re-run
// loading them one by one gets. Trees that a batch could not bring are
// loaded one by one, with the same outcome as before; a parent tree that
// cannot be loaded at all makes its directory's files be read.
func TestTreePrefetch(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	const top, sub, perDir = 30, 10, 2 // 300 leaf dirs, 341 dirs with src
	var files uint64
	for i := range top {
		for j := range sub {
			for k := range perDir {
				write(t, filepath.Join(src, fmt.Sprintf("t%d", i), fmt.Sprintf("s%d", j), fmt.Sprintf("f%d", k)), randBytes(files, 50+int(files%700)))
				files++
			}
		}
	}
	v := newVault(t, small)
	eng, ok := v.repo.(*engine.Vault)
	if !ok {
		t.Skip("needs the local engine underneath")
	}
	newRepo := func() *batchRepo {
		return &batchRepo{sessionRepo: &sessionRepo{Vault: eng, mine: map[vault.ID]bool{}, lost: map[vault.ID]bool{}}}
	}
	run := func(r agent.BackupRepo) *agent.BackupResult {
		t.Helper()
		res, err := agent.Backup(context.Background(), r, agent.BackupOptions{Paths: []string{src}, Host: "h"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// The first run and a re-run without batches: the reference.
	run(&sessionRepo{Vault: eng, mine: map[vault.ID]bool{}, lost: map[vault.ID]bool{}})
	ref := run(&sessionRepo{Vault: eng, mine: map[vault.ID]bool{}, lost: map[vault.ID]bool{}})
	// The tree of src: the snapshot's root holds /tmp's times, which
	// other tests change.
	want := subtree(t, v, ref.Snapshot.Tree, src)
	same := func(res *agent.BackupResult) bool { return subtree(t, v, res.Snapshot.Tree, src) == want }
	if ref.Reused != files {
		t.Fatalf("re-run without batches reused %d of %d files", ref.Reused, files)
	}

	r := newRepo()
	res := run(r)
	if res.Reused != files {
		t.Errorf("re-run with batches reused %d of %d files", res.Reused, files)
	}
	if !same(res) {
		t.Error("re-run with batches saved another tree than the re-run without")
	}
	dirs := 1 + top + top*sub
	t.Logf("%d dirs: %d single tree loads, %d batches for %d trees, at most %d at once, at most %d a batch",
		dirs, r.singles, r.batches, r.treesInBatch, r.maxRunning, r.maxIDs)
	// The root is loaded alone (the walk needs it first), its
	// subdirectories in one batch, theirs in a few more.
	if r.singles > 3 || r.batches > 10 {
		t.Errorf("%d dirs cost %d single tree loads and %d batches; want the trees loaded ahead in a few batches", dirs, r.singles, r.batches)
	}
	if r.maxIDs > 256 || r.maxRunning > 4 {
		t.Errorf("batches of up to %d trees, up to %d at once; want at most 256 and 4", r.maxIDs, r.maxRunning)
	}

	// Every batch breaks after its first tree: the rest are loaded one by
	// one, and nothing changes.
	r = newRepo()
	r.failBatch = true
	res = run(r)
	if res.Reused != files || !same(res) {
		t.Errorf("with broken batches: reused %d of %d, same tree %v", res.Reused, files, same(res))
	}
	if r.singles < dirs/2 {
		t.Errorf("with broken batches only %d single tree loads for %d dirs: trees were lost, not loaded again", r.singles, dirs)
	}

	// One parent tree (t7's) cannot be loaded, in a batch or alone: its
	// directory has no parent, so its files are read, the others reused.
	r = newRepo()
	r.failTree = subtree(t, v, ref.Snapshot.Tree, filepath.Join(src, "t7"))
	res = run(r)
	if n := files - uint64(sub*perDir); res.Reused != n {
		t.Errorf("with t7's parent tree unreadable: reused %d, want %d (every file but t7's)", res.Reused, n)
	}
	if !same(res) {
		t.Error("with t7's parent tree unreadable the snapshot's tree differs")
	}
}

// wideBomb serves a root tree naming n distinct subtrees of one file
// each, single and in batches (as the HTTPS client), counting the trees
// it serves.
type wideBomb struct {
	mu     sync.Mutex
	trees  map[vault.ID]*format.Tree
	served int
}

func newWideBomb(n int) (*wideBomb, vault.ID) {
	r := &wideBomb{trees: map[vault.ID]*format.Tree{}}
	root := &format.Tree{}
	for i := range n {
		var id vault.ID
		id[0], id[1], id[2] = 3, byte(i>>8), byte(i)
		r.trees[id] = &format.Tree{Nodes: []format.Node{{Name: []byte("f"), Kind: format.KindFile, Perm: 0o600}}}
		root.Nodes = append(root.Nodes, format.Node{Name: []byte(fmt.Sprintf("d%05d", i)), Kind: format.KindDir, Perm: 0o700, Subtree: id})
	}
	var rid vault.ID
	rid[0] = 4
	r.trees[rid] = root
	return r, rid
}

func (r *wideBomb) LoadTree(_ context.Context, id vault.ID) (*format.Tree, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.served++
	t, ok := r.trees[id]
	if !ok {
		return nil, vault.ErrNotFound
	}
	return t, nil
}

func (r *wideBomb) LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	for i, id := range ids {
		tr, err := r.LoadTree(ctx, id)
		if err != nil {
			return err
		}
		enc, err := format.EncodeTree(nil, tr)
		if err != nil {
			return err
		}
		if err := fn(i, enc); err != nil {
			return err
		}
	}
	return nil
}

func (r *wideBomb) LoadBlob(context.Context, vault.BlobType, vault.ID, []byte) ([]byte, error) {
	return nil, vault.ErrNotFound
}

func (r *wideBomb) BlobSize(vault.BlobType, vault.ID) (uint32, error) { return 0, vault.ErrNotFound }

// TestAttackTreePrefetchBounded: a snapshot whose record claims a few
// entries but whose root names 5,000 directories, restored through a
// repository that loads trees in batches: the restore still stops with
// ErrTooManyEntries, writes nothing, and loading ahead fetched no more
// than its bound of trees (2,048), not every tree the bomb names.
func TestAttackTreePrefetchBounded(t *testing.T) {
	const n = 5000
	repo, root := newWideBomb(n)
	max := agent.MaxEntries(vault.SnapshotRecord{Files: 10, Dirs: 10})
	dst := t.TempDir()
	_, err := agent.Restore(context.Background(), repo, root, agent.RestoreOptions{Target: dst, MaxEntries: max})
	if !errors.Is(err, agent.ErrTooManyEntries) {
		t.Fatalf("restore of a wide tree bomb: %v, want ErrTooManyEntries", err)
	}
	if ents, _ := os.ReadDir(dst); len(ents) != 0 {
		t.Errorf("restore of a wide tree bomb wrote %d entries", len(ents))
	}
	repo.mu.Lock()
	served := repo.served
	repo.mu.Unlock()
	t.Logf("%d trees served for a bound of %d entries", served, max)
	if served > 1+2048+int(max) {
		t.Errorf("restore of a wide tree bomb loaded %d of its %d trees; loading ahead must stop at 2048", served, n+1)
	}
}
