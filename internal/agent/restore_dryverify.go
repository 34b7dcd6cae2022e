package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// A dry run with Verify reads every chunk of every file it would restore,
// as a restore would (each chunk authenticated and checked against its
// ID), and writes nothing: "could this snapshot be restored, all of it,
// now?" Damaged chunks are reported as a restore reports them, with the
// byte ranges a restore would lose. Anything but damage (a key out of
// reach, the network, cancellation) stops it.

// dryVerifyWorkers is how many files are read at once.
const dryVerifyWorkers = 8

type dryVerifier struct {
	ctx  context.Context
	repo RestoreRepo
	jobs chan dryVerifyJob
	wg   sync.WaitGroup

	mu       sync.Mutex
	err      error
	verified uint64
	damaged  []DamagedFile
}

type dryVerifyJob struct {
	path string
	node *format.Node
}

func newDryVerifier(ctx context.Context, repo RestoreRepo) *dryVerifier {
	v := &dryVerifier{ctx: ctx, repo: repo, jobs: make(chan dryVerifyJob, 64)}
	for range dryVerifyWorkers {
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			var buf []byte
			for j := range v.jobs {
				if v.failed() {
					continue
				}
				var err error
				buf, err = v.file(j, buf)
				if err != nil {
					v.mu.Lock()
					if v.err == nil {
						v.err = err
					}
					v.mu.Unlock()
				}
			}
		}()
	}
	return v
}

func (v *dryVerifier) failed() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err != nil
}

// add queues the file at path; it fails once a file failed.
func (v *dryVerifier) add(path string, n *format.Node) error {
	v.mu.Lock()
	err := v.err
	v.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case v.jobs <- dryVerifyJob{path, n}:
		return nil
	case <-v.ctx.Done():
		return v.ctx.Err()
	}
}

// finish waits for the queued files.
func (v *dryVerifier) finish() (uint64, []DamagedFile, error) {
	close(v.jobs)
	v.wg.Wait()
	slices.SortFunc(v.damaged, func(a, b DamagedFile) int { return strings.Compare(a.Path, b.Path) })
	return v.verified, v.damaged, v.err
}

// file reads every chunk of one file.
func (v *dryVerifier) file(j dryVerifyJob, buf []byte) ([]byte, error) {
	n := j.node
	var lost []LostRange
	var off uint64
	known := true // offsets known: every chunk before has a known size
	for _, id := range n.Content {
		if err := v.ctx.Err(); err != nil {
			return buf, err
		}
		data, err := v.repo.LoadBlob(v.ctx, vault.DataBlob, id, buf[:0])
		if err == nil {
			buf = data
			off += uint64(len(data))
			continue
		}
		if !IsDamage(v.ctx, err) {
			return buf, fmt.Errorf("verify %s: %w", displayRel(j.path), err)
		}
		size, serr := v.repo.BlobSize(vault.DataBlob, id)
		switch {
		case !known:
			// Already lost to the end of the file.
		case serr != nil:
			lost = appendLost(lost, LostRange{Offset: off, End: max(n.Size, off), Err: err})
			known = false
		default:
			lost = appendLost(lost, LostRange{Offset: off, End: off + uint64(size), Blobs: 1, Err: err})
			off += uint64(size)
		}
	}
	if known && off != n.Size && len(lost) == 0 {
		lost = append(lost, LostRange{Offset: min(off, n.Size), End: max(off, n.Size), Err: fmt.Errorf("%w: its chunks hold %d bytes, the tree says %d", vault.ErrCorrupt, off, n.Size)})
	}
	v.mu.Lock()
	v.verified++
	if len(lost) > 0 {
		v.damaged = append(v.damaged, DamagedFile{Path: displayRel(j.path), Size: n.Size, Lost: lost})
	}
	v.mu.Unlock()
	return buf, nil
}

// appendLost adds r to rs, joining it to the last range when they touch.
func appendLost(rs []LostRange, r LostRange) []LostRange {
	if k := len(rs) - 1; k >= 0 && rs[k].End == r.Offset && r.Blobs > 0 && rs[k].Blobs > 0 {
		rs[k].End = r.End
		rs[k].Blobs += r.Blobs
		return rs
	}
	return append(rs, r)
}
