package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// chunkRepo holds chunks in memory and reads them one by one
// (batchChunkRepo adds reads of many per call, as the HTTPS client
// makes); it records each batch's size. fail makes the read of that chunk
// fail.
type chunkRepo struct {
	chunks  map[vault.ID][]byte
	batches []int
	singles int
	fail    vault.ID
}

func (r *chunkRepo) add(data []byte) vault.ID {
	id := vault.ID(sha256.Sum256(data))
	r.chunks[id] = data
	return id
}

func (r *chunkRepo) LoadTree(context.Context, vault.ID) (*format.Tree, error) {
	return nil, errors.New("no trees here")
}

func (r *chunkRepo) BlobSize(t vault.BlobType, id vault.ID) (uint32, error) {
	return uint32(len(r.chunks[id])), nil
}

func (r *chunkRepo) LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	r.singles++
	if id == r.fail {
		return nil, fmt.Errorf("data blob %s: %w", id.Short(), vault.ErrCorrupt)
	}
	b, ok := r.chunks[id]
	if !ok {
		return nil, vault.ErrNotFound
	}
	return append(dst[:0], b...), nil
}

// batchChunkRepo is chunkRepo with the batched read.
type batchChunkRepo struct{ *chunkRepo }

func (r batchChunkRepo) LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	r.batches = append(r.batches, len(ids))
	for i, id := range ids {
		if id == r.fail {
			return fmt.Errorf("data blob %s: %w", id.Short(), vault.ErrCorrupt)
		}
		if err := fn(i, bytes.Clone(r.chunks[id])); err != nil {
			return err
		}
	}
	return nil
}

// TestDumperBatches: the dumper writes each entry's chunks in order,
// whether they come one by one or many per read, when a file has more
// chunks than a batch holds and when a batch ends inside a file; no batch
// passes dumpBatchChunks; a chunk that cannot be read names its own file.
func TestDumperBatches(t *testing.T) {
	base := &chunkRepo{chunks: map[vault.ID][]byte{}}
	type entry struct {
		name string
		n    *format.Node
		data []byte
	}
	var entries []entry
	file := func(name string, nchunks, size int) {
		n := &format.Node{Kind: format.KindFile, Perm: 0o644, Name: []byte(name)}
		var all []byte
		for c := range nchunks {
			b := []byte(strings.Repeat(fmt.Sprintf("%s#%d;", name, c), size))
			n.Content = append(n.Content, base.add(b))
			all = append(all, b...)
		}
		n.Size = uint64(len(all))
		entries = append(entries, entry{name, n, all})
	}
	file("a", 1, 3)
	entries = append(entries, entry{"dir", &format.Node{Kind: format.KindDir, Perm: 0o755}, nil})
	file("many", 600, 2) // more than a batch
	file("empty", 0, 0)
	for i := range 300 {
		file(fmt.Sprintf("small%03d", i), 1, 1)
	}
	file("last", 3, 5)

	dump := func(repo interface {
		LoadTree(context.Context, vault.ID) (*format.Tree, error)
		LoadBlob(context.Context, vault.BlobType, vault.ID, []byte) ([]byte, error)
		BlobSize(vault.BlobType, vault.ID) (uint32, error)
	}) ([]byte, error) {
		var out bytes.Buffer
		ar := newArchive("tar", &out)
		d := &dumper{ctx: context.Background(), repo: repo, ar: ar, skipped: func(string, *format.Node) {}}
		for _, e := range entries {
			if err := d.add(e.name, "/src/"+e.name, e.n); err != nil {
				return nil, err
			}
		}
		if err := d.flush(); err != nil {
			return nil, err
		}
		return out.Bytes(), ar.close()
	}
	check := func(what string, b []byte) {
		t.Helper()
		tr := tar.NewReader(bytes.NewReader(b))
		for i, e := range entries {
			h, err := tr.Next()
			if err != nil {
				t.Fatalf("%s: entry %d: %v", what, i, err)
			}
			got, _ := io.ReadAll(tr)
			if h.Name != e.name && h.Name != e.name+"/" || !bytes.Equal(got, e.data) {
				t.Fatalf("%s: entry %d is %s with %d bytes, want %s with %d", what, i, h.Name, len(got), e.name, len(e.data))
			}
		}
		if _, err := tr.Next(); err != io.EOF {
			t.Fatalf("%s: more entries than queued: %v", what, err)
		}
	}

	one, err := dump(base)
	if err != nil {
		t.Fatal(err)
	}
	check("one by one", one)
	br := batchChunkRepo{base}
	base.singles = 0
	many, err := dump(br)
	if err != nil {
		t.Fatal(err)
	}
	check("batched", many)
	if !bytes.Equal(one, many) {
		t.Errorf("the batched dump differs from the one read chunk by chunk")
	}
	total := 0
	for _, n := range base.batches {
		total += n
		if n > dumpBatchChunks {
			t.Errorf("a batch of %d chunks, more than %d", n, dumpBatchChunks)
		}
	}
	if total+base.singles != 1+600+300+3 || len(base.batches) > 6 {
		t.Errorf("batches %v and %d single reads for %d chunks", base.batches, base.singles, 1+600+300+3)
	}

	// A chunk that cannot be read, in the middle of a batch, names its
	// own file, not the one written before it.
	base.fail = entries[len(entries)-5].n.Content[0]
	for name, repo := range map[string]interface {
		LoadTree(context.Context, vault.ID) (*format.Tree, error)
		LoadBlob(context.Context, vault.BlobType, vault.ID, []byte) ([]byte, error)
		BlobSize(vault.BlobType, vault.ID) (uint32, error)
	}{"one by one": base, "batched": br} {
		_, err := dump(repo)
		if !errors.Is(err, vault.ErrCorrupt) || !strings.Contains(err.Error(), "/src/small296:") {
			t.Errorf("%s: a failed chunk of small296: %v", name, err)
		}
	}
}
