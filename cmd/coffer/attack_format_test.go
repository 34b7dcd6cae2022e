package main

// Second-round attacks on storage format 2 from the CLI (issue 12): the
// attacker writes a local vault's catalog.db with SQL and/or its store
// directly, holding no key, and this machine must not lose data, keys or
// the memory of what it saw.

import (
	"database/sql"
	"path/filepath"
	"slices"
	"testing"
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
