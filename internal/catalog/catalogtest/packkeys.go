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
