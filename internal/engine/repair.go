package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file repairs a damaged vault in place, with restic's rules: a
// repair never makes more data unreadable than is already lost, and says
// what it dropped (docs/operations.md, "Repairing a vault").

// RepairIndexResult is what RepairIndex found, and did unless DryRun.
type RepairIndexResult struct {
	// Added: packs in the store the catalog did not list, whose sealed
	// header opens under the vault's keys; now catalogued.
	Added []vault.ID
	// Fixed: catalogued packs whose record (header copy, size or DEK
	// version) differed from the pack's own; the record is the pack's now.
	Fixed []vault.ID
	// Removed: records of packs missing from the store (their blobs
	// were lost already).
	Removed []vault.ID
	// Left: packs whose own header does not open (truncated, damaged):
	// nothing is changed for them; check names them.
	Left []string
	// Rekeyed: packs whose lookup keys in the catalog (docs/format.md
	// §4.2) differed from their sealed header's and were written again.
	Rekeyed int
}

// Changed reports whether the index needed (or got) a change.
func (r *RepairIndexResult) Changed() bool {
	return len(r.Added)+len(r.Fixed)+len(r.Removed)+r.Rekeyed > 0
}

// packHeaderInStore reads pack id's own sealed header from the store and
// authenticates it: the record it should have. The DEK version is the
// prefix's (docs/format.md §4: bytes 8–12 of the pack), which the header
// authenticates as well.
func (v *Vault) packHeaderInStore(ctx context.Context, id vault.ID, size int64, deks format.DEKs) (vault.PackRecord, error) {
	ra := &storeReaderAt{ctx: ctx, s: v.opt.Store, h: packHandle(id)}
	entries, sealed, err := format.ReadSealedPackHeader(id, ra, size, deks)
	if err != nil {
		return vault.PackRecord{}, err
	}
	var pre [12]byte
	if _, err := ra.ReadAt(pre[:], 0); err != nil {
		return vault.PackRecord{}, fmt.Errorf("pack %s: read prefix: %w", id, err)
	}
	keys := make([]uint64, len(entries))
	for i, e := range entries {
		keys[i] = v.lookupKey(e.Type, e.ID)
	}
	return vault.PackRecord{ID: id, Size: size, DEKVersion: binary.LittleEndian.Uint32(pre[8:12]), Blobs: len(entries), Header: sealed, Keys: keys}, nil
}

