package engine_test

// Attacks on the vault's settings by a catalog writer (docs/format.md
// §8.4): the settings row is bound to the newest settings entry of the
// MAC'd snapshot chain, so an edited row, an older row put back, or a
// chain cut back to an older settings entry is refused, and every
// decision that reads the settings (forget, prune, a settings change)
// deletes nothing.

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// settingsRefused asserts that every decision reading v's settings is
// refused with ErrCorrupt naming words, and that snapshot snap is still
// live afterwards.
func settingsRefused(t *testing.T, e *env, snap vault.ID, pin engine.ChainPin, words ...string) {
	t.Helper()
	named := func(what string, err error) {
		t.Helper()
		if err == nil || !errors.Is(err, vault.ErrCorrupt) {
			t.Errorf("%s: %v; want ErrCorrupt", what, err)
			return
		}
		for _, w := range words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want it to name %q", what, err, w)
			}
		}
	}
	v := reopen(t, e, pin)
	_, err := v.Settings(ctx)
	named("Settings", err)
	if rep, err := v.Check(ctx, engine.CheckOptions{}); err != nil || rep.OK() {
		t.Errorf("check after the settings attack: %v, %v; want errors", rep, err)
	} else if !slices.ContainsFunc(rep.Errors, func(m string) bool { return strings.Contains(m, words[0]) }) {
		t.Errorf("check errors %q; want one naming %q", rep.Errors, words[0])
	}
	_, err = v.Forget(ctx, []vault.ID{snap}, "mallory")
	named("Forget", err)
	e.clock.advance(400 * 24 * time.Hour)
	_, err = v.Prune(ctx, engine.PruneOptions{Principal: "mallory"})
	named("Prune", err)
	_, _, _, err = v.ChangeSettings(ctx, func(s *vault.VaultSettings) { s.MinRetention = time.Hour }, "mallory", true)
	named("ChangeSettings", err)
	// Nothing was deleted: the snapshot is still live in the catalog.
	var deleted any
	if err := attackerSQL(t, e).QueryRow(`SELECT deleted FROM snapshots WHERE id = ?`, snap[:]).Scan(&deleted); err != nil || deleted != nil {
		t.Errorf("snapshot %s after the refused decisions: deleted %v, %v; want live", snap.Short(), deleted, err)
	}
}

func TestAttackSettingsEdited(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		name   string
		before func(*vault.VaultSettings) // what a key holder set
		sql    string                     // what the catalog writer did
	}{
		{"locked to disabled", func(s *vault.VaultSettings) { s.Immutability = vault.ImmutabilityLocked },
			`UPDATE vault_settings SET immutability = 'disabled', soft_delete = 'on'`},
		{"enabled to disabled", func(s *vault.VaultSettings) { s.Immutability = vault.ImmutabilityEnabled },
			`UPDATE vault_settings SET immutability = 'disabled'`},
		{"soft delete days shortened", func(s *vault.VaultSettings) { s.SoftDeleteDays = 180 },
			`UPDATE vault_settings SET soft_delete_days = 14`},
		{"always-on soft delete turned off", func(s *vault.VaultSettings) { s.SoftDelete = vault.SoftDeleteAlwaysOn },
			`UPDATE vault_settings SET soft_delete = 'off'`},
		{"minimum retention shortened", func(s *vault.VaultSettings) { s.MinRetention = 90 * day },
			`UPDATE vault_settings SET min_retention_ns = 0`},
		{"dedup scope source to vault", func(s *vault.VaultSettings) { s.DedupScope = vault.DedupScopeSource },
			`UPDATE vault_settings SET dedup_scope = 'vault'`},
		{"made single-user", nil, `UPDATE vault_settings SET single_user = 1`},
		{"policy replaced", nil, `UPDATE vault_settings SET policy = '{"keep_last":1}'`},
		{"row deleted (defaults)", func(s *vault.VaultSettings) { s.SoftDeleteDays = 60 }, `DELETE FROM vault_settings`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			v := create(t, e)
			snap := snapshotOf(t, v, "h", []byte("keep me"))
			s, err := v.Settings(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.before != nil {
				tc.before(&s)
			}
			// A key holder's write (as vault create or an approved change).
			if err := v.InitSettings(ctx, s, "owner"); err != nil {
				t.Fatal(err)
			}
			if _, err := v.Settings(ctx); err != nil {
				t.Fatalf("the owner's own settings do not verify: %v", err)
			}
			v.Close()
			execSQL(t, attackerSQL(t, e), tc.sql)
			settingsRefused(t, e, snap.ID, nil, "changed outside coffer", "restore the catalog from a copy you trust")
		})
	}
}

// Rollback: the catalog writer puts back an older row that a key holder
// really wrote (its settings entry verifies), from before immutability
// was locked.
func TestAttackSettingsRolledBackRow(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	snap := snapshotOf(t, v, "h", []byte("keep me"))
	if _, _, _, err := v.ChangeSettings(ctx, func(s *vault.VaultSettings) { s.SoftDeleteDays = 30 }, "owner", true); err != nil {
		t.Fatal(err)
	}
	db := attackerSQL(t, e)
	var days int64
	var imm, soft string
	var updated int64
	if err := db.QueryRow(`SELECT soft_delete, soft_delete_days, immutability, updated FROM vault_settings`).Scan(&soft, &days, &imm, &updated); err != nil {
		t.Fatal(err)
	}
	e.clock.advance(time.Hour)
	lock(t, v)
	v.Close()
	execSQL(t, db, `UPDATE vault_settings SET soft_delete = ?, soft_delete_days = ?, immutability = ?, updated = ?`, soft, days, imm, updated)
	settingsRefused(t, e, snap.ID, nil, "changed outside coffer", "chain entry", "restore the catalog from a copy you trust")
}

