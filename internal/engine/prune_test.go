package engine_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/store/mem"
	"github.com/coffer-backup/coffer/internal/vault"
)

const day = 24 * time.Hour

// snapWith saves a snapshot of one file made of chunks and returns it.
func snapWith(t *testing.T, v *engine.Vault, host string, chunks ...[]byte) vault.SnapshotRecord {
	t.Helper()
	return snapshotOf(t, v, host, chunks...)
}

func liveIDs(t *testing.T, v *engine.Vault) map[vault.ID]bool {
	t.Helper()
	snaps, err := v.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := map[vault.ID]bool{}
	for _, s := range snaps {
		m[s.ID] = true
	}
	return m
}

func checkClean(t *testing.T, v *engine.Vault) *engine.CheckReport {
	t.Helper()
	rep, err := v.Check(ctx, engine.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("check found errors: %v", rep.Errors)
	}
	return rep
}

// TestForgetUndelete: a forgotten snapshot leaves the list, keeps its data
// and comes back intact.
func TestForgetUndelete(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	a := snapWith(t, v, "a", randBytes(1, 300_000))
	b := snapWith(t, v, "b", randBytes(2, 300_000))
	done, err := v.Forget(ctx, []vault.ID{a.ID}, "tester")
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 1 || done[0].ID != a.ID || done[0].Deleted.IsZero() || done[0].DeletedBy != "tester" {
		t.Fatalf("Forget returned %+v", done)
	}
	if live := liveIDs(t, v); live[a.ID] || !live[b.ID] {
		t.Errorf("live snapshots after forget: %v", live)
	}
	if _, err := v.FindSnapshot(ctx, a.ID.String()); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("a forgotten snapshot is still found: %v", err)
	}
	if _, err := v.Forget(ctx, []vault.ID{a.ID}, "tester"); err == nil {
		t.Error("forgetting a forgotten snapshot succeeded")
	}
	var unknown vault.ID
	unknown[0] = 9
	if _, err := v.Forget(ctx, []vault.ID{b.ID, unknown}, "tester"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("forget with an unknown ID: %v", err)
	}
	if !liveIDs(t, v)[b.ID] {
		t.Error("a failed forget of two snapshots forgot the known one")
	}
	checkClean(t, v) // soft-deleted snapshots are checked too

	got, err := v.FindDeleted(ctx, a.ID.Short())
	if err != nil || got.ID != a.ID {
		t.Fatalf("FindDeleted: %v %v", got.ID, err)
	}
	if _, err := v.Undelete(ctx, a.ID, "tester"); err != nil {
		t.Fatal(err)
	}
	s, err := v.FindSnapshot(ctx, a.ID.String())
	if err != nil || !s.Deleted.IsZero() {
		t.Fatalf("undeleted snapshot: %+v %v", s, err)
	}
	tree, err := v.LoadTree(ctx, s.Tree)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := v.LoadTree(ctx, tree.Nodes[0].Subtree)
	if err != nil {
		t.Fatal(err)
	}
	if got := load(t, v, sub.Nodes[0].Content[0]); !bytes.Equal(got, randBytes(1, 300_000)) {
		t.Error("undeleted snapshot's data differs")
	}
	evs, err := v.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Event)
	}
	want := []string{vault.EventForget, vault.EventForget, vault.EventForget, vault.EventUndelete}
	if len(kinds) != len(want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	if evs[1].OK || evs[2].OK || !evs[0].OK || !evs[3].OK {
		t.Errorf("event outcomes: %+v", evs)
	}
}

