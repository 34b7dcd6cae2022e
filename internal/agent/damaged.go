package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file is what a restore does with damaged data: a blob that is
// missing, fails authentication or does not match its ID or its length
// loses its byte range of its file (which is still written, with every
// good chunk in place), a tree that cannot be read loses its directory,
// and the restore goes on. Anything else (a key that cannot be reached,
// a network failure, a server error, cancellation) stops it.

// DamagedFile is a file restored with byte ranges lost: they read as
// zeros (holes). Its mode stays 0600 and its owner, times and xattrs are
// not applied, so that it is never taken for the file it was (a damaged
// program does not keep its setuid bit or execute permission, and its
// modification time does not say "unchanged" to rsync or make).
type DamagedFile struct {
	Path  string // in the snapshot ("/srv/a.txt")
	Size  uint64 // the file's size in the snapshot
	Lost  []LostRange
	Links []string // other names of the same file (hard links), same damage
	// Deleted: removed from the target with its links (--delete-damaged).
	Deleted bool
}

// LostBytes is the number of bytes of f that could not be restored.
func (f DamagedFile) LostBytes() uint64 {
	var n uint64
	for _, r := range f.Lost {
		n += r.End - r.Offset
	}
	return n
}

// LostRange is the byte range [Offset, End) of a file that could not be
// restored, and why (the first damaged blob in it).
type LostRange struct {
	Offset, End uint64
	Blobs       int // how many chunks it spans (0: chunks of unknown size)
	Err         error
}

// LostDir is a directory of the snapshot whose listing could not be
// read: nothing below it was restored, and it was not created.
type LostDir struct {
	Path string
	Err  error
}

// IsDamage reports whether err means that stored data is gone or altered
// (missing, truncated, failing authentication or its ID): what a restore
// reports and goes on past. A key that cannot be had, a network or server
// failure and cancellation are not damage: they stop a restore, since
// turning them into zeros would hide a passing fault as lost data. An
// error that is none of these stops it too.
func IsDamage(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	for _, fatal := range []error{context.Canceled, context.DeadlineExceeded, vault.ErrKeyUnavailable, vault.ErrWrongKey} {
		if errors.Is(err, fatal) {
			return false
		}
	}
	return errors.Is(err, vault.ErrCorrupt) || errors.Is(err, vault.ErrTruncated) || errors.Is(err, vault.ErrNotFound)
}

// fileDamage is what a restoreFile lost; safe for concurrent use.
type fileDamage struct {
	mu   sync.Mutex
	lost []LostRange
}

func (d *fileDamage) add(r LostRange) {
	d.mu.Lock()
	d.lost = append(d.lost, r)
	d.mu.Unlock()
}

func (d *fileDamage) any() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.lost) > 0
}

// ranges returns the lost ranges sorted, neighbours merged (keeping the
// first one's error).
func (d *fileDamage) ranges() []LostRange {
	d.mu.Lock()
	defer d.mu.Unlock()
	rs := slices.Clone(d.lost)
	slices.SortFunc(rs, func(a, b LostRange) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	var out []LostRange
	for _, r := range rs {
		if n := len(out); n > 0 && r.Offset <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			out[n-1].Blobs += r.Blobs
			continue
		}
		out = append(out, r)
	}
	return out
}

// chunkFailed handles a chunk that could not be restored: damage loses
// its range of the file, anything else stops the restore. The caller
// releases the file's token.
func (r *restorer) chunkFailed(ctx context.Context, t chunkTask, err error) {
	if IsDamage(ctx, err) {
		t.file.damage.add(LostRange{Offset: uint64(t.off), End: uint64(t.off) + t.size, Blobs: 1, Err: fmt.Errorf("data blob %s: %w", t.id.Short(), err)})
		return
	}
	t.file.failed.Store(true)
	r.fail(fmt.Errorf("restore %s: %w", displayRel(t.file.rel), err))
}

// batchFailed handles a batch whose blob todo[0] could not be loaded with
// err. A batch's error is not trusted to name a damaged blob (a stream
// cut short on the network reads as truncated), so the blob is loaded
// again on its own, and that request decides; the rest of the batch is
// then loaded again. Anything but damage stops the restore.
func (r *restorer) batchFailed(ctx context.Context, bl BatchLoader, todo []chunkTask, err error) {
	if !IsDamage(ctx, err) {
		for _, t := range todo {
			t.file.failed.Store(true)
			r.fail(fmt.Errorf("restore %s: %w", displayRel(t.file.rel), err))
			r.done(t.file)
		}
		return
	}
	r.one(ctx, todo[0], nil)
	if rest := todo[1:]; len(rest) > 0 {
		r.many(ctx, bl, rest)
	}
}

