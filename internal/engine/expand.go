package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TreeCounts is what a snapshot tree expands to, path by path: entries
// that are not directories (files, symlinks, devices, FIFOs), directories
// and the files' bytes, as a restore would create them.
type TreeCounts struct {
	Files, Dirs, Bytes uint64
}

func (c *TreeCounts) add(o TreeCounts) {
	c.Files = satAdd(c.Files, o.Files)
	c.Dirs = satAdd(c.Dirs, o.Dirs)
	c.Bytes = satAdd(c.Bytes, o.Bytes)
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// MaxTreeDepth is the deepest directory nesting ExpandTree accepts: a
// backup reads each path whole, and the kernel limits a path to PATH_MAX
// (4096 bytes), so no genuine tree is deeper than 2048 levels.
const MaxTreeDepth = 4096

// ErrCountsMismatch reports a snapshot whose record counts fewer entries
// or bytes than its trees expand to.
var ErrCountsMismatch = errors.New("the snapshot's record counts fewer entries than its trees hold")

// ExpandTree counts what tree root expands to, loading each distinct tree
// once (a tree named twice counts twice but is read once): its cost is
// the number of distinct trees, however many paths they expand to. known,
// if set, returns counts learnt before (trees are immutable: a tree ID
// always expands the same), and learn is told each tree's counts.
func ExpandTree(ctx context.Context, repo interface {
	LoadTree(context.Context, vault.ID) (*format.Tree, error)
}, root vault.ID, known func(vault.ID) (TreeCounts, bool), learn func(vault.ID, TreeCounts)) (TreeCounts, error) {
	memo := map[vault.ID]TreeCounts{}
	var visit func(id vault.ID, depth int) (TreeCounts, error)
	visit = func(id vault.ID, depth int) (TreeCounts, error) {
		if c, ok := memo[id]; ok {
			return c, nil
		}
		if known != nil {
			if c, ok := known(id); ok {
				return c, nil
			}
		}
		if depth > MaxTreeDepth {
			return TreeCounts{}, fmt.Errorf("%w: directories nest more than %d levels deep, deeper than any path a backup can read", vault.ErrCorrupt, MaxTreeDepth)
		}
		if err := ctx.Err(); err != nil {
			return TreeCounts{}, err
		}
		t, err := repo.LoadTree(ctx, id)
		if err != nil {
			return TreeCounts{}, fmt.Errorf("tree %s: %w", id.Short(), err)
		}
		var c TreeCounts
		for i := range t.Nodes {
			n := &t.Nodes[i]
			switch n.Kind {
			case format.KindDir:
				c.Dirs = satAdd(c.Dirs, 1)
				sub, err := visit(n.Subtree, depth+1)
				if err != nil {
					return TreeCounts{}, err
				}
				c.add(sub)
			case format.KindFile:
				c.Files = satAdd(c.Files, 1)
				c.Bytes = satAdd(c.Bytes, n.Size)
			default:
				c.Files = satAdd(c.Files, 1)
			}
		}
		memo[id] = c
		if learn != nil {
			learn(id, c)
		}
		return c, nil
	}
	return visit(root, 0)
}

// CheckCounts refuses a snapshot record that counts fewer entries or
// bytes than its trees expand to (got, from ExpandTree), so that a
// record, which `coffer snapshots` shows and which bounds what a restore
// of it walks, never understates how big that restore is. The record's
// Dirs leave out the directories above its paths (a backup does not walk
// them); a record may count more than its trees hold (files that could
// not be read are counted, then left out).
func CheckCounts(rec vault.SnapshotRecord, got TreeCounts) error {
	dirs := rec.Dirs
	for _, p := range rec.Paths {
		dirs = satAdd(dirs, uint64(strings.Count(p, "/")))
	}
	if got.Files > rec.Files || got.Dirs > dirs || got.Bytes > rec.Bytes {
		return fmt.Errorf("%w: its trees expand to %d files, %d directories and %d bytes; its record says %d, %d (with the %d directories above its paths) and %d: count what the trees hold",
			ErrCountsMismatch, got.Files, got.Dirs, got.Bytes, rec.Files, dirs, dirs-rec.Dirs, rec.Bytes)
	}
	return nil
}