// TestForgetMinRetention: nothing younger than the minimum retention can
// be forgotten, and a refusal forgets none of the named snapshots.
func TestForgetMinRetention(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	old := snapWith(t, v, "old", randBytes(1, 1000))
	e.clock.advance(40 * day)
	young := snapshotOf(t, v, "young", randBytes(2, 1000))
	// snapshotOf records testStart as the time; give the young one a
	// recent time through a direct save.
	young.Time = e.clock.Now()
	young, err := v.SaveSnapshot(ctx, young)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := v.ChangeSettings(ctx, func(s *vault.VaultSettings) { s.MinRetention = 30 * day }, "tester", false); err != nil {
		t.Fatal(err)
	}
	_, err = v.Forget(ctx, []vault.ID{old.ID, young.ID}, "tester")
	if !errors.Is(err, vault.ErrImmutable) {
		t.Fatalf("forget of a snapshot younger than the minimum retention: %v", err)
	}
	if live := liveIDs(t, v); !live[old.ID] || !live[young.ID] {
		t.Error("a refused forget changed something")
	}
	if _, err := v.Forget(ctx, []vault.ID{old.ID}, "tester"); err != nil {
		t.Errorf("forget of an old enough snapshot: %v", err)
	}
	// Lowering the minimum retention is critical: refused without approval.
	if _, _, _, err := v.ChangeSettings(ctx, func(s *vault.VaultSettings) { s.MinRetention = day }, "tester", false); !errors.Is(err, vault.ErrApprovalRequired) {
		t.Errorf("lowering min retention without approval: %v", err)
	}
	if s, _ := v.Settings(ctx); s.MinRetention != 30*day {
		t.Errorf("min retention %v after a refused change", s.MinRetention)
	}
}

// TestPruneAfterSoftDelete: prune keeps a forgotten snapshot's data until
// its soft-delete period ends, then removes the snapshot and the packs
// only it needed; the rest still checks clean.
func TestPruneAfterSoftDelete(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	shared := randBytes(5, 200_000)
	a := snapWith(t, v, "a", randBytes(1, 3<<20))         // its own packs
	c := snapWith(t, v, "c", randBytes(3, 1<<20), shared) // shares a pack's worth with b
	b := snapWith(t, v, "b", randBytes(2, 300_000), shared)
	packsBefore := len(packSizes(t, e.store))
	if _, err := v.Forget(ctx, []vault.ID{a.ID, c.ID}, "tester"); err != nil {
		t.Fatal(err)
	}

	dry, err := v.Prune(ctx, engine.PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Expired) != 0 || dry.StillDeleted != 2 || dry.Deleted != 0 {
		t.Errorf("dry run within the soft-delete period: %+v", dry)
	}
	rep, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Expired) != 0 || rep.Deleted != 0 || len(packSizes(t, e.store)) != packsBefore {
		t.Errorf("prune within the soft-delete period removed something: %+v", rep)
	}

	e.clock.advance(15 * day)
	dry, err = v.Prune(ctx, engine.PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Expired) != 2 || len(packSizes(t, e.store)) != packsBefore {
		t.Fatalf("dry run after expiry: %+v (and it must delete nothing)", dry)
	}
	if _, err := v.FindDeleted(ctx, a.ID.String()); err != nil {
		t.Errorf("a dry run removed the expired snapshot: %v", err)
	}
	keepWhole, err := v.Prune(ctx, engine.PruneOptions{DryRun: true, MaxUnused: 1})
	if err != nil {
		t.Fatal(err)
	}
	if keepWhole.PartlyUsed != 1 || keepWhole.UnusedBytes < 1<<20 || keepWhole.Repacked != 0 {
		t.Errorf("with repacking off, partly used packs: %+v", keepWhole)
	}
	rep, err = v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Expired) != 2 {
		t.Errorf("expired: %+v", rep.Expired)
	}
	// a's data pack and tree pack and c's tree pack go; c's data pack
	// also holds the chunk b shares, and is mostly unneeded: the shared
	// chunk is copied into a new pack and the old one goes too.
	if rep.Deleted != 4 || rep.Repacked != 1 || rep.RepackedBytes < 200_000 || rep.DeletedBytes < 4<<20 || rep.Deleted != dry.Deleted || dry.Repacked != 1 {
		t.Errorf("prune after expiry: %+v; the dry run said %+v", rep, dry)
	}
	if n := len(packSizes(t, e.store)); n != packsBefore-rep.Deleted+1 {
		t.Errorf("%d packs in the store, want %d", n, packsBefore-rep.Deleted+1)
	}
	if _, err := v.FindDeleted(ctx, a.ID.String()); err == nil {
		t.Error("the expired snapshot is still there")
	}
	if _, err := v.Undelete(ctx, a.ID, "tester"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("undelete after prune: %v", err)
	}
	rep2 := checkClean(t, v)
	if rep2.Snapshots != 1 {
		t.Errorf("check saw %d snapshots", rep2.Snapshots)
	}
	if !liveIDs(t, v)[b.ID] {
		t.Error("b is gone")
	}
	// A reopened vault reads b (the index no longer names deleted packs).
	v.Close()
	w, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	checkClean(t, w)
}

