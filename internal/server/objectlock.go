package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// retentionStore is a store that keeps objects under a retention lock of
// its own, which nobody holding the store's credentials can shorten:
// internal/store/s3 on a bucket with Object Lock (COMPLIANCE mode).
type retentionStore interface {
	ObjectLock() bool
	SetRetention(func(context.Context, vault.Handle) (time.Time, error))
	Retain(ctx context.Context, h vault.Handle, atLeast, until time.Time) error
}

// lockPeriod is how long after an object is written Coffer could at the
// earliest let it be deleted, in a vault with settings set: no snapshot
// is forgotten before it is MinRetention old, and none pruned before its
// soft-delete period ends (locked immutability makes both unshortenable).
// Zero while immutability is not locked: the store then locks nothing.
func lockPeriod(set vault.VaultSettings) time.Duration {
	if set.Immutability != vault.ImmutabilityLocked {
		return 0
	}
	return set.MinRetention + days(set.SoftDeleteDays)
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

// Object Lock upkeep: every lockRunEvery, each needed object's retention
// is made to reach lockAhead past what Coffer's rules need, and when it
// is lengthened it is lengthened by more (lockSpare), so that an object
// costs one request per lockSpare rather than one per run.
const (
	lockRunEvery = time.Hour
	lockAhead    = 2 * time.Hour
	lockSpare    = 24 * time.Hour
)

// armObjectLock makes ov's store put every new object under COMPLIANCE
// retention for the vault's lock period while its immutability is locked.
// The period is read here and refreshed by keepObjectLock (after every
// settings change and every lockRunEvery), and, on a catalog servers
// share, before every object is written; while the settings cannot be
// read, writes fail rather than go unprotected.
func (s *Server) armObjectLock(ctx context.Context, ov *openVault) {
	rs, ok := ov.store.(retentionStore)
	if !ok || !rs.ObjectLock() {
		return
	}
	s.refreshLock(ctx, ov)
	rs.SetRetention(func(ctx context.Context, _ vault.Handle) (time.Time, error) {
		if s.opt.Catalog != "" {
			// SECURITY: on a shared catalog the vault's immutability
			// may have been locked through another server since this
			// one read its settings: they are read again (the chain
			// entries since, one query) for every object written, so
			// that a lock holds on every server from its next write,
			// not from its next upkeep.
			s.refreshLock(ctx, ov)
		}
		p := ov.lock.Load()
		switch {
		case p < 0:
			return time.Time{}, errors.New("the vault's settings could not be read, so whether its objects must be locked is unknown: writes wait until they can be")
		case p == 0:
			return time.Time{}, nil
		}
		return s.opt.Now().Add(time.Duration(p) + lockAhead), nil
	})
}

// refreshLock reads ov's lock period into ov.lock (-1 when the settings
// cannot be read).
func (s *Server) refreshLock(ctx context.Context, ov *openVault) (vault.VaultSettings, error) {
	set, err := ov.eng.Settings(ctx)
	if err != nil {
		ov.lock.Store(-1)
		return set, err
	}
	ov.lock.Store(int64(lockPeriod(set)))
	return set, nil
}

// keepObjectLocks runs keepObjectLock on every vault of a server whose
// stores can lock, once per lockRunEvery (Maintain calls it every
// minute), and on the vaults whose upkeep waits for another server's at
// every call. A vault nobody used since the server started is opened for
// it: its retention must not lapse while it sits idle.
//
// Each vault's upkeep runs on one server at a time (keepObjectLockAlone):
// servers sharing a catalog would otherwise race to lengthen the same
// objects' retention. A server that finds another running it waits its
// turn (the vault is pending, tried again at the next call) rather than
// counting the other's run as its own, so a holder that dies half-way
// leaves no object unlengthened for longer than a minute or two.
func (s *Server) keepObjectLocks(ctx context.Context) error {
	names := s.lockPending.take()
	// Vaults that cannot be opened (a revoked key) are tried again after
	// lockRunEvery, not every minute.
	now := s.opt.Now()
	if last := s.lockSweep.Load(); last == 0 || now.Sub(time.Unix(0, last)) >= lockRunEvery {
		s.lockSweep.Store(now.UnixNano())
		all, _, err := s.vaultNames(ctx)
		if err != nil {
			for _, name := range names {
				s.lockPending.add(name)
			}
			return err
		}
		names = all
	}
	var errs []error
	for _, name := range names {
		if s.opt.OpenStore == nil {
			own, err := s.vaultStoreURL(ctx, name)
			if err != nil {
				// Not skipped in silence: a store row that cannot be
				// read (edited in the catalog) would otherwise let the
				// vault's retention lapse unnoticed.
				errs = append(errs, fmt.Errorf("vault %s: keep its objects locked: %w", name, err))
				continue
			}
			if own == "" {
				continue // a local store has no lock of its own
			}
		}
		if _, err := s.cat.Vault(ctx, name); err != nil {
			continue // deleted, or not a vault
		}
		if _, err := s.vault(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("vault %s: keep its objects locked: %w", name, err))
			continue
		}
		s.mu.Lock()
		ov := s.vaults[name]
		s.mu.Unlock()
		if ov == nil {
			continue
		}
		ran, err := s.keepObjectLockAlone(ctx, ov)
		if err != nil {
			errs = append(errs, fmt.Errorf("vault %s: keep its objects locked: %w", name, err))
		} else if !ran {
			s.log.Debug("another server keeps the vault's objects locked now; this one runs after it", "vault", name)
			s.lockPending.add(name)
		}
	}
	return errors.Join(errs...)
}

// objectLockJob is the name of the job lock of vault id's Object Lock
// upkeep.
func objectLockJob(id vault.ID) string { return "object-lock " + id.String() }