// placeRest queues the chunks of file rf from chunk i on, whose size
// BlobSize could not tell (sizeErr, damage), at offset off. The chunks
// before the first chunk of unknown size are queued already; those after
// the last one are placed back from the end of the file (its size is in
// the tree), and the range in between is lost. If the sizes cannot fit
// the file, all of it from off on is lost.
func (r *restorer) placeRest(ctx context.Context, rf *restoreFile, n *format.Node, i int, off int64, sizeErr error) error {
	content := n.Content
	sizes := make([]uint32, len(content))
	known := make([]bool, len(content))
	last := i
	for j := i + 1; j < len(content); j++ {
		s, err := r.repo.BlobSize(vault.DataBlob, content[j])
		switch {
		case err == nil:
			sizes[j], known[j] = s, true
		case IsDamage(ctx, err):
			last = j
		default:
			return fmt.Errorf("restore %s: %w", displayRel(rf.rel), err)
		}
	}
	var tail uint64
	for j := last + 1; j < len(content); j++ {
		tail += uint64(sizes[j])
	}
	lostErr := fmt.Errorf("data blob %s: %w", content[i].Short(), sizeErr)
	if uint64(off)+tail > n.Size {
		// The chunks cannot all fit: no layout is known from off on (from
		// the start, if those before it overran the file already).
		from := uint64(off)
		if from > n.Size {
			from = 0
		}
		rf.damage.add(LostRange{Offset: from, End: n.Size, Err: fmt.Errorf("%w (and the sizes of the file's other chunks do not fit it)", lostErr)})
		return nil
	}
	start := n.Size - tail
	rf.damage.add(LostRange{Offset: uint64(off), End: start, Err: lostErr})
	pos := int64(start)
	for j := last + 1; j < len(content); j++ {
		rf.pending.Add(1)
		select {
		case r.jobs <- chunkTask{file: rf, off: pos, id: content[j], size: uint64(sizes[j])}:
		case <-ctx.Done():
			rf.pending.Add(-1)
			return ctx.Err()
		}
		pos += int64(sizes[j])
	}
	return nil
}

// sizeMismatch loses the whole of a file whose chunks' sizes (from the
// index) do not add up to its size (in the tree): where each chunk goes
// is unknown. Nothing was queued.
func sizeMismatch(rf *restoreFile, n *format.Node, sum int64) {
	rf.damage.add(LostRange{Offset: 0, End: n.Size, Blobs: len(n.Content),
		Err: fmt.Errorf("%w: its chunks add up to %d bytes, the tree says %d", vault.ErrCorrupt, sum, n.Size)})
}

// damagedDone records a finished file that lost data. Its contents stay
// as written (good chunks in place, holes elsewhere, its full size) and
// its mode 0600; no other metadata is applied (see DamagedFile).
func (r *restorer) damagedDone(rf *restoreFile) {
	if err := rf.f.Truncate(int64(rf.node.Size)); err != nil {
		r.warn(Warning{Path: displayRel(rf.rel), Err: err})
	}
	r.mu.Lock()
	r.damaged = append(r.damaged, DamagedFile{Path: displayRel(rf.rel), Size: rf.node.Size, Lost: rf.damage.ranges()})
	r.mu.Unlock()
}

// loseTree records that the tree at rel cannot be read.
func (r *restorer) loseTree(id vault.ID, rel string, err error) {
	r.lostMu.Lock()
	defer r.lostMu.Unlock()
	if r.badTrees == nil {
		r.badTrees = map[vault.ID]error{}
	}
	r.badTrees[id] = err
	r.lostDirs = append(r.lostDirs, LostDir{Path: displayRel(rel), Err: fmt.Errorf("tree %s: %w", id.Short(), err)})
}

// badTree reports whether tree id was found damaged.
func (r *restorer) badTree(id vault.ID) bool {
	r.lostMu.Lock()
	defer r.lostMu.Unlock()
	_, bad := r.badTrees[id]
	return bad
}

// underLost reports whether the snapshot path p (without a leading
// slash) is a lost directory or below one.
func (r *restorer) underLost(p string) bool {
	for _, d := range r.lostDirs {
		rel := strings.TrimPrefix(d.Path, "/")
		if p == rel || strings.HasPrefix(p, rel+"/") {
			return true
		}
	}
	return false
}

// finishDamaged adds the hard links of damaged files to their reports
// and, with DeleteDamaged, removes them all from the target. It runs
// once every file is closed.
func (r *restorer) finishDamaged() {
	slices.SortFunc(r.damaged, func(a, b DamagedFile) int { return strings.Compare(a.Path, b.Path) })
	slices.SortFunc(r.lostDirs, func(a, b LostDir) int { return strings.Compare(a.Path, b.Path) })
	for i := range r.damaged {
		d := &r.damaged[i]
		rel := strings.TrimPrefix(d.Path, "/")
		slices.Sort(r.links[rel]) // linked by several walkers, in any order
		for _, l := range r.links[rel] {
			d.Links = append(d.Links, displayRel(l))
		}
		if !r.opt.DeleteDamaged {
			continue
		}
		// Through the target's os.Root: never outside it.
		ok := true
		for _, p := range append([]string{rel}, r.links[rel]...) {
			if err := r.root.Remove(p); err != nil {
				ok = false
				r.warn(Warning{Path: displayRel(p), Err: fmt.Errorf("damaged, but could not be removed: %w", unwrapPath(err))})
			}
		}
		d.Deleted = ok
	}
}
