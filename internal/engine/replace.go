package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file replaces a snapshot by one derived from it (tag, rewrite:
// docs/format.md §8.5). A replacement is never a way to write history:
//
//   - it keeps the original's time, host, paths, parent, dedup domain,
//     duration and source report, copied here from the verified record, never taken from the
//     caller, so no one can date or host a snapshot by "replacing" one;
//   - the original is forgotten in the same chain append as the add, so a
//     replacement never adds a time to the live list, and it is a
//     deletion: it obeys the minimum retention like forget;
//   - its tree is the original's, or one whose every entry the original
//     holds unchanged (treeSubset): rewrite may drop files, never add or
//     change one;
//   - its add entry names the original's writer (the host's binding,
//     docs/retention.md), the forget entry who made the change.

// Derived is what a replacement may change: its tags, and for a rewrite
// its tree and the counts that go with it.
type Derived struct {
	Tags               []string
	Tree               vault.ID // zero: the original's
	Files, Dirs, Bytes uint64   // with Tree
	BytesAdded         uint64   // with Tree: what writing the new trees added
}

// ErrUnchanged reports a replacement that would change nothing: no new
// snapshot is written and nothing is forgotten.
var ErrUnchanged = errors.New("nothing to change")

// Replace records a snapshot derived from the live snapshot old (derive
// says what differs) and forgets old, in one chain append. It returns the
// new record and old's. ErrUnchanged (wrapped) when derive changes
// nothing; a protection error when old may not be forgotten yet.
func (v *Vault) Replace(ctx context.Context, old vault.ID, derive func(vault.SnapshotRecord) (Derived, error), principal string) (vault.SnapshotRecord, vault.SnapshotRecord, error) {
	if err := v.checkSession(); err != nil {
		return vault.SnapshotRecord{}, vault.SnapshotRecord{}, err
	}
	all, chain, err := v.verifiedList(ctx)
	if err != nil {
		return vault.SnapshotRecord{}, vault.SnapshotRecord{}, err
	}
	settings, err := v.Settings(ctx)
	if err != nil {
		return vault.SnapshotRecord{}, vault.SnapshotRecord{}, err
	}
	var orig vault.SnapshotRecord
	found := false
	for _, s := range all {
		if s.ID == old {
			orig, found = s, true
		}
	}
	switch {
	case !found:
		return orig, orig, fmt.Errorf("snapshot %s: %w", old.Short(), vault.ErrNotFound)
	case !orig.Deleted.IsZero():
		return orig, orig, fmt.Errorf("snapshot %s was forgotten on %s: undelete it first", old.Short(), orig.Deleted.Format(time.RFC3339))
	}
	// The sealed object too, as every reader of a snapshot does: the
	// replacement inherits its fields.
	stored, link, err := v.loadSnapshotLinked(ctx, orig.ID)
	if err != nil {
		return orig, orig, err
	}
	if d := chain.checkObject(orig, stored, link); d != "" {
		return orig, orig, fmt.Errorf("snapshot %s: %w: %s", orig.ID.Short(), vault.ErrCorrupt, d)
	}
	now := v.opt.Now().UTC()
	// SECURITY: replacing forgets the original; the minimum retention
	// that keeps it from forget keeps it from being replaced too.
	if err := protect.Forget(settings, orig, now); err != nil {
		return orig, orig, fmt.Errorf("snapshot %s was not changed: %w", orig.ID.Short(), err)
	}
	d, err := derive(orig)
	if err != nil {
		return orig, orig, err
	}
	// SECURITY: everything but what a replacement may change is the
	// original's, whatever derive returned.
	n := orig
	n.ID, n.Deleted, n.DeletedBy = vault.ID{}, time.Time{}, ""
	// The source report, which the catalog does not hold, from the
	// verified sealed object (docs/format.md §8.7).
	n.Source = stored.Source
	n.Tags = d.Tags
	if n.Tags == nil {
		n.Tags = []string{}
	}
	if !d.Tree.IsZero() && d.Tree != orig.Tree {
		r, err := v.treeLoader(orig.Domain)
		if err != nil {
			return orig, orig, err
		}
		if err := treeSubset(ctx, r, d.Tree, orig.Tree); err != nil {
			return orig, orig, fmt.Errorf("snapshot %s: the new tree is not part of the original: %w", orig.ID.Short(), err)
		}
		got, err := ExpandTree(ctx, r, d.Tree, nil, nil)
		if err != nil {
			return orig, orig, err
		}
		n.Tree, n.Files, n.Dirs, n.Bytes, n.BytesAdded = d.Tree, got.Files, got.Dirs, got.Bytes, d.BytesAdded
	}
	if n.Tree == orig.Tree && slices.Equal(n.Tags, orig.Tags) {
		return orig, orig, fmt.Errorf("snapshot %s: %w", orig.ID.Short(), ErrUnchanged)
	}
	if err := format.CheckSnapshot(n); err != nil {
		return orig, orig, err
	}
	rand.Read(n.ID[:])
	// The add names the original's writer: a change by an owner must not
	// take the host from the agent or token that backs it up.
	writer := chain.states[orig.ID].first.Principal
	forget := []chainChange{{kind: vault.ChainForget, snapshot: orig.ID, at: now, by: principal}}
	if err := v.recordSnapshotWith(ctx, n, writer, forget); err != nil {
		v.event(ctx, principal, vault.EventForget, fmt.Sprintf("failed to replace %s: %v", orig.ID.Short(), err), false)
		return orig, orig, fmt.Errorf("snapshot %s was not changed: %w", orig.ID.Short(), err)
	}
	orig.Deleted, orig.DeletedBy = now, principal
	expiry := protect.Expiry(settings, now)
	err = v.event(ctx, principal, vault.EventForget, fmt.Sprintf("replaced %s by %s; the original is recoverable until %s", orig.ID.Short(), n.ID.Short(), expiry.Format(time.RFC3339)), true)
	return n, orig, err
}

// treeSubset checks that tree sub holds only entries that tree of holds,
// unchanged: same name and metadata, same content, and for a directory a
// subtree that is itself a subset of the original's. Both are read
// through r (their IDs checked in the snapshot's domain). Every pair is
// compared once, so the work is bounded by the trees' sizes.
func treeSubset(ctx context.Context, r domainReader, sub, of vault.ID) error {
	seen := map[[2]vault.ID]bool{}
	var walk func(sub, of vault.ID, path string, depth int) error
	walk = func(sub, of vault.ID, path string, depth int) error {
		if sub == of || seen[[2]vault.ID{sub, of}] {
			return nil
		}
		if depth > maxTreeDepth {
			return fmt.Errorf("%s: deeper than %d directories", path, maxTreeDepth)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		seen[[2]vault.ID{sub, of}] = true
		ts, err := r.LoadTree(ctx, sub)
		if err != nil {
			return err
		}
		to, err := r.LoadTree(ctx, of)
		if err != nil {
			return err
		}
		for i := range ts.Nodes {
			a := &ts.Nodes[i]
			p := path + "/" + string(a.Name)
			b := to.Find(a.Name)
			if b == nil {
				return fmt.Errorf("%s is not in the original", p)
			}
			if !sameNode(a, b) {
				return fmt.Errorf("%s differs from the original's", p)
			}
			if a.Kind == format.KindDir {
				if err := walk(a.Subtree, b.Subtree, p, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(sub, of, "", 0)
}

// maxTreeDepth bounds treeSubset's recursion (a path of 8192 bytes has at
// most 4096 components).
const maxTreeDepth = 4096

// sameNode reports whether a and b are equal but for a directory's
// subtree (which treeSubset compares itself).
func sameNode(a, b *format.Node) bool {
	if a.Kind != b.Kind || a.Perm != b.Perm || a.UID != b.UID || a.GID != b.GID || a.Size != b.Size ||
		a.MTime != b.MTime || a.CTime != b.CTime || a.Inode != b.Inode || a.Device != b.Device ||
		a.NLink != b.NLink || a.RDev != b.RDev || string(a.Name) != string(b.Name) || string(a.Target) != string(b.Target) ||
		!slices.Equal(a.Content, b.Content) || len(a.Xattrs) != len(b.Xattrs) {
		return false
	}
	for i := range a.Xattrs {
		if string(a.Xattrs[i].Name) != string(b.Xattrs[i].Name) || string(a.Xattrs[i].Value) != string(b.Xattrs[i].Value) {
			return false
		}
	}
	return true
}

// RewriteTree writes, in the dedup domain of snapshot s, the trees of s
// without the entries drop chooses (drop gets each entry's absolute path
// as backup saw it, and whether it is a directory; a dropped directory
// goes with everything below it). It returns the new root and whether
// anything was dropped; data blobs are never read or written, only trees
// that change are stored. The walk visits at most the entries s's record
// counts, so a tree that expands past them stops it (as restore does).
// The caller flushes before it records the result (Replace).
func (v *Vault) RewriteTree(ctx context.Context, s vault.SnapshotRecord, drop func(path string, isDir bool) bool) (vault.ID, bool, error) {
	w, err := v.InDomain(s.Domain)
	if err != nil {
		return vault.ID{}, false, err
	}
	// The record counts what is below the backed-up paths; the
	// directories above them (home, ann for /home/ann/docs) come on top.
	budget := s.Files + s.Dirs + 1
	for _, p := range s.Paths {
		budget += uint64(strings.Count(p, "/"))
	}
	var walk func(id vault.ID, path string, depth int) (vault.ID, bool, error)
	walk = func(id vault.ID, path string, depth int) (vault.ID, bool, error) {
		if depth > maxTreeDepth {
			return id, false, fmt.Errorf("%s: deeper than %d directories", path, maxTreeDepth)
		}
		if err := ctx.Err(); err != nil {
			return id, false, err
		}
		t, err := w.LoadTree(ctx, id)
		if err != nil {
			return id, false, err
		}
		out := &format.Tree{Nodes: make([]format.Node, 0, len(t.Nodes))}
		changed := false
		for _, n := range t.Nodes {
			if budget == 0 {
				return id, false, fmt.Errorf("snapshot %s: %w: its trees hold more entries than its record counts (%d files, %d directories)", s.ID.Short(), vault.ErrCorrupt, s.Files, s.Dirs)
			}
			budget--
			p := path + "/" + string(n.Name)
			if drop(p, n.Kind == format.KindDir) {
				changed = true
				continue
			}
			if n.Kind == format.KindDir {
				sub, ch, err := walk(n.Subtree, p, depth+1)
				if err != nil {
					return id, false, err
				}
				if ch {
					n.Subtree, changed = sub, true
				}
			}
			out.Nodes = append(out.Nodes, n)
		}
		if !changed {
			return id, false, nil
		}
		nid, err := w.SaveTree(ctx, out)
		return nid, true, err
	}
	return walk(s.Tree, "", 0)
}

// TagChange is a change of a snapshot's tags, as restic's tag command
// makes it: Set (when not nil) replaces them all, then Remove takes tags
// away and Add appends those not there yet.
type TagChange struct {
	Set         *[]string
	Add, Remove []string
}

// Apply returns tags changed by c.
func (c TagChange) Apply(tags []string) []string {
	out := []string{}
	base := tags
	if c.Set != nil {
		base = *c.Set
	}
	for _, t := range base {
		if !slices.Contains(c.Remove, t) && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	for _, t := range c.Add {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// Retag replaces snapshot id by one whose tags c changed (Replace).
func (v *Vault) Retag(ctx context.Context, id vault.ID, c TagChange, principal string) (vault.SnapshotRecord, vault.SnapshotRecord, error) {
	return v.Replace(ctx, id, func(s vault.SnapshotRecord) (Derived, error) {
		return Derived{Tags: c.Apply(s.Tags)}, nil
	}, principal)
}