// RepairIndex rebuilds the catalog's blob index from the packs in the
// store: a pack the catalog lacks is added from its own sealed header
// (only a header that authenticates under the vault's keys: someone with
// write access to the store cannot add blobs), a record that differs
// from its pack is replaced by the pack's, and the record of a pack
// missing from the store is removed. Packs whose own header does not
// open are left as they are. With dryRun nothing is changed.
//
// A backup running meanwhile may find the pack it just stored catalogued
// already and fail (loudly): run it when no backup is.
func (v *Vault) RepairIndex(ctx context.Context, dryRun bool, principal string) (*RepairIndexResult, error) {
	if err := v.checkSession(); err != nil {
		return nil, err
	}
	res := &RepairIndexResult{}
	stored := map[vault.ID]int64{}
	if err := v.opt.Store.List(ctx, vault.PackObject, func(oi vault.ObjectInfo) error {
		if id, err := vault.ParseID(oi.Handle.Name); err == nil {
			stored[id] = oi.Size
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("repair index: list packs: %w", err)
	}
	var packs []vault.PackRecord
	if err := v.opt.Catalog.Packs(ctx, v.rec.ID, func(p vault.PackRecord) error {
		packs = append(packs, p)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("repair index: catalog packs: %w", err)
	}
	deks, err := v.dekFor(ctx)
	if err != nil {
		return nil, fmt.Errorf("repair index: %w", err)
	}
	catalogued := map[vault.ID]bool{}
	type change struct {
		remove bool
		add    *vault.PackRecord
	}
	changes := map[vault.ID]change{}
	for _, p := range packs {
		catalogued[p.ID] = true
		size, ok := stored[p.ID]
		if !ok {
			res.Removed = append(res.Removed, p.ID)
			changes[p.ID] = change{remove: true}
			continue
		}
		own, err := v.packHeaderInStore(ctx, p.ID, size, deks)
		if err != nil {
			if !isDamage(ctx, err) {
				return nil, fmt.Errorf("repair index: %w", err)
			}
			res.Left = append(res.Left, err.Error())
			continue
		}
		if p.Size != own.Size || p.DEKVersion != own.DEKVersion || !bytes.Equal(p.Header, own.Header) {
			own.Created, own.Condemned = p.Created, p.Condemned
			res.Fixed = append(res.Fixed, p.ID)
			changes[p.ID] = change{remove: true, add: &own}
		}
	}
	for id, size := range stored {
		if catalogued[id] {
			continue
		}
		own, err := v.packHeaderInStore(ctx, id, size, deks)
		if err != nil {
			if !isDamage(ctx, err) {
				return nil, fmt.Errorf("repair index: %w", err)
			}
			res.Left = append(res.Left, fmt.Sprintf("%v (in the store, not catalogued: left out of the index)", err))
			continue
		}
		own.Created = v.opt.Now().UTC()
		res.Added = append(res.Added, id)
		changes[id] = change{add: &own}
	}
	for _, l := range [][]vault.ID{res.Added, res.Fixed, res.Removed} {
		sort.Slice(l, func(i, j int) bool { return bytes.Compare(l[i][:], l[j][:]) < 0 })
	}
	sort.Strings(res.Left)
	if dryRun {
		n, err := v.keyPacks(ctx, true, true)
		if err != nil {
			return nil, fmt.Errorf("repair index: %w", err)
		}
		res.Rekeyed = n
		return res, nil
	}
	if !res.Changed() {
		n, err := v.keyPacks(ctx, true, false)
		if err != nil {
			return nil, fmt.Errorf("repair index: %w", err)
		}
		if res.Rekeyed = n; n == 0 {
			return res, nil
		}
	}
	for id, c := range changes {
		if c.remove {
			if err := v.opt.Catalog.RemovePack(ctx, v.rec.ID, id); err != nil && !errors.Is(err, vault.ErrNotFound) {
				return nil, fmt.Errorf("repair index: pack %s: %w", id, err)
			}
		}
		if c.add != nil {
			if err := v.opt.Catalog.AddPack(ctx, v.rec.ID, *c.add, nil); err != nil {
				return nil, fmt.Errorf("repair index: pack %s: %w", id, err)
			}
			if !c.add.Condemned.IsZero() {
				if err := v.opt.Catalog.CondemnPack(ctx, v.rec.ID, id, c.add.Condemned); err != nil {
					return nil, fmt.Errorf("repair index: pack %s: %w", id, err)
				}
			}
		}
	}
	if res.Rekeyed == 0 {
		n, err := v.keyPacks(ctx, true, false)
		if err != nil {
			return nil, fmt.Errorf("repair index: %w", err)
		}
		res.Rekeyed = n
	}
	if err := v.reloadIndex(ctx); err != nil {
		return nil, err
	}
	if err := v.event(ctx, principal, vault.EventRepair, fmt.Sprintf("repair index: %d packs added, %d records fixed, %d records of missing packs removed, lookup keys of %d packs rewritten", len(res.Added), len(res.Fixed), len(res.Removed), res.Rekeyed), true); err != nil {
		return res, fmt.Errorf("the index was repaired, but: %w", err)
	}
	return res, nil
}

// reloadIndex loads the blob index again from the catalog.
func (v *Vault) reloadIndex(ctx context.Context) error {
	v.mu.Lock()
	v.index = map[blobKey]vault.BlobRecord{}
	v.condemned = map[blobKey]vault.BlobRecord{}
	v.mu.Unlock()
	return v.loadIndex(ctx)
}

// isDamage tells damage (the object is missing, cut short or does not
// authenticate) from a fault that must stop a repair (a key that cannot
// be reached, an I/O error, cancellation): a repair drops only what is
// lost, never what it could not read this time.
func isDamage(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	for _, fatal := range []error{context.Canceled, context.DeadlineExceeded, vault.ErrKeyUnavailable, vault.ErrWrongKey} {
		if errors.Is(err, fatal) {
			return false
		}
	}
	return errors.Is(err, vault.ErrCorrupt) || errors.Is(err, vault.ErrTruncated) || errors.Is(err, vault.ErrNotFound)
}

// RepairedSnapshot is one snapshot RepairSnapshots found using lost data.
type RepairedSnapshot struct {
	Old vault.SnapshotRecord
	// New is the repaired snapshot (zero in a dry run, or when nothing
	// of the snapshot could be kept: its root tree is lost).
	New vault.SnapshotRecord
	// Dropped are the files left out (a chunk of theirs is lost), with
	// their sizes; Emptied the directories whose listing was lost, kept
	// empty.
	Dropped []DroppedFile
	Emptied []string
	// RootLost: the root tree is lost; nothing could be kept.
	RootLost bool
	// Forgotten: the old snapshot was forgotten (soft-deleted);
	// ForgetErr says why not (deletion protection).
	Forgotten bool
	ForgetErr string
}

// DroppedFile is a file a repaired snapshot leaves out.
type DroppedFile struct {
	Path string
	Size uint64
}

// treeSaver stores trees in a snapshot's dedup domain.
type treeSaver interface {
	domainReader
	SaveTree(ctx context.Context, t *format.Tree) (vault.ID, error)
}

// RepairSnapshots finds the live snapshots that use lost data (a tree
// that cannot be read, a data blob missing from the index or in a pack
// missing from the store) and writes, for each, a repaired snapshot:
// files with a lost chunk are left out, directories whose listing is
// lost are kept empty, everything else is kept as it was. The repaired
// snapshot keeps the original's time, host, paths, tags and domain, and
// names the original as its Parent; the original is then forgotten
// (soft-deleted, so undelete still finds it) when deletion protection
// allows, else left live and reported. With dryRun nothing is written.
//
// It refuses to run while the index lacks packs that are in the store
// (RepairIndex first): data would be taken for lost that is not.
func (v *Vault) RepairSnapshots(ctx context.Context, dryRun bool, principal string) ([]RepairedSnapshot, error) {
	return v.RepairSnapshotsOf(ctx, nil, dryRun, principal)
}

// RepairSnapshotsOf is RepairSnapshots limited to the snapshots in only
// (nil: every live snapshot): an approved repair does what its approver
// saw, never a snapshot damaged since.
func (v *Vault) RepairSnapshotsOf(ctx context.Context, only []vault.ID, dryRun bool, principal string) ([]RepairedSnapshot, error) {
	if err := v.checkSession(); err != nil {
		return nil, err
	}
	stored := map[vault.ID]bool{}
	if err := v.opt.Store.List(ctx, vault.PackObject, func(oi vault.ObjectInfo) error {
		if id, err := vault.ParseID(oi.Handle.Name); err == nil {
			stored[id] = true
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("repair snapshots: list packs: %w", err)
	}
	var unindexed []string
	catalogued := map[vault.ID]bool{}
	if err := v.opt.Catalog.Packs(ctx, v.rec.ID, func(p vault.PackRecord) error {
		catalogued[p.ID] = true
		if p.Header == nil && stored[p.ID] {
			unindexed = append(unindexed, p.ID.Short())
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("repair snapshots: catalog packs: %w", err)
	}
	for id := range stored {
		if !catalogued[id] {
			unindexed = append(unindexed, id.Short())
		}
	}
	if len(unindexed) > 0 {
		sort.Strings(unindexed)
		return nil, fmt.Errorf("repair snapshots: %d packs in the store are not in the index (%s…): their data would be taken for lost; run coffer repair index first", len(unindexed), unindexed[0])
	}
	snaps, err := v.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	var out []RepairedSnapshot
	for _, s := range snaps {
		if only != nil && !slices.Contains(only, s.ID) {
			continue
		}
		trees, err := v.treeSaverFor(s.Domain)
		if err != nil {
			return nil, err
		}
		rp := &repairer{v: v, ctx: ctx, trees: trees, stored: stored, done: map[vault.ID]repairedTree{}, dryRun: dryRun}
		r := RepairedSnapshot{Old: s}
		root, err := rp.tree(s.Tree, "/", true, &r)
		if err != nil {
			return nil, fmt.Errorf("repair snapshot %s: %w", s.ID.Short(), err)
		}
		if len(r.Dropped) == 0 && len(r.Emptied) == 0 && !r.RootLost {
			continue
		}
		if !dryRun && !r.RootLost {
			if err := v.Flush(ctx); err != nil {
				return nil, err
			}
			// SECURITY: the time is the original's, which the snapshot
			// chain already attests; the chain entry that records the
			// repaired snapshot carries the time it was made (now), so
			// history shows when, and by whom, a snapshot was repaired.
			ns := vault.SnapshotRecord{Time: s.Time, Host: s.Host, Paths: s.Paths, Tags: s.Tags, Tree: root.id, Parent: s.ID,
				Files: root.files, Dirs: root.dirs, Bytes: root.bytes, Duration: s.Duration, Domain: s.Domain}
			saved, err := v.SaveSnapshotBy(ctx, ns, principal)
			if err != nil {
				return nil, fmt.Errorf("repair snapshot %s: %w", s.ID.Short(), err)
			}
			r.New = saved
		}
		out = append(out, r)
	}
	if dryRun || len(out) == 0 {
		return out, nil
	}
	// The originals: forgotten one by one, so that one protected
	// snapshot does not keep the others live.
	for i := range out {
		if _, err := v.Forget(ctx, []vault.ID{out[i].Old.ID}, principal); err != nil {
			out[i].ForgetErr = strings.TrimPrefix(err.Error(), "nothing was forgotten: ")
		} else {
			out[i].Forgotten = true
		}
	}
	if err := v.event(ctx, principal, vault.EventRepair, fmt.Sprintf("repair snapshots: %s", repairSummary(out)), true); err != nil {
		return out, fmt.Errorf("the snapshots were repaired, but: %w", err)
	}
	return out, nil
}

func repairSummary(out []RepairedSnapshot) string {
	var parts []string
	for _, r := range out {
		p := r.Old.ID.Short() + " -> "
		if r.New.ID.IsZero() {
			p += "none (root tree lost)"
		} else {
			p += r.New.ID.Short()
		}
		parts = append(parts, fmt.Sprintf("%s (%d files dropped, %d dirs emptied)", p, len(r.Dropped), len(r.Emptied)))
	}
	return strings.Join(parts, "; ")
}

func (v *Vault) treeSaverFor(d string) (treeSaver, error) {
	if d == "" {
		return v, nil
	}
	return v.InDomain(d)
}

type repairedTree struct {
	id                 vault.ID
	files, dirs, bytes uint64
	changed            bool
}

// repairer rebuilds one snapshot's trees without what is lost.
type repairer struct {
	v      *Vault
	ctx    context.Context
	trees  treeSaver
	stored map[vault.ID]bool
	done   map[vault.ID]repairedTree // by original tree ID (trees are content-addressed: one result each)
	dryRun bool
}

// tree returns tree id (at path) rebuilt without lost data. A tree
// reached at several paths is rebuilt once; what it dropped is listed at
// the first path only.
func (rp *repairer) tree(id vault.ID, path string, root bool, r *RepairedSnapshot) (repairedTree, error) {
	if t, ok := rp.done[id]; ok {
		return t, nil
	}
	if err := rp.ctx.Err(); err != nil {
		return repairedTree{}, err
	}
	t, err := rp.trees.LoadTree(rp.ctx, id)
	if err != nil {
		if !isDamage(rp.ctx, err) {
			return repairedTree{}, err
		}
		if root {
			r.RootLost = true
			return repairedTree{}, nil
		}
		r.Emptied = append(r.Emptied, path)
		empty, err := rp.save(&format.Tree{})
		out := repairedTree{id: empty, changed: true}
		rp.done[id] = out
		return out, err
	}
	out := repairedTree{id: id}
	nt := &format.Tree{Nodes: make([]format.Node, 0, len(t.Nodes))}
	for _, n := range t.Nodes {
		p := path + string(n.Name)
		switch n.Kind {
		case format.KindDir:
			sub, err := rp.tree(n.Subtree, p+"/", false, r)
			if err != nil {
				return repairedTree{}, err
			}
			if sub.changed {
				n.Subtree = sub.id
				out.changed = true
			}
			out.files += sub.files
			out.dirs += sub.dirs + 1
			out.bytes += sub.bytes
		case format.KindFile:
			if rp.lostChunk(n.Content) {
				r.Dropped = append(r.Dropped, DroppedFile{Path: p, Size: n.Size})
				out.changed = true
				continue
			}
			out.files++
			out.bytes += n.Size
		default:
			out.files++
		}
		nt.Nodes = append(nt.Nodes, n)
	}
	if out.changed {
		nid, err := rp.save(nt)
		if err != nil {
			return repairedTree{}, err
		}
		out.id = nid
	}
	rp.done[id] = out
	return out, nil
}

func (rp *repairer) save(t *format.Tree) (vault.ID, error) {
	if rp.dryRun {
		return vault.ID{}, nil
	}
	return rp.trees.SaveTree(rp.ctx, t)
}

// lostChunk reports whether a chunk of a file is lost: not in the index,
// or in a pack missing from the store.
func (rp *repairer) lostChunk(content []vault.ID) bool {
	for _, c := range content {
		b, ok := rp.v.Lookup(vault.DataBlob, c)
		if !ok || !rp.stored[b.Pack] {
			return true
		}
	}
	return false
}
