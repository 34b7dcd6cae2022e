package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

// event records a vault event; a failure to record it is logged and
// returned to callers that must not go on without it.
func (v *Vault) event(ctx context.Context, principal, event, detail string, ok bool) error {
	err := v.opt.Catalog.AddEvent(ctx, vault.VaultEvent{Vault: v.rec.ID, Time: v.opt.Now().UTC(), Principal: principal, Event: event, Detail: detail, OK: ok})
	if err != nil {
		v.log.Error("could not record a vault event", "event", event, "err", err)
		return fmt.Errorf("record the %s event: %w", event, err)
	}
	return nil
}

// Events returns the vault's event trail.
func (v *Vault) Events(ctx context.Context) ([]vault.VaultEvent, error) {
	return v.opt.Catalog.Events(ctx, v.rec.ID)
}

// Forget soft-deletes the snapshots named by ids: they leave the
// snapshot list, keep all their data, and may be undeleted until their
// soft-delete period ends. Every snapshot is checked against the vault's
// protection first; if any may not be forgotten, none is.
func (v *Vault) Forget(ctx context.Context, ids []vault.ID, principal string) ([]vault.SnapshotRecord, error) {
	// The list first, so that a list that does not verify is named as
	// such; then the settings, which the same chain authenticates.
	all, err := v.AllSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	settings, err := v.Settings(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[vault.ID]vault.SnapshotRecord{}
	for _, s := range all {
		byID[s.ID] = s
	}
	now := v.opt.Now().UTC()
	var todo []vault.SnapshotRecord
	var errs []error
	seen := map[vault.ID]bool{}
	for _, id := range ids {
		s, ok := byID[id]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("snapshot %s: %w", id.Short(), vault.ErrNotFound))
		case !s.Deleted.IsZero():
			errs = append(errs, fmt.Errorf("snapshot %s was forgotten already, on %s", id.Short(), s.Deleted.Format(time.RFC3339)))
		case seen[id]:
		default:
			if err := protect.Forget(settings, s, now); err != nil {
				errs = append(errs, err)
				continue
			}
			seen[id] = true
			todo = append(todo, s)
		}
	}
	if len(errs) > 0 {
		detail := fmt.Sprintf("refused to forget %d snapshot(s): %v", len(ids), errors.Join(errs...))
		v.event(ctx, principal, vault.EventForget, detail, false)
		return nil, fmt.Errorf("nothing was forgotten: %w", errors.Join(errs...))
	}
	// One chain append forgets them all, or none (docs/format.md §8.1).
	changes := make([]chainChange, len(todo))
	for i, s := range todo {
		changes[i] = chainChange{kind: vault.ChainForget, snapshot: s.ID, at: now, by: principal}
	}
	if err := v.appendChanges(ctx, changes); err != nil {
		v.event(ctx, principal, vault.EventForget, fmt.Sprintf("failed to forget %s: %v", shortIDs(todo), err), false)
		return nil, fmt.Errorf("nothing was forgotten: %w", err)
	}
	var done []vault.SnapshotRecord
	for _, s := range todo {
		s.Deleted, s.DeletedBy = now, principal
		done = append(done, s)
	}
	expiry := protect.Expiry(settings, now)
	if err := v.event(ctx, principal, vault.EventForget, fmt.Sprintf("soft-deleted %s; recoverable until %s", shortIDs(done), expiry.Format(time.RFC3339)), true); err != nil {
		return done, err
	}
	return done, nil
}

func shortIDs(ss []vault.SnapshotRecord) string {
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.ID.Short()
	}
	return strings.Join(ids, ", ")
}

// Undelete brings a soft-deleted snapshot back, with all its data, as
// long as prune has not removed it.
func (v *Vault) Undelete(ctx context.Context, id vault.ID, principal string) (vault.SnapshotRecord, error) {
	all, err := v.AllSnapshots(ctx)
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	for _, s := range all {
		if s.ID != id {
			continue
		}
		if s.Deleted.IsZero() {
			return s, fmt.Errorf("snapshot %s is not deleted", id.Short())
		}
		if err := v.appendChanges(ctx, []chainChange{{kind: vault.ChainUndelete, snapshot: id, at: v.opt.Now(), by: principal}}); err != nil {
			return s, err
		}
		s.Deleted, s.DeletedBy = time.Time{}, ""
		return s, v.event(ctx, principal, vault.EventUndelete, "brought back "+id.Short(), true)
	}
	return vault.SnapshotRecord{}, fmt.Errorf("snapshot %s: %w (pruned, or never in this vault)", id.Short(), vault.ErrNotFound)
}

