package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --- restore: one rule, a per-file problem is a warning and exit 3 -------

// TestRestorePerFileProblemsExit3: an existing file left alone, a file
// where the snapshot has a directory, and a directory that cannot be
// written are each a warning; everything else is restored and the exit
// code is 3, as help says.
func TestRestorePerFileProblemsExit3(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	mustCoffer(t, e, "backup", data)

	t.Run("existing file", func(t *testing.T) {
		target := t.TempDir()
		existing := filepath.Join(target, data, "a.txt")
		writeFile(t, existing, []byte("mine\n"), 0o644)
		out, errOut, code := coffer(t, e, "restore", "latest", "--target", target)
		if code != exitPartial {
			t.Fatalf("restore over an existing file: exit %d, want 3\n%s%s", code, out, errOut)
		}
		if !strings.Contains(errOut, "--overwrite") {
			t.Errorf("the way out is not named: %q", errOut)
		}
		if b, _ := os.ReadFile(filepath.Join(target, data, "docs", "deep", "c.txt")); string(b) != "charlie\n" {
			t.Errorf("the rest was not restored: %q", b)
		}
	})
	t.Run("file where a directory was", func(t *testing.T) {
		target := t.TempDir()
		blocker := filepath.Join(target, data, "docs")
		writeFile(t, blocker, []byte("not a directory\n"), 0o644)
		out, errOut, code := coffer(t, e, "restore", "latest", "--target", target)
		if code != exitPartial {
			t.Fatalf("restore with a file where a directory belongs: exit %d, want 3\n%s%s", code, out, errOut)
		}
		if !strings.Contains(errOut, "warning: "+data+"/docs") {
			t.Errorf("no warning names the directory: %q", errOut)
		}
		if b, _ := os.ReadFile(filepath.Join(target, data, "a.txt")); string(b) != "alpha\n" {
			t.Errorf("the rest was not restored: %q", b)
		}
		if b, _ := os.ReadFile(blocker); string(b) != "not a directory\n" {
			t.Errorf("the file in the way was changed without --overwrite: %q", b)
		}
	})
	t.Run("unwritable directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root writes into any directory")
		}
		target := t.TempDir()
		locked := filepath.Join(target, data, "docs")
		if err := os.MkdirAll(locked, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(locked, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(locked, 0o755) })
		out, errOut, code := coffer(t, e, "restore", "latest", "--target", target)
		if code != exitPartial {
			t.Fatalf("restore into an unwritable directory: exit %d, want 3\n%s%s", code, out, errOut)
		}
		if b, _ := os.ReadFile(filepath.Join(target, data, "a.txt")); string(b) != "alpha\n" {
			t.Errorf("the rest was not restored: %q", b)
		}
	})
}
