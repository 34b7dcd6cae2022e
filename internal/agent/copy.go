package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// CopySource is what copy reads of the source vault: its trees and data,
// each checked against its ID in the source's domain by the reader.
type CopySource interface {
	LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error)
	LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error)
}

// Copier copies snapshots from one vault to another (coffer copy,
// docs/format.md §8.6). Each side keeps its keys: every chunk is read as
// plaintext from the source and identified with the destination's chunk-
// ID key, so IDs are those of the destination's dedup domain, and the
// destination stores (seals) only what it lacks. No re-chunking: chunk
// boundaries stay the source's. A Copier remembers the IDs it translated,
// so snapshots sharing data cost one read of it per run.
type Copier struct {
	src    CopySource
	dst    BackupRepo
	hasher *format.IDHasher
	codec  *format.Codec
	now    func() time.Time
	trees  map[vault.ID]vault.ID
	chunks map[vault.ID]vault.ID
	// Read and Sent count chunks read from the source and chunks the
	// destination did not have.
	Read, Sent int
}

// NewCopier returns a copier from src to dst.
func NewCopier(src CopySource, dst BackupRepo, now func() time.Time) *Copier {
	return &Copier{src: src, dst: dst, now: now, hasher: format.NewIDHasher(dst.Dedup().ChunkIDKey), codec: format.NewCodec(),
		trees: map[vault.ID]vault.ID{}, chunks: map[vault.ID]vault.ID{}}
}

// Copy copies snapshot s of vault srcVault and saves it in the
// destination as a copy (vault.SnapshotCopy): same host, paths, tags and
// statistics; the destination records its own time. The walk visits at
// most the entries s's record counts.
func (c *Copier) Copy(ctx context.Context, srcVault vault.ID, s vault.SnapshotRecord) (vault.SnapshotRecord, error) {
	budget := s.Files + s.Dirs + 1
	for _, p := range s.Paths {
		budget += uint64(strings.Count(p, "/"))
	}
	root, err := c.tree(ctx, s, s.Tree, &budget, 0)
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	if err := c.dst.Flush(ctx); err != nil {
		return vault.SnapshotRecord{}, err
	}
	// SECURITY: the copy's time is when the destination records it (a
	// server stamps its own anyway); the original's is in Copy only, so
	// a copy never dates itself for latest, retention or the minimum
	// retention (docs/format.md §8.6).
	n := vault.SnapshotRecord{Time: c.now().UTC(), Host: s.Host, Paths: s.Paths, Tags: s.Tags, Tree: root,
		Files: s.Files, Dirs: s.Dirs, Bytes: s.Bytes, Duration: s.Duration,
		Copy: &vault.SnapshotCopy{Vault: srcVault, Snapshot: s.ID, Time: s.Time},
		// The original machine's report, as the source vault's sealed
		// object holds it (s must come from FindSnapshot: listings leave
		// it out); the copy's copied_from says where it came from
		// (docs/format.md §8.7).
		Source: s.Source}
	if n.Tags == nil {
		n.Tags = []string{}
	}
	return c.dst.SaveSnapshot(ctx, n)
}

// tree translates tree id of s and its subtrees, returning the ID of the
// destination's copy.
func (c *Copier) tree(ctx context.Context, s vault.SnapshotRecord, id vault.ID, budget *uint64, depth int) (vault.ID, error) {
	if d, ok := c.trees[id]; ok {
		return d, nil
	}
	if depth > 4096 {
		return vault.ID{}, fmt.Errorf("snapshot %s: trees nest deeper than 4096 directories", s.ID.Short())
	}
	if err := ctx.Err(); err != nil {
		return vault.ID{}, err
	}
	t, err := c.src.LoadTree(ctx, id)
	if err != nil {
		return vault.ID{}, err
	}
	out := &format.Tree{Nodes: make([]format.Node, len(t.Nodes))}
	for i, n := range t.Nodes {
		if *budget == 0 {
			return vault.ID{}, fmt.Errorf("snapshot %s: %w: its trees hold more entries than its record counts", s.ID.Short(), vault.ErrCorrupt)
		}
		*budget--
		switch n.Kind {
		case format.KindDir:
			if n.Subtree, err = c.tree(ctx, s, n.Subtree, budget, depth+1); err != nil {
				return vault.ID{}, err
			}
		case format.KindFile:
			content := make([]vault.ID, len(n.Content))
			for j, ch := range n.Content {
				if content[j], err = c.chunk(ctx, ch); err != nil {
					return vault.ID{}, fmt.Errorf("snapshot %s: %w", s.ID.Short(), err)
				}
			}
			n.Content = content
		}
		out.Nodes[i] = n
	}
	enc, err := format.EncodeTree(nil, out)
	if err != nil {
		return vault.ID{}, err
	}
	d := c.hasher.ID(enc)
	if !c.dst.Has(vault.TreeBlob, d) {
		if _, err := c.dst.SaveBlob(ctx, vault.TreeBlob, d, c.codec.Encode(nil, enc), len(enc)); err != nil {
			return vault.ID{}, err
		}
	}
	c.trees[id] = d
	return d, nil
}

