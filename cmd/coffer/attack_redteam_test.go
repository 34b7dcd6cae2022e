package main

// Second-round attacker tests from the CLI (redteam): what the first
// round's fixes of issues 11 and 12 still let through.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A catalog writer truncates the snapshot list (newest entry, its row and
// its object gone). The machine's pin notices on a listing; but backups
// went on silently on the rolled-back list (their parent lookup swallowed
// the error), and once they had appended past the pin's entry number the
// pin was overwritten with the forked chain's head: the rollback was
// buried. A backup must refuse a list that contradicts the pin, and the
// pin must never move to a chain that does not extend it.
func TestAttackRedteamBackupBuriesRollback(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	var ids []string
	for i := range 3 {
		writeFile(t, filepath.Join(src, "f"), []byte{byte(i)}, 0o644)
		ids = append(ids, backupJSON(t, e, src))
	}
	mustCoffer(t, e, "snapshots")
	db := catalogSQL(t, e)
	mustExec(t, db, `DELETE FROM snapshots WHERE hex(id) = upper(?)`, ids[2])
	mustExec(t, db, `DELETE FROM snapshot_chain WHERE hex(snapshot) = upper(?)`, ids[2]) // the newest entry
	if err := os.Remove(filepath.Join(e.storeDir(), "snapshots", ids[2])); err != nil {
		t.Fatal(err)
	}
	// The owner keeps backing up, as a cron job would.
	refused := 0
	for i := range 3 {
		writeFile(t, filepath.Join(src, "f"), []byte{byte(10 + i)}, 0o644)
		out, errOut, code := coffer(t, e, "backup", src)
		if code != exitOK {
			refused++
			if !strings.Contains(out+errOut, "rolled back") {
				t.Errorf("backup refused, but not naming the rollback: %s%s", out, errOut)
			}
		}
	}
	if refused == 0 {
		t.Errorf("3 backups onto a rolled-back snapshot list all succeeded silently")
	}
	wantRefused(t, e, []string{"rolled back"}, []string{"snapshots"})
}
