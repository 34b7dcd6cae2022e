package server

import (
	"context"
	"errors"
	"fmt"
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
// minute). A vault nobody used since the server started is
// opened for it: its retention must not lapse while it sits idle.
func (s *Server) keepObjectLocks(ctx context.Context) error {
	// Vaults that cannot be opened (a revoked key) are tried again after
	// lockRunEvery, not every minute.
	now := s.opt.Now()
	if last := s.lockSweep.Load(); last != 0 && now.Sub(time.Unix(0, last)) < lockRunEvery {
		return nil
	}
	s.lockSweep.Store(now.UnixNano())
	names, _, err := s.vaultNames(ctx)
	if err != nil {
		return err
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
		if err := s.keepObjectLock(ctx, ov); err != nil {
			errs = append(errs, fmt.Errorf("vault %s: keep its objects locked: %w", name, err))
		}
	}
	return errors.Join(errs...)
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

// objectLockChanged runs keepObjectLock on vault name after its settings
// changed: locking puts the objects already written under retention at
// once. A failure is logged and retried by the next maintenance run.
func (s *Server) objectLockChanged(ctx context.Context, name string) {
	s.mu.Lock()
	ov := s.vaults[name]
	s.mu.Unlock()
	if ov == nil {
		return
	}
	if err := s.keepObjectLock(ctx, ov); err != nil {
		s.log.Error("could not put the vault's objects under Object Lock retention; the next maintenance run tries again", "vault", name, "err", err)
	}
}
