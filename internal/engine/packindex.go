package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file holds the blob index as format 2 keeps it in the catalog
// (docs/format.md §4.1): a copy of each pack's sealed header, opened
// under the pack's key when the index loads, so that the catalog shows
// no blob's size or position in plaintext.

// upgradePacks copies the sealed header of every pack recorded without
// one (by format 1, or a copy a catalog writer removed) from the pack in
// the store into its record, and drops the pack's rows, if any, then
// records the lookup keys of every pack that has none. A pack missing
// from the store stays without a header (it lists no blob; check
// reports it).
//
// It reads only the packs the catalog finds unindexed (UnindexedPacks),
// so opening a vault costs the same whatever it holds. SECURITY: packs
// without a header are found by the missing header itself; packs
// without keys by a list a catalog writer controls. A pack kept off it
// only goes unkeyed, which costs no data and admits no blob: its blobs
// look absent, so a backup stores them again and a reader fails naming
// them; prune reads every sealed header, never the keys or the list;
// check reports the pack and repair index keys it (docs/format.md §4.2).
func (v *Vault) upgradePacks(ctx context.Context) error {
	var (
		legacy  []vault.PackRecord
		unkeyed []vault.ID
	)
	if err := v.opt.Catalog.UnindexedPacks(ctx, v.rec.ID, func(p vault.PackRecord) error {
		if p.Header == nil {
			legacy = append(legacy, p)
		} else if !p.Keyed {
			unkeyed = append(unkeyed, p.ID)
		}
		return nil
	}); err != nil {
		return err
	}
	if len(legacy) == 0 {
		return v.keyNewPacks(ctx, unkeyed)
	}
	deks, err := v.dekFor(ctx)
	if err != nil {
		return err
	}
	done := 0
	for _, p := range legacy {
		oi, err := v.opt.Store.Stat(ctx, packHandle(p.ID))
		if errors.Is(err, vault.ErrNotFound) {
			// Its blobs are lost with it, and its rows are read by nothing
			// (packBlobs): they go, so that they neither show its sizes
			// nor keep the catalog from being compacted.
			v.log.Warn("a pack recorded by format 1 is missing from the store; run coffer check", "pack", p.ID.Short())
			if err := v.opt.Catalog.SetPackHeader(ctx, v.rec.ID, p.ID, nil); err != nil {
				return fmt.Errorf("upgrade the blob index: %w", err)
			}
			continue
		}
		if err != nil {
			v.log.Warn("cannot read the sealed header of a pack; its blobs are not indexed; run coffer check", "pack", p.ID.Short(), "err", err)
			continue
		}
		ra := &storeReaderAt{ctx: ctx, s: v.opt.Store, h: packHandle(p.ID)}
		_, sealed, err := format.ReadSealedPackHeader(p.ID, ra, oi.Size, deks)
		if err != nil {
			return fmt.Errorf("upgrade the blob index: %w (run coffer check)", err)
		}
		if err := v.opt.Catalog.SetPackHeader(ctx, v.rec.ID, p.ID, sealed); err != nil {
			return fmt.Errorf("upgrade the blob index: %w", err)
		}
		unkeyed = append(unkeyed, p.ID)
		done++
	}
	v.log.Info("upgraded the vault's blob index to format 2", "packs", done)
	return v.keyNewPacks(ctx, unkeyed)
}

// keyNewPacks records the lookup keys of packs ids, which have none.
func (v *Vault) keyNewPacks(ctx context.Context, ids []vault.ID) error {
	if len(ids) == 0 {
		return nil
	}
	n, err := v.keyPackList(ctx, ids, false, false)
	if err != nil {
		return fmt.Errorf("index the vault's packs: %w", err)
	}
	if n > 0 {
		v.log.Info("recorded the lookup keys of the vault's packs", "packs", n)
	}
	return nil
}

// packBlobs returns the blobs of pack p, from the catalog's sealed copy
// of its header; none for a pack without one.
//
// SECURITY: a pack recorded by format 1 without a header copy (left so by
// the upgrade only when the pack was missing from the store) lists no
// blob. Its plaintext blob rows are never read: nothing authenticates
// them, and a catalog writer who knows a blob ID could otherwise make
// backups deduplicate against a pack that does not exist, or shadow a
// blob that does (docs/format.md §4.1).
func packBlobs(p vault.PackRecord, deks format.DEKs) ([]vault.BlobRecord, error) {
	if p.Header == nil {
		return nil, nil
	}
	entries, err := format.OpenPackHeader(p.ID, p.DEKVersion, p.Size, p.Header, deks)
	if err != nil {
		return nil, err
	}
	recs := make([]vault.BlobRecord, len(entries))
	for i, e := range entries {
		recs[i] = vault.BlobRecord{ID: e.ID, Type: e.Type, Pack: p.ID, Offset: e.Offset, Length: e.Length, RawLen: e.RawLen}
	}
	return recs, nil
}

// eachPack calls fn for every catalogued pack with its blobs, opening the
// pack's sealed header. A header that does not open fails the whole read,
// naming the pack: the index would otherwise silently lack its blobs.
func (v *Vault) eachPack(ctx context.Context, fn func(vault.PackRecord, []vault.BlobRecord)) error {
	var packs []vault.PackRecord
	if err := v.opt.Catalog.Packs(ctx, v.rec.ID, func(p vault.PackRecord) error {
		packs = append(packs, p)
		return nil
	}); err != nil {
		return err
	}
	deks, err := v.dekFor(ctx)
	if err != nil {
		return err
	}
	for i, p := range packs {
		recs, err := packBlobs(p, deks)
		if err != nil {
			return fmt.Errorf("load the blob index: %w", err)
		}
		packs[i].Header = nil // done with it: let it go
		fn(p, recs)
	}
	return nil
}

// loadIndex loads the whole index into v.index and v.condemned, adding
// to what they hold, and from then on answers lookups from them (v.full).
func (v *Vault) loadIndex(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.full = true
	return v.eachPack(ctx, func(p vault.PackRecord, recs []vault.BlobRecord) {
		m := v.index
		if !p.Condemned.IsZero() {
			m = v.condemned
		}
		for _, b := range recs {
			m[blobKey{b.ID, b.Type}] = b
		}
	})
}
