package catalogtest

// Cases for the packs' lookup keys (vault.Catalog's Pack, PacksByKey,
// PackKeys and SetPackKeys; docs/format.md §4.2).

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// packsByKey returns, for each key that any pack has, its packs sorted.
func packsByKey(t *testing.T, c vault.Catalog, v vault.ID, keys []uint64) map[uint64][]vault.ID {
	t.Helper()
	got := map[uint64][]vault.ID{}
	err := c.PacksByKey(t.Context(), v, keys, func(k uint64, p vault.ID) error {
		got[k] = append(got[k], p)
		return nil
	})
	if err != nil {
		t.Fatalf("PacksByKey: %v", err)
	}
	for k := range got {
		slices.SortFunc(got[k], func(a, b vault.ID) int { return bytes.Compare(a[:], b[:]) })
	}
	return got
}

func packKeys(t *testing.T, c vault.Catalog, v vault.ID) map[vault.ID][]uint64 {
	t.Helper()
	got := map[vault.ID][]uint64{}
	err := c.PackKeys(t.Context(), v, func(p vault.ID, keys []uint64) error {
		if _, dup := got[p]; dup {
			t.Errorf("PackKeys: pack %s twice", p.Short())
		}
		got[p] = keys
		return nil
	})
	if err != nil {
		t.Fatalf("PackKeys: %v", err)
	}
	return got
}

func sortedIDs(ids ...vault.ID) []vault.ID {
	ids = slices.Clone(ids)
	slices.SortFunc(ids, func(a, b vault.ID) int { return bytes.Compare(a[:], b[:]) })
	return ids
}

