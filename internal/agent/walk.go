package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TreeLoader loads trees.
type TreeLoader interface {
	LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error)
}

// Walk calls fn for every node below root, depth first in name order, with
// its absolute path in the snapshot. With prefix set ("/home/ann") only that
// node and what lies below it are visited; a prefix that does not exist is
// an error wrapping vault.ErrNotFound. With max > 0 (MaxEntries of the
// snapshot's record) the walk stops with ErrTooManyEntries once it has
// visited max entries; its memory is the depth of the tree, whatever the
// trees expand to. When fn returns fs.SkipDir for a directory, Walk does
// not descend into it.
func Walk(ctx context.Context, repo TreeLoader, root vault.ID, prefix string, max uint64, fn func(p string, n *format.Node) error) error {
	return walkFrom(ctx, repo, repo, root, prefix, max, fn)
}

// WalkAhead is Walk for a walk that enters every directory below prefix
// (fn never returns fs.SkipDir): through a BatchLoader (a vault server),
// the trees below prefix are loaded ahead, many per request
// (PrefetchTrees), instead of one request per directory. The trees on
// the way to prefix are loaded one by one, so that no tree beside it is.
func WalkAhead(ctx context.Context, repo TreeLoader, root vault.ID, prefix string, max uint64, fn func(p string, n *format.Node) error) error {
	below, stop := PrefetchTrees(ctx, repo)
	defer stop()
	return walkFrom(ctx, repo, below, root, prefix, max, fn)
}

// walkFrom is Walk, loading the trees on the way to prefix with repo and
// those below it with below.
func walkFrom(ctx context.Context, repo, below TreeLoader, root vault.ID, prefix string, max uint64, fn func(p string, n *format.Node) error) error {
	b := &entryBudget{max: max}
	prefix = path.Clean("/" + prefix)
	id := root
	dir := "/"
	if prefix != "/" {
		parts := strings.Split(strings.TrimPrefix(prefix, "/"), "/")
		for i, part := range parts {
			t, err := repo.LoadTree(ctx, id)
			if err != nil {
				return err
			}
			n := t.Find([]byte(part))
			if n == nil {
				return fmt.Errorf("%s: %w in the snapshot", prefix, vault.ErrNotFound)
			}
			p := path.Join(dir, part)
			if err := b.take(p); err != nil {
				return err
			}
			if i == len(parts)-1 {
				if err := fn(p, n); errors.Is(err, fs.SkipDir) {
					return nil
				} else if err != nil {
					return err
				}
				if n.Kind != format.KindDir {
					return nil
				}
			} else if n.Kind != format.KindDir {
				return fmt.Errorf("%s: %s is not a directory: %w", prefix, p, vault.ErrNotFound)
			}
			id, dir = n.Subtree, p
		}
	}
	return walk(ctx, below, id, dir, b, fn)
}

