package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// RecoverResult is what Recover rebuilt.
type RecoverResult struct {
	Index     *RepairIndexResult
	Snapshots []vault.SnapshotRecord // recovered, in chain order
	// Unreadable names snapshot objects left out: they do not open under
	// the vault's keys (damaged, or not this vault's).
	Unreadable []string
}

// Recover rebuilds a lost catalog's part of vault v from its store and its
// key alone (coffer vault recover, docs/format.md §8.8): Open has already
// recorded the vault from the store's config and anchored its newest
// keyring generation; Recover catalogues every pack whose sealed header
// opens under the vault's keys (RepairIndex) and appends one recover
// entry per snapshot object that opens, with its record, to a chain that
// holds no snapshot yet, in the order of the snapshot's place in the lost
// chain, then its time and ID. Soft deletions were kept only in the lost
// catalog: every snapshot whose object is still in the store comes back
// live. It refuses a vault whose catalog holds any snapshot.
func (v *Vault) Recover(ctx context.Context, principal string) (*RecoverResult, error) {
	entries, rows, err := v.opt.Catalog.SnapshotChain(ctx, v.rec.ID)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	if len(rows) > 0 {
		return nil, fmt.Errorf("recover: %w: the catalog holds %d snapshot(s) of vault %q: recover rebuilds a lost catalog, it never merges into one", vault.ErrExists, len(rows), v.opt.Name)
	}
	for _, e := range entries {
		if e.Kind != vault.ChainSettings {
			return nil, fmt.Errorf("recover: %w: the catalog's snapshot chain of vault %q has entries already (entry %d, %s)", vault.ErrExists, v.opt.Name, e.Seq, e.Kind)
		}
	}
	idx, err := v.RepairIndex(ctx, false, principal)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	res := &RecoverResult{Index: idx}
	type found struct {
		rec  vault.SnapshotRecord
		link format.SnapshotLink
	}
	var snaps []found
	var ids []vault.ID
	err = v.opt.Store.List(ctx, vault.SnapshotObject, func(oi vault.ObjectInfo) error {
		id, err := vault.ParseID(oi.Handle.Name)
		if err != nil {
			res.Unreadable = append(res.Unreadable, fmt.Sprintf("%s: not a snapshot name", oi.Handle.Name))
			return nil
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("recover: list snapshots: %w", err)
	}
	for _, id := range ids {
		rec, link, err := v.loadSnapshotLinked(ctx, id)
		if err != nil {
			if !isDamage(ctx, err) {
				return nil, fmt.Errorf("recover: %w", err)
			}
			res.Unreadable = append(res.Unreadable, err.Error())
			continue
		}
		rec.ID = id
		rec.Deleted, rec.DeletedBy = time.Time{}, ""
		snaps = append(snaps, found{rec: rec, link: link})
	}
	slices.SortFunc(snaps, func(a, b found) int {
		if a.link.Seq != b.link.Seq {
			if a.link.Seq < b.link.Seq {
				return -1
			}
			return 1
		}
		if c := a.rec.Time.Compare(b.rec.Time); c != 0 {
			return c
		}
		return bytes.Compare(a.rec.ID[:], b.rec.ID[:])
	})
	if len(snaps) > 0 {
		ks, err := v.liveKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("recover: %w", err)
		}
		now := v.opt.Now().UTC()
		var head ChainHead
		err = v.opt.Catalog.AppendChain(ctx, v.rec.ID, func(prev vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
			mac := format.NewChainMAC(ks.chain, v.rec.ID)
			es := make([]vault.ChainEntry, len(snaps))
			recs := make([]vault.SnapshotRecord, len(snaps))
			h := prev.MAC
			for i, s := range snaps {
				e := vault.ChainEntry{Seq: prev.Seq + uint64(i) + 1, Kind: vault.ChainRecover, Snapshot: s.rec.ID, Time: now, Principal: principal, Digest: format.SnapshotDigest(s.rec)}
				e.MAC = mac.Sum(h, e)
				h = e.MAC
				es[i], recs[i] = e, s.rec
			}
			head = ChainHead{Seq: es[len(es)-1].Seq, MAC: h}
			return es, recs, nil
		})
		if err != nil {
			if errors.Is(err, vault.ErrExists) || errors.Is(err, vault.ErrConflict) {
				return nil, fmt.Errorf("recover: the catalog changed while it ran (%w): another process uses the vault", err)
			}
			return nil, fmt.Errorf("recover: %w", err)
		}
		v.setLastHead(head)
		for _, s := range snaps {
			res.Snapshots = append(res.Snapshots, s.rec)
		}
	}
	detail := fmt.Sprintf("recover: rebuilt from the store: %d packs, %d snapshots, %d snapshot objects unreadable", len(idx.Added), len(res.Snapshots), len(res.Unreadable))
	if err := v.event(ctx, principal, vault.EventRepair, detail, true); err != nil {
		return res, fmt.Errorf("the vault was recovered, but: %w", err)
	}
	return res, nil
}
