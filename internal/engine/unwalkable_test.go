package engine_test

import (
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// snapshotOfTree stores plain as a tree blob as it is, valid or not (the
// engine trusts its in-process writer; a server checks uploads), and a
// snapshot of it.
func snapshotOfTree(t *testing.T, v *engine.Vault, host string, plain []byte) vault.SnapshotRecord {
	t.Helper()
	id := v.BlobID(plain)
	if _, err := v.SaveBlob(ctx, vault.TreeBlob, id, v.Codec().Encode(nil, plain), len(plain)); err != nil {
		t.Fatal(err)
	}
	flush(t, v)
	s, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart, Host: host, Paths: []string{"/g"}, Tree: id})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func encodeTree(t *testing.T, nodes ...format.Node) []byte {
	t.Helper()
	b, err := format.EncodeTree(nil, &format.Tree{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPruneSkipsGarbageTree: a snapshot based on garbage stored under a
// valid tree ID (possible before uploads were checked) no longer stops
// prune for good: prune reports it and goes on, since garbage read
// intact references nothing; check names every snapshot that reaches it.
func TestPruneSkipsGarbageTree(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	a := snapWith(t, v, "a", randBytes(1, 2<<20))
	b := snapWith(t, v, "b", randBytes(2, 300_000))
	g := snapshotOfTree(t, v, "g", []byte("garbage that hashes to its ID"))
	// A valid root whose subtree is garbage, in two snapshots.
	gsub := v.BlobID([]byte("garbage subtree"))
	if _, err := v.SaveBlob(ctx, vault.TreeBlob, gsub, v.Codec().Encode(nil, []byte("garbage subtree")), 15); err != nil {
		t.Fatal(err)
	}
	h1 := snapshotOfTree(t, v, "h", encodeTree(t, format.Node{Kind: format.KindDir, Name: []byte("d"), Subtree: gsub}))
	h2 := snapshotOfTree(t, v, "h", encodeTree(t, format.Node{Kind: format.KindDir, Name: []byte("e"), Subtree: gsub}))
	if _, err := v.Forget(ctx, []vault.ID{a.ID}, "tester"); err != nil {
		t.Fatal(err)
	}
	e.clock.advance(15 * day)
	rep, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatalf("prune stopped at a garbage tree: %v", err)
	}
	if rep.Incomplete || rep.Deleted == 0 || len(rep.Expired) != 1 {
		t.Errorf("prune with garbage trees: incomplete %v, %d packs deleted, %d expired; want a's packs deleted", rep.Incomplete, rep.Deleted, len(rep.Expired))
	}
	skipped := map[vault.ID]string{}
	for _, u := range rep.Unwalkable {
		skipped[u.Snapshot] = u.Reason
	}
	for _, s := range []vault.SnapshotRecord{g, h1, h2} {
		if !strings.Contains(skipped[s.ID], "not a valid tree") {
			t.Errorf("prune's report on snapshot %s: %q, want it named as not a valid tree", s.ID.Short(), skipped[s.ID])
		}
	}
	if _, ok := skipped[b.ID]; ok || len(skipped) != 3 {
		t.Errorf("prune reported %d unwalkable snapshots: %v", len(skipped), skipped)
	}
	// The garbage stays (it is the snapshots' root), and b is intact.
	if _, err := v.LoadBlob(ctx, vault.TreeBlob, g.Tree, nil); err != nil {
		t.Errorf("prune deleted the garbage tree of a live snapshot: %v", err)
	}
	if _, err := v.LoadTree(ctx, b.Tree); err != nil {
		t.Errorf("b's tree after prune: %v", err)
	}
	crep, err := v.Check(ctx, engine.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []vault.SnapshotRecord{g, h1, h2} {
		found := false
		for _, msg := range crep.Errors {
			if strings.HasPrefix(msg, "snapshot "+s.ID.Short()) && strings.Contains(msg, "not a valid tree") {
				found = true
			}
		}
		if !found {
			t.Errorf("check does not name snapshot %s's garbage tree: %v", s.ID.Short(), crep.Errors)
		}
	}
	if len(crep.Errors) != 3 {
		t.Errorf("check found %d errors, want one per garbage snapshot: %v", len(crep.Errors), crep.Errors)
	}
}

// TestPruneUnreadableTreeKeepsEverything: a snapshot whose tree cannot be
// read might reference any pack, so prune reports it and condemns and
// deletes nothing (it still removes expired snapshot records), instead
// of stopping; once that snapshot is gone, prune frees the space.
func TestPruneUnreadableTreeKeepsEverything(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	a := snapWith(t, v, "a", randBytes(1, 2<<20))
	var lost vault.ID
	lost[0] = 7
	m := snapshotOfTree(t, v, "m", encodeTree(t, format.Node{Kind: format.KindDir, Name: []byte("d"), Subtree: lost}))
	if _, err := v.Forget(ctx, []vault.ID{a.ID}, "tester"); err != nil {
		t.Fatal(err)
	}
	e.clock.advance(15 * day)
	packs := len(packSizes(t, e.store))
	for _, dry := range []bool{true, false} {
		rep, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester", DryRun: dry})
		if err != nil {
			t.Fatalf("prune (dry run %v) stopped at an unreadable tree: %v", dry, err)
		}
		if !rep.Incomplete || rep.Condemned != 0 || rep.Deleted != 0 || rep.Repacked != 0 {
			t.Errorf("prune (dry run %v) with an unreadable tree: incomplete %v, condemned %d, deleted %d, repacked %d; want nothing condemned", dry, rep.Incomplete, rep.Condemned, rep.Deleted, rep.Repacked)
		}
		if len(rep.Unwalkable) != 1 || rep.Unwalkable[0].Snapshot != m.ID || !strings.Contains(rep.Unwalkable[0].Reason, "cannot be read") {
			t.Errorf("prune (dry run %v) reported %+v, want snapshot %s's tree as unreadable", dry, rep.Unwalkable, m.ID.Short())
		}
		if len(rep.Expired) != 1 {
			t.Errorf("prune (dry run %v) expired %d snapshots, want a", dry, len(rep.Expired))
		}
	}
	if n := len(packSizes(t, e.store)); n != packs {
		t.Errorf("%d packs after prune, want all %d kept", n, packs)
	}
	// Forgotten and expired, the unreadable snapshot no longer holds
	// anything back.
	if _, err := v.Forget(ctx, []vault.ID{m.ID}, "tester"); err != nil {
		t.Fatal(err)
	}
	e.clock.advance(15 * day)
	rep, err := v.Prune(ctx, engine.PruneOptions{Principal: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Incomplete || rep.Deleted == 0 {
		t.Errorf("prune once the unreadable snapshot expired: incomplete %v, %d packs deleted", rep.Incomplete, rep.Deleted)
	}
}
