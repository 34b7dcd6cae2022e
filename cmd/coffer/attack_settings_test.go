package main

// A writer of a local vault's catalog.db edits the settings row
// (docs/format.md §8.4): the CLI refuses every decision that reads them,
// naming the edit, and deletes nothing.

import (
	"os"
	"strings"
	"testing"
)

func TestAttackSettingsCLI(t *testing.T) {
	for _, tc := range []struct {
		name, set, sql string
	}{
		{"immutability enabled to disabled", "--immutability=enabled", `UPDATE vault_settings SET immutability = 'disabled'`},
		{"soft delete days shortened", "--soft-delete-days=90", `UPDATE vault_settings SET soft_delete_days = 14`},
		{"minimum retention removed", "--min-retention=2400h", `UPDATE vault_settings SET min_retention_ns = 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			data := smallData(t)
			id := backupJSON(t, e, data) // creates a single-user vault
			mustCoffer(t, e, "vault", "set", tc.set, "--confirm")
			mustExec(t, catalogSQL(t, e), tc.sql)
			for _, args := range [][]string{
				{"forget", id[:12]},
				{"prune"},
				{"vault", "set", "--soft-delete-days=100", "--confirm"},
				{"vault", "delete", "--confirm"},
			} {
				stderr := failsWith(t, e, "changed outside coffer", args...)
				if !strings.Contains(stderr, "restore the catalog from a copy you trust") {
					t.Errorf("coffer %s: %q does not say what to do", strings.Join(args, " "), stderr)
				}
			}
			if _, err := os.Stat(e.vaultDir()); err != nil {
				t.Fatalf("vault directory after the refused delete: %v", err)
			}
			if snaps := listSnapshots(t, e); len(snaps) != 1 {
				t.Errorf("%d live snapshots, want the 1 kept", len(snaps))
			}
			_, stderr, _ := coffer(t, e, "vault", "show")
			if !strings.Contains(stderr, "changed outside coffer") {
				t.Errorf("vault show does not warn of the edited settings: %q", stderr)
			}
		})
	}
}

// A vault created without --single-user is made single-user by SQL, so
// that a local owner could delete it alone: refused.
func TestAttackSettingsCLIMadeSingleUser(t *testing.T) {
	e := newEnv(t)
	mustCoffer(t, e, "vault", "create", e.vaultDir())
	backupJSON(t, e, smallData(t))
	mustExec(t, catalogSQL(t, e), `UPDATE vault_settings SET single_user = 1`)
	failsWith(t, e, "changed outside coffer", "vault", "delete", "--confirm")
	if _, err := os.Stat(e.vaultDir()); err != nil {
		t.Fatalf("vault directory after the refused delete: %v", err)
	}
}
