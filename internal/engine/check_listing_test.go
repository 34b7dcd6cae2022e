package engine_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// listingCatalog marks while a listing of packs is open.
type listingCatalog struct {
	vault.Catalog
	open atomic.Bool
}

func (c *listingCatalog) Packs(ctx context.Context, id vault.ID, fn func(vault.PackRecord) error) error {
	c.open.Store(true)
	defer c.open.Store(false)
	return c.Catalog.Packs(ctx, id, fn)
}

// packReadStore counts the pack reads made while the catalog's listing of
// packs was open.
type packReadStore struct {
	vault.Store
	cat           *listingCatalog
	reads, inList atomic.Int64
}

func (s *packReadStore) Get(ctx context.Context, h vault.Handle, off, n int64) (io.ReadCloser, error) {
	if h.Type == vault.PackObject {
		s.reads.Add(1)
		if s.cat.open.Load() {
			s.inList.Add(1)
		}
	}
	return s.Store.Get(ctx, h, off, n)
}

// TestCheckReadDataListingClosed: check --read-data reads no pack while
// it holds the catalog's listing of packs open, which on a large vault
// would keep a SQLite catalog's write-ahead log from being checkpointed
// for the hours the reading takes.
func TestCheckReadDataListingClosed(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	// Forty packs: a pack's blobs flushed before the next directory.
	root := &format.Tree{}
	for d := range 40 {
		sub := &format.Tree{}
		for f := range 10 {
			data := randBytes(uint64(d*10+f)+7<<20, 2000)
			data[0], data[1] = byte(d), byte(f)
			id, _ := save(t, v, data)
			sub.Nodes = append(sub.Nodes, format.Node{Kind: format.KindFile, Name: []byte(fmt.Sprintf("f%02d", f)), Perm: 0o644, Size: uint64(len(data)), Content: []vault.ID{id}})
		}
		subID, err := v.SaveTree(ctx, sub)
		if err != nil {
			t.Fatal(err)
		}
		flush(t, v)
		root.Nodes = append(root.Nodes, format.Node{Kind: format.KindDir, Name: []byte(fmt.Sprintf("d%02d", d)), Perm: 0o755, Subtree: subID})
	}
	rootID, err := v.SaveTree(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	flush(t, v)
	if _, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart, Host: "h", Paths: []string{"/"}, Tree: rootID, Files: 400, Dirs: 40}); err != nil {
		t.Fatal(err)
	}
	v.Close()
	cat := &listingCatalog{Catalog: e.cat}
	st := &packReadStore{Store: e.store, cat: cat}
	opts := e.opts()
	opts.Catalog, opts.Store = cat, st
	w, err := engine.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rep, err := w.Check(ctx, engine.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.PacksRead < 40 {
		t.Fatalf("report %+v", rep)
	}
	if st.reads.Load() == 0 {
		t.Fatal("no pack was read through the store")
	}
	if n := st.inList.Load(); n > 0 {
		t.Errorf("%d of %d pack reads were made while the catalog's listing of packs was open", n, st.reads.Load())
	}
}

// TestCheckRemovesStaleScratch: a check or a prune removes the scratch
// directories that checks and prunes killed before they could clean up
// left behind, and only those: one whose process still runs is kept, and
// its own is gone when it ends.
func TestCheckRemovesStaleScratch(t *testing.T) {
	for _, op := range []string{"check", "prune"} {
		t.Run(op, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			dead := exec.Command("true")
			if err := dead.Run(); err != nil {
				t.Skipf("no true(1): %v", err)
			}
			live := exec.Command("sleep", "60")
			if err := live.Start(); err != nil {
				t.Skipf("no sleep(1): %v", err)
			}
			defer func() { live.Process.Kill(); live.Wait() }()
			var deadDirs, keptDirs []string
			for _, prefix := range []string{"coffer-check-", "coffer-prune-"} {
				deadDirs = append(deadDirs, filepath.Join(tmp, fmt.Sprintf("%s%d-123", prefix, dead.Process.Pid)))
				keptDirs = append(keptDirs,
					filepath.Join(tmp, fmt.Sprintf("%s%d-456", prefix, live.Process.Pid)),
					filepath.Join(tmp, prefix+"notapid"))
			}
			for _, d := range append(deadDirs, keptDirs...) {
				if err := os.MkdirAll(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			e := newEnv(t, nil)
			v := create(t, e)
			var err error
			if op == "check" {
				_, err = v.Check(ctx, engine.CheckOptions{})
			} else {
				_, err = v.Prune(ctx, engine.PruneOptions{Principal: "test"})
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range deadDirs {
				if _, err := os.Stat(d); !os.IsNotExist(err) {
					t.Errorf("the scratch directory of a process that is gone is still there: %v", err)
				}
			}
			for _, d := range keptDirs {
				if _, err := os.Stat(d); err != nil {
					t.Errorf("%s: %v", d, err)
				}
			}
			left, _ := filepath.Glob(filepath.Join(tmp, "coffer-*-*"))
			if len(left) != len(keptDirs) {
				t.Errorf("scratch directories after the %s: %v (its own not removed?)", op, left)
			}
		})
	}
}