func walk(ctx context.Context, repo TreeLoader, id vault.ID, dir string, b *entryBudget, fn func(string, *format.Node) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := repo.LoadTree(ctx, id)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		p := path.Join(dir, string(n.Name))
		if err := b.take(p); err != nil {
			return err
		}
		err := fn(p, n)
		if errors.Is(err, fs.SkipDir) {
			continue
		}
		if err != nil {
			return err
		}
		if n.Kind == format.KindDir {
			if err := walk(ctx, repo, n.Subtree, p, b, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// Change is one difference between two snapshots.
type Change struct {
	Path string
	Op   byte // '+' added, '-' removed, 'M' content changed, 'T' type changed, 'U' metadata only
}

// Diff compares two snapshot trees. With max > 0 (the sum of both
// snapshots' MaxEntries) it stops with ErrTooManyEntries once it has
// visited max entries of the two.
func Diff(ctx context.Context, repo TreeLoader, a, b vault.ID, max uint64, fn func(Change) error) error {
	if bl, ok := repo.(BatchLoader); ok {
		// Through a vault server: the trees of the directories that
		// differ are loaded ahead, both sides' in one request.
		pctx, cancel := context.WithCancel(ctx)
		p := newTreePrefetch(pctx, bl, repo)
		p.manual = true
		defer p.wait()
		defer cancel()
		repo = prefetchLoader{p}
		p.want(a, b)
	}
	return diffTrees(ctx, repo, a, b, "/", &entryBudget{max: max}, fn)
}

// wanter is a TreeLoader that loads trees ahead when asked (diff's
// prefetching loader).
type wanter interface{ want(ids ...vault.ID) }

func diffTrees(ctx context.Context, repo TreeLoader, a, b vault.ID, dir string, bud *entryBudget, fn func(Change) error) error {
	if a == b {
		return nil // identical subtrees: nothing below differs
	}
	ta, err := repo.LoadTree(ctx, a)
	if err != nil {
		return err
	}
	tb, err := repo.LoadTree(ctx, b)
	if err != nil {
		return err
	}
	if w, ok := repo.(wanter); ok {
		// The subdirectories present on both sides that differ: the
		// only ones diff enters.
		var ids []vault.ID
		for i, j := 0, 0; i < len(ta.Nodes) && j < len(tb.Nodes); {
			switch c := bytes.Compare(ta.Nodes[i].Name, tb.Nodes[j].Name); {
			case c < 0:
				i++
			case c > 0:
				j++
			default:
				na, nb := &ta.Nodes[i], &tb.Nodes[j]
				if na.Kind == format.KindDir && nb.Kind == format.KindDir && na.Subtree != nb.Subtree {
					ids = append(ids, na.Subtree, nb.Subtree)
				}
				i++
				j++
			}
		}
		w.want(ids...)
	}
	i, j := 0, 0
	for i < len(ta.Nodes) || j < len(tb.Nodes) {
		var c int
		switch {
		case i == len(ta.Nodes):
			c = 1
		case j == len(tb.Nodes):
			c = -1
		default:
			c = bytes.Compare(ta.Nodes[i].Name, tb.Nodes[j].Name)
		}
		switch {
		case c < 0:
			if err := emitAll(ctx, repo, &ta.Nodes[i], dir, '-', bud, fn); err != nil {
				return err
			}
			i++
		case c > 0:
			if err := emitAll(ctx, repo, &tb.Nodes[j], dir, '+', bud, fn); err != nil {
				return err
			}
			j++
		default:
			na, nb := &ta.Nodes[i], &tb.Nodes[j]
			p := path.Join(dir, string(na.Name))
			// Both sides' entries count: each is an entry of its snapshot.
			if err := bud.take(p); err != nil {
				return err
			}
			if err := bud.take(p); err != nil {
				return err
			}
			if na.Kind != nb.Kind {
				if err := fn(Change{p, 'T'}); err != nil {
					return err
				}
			} else if na.Kind == format.KindDir {
				if metaDiffers(na, nb) {
					if err := fn(Change{p, 'U'}); err != nil {
						return err
					}
				}
				if err := diffTrees(ctx, repo, na.Subtree, nb.Subtree, p, bud, fn); err != nil {
					return err
				}
			} else if contentDiffers(na, nb) {
				if err := fn(Change{p, 'M'}); err != nil {
					return err
				}
			} else if metaDiffers(na, nb) {
				if err := fn(Change{p, 'U'}); err != nil {
					return err
				}
			}
			i++
			j++
		}
	}
	return nil
}

func emitAll(ctx context.Context, repo TreeLoader, n *format.Node, dir string, op byte, bud *entryBudget, fn func(Change) error) error {
	p := path.Join(dir, string(n.Name))
	if err := bud.take(p); err != nil {
		return err
	}
	if err := fn(Change{p, op}); err != nil {
		return err
	}
	if n.Kind != format.KindDir {
		return nil
	}
	return walk(ctx, repo, n.Subtree, p, bud, func(q string, _ *format.Node) error { return fn(Change{q, op}) })
}

func contentDiffers(a, b *format.Node) bool {
	if a.Size != b.Size || len(a.Content) != len(b.Content) || !bytes.Equal(a.Target, b.Target) || a.RDev != b.RDev {
		return true
	}
	for i := range a.Content {
		if a.Content[i] != b.Content[i] {
			return true
		}
	}
	return false
}

func metaDiffers(a, b *format.Node) bool {
	if a.Perm != b.Perm || a.UID != b.UID || a.GID != b.GID || a.MTime != b.MTime || len(a.Xattrs) != len(b.Xattrs) {
		return true
	}
	for i := range a.Xattrs {
		if !bytes.Equal(a.Xattrs[i].Name, b.Xattrs[i].Name) || !bytes.Equal(a.Xattrs[i].Value, b.Xattrs[i].Value) {
			return true
		}
	}
	return false
}
