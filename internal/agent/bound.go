package agent

import (
	"errors"
	"fmt"
	"strings"

	"github.com/coffer-backup/coffer/internal/vault"
)

// ErrTooManyEntries reports a snapshot whose trees expand to more entries
// than its record counts: trees that point several times to one subtree
// (a "tree bomb": 40 small trees can name 2^40 paths), written by a
// hostile writer or served by a hostile server. Restore, ls and diff stop
// there instead of walking until memory or time runs out.
var ErrTooManyEntries = errors.New("the snapshot's trees hold more entries than its record says")

// ErrPathTooLong reports a snapshot path longer than MaxPathBytes.
var ErrPathTooLong = errors.New("path in the snapshot is too long")

// MaxPathBytes is the longest path a walk of a snapshot accepts. A backup
// reads each file by its full path, which the kernel limits to PATH_MAX
// (4096 bytes on Linux), so no genuine snapshot holds a longer one; the
// bound keeps a hostile tree's depth, and the paths held along it, small.
const MaxPathBytes = 2 * 4096

// entrySlack is what a walk allows beyond a record's Files+Dirs and the
// directories above its paths: a margin, not a ratio.
const entrySlack = 64

// MaxEntries is the most entries (directories, files, symlinks, devices…)
// a walk of snapshot s visits: what its record counts (Files counts every
// entry that is not a directory; Dirs every directory walked), the
// directories above its backed-up paths, which the record does not count,
// and a small slack. The server refuses a snapshot whose trees expand to
// more (a snapshot's counts are sealed into its record and the chain), so
// only a hostile server or vault directory makes a walk reach this bound.
func MaxEntries(s vault.SnapshotRecord) uint64 {
	n := satAdd(satAdd(s.Files, s.Dirs), entrySlack)
	for _, p := range s.Paths {
		n = satAdd(n, uint64(strings.Count(p, "/")))
	}
	return n
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// entryBudget counts the entries a walk visits against a bound (0: none).
type entryBudget struct {
	max, n uint64
}

// take counts one entry at path p.
func (b *entryBudget) take(p string) error {
	if len(p) > MaxPathBytes {
		return fmt.Errorf("%w: %q… is %d bytes, longer than any path a backup can read (%d): the snapshot's trees are malformed or hostile", ErrPathTooLong, p[:64], len(p), MaxPathBytes)
	}
	if b == nil || b.max == 0 {
		return nil
	}
	b.n++
	if b.n > b.max {
		return fmt.Errorf("%w: stopped after %d entries, at %q: its trees point to the same subtrees many times over (a tree bomb) or were altered; nothing more is read. If you trust this vault and the snapshot was made by a coffer that did not count symlinks and special files, rerun with a larger --max-entries", ErrTooManyEntries, b.max, short(p))
	}
	return nil
}

// short cuts an untrusted path for a message.
func short(p string) string {
	if len(p) > 256 {
		return p[:256] + "…"
	}
	return p
}
