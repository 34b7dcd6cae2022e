package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// batchRepo is a fakeRepo that also reads many blobs per call, as the
// HTTPS client does, and counts those calls.
type batchRepo struct {
	*fakeRepo
	batches    int
	batchBlobs int
	treeBlobs  int
}

func (r *batchRepo) LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	r.mu.Lock()
	r.batches++
	r.batchBlobs += len(ids)
	if t == vault.TreeBlob {
		r.treeBlobs += len(ids)
	} else {
		for _, id := range ids {
			r.blobLoads[id]++
		}
	}
	r.mu.Unlock()
	for i, id := range ids {
		var data []byte
		if t == vault.TreeBlob {
			tr, ok := r.trees[id]
			if !ok {
				return fmt.Errorf("tree %s: %w", id.Short(), vault.ErrNotFound)
			}
			enc, err := format.EncodeTree(nil, tr)
			if err != nil {
				return err
			}
			data = enc
		} else {
			b, ok := r.blobs[id]
			if !ok {
				return fmt.Errorf("blob %s: %w", id.Short(), vault.ErrNotFound)
			}
			data = b
		}
		if err := fn(i, data); err != nil {
			return err
		}
	}
	return nil
}

// TestMountBatchedReads: through a repository that reads many blobs per
// request (a vault server), walking the mount and reading every file (as
// cp -r or grep -r do) loads the subdirectories' trees one request per
// directory listed and the chunks of a directory's small files many per
// request, not one request per tree and per file; every file reads back
// byte for byte. A file opened alone still loads only its own chunks. A chunk whose size the index misstates, met while read
// ahead for another file, fails only its own file's read.
func TestMountBatchedReads(t *testing.T) {
	r := &batchRepo{fakeRepo: newFakeRepo()}
	contents := map[string][]byte{}
	var dirs []format.Node
	files := 0
	for d := range 30 {
		var fl []format.Node
		for f := range 10 {
			name := fmt.Sprintf("f%02d", f)
			data := pattern(1500+d*10+f, byte(d*10+f))
			contents[fmt.Sprintf("d%02d/%s", d, name)] = data
			fl = append(fl, r.addFile(name, data, 1000))
			files++
		}
		dirs = append(dirs, dirNodeOf(fmt.Sprintf("d%02d", d), r.addTree(fl...)))
	}
	big := pattern(100_000, 3)
	contents["big"] = big
	bad := r.addFile("bad", pattern(800, 4), 1000)
	r.sizes[bad.Content[0]] = 900 // the index says 900: the chunk holds 800
	contents["d03/bad"] = nil
	d3 := r.trees[dirs[3].Subtree]
	d3.Nodes = append(d3.Nodes, bad)
	d3.Sort()
	root := r.addTree(append(dirs, r.addFile("big", big, 1000))...)
	m := mountFake(t, r, record(root, "web01", time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), uint64(files+2), 31))

	base := filepath.Join(m.dir, "snapshots", "2026-12-01T10:00:00Z")
	// One file opened alone: its chunks, and nothing of its neighbours'.
	got, err := os.ReadFile(filepath.Join(base, "d10", "f05"))
	if err != nil || !bytes.Equal(got, contents["d10/f05"]) {
		t.Fatalf("d10/f05: %d bytes, %v", len(got), err)
	}
	r.mu.Lock()
	if r.batchBlobs != 2 || r.totalLoads != 0 {
		t.Errorf("reading one file of 2 chunks loaded %d blobs in batches and %d alone, want its 2", r.batchBlobs, r.totalLoads)
	}
	r.mu.Unlock()

	read := 0
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(base, p)
		want, ok := contents[rel]
		if !ok {
			t.Errorf("the mount shows %s, which the snapshot does not hold", rel)
			return nil
		}
		got, err := os.ReadFile(p)
		if rel == "d03/bad" {
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("reading %s, whose chunk's size the index misstates: %v, want EIO", rel, err)
			}
			return nil
		}
		if err != nil {
			t.Errorf("%s: %v", rel, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes read, not the %d backed up", rel, len(got), len(want))
		}
		read++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if read != files+1 {
		t.Fatalf("read %d files, want %d", read, files+1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Logf("%d trees loaded alone, %d blobs alone, %d batches of %d blobs (%d trees)", r.treeLoads, r.totalLoads, r.batches, r.batchBlobs, r.treeBlobs)
	// One by one: 31 trees and 600 chunks, a request each. Batched: the
	// root alone, its 30 subtrees in one batch; a directory's first file
	// alone, its 9 others of 2 chunks in one; big's 100 chunks in 4; "bad"
	// again on its own.
	if r.treeLoads > 2 || r.totalLoads > 2 || r.batches > 1+30*2+4+1+4 {
		t.Errorf("walking and reading the mount took %d tree loads, %d blob loads and %d batches", r.treeLoads, r.totalLoads, r.batches)
	}
	for id, n := range r.blobLoads {
		if n > 1 && id != bad.Content[0] {
			t.Errorf("chunk %s loaded %d times: read ahead, then again", id.Short(), n)
		}
	}
	if !bytes.Contains([]byte(m.logs.text()), []byte("bad")) {
		t.Errorf("the failed read was not reported: %s", m.logs.text())
	}
}