// FindDeleted resolves ref (an ID or unique prefix) among the vault's
// soft-deleted snapshots.
func (v *Vault) FindDeleted(ctx context.Context, ref string) (vault.SnapshotRecord, error) {
	all, err := v.AllSnapshots(ctx)
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	var deleted []vault.SnapshotRecord
	for _, s := range all {
		if !s.Deleted.IsZero() {
			deleted = append(deleted, s)
		}
	}
	if ref == "latest" {
		return vault.SnapshotRecord{}, fmt.Errorf("name the deleted snapshot by its ID (coffer snapshots --deleted lists them)")
	}
	return FindSnapshot(deleted, ref)
}

// PruneOptions tune Prune.
type PruneOptions struct {
	DryRun    bool   // decide and report; change nothing
	Principal string // who runs it, for the event trail
	// MaxUnused is the share of a partly used pack's bytes that may be
	// unneeded before prune repacks it (copies what is needed into new
	// packs and condemns the old one); DefaultMaxUnused when 0, never
	// repack when 1 or more.
	MaxUnused float64
	// Exclusive: the caller holds a lock that every prune of this vault
	// takes first and that ends with its holder (a vault server's job
	// lock in the catalog it shares with the other servers). A prune
	// session found alive then belongs to a prune that died without
	// ending it, a server killed mid-prune: Prune ends it and goes on,
	// where it would otherwise refuse to run until the session is stale.
	Exclusive bool
}

// DefaultMaxUnused: a pack more than a tenth unneeded is repacked.
const DefaultMaxUnused = 0.10

// PruneReport is what Prune did (or, with DryRun, would do).
type PruneReport struct {
	DryRun bool `json:"dry_run"`
	// Expired are the soft-deleted snapshots whose period ended: removed.
	Expired []vault.SnapshotRecord `json:"-"`
	// StillDeleted counts soft-deleted snapshots kept until they expire.
	StillDeleted int `json:"soft_deleted_kept"`
	// Condemned: packs no snapshot needs, newly marked this run.
	Condemned      int   `json:"packs_condemned"`
	CondemnedBytes int64 `json:"bytes_condemned"`
	// Deleted: condemned packs removed this run.
	Deleted      int   `json:"packs_deleted"`
	DeletedBytes int64 `json:"bytes_deleted"`
	// Waiting: condemned packs kept because a writer that began before
	// they were condemned may still reference them, or because the
	// store's Object Lock still retains them; a later prune deletes them.
	Waiting      int   `json:"packs_waiting"`
	WaitingBytes int64 `json:"bytes_waiting"`
	// Reprieved: condemned packs a snapshot saved meanwhile needs.
	Reprieved int `json:"packs_reprieved"`
	// Repacked: partly used packs whose needed blobs (RepackedBytes of
	// them) were copied into new packs, the old ones condemned (and
	// counted in Condemned).
	Repacked      int   `json:"packs_repacked"`
	RepackedBytes int64 `json:"bytes_repacked"`
	// PartlyUsed packs hold both needed and unneeded blobs but too few
	// unneeded ones to repack (PruneOptions.MaxUnused); UnusedBytes of
	// them stay.
	PartlyUsed  int   `json:"packs_partly_used"`
	UnusedBytes int64 `json:"bytes_unused_in_kept_packs"`
	// Sessions are the writers that held deletions back.
	Sessions []vault.Session `json:"-"`
	// Unwalkable lists the snapshots (live or soft-deleted) whose trees
	// prune could not walk in full, and why. A tree that is stored intact
	// but is not a tree (garbage under its ID) references nothing, so
	// prune goes on; a tree it cannot read at all (missing, damaged)
	// might reference anything, so Incomplete is set.
	Unwalkable []Unwalkable `json:"-"`
	// Incomplete: a snapshot's tree could not be read, so prune could
	// not prove any pack unneeded: it condemned, repacked and deleted
	// nothing (it still removed the expired snapshots). Run coffer check,
	// then forget the snapshots it names.
	Incomplete bool `json:"condemned_nothing"`
}

