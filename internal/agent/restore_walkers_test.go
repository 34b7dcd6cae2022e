package agent_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
)

// Directories are restored by several walkers at once: these tests give
// them hard links across directories, modes that deny writing and
// symlinks planted in the target.

// linkedTree makes src with dirs d00..d(n-1), each holding files of its
// own and a name "link" of one hard-linked file whose first name is
// d00/shared, and a second group whose names are all "late" in the last
// dirs.
func linkedTree(t *testing.T, src string, n int) {
	t.Helper()
	write(t, filepath.Join(src, "d00", "shared"), []byte("one inode, many names"))
	for i := range n {
		d := filepath.Join(src, fmt.Sprintf("d%02d", i))
		for j := range 5 {
			write(t, filepath.Join(d, fmt.Sprintf("f%d", j)), randBytes(uint64(100*i+j), 2000+i*j))
		}
		if i > 0 {
			if err := os.Link(filepath.Join(src, "d00", "shared"), filepath.Join(d, "link")); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(t, filepath.Join(src, fmt.Sprintf("d%02d", n-3), "late"), []byte("another inode"))
	for i := n - 2; i < n; i++ {
		if err := os.Link(filepath.Join(src, fmt.Sprintf("d%02d", n-3), "late"), filepath.Join(src, fmt.Sprintf("d%02d", i), "late")); err != nil {
			t.Fatal(err)
		}
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(fa, fb)
}

func TestRestoreHardLinksAcrossDirectories(t *testing.T) {
	const n = 24
	src := filepath.Join(t.TempDir(), "src")
	linkedTree(t, src, n)
	v := newVault(t, small)
	res := backup(t, v, src)
	for round := range 4 { // walkers race differently each time
		target := t.TempDir()
		r := restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: target})
		if len(r.Warnings) != 0 {
			t.Fatalf("round %d: warnings %v", round, r.Warnings)
		}
		first := filepath.Join(target, src, "d00", "shared")
		for i := 1; i < n; i++ {
			l := filepath.Join(target, src, fmt.Sprintf("d%02d", i), "link")
			if got, _ := os.ReadFile(l); string(got) != "one inode, many names" {
				t.Fatalf("round %d: %s = %q", round, l, got)
			}
			if !sameFile(t, first, l) {
				t.Fatalf("round %d: %s is not a hard link of d00/shared", round, l)
			}
		}
		late := filepath.Join(target, src, fmt.Sprintf("d%02d", n-3), "late")
		for i := n - 2; i < n; i++ {
			if !sameFile(t, late, filepath.Join(target, src, fmt.Sprintf("d%02d", i), "late")) {
				t.Fatalf("round %d: d%02d/late is not linked", round, i)
			}
		}
		if sameFile(t, first, late) {
			t.Fatalf("round %d: two inodes restored as one", round)
		}
	}
}

// TestRestoreHardLinkFirstNameExistsElsewhere: the first name of a
// hard-linked file exists in the target and is left alone; the names in
// other directories, restored by other walkers, are linked to one new
// file with the backed-up content, never to the existing one.
func TestRestoreHardLinkFirstNameExistsElsewhere(t *testing.T) {
	const n = 12
	src := filepath.Join(t.TempDir(), "src")
	linkedTree(t, src, n)
	v := newVault(t, small)
	res := backup(t, v, src)
	target := t.TempDir()
	existing := filepath.Join(target, src, "d00", "shared")
	write(t, existing, []byte("someone else's file"))
	r := restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: target})
	if r.Skipped != 1 {
		t.Fatalf("skipped %d, want 1", r.Skipped)
	}
	if got, _ := os.ReadFile(existing); string(got) != "someone else's file" {
		t.Fatalf("existing file changed to %q", got)
	}
	var firstLink string
	for i := 1; i < n; i++ {
		l := filepath.Join(target, src, fmt.Sprintf("d%02d", i), "link")
		if got, _ := os.ReadFile(l); string(got) != "one inode, many names" {
			t.Fatalf("%s = %q", l, got)
		}
		if sameFile(t, existing, l) {
			t.Fatalf("%s linked to the existing file", l)
		}
		if firstLink == "" {
			firstLink = l
		} else if !sameFile(t, firstLink, l) {
			t.Fatalf("%s and %s are not one file", firstLink, l)
		}
	}
}

// TestRestoreDirectoryModesAndTimes: directories whose modes deny
// writing, with content below them, get their modes and times once
// everything below them is restored.
func TestRestoreDirectoryModesAndTimes(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	modes := map[string]fs.FileMode{"ro": 0o555, "ro/inner": 0o500, "ro/inner/deep": 0o700, "x": 0o311}
	for _, d := range []string{"ro/inner/deep", "x"} {
		write(t, filepath.Join(src, d, "f"), []byte(d))
	}
	for i := range 10 {
		write(t, filepath.Join(src, "ro", fmt.Sprintf("s%d", i), "g"), []byte("g"))
	}
	for _, d := range []string{"ro/inner/deep", "ro/inner", "x", "ro"} {
		p := filepath.Join(src, d)
		if err := os.Chmod(p, modes[d]); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if d != nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	v := newVault(t, small)
	res := backup(t, v, src)
	target := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if d != nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	r := restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: target})
	if len(r.Warnings) != 0 {
		t.Fatalf("warnings %v", r.Warnings)
	}
	for d, m := range modes {
		fi, err := os.Lstat(filepath.Join(target, src, d))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != m {
			t.Errorf("%s: mode %v, want %v", d, fi.Mode().Perm(), m)
		}
		if !fi.ModTime().Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", d, fi.ModTime(), mtime)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(target, src, "ro/inner/deep/f")); string(got) != "ro/inner/deep" {
		t.Errorf("file below read-only directories: %q", got)
	}
}

// TestRestoreFileSymlinkPlantedInTarget: a symlink planted in the target
// where the snapshot has a file is never written through: left alone
// without --overwrite, replaced by the file with it.
func TestRestoreFileSymlinkPlantedInTarget(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	for i := range 8 {
		write(t, filepath.Join(src, fmt.Sprintf("d%d", i), "f"), []byte("from backup"))
	}
	v := newVault(t, small)
	res := backup(t, v, src)
	target := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	write(t, victim, []byte("outside"))
	for i := range 8 {
		p := filepath.Join(target, src, fmt.Sprintf("d%d", i), "f")
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(victim, p); err != nil {
			t.Fatal(err)
		}
	}
	r := restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: target})
	if r.Skipped != 8 {
		t.Errorf("skipped %d, want 8", r.Skipped)
	}
	if got, _ := os.ReadFile(victim); string(got) != "outside" {
		t.Fatalf("restore wrote through a planted symlink: %q", got)
	}
	restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: target, Overwrite: true})
	if got, _ := os.ReadFile(victim); string(got) != "outside" {
		t.Fatalf("--overwrite wrote through a planted symlink: %q", got)
	}
	for i := range 8 {
		p := filepath.Join(target, src, fmt.Sprintf("d%d", i), "f")
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s: %v %v, want a regular file", p, fi, err)
		}
	}
}
