package engine_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

func tagsTo(tags ...string) func(vault.SnapshotRecord) (engine.Derived, error) {
	return func(vault.SnapshotRecord) (engine.Derived, error) { return engine.Derived{Tags: tags}, nil }
}

// A retag is a new snapshot with the original's time, host, paths and
// tree, and the original forgotten in the same chain append.
func TestReplaceTag(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	orig := snapshotOf(t, v, "web01", []byte("hello"))
	e.clock.t = e.clock.t.Add(48 * time.Hour) // the replacement is made much later
	n, old, err := v.Replace(ctx, orig.ID, tagsTo("keep"), "ann")
	if err != nil {
		t.Fatal(err)
	}
	if n.ID == orig.ID || !n.Time.Equal(orig.Time) || n.Host != orig.Host || !slices.Equal(n.Paths, orig.Paths) || n.Tree != orig.Tree || !slices.Equal(n.Tags, []string{"keep"}) {
		t.Fatalf("replacement %+v of %+v", n, orig)
	}
	if old.Deleted.IsZero() || old.DeletedBy != "ann" {
		t.Fatalf("original not forgotten: %+v", old)
	}
	live, err := v.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 || live[0].ID != n.ID {
		t.Fatalf("live %v, want only %s", live, n.ID.Short())
	}
	got, err := v.FindSnapshot(ctx, "latest")
	if err != nil || got.ID != n.ID {
		t.Fatalf("latest %v %v", got.ID.Short(), err)
	}
	if _, _, err := v.Replace(ctx, n.ID, tagsTo("keep"), "ann"); !errors.Is(err, engine.ErrUnchanged) {
		t.Fatalf("same tags again: %v", err)
	}
	if _, _, err := v.Replace(ctx, orig.ID, tagsTo("x"), "ann"); err == nil {
		t.Fatal("replaced a forgotten snapshot")
	}
	// The forgotten original comes back with undelete, as after forget.
	if _, err := v.Undelete(ctx, orig.ID, "ann"); err != nil {
		t.Fatal(err)
	}
	rep, err := v.Check(ctx, engine.CheckOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %+v", err, rep)
	}
}

// A snapshot the minimum retention keeps cannot be replaced: replacing
// forgets it.
func TestReplaceObeysMinimumRetention(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	if _, _, _, err := v.ChangeSettings(ctx, func(s *vault.VaultSettings) { s.MinRetention = 30 * 24 * time.Hour }, "ann", false); err != nil {
		t.Fatal(err)
	}
	orig := snapshotOf(t, v, "web01", []byte("hello"))
	_, _, err := v.Replace(ctx, orig.ID, tagsTo("x"), "ann")
	if err == nil || !strings.Contains(err.Error(), "minimum retention") {
		t.Fatalf("replace within the minimum retention: %v", err)
	}
	live, _ := v.Snapshots(ctx)
	if len(live) != 1 || live[0].ID != orig.ID {
		t.Fatalf("list changed: %v", live)
	}
}

// Rewrite drops entries; the new tree must be part of the original, so a
// "rewrite" cannot put other content under the original's date.
func TestReplaceRewrite(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	orig := snapshotOf(t, v, "web01", []byte("hello"))
	root, changed, err := v.RewriteTree(ctx, orig, func(p string, dir bool) bool { return p == "/dir/file" })
	if err != nil || !changed {
		t.Fatal(changed, err)
	}
	flush(t, v)
	n, _, err := v.Replace(ctx, orig.ID, func(s vault.SnapshotRecord) (engine.Derived, error) {
		return engine.Derived{Tags: s.Tags, Tree: root}, nil
	}, "ann")
	if err != nil {
		t.Fatal(err)
	}
	if n.Tree != root || n.Files != 0 || n.Dirs != 1 || n.Bytes != 0 || !n.Time.Equal(orig.Time) {
		t.Fatalf("rewritten %+v", n)
	}
	if _, changed, err := v.RewriteTree(ctx, n, func(string, bool) bool { return false }); err != nil || changed {
		t.Fatalf("nothing to drop: %v %v", changed, err)
	}
}

// The attacker (a caller of Replace) hands in a tree that adds a file, or
// changes one: refused, and nothing changes.
func TestAttackReplaceForeignTree(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	orig := snapshotOf(t, v, "web01", []byte("hello"))
	other := snapshotOf(t, v, "web02", []byte("planted"))
	origRoot, err := v.LoadTree(ctx, orig.Tree)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := v.LoadTree(ctx, origRoot.Nodes[0].Subtree)
	if err != nil {
		t.Fatal(err)
	}
	changed := *sub
	changed.Nodes = slices.Clone(sub.Nodes)
	changed.Nodes[0].MTime++
	cid, err := v.SaveTree(ctx, &changed)
	if err != nil {
		t.Fatal(err)
	}
	cRoot, err := v.SaveTree(ctx, &format.Tree{Nodes: []format.Node{{Kind: format.KindDir, Name: []byte("dir"), Perm: 0o755, Subtree: cid}}})
	if err != nil {
		t.Fatal(err)
	}
	flush(t, v)
	for name, tree := range map[string]vault.ID{"another snapshot's tree": other.Tree, "a changed file": cRoot} {
		_, _, err := v.Replace(ctx, orig.ID, func(s vault.SnapshotRecord) (engine.Derived, error) {
			return engine.Derived{Tags: s.Tags, Tree: tree}, nil
		}, "ann")
		if err == nil || !strings.Contains(err.Error(), "not part of the original") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	live, err := v.Snapshots(ctx)
	if err != nil || len(live) != 2 {
		t.Fatalf("list changed: %v %v", live, err)
	}
}