func testPackKeys(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")

	// Keys across the whole uint64 range (stored bit for bit), one shared
	// by two packs, one repeated within a pack.
	p1, _ := newPack(t, 3)
	p1.Keys = []uint64{0, math.MaxUint64, 1 << 63}
	p2, _ := newPack(t, 3)
	p2.Keys = []uint64{1 << 63, 42, 42}
	p3, _ := newPack(t, 1) // recorded without keys, as by an older writer
	p4, _ := newPack(t, 1) // in the other vault, with a key p1 has
	p4.Keys = []uint64{0}
	addPack(t, c, v.ID, p1, nil)
	addPack(t, c, v.ID, p2, nil)
	addPack(t, c, v.ID, p3, nil)
	addPack(t, c, other.ID, p4, nil)

	keyed := map[vault.ID]bool{}
	for _, p := range allPacks(t, c, v.ID) {
		if p.Keys != nil {
			t.Errorf("Packs: pack %s has Keys set: %v", p.ID.Short(), p.Keys)
		}
		keyed[p.ID] = p.Keyed
	}
	equal(t, "Packs' Keyed", keyed, map[vault.ID]bool{p1.ID: true, p2.ID: true, p3.ID: false})

	for _, p := range []vault.PackRecord{p1, p3} {
		got, err := c.Pack(ctx, v.ID, p.ID)
		if err != nil {
			t.Fatalf("Pack(%s): %v", p.ID.Short(), err)
		}
		want := p
		want.Keys = nil
		want.Keyed = p.Keys != nil
		got.Created = got.Created.UTC()
		want.Created = want.Created.UTC()
		got.Condemned, want.Condemned = got.Condemned.UTC(), want.Condemned.UTC()
		equal(t, "Pack", got, want)
	}
	if _, err := c.Pack(ctx, v.ID, p4.ID); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Pack of another vault's pack: %v, want ErrNotFound", err)
	}
	if _, err := c.Pack(ctx, v.ID, newID()); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Pack of an unknown pack: %v, want ErrNotFound", err)
	}

	got := packsByKey(t, c, v.ID, []uint64{0, math.MaxUint64, 1 << 63, 42, 7, 42})
	equal(t, "PacksByKey", got, map[uint64][]vault.ID{
		0: {p1.ID}, math.MaxUint64: {p1.ID}, 1 << 63: sortedIDs(p1.ID, p2.ID), 42: {p2.ID},
	})
	equal(t, "PacksByKey of the other vault", packsByKey(t, c, other.ID, []uint64{0, 42}), map[uint64][]vault.ID{0: {p4.ID}})
	equal(t, "PacksByKey of no key", packsByKey(t, c, v.ID, nil), map[uint64][]vault.ID{})

	// More keys than one query may carry.
	many := make([]uint64, 2000)
	for i := range many {
		many[i] = uint64(i+1) * 0x9E3779B97F4A7C15
	}
	p5, _ := newPack(t, len(many))
	p5.Keys = many
	addPack(t, c, v.ID, p5, nil)
	got = packsByKey(t, c, v.ID, many)
	if len(got) != len(many) {
		t.Errorf("PacksByKey of %d keys found %d", len(many), len(got))
	}

	pk := packKeys(t, c, v.ID)
	equal(t, "PackKeys of p1", pk[p1.ID], p1.Keys)
	equal(t, "PackKeys of p2", pk[p2.ID], p2.Keys)
	equal(t, "PackKeys of p5", pk[p5.ID], p5.Keys)
	if _, ok := pk[p3.ID]; ok {
		t.Errorf("PackKeys lists pack %s, which has none", p3.ID.Short())
	}

	// SetPackKeys gives keys to an unkeyed pack and replaces a keyed one's.
	if err := c.SetPackKeys(ctx, v.ID, p3.ID, []uint64{7}); err != nil {
		t.Fatalf("SetPackKeys: %v", err)
	}
	if err := c.SetPackKeys(ctx, v.ID, p2.ID, []uint64{8}); err != nil {
		t.Fatalf("SetPackKeys: %v", err)
	}
	equal(t, "PacksByKey after SetPackKeys", packsByKey(t, c, v.ID, []uint64{7, 8, 42, 1 << 63}), map[uint64][]vault.ID{
		7: {p3.ID}, 8: {p2.ID}, 1 << 63: {p1.ID},
	})
	if err := c.SetPackKeys(ctx, v.ID, p4.ID, []uint64{9}); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("SetPackKeys of another vault's pack: %v, want ErrNotFound", err)
	}

	// RemovePack takes a pack's keys with it; DeleteVault every pack's.
	if err := c.RemovePack(ctx, v.ID, p1.ID); err != nil {
		t.Fatalf("RemovePack: %v", err)
	}
	equal(t, "PacksByKey after RemovePack", packsByKey(t, c, v.ID, []uint64{0, math.MaxUint64, 1 << 63}), map[uint64][]vault.ID{})
	if err := c.DeleteVault(ctx, v.ID, base.Add(time.Hour)); err != nil {
		t.Fatalf("DeleteVault: %v", err)
	}
	equal(t, "PacksByKey after DeleteVault", packsByKey(t, c, v.ID, many[:10]), map[uint64][]vault.ID{})
	equal(t, "PackKeys after DeleteVault", len(packKeys(t, c, v.ID)), 0)
	equal(t, "the other vault's keys", packsByKey(t, c, other.ID, []uint64{0}), map[uint64][]vault.ID{0: {p4.ID}})
}

