package engine_test

// Attacks on the queried blob index (docs/format.md §4.2): a catalog
// writer edits the packs' lookup keys, which a vault no longer loads
// wholesale but queries. What a query returns is a hint: a blob is found
// only in the sealed header copy of a pack it names, so an edited row
// can make a blob look absent (a backup stores it again; a reader fails
// loudly), never make wrong bytes be read, nor make a backup skip data
// the vault does not hold, nor make prune drop what a snapshot needs.

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// indexFixture stores two blobs in two packs and returns them with their
// packs' IDs.
type indexFixture struct {
	e     *env
	data  [][]byte
	blobs []vault.ID
	packs [][]byte // pack IDs as the catalog stores them, blob i in packs[i]
}

func newIndexFixture(t *testing.T) *indexFixture {
	t.Helper()
	f := &indexFixture{e: newEnv(t, nil), data: [][]byte{randBytes(11, 3000), randBytes(12, 5000)}}
	v := create(t, f.e)
	for _, d := range f.data {
		id, _ := save(t, v, d)
		f.blobs = append(f.blobs, id)
		flush(t, v)
	}
	for _, id := range f.blobs {
		r, ok := v.Lookup(vault.DataBlob, id)
		if !ok {
			t.Fatalf("blob %s not found after its flush", id.Short())
		}
		f.packs = append(f.packs, bytes.Clone(r.Pack[:]))
	}
	v.Close()
	return f
}

// snapshotOf records a snapshot whose root holds blob id as one file.
func snapshotOfBlob(t *testing.T, v *engine.Vault, id vault.ID, size int) vault.SnapshotRecord {
	t.Helper()
	root, err := v.SaveTree(ctx, &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("f"), Perm: 0o644, Size: uint64(size), Content: []vault.ID{id}}}})
	if err != nil {
		t.Fatal(err)
	}
	flush(t, v)
	s, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart, Host: "h", Paths: []string{"/f"}, Tree: root, Files: 1})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A catalog writer swaps two blobs' lookup keys between their packs: each
// key now names the pack that does not hold its blob. Reads fail (the
// blob is not in the header of the pack named), never return the other
// blob's bytes; a backup does not deduplicate against the wrong pack but
// stores the blob again, readable; repair writes the keys back.
func TestAttackIndexKeyRedirect(t *testing.T) {
	f := newIndexFixture(t)
	db := attackerSQL(t, f.e)
	var nums [2]int64
	for i, p := range f.packs {
		if err := db.QueryRow(`SELECT num FROM pack_keys WHERE pack = ?`, p).Scan(&nums[i]); err != nil {
			t.Fatalf("read pack_keys: %v", err)
		}
	}
	execSQL(t, db, `UPDATE blob_keys SET num = -1 WHERE num = ?`, nums[0])
	execSQL(t, db, `UPDATE blob_keys SET num = ? WHERE num = ?`, nums[0], nums[1])
	execSQL(t, db, `UPDATE blob_keys SET num = ? WHERE num = -1`, nums[1])

	// Each blob on a fresh handle, whose cache holds nothing yet (once a
	// pack's header is opened, its blobs are found in it, rightly).
	for i, id := range f.blobs {
		w := reopen(t, f.e, nil)
		got, err := w.LoadBlob(ctx, vault.DataBlob, id, nil)
		if err == nil {
			if !bytes.Equal(got, f.data[i]) {
				t.Fatalf("LoadBlob(%s) through a redirected key returned other bytes", id.Short())
			}
			t.Errorf("LoadBlob(%s) through a redirected key found it", id.Short())
		} else if !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("LoadBlob(%s) through a redirected key: %v, want ErrNotFound", id.Short(), err)
		}
		w.Close()
		w = reopen(t, f.e, nil)
		if w.Has(vault.DataBlob, id) {
			t.Errorf("Has(%s) through a redirected key: true, want false (the named pack does not hold it)", id.Short())
		}
		w.Close()
	}
	v := reopen(t, f.e, nil)
	// A backup of the same data stores it again and can read it back.
	isNew, err := v.SaveBlob(ctx, vault.DataBlob, f.blobs[0], v.Codec().Encode(nil, f.data[0]), len(f.data[0]))
	if err != nil || !isNew {
		t.Fatalf("SaveBlob after the redirect: new %v, %v; want it stored again", isNew, err)
	}
	flush(t, v)
	if got, err := v.LoadBlob(ctx, vault.DataBlob, f.blobs[0], nil); err != nil || !bytes.Equal(got, f.data[0]) {
		t.Errorf("LoadBlob of the blob stored again: %v", err)
	}
	v.Close()

	w := reopen(t, f.e, nil)
	rep, err := w.Check(ctx, engine.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rep.Errors, func(s string) bool { return strings.Contains(s, "lookup keys of 2 packs") }) {
		t.Errorf("check does not report the redirected keys: %q", rep.Errors)
	}
	w.Close()
	w = reopen(t, f.e, nil)
	res, err := w.RepairIndex(ctx, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Rekeyed != 2 {
		t.Errorf("RepairIndex rewrote the keys of %d packs, want 2", res.Rekeyed)
	}
	w.Close()
	w = reopen(t, f.e, nil)
	for i, id := range f.blobs {
		if got, err := w.LoadBlob(ctx, vault.DataBlob, id, nil); err != nil || !bytes.Equal(got, f.data[i]) {
			t.Errorf("LoadBlob(%s) after repair: %v", id.Short(), err)
		}
	}
}