// TestPruneWaitsForWriter: a writer that opened the vault before prune
// condemned a pack may still deduplicate against it. Prune leaves the
// pack while the writer's session lives; when the writer has saved a
// snapshot that needs the pack, the next prune reprieves it instead of
// deleting it.
func TestPruneWaitsForWriter(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	data := randBytes(1, 400_000)
	a := snapWith(t, v, "a", data)
	if _, err := v.Forget(ctx, []vault.ID{a.ID}, "tester"); err != nil {
		t.Fatal(err)
	}
	e.clock.advance(15 * day)

	wopt := e.opts()
	wopt.Session = &vault.Session{Kind: "backup", Principal: "writer"}
	w, err := engine.Open(ctx, wopt)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	id := w.BlobID(data)
	if !w.Has(vault.DataBlob, id) {
		t.Fatal("the writer's index lacks the data")
	}

	rep, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Condemned == 0 || rep.Deleted != 0 || rep.Waiting != rep.Condemned || len(rep.Sessions) != 1 {
		t.Fatalf("prune with a writer running: %+v", rep)
	}
	if v.Has(vault.DataBlob, id) {
		t.Error("the pruning engine still deduplicates against a condemned pack")
	}
	// A vault opened now does not deduplicate against the condemned pack
	// but can still read it.
	late, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	if late.Has(vault.DataBlob, id) {
		t.Error("a vault opened after the condemnation deduplicates against it")
	}
	if got := load(t, late, id); !bytes.Equal(got, data) {
		t.Error("a condemned pack's blob does not read back")
	}
	late.Close()

	// The writer deduplicated: its snapshot references the condemned blob.
	sub := &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("f"), Perm: 0o644, Size: uint64(len(data)), Content: []vault.ID{id}}}}
	subID, err := w.SaveTree(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	root := &format.Tree{Nodes: []format.Node{{Kind: format.KindDir, Name: []byte("d"), Perm: 0o755, Subtree: subID}}}
	rootID, err := w.SaveTree(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	flush(t, w)
	if _, err := w.SaveSnapshot(ctx, vault.SnapshotRecord{Time: e.clock.Now(), Host: "w", Paths: []string{"/d"}, Tree: rootID}); err != nil {
		t.Fatal(err)
	}
	w.Close() // ends the session

	rep, err = v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	// The data pack is needed again; a's tree pack is not (the writer
	// made its own trees) and goes.
	if rep.Reprieved != 1 || rep.Deleted != 1 {
		t.Errorf("prune after the writer saved a snapshot needing the data pack: %+v", rep)
	}
	checkClean(t, v)
	x, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	checkClean(t, x)
	if !x.Has(vault.DataBlob, id) {
		t.Error("a reprieved pack is not deduplicated against again")
	}
}

// TestPruneDuringBackups: backups run while prunes run, in goroutines
// with their own engines; afterwards every snapshot checks clean with
// its data read back.
func TestPruneDuringBackups(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	for i := range 4 {
		s := snapWith(t, v, "seed", randBytes(uint64(10+i), 300_000), randBytes(99, 100_000))
		if _, err := v.Forget(ctx, []vault.ID{s.ID}, "tester"); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.advance(15 * day)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opt := e.opts()
			opt.Session = &vault.Session{Kind: "backup", Principal: "writer"}
			w, err := engine.Open(ctx, opt)
			if err != nil {
				errs <- err
				return
			}
			defer w.Close()
			for i := range 3 {
				// Reuses the forgotten snapshots' data: deduplication
				// races with the prune condemning it.
				chunks := [][]byte{randBytes(uint64(10+(g+i)%4), 300_000), randBytes(99, 100_000), randBytes(uint64(100+g*10+i), 50_000)}
				var ids []vault.ID
				for _, c := range chunks {
					id := w.BlobID(c)
					if _, err := w.SaveBlob(ctx, vault.DataBlob, id, w.Codec().Encode(nil, c), len(c)); err != nil {
						errs <- err
						return
					}
					ids = append(ids, id)
				}
				sub := &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("f"), Perm: 0o644, Content: ids}}}
				subID, err := w.SaveTree(ctx, sub)
				if err == nil {
					root := &format.Tree{Nodes: []format.Node{{Kind: format.KindDir, Name: []byte("d"), Perm: 0o755, Subtree: subID}}}
					var rootID vault.ID
					if rootID, err = w.SaveTree(ctx, root); err == nil {
						if err = w.Flush(ctx); err == nil {
							_, err = w.SaveSnapshot(ctx, vault.SnapshotRecord{Time: e.clock.Now(), Host: "w", Paths: []string{"/d"}, Tree: rootID})
						}
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 5 {
			p, err := engine.Open(ctx, e.opts())
			if err != nil {
				errs <- err
				return
			}
			_, err = p.Prune(ctx, engine.PruneOptions{Principal: "pruner"})
			p.Close()
			if err != nil && !isBusyPrune(err) {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A last prune with nothing running deletes what waited.
	if _, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"}); err != nil {
		t.Fatal(err)
	}
	x, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	rep := checkClean(t, x)
	if rep.Snapshots != 9 {
		t.Errorf("%d snapshots, want the 9 the writers saved", rep.Snapshots)
	}
}

func isBusyPrune(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("another prune"))
}

// deleteFailsStore fails every pack Delete after the first n, having
// deleted the object: a prune interrupted between a pack's store object
// and its catalog record.
type deleteFailsStore struct {
	vault.Store
	mu sync.Mutex
	n  int
}

func (s *deleteFailsStore) Delete(ctx context.Context, h vault.Handle) error {
	if h.Type == vault.PackObject {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.n <= 0 {
			s.Store.Delete(ctx, h)
			return errInjected
		}
		s.n--
	}
	return s.Store.Delete(ctx, h)
}

// TestPruneInterrupted: a prune that stops half-way (a pack's store
// object deleted, its catalog record not) leaves a vault that check
// --read-data passes, with the leftover reported as harmless; the next
// prune finishes the job.
func TestPruneInterrupted(t *testing.T) {
	st := &deleteFailsStore{Store: mem.New(), n: 1}
	e := newEnv(t, st)
	v := create(t, e)
	var gone []vault.ID
	for i := range 3 {
		s := snapWith(t, v, "a", randBytes(uint64(i), 300_000))
		gone = append(gone, s.ID)
	}
	keep := snapWith(t, v, "b", randBytes(9, 300_000))
	if _, err := v.Forget(ctx, gone, "tester"); err != nil {
		t.Fatal(err)
	}
	e.clock.advance(15 * day)
	if _, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"}); !errors.Is(err, errInjected) {
		t.Fatalf("prune with failing deletes: %v", err)
	}
	rep := checkClean(t, v)
	if len(rep.Warnings) == 0 {
		t.Error("check does not mention the pack the interrupted prune left in the store")
	}
	st.mu.Lock()
	st.n = 100
	st.mu.Unlock()
	pr, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	if pr.Deleted == 0 {
		t.Errorf("the second prune deleted nothing: %+v", pr)
	}
	if rep := checkClean(t, v); len(rep.Warnings) != 0 {
		t.Errorf("after the second prune check still warns: %v", rep.Warnings)
	}
	if !liveIDs(t, v)[keep.ID] {
		t.Error("the kept snapshot is gone")
	}
}

// TestPruneExclusiveEndsDeadSession: a prune session left in the catalog
// by a prune that died (a server killed mid-prune) makes a later prune
// refuse with ErrConflict until it is stale, unless the caller holds the
// lock every prune takes (Exclusive, a vault server's job lock): then the
// dead session is closed and the prune runs.
func TestPruneExclusiveEndsDeadSession(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	a := snapWith(t, v, "a", randBytes(1, 300_000))
	snapWith(t, v, "b", randBytes(2, 300_000))
	if _, err := v.Forget(ctx, []vault.ID{a.ID}, "tester"); err != nil {
		t.Fatal(err)
	}
	e.clock.advance(15 * day)
	now := e.clock.Now().UTC()
	dead := vault.Session{ID: "prune-dead", Kind: "prune", Principal: "killed server", Started: now, Touched: now}
	if err := e.cat.BeginSession(ctx, v.Record().ID, dead); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"}); !errors.Is(err, vault.ErrConflict) {
		t.Fatalf("prune beside another prune's live session = %v, want ErrConflict", err)
	}
	rep, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester", Exclusive: true})
	if err != nil {
		t.Fatalf("exclusive prune beside a dead prune's session: %v", err)
	}
	if len(rep.Expired) != 1 || rep.Deleted == 0 {
		t.Errorf("exclusive prune: %+v, want the forgotten snapshot and its pack gone", rep)
	}
	ss, err := e.cat.Sessions(ctx, v.Record().ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if s.ID == dead.ID {
			t.Error("the dead prune's session is still in the catalog")
		}
	}
	checkClean(t, v)
}

