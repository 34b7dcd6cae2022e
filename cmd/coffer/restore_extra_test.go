package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRestoreExcludeDryRunVerifyCLI: restore's --exclude/--iexclude,
// --dry-run (lists and counts, writes nothing) and --verify, in text and
// JSON.
func TestRestoreExcludeDryRunVerifyCLI(t *testing.T) {
	e := newEnv(t)
	data := sampleData(t)
	mustCoffer(t, e, "backup", data)

	target := filepath.Join(t.TempDir(), "r")
	out := mustCoffer(t, e, "restore", "latest", "--target", target, "--dry-run", "--exclude", "*.tmp", "--iexclude", "BIG.BIN")
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("--dry-run created the target: %v", err)
	}
	for _, want := range []string{"would restore " + filepath.Join(data, "a.txt") + "\n", "would restore " + filepath.Join(data, "docs") + "/\n", "dry run: would restore snapshot", "4 files", "nothing was written"} {
		if !strings.Contains(out, want) {
			t.Errorf("--dry-run output lacks %q:\n%s", want, out)
		}
	}
	for _, no := range []string{"skip.tmp", "big.bin"} {
		if strings.Contains(out, no) {
			t.Errorf("--dry-run lists excluded %s:\n%s", no, out)
		}
	}
	jout := mustCoffer(t, e, "restore", "latest", "--target", target, "--dry-run", "--json", "--exclude", "*.tmp")
	var plan struct {
		DryRun  bool   `json:"dry_run"`
		Files   uint64 `json:"files"`
		Bytes   uint64 `json:"bytes"`
		Entries []struct {
			Path, Type string
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(jout), &plan); err != nil || !plan.DryRun || plan.Files != 5 || plan.Bytes < 9<<20 || len(plan.Entries) == 0 {
		t.Errorf("--dry-run --json: %+v, %v\n%s", plan, err, jout)
	}

	out = mustCoffer(t, e, "restore", "latest", "--target", target, "--verify", "--exclude", "*.tmp", "--iexclude", "BIG.BIN")
	if !strings.Contains(out, "verified 4 files: each matches the snapshot") {
		t.Errorf("--verify output:\n%s", out)
	}
	got := regularFiles(t, target)
	if slices.ContainsFunc(got, func(p string) bool { return strings.HasSuffix(p, ".tmp") || strings.HasSuffix(p, "big.bin") }) || len(got) != 4 {
		t.Errorf("restore --exclude wrote %q", got)
	}
	jout = mustCoffer(t, e, "restore", "latest", "--target", t.TempDir(), "--verify", "--json")
	var res struct {
		Verified   uint64           `json:"verified"`
		Mismatched []map[string]any `json:"mismatched"`
	}
	if err := json.Unmarshal([]byte(jout), &res); err != nil || res.Verified != 6 || res.Mismatched == nil || len(res.Mismatched) != 0 {
		t.Errorf("--verify --json: %+v, %v\n%s", res, err, jout)
	}
	// --dry-run --verify reads and authenticates every chunk it would
	// restore and writes nothing.
	dry := filepath.Join(t.TempDir(), "dry")
	out = mustCoffer(t, e, "restore", "latest", "--target", dry, "--exclude", "*.iso", "--dry-run", "--verify")
	if !strings.Contains(out, "verified 6 files: every chunk read and authenticated") || !strings.Contains(out, "nothing was written") {
		t.Errorf("--dry-run --verify output:\n%s", out)
	}
	if _, err := os.Lstat(dry); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--dry-run --verify created the target: %v", err)
	}
	if _, errOut, code := coffer(t, e, "restore", "latest", "--target", t.TempDir(), "--exclude", "a/[b"); code != exitFailure {
		t.Errorf("bad pattern: exit %d %s", code, errOut)
	}
}