// keepObjectLockAlone runs keepObjectLock on ov under the vault's job
// lock; ran is false, and nothing done, when another server (or another
// run in this one) holds it.
func (s *Server) keepObjectLockAlone(ctx context.Context, ov *openVault) (ran bool, err error) {
	unlock, ok, err := s.cat.TryJobLock(ctx, objectLockJob(ov.eng.Record().ID))
	if err != nil || !ok {
		return false, err
	}
	defer unlock()
	return true, s.keepObjectLock(ctx, ov)
}

// pendingLocks are the vaults whose Object Lock upkeep found another
// server's running: each is tried again at the next maintenance run.
type pendingLocks struct {
	mu    sync.Mutex
	names map[string]struct{}
}

func (p *pendingLocks) add(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.names == nil {
		p.names = map[string]struct{}{}
	}
	p.names[name] = struct{}{}
}

// take returns the pending vaults, sorted, and forgets them.
func (p *pendingLocks) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	names := slices.Sorted(maps.Keys(p.names))
	p.names = nil
	return names
}

// keepObjectLock brings the retention of every object vault ov still
// needs up to the earliest moment Coffer would let it go, plus lockAhead:
//   - the config and the newest keyring generation: for as long as any
//     snapshot may live, now + the lock period;
//   - packs the catalog does not hold condemned: a snapshot made now may
//     use them, now + the lock period; a condemned pack is no longer
//     lengthened, so its retention lapses and prune can delete it;
//   - a live snapshot's object: until it may be forgotten (made +
//     MinRetention, or now) plus the soft-delete period;
//   - a forgotten snapshot's object: until its soft-delete period ends.
//
// Older keyring generations are not lengthened: they lapse, and the next
// rewrap removes them. Locking a vault runs this at once, which puts the
// objects written before the lock under retention too.
func (s *Server) keepObjectLock(ctx context.Context, ov *openVault) error {
	rs, ok := ov.store.(retentionStore)
	if !ok || !rs.ObjectLock() {
		return nil
	}
	set, err := s.refreshLock(ctx, ov)
	if err != nil {
		return err
	}
	p := lockPeriod(set)
	if p == 0 {
		return nil
	}
	now := s.opt.Now()
	base := now.Add(p + lockAhead)
	keep := func(h vault.Handle, atLeast time.Time) error {
		err := rs.Retain(ctx, h, atLeast, atLeast.Add(lockSpare))
		if errors.Is(err, vault.ErrNotFound) {
			return nil // gone meanwhile; check reports a missing object
		}
		return err
	}
	if err := keep(vault.Handle{Type: vault.ConfigObject, Name: "config"}, base); err != nil {
		return err
	}
	var newest vault.Handle
	err = ov.store.List(ctx, vault.KeyObject, func(oi vault.ObjectInfo) error {
		if newest.Name == "" || oi.Handle.Name > newest.Name { // fixed-width names
			newest = oi.Handle
		}
		return nil
	})
	if err != nil {
		return err
	}
	if newest.Name != "" {
		if err := keep(newest, base); err != nil {
			return err
		}
	}
	snaps, err := ov.eng.AllSnapshots(ctx)
	if err != nil {
		return err
	}
	for _, sn := range snaps {
		h := vault.Handle{Type: vault.SnapshotObject, Name: sn.ID.String()}
		var until time.Time
		if sn.Deleted.IsZero() {
			until = sn.Time.Add(set.MinRetention)
			if until.Before(now) {
				until = now
			}
			until = until.Add(days(set.SoftDeleteDays) + lockAhead)
		} else {
			until = sn.Deleted.Add(days(set.SoftDeleteDays))
		}
		if !until.After(now) {
			continue // Coffer may delete it now
		}
		if err := rs.Retain(ctx, h, until, until); err != nil && !errors.Is(err, vault.ErrNotFound) {
			return err
		}
	}
	var packs []vault.Handle
	err = s.cat.Packs(ctx, ov.eng.Record().ID, func(pr vault.PackRecord) error {
		if pr.Condemned.IsZero() {
			packs = append(packs, vault.Handle{Type: vault.PackObject, Name: pr.ID.String()})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, h := range packs {
		if err := keep(h, base); err != nil {
			return err
		}
	}
	return nil
}

// lockWait is how long objectLockChanged waits for another server's
// upkeep of the vault to end before leaving its own to the next
// maintenance run.
const lockWait = 30 * time.Second

// objectLockChanged runs keepObjectLock on vault name after its settings
// changed: locking puts the objects already written under retention at
// once. It waits for the vault's job lock: another server's upkeep that
// holds it may have read the settings before the change, so its run does
// not count for this one. A failure, or a wait past lockWait, is logged
// and the vault is tried again by the next maintenance run.
func (s *Server) objectLockChanged(ctx context.Context, name string) {
	s.mu.Lock()
	ov := s.vaults[name]
	s.mu.Unlock()
	if ov == nil {
		return
	}
	// The change is made: the client going away must not cut short the
	// protection of what the vault holds. Only the wait is bounded.
	ctx = context.WithoutCancel(ctx)
	wait := time.NewTimer(lockWait)
	defer wait.Stop()
	for delay := 20 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		ran, err := s.keepObjectLockAlone(ctx, ov)
		if err != nil {
			s.lockPending.add(name)
			s.log.Error("could not put the vault's objects under Object Lock retention; the next maintenance run tries again", "vault", name, "err", err)
			return
		}
		if ran {
			return
		}
		select {
		case <-wait.C:
			s.lockPending.add(name)
			s.log.Warn("another server kept the vault's objects locked for longer than the wait after a settings change; the next maintenance run applies the change", "vault", name, "waited", lockWait)
			return
		case <-time.After(delay):
		}
	}
}
