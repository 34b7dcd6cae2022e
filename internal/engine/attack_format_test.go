package engine_test

// Second-round attacks on storage format 2 (issue 12): what a writer of
// the catalog and/or the store can still do with what it holds and no
// key, played on a real vault.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys/platform"
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

// TestAttackReimportUpgradedVault: a vault upgraded from format 1 whose
// snapshots are all imported holds no version 2 object, so deleting its
// chain from the catalog made the next open take it for a format 1 vault
// and import the snapshot list again, with the soft-delete marks the
// catalog writer chose: the newest snapshot hidden (latest restored old
// data), a forgotten one brought back, and everything verified. Now the
// import runs only while the keyring is format 1 (it comes before the
// format 2 keyring is written), so a format 2 vault with records and no
// chain is refused.
func TestAttackReimportUpgradedVault(t *testing.T) {
	e := v1Env(t)
	v, err := engine.Open(ctx, e.v1Opts())
	if err != nil {
		t.Fatal(err)
	}
	latest, err := v.FindSnapshot(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	db := attackerSQL(t, e)
	execSQL(t, db, `DELETE FROM snapshot_chain`)
	execSQL(t, db, `UPDATE snapshots SET deleted = NULL, deleted_by = NULL WHERE deleted IS NOT NULL`)
	execSQL(t, db, `UPDATE snapshots SET deleted = ?, deleted_by = 'owner' WHERE id = ?`, testStart.UnixNano(), latest.ID[:])

	w, err := engine.Open(ctx, e.v1Opts())
	if err != nil {
		t.Logf("open refused: %v", err)
		return
	}
	defer w.Close()
	if s, err := w.FindSnapshot(ctx, "latest"); err == nil {
		t.Errorf("latest = %s (%s) after the chain was deleted and the list re-imported as the catalog writer left it; the real latest is %s", s.ID.Short(), s.Tags, latest.ID.Short())
	}
	if _, err := w.Snapshots(ctx); err == nil {
		t.Error("the snapshot list verifies after the chain was deleted")
	}
}

// keyringFails is a store whose keyring writes fail: an upgrade cut short
// after its catalog part.
type keyringFails struct{ vault.Store }

func (s keyringFails) Put(ctx context.Context, h vault.Handle, r io.Reader, n int64) error {
	if h.Type == vault.KeyObject {
		return errInjected
	}
	return s.Store.Put(ctx, h, r, n)
}

// The upgrade builds the chain before it writes the format 2 keyring; cut
// short in between, the next open finds the chain beside a format 1
// keyring and finishes.
func TestUpgradeCutShortAfterChain(t *testing.T) {
	e := v1Env(t)
	opt := e.v1Opts()
	opt.Store = keyringFails{e.store}
	if _, err := engine.Open(ctx, opt); !errors.Is(err, errInjected) {
		t.Fatalf("Open with keyring writes failing: %v", err)
	}
	var n int
	if err := attackerSQL(t, e).QueryRow(`SELECT count(*) FROM snapshot_chain WHERE kind <> 7`).Scan(&n); err != nil || n != 3 { // 7: the settings' entry
		t.Fatalf("chain entries after the cut-short upgrade: %d, %v", n, err)
	}
	v, err := engine.Open(ctx, e.v1Opts())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.KeyInfo().KeyringGen < 2 {
		t.Errorf("keyring generation %d: the upgrade did not finish", v.KeyInfo().KeyringGen)
	}
	if head, err := v.VerifyChain(ctx); err != nil || head.Seq != 4 { // 3 imports, the settings' entry
		t.Errorf("VerifyChain = %d, %v", head.Seq, err)
	}
	checkClean(t, v)
}

// TestRotateDEKAfterKeyFileRotated: another process rotated the platform
// key file while this one held the vault open. RotateDEK compared the
// keyring's KEK with the key provider's idea of the current version (the
// old one) but the wrap itself went to the file's new current version, so
// the new generation named v1 while its new DEK was wrapped under v2: the
// vault no longer opened ("wrong key"). Now the new DEK must be wrapped
// by the keyring's own KEK, or nothing is written.
func TestRotateDEKAfterKeyFileRotated(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	snapshotOf(t, v, "h", []byte("before"))
	other, err := platform.Open(filepath.Join(e.dir, "platform.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Rotate(testStart.Add(day)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.RotateDEK(ctx); err != nil {
		t.Logf("RotateDEK refused: %v", err)
	}
	v.Close()
	ks, err := platform.Open(filepath.Join(e.dir, "platform.key"))
	if err != nil {
		t.Fatal(err)
	}
	opt := e.opts()
	opt.Keys = ks
	w, err := engine.Open(ctx, opt)
	if err != nil {
		t.Fatalf("the vault no longer opens after a DEK rotation that raced a key file rotation: %v", err)
	}
	defer w.Close()
	checkClean(t, w)
}

// TestUpgradeMissingPackLeavesNoSizes: a format 1 vault with a pack
// missing from its store kept that pack's plaintext blob rows after the
// upgrade, and because rows were left the catalog was never compacted:
// the exact sizes of every upgraded pack's blobs lingered in free pages.
// Now the rows of a pack missing from the store go too (nothing reads
// them any more), and the catalog is compacted.
func TestUpgradeMissingPackLeavesNoSizes(t *testing.T) {
	e := v1Env(t)
	var packs []vault.Handle
	if err := e.store.List(ctx, vault.PackObject, func(oi vault.ObjectInfo) error {
		packs = append(packs, oi.Handle)
		return nil
	}); err != nil || len(packs) < 2 {
		t.Fatalf("%d packs, %v", len(packs), err)
	}
	if err := e.store.Delete(ctx, packs[0]); err != nil {
		t.Fatal(err)
	}
	v, err := engine.Open(ctx, e.v1Opts())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	db := attackerSQL(t, e)
	var rows, free int
	db.QueryRow(`SELECT count(*) FROM blobs`).Scan(&rows)
	db.QueryRow(`PRAGMA freelist_count`).Scan(&free)
	if rows != 0 || free != 0 {
		t.Errorf("after the upgrade: %d plaintext blob rows, %d free pages (may hold the old rows)", rows, free)
	}
	rep, err := v.Check(ctx, engine.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !containsAll(rep.Errors, packs[0].Name, "missing from the store") {
		t.Errorf("check errors %q; want the missing pack named", rep.Errors)
	}
}
