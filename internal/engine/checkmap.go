package engine

import (
	"context"
	"fmt"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Check names, for each damaged blob, the snapshots and files that use it.
// The packs are checked first; only once damage is found are the trees
// walked a second time, to map the damaged blobs back to files. What this
// holds is bounded: the damaged blobs, one bit per tree (does anything
// below it use a damaged blob), and at most MaxDamageUses uses.

// MaxDamageUses bounds the uses of damaged blobs a check lists; the rest
// are counted (CheckReport.DamagedMore).
const MaxDamageUses = 1000

// DamageUse is a file (or directory) of a snapshot that uses a damaged
// blob: the file's bytes [Offset, End) are lost, or, for a tree, the
// directory's listing.
type DamageUse struct {
	Snapshot    vault.ID
	Path        string // in the snapshot
	Tree        bool   // the directory's listing is damaged (Offset and End are 0)
	Offset, End uint64
	Blob        vault.ID // the first damaged blob in the range
}

func (s *reportSink) lost(t vault.BlobType, id vault.ID) {
	s.mu.Lock()
	if s.damaged == nil {
		s.damaged = map[blobKey]bool{}
	}
	s.damaged[blobKey{id, t}] = true
	s.mu.Unlock()
}

func (s *reportSink) isLost(t vault.BlobType, id vault.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.damaged[blobKey{id, t}]
}

func (s *reportSink) use(u DamageUse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.r.Damaged) >= MaxDamageUses {
		s.r.DamagedMore++
		return
	}
	s.r.Damaged = append(s.r.Damaged, u)
}

// anyDataLost reports whether a data blob was found damaged.
func (s *reportSink) anyDataLost() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.damaged {
		if k.t == vault.DataBlob {
			return true
		}
	}
	return false
}

// mapDamage walks the trees of snaps again and records every file that
// uses a damaged data blob, with its byte range. clean remembers the
// trees with no damage below them, so that each is read once for all the
// snapshots that share it; a tree that cannot be read was reported by
// checkTree already.
func (v *Vault) mapDamage(ctx context.Context, snaps []vault.SnapshotRecord, sink *reportSink) {
	clean := map[vault.ID]bool{}
	for _, s := range snaps {
		trees, err := v.checkTrees(s.Domain, sink.idx)
		if err != nil {
			continue // reported by the trees phase
		}
		v.mapTree(ctx, trees, s, s.Tree, "/", clean, sink)
	}
}

// mapTree records the uses of damaged data blobs below tree id (at path)
// of snapshot s, and reports whether there were any.
func (v *Vault) mapTree(ctx context.Context, trees domainReader, s vault.SnapshotRecord, id vault.ID, path string, clean map[vault.ID]bool, sink *reportSink) bool {
	if ctx.Err() != nil || clean[id] {
		return false
	}
	b, err := trees.LoadBlob(ctx, vault.TreeBlob, id, nil)
	if err != nil {
		return false
	}
	t, err := format.DecodeTree(b)
	if err != nil {
		return false
	}
	found := false
	for i := range t.Nodes {
		n := &t.Nodes[i]
		p := path + string(n.Name)
		switch n.Kind {
		case format.KindDir:
			if v.mapTree(ctx, trees, s, n.Subtree, p+"/", clean, sink) {
				found = true
			}
		case format.KindFile:
			for _, u := range v.lostRanges(ctx, n, sink) {
				u.Snapshot, u.Path = s.ID, p
				sink.use(u)
				found = true
			}
		}
	}
	if !found {
		clean[id] = true
	}
	return found
}

// lostRanges returns the byte ranges of file n held by damaged data
// blobs, neighbours merged. A chunk missing from the index has no known
// size: as a restore does, chunks after it are placed back from the end
// of the file, and the range in between counts as lost.
func (v *Vault) lostRanges(ctx context.Context, n *format.Node, sink *reportSink) []DamageUse {
	var out []DamageUse
	add := func(off, end uint64, id vault.ID) {
		if k := len(out); k > 0 && out[k-1].End >= off {
			out[k-1].End = max(out[k-1].End, end)
			return
		}
		out = append(out, DamageUse{Offset: off, End: end, Blob: id})
	}
	first, last := -1, -1
	sizes := make([]uint64, len(n.Content))
	for i, c := range n.Content {
		r, _, ok, err := sink.idx.lookup(ctx, vault.DataBlob, c)
		if err != nil || !ok {
			if first < 0 {
				first = i
			}
			last = i
			continue
		}
		sizes[i] = uint64(r.RawLen)
	}
	var off uint64
	end := len(n.Content)
	if first >= 0 {
		end = first
	}
	for i := range end {
		if sink.isLost(vault.DataBlob, n.Content[i]) {
			add(off, min(off+sizes[i], n.Size), n.Content[i])
		}
		off += sizes[i]
	}
	if first < 0 {
		return out
	}
	var tail uint64
	for i := last + 1; i < len(n.Content); i++ {
		tail += sizes[i]
	}
	if off > n.Size || tail > n.Size-off {
		add(min(off, n.Size), n.Size, n.Content[first])
		return out
	}
	add(off, n.Size-tail, n.Content[first])
	pos := n.Size - tail
	for i := last + 1; i < len(n.Content); i++ {
		if sink.isLost(vault.DataBlob, n.Content[i]) {
			add(pos, pos+sizes[i], n.Content[i])
		}
		pos += sizes[i]
	}
	return out
}

// String says where the damage is, for people.
func (u DamageUse) String() string {
	if u.Tree {
		return fmt.Sprintf("snapshot %s: %s: the directory's listing (tree %s) is damaged; nothing below it can be restored", u.Snapshot.Short(), u.Path, u.Blob.Short())
	}
	return fmt.Sprintf("snapshot %s: %s: bytes %d–%d lost (data blob %s)", u.Snapshot.Short(), u.Path, u.Offset, u.End, u.Blob.Short())
}

// checkBlobsWithoutHeader verifies the catalog's blobs of pack p (its
// bytes: whole) when its header cannot be read, and records those that
// fail as lost; their errors were reported with the pack's.
func (v *Vault) checkBlobsWithoutHeader(p vault.PackRecord, whole []byte, blobs []vault.BlobRecord, deks format.DEKs, h []*format.IDHasher, sink *reportSink) {
	if len(whole) < format.PackPrefixSize {
		for _, b := range blobs {
			sink.lost(b.Type, b.ID)
		}
		return
	}
	o, err := format.NewPackOpener(p.ID, whole[:format.PackPrefixSize], deks)
	if err != nil {
		for _, b := range blobs {
			sink.lost(b.Type, b.ID)
		}
		return
	}
	var plain, data []byte
	for _, b := range blobs {
		if int(b.Offset)+int(b.Length) > len(whole) {
			sink.lost(b.Type, b.ID)
			continue
		}
		pt, err := o.Open(plain[:0], b.Type, b.ID, b.Offset, whole[b.Offset:b.Offset+b.Length])
		if err != nil {
			sink.lost(b.Type, b.ID)
			continue
		}
		plain = pt
		d, err := v.codec.Decode(data, pt, b.RawLen)
		if err != nil || !matchID(h, d, b.ID) {
			sink.lost(b.Type, b.ID)
			continue
		}
		data = d
	}
}