// Rollback of the chain itself: the catalog writer also deletes the
// settings entry that locked the vault (the newest entry), so that the
// older row matches the newest remaining one. The pin of what this
// machine saw catches it.
func TestAttackSettingsChainCutBack(t *testing.T) {
	e := newEnv(t, nil)
	pin := &memPin{}
	v := create(t, e)
	snap := snapshotOf(t, v, "h", []byte("keep me"))
	v.Close()
	v = reopen(t, e, pin)
	db := attackerSQL(t, e)
	var soft, imm string
	var days, updated int64
	if err := db.QueryRow(`SELECT soft_delete, soft_delete_days, immutability, updated FROM vault_settings`).Scan(&soft, &days, &imm, &updated); err != nil {
		t.Fatal(err)
	}
	lock(t, v)
	if _, err := v.Settings(ctx); err != nil {
		t.Fatal(err)
	}
	var head int64
	if err := db.QueryRow(`SELECT max(seq) FROM snapshot_chain`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyChain(ctx); err != nil { // pins the head
		t.Fatal(err)
	}
	v.Close()
	execSQL(t, db, `DELETE FROM snapshot_chain WHERE seq = ? AND kind = 7`, head)
	execSQL(t, db, `UPDATE vault_settings SET soft_delete = ?, soft_delete_days = ?, immutability = ?, updated = ?`, soft, days, imm, updated)
	settingsRefused(t, e, snap.ID, pin, "rolled back")
}

// A vault upgraded from format 1 gets its settings bound at the first
// open by a key holder; an edit after that is refused.
func TestAttackSettingsAfterUpgrade(t *testing.T) {
	e := v1Env(t)
	v, err := engine.Open(ctx, e.v1Opts())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Settings(ctx); err != nil {
		t.Fatalf("settings after the upgrade: %v", err)
	}
	live, err := v.Snapshots(ctx)
	if err != nil || len(live) == 0 {
		t.Fatalf("Snapshots: %v, %v", live, err)
	}
	v.Close()
	db := attackerSQL(t, e)
	if _, err := db.Exec(`INSERT INTO vault_settings (vault, soft_delete, soft_delete_days, immutability, min_retention_ns, single_user, policy, updated, dedup_scope)
		SELECT id, 'on', 14, 'disabled', 0, 1, '', 1, 'vault' FROM vaults WHERE true
		ON CONFLICT (vault) DO UPDATE SET single_user = 1`); err != nil {
		t.Fatal(err)
	}
	w, err := engine.Open(ctx, e.v1Opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Settings(ctx); !errors.Is(err, vault.ErrCorrupt) || !strings.Contains(err.Error(), "changed outside coffer") {
		t.Errorf("Settings after the catalog writer made the upgraded vault single-user: %v; want ErrCorrupt", err)
	}
}

// lock enables, then locks immutability, as a key holder would.
func lock(t *testing.T, v *engine.Vault) {
	t.Helper()
	for _, m := range []vault.Immutability{vault.ImmutabilityEnabled, vault.ImmutabilityLocked} {
		if _, _, _, err := v.ChangeSettings(ctx, func(s *vault.VaultSettings) { s.Immutability = m }, "owner", true); err != nil {
			t.Fatal(err)
		}
	}
}

// A long-lived vault without a pin (a server's) verifies only the chain
// entries added since its last verification of the settings: edits of
// the row and entries appended since are still checked, and a chain cut
// back behind what it verified is refused as a rollback, as a pin would
// refuse it.
func TestAttackSettingsCutBackUnderRunningServer(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	defer v.Close()
	snapshotOf(t, v, "h", []byte("keep me"))
	db := attackerSQL(t, e)
	var soft, imm string
	var days, updated int64
	if err := db.QueryRow(`SELECT soft_delete, soft_delete_days, immutability, updated FROM vault_settings`).Scan(&soft, &days, &imm, &updated); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Settings(ctx); err != nil { // the first, full verification
		t.Fatal(err)
	}
	// Appends through the vault are read incrementally and verify.
	snapshotOf(t, v, "h", []byte("more"))
	lock(t, v)
	s, err := v.Settings(ctx)
	if err != nil || s.Immutability != vault.ImmutabilityLocked {
		t.Fatalf("settings after lock: %+v, %v", s, err)
	}
	// An edited row is refused on the incremental path too.
	execSQL(t, db, `UPDATE vault_settings SET immutability = 'disabled', soft_delete = 'on'`)
	if _, err := v.Settings(ctx); !errors.Is(err, vault.ErrCorrupt) || !strings.Contains(err.Error(), "changed outside coffer") {
		t.Fatalf("edited row under a running vault: %v", err)
	}
	// Cut the chain back to before the lock and put the older row back:
	// a fresh verification would accept it; this vault saw the newer head.
	var head int64
	if err := db.QueryRow(`SELECT max(seq) FROM snapshot_chain`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	execSQL(t, db, `DELETE FROM snapshot_chain WHERE seq = ? AND kind = 7`, head)
	execSQL(t, db, `UPDATE vault_settings SET soft_delete = ?, soft_delete_days = ?, immutability = ?, updated = ?`, soft, days, imm, updated)
	if _, err := v.Settings(ctx); !errors.Is(err, vault.ErrCorrupt) || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("chain cut back under a running vault: %v; want a refusal naming the rollback", err)
	}
}
