package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAttackRepairIndexPlantedPacks: someone with write access to the
// store plants packs: garbage under a valid pack name, and a genuine pack
// of another vault (authentic, under other keys). repair index adds
// neither (only a header that opens under this vault's keys is indexed),
// lists them, and the vault's own data is untouched.
func TestAttackRepairIndexPlantedPacks(t *testing.T) {
	other := newEnv(t)
	backupJSON(t, other, smallData(t))
	var foreign string
	filepath.Walk(filepath.Join(other.storeDir(), "packs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && foreign == "" {
			foreign = p
		}
		return err
	})

	e := newEnv(t)
	src := smallData(t)
	backupJSON(t, e, src)
	garbage := strings.Repeat("ab", 32)
	writeFile(t, packFile(e, garbage), randBytes(9, 5000), 0o600)
	b, err := os.ReadFile(foreign)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, packFile(e, filepath.Base(foreign)), b, 0o600)

	out, errOut, code := coffer(t, e, "repair", "index", "--json")
	if code != exitOK {
		t.Fatalf("repair index: exit %d %s", code, errOut)
	}
	var r struct {
		Added []string `json:"added"`
		Left  []string `json:"left"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Added) != 0 || len(r.Left) != 2 {
		t.Errorf("planted packs: added %v, left %v", r.Added, r.Left)
	}
	// Nothing indexed from them: the vault's own data is as it was.
	mustCoffer(t, e, "check", "--read-data")
	target := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", target)
	assertSameTree(t, src, filepath.Join(target, src))
}

// TestAttackRepairedPairForgedInCatalog: on a vault with a forgotten,
// damaged snapshot, a catalog writer edits another snapshot's row to look
// like its repaired copy (parent and time). check still fails, naming the
// damaged snapshot's loss as an error: which snapshots a repair replaced
// is read from sealed objects, never from rows.
func TestAttackRepairedPairForgedInCatalog(t *testing.T) {
	e := newEnv(t)
	src, snaps := spreadData(t, e)
	v := openTestVault(t, e)
	uses := usesOf(t, v.Vault, mustParseID(t, listSnapshots(t, e)[2].Tree))
	v.Close()
	pack, _ := damagedPack(t, uses, src)
	packDamage[0].do(t, packFile(e, pack.String()), nil)
	mustCoffer(t, e, "repair", "index")
	mustCoffer(t, e, "forget", snaps[1][:8], snaps[2][:8])
	db := catalogSQL(t, e)
	var tm int64
	if err := db.QueryRow(`SELECT time FROM snapshots WHERE hex(id) = upper(?)`, snaps[2]).Scan(&tm); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, `UPDATE snapshots SET parent = (SELECT id FROM snapshots WHERE hex(id) = upper(?)), time = ? WHERE hex(id) = upper(?)`, snaps[2], tm, snaps[0])
	out, errOut, code := coffer(t, e, "check")
	if code != exitFailure {
		t.Fatalf("check passes on a forged repair pair: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "error: snapshot "+snaps[2][:8]+": ") || strings.Contains(errOut, "replaced by repaired snapshot") {
		t.Errorf("check took the forged row for a repair:\n%s", errOut)
	}
}

// TestRepairUnderDeletionProtection: with a minimum retention the
// originals may not be forgotten: repair adds the repaired copies, keeps
// the originals live, says why, and exits 3.
func TestRepairUnderDeletionProtection(t *testing.T) {
	e := newEnv(t)
	src, snaps := spreadData(t, e)
	v := openTestVault(t, e)
	uses := usesOf(t, v.Vault, mustParseID(t, listSnapshots(t, e)[2].Tree))
	v.Close()
	pack, _ := damagedPack(t, uses, src)
	packDamage[0].do(t, packFile(e, pack.String()), nil)
	mustCoffer(t, e, "vault", "set", "--min-retention", "30d")
	mustCoffer(t, e, "repair", "index")
	out, errOut, code := coffer(t, e, "repair", "snapshots")
	if code != exitPartial || !strings.Contains(errOut, "stays, damaged") || !strings.Contains(out, "repaired as snapshot") {
		t.Fatalf("repair under protection: exit %d\n%s%s", code, out, errOut)
	}
	live := map[string]bool{}
	for _, s := range listSnapshots(t, e) {
		live[s.ID] = true
	}
	if len(live) != 5 || !live[snaps[1]] || !live[snaps[2]] {
		t.Errorf("live snapshots after repair under protection: %v", live)
	}
	// The originals are still damaged, and check says so.
	if _, _, code := coffer(t, e, "check"); code != exitFailure {
		t.Errorf("check passes with damaged originals live")
	}
}
