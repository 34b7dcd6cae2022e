package engine_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/store/mem"
	"github.com/coffer-backup/coffer/internal/vault"
)

// lockingStore is a store with a retention lock of its own, as an S3
// bucket with Object Lock: it refuses to delete an object before its
// type's retention ends, by the test's clock.
type lockingStore struct {
	vault.Store
	now   func() time.Time
	mu    sync.Mutex
	until map[vault.ObjectType]time.Time
}

func (s *lockingStore) set(t vault.ObjectType, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.until[t] = until
}

func (s *lockingStore) RetainedUntil(ctx context.Context, h vault.Handle) (time.Time, error) {
	if _, err := s.Stat(ctx, h); err != nil {
		return time.Time{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.until[h.Type], nil
}

func (s *lockingStore) Delete(ctx context.Context, h vault.Handle) error {
	if until, err := s.RetainedUntil(ctx, h); err == nil && until.After(s.now()) {
		return fmt.Errorf("delete %s: %w: retained until %s", h, vault.ErrImmutable, until)
	}
	return s.Store.Delete(ctx, h)
}

// TestPruneRespectsStoreRetention: prune never asks the store to delete
// what its lock still retains, and does not fail for it: an expired
// snapshot whose object is retained stays soft-deleted, a condemned pack
// that is retained waits; a later prune, once the retention lapsed,
// removes both.
func TestPruneRespectsStoreRetention(t *testing.T) {
	e := newEnv(t, nil)
	ls := &lockingStore{Store: mem.New(), until: map[vault.ObjectType]time.Time{}}
	e.store = ls
	ls.now = func() time.Time { return e.clock.Now() }
	v := create(t, e)
	a := snapWith(t, v, "a", randBytes(1, 2<<20))
	b := snapWith(t, v, "b", randBytes(2, 300_000))
	if _, err := v.Forget(ctx, []vault.ID{a.ID}, "tester"); err != nil {
		t.Fatal(err)
	}
	packs := len(packSizes(t, ls))
	ls.set(vault.SnapshotObject, testStart.Add(20*day))
	ls.set(vault.PackObject, testStart.Add(30*day))

	e.clock.advance(15 * day) // soft delete (14 days) over, the store's lock not
	rep, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatalf("prune while the store retains the expired snapshot: %v", err)
	}
	if len(rep.Expired) != 0 || rep.StillDeleted != 1 || rep.Deleted != 0 {
		t.Fatalf("prune while the store retains the snapshot: %+v", rep)
	}
	if _, err := v.FindDeleted(ctx, a.ID.String()); err != nil {
		t.Fatalf("the retained snapshot left the soft-deleted list: %v", err)
	}

	e.clock.advance(6 * day) // the snapshot's lock over, its packs' not
	rep, err = v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatalf("prune while the store retains condemned packs: %v", err)
	}
	if len(rep.Expired) != 1 || rep.Deleted != 0 || rep.Waiting == 0 || len(packSizes(t, ls)) != packs {
		t.Fatalf("prune while the store retains the condemned packs: %+v", rep)
	}

	e.clock.advance(10 * day) // every lock over
	rep, err = v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted == 0 || len(packSizes(t, ls)) != packs-rep.Deleted {
		t.Fatalf("prune after the locks lapsed: %+v", rep)
	}
	if !liveIDs(t, v)[b.ID] {
		t.Fatal("b is gone")
	}
	checkClean(t, v)
}
