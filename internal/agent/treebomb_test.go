package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// bombRepo serves a tree bomb: levels trees, each directory naming the
// tree one level down width times; the last holds width files. It
// expands to width^levels files from levels+1 trees, and counts the
// trees it serves.
type bombRepo struct {
	trees map[vault.ID]*format.Tree
	loads int
}

func newBomb(levels, width int) (*bombRepo, vault.ID) {
	r := &bombRepo{trees: map[vault.ID]*format.Tree{}}
	var id vault.ID
	leaf := &format.Tree{}
	for i := range width {
		leaf.Nodes = append(leaf.Nodes, format.Node{Name: []byte(fmt.Sprintf("f%02d", i)), Kind: format.KindFile, Perm: 0o600})
	}
	id[0] = 1
	r.trees[id] = leaf
	for l := range levels {
		t := &format.Tree{}
		for i := range width {
			t.Nodes = append(t.Nodes, format.Node{Name: []byte(fmt.Sprintf("d%02d", i)), Kind: format.KindDir, Perm: 0o700, Subtree: id})
		}
		var next vault.ID
		next[0], next[1] = 2, byte(l)
		r.trees[next] = t
		id = next
	}
	return r, id
}

func (r *bombRepo) LoadTree(_ context.Context, id vault.ID) (*format.Tree, error) {
	r.loads++
	t, ok := r.trees[id]
	if !ok {
		return nil, vault.ErrNotFound
	}
	return t, nil
}

func (r *bombRepo) LoadBlob(context.Context, vault.BlobType, vault.ID, []byte) ([]byte, error) {
	return nil, vault.ErrNotFound
}

func (r *bombRepo) BlobSize(vault.BlobType, vault.ID) (uint32, error) { return 0, vault.ErrNotFound }

// heapAfter runs fn and returns how much the live heap grew.
func heapGrowth(fn func()) int64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	fn()
	runtime.GC()
	runtime.ReadMemStats(&b)
	return int64(b.HeapAlloc) - int64(a.HeapAlloc)
}

// TestAttackTreeBombWalkersStop: a snapshot whose record claims a few
// entries but whose 41 trees expand to 2^40 files stops ls, diff and
// restore with ErrTooManyEntries after the record's bound, visiting no
// more than that many entries, writing nothing, and holding little
// memory. On the code as found, each walked 2^40 paths (without end).
func TestAttackTreeBombWalkersStop(t *testing.T) {
	repo, root := newBomb(40, 2)
	rec := vault.SnapshotRecord{Tree: root, Files: 1000, Dirs: 1000, Paths: []string{"/home/ann"}}
	max := agent.MaxEntries(rec)
	if max > 3000 {
		t.Fatalf("MaxEntries of a record of 2000 entries is %d", max)
	}
	ctx := context.Background()

	t.Run("ls", func(t *testing.T) {
		var seen uint64
		var err error
		grew := heapGrowth(func() {
			err = agent.Walk(ctx, repo, root, "/", max, func(string, *format.Node) error {
				seen++
				if seen > 10*max { // the test's own bound: never loop for ever
					return errors.New("walked past ten times the bound")
				}
				return nil
			})
		})
		if !errors.Is(err, agent.ErrTooManyEntries) {
			t.Fatalf("ls of a tree bomb: %v, want ErrTooManyEntries", err)
		}
		if seen > max {
			t.Errorf("ls visited %d entries, bound %d", seen, max)
		}
		if grew > 8<<20 {
			t.Errorf("ls of a tree bomb grew the heap by %d bytes", grew)
		}
	})

	t.Run("diff", func(t *testing.T) {
		other, _ := newBomb(1, 1)
		for id, tr := range other.trees {
			repo.trees[id] = tr
		}
		var otherRoot vault.ID
		otherRoot[0], otherRoot[1] = 2, 0
		var seen uint64
		err := agent.Diff(ctx, repo, otherRoot, root, 2*max, func(agent.Change) error {
			seen++
			if seen > 20*max {
				return errors.New("diffed past ten times the bound")
			}
			return nil
		})
		if !errors.Is(err, agent.ErrTooManyEntries) {
			t.Fatalf("diff against a tree bomb: %v, want ErrTooManyEntries", err)
		}
		if seen > 2*max {
			t.Errorf("diff reported %d changes, bound %d", seen, 2*max)
		}
	})

	t.Run("restore", func(t *testing.T) {
		dst := t.TempDir()
		var err error
		grew := heapGrowth(func() {
			_, err = agent.Restore(ctx, repo, root, agent.RestoreOptions{Target: dst, MaxEntries: max})
		})
		if !errors.Is(err, agent.ErrTooManyEntries) {
			t.Fatalf("restore of a tree bomb: %v, want ErrTooManyEntries", err)
		}
		if ents, _ := os.ReadDir(dst); len(ents) != 0 {
			t.Errorf("restore of a tree bomb wrote %d entries before refusing", len(ents))
		}
		if grew > 8<<20 {
			t.Errorf("restore of a tree bomb grew the heap by %d bytes", grew)
		}
	})
}

