package engine_test

// Second-round attacks on storage format 2 (issue 12): what a writer of
// the catalog and/or the store can still do with what it holds and no
// key, played on a real vault.

import (
	"bytes"
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestAttackLegacyBlobRowsPoisonDedup: format 2 keeps a vault's blob list
// only in sealed header copies, but the index still took format 1's
// plaintext blob rows for any pack recorded without a header copy. A
// catalog writer who knows a blob ID (a root tree ID is in every
// snapshot record; a format 1 catalog listed them all) recorded a pack
// that does not exist, "holding" that blob: the next backup that needed
// the blob deduplicated against it, stored nothing, and its snapshot
// could not be restored. Now rows that no sealed header backs are never
// read.
func TestAttackLegacyBlobRowsPoisonDedup(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	data := []byte("the same file, backed up again later")
	old := snapshotOfAt(t, v, "h", testStart, vault.ID{}, data)
	if _, err := v.Forget(ctx, []vault.ID{old.ID}, "owner"); err != nil {
		t.Fatal(err)
	}
	e.clock.advance(60 * day)
	if _, err := v.Prune(ctx, engine.PruneOptions{Principal: "owner"}); err != nil {
		t.Fatal(err)
	}
	v.Close()
	if reopen(t, e, nil).Has(vault.TreeBlob, old.Tree) {
		t.Fatal("the pruned snapshot's tree is still indexed")
	}

	// The attacker remembers the pruned snapshot's root tree ID (it was in
	// the catalog's snapshot record) and records a pack that "holds" it.
	db := attackerSQL(t, e)
	var fake vault.ID
	fake[0] = 0xfe
	execSQL(t, db, `INSERT INTO packs (vault, id, size, dek_version, blobs, created) SELECT id, ?, 1000, 1, 1, 0 FROM vaults`, fake[:])
	execSQL(t, db, `INSERT INTO blobs (vault, id, type, pack, "offset", length, raw_length) SELECT id, ?, ?, ?, 44, 100, 83 FROM vaults`,
		old.Tree[:], int(vault.TreeBlob), fake[:])

	w := reopen(t, e, nil)
	if w.Has(vault.TreeBlob, old.Tree) {
		t.Error("the index takes a blob from a plaintext row that no sealed header backs")
	}
	again := snapshotOfAt(t, w, "h", testStart.Add(100*day), vault.ID{}, data)
	if again.Tree != old.Tree {
		t.Fatalf("the same data gave another root tree: %s, %s", again.Tree.Short(), old.Tree.Short())
	}
	if _, err := w.LoadTree(ctx, again.Tree); err != nil {
		t.Errorf("the new snapshot cannot be restored: its root tree was deduplicated against a pack the attacker recorded: %v", err)
	}
	rep, err := w.Check(ctx, engine.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !containsAll(rep.Errors, fake.String(), "sealed header") {
		t.Errorf("check errors %q; want the pack without a sealed header copy named", rep.Errors)
	}
}

// TestAttackHeaderlessPackPruned: a pack whose header copy a catalog
// writer removed (and marked condemned long ago) while the vault is open
// lists no blob, so prune must not take it for empty and delete it from
// the store.
func TestAttackHeaderlessPackPruned(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	data := randBytes(7, 50_000)
	s := snapshotOfAt(t, v, "h", testStart, vault.ID{}, data)
	execSQL(t, attackerSQL(t, e), `UPDATE packs SET header = NULL, condemned = ?`, testStart.Add(-100*day).UnixNano())
	if _, err := v.Prune(ctx, engine.PruneOptions{Principal: "owner"}); err != nil {
		t.Logf("prune: %v", err)
	}
	if n := len(packSizes(t, e.store)); n != 2 {
		t.Fatalf("prune deleted packs it could not see into: %d of 2 left in the store", n)
	}
	v.Close()
	w := reopen(t, e, nil) // the header copies come back from the store
	if _, err := w.LoadTree(ctx, s.Tree); err != nil {
		t.Error(err)
	}
	if b := load(t, w, w.BlobID(data)); !bytes.Equal(b, data) {
		t.Error("data differs")
	}
}
