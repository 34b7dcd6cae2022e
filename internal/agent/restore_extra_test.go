package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// lyingRepo hands out one chunk with a flipped byte, as a repository that
// did not verify what it read (or a bit flip in memory) would; hashID
// false hides the engine's BlobID, as a server token without backup
// rights has no chunk-ID key. once: it lies the first time only.
type lyingRepo struct {
	v      *testVault
	bad    vault.ID
	once   bool
	mu     sync.Mutex
	served bool
}

func (r *lyingRepo) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	return r.v.repo.LoadTree(ctx, id)
}

func (r *lyingRepo) BlobSize(t vault.BlobType, id vault.ID) (uint32, error) {
	return r.v.repo.BlobSize(t, id)
}

func (r *lyingRepo) LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	b, err := r.v.repo.LoadBlob(ctx, t, id, dst)
	if err != nil || id != r.bad {
		return b, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.once && r.served {
		return b, nil
	}
	r.served = true
	out := bytes.Clone(b)
	out[len(out)/2] ^= 1
	return out, nil
}

type hashingLyingRepo struct{ *lyingRepo }

func (r hashingLyingRepo) BlobID(data []byte) vault.ID { return r.v.Vault.BlobID(data) }

// TestRestoreVerify: --verify reads back what the restore wrote and
// finds a chunk whose bytes are not the snapshot's, by its ID or, without
// the chunk-ID key, by fetching the chunk again; everything else is
// verified, and a clean restore verifies every file.
func TestRestoreVerify(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "a"), randBytes(1, 200_000))
	write(t, filepath.Join(src, "b"), []byte("bravo"))
	write(t, filepath.Join(src, "d", "c"), randBytes(2, 50_000))
	if err := os.Link(filepath.Join(src, "d", "c"), filepath.Join(src, "c-link")); err != nil {
		t.Fatal(err)
	}
	v := newVault(t, small)
	res := backup(t, v, src)
	root := res.Snapshot.Tree

	clean := restore(t, v, root, agent.RestoreOptions{Target: t.TempDir(), Verify: true})
	if clean.Verified != 3 || len(clean.Mismatched) != 0 {
		t.Errorf("clean restore: verified %d, mismatched %v", clean.Verified, clean.Mismatched)
	}
	bad := chunksOf(t, v, root, filepath.Join(src, "a"))[2]
	for _, c := range []struct {
		name string
		repo agent.RestoreRepo
	}{
		{"chunk ID", hashingLyingRepo{&lyingRepo{v: v, bad: bad}}},
		{"fetched again", &lyingRepo{v: v, bad: bad, once: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := agent.Restore(context.Background(), c.repo, root, agent.RestoreOptions{Target: t.TempDir(), Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Mismatched) != 1 || got.Mismatched[0].Path != filepath.Join(src, "a") || got.Verified != 2 {
				t.Fatalf("verified %d, mismatched %+v", got.Verified, got.Mismatched)
			}
			if m := got.Mismatched[0]; m.Offset == 0 || !strings.Contains(m.Why, bad.Short()) {
				t.Errorf("mismatch %+v does not name chunk %s at its offset", m, bad.Short())
			}
		})
	}
	// Without Verify the lie goes unnoticed: Verify is what finds it.
	got := restore(t, v, root, agent.RestoreOptions{Target: t.TempDir()})
	if got.Verified != 0 || got.Mismatched != nil {
		t.Errorf("without Verify: %+v", got)
	}
}

