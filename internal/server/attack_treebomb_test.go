package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// uploadBomb stores, as token, a tree bomb: levels trees in which each
// directory names the tree one level down twice, above a tree of one
// empty file. It returns the root, which expands to 2^levels files and
// 2^(levels+1)-2 directories from levels+1 trees.
func uploadBomb(a *arena, u *uploader, levels int) vault.ID {
	a.t.Helper()
	id, got, out := u.put(vault.TreeBlob, u.tree(format.Node{Kind: format.KindFile, Name: []byte("f"), Perm: 0o600}))
	if got != http.StatusOK {
		a.t.Fatalf("upload of the bomb's leaf: %d %s", got, out)
	}
	for range levels {
		id, got, out = u.put(vault.TreeBlob, u.tree(
			format.Node{Kind: format.KindDir, Name: []byte("a"), Perm: 0o700, Subtree: id},
			format.Node{Kind: format.KindDir, Name: []byte("b"), Perm: 0o700, Subtree: id}))
		if got != http.StatusOK {
			a.t.Fatalf("upload of a bomb tree: %d %s", got, out)
		}
	}
	a.mustStatus(http.StatusNoContent, "POST", "/v1/vaults/a/flush", u.token, nil)
	return id
}

// TestAttackTreeBombRecord: an operator uploads 41 valid trees that
// expand to 2^40 files and records a snapshot of them that claims a few
// entries, so that an owner's `restore latest` or `ls` walks without end.
// The server expands the trees' counts (each tree once) and refuses the
// record; a record whose counts are honest is accepted (its size shows
// in the snapshot list) and a small one restores and lists within them.
// On the code as found, the server recorded any counts.
func TestAttackTreeBombRecord(t *testing.T) {
	a := newArena(t)
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	u := a.uploader(operator)
	root := uploadBomb(a, u, 40)

	for _, c := range []struct {
		name              string
		files, dirs, size uint64
	}{
		{"zero counts", 0, 0, 0},
		{"a thousand entries", 1000, 1000, 0},
		{"files understated by one", 1<<40 - 1, 1<<41 - 2, 0},
		{"dirs understated", 1 << 40, 1000, 0},
	} {
		snap := api.Snapshot{Host: "h", Paths: []string{"/x"}, Tree: root.String(), Files: c.files, Dirs: c.dirs, Bytes: c.size}
		got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, snap)
		if got != http.StatusBadRequest {
			t.Errorf("snapshot of a tree bomb with %s: status %d, want 400: %s", c.name, got, out)
		}
	}
	if n := len(a.liveSnapshots()); n != 0 {
		t.Fatalf("%d snapshots recorded after the refusals", n)
	}

	// Honest counts are accepted: the record says how big the restore is.
	honest := api.Snapshot{Host: "h", Paths: []string{"/x"}, Tree: root.String(), Files: 1 << 40, Dirs: 1<<41 - 2}
	a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", operator, honest)
	snaps := a.liveSnapshots()
	if len(snaps) != 1 || snaps[0].Files != 1<<40 {
		t.Fatalf("snapshot list after an honest bomb: %+v", snaps)
	}

	// A small bomb with honest counts restores and lists within them.
	small := uploadBomb(a, u, 6)
	rec := api.Snapshot{Host: "h", Paths: []string{"/x"}, Tree: small.String(), Files: 64, Dirs: 126}
	a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", operator, rec)
	v := a.owner.Vault("a")
	max := agent.MaxEntries(vault.SnapshotRecord{Files: 64, Dirs: 126, Paths: rec.Paths})
	res, err := agent.Restore(context.Background(), v, small, agent.RestoreOptions{Target: t.TempDir(), MaxEntries: max})
	if err != nil || res.Files != 64 || res.Dirs != 126 {
		t.Fatalf("restore of an honest small snapshot: %v %+v", err, res)
	}
	// And its counts, understated, bound the owner's walks even if a
	// hostile server serves them (the client's own check).
	err = agent.Walk(context.Background(), v, small, "/", 100, func(string, *format.Node) error { return nil })
	if !errors.Is(err, agent.ErrTooManyEntries) {
		t.Errorf("walk of 190 entries bounded at 100: %v", err)
	}
	_, err = agent.Restore(context.Background(), v, root, agent.RestoreOptions{Target: t.TempDir(), MaxEntries: 1000})
	if !errors.Is(err, agent.ErrTooManyEntries) {
		t.Errorf("restore of the bomb bounded at 1000: %v", err)
	}
}

// TestAttackTreeBombDeep: a chain of directories deeper than any path a
// backup can read is refused as a snapshot, whatever its counts say.
func TestAttackTreeBombDeep(t *testing.T) {
	a := newArena(t)
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	u := a.uploader(operator)
	id, _, _ := u.put(vault.TreeBlob, u.tree(format.Node{Kind: format.KindFile, Name: []byte("f"), Perm: 0o600}))
	const depth = 4100
	for i := range depth {
		var got int
		var out []byte
		id, got, out = u.put(vault.TreeBlob, u.tree(format.Node{Kind: format.KindDir, Name: []byte(fmt.Sprint(i % 10)), Perm: 0o700, Subtree: id}))
		if got != http.StatusOK {
			t.Fatalf("upload of level %d: %d %s", i, got, out)
		}
	}
	a.mustStatus(http.StatusNoContent, "POST", "/v1/vaults/a/flush", operator, nil)
	snap := api.Snapshot{Host: "h", Paths: []string{"/x"}, Tree: id.String(), Files: 1, Dirs: depth}
	if got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, snap); got != http.StatusBadRequest {
		t.Errorf("snapshot of a %d-level chain: status %d, want 400: %s", depth, got, out)
	}
}

// TestRecordCountsGenuineBackupAccepted: a genuine remote backup with
// files, a symlink and nested directories is accepted under the count
// check (the agent counts what the server expands).
func TestRecordCountsGenuineBackupAccepted(t *testing.T) {
	a := newArena(t)
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"a/b/c": []byte("one"), "a/d": []byte("two"), "e": nil})
	if err := os.Symlink("a/d", src+"/link"); err != nil {
		t.Fatal(err)
	}
	rec := a.backupAs(operator, src, "h")
	if rec.Files != 4 {
		t.Errorf("record counts %d files, want 4 (3 files and a symlink)", rec.Files)
	}
}