// unindexed returns the IDs UnindexedPacks lists, sorted, each checked
// against the pack's record as Pack returns it.
func unindexed(t *testing.T, c vault.Catalog, v vault.ID) []vault.ID {
	t.Helper()
	var ids []vault.ID
	err := c.UnindexedPacks(t.Context(), v, func(p vault.PackRecord) error {
		want, err := c.Pack(t.Context(), v, p.ID)
		if err != nil {
			t.Errorf("UnindexedPacks lists %s, which Pack does not find: %v", p.ID.Short(), err)
		}
		p.Created, want.Created = p.Created.UTC(), want.Created.UTC()
		p.Condemned, want.Condemned = p.Condemned.UTC(), want.Condemned.UTC()
		equal(t, "UnindexedPacks' record of "+p.ID.Short(), p, want)
		if p.Header != nil && p.Keyed {
			t.Errorf("UnindexedPacks lists %s, which has a header and keys", p.ID.Short())
		}
		ids = append(ids, p.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("UnindexedPacks: %v", err)
	}
	return sortedIDs(ids...)
}

// testUnindexedPacks: the packs recorded without a sealed header copy or
// without lookup keys are listed until they have both, whatever call
// gives them what they lack; a removed pack or a deleted vault's are not.
func testUnindexedPacks(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")

	full, _ := newPack(t, 1) // as a backup records it: header and keys
	full.Header, full.Keys = []byte("header of full"), []uint64{1}
	unkeyed, _ := newPack(t, 1) // by a writer before lookup keys
	unkeyed.Header = []byte("header of unkeyed")
	legacy, lblobs := newPack(t, 2) // by format 1: rows, no header, no keys
	bare, _ := newPack(t, 1)        // keys without a header
	bare.Keys = []uint64{2}
	gone, gblobs := newPack(t, 1) // format 1, missing from the store later
	elsewhere, _ := newPack(t, 1) // another vault's
	elsewhere.Header = []byte("header of elsewhere")
	addPack(t, c, v.ID, full, nil)
	addPack(t, c, v.ID, unkeyed, nil)
	addPack(t, c, v.ID, legacy, lblobs)
	addPack(t, c, v.ID, bare, nil)
	addPack(t, c, v.ID, gone, gblobs)
	addPack(t, c, other.ID, elsewhere, nil)
	equal(t, "UnindexedPacks", unindexed(t, c, v.ID), sortedIDs(unkeyed.ID, legacy.ID, bare.ID, gone.ID))
	equal(t, "UnindexedPacks of the other vault", unindexed(t, c, other.ID), []vault.ID{elsewhere.ID})

	// Keys for a pack with a header index it; a header alone or keys
	// alone do not.
	if err := c.SetPackKeys(ctx, v.ID, unkeyed.ID, []uint64{3}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPackHeader(ctx, v.ID, legacy.ID, []byte("header of legacy")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPackKeys(ctx, v.ID, bare.ID, []uint64{4}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPackHeader(ctx, v.ID, gone.ID, nil); err != nil {
		t.Fatal(err)
	}
	equal(t, "UnindexedPacks after a header, keys and a nil header", unindexed(t, c, v.ID), sortedIDs(legacy.ID, bare.ID, gone.ID))
	// The other of the two, in either order, does.
	if err := c.SetPackKeys(ctx, v.ID, legacy.ID, []uint64{5}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPackHeader(ctx, v.ID, bare.ID, []byte("header of bare")); err != nil {
		t.Fatal(err)
	}
	equal(t, "UnindexedPacks after both", unindexed(t, c, v.ID), []vault.ID{gone.ID})

	// A removed pack leaves the list with its record.
	if err := c.RemovePack(ctx, v.ID, gone.ID); err != nil {
		t.Fatalf("RemovePack of an unindexed pack: %v", err)
	}
	equal(t, "UnindexedPacks after RemovePack", len(unindexed(t, c, v.ID)), 0)
	again, _ := newPack(t, 1)
	addPack(t, c, other.ID, again, nil)
	if err := c.DeleteVault(ctx, other.ID, base.Add(time.Hour)); err != nil {
		t.Fatalf("DeleteVault with unindexed packs: %v", err)
	}
	equal(t, "UnindexedPacks of a deleted vault", len(unindexed(t, c, other.ID)), 0)
}

// testPackTotals: the count and total size of a vault's packs, condemned
// ones included, other vaults' not, removed ones no longer.
func testPackTotals(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	totals := func(id vault.ID) [2]int64 {
		t.Helper()
		n, size, err := c.PackTotals(ctx, id)
		if err != nil {
			t.Fatalf("PackTotals: %v", err)
		}
		return [2]int64{int64(n), size}
	}
	equal(t, "PackTotals of a vault without packs", totals(v.ID), [2]int64{0, 0})
	equal(t, "PackTotals of an unknown vault", totals(newID()), [2]int64{0, 0})
	p1, _ := newPack(t, 1) // 1<<40 + 12345 bytes
	p2, _ := newPack(t, 2)
	p2.Size = 7
	p3, _ := newPack(t, 3)
	p3.Size = 1000
	addPack(t, c, v.ID, p1, nil)
	addPack(t, c, v.ID, p2, nil)
	addPack(t, c, other.ID, p3, nil)
	condemnPack(t, c, v.ID, p2.ID, base)
	equal(t, "PackTotals", totals(v.ID), [2]int64{2, 1<<40 + 12345 + 7})
	equal(t, "PackTotals of the other vault", totals(other.ID), [2]int64{1, 1000})
	if err := c.RemovePack(ctx, v.ID, p1.ID); err != nil {
		t.Fatal(err)
	}
	equal(t, "PackTotals after RemovePack", totals(v.ID), [2]int64{1, 7})
}