// TestRestoreExclude: a restore's excludes are backup's matcher applied
// to the paths in the snapshot: restoring everything but P from a full
// backup gives what a backup excluding P restores.
func TestRestoreExclude(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	for _, p := range []string{"a.log", "keep.txt", "Cache/x", "sub/B.LOG", "sub/keep.log", "sub/deep/y.txt", "node_modules/z"} {
		write(t, filepath.Join(src, p), []byte(p))
	}
	v := newVault(t, small)
	full := backup(t, v, src).Snapshot.Tree
	for _, c := range []struct {
		name string
		pats []agent.ExcludePattern
	}{
		{"glob", []agent.ExcludePattern{{Pattern: "*.log"}}},
		{"negate", []agent.ExcludePattern{{Pattern: "*.log"}, {Pattern: "!keep.log"}}},
		{"ignore case", []agent.ExcludePattern{{Pattern: "*.log", IgnoreCase: true}, {Pattern: "cache", IgnoreCase: true}}},
		{"anchored dir", []agent.ExcludePattern{{Pattern: src + "/sub/deep"}, {Pattern: "node_modules/"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := t.TempDir()
			snap, err := agent.Backup(context.Background(), v.repo, agent.BackupOptions{Paths: []string{src}, Host: "testhost", Exclude: agent.ExcludeRules{Patterns: c.pats}})
			if err != nil {
				t.Fatal(err)
			}
			restore(t, v, snap.Snapshot.Tree, agent.RestoreOptions{Target: want})
			got := t.TempDir()
			restore(t, v, full, agent.RestoreOptions{Target: got, Exclude: agent.ExcludeRules{Patterns: c.pats}})
			w, g := filesUnder(t, want), filesUnder(t, got)
			if !slices.Equal(w, g) || len(g) == 0 || len(g) == 7 {
				t.Errorf("restore --exclude: %q\nbackup --exclude: %q", g, w)
			}
		})
	}
	// Other rules read the source file system: refused.
	if _, err := agent.Restore(context.Background(), v.repo, full, agent.RestoreOptions{Target: t.TempDir(), Exclude: agent.ExcludeRules{Caches: true}}); err == nil {
		t.Error("restore accepted --exclude-caches")
	}
	// A malformed pattern is refused before anything is written.
	target := filepath.Join(t.TempDir(), "t")
	if _, err := agent.Restore(context.Background(), v.repo, full, agent.RestoreOptions{Target: target, Exclude: agent.ExcludeRules{Patterns: []agent.ExcludePattern{{Pattern: "[", Source: "--exclude"}}}}); err == nil {
		t.Error("restore accepted the pattern [")
	}
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused restore created its target: %v", err)
	}
}

// TestRestoreDryRun: a dry run counts and lists what the restore then
// restores, and writes nothing, not even the target.
func TestRestoreDryRun(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "a"), randBytes(1, 100_000))
	write(t, filepath.Join(src, "sub", "b.log"), []byte("b"))
	write(t, filepath.Join(src, "sub", "c"), []byte("cc"))
	os.Link(filepath.Join(src, "a"), filepath.Join(src, "a-link"))
	os.Symlink("a", filepath.Join(src, "l"))
	v := newVault(t, small)
	root := backup(t, v, src).Snapshot.Tree
	opt := agent.RestoreOptions{Include: []string{src}, Exclude: agent.ExcludeRules{Patterns: []agent.ExcludePattern{{Pattern: "*.log"}}}}
	target := filepath.Join(t.TempDir(), "t")
	dry := opt
	dry.Target, dry.DryRun = target, true
	var listed []string
	dry.Entry = func(p string, _ *format.Node) { listed = append(listed, p) }
	plan := restore(t, v, root, dry)
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("dry run created the target: %v", err)
	}
	real := opt
	real.Target = target
	done := restore(t, v, root, real)
	if plan.Files != done.Files || plan.Dirs != done.Dirs || plan.Bytes != done.Bytes {
		t.Errorf("dry run: %d files, %d dirs, %d bytes; restore: %d, %d, %d", plan.Files, plan.Dirs, plan.Bytes, done.Files, done.Dirs, done.Bytes)
	}
	var onDisk []string
	filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if p != target {
			onDisk = append(onDisk, strings.TrimPrefix(p, target))
		}
		return err
	})
	slices.Sort(listed)
	slices.Sort(onDisk)
	if !slices.Equal(listed, onDisk) {
		t.Errorf("dry run listed %q\nrestore wrote %q", listed, onDisk)
	}
}

func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return err
	})
	slices.Sort(out)
	return out
}
