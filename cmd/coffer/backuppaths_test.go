package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --- backup: paths are checked before anything is created ---------------

// TestBackupOnlyMissingPathCreatesNothing: a backup of nothing that exists
// fails before it makes a vault or a key file.
func TestBackupOnlyMissingPathCreatesNothing(t *testing.T) {
	e := newEnv(t)
	missing := filepath.Join(t.TempDir(), "does-not-exist")
	other := filepath.Join(t.TempDir(), "nor-this")
	out, errOut, code := coffer(t, e, "backup", missing, other)
	if code != exitFailure {
		t.Fatalf("backup of missing paths only: exit %d, want 1\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, missing) || !strings.Contains(errOut, other) {
		t.Errorf("the message does not name every missing path: %q", errOut)
	}
	for _, p := range []string{e.vaultDir(), e.keyFile(), filepath.Dir(e.keyFile())} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("a backup that backed up nothing created %s", p)
		}
	}
	if strings.Contains(errOut, "created vault") {
		t.Errorf("claims to have created a vault: %q", errOut)
	}
}

// TestBackupSomePathsMissing: a missing path among several is a warning;
// the rest is backed up and the exit code is 3, like an unreadable file.
func TestBackupSomePathsMissing(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	missing := filepath.Join(t.TempDir(), "does-not-exist")
	out, errOut, code := coffer(t, e, "backup", data, missing)
	if code != exitPartial {
		t.Fatalf("backup with one missing path: exit %d, want 3\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "warning: "+missing+":") {
		t.Errorf("no warning names the missing path %s: %q", missing, errOut)
	}
	if !strings.Contains(out, "saved") {
		t.Errorf("no snapshot saved: %q", out)
	}
	snaps := listSnapshots(t, e)
	if len(snaps) != 1 || len(snaps[0].Paths) != 1 || snaps[0].Paths[0] != data {
		t.Fatalf("snapshots: %+v, want one of %s alone", snaps, data)
	}
	if l := mustCoffer(t, e, "ls", "latest"); !strings.Contains(l, filepath.Join(data, "docs", "b.txt")) {
		t.Errorf("the existing path was not backed up:\n%s", l)
	}
}
