package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Mismatch is a restored file whose content, read back from the target,
// is not the snapshot's: from Offset on (the first chunk that differs), or
// the whole file when it could not be read back.
type Mismatch struct {
	Path   string // in the snapshot
	Offset uint64
	Why    string
}

func (m Mismatch) String() string {
	return fmt.Sprintf("%s: %s (from byte %d)", m.Path, m.Why, m.Offset)
}

// writtenFile is a file the restore wrote whole: Verify reads it back.
type writtenFile struct {
	rel  string
	node *format.Node
}

// chunkIDer identifies chunks as the snapshot's domain does (the engine;
// the client with a token that may hold the domain's chunk-ID key).
type chunkIDer interface {
	ChunkID(data []byte) (vault.ID, bool)
}

// blobIDer is the engine's form of chunkIDer.
type blobIDer interface {
	BlobID(data []byte) vault.ID
}

// verify reads every file the restore wrote back from the target,
// through its os.Root and never following a symlink, and compares each
// chunk with the snapshot's: its ID when the repository can compute IDs,
// else the chunk loaded again from the vault. Files that lost data to
// damage are listed as damaged already and are not verified.
func (r *restorer) verify(ctx context.Context, res *RestoreResult) error {
	var ider func([]byte) (vault.ID, bool)
	switch c := r.repo.(type) {
	case chunkIDer:
		ider = c.ChunkID
	case blobIDer:
		ider = func(b []byte) (vault.ID, bool) { return c.BlobID(b), true }
	}
	files := r.written
	slices.SortFunc(files, func(a, b writtenFile) int { return strings.Compare(a.rel, b.rel) })
	jobs := make(chan writtenFile)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range min(r.opt.Workers, 8) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var fbuf, vbuf []byte
			for w := range jobs {
				m, err := r.verifyFile(ctx, w, ider, &fbuf, &vbuf)
				mu.Lock()
				switch {
				case err != nil && firstErr == nil:
					firstErr = err
				case m != nil:
					res.Mismatched = append(res.Mismatched, *m)
				case err == nil:
					res.Verified++
				}
				mu.Unlock()
			}
		}()
	}
	for _, w := range files {
		if ctx.Err() != nil {
			break
		}
		jobs <- w
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	slices.SortFunc(res.Mismatched, func(a, b Mismatch) int { return strings.Compare(a.Path, b.Path) })
	return nil
}

// verifyFile checks one file. A difference is a Mismatch; an error is a
// fault that stops the restore (the vault or key cannot be reached).
func (r *restorer) verifyFile(ctx context.Context, w writtenFile, ider func([]byte) (vault.ID, bool), fbuf, vbuf *[]byte) (*Mismatch, error) {
	bad := func(off uint64, msg string, a ...any) (*Mismatch, error) {
		return &Mismatch{Path: displayRel(w.rel), Offset: off, Why: fmt.Sprintf(msg, a...)}, nil
	}
	f, err := r.root.OpenFile(w.rel, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return bad(0, "cannot be read back: %v", unwrapPath(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return bad(0, "is no longer a regular file")
	}
	var off uint64
	for _, id := range w.node.Content {
		size, err := r.repo.BlobSize(vault.DataBlob, id)
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", displayRel(w.rel), err)
		}
		if cap(*fbuf) < int(size) {
			*fbuf = make([]byte, size)
		}
		b := (*fbuf)[:size]
		if _, err := io.ReadFull(f, b); err != nil {
			return bad(off, "shorter than in the snapshot (%v)", err)
		}
		match := false
		if id2, ok := ider2(ider, b); ok {
			match = id2 == id
		} else {
			// No chunk-ID key here (a token without backup rights): the
			// chunk again from the vault, authenticated by the server.
			want, err := r.repo.LoadBlob(ctx, vault.DataBlob, id, (*vbuf)[:0])
			if err != nil {
				return nil, fmt.Errorf("verify %s: %w", displayRel(w.rel), err)
			}
			*vbuf = want
			match = bytes.Equal(want, b)
		}
		if !match {
			return bad(off, "content differs from the snapshot's chunk %s", id.Short())
		}
		off += uint64(size)
	}
	var one [1]byte
	if n, err := f.Read(one[:]); n > 0 || (err != nil && !errors.Is(err, io.EOF)) {
		return bad(off, "longer than in the snapshot")
	}
	return nil, nil
}

func ider2(ider func([]byte) (vault.ID, bool), b []byte) (vault.ID, bool) {
	if ider == nil {
		return vault.ID{}, false
	}
	return ider(b)
}