// snapDeleteFails fails the first n deletions of snapshot objects, as a
// prune killed after removing snapshots from the chain and before
// deleting their objects leaves them.
type snapDeleteFails struct {
	vault.Store
	mu sync.Mutex
	n  int
}

func (s *snapDeleteFails) Delete(ctx context.Context, h vault.Handle) error {
	if h.Type == vault.SnapshotObject {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.n > 0 {
			s.n--
			return errInjected
		}
	}
	return s.Store.Delete(ctx, h)
}

// TestPruneDropsRemovedSnapshotObjects: a prune interrupted after it
// removed expired snapshots from the chain but before it deleted their
// objects leaves objects no catalog record names; the next prune deletes
// them (only those the verified chain removed) and check is clean again.
func TestPruneDropsRemovedSnapshotObjects(t *testing.T) {
	st := &snapDeleteFails{Store: mem.New(), n: 1}
	e := newEnv(t, st)
	v := create(t, e)
	var gone []vault.ID
	for i := range 3 {
		gone = append(gone, snapWith(t, v, "a", randBytes(uint64(i), 100_000)).ID)
	}
	keep := snapWith(t, v, "b", randBytes(9, 100_000))
	if _, err := v.Forget(ctx, gone, "tester"); err != nil {
		t.Fatal(err)
	}
	e.clock.advance(15 * day)
	if _, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"}); !errors.Is(err, errInjected) {
		t.Fatalf("prune with a failing snapshot deletion: %v", err)
	}
	objects := func() int {
		n := 0
		if err := st.List(ctx, vault.SnapshotObject, func(vault.ObjectInfo) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := objects(); n != 4 {
		t.Fatalf("%d snapshot objects after the interrupted prune, want 4 (1 kept, 3 removed from the chain)", n)
	}
	if rep := checkClean(t, v); len(rep.Warnings) == 0 {
		t.Error("check does not mention the snapshot objects the interrupted prune left")
	}
	if _, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"}); err != nil {
		t.Fatal(err)
	}
	if n := objects(); n != 1 {
		t.Errorf("%d snapshot objects after the next prune, want only the kept one", n)
	}
	if rep := checkClean(t, v); len(rep.Warnings) != 0 {
		t.Errorf("after the next prune check still warns: %v", rep.Warnings)
	}
	if !liveIDs(t, v)[keep.ID] {
		t.Error("the kept snapshot is gone")
	}
}
