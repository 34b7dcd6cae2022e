package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRollbackAcceptedExplicitly: an owner restores an older copy of a
// local vault directory on purpose. Every command refuses the vault,
// saying what happened and how to accept it; `coffer vault
// accept-rollback` prints how many entries are lost and re-pins, after
// which backups and listings work; a later, unasked-for rollback is
// refused again. On the code as found, the only way out was deleting
// the pin file by hand.
func TestRollbackAcceptedExplicitly(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("one"), 0o644)
	backupJSON(t, e, src)
	saved := filepath.Join(t.TempDir(), "vault-copy")
	copyDir(t, e.vaultDir(), saved)
	for i := range 2 {
		writeFile(t, filepath.Join(src, "f"), []byte{byte(i)}, 0o644)
		backupJSON(t, e, src)
	}
	mustCoffer(t, e, "snapshots")

	// The owner puts the old copy back.
	if err := os.RemoveAll(e.vaultDir()); err != nil {
		t.Fatal(err)
	}
	copyDir(t, saved, e.vaultDir())
	for _, args := range [][]string{{"snapshots"}, {"backup", src}} {
		out, errOut, code := coffer(t, e, args...)
		if code == exitOK {
			t.Fatalf("%v on a rolled-back vault succeeded: %s", args, out)
		}
		if !strings.Contains(errOut, "rolled back") || !strings.Contains(errOut, "coffer vault accept-rollback") {
			t.Errorf("%v refused without saying what happened and how to accept it: %s", args, errOut)
		}
	}

	out := mustCoffer(t, e, "vault", "accept-rollback")
	if !strings.Contains(out, "2 entries") || !strings.Contains(out, "lost") {
		t.Errorf("accept-rollback does not say how many entries are lost: %s", out)
	}
	writeFile(t, filepath.Join(src, "f"), []byte("after"), 0o644)
	backupJSON(t, e, src)
	if out := mustCoffer(t, e, "snapshots"); strings.Count(out, "\n") < 2 {
		t.Errorf("snapshots after the accepted rollback: %s", out)
	}
	if out := mustCoffer(t, e, "vault", "accept-rollback"); !strings.Contains(out, "nothing to accept") {
		t.Errorf("accept-rollback on a sound list: %s", out)
	}

	// Accepting once is not a standing licence: a second rollback (the
	// same old copy again) is refused again.
	if err := os.RemoveAll(e.vaultDir()); err != nil {
		t.Fatal(err)
	}
	copyDir(t, saved, e.vaultDir())
	if _, errOut, code := coffer(t, e, "snapshots"); code == exitOK || !strings.Contains(errOut, "rolled back") {
		t.Errorf("a second rollback after an accepted one is not refused: %d %s", code, errOut)
	}
}