// Unwalkable is a snapshot prune could not walk in full.
type Unwalkable struct {
	Snapshot vault.ID
	Reason   string
}

// String is "ID: reason".
func (u Unwalkable) String() string { return u.Snapshot.String() + ": " + u.Reason }

// UnwalkableStrings renders us with String.
func UnwalkableStrings(us []Unwalkable) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.String()
	}
	return out
}

// Prune removes what no snapshot needs any more: soft-deleted snapshots
// whose period has ended, then packs that no remaining snapshot (live or
// soft-deleted) references. It is safe against backups running at the
// same time (docs/retention.md): a pack is first condemned (left out of
// the index later writers load, so nothing new depends on it), and
// deleted only once every writer session that began before that has
// ended and a fresh look at the snapshots finds no reference to it; one
// that is referenced after all is reprieved. The store object goes
// before the catalog record, so an interrupted prune leaves at worst the
// record of a condemned pack whose object is gone, which check reports as
// harmless and the next prune removes; a snapshot object is removed
// after its record, leaving at worst an object check reports as not in
// the catalog.
func (v *Vault) Prune(ctx context.Context, opt PruneOptions) (*PruneReport, error) {
	rep := &PruneReport{DryRun: opt.DryRun}
	settings, err := v.Settings(ctx)
	if err != nil {
		return nil, err
	}
	now := v.opt.Now().UTC()
	if !opt.DryRun {
		// One prune at a time: a second one could delete the other copy
		// of a blob the first relies on.
		me := vault.Session{ID: newSessionID(), Kind: "prune", Principal: opt.Principal, Started: now, Touched: now}
		if err := v.opt.Catalog.BeginSession(ctx, v.rec.ID, me); err != nil {
			return nil, fmt.Errorf("prune: %w", err)
		}
		defer v.opt.Catalog.EndSession(context.WithoutCancel(ctx), me.ID)
		// A long prune stays alive, so that no second one starts.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(vault.SessionTouch)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if err := v.opt.Catalog.TouchSession(context.WithoutCancel(ctx), me.ID, v.opt.Now().UTC()); err != nil {
						v.log.Warn("could not record that prune is alive", "err", err)
					}
				}
			}
		}()
		ss, err := v.opt.Catalog.Sessions(ctx, v.rec.ID)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			if s.Kind == "prune" && s.ID != me.ID && now.Sub(s.Touched) < vault.SessionStale {
				if opt.Exclusive {
					// Its prune cannot be running: it would hold the lock
					// the caller holds. What it did is either committed
					// or not there (the store object of a pack goes
					// before its record), and this run finishes it.
					v.log.Warn("prune: the session of a prune that ended without closing it is closed", "session", s.ID, "started", s.Started.Format(time.RFC3339), "by", s.Principal)
					if err := v.opt.Catalog.EndSession(ctx, s.ID); err != nil && !errors.Is(err, vault.ErrNotFound) {
						return nil, fmt.Errorf("prune: close a dead prune's session: %w", err)
					}
					continue
				}
				return nil, fmt.Errorf("prune: another prune of this vault is running (since %s, by %s); run it again when that one ends: %w", s.Started.Format(time.RFC3339), s.Principal, vault.ErrConflict)
			}
		}
	}

	// 1. Snapshots whose soft-delete period has ended.
	all, err := v.AllSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	var keep []vault.SnapshotRecord
	for _, s := range all {
		switch {
		case s.Deleted.IsZero():
			keep = append(keep, s)
		case protect.Prunable(settings, s, now) == nil:
			// SECURITY: the store's Object Lock may outlast the soft-delete
			// period by a little (its retention is set ahead, and its clock
			// is not ours): such a snapshot stays until a later prune, rather
			// than leave the chain with its object undeletable.
			locked, err := v.storeRetains(ctx, snapHandle(s.ID), now)
			if err != nil {
				return nil, fmt.Errorf("prune: %w", err)
			}
			if locked {
				rep.StillDeleted++
				keep = append(keep, s)
				continue
			}
			rep.Expired = append(rep.Expired, s)
		default:
			rep.StillDeleted++
			keep = append(keep, s)
		}
	}
	if !opt.DryRun && len(rep.Expired) > 0 {
		changes := make([]chainChange, len(rep.Expired))
		for i, s := range rep.Expired {
			changes[i] = chainChange{kind: vault.ChainRemove, snapshot: s.ID, at: now, by: opt.Principal}
		}
		if err := v.appendChanges(ctx, changes); err != nil {
			return rep, fmt.Errorf("prune: remove expired snapshots %s: %w", shortIDs(rep.Expired), err)
		}
		for _, s := range rep.Expired {
			if err := v.opt.Store.Delete(ctx, snapHandle(s.ID)); err != nil && !errors.Is(err, vault.ErrNotFound) {
				return rep, fmt.Errorf("prune: delete snapshot object %s: %w", s.ID.Short(), err)
			}
		}
	}

	if !opt.DryRun {
		if err := v.dropRemovedObjects(ctx, all, now); err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
	}

	// 2. What the remaining snapshots need. Every pack and blob the
	// catalog's sealed header copies list, and the blobs the snapshots
	// use, go into a scratch index on disk (pruneindex.go), read after
	// any packs other writers added since this vault was opened.
	idx, err := newPruneIndex(ctx)
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	defer idx.Close()
	if err := v.indexPacks(ctx, idx, false); err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	if err := idx.indexBlobs(ctx); err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	if err := idx.rank(ctx); err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	if err := v.mark(ctx, keep, idx, rep); err != nil {
		return rep, err
	}
	if rep.Incomplete {
		// Nothing can be proved unneeded: keep every pack, and say why.
		return rep, v.pruneEvent(ctx, opt, rep)
	}

	// 3. Which packs hold nothing needed, one pack at a time, oldest
	// first. A needed blob stored twice (two backups at once) is homed
	// in the first pack holding it (pruneIndex.settle); the other copy
	// does not keep its pack alive.
	if err := idx.tally(ctx); err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	maxUnused := opt.MaxUnused
	if maxUnused == 0 {
		maxUnused = DefaultMaxUnused
	}
	err = idx.eachPack(ctx, "condemned = 0", func(p prunePack) error {
		needed, unused, err := idx.account(ctx, p)
		if err != nil {
			return err
		}
		switch {
		case needed == 0:
			rep.Condemned++
			rep.CondemnedBytes += p.size
			if err := idx.condemned(ctx, p.seq, now, pruneCondemnedNow); err != nil {
				return err
			}
			if !opt.DryRun {
				return v.condemn(ctx, idx, p, now)
			}
		case unused > 0 && float64(unused) > maxUnused*float64(p.size):
			rep.Repacked++
			rep.RepackedBytes += needed
			return idx.mark(ctx, p.seq, pruneRepack)
		case unused > 0:
			rep.PartlyUsed++
			rep.UnusedBytes += unused
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	// Repack: copy the needed blobs of those packs into new packs, make
	// them durable and catalogued, and only then condemn the old ones.
	const repacking = "state & 1 != 0" // pruneRepack
	if rep.Repacked > 0 && !opt.DryRun {
		var buf []byte
		err := idx.eachPack(ctx, repacking, func(p prunePack) error {
			homed, err := idx.blobs(ctx, p, true)
			if err != nil {
				return err
			}
			for _, b := range homed {
				// No ID check here: every tree copied is one mark
				// loaded, checked in its snapshot's dedup domain, and
				// the copy is the sealed content as it was.
				enc, rawLen, err := v.loadEncodedAt(ctx, b, buf, nil, nil)
				if err != nil {
					return fmt.Errorf("repack pack %s: %w (nothing was condemned; run coffer check --read-data)", p.id.Short(), err)
				}
				buf = enc
				if _, err := v.saveBlob(ctx, b.Type, b.ID, enc, int(rawLen), true); err != nil {
					return fmt.Errorf("repack pack %s: %w", p.id.Short(), err)
				}
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
		if err := v.Flush(ctx); err != nil {
			return rep, fmt.Errorf("prune: store repacked blobs: %w", err)
		}
	}
	err = idx.eachPack(ctx, repacking+" AND condemned = 0", func(p prunePack) error {
		rep.Condemned++
		rep.CondemnedBytes += p.size
		if err := idx.condemned(ctx, p.seq, now, pruneCondemnedNow); err != nil {
			return err
		}
		if !opt.DryRun {
			return v.condemn(ctx, idx, p, now)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	// A writer that registered its session after prune read the clock but
	// before the condemnations were written may have loaded an index that
	// still offers these packs: so their condemnation time, which writers
	// are compared against, is taken again now that they are written. A
	// writer that begins after this loads an index without them.
	if !opt.DryRun && rep.Condemned > 0 {
		after := v.opt.Now().UTC()
		err := idx.eachPack(ctx, "state & 2 != 0", func(p prunePack) error { // pruneCondemnedNow
			if err := v.opt.Catalog.CondemnPack(ctx, v.rec.ID, p.id, after); err != nil {
				return fmt.Errorf("condemn pack %s: %w", p.id.Short(), err)
			}
			return idx.condemned(ctx, p.seq, after, 0)
		})
		if err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
	}

	// 4. Delete condemned packs no live writer that began before their
	// condemnation may still reference, after a fresh look at the
	// snapshots.
	sessions, err := v.opt.Catalog.Sessions(ctx, v.rec.ID)
	if err != nil {
		return rep, err
	}
	var live []vault.Session
	for _, s := range sessions {
		switch {
		case now.Sub(s.Touched) >= vault.SessionStale:
			// A writer killed long ago; its session would stay forever.
			if !opt.DryRun && now.Sub(s.Touched) >= 2*vault.SessionStale {
				if err := v.opt.Catalog.EndSession(ctx, s.ID); err != nil {
					return rep, err
				}
			}
		case now.Sub(s.Started) >= vault.SessionMaxAge:
			// Kept alive for longer than any backup runs: it no longer
			// holds deletions back (its own snapshot will be refused).
		case s.Kind != "prune" && (v.sess == nil || s.ID != v.sess.rec.ID):
			live = append(live, s)
		}
	}
	oldestLive := func(before time.Time) bool {
		for _, s := range live {
			if !s.Started.After(before) {
				return true
			}
		}
		return false
	}
	deletable := 0
	err = idx.eachPack(ctx, "condemned != 0", func(p prunePack) error {
		if oldestLive(p.condemned) {
			rep.Waiting++
			rep.WaitingBytes += p.size
			return nil
		}
		deletable++
		return idx.mark(ctx, p.seq, pruneDeletable)
	})
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	for _, s := range live {
		held, err := idx.condemnedSince(ctx, s.Started)
		if err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
		if held {
			rep.Sessions = append(rep.Sessions, s)
		}
	}
	if deletable > 0 && !opt.DryRun {
		// The packs stored since step 2 (repacked blobs, other writers'
		// backups), and the snapshots saved since step 1 (by writers
		// that have ended).
		if err := v.indexPacks(ctx, idx, true); err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
		again, err := v.AllSnapshots(ctx)
		if err != nil {
			return rep, err
		}
		var fresh []vault.SnapshotRecord
		for _, s := range again {
			if slices.ContainsFunc(keep, func(k vault.SnapshotRecord) bool { return k.ID == s.ID }) {
				continue
			}
			walked, err := idx.visited(ctx, s.Tree)
			if err != nil {
				return rep, fmt.Errorf("prune: %w", err)
			}
			if !walked {
				fresh = append(fresh, s)
			}
		}
		if len(fresh) > 0 {
			if err := v.mark(ctx, fresh, idx, rep); err != nil {
				return rep, err
			}
			if rep.Incomplete {
				// A new snapshot cannot be walked: delete nothing.
				deletable = 0
			}
		}
	}
	if deletable == 0 {
		return rep, v.pruneEvent(ctx, opt, rep)
	}
	err = idx.eachPack(ctx, "state & 4 != 0", func(p prunePack) error { // pruneDeletable
		if opt.DryRun && p.state&pruneRepack != 0 {
			// Its needed blobs would have been copied first.
			rep.Deleted++
			rep.DeletedBytes += p.size
			return nil
		}
		needed, err := idx.needed(ctx, p, opt.DryRun)
		if err != nil {
			return err
		}
		if needed {
			rep.Reprieved++
			if opt.DryRun {
				return nil
			}
			if err := v.opt.Catalog.CondemnPack(ctx, v.rec.ID, p.id, time.Time{}); err != nil {
				return fmt.Errorf("reprieve pack %s: %w", p.id.Short(), err)
			}
			if err := idx.condemned(ctx, p.seq, time.Time{}, 0); err != nil {
				return err
			}
			return v.reprieve(ctx, idx, p)
		}
		rep.Deleted++
		rep.DeletedBytes += p.size
		if opt.DryRun {
			return nil
		}
		// A pack the store's Object Lock still retains waits, condemned,
		// for a later prune.
		if locked, err := v.storeRetains(ctx, packHandle(p.id), now); err != nil || locked {
			if err != nil {
				return err
			}
			rep.Deleted--
			rep.DeletedBytes -= p.size
			rep.Waiting++
			rep.WaitingBytes += p.size
			return nil
		}
		// The store object first: interrupted here, the catalog still
		// names the condemned pack, and the next prune removes the
		// record (a missing object is no error then).
		if err := v.opt.Store.Delete(ctx, packHandle(p.id)); err != nil && !errors.Is(err, vault.ErrNotFound) {
			if errors.Is(err, vault.ErrImmutable) { // the store's clock is behind ours: a later prune
				rep.Deleted--
				rep.DeletedBytes -= p.size
				rep.Waiting++
				rep.WaitingBytes += p.size
				return nil
			}
			return fmt.Errorf("delete pack %s: %w", p.id.Short(), err)
		}
		if err := v.opt.Catalog.RemovePack(ctx, v.rec.ID, p.id); err != nil {
			return fmt.Errorf("remove pack %s from the catalog: %w", p.id.Short(), err)
		}
		if err := v.forgetCondemned(ctx, idx, p); err != nil {
			return err
		}
		return idx.remove(ctx, p.seq)
	})
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	return rep, v.pruneEvent(ctx, opt, rep)
}

// dropRemovedObjects deletes the store objects of snapshots that an
// earlier prune removed from the snapshot chain but did not delete (it
// was killed between the two): no later prune would find them, check
// would report them for ever, and a recovery from the store would bring
// them back. Only snapshots a verified chain entry removes count (a
// catalog writer cannot name others), and only those the catalog no
// longer lists (known: every snapshot, live or soft-deleted).
func (v *Vault) dropRemovedObjects(ctx context.Context, known []vault.SnapshotRecord, now time.Time) error {
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return err
	}
	entries, _, err := v.opt.Catalog.SnapshotChain(ctx, v.rec.ID)
	if err != nil {
		return err
	}
	mac := format.NewChainMAC(ks.chain, v.rec.ID)
	removed := map[vault.ID]bool{}
	var h [32]byte
	for i, e := range entries {
		// SECURITY: entries up to the first that does not verify only.
		if e.Seq != uint64(i+1) || !format.ValidChainKind(e.Kind) || !mac.Verify(h, e) {
			break
		}
		h = e.MAC
		if e.Kind == vault.ChainRemove {
			removed[e.Snapshot] = true
		}
	}
	for _, s := range known {
		delete(removed, s.ID)
	}
	if len(removed) == 0 {
		return nil
	}
	var left []vault.ID
	err = v.opt.Store.List(ctx, vault.SnapshotObject, func(o vault.ObjectInfo) error {
		if id, err := vault.ParseID(o.Handle.Name); err == nil && removed[id] {
			left = append(left, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list snapshot objects: %w", err)
	}
	for _, id := range left {
		if locked, err := v.storeRetains(ctx, snapHandle(id), now); err != nil || locked {
			if err != nil {
				return err
			}
			continue // a later prune
		}
		if err := v.opt.Store.Delete(ctx, snapHandle(id)); err != nil && !errors.Is(err, vault.ErrNotFound) && !errors.Is(err, vault.ErrImmutable) {
			return fmt.Errorf("delete snapshot object %s: %w", id.Short(), err)
		}
		v.log.Info("prune: deleted the object of a snapshot an interrupted prune had removed", "snapshot", id.Short())
	}
	return nil
}

// retentionStore is a store whose objects may be under a retention lock
// of its own (internal/store/s3 on a bucket with Object Lock).
type retentionStore interface {
	RetainedUntil(ctx context.Context, h vault.Handle) (time.Time, error)
}

// retentionSlack covers the difference between the store's clock and
// ours: an object whose retention ended less than this ago still counts
// as retained.
const retentionSlack = 5 * time.Minute

// storeRetains reports whether the store still retains h at now, so that
// deleting it would be refused.
func (v *Vault) storeRetains(ctx context.Context, h vault.Handle, now time.Time) (bool, error) {
	rs, ok := v.opt.Store.(retentionStore)
	if !ok {
		return false, nil
	}
	until, err := rs.RetainedUntil(ctx, h)
	switch {
	case errors.Is(err, vault.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return !until.IsZero() && until.After(now.Add(-retentionSlack)), nil
}

// pruneEvent records what a prune (not a dry run) did.
func (v *Vault) pruneEvent(ctx context.Context, opt PruneOptions, rep *PruneReport) error {
	if opt.DryRun {
		return nil
	}
	detail := fmt.Sprintf("removed %d expired snapshot(s)%s; %d pack(s) repacked (%d bytes copied), %d condemned, %d deleted (%d bytes), %d waiting for running backups, %d reprieved",
		len(rep.Expired), listIDs(rep.Expired), rep.Repacked, rep.RepackedBytes, rep.Condemned, rep.Deleted, rep.DeletedBytes, rep.Waiting, rep.Reprieved)
	if len(rep.Unwalkable) > 0 {
		ids := make([]string, len(rep.Unwalkable))
		for i, u := range rep.Unwalkable {
			ids[i] = u.Snapshot.Short()
		}
		detail += fmt.Sprintf("; %d snapshot(s) could not be walked in full (%s)", len(ids), strings.Join(ids, ", "))
	}
	if rep.Incomplete {
		detail += "; nothing condemned or deleted: a snapshot's tree cannot be read (run coffer check)"
	}
	return v.event(ctx, opt.Principal, vault.EventPrune, detail, true)
}

func listIDs(ss []vault.SnapshotRecord) string {
	if len(ss) == 0 {
		return ""
	}
	return " (" + shortIDs(ss) + ")"
}

// mark walks the trees of snaps, recording every tree and data blob they
// reference as used in idx, which also holds the trees walked already. A
// snapshot whose trees cannot all be walked does not stop it (one bad
// snapshot must not block prune for good): it goes into rep.Unwalkable.
// A tree read intact (its content matches its ID) that does not decode is
// garbage that references nothing, so the walk is complete without it; a
// tree that cannot be read at all might reference anything, so
// rep.Incomplete is set and the caller must not condemn or delete
// anything. Only a cancelled walk, an unusable key or a failing scratch
// index stops it.
func (v *Vault) mark(ctx context.Context, snaps []vault.SnapshotRecord, idx *pruneIndex, rep *PruneReport) error {
	var problem string           // the first problem in the current snapshot
	bad := map[vault.ID]string{} // trees found bad, shared by snapshots
	fail := func(id vault.ID, why string) {
		bad[id] = why
		if problem == "" {
			problem = why
		}
	}
	var trees domainReader // the dedup domain of the snapshot being walked
	var data []vault.ID    // a tree's data blobs, recorded together
	var walk func(id vault.ID, path string) error
	walk = func(id vault.ID, path string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		first, err := idx.visit(ctx, id)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		if !first {
			if why, ok := bad[id]; ok && problem == "" {
				problem = why
			}
			return nil
		}
		b, err := trees.LoadBlob(ctx, vault.TreeBlob, id, nil)
		switch {
		case errors.Is(err, vault.ErrKeyUnavailable) || errors.Is(err, vault.ErrWrongKey) || ctx.Err() != nil:
			return fmt.Errorf("prune: read tree %s: %w", id.Short(), err)
		case err != nil:
			rep.Incomplete = true
			fail(id, fmt.Sprintf("tree %s (%q) cannot be read: %v", id.Short(), path, err))
			return nil
		}
		t, err := format.DecodeTree(b)
		if err != nil {
			fail(id, fmt.Sprintf("tree %s (%q) is not a valid tree (stored that way under its ID, so it references nothing): %v", id.Short(), path, err))
			return nil
		}
		data = data[:0]
		for _, n := range t.Nodes {
			if n.Kind == format.KindFile {
				data = append(data, n.Content...)
			}
		}
		if err := idx.use(ctx, data); err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		for _, n := range t.Nodes {
			if n.Kind == format.KindDir {
				if err := walk(n.Subtree, path+string(n.Name)+"/"); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, s := range snaps {
		problem = ""
		// Each snapshot's trees are read in its own dedup domain.
		l, err := v.pruneTrees(s.Domain, idx)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", s.ID.Short(), err)
		}
		trees = l
		if err := walk(s.Tree, "/"); err != nil {
			return fmt.Errorf("snapshot %s: %w", s.ID.Short(), err)
		}
		if problem != "" {
			rep.Unwalkable = append(rep.Unwalkable, Unwalkable{Snapshot: s.ID, Reason: problem})
			v.log.Warn("prune: a snapshot cannot be walked in full", "snapshot", s.ID.Short(), "problem", problem)
		}
	}
	if err := idx.settle(ctx); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	return nil
}

// condemn marks pack p unused in the catalog. This engine's cached
// records are dropped (they may offer its blobs to a backup), and with
// the whole index loaded its blobs move out of the index it
// deduplicates against (a blob also held by another pack stays indexed
// there).
func (v *Vault) condemn(ctx context.Context, idx *pruneIndex, p prunePack, at time.Time) error {
	if err := v.opt.Catalog.CondemnPack(ctx, v.rec.ID, p.id, at); err != nil {
		return fmt.Errorf("condemn pack %s: %w", p.id.Short(), err)
	}
	return v.packChanged(ctx, idx, p, func(k blobKey, b vault.BlobRecord) {
		if r, ok := v.index[k]; ok && r.Pack == p.id {
			delete(v.index, k)
			v.condemned[k] = b
		}
	})
}

// reprieve puts condemned pack p back in use in this engine (the caller
// has recorded it so in the catalog).
func (v *Vault) reprieve(ctx context.Context, idx *pruneIndex, p prunePack) error {
	return v.packChanged(ctx, idx, p, func(k blobKey, b vault.BlobRecord) {
		if r, ok := v.condemned[k]; ok && r.Pack == p.id {
			delete(v.condemned, k)
		}
		if _, ok := v.index[k]; !ok {
			v.index[k] = b
		}
	})
}

// forgetCondemned drops a deleted pack's blobs from this engine.
func (v *Vault) forgetCondemned(ctx context.Context, idx *pruneIndex, p prunePack) error {
	return v.packChanged(ctx, idx, p, func(k blobKey, b vault.BlobRecord) {
		if r, ok := v.condemned[k]; ok && r.Pack == p.id {
			delete(v.condemned, k)
		}
	})
}

// packChanged tells this engine that pack p was condemned, reprieved or
// deleted: its record cache is emptied, and with the whole index loaded
// fn is called for each of p's blobs with v.mu held.
func (v *Vault) packChanged(ctx context.Context, idx *pruneIndex, p prunePack, fn func(blobKey, vault.BlobRecord)) error {
	v.mu.Lock()
	v.cache = recordCache{}
	full := v.full
	v.mu.Unlock()
	if !full {
		return nil
	}
	blobs, err := idx.blobs(ctx, p, false)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, b := range blobs {
		fn(blobKey{b.ID, b.Type}, b)
	}
	return nil
}