// TestAttackTreeDeepPath: a chain of directories deeper than any path a
// backup can read stops a walk (its paths alone would grow with the
// square of the depth) even under a record that claims enough entries.
func TestAttackTreeDeepPath(t *testing.T) {
	repo, root := newBomb(5000, 1) // one directory per level: 5000 levels
	err := agent.Walk(context.Background(), repo, root, "/", 1<<20, func(string, *format.Node) error { return nil })
	if !errors.Is(err, agent.ErrPathTooLong) {
		t.Fatalf("walk of a 5000-level chain: %v, want ErrPathTooLong", err)
	}
	_, err = agent.Restore(context.Background(), repo, root, agent.RestoreOptions{Target: t.TempDir(), MaxEntries: 1 << 20})
	if !errors.Is(err, agent.ErrPathTooLong) {
		t.Fatalf("restore of a 5000-level chain: %v, want ErrPathTooLong", err)
	}
}

// TestRecordCountsBoundGenuineSnapshot: a genuine backup with files,
// symlinks, a FIFO, hard links, empty and nested directories walks,
// restores and diffs within its record's MaxEntries: its record counts
// every entry (Files every non-directory, Dirs every directory below the
// backed-up paths).
func TestRecordCountsBoundGenuineSnapshot(t *testing.T) {
	v := newVault(t, small)
	src := t.TempDir()
	write(t, filepath.Join(src, "a", "b", "c.txt"), []byte("hello"))
	write(t, filepath.Join(src, "a", "d.txt"), []byte("world"))
	if err := os.Symlink("a/d.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "a", "d.txt"), filepath.Join(src, "hard")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	res := backup(t, v, src)
	rec := res.Snapshot
	var files, dirs uint64
	if err := agent.Walk(context.Background(), v.repo, rec.Tree, "/", agent.MaxEntries(rec), func(_ string, n *format.Node) error {
		if n.Kind == format.KindDir {
			dirs++
		} else {
			files++
		}
		return nil
	}); err != nil {
		t.Fatalf("walk of a genuine snapshot within its record: %v", err)
	}
	// 5 non-directories; directories: src, a, b, empty, and those above src.
	if rec.Files != 5 || files != rec.Files {
		t.Errorf("record counts %d files, the tree holds %d non-directories (want 5)", rec.Files, files)
	}
	if rec.Dirs != 4 || dirs < rec.Dirs {
		t.Errorf("record counts %d dirs, the tree holds %d directories (want 4 below the path)", rec.Dirs, dirs)
	}
	restore(t, v, rec.Tree, agent.RestoreOptions{Target: t.TempDir(), MaxEntries: agent.MaxEntries(rec)})
	// What the server checks a saved record against.
	got, err := engine.ExpandTree(context.Background(), v.Vault, rec.Tree, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.CheckCounts(rec, got); err != nil {
		t.Errorf("a genuine backup's record is refused: %v", err)
	}
	if got.Bytes != 15 || rec.Bytes != 15 {
		t.Errorf("bytes: trees %d, record %d; want 15 (hello, world and its hard link)", got.Bytes, rec.Bytes)
	}
}
