package main

// Second-round attacks on storage format 2 from the CLI (issue 12): the
// attacker writes a local vault's catalog.db with SQL and/or its store
// directly, holding no key, and this machine must not lose data, keys or
// the memory of what it saw.

import (
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/keys"
)

func vaultSQL(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestAttackRetireTrustsEditedAnchor: coffer key retire decided which
// platform key versions a vault needs from the catalog's anchor alone,
// which nothing authenticates. Whoever could write a vault's catalog (not
// its store: an object-locked copy, a replica) set the anchor's KEK to
// the version about to become current, and the next rotation deleted the
// version that still wrapped the vault's keyring: every backup of the
// vault was lost for good, even once the catalog was restored. Now the
// anchored generation's own keyring in the store counts too, and an
// anchor that does not match it keeps every version.
func TestAttackRetireTrustsEditedAnchor(t *testing.T) {
	for _, edit := range []struct{ name, sql string }{
		{"kek version", `UPDATE key_anchors SET kek_version = '2'`},
		{"generation beyond the store", `UPDATE key_anchors SET kek_version = '2', generation = 99`},
	} {
		t.Run(edit.name, func(t *testing.T) {
			e := newEnv(t)
			data := smallData(t)
			victim := filepath.Join(t.TempDir(), "victim")
			mustCoffer(t, e, "backup", "--vault", victim, data)
			mustCoffer(t, e, "backup", data) // the default vault, rotated below
			db := vaultSQL(t, victim)
			mustExec(t, db, edit.sql)

			coffer(t, e, "key", "rotate", "--kek") // rewraps the default vault, then retires
			coffer(t, e, "key", "retire")
			if got := keyVersions(t, e.keyFile()); !slices.Contains(got, 1) {
				t.Fatalf("platform key v1 was deleted while the victim's keyring is wrapped by it (key file now %v): its backups are lost", got)
			}
			// The owner restores the catalog's anchor: the vault opens.
			mustExec(t, db, `UPDATE key_anchors SET kek_version = '1', generation = 1`)
			mustCoffer(t, e, "check", "--read-data", "--vault", victim)
		})
	}
}

// TestAttackPinOvertakenByBackups: the pin in $COFFER_HOME/chain is what
// tells this machine that the snapshot list was rolled back. A backup
// does not refuse a list that fails to verify (it only loses its parent),
// and every append advanced the pin to the new head without checking it
// against the pin: after a rollback of two entries, three backups carried
// the chain past the pinned entry and the pin moved onto the attacker's
// chain, so snapshots, restore and check went quiet for good. Now an
// append moves the pin only along a chain that extends it, and a backup
// onto a chain the pin proves rolled back fails, saying so.
func TestAttackPinOvertakenByBackups(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	var ids []string
	for i := range 4 {
		writeFile(t, filepath.Join(src, "f"), []byte{byte(i)}, 0o644)
		ids = append(ids, backupJSON(t, e, src))
	}
	mustCoffer(t, e, "snapshots")
	db := catalogSQL(t, e)
	for _, id := range ids[2:] {
		mustExec(t, db, `DELETE FROM snapshots WHERE hex(id) = upper(?)`, id)
		if err := os.Remove(filepath.Join(e.storeDir(), "snapshots", id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids[2:] { // their entries, the newest of the chain
		mustExec(t, db, `DELETE FROM snapshot_chain WHERE hex(snapshot) = upper(?)`, id)
	}
	for i := range 3 {
		writeFile(t, filepath.Join(src, "f"), []byte{byte(10 + i)}, 0o644)
		coffer(t, e, "backup", src) // cron does not read the output
	}
	wantRefused(t, e, []string{"rolled back"},
		[]string{"snapshots"},
		[]string{"restore", "latest", "--target", t.TempDir()},
		[]string{"check"})
	out, errOut, code := coffer(t, e, "backup", src)
	if code == exitOK || !strings.Contains(errOut, "rolled back") {
		t.Errorf("backup onto a rolled-back snapshot list: exit %d, %s%s; want a failure saying so", code, out, errOut)
	}
}

// TestAttackUseCMKAlreadyWrappedLie: key use-cmk took the store's latest
// keyring generation, unverified, for the truth: a store writer who
// planted a generation naming the customer key (its reference is public:
// the key file's path and a hash of its public key) made use-cmk print
// "the vault's keys are already wrapped by" it and exit 0, while the
// vault stayed under the platform key. Now the vault is opened (and its
// keyring verified against the anchor) before anything is said about it:
// the planted generation does not authenticate and is ignored, and the
// switch is made.
func TestAttackUseCMKAlreadyWrappedLie(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a"), []byte("data\n"), 0o644)
	backupJSON(t, e, src)
	keyFile := rsaKeyFile(t, t.TempDir())
	cmk, err := keys.Open(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ref := cmk.Current()
	names := keyringFiles(t, e)
	b, err := os.ReadFile(filepath.Join(e.storeDir(), "keys", names[len(names)-1]))
	if err != nil {
		t.Fatal(err)
	}
	var kr map[string]any
	if err := json.Unmarshal(b, &kr); err != nil {
		t.Fatal(err)
	}
	gen := uint64(kr["generation"].(float64)) + 1
	kr["generation"] = gen
	kr["kek"] = map[string]any{"provider": ref.Provider, "key_id": ref.KeyID, "version": ref.Version, "alg": "rsa-oaep-sha256"}
	nb, _ := json.Marshal(kr)
	writeFile(t, filepath.Join(e.storeDir(), "keys", format.KeyringName(gen)), nb, 0o600)

	// The planted generation does not authenticate: the open ignores it,
	// and use-cmk really switches, into the generation above it.
	out, errOut, code := coffer(t, e, "key", "use-cmk", keyFile)
	if code != exitOK || strings.Contains(out, "already wrapped") {
		t.Errorf("key use-cmk with a planted keyring naming the key: exit %d\n%s%s; want a switch", code, out, errOut)
	}
	var st struct {
		KEK string `json:"kek"`
		Gen uint64 `json:"keyring_generation"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "key", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Gen != gen+1 || !strings.Contains(st.KEK, ref.KeyID) {
		t.Errorf("key status after use-cmk: %+v; want generation %d under %s", st, gen+1, ref)
	}
	mustCoffer(t, e, "restore", "latest", "--target", t.TempDir())
}