// chunk reads data blob id from the source and stores it in the
// destination under its destination ID, unless the destination holds it.
func (c *Copier) chunk(ctx context.Context, id vault.ID) (vault.ID, error) {
	if d, ok := c.chunks[id]; ok {
		return d, nil
	}
	data, err := c.src.LoadBlob(ctx, vault.DataBlob, id, nil)
	if err != nil {
		return vault.ID{}, err
	}
	c.Read++
	d := c.hasher.ID(data)
	held := c.dst.Has(vault.DataBlob, d)
	if p, ok := c.dst.(storedProber); ok && !held {
		h, err := p.Stored(ctx, vault.DataBlob, []vault.ID{d})
		if err != nil {
			return vault.ID{}, err
		}
		held = h[0]
	}
	if !held {
		isNew, err := c.dst.SaveBlob(ctx, vault.DataBlob, d, c.codec.Encode(nil, data), len(data))
		if err != nil {
			return vault.ID{}, err
		}
		if isNew {
			c.Sent++
		}
	}
	c.chunks[id] = d
	return d, nil
}

// SameCopy reports whether the destination's snapshot d is a copy of the
// source's snapshot s: the same host, paths, tags and counts, and trees
// that match node for node (names, kinds, metadata, sizes, chunk counts,
// link targets). Only trees are read, on both sides. A snapshot whose
// copied_from merely claims s (anyone who may write the destination can
// claim anything) fails it unless it reproduces s's whole listing, so a
// planted claim cannot make copy skip s. Chunk contents are not compared:
// that would read all data; check --read-data on the destination proves
// every chunk against its ID.
func SameCopy(ctx context.Context, src CopySource, s vault.SnapshotRecord, dst CopySource, d vault.SnapshotRecord) (bool, error) {
	if d.Host != s.Host || !slices.Equal(d.Paths, s.Paths) || !slices.Equal(d.Tags, s.Tags) && !(len(d.Tags) == 0 && len(s.Tags) == 0) ||
		d.Files != s.Files || d.Dirs != s.Dirs || d.Bytes != s.Bytes {
		return false, nil
	}
	budget := s.Files + s.Dirs + 1
	for _, p := range s.Paths {
		budget += uint64(strings.Count(p, "/"))
	}
	seen := map[[2]vault.ID]bool{}
	var walk func(a, b vault.ID, depth int) (bool, error)
	walk = func(a, b vault.ID, depth int) (bool, error) {
		if seen[[2]vault.ID{a, b}] {
			return true, nil
		}
		if depth > 4096 {
			return false, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		ta, err := src.LoadTree(ctx, a)
		if err != nil {
			return false, err
		}
		tb, err := dst.LoadTree(ctx, b)
		if err != nil {
			return false, err
		}
		if len(ta.Nodes) != len(tb.Nodes) {
			return false, nil
		}
		for i := range ta.Nodes {
			x, y := ta.Nodes[i], tb.Nodes[i]
			if budget == 0 {
				return false, fmt.Errorf("snapshot %s: %w: its trees hold more entries than its record counts", s.ID.Short(), vault.ErrCorrupt)
			}
			budget--
			if x.Kind != y.Kind || string(x.Name) != string(y.Name) || x.Perm != y.Perm || x.UID != y.UID || x.GID != y.GID ||
				x.Size != y.Size || x.MTime != y.MTime || x.CTime != y.CTime || x.Inode != y.Inode || x.Device != y.Device ||
				x.NLink != y.NLink || x.RDev != y.RDev || string(x.Target) != string(y.Target) || len(x.Content) != len(y.Content) ||
				len(x.Xattrs) != len(y.Xattrs) {
				return false, nil
			}
			for k := range x.Xattrs {
				if string(x.Xattrs[k].Name) != string(y.Xattrs[k].Name) || string(x.Xattrs[k].Value) != string(y.Xattrs[k].Value) {
					return false, nil
				}
			}
			if x.Kind == format.KindDir {
				ok, err := walk(x.Subtree, y.Subtree, depth+1)
				if err != nil || !ok {
					return ok, err
				}
			}
		}
		seen[[2]vault.ID{a, b}] = true
		return true, nil
	}
	return walk(s.Tree, d.Tree, 0)
}
