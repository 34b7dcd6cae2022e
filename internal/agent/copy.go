package agent

import (
	"bytes"
	"context"
	"errors"
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
	// The walk's trees and chunks waiting for a flush (see tree).
	list      []listedTree
	listNodes int
	listed    map[vault.ID]bool
	queue     []vault.ID
	queued    map[vault.ID]bool
	// Read and Sent count chunks read from the source and chunks the
	// destination did not have.
	Read, Sent int
}

// NewCopier returns a copier from src to dst.
func NewCopier(src CopySource, dst BackupRepo, now func() time.Time) *Copier {
	return &Copier{src: src, dst: dst, now: now, hasher: format.NewIDHasher(dst.Dedup().ChunkIDKey), codec: format.NewCodec(),
		trees: map[vault.ID]vault.ID{}, chunks: map[vault.ID]vault.ID{},
		listed: map[vault.ID]bool{}, queued: map[vault.ID]bool{}}
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
	// Through a vault server the source's trees are loaded ahead, many
	// per request: the walk enters every directory.
	c.list, c.listNodes, c.queue = nil, 0, nil // what a failed Copy left
	clear(c.listed)
	clear(c.queued)
	src, stop := PrefetchTrees(ctx, c.src)
	err := c.tree(ctx, s, src, s.Tree, &budget, 0)
	stop()
	if err == nil {
		err = c.flush(ctx, s)
	}
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	root := c.trees[s.Tree]
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

// Copy translates trees after their chunks, and chunks many at a time:
// the walk lists each source tree once all its subtrees are listed
// (post-order) and queues its chunks; a flush translates the queued
// chunks (a few requests through a vault server, see translate) and
// then writes the listed trees in order, so each tree's chunks and
// subtrees are translated when it is written. A flush runs when the
// queue holds copyBatch chunks, or the listed trees number copyTrees or
// hold copyNodes entries, and at the end: memory is those and the trees
// on the walk's path.
const (
	copyTrees = 1024
	copyNodes = 1 << 16
)

// listedTree is a source tree waiting for the next flush.
type listedTree struct {
	id vault.ID
	t  *format.Tree
}

// tree walks tree id of s and its subtrees, listing those not translated
// yet.
func (c *Copier) tree(ctx context.Context, s vault.SnapshotRecord, src TreeLoader, id vault.ID, budget *uint64, depth int) error {
	if _, ok := c.trees[id]; ok || c.listed[id] {
		return nil
	}
	if depth > 4096 {
		return fmt.Errorf("snapshot %s: trees nest deeper than 4096 directories", s.ID.Short())
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := src.LoadTree(ctx, id)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		if *budget == 0 {
			return fmt.Errorf("snapshot %s: %w: its trees hold more entries than its record counts", s.ID.Short(), vault.ErrCorrupt)
		}
		*budget--
		if t.Nodes[i].Kind == format.KindDir {
			if err := c.tree(ctx, s, src, t.Nodes[i].Subtree, budget, depth+1); err != nil {
				return err
			}
		}
	}
	for i := range t.Nodes {
		if t.Nodes[i].Kind == format.KindFile {
			for _, ch := range t.Nodes[i].Content {
				if _, ok := c.chunks[ch]; !ok && !c.queued[ch] {
					c.queued[ch] = true
					c.queue = append(c.queue, ch)
				}
			}
		}
	}
	c.list = append(c.list, listedTree{id, t})
	c.listed[id] = true
	c.listNodes += len(t.Nodes)
	if len(c.queue) >= copyBatch || len(c.list) >= copyTrees || c.listNodes >= copyNodes {
		return c.flush(ctx, s)
	}
	return nil
}

// flush translates the queued chunks, then writes the listed trees.
func (c *Copier) flush(ctx context.Context, s vault.SnapshotRecord) error {
	if err := c.translate(ctx, c.queue); err != nil {
		return fmt.Errorf("snapshot %s: %w", s.ID.Short(), err)
	}
	c.queue, c.queued = c.queue[:0], map[vault.ID]bool{}
	for _, l := range c.list {
		out := &format.Tree{Nodes: make([]format.Node, len(l.t.Nodes))}
		for i, n := range l.t.Nodes {
			switch n.Kind {
			case format.KindDir:
				d, ok := c.trees[n.Subtree]
				if !ok { // the post-order above rules this out
					return fmt.Errorf("snapshot %s: tree %s was not copied before its parent", s.ID.Short(), n.Subtree.Short())
				}
				n.Subtree = d
			case format.KindFile:
				content := make([]vault.ID, len(n.Content))
				for j, ch := range n.Content {
					d, ok := c.chunks[ch]
					if !ok {
						return fmt.Errorf("snapshot %s: chunk %s was not copied before its tree", s.ID.Short(), ch.Short())
					}
					content[j] = d
				}
				n.Content = content
			}
			out.Nodes[i] = n
		}
		enc, err := format.EncodeTree(nil, out)
		if err != nil {
			return err
		}
		d := c.hasher.ID(enc)
		if !c.dst.Has(vault.TreeBlob, d) {
			if _, err := c.dst.SaveBlob(ctx, vault.TreeBlob, d, c.codec.Encode(nil, enc), len(enc)); err != nil {
				return err
			}
		}
		c.trees[l.id] = d
		delete(c.listed, l.id)
	}
	clear(c.list)
	c.list, c.listNodes = c.list[:0], 0
	return nil
}

// Copy batches: chunks read (and probed in the destination) together,
// at most copyBatch of them and, by the source's index, copyBytes (a
// larger chunk goes alone). They are held in memory until the
// destination says which it lacks.
const (
	copyBatch = 256
	copyBytes = 16 << 20
)

type blobSizer interface {
	BlobSize(t vault.BlobType, id vault.ID) (uint32, error)
}

// translate copies the chunks ids that are not translated yet, in groups:
// through a vault server one request reads a group from the source and
// one asks the destination which of them it lacks, instead of two
// requests a chunk. Each chunk is checked against its ID by the source's
// reader as when read alone.
func (c *Copier) translate(ctx context.Context, ids []vault.ID) error {
	var todo []vault.ID
	seen := map[vault.ID]bool{}
	for _, id := range ids {
		if _, ok := c.chunks[id]; ok || seen[id] {
			continue
		}
		seen[id] = true
		todo = append(todo, id)
	}
	bs, sized := c.src.(blobSizer)
	for len(todo) > 0 {
		n, size := 0, 0
		for n < len(todo) && n < copyBatch {
			sz := format.MaxBlobRawSize
			if sized {
				if b, err := bs.BlobSize(vault.DataBlob, todo[n]); err == nil {
					sz = int(b)
				}
			}
			if n > 0 && size+sz > copyBytes {
				break
			}
			size += sz
			n++
		}
		done, err := c.copyGroup(ctx, todo[:n])
		if err != nil {
			return err
		}
		todo = todo[done:]
	}
	return nil
}

// errGroupFull ends a group's read once it holds copyBytes.
var errGroupFull = errors.New("group full")

// copyGroup reads chunks group from the source and stores in the
// destination those it lacks, returning how many of group it copied: all
// of them, or, when their bytes pass copyBytes (the source's index
// understated their sizes), those read until then.
func (c *Copier) copyGroup(ctx context.Context, group []vault.ID) (int, error) {
	datas := make([][]byte, len(group))
	if bl, ok := c.src.(BatchLoader); ok && len(group) > 1 {
		// SECURITY: memory is bounded by the bytes received, not by the
		// sizes a (possibly hostile) source's index claims.
		held := 0
		err := bl.LoadBlobs(ctx, vault.DataBlob, group, func(i int, data []byte) error {
			if i > 0 && held+len(data) > copyBytes {
				return errGroupFull
			}
			held += len(data)
			datas[i] = bytes.Clone(data) // data is the reader's buffer
			return nil
		})
		if errors.Is(err, errGroupFull) {
			n := 0
			for n < len(datas) && datas[n] != nil {
				n++
			}
			group, datas, err = group[:n], datas[:n], nil
		}
		if err != nil {
			return 0, err
		}
	} else {
		for i, id := range group {
			data, err := c.src.LoadBlob(ctx, vault.DataBlob, id, nil)
			if err != nil {
				return 0, err
			}
			datas[i] = data
		}
	}
	for i := range datas {
		if datas[i] == nil {
			return 0, fmt.Errorf("data blob %s: %w: the source's answer left it out", group[i].Short(), vault.ErrTruncated)
		}
	}
	c.Read += len(group)
	ds := make([]vault.ID, len(group))
	var ask []vault.ID
	var askAt []int
	for i, data := range datas {
		ds[i] = c.hasher.ID(data)
		if !c.dst.Has(vault.DataBlob, ds[i]) {
			ask, askAt = append(ask, ds[i]), append(askAt, i)
		}
	}
	held := make([]bool, len(ask))
	if p, ok := c.dst.(storedProber); ok && len(ask) > 0 {
		h, err := p.Stored(ctx, vault.DataBlob, ask)
		if err != nil {
			return 0, err
		}
		if len(h) != len(ask) {
			return 0, fmt.Errorf("the destination answered about %d chunks, not the %d asked", len(h), len(ask))
		}
		held = h
	}
	for j, i := range askAt {
		if held[j] {
			continue
		}
		isNew, err := c.dst.SaveBlob(ctx, vault.DataBlob, ds[i], c.codec.Encode(nil, datas[i]), len(datas[i]))
		if err != nil {
			return 0, err
		}
		if isNew {
			c.Sent++
		}
	}
	for i, id := range group {
		c.chunks[id] = ds[i]
	}
	return len(group), nil
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
	// Through vault servers both sides' trees are loaded ahead, many per
	// request: the walk enters every directory while they match.
	srcTrees, stopSrc := PrefetchTrees(ctx, src)
	defer stopSrc()
	dstTrees, stopDst := PrefetchTrees(ctx, dst)
	defer stopDst()
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
		ta, err := srcTrees.LoadTree(ctx, a)
		if err != nil {
			return false, err
		}
		tb, err := dstTrees.LoadTree(ctx, b)
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