// A catalog writer adds lookup rows for a blob the vault does not hold,
// copying a real blob's key to a pack that lacks it, and records a pack
// without a header copy under that key: nothing makes Has, Stored or
// Lookup believe in it.
func TestAttackIndexKeyForged(t *testing.T) {
	f := newIndexFixture(t)
	db := attackerSQL(t, f.e)
	// Blob 0's key also names pack 1, and a forged pack with no header.
	execSQL(t, db, `INSERT INTO blob_keys (key, num) SELECT b.key, k1.num FROM blob_keys b, pack_keys k0, pack_keys k1
		WHERE b.num = k0.num AND k0.pack = ? AND k1.pack = ?`, f.packs[0], f.packs[1])
	forged := bytes.Repeat([]byte{0xAB}, 32)
	execSQL(t, db, `INSERT INTO packs (vault, id, size, dek_version, blobs, created) SELECT vault, ?, 100, 1, 1, 1 FROM pack_keys WHERE pack = ?`, forged, f.packs[0])
	execSQL(t, db, `INSERT INTO pack_keys (vault, pack, keys) SELECT vault, ?, keys FROM pack_keys WHERE pack = ?`, forged, f.packs[0])
	execSQL(t, db, `INSERT INTO blob_keys (key, num) SELECT b.key, (SELECT num FROM pack_keys WHERE pack = ?) FROM blob_keys b, pack_keys k
		WHERE b.num = k.num AND k.pack = ?`, forged, f.packs[0])
	// And the real row goes: only the forged ones are left.
	execSQL(t, db, `DELETE FROM blob_keys WHERE num = (SELECT num FROM pack_keys WHERE pack = ?)`, f.packs[0])

	v := reopen(t, f.e, nil)
	id := f.blobs[0]
	if v.Has(vault.DataBlob, id) || v.Stored(vault.DataBlob, id) {
		t.Errorf("Has/Stored(%s) believe forged lookup rows", id.Short())
	}
	if r, ok := v.Lookup(vault.DataBlob, id); ok {
		t.Errorf("Lookup(%s) believes forged lookup rows: %+v", id.Short(), r)
	}
	if err := v.CheckNewTree(mustEncodeTree(t, id, len(f.data[0]))); err == nil {
		t.Errorf("CheckNewTree accepted a tree whose data only forged rows name")
	}
}

func mustEncodeTree(t *testing.T, id vault.ID, size int) []byte {
	t.Helper()
	b, err := format.EncodeTree(nil, &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("f"), Perm: 0o644, Size: uint64(size), Content: []vault.ID{id}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A catalog writer deletes every lookup row (leaving the packs marked
// as keyed, so that opening does not write them again). Reads fail
// loudly; a backup of the same data stores it again; prune, which reads
// the sealed headers and never the keys, keeps every pack a snapshot
// needs, and after it both snapshots read back whole.
func TestAttackIndexKeysDeleted(t *testing.T) {
	f := newIndexFixture(t)
	v := reopen(t, f.e, nil)
	first := snapshotOfBlob(t, v, f.blobs[0], len(f.data[0]))
	v.Close()

	db := attackerSQL(t, f.e)
	execSQL(t, db, `DELETE FROM blob_keys`)

	v = reopen(t, f.e, nil)
	if _, err := v.LoadBlob(ctx, vault.DataBlob, f.blobs[0], nil); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("LoadBlob with its lookup row deleted: %v, want ErrNotFound", err)
	}
	if _, err := v.LoadTree(ctx, first.Tree); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("LoadTree with its lookup row deleted: %v, want ErrNotFound", err)
	}
	if v.Has(vault.DataBlob, f.blobs[0]) {
		t.Errorf("Has with the lookup row deleted: true")
	}
	second := snapshotOfBlob(t, v, saveAgain(t, v, f.data[0]), len(f.data[0]))
	if _, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"}); err != nil {
		t.Fatal(err)
	}
	v.Close()

	w := reopen(t, f.e, nil)
	if _, err := w.RepairIndex(ctx, false, ""); err != nil {
		t.Fatal(err)
	}
	for _, s := range []vault.SnapshotRecord{first, second} {
		tr, err := w.LoadTree(ctx, s.Tree)
		if err != nil {
			t.Fatalf("snapshot %s after prune: %v", s.ID.Short(), err)
		}
		got, err := w.LoadBlob(ctx, vault.DataBlob, tr.Nodes[0].Content[0], nil)
		if err != nil || !bytes.Equal(got, f.data[0]) {
			t.Errorf("snapshot %s's data after prune: %v", s.ID.Short(), err)
		}
	}
	checkClean(t, w)
}

func saveAgain(t *testing.T, v *engine.Vault, data []byte) vault.ID {
	t.Helper()
	id, isNew := save(t, v, data)
	if !isNew {
		t.Fatalf("SaveBlob with the lookup row deleted: deduplicated against a pack the index cannot find")
	}
	return id
}

// A catalog writer removes a pack's keys altogether (pack_keys too) and
// keeps the pack off the list of packs to index, which is what lets
// opening a vault skip the others (it reads only that list, never every
// pack). The pack's blob then looks absent, as when only its key rows are
// deleted: a reader fails naming it, a backup of the same data stores it
// again (it does not deduplicate against the pack it cannot find), prune
// keeps the pack a snapshot needs (it reads the sealed headers, not the
// keys or the list), check reports the keys, and repair index writes them
// back. A pack on the list, as the schema's upgrade lists every pack an
// older writer recorded without keys, is keyed again on open.
func TestAttackIndexPackUnkeyed(t *testing.T) {
	f := newIndexFixture(t)
	v := reopen(t, f.e, nil)
	first := snapshotOfBlob(t, v, f.blobs[0], len(f.data[0]))
	v.Close()
	db := attackerSQL(t, f.e)
	unkey := func() {
		t.Helper()
		execSQL(t, db, `DELETE FROM blob_keys WHERE num = (SELECT num FROM pack_keys WHERE pack = ?)`, f.packs[0])
		execSQL(t, db, `DELETE FROM pack_keys WHERE pack = ?`, f.packs[0])
	}
	unkey()
	var listed int
	if err := db.QueryRow(`SELECT count(*) FROM unindexed_packs`).Scan(&listed); err != nil || listed != 0 {
		t.Fatalf("packs listed to index: %d, %v; want none", listed, err)
	}

	v = reopen(t, f.e, nil)
	if _, err := v.LoadBlob(ctx, vault.DataBlob, f.blobs[0], nil); !errors.Is(err, vault.ErrNotFound) || !strings.Contains(err.Error(), f.blobs[0].String()) {
		t.Errorf("LoadBlob with its pack unkeyed and unlisted: %v, want ErrNotFound naming the blob", err)
	}
	second := snapshotOfBlob(t, v, saveAgain(t, v, f.data[0]), len(f.data[0]))
	v.Close()
	// Check and prune load the whole index from the sealed headers.
	v = reopen(t, f.e, nil)
	rep, err := v.Check(ctx, engine.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !containsAll(rep.Errors, "lookup keys of 1 packs", "repair index") {
		t.Errorf("check errors %q; want the unkeyed pack reported", rep.Errors)
	}
	if _, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"}); err != nil {
		t.Fatal(err)
	}
	v.Close()
	if _, err := f.e.store.Stat(ctx, vault.Handle{Type: vault.PackObject, Name: vault.ID(f.packs[0]).String()}); err != nil {
		t.Errorf("the unkeyed pack after prune: %v", err)
	}

	w := reopen(t, f.e, nil)
	res, err := w.RepairIndex(ctx, false, "")
	if err != nil || res.Rekeyed == 0 {
		t.Fatalf("repair index: %+v, %v; want the pack rekeyed", res, err)
	}
	for _, s := range []vault.SnapshotRecord{first, second} {
		tr, err := w.LoadTree(ctx, s.Tree)
		if err != nil {
			t.Fatalf("snapshot %s after repair: %v", s.ID.Short(), err)
		}
		got, err := w.LoadBlob(ctx, vault.DataBlob, tr.Nodes[0].Content[0], nil)
		if err != nil || !bytes.Equal(got, f.data[0]) {
			t.Errorf("snapshot %s's data after repair: %v", s.ID.Short(), err)
		}
	}
	checkClean(t, w)
	w.Close()

	// Listed, it is keyed again when the vault opens.
	unkey()
	execSQL(t, db, `INSERT INTO unindexed_packs (vault, pack) SELECT vault, id FROM packs WHERE id = ?`, f.packs[0])
	w = reopen(t, f.e, nil)
	if got, err := w.LoadBlob(ctx, vault.DataBlob, f.blobs[0], nil); err != nil || !bytes.Equal(got, f.data[0]) {
		t.Errorf("LoadBlob after its listed pack's keys were removed: %v", err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM unindexed_packs`).Scan(&listed); err != nil || listed != 0 {
		t.Errorf("packs listed to index after the open keyed them: %d, %v; want none", listed, err)
	}
}
