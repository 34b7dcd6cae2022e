package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// faultyRepo plays a damaged store (or a hostile server): the blobs and
// trees it is told about fail to load with the error given, in a single
// load and in a batch; the rest comes from the real vault.
type faultyRepo struct {
	inner agent.RestoreRepo
	mu    sync.Mutex
	blob  map[vault.ID]error // LoadBlob and LoadBlobs
	batch map[vault.ID]error // LoadBlobs only, once (a stream cut short)
	tree  map[vault.ID]error
	size  map[vault.ID]func(uint32) (uint32, error)
}

func newFaulty(inner agent.RestoreRepo) *faultyRepo {
	return &faultyRepo{inner: inner, blob: map[vault.ID]error{}, batch: map[vault.ID]error{},
		tree: map[vault.ID]error{}, size: map[vault.ID]func(uint32) (uint32, error){}}
}

func (f *faultyRepo) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	f.mu.Lock()
	err := f.tree[id]
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return f.inner.LoadTree(ctx, id)
}

func (f *faultyRepo) LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	f.mu.Lock()
	err := f.blob[id]
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return f.inner.LoadBlob(ctx, t, id, dst)
}

func (f *faultyRepo) BlobSize(t vault.BlobType, id vault.ID) (uint32, error) {
	n, err := f.inner.BlobSize(t, id)
	f.mu.Lock()
	lie := f.size[id]
	f.mu.Unlock()
	if err == nil && lie != nil {
		return lie(n)
	}
	return n, err
}

// LoadBlobs is the client's batch contract: blobs in order, the first
// failure ends the batch with its error.
func (f *faultyRepo) LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	for i, id := range ids {
		f.mu.Lock()
		err := f.batch[id]
		delete(f.batch, id)
		if err == nil {
			err = f.blob[id]
		}
		if err == nil && t == vault.TreeBlob {
			err = f.tree[id] // a damaged tree is damaged in a batch too
		}
		f.mu.Unlock()
		if err != nil {
			return fmt.Errorf("%s blob %s: %w", t, id.Short(), err)
		}
		b, err := f.inner.LoadBlob(ctx, t, id, nil)
		if err != nil {
			return err
		}
		if err := fn(i, b); err != nil {
			return err
		}
	}
	return nil
}

// unbatched hides LoadBlobs: the restorer loads each chunk on its own.
type unbatched struct{ agent.RestoreRepo }

// damageSource is a snapshot of several files: big.bin spans many chunks.
type damageSource struct {
	v      *testVault
	src    string
	root   vault.ID
	big    []byte
	chunks []vault.ID // of big.bin
	sizes  []uint32
}

func newDamageSource(t *testing.T) *damageSource {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	d := &damageSource{src: src, big: randBytes(7, 400_000)}
	write(t, filepath.Join(src, "big.bin"), d.big)
	write(t, filepath.Join(src, "a.txt"), []byte("alpha\n"))
	write(t, filepath.Join(src, "dir", "b.txt"), []byte("bravo\n"))
	write(t, filepath.Join(src, "other", "c.bin"), randBytes(8, 100_000))
	if err := os.Chmod(filepath.Join(src, "big.bin"), 0o4755); err != nil {
		t.Fatal(err)
	}
	d.v = newVault(t, small)
	d.root = backup(t, d.v, src).Snapshot.Tree
	d.chunks = chunksOf(t, d.v, d.root, filepath.Join(src, "big.bin"))
	if len(d.chunks) < 5 {
		t.Fatalf("big.bin has %d chunks, want at least 5", len(d.chunks))
	}
	for _, id := range d.chunks {
		n, err := d.v.repo.BlobSize(vault.DataBlob, id)
		if err != nil {
			t.Fatal(err)
		}
		d.sizes = append(d.sizes, n)
	}
	return d
}

// span is the byte range of big.bin's chunks i..j-1.
func (d *damageSource) span(i, j int) (uint64, uint64) {
	var off, end uint64
	for k := range j {
		if k < i {
			off += uint64(d.sizes[k])
		}
		end += uint64(d.sizes[k])
	}
	return off, end
}

// wantRestoredExcept checks big.bin against the source outside lost
// (zeros inside), its mode 0600, and the other files byte for byte.
func (d *damageSource) wantRestoredExcept(t *testing.T, target string, lost ...[2]uint64) {
	t.Helper()
	out := filepath.Join(target, d.src)
	want := bytes.Clone(d.big)
	for _, r := range lost {
		clear(want[r[0]:r[1]])
	}
	got, err := os.ReadFile(filepath.Join(out, "big.bin"))
	if err != nil {
		t.Fatalf("the damaged file was not written: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("big.bin: %d bytes restored, not the good chunks in place and zeros in %v", len(got), lost)
	}
	fi, err := os.Stat(filepath.Join(out, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("damaged big.bin has mode %v, want 0600 (never its setuid, executable mode)", fi.Mode())
	}
	for p, w := range map[string]string{"a.txt": "alpha\n", "dir/b.txt": "bravo\n", "other/c.bin": string(randBytes(8, 100_000))} {
		if b, err := os.ReadFile(filepath.Join(out, p)); err != nil || string(b) != w {
			t.Errorf("%s not restored intact (%d bytes, %v)", p, len(b), err)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "a.txt")); err != nil || fi.Mode() != 0o644 {
		t.Errorf("an intact file lost its mode: %v %v", fi.Mode(), err)
	}
}

func (d *damageSource) wantDamage(t *testing.T, res *agent.RestoreResult, lost ...[2]uint64) {
	t.Helper()
	if len(res.Damaged) != 1 || res.Damaged[0].Path != filepath.Join(d.src, "big.bin") {
		t.Fatalf("damaged files %+v, want big.bin alone", res.Damaged)
	}
	var got [][2]uint64
	for _, r := range res.Damaged[0].Lost {
		if r.Err == nil || !agent.IsDamage(context.Background(), r.Err) {
			t.Errorf("lost range %d–%d without its cause: %v", r.Offset, r.End, r.Err)
		}
		got = append(got, [2]uint64{r.Offset, r.End})
	}
	if fmt.Sprint(got) != fmt.Sprint(lost) {
		t.Errorf("lost ranges %v, want %v", got, lost)
	}
	if res.Damaged[0].Size != uint64(len(d.big)) {
		t.Errorf("size %d, want %d", res.Damaged[0].Size, len(d.big))
	}
}

func (d *damageSource) restore(t *testing.T, repo agent.RestoreRepo, opt agent.RestoreOptions) (*agent.RestoreResult, string) {
	t.Helper()
	opt.Target = t.TempDir()
	res, err := agent.Restore(context.Background(), repo, d.root, opt)
	if err != nil {
		t.Fatalf("restore of a snapshot with damaged data stopped: %v", err)
	}
	return res, opt.Target
}

// TestRestoreGoesOnPastDamagedChunks: chunks that are missing, fail
// authentication or are truncated lose their ranges of the file, which
// is written with every good chunk in place; everything else is restored.
func TestRestoreGoesOnPastDamagedChunks(t *testing.T) {
	d := newDamageSource(t)
	for _, c := range []struct {
		name string
		err  error
	}{
		{"authentication failed", fmt.Errorf("pack x: blob y: %w: authentication failed", vault.ErrCorrupt)},
		{"pack missing", fmt.Errorf("pack x: %w", vault.ErrNotFound)},
		{"pack truncated", fmt.Errorf("%w: packs/x is shorter than expected", vault.ErrTruncated)},
	} {
		for _, batched := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/batched=%v", c.name, batched), func(t *testing.T) {
				f := newFaulty(d.v.repo)
				f.blob[d.chunks[1]] = c.err
				f.blob[d.chunks[2]] = c.err
				f.blob[d.chunks[4]] = c.err
				var repo agent.RestoreRepo = unbatched{f}
				if batched {
					repo = f
				}
				res, target := d.restore(t, repo, agent.RestoreOptions{})
				o1, e1 := d.span(1, 3)
				o2, e2 := d.span(4, 5)
				lost := [][2]uint64{{o1, e1}, {o2, e2}}
				d.wantDamage(t, res, lost...)
				d.wantRestoredExcept(t, target, lost...)
				if res.Damaged[0].Lost[0].Blobs != 2 {
					t.Errorf("first lost range spans %d chunks, want 2", res.Damaged[0].Lost[0].Blobs)
				}
			})
		}
	}
}

// TestRestoreDeleteDamaged: with DeleteDamaged a damaged file and its
// hard links are removed; the rest is restored.
func TestRestoreDeleteDamaged(t *testing.T) {
	d := newDamageSource(t)
	// A second snapshot in which big.bin has a hard link.
	if err := os.Link(filepath.Join(d.src, "big.bin"), filepath.Join(d.src, "dir", "link.bin")); err != nil {
		t.Fatal(err)
	}
	d.root = backup(t, d.v, d.src).Snapshot.Tree
	f := newFaulty(d.v.repo)
	f.blob[d.chunks[3]] = fmt.Errorf("%w: authentication failed", vault.ErrCorrupt)

	res, _ := d.restore(t, f, agent.RestoreOptions{})
	if len(res.Damaged) != 1 || len(res.Damaged[0].Links) != 1 || res.Damaged[0].Links[0] != filepath.Join(d.src, "dir", "link.bin") {
		t.Fatalf("the damaged file's hard link is not reported with it: %+v", res.Damaged)
	}
	res, target := d.restore(t, f, agent.RestoreOptions{DeleteDamaged: true})
	if len(res.Damaged) != 1 || !res.Damaged[0].Deleted {
		t.Fatalf("damaged %+v, want big.bin deleted", res.Damaged)
	}
	for _, p := range []string{"big.bin", "dir/link.bin"} {
		if _, err := os.Lstat(filepath.Join(target, d.src, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left in the target with --delete-damaged: %v", p, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(target, d.src, "dir", "b.txt")); err != nil || string(b) != "bravo\n" {
		t.Errorf("the rest was not restored: %q %v", b, err)
	}
}

// TestRestoreLostDirectory: a directory whose tree cannot be read is
// reported lost by path, not created; the rest is restored. The root tree
// is not damage to go on past: nothing could be restored.
func TestRestoreLostDirectory(t *testing.T) {
	d := newDamageSource(t)
	f := newFaulty(d.v.repo)
	f.tree[subtree(t, d.v, d.root, filepath.Join(d.src, "other"))] = fmt.Errorf("%w: authentication failed", vault.ErrCorrupt)
	res, target := d.restore(t, f, agent.RestoreOptions{})
	if len(res.LostDirs) != 1 || res.LostDirs[0].Path != filepath.Join(d.src, "other") || !errors.Is(res.LostDirs[0].Err, vault.ErrCorrupt) {
		t.Fatalf("lost dirs %+v, want %s/other", res.LostDirs, d.src)
	}
	if len(res.Damaged) != 0 {
		t.Errorf("damaged files %+v", res.Damaged)
	}
	if _, err := os.Lstat(filepath.Join(target, d.src, "other")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lost directory was created: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(target, d.src, "big.bin")); err != nil || !bytes.Equal(b, d.big) {
		t.Errorf("big.bin not restored: %v", err)
	}
	// An --include below the lost directory is reported, not "not found".
	res, _ = d.restore(t, f, agent.RestoreOptions{Include: []string{filepath.Join(d.src, "other", "c.bin")}})
	if len(res.LostDirs) != 1 {
		t.Errorf("lost dirs %+v with --include below it", res.LostDirs)
	}

	f.tree[d.root] = fmt.Errorf("%w: authentication failed", vault.ErrCorrupt)
	if _, err := agent.Restore(context.Background(), f, d.root, agent.RestoreOptions{Target: t.TempDir()}); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("restore with the root tree damaged: %v, want it to stop with ErrCorrupt", err)
	}
}

// TestRestoreChunkSizeUnknown: a chunk missing from the index has no
// known size; chunks after it are placed back from the file's end, and
// the range in between is lost.
func TestRestoreChunkSizeUnknown(t *testing.T) {
	d := newDamageSource(t)
	f := newFaulty(d.v.repo)
	notIndexed := func(uint32) (uint32, error) { return 0, fmt.Errorf("%w in the index", vault.ErrNotFound) }
	f.size[d.chunks[1]] = notIndexed
	f.size[d.chunks[3]] = notIndexed
	f.blob[d.chunks[1]] = vault.ErrNotFound
	f.blob[d.chunks[3]] = vault.ErrNotFound
	res, target := d.restore(t, f, agent.RestoreOptions{})
	o, e := d.span(1, 4)
	d.wantDamage(t, res, [2]uint64{o, e})
	d.wantRestoredExcept(t, target, [2]uint64{o, e})
}

// TestRestoreWrongLengths: an index (a hostile server's) that lies about
// chunk sizes loses those chunks' ranges (sizes that still add up) or the
// whole file (sizes that do not); nothing is written at a wrong offset.
func TestRestoreWrongLengths(t *testing.T) {
	d := newDamageSource(t)
	f := newFaulty(d.v.repo)
	f.size[d.chunks[1]] = func(n uint32) (uint32, error) { return n + 5, nil }
	f.size[d.chunks[2]] = func(n uint32) (uint32, error) { return n - 5, nil }
	res, _ := d.restore(t, f, agent.RestoreOptions{})
	o, e := d.span(1, 3)
	d.wantDamage(t, res, [2]uint64{o, e})

	f.size[d.chunks[2]] = nil
	res, target := d.restore(t, f, agent.RestoreOptions{})
	d.wantDamage(t, res, [2]uint64{0, uint64(len(d.big))})
	if b, _ := os.ReadFile(filepath.Join(target, d.src, "big.bin")); !bytes.Equal(b, make([]byte, len(d.big))) {
		t.Errorf("a file with no known layout was written with data")
	}
}

// TestRestoreFaultsAreNotDamage: a key that cannot be had, a network
// failure, a server error or cancellation stop the restore, even after
// damage was found: they are never turned into zeros.
func TestRestoreFaultsAreNotDamage(t *testing.T) {
	d := newDamageSource(t)
	for _, c := range []struct {
		name string
		err  error
	}{
		{"key unavailable", fmt.Errorf("%w: the KMS refused", vault.ErrKeyUnavailable)},
		{"wrong key", vault.ErrWrongKey},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}},
		{"connection refused", fmt.Errorf("GET 127.0.0.1: %w", syscall.ECONNREFUSED)},
		{"cut short", fmt.Errorf("data blob x: %w", io.ErrUnexpectedEOF)},
		{"server error", errors.New("internal server error")},
		{"canceled", context.Canceled},
		// A server that says "not found" because it stopped being a
		// server cannot be told from a missing pack; but one that says
		// it is unavailable stops the restore.
		{"unavailable", fmt.Errorf("%w: try again", errors.New("unavailable"))},
	} {
		for _, batched := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/batched=%v", c.name, batched), func(t *testing.T) {
				f := newFaulty(d.v.repo)
				f.blob[d.chunks[1]] = fmt.Errorf("%w: authentication failed", vault.ErrCorrupt)
				f.blob[d.chunks[3]] = c.err
				var repo agent.RestoreRepo = unbatched{f}
				if batched {
					repo = f
				}
				res, err := agent.Restore(context.Background(), repo, d.root, agent.RestoreOptions{Target: t.TempDir(), Workers: 1})
				if err == nil || !errors.Is(err, c.err) {
					t.Fatalf("restore went on past %s: %v (result %+v)", c.name, err, res)
				}
			})
		}
	}
}

// TestRestoreBatchCutShortIsNotDamage: a batch answer that ends early
// (as a cut connection does) names no damaged blob: the blob is loaded
// again on its own, and only its own failure counts.
func TestRestoreBatchCutShortIsNotDamage(t *testing.T) {
	d := newDamageSource(t)
	f := newFaulty(d.v.repo)
	f.batch[d.chunks[2]] = fmt.Errorf("%w: the server's answer ended early", vault.ErrTruncated)
	res, target := d.restore(t, f, agent.RestoreOptions{})
	if len(res.Damaged) != 0 || len(res.LostDirs) != 0 {
		t.Fatalf("a batch cut short was reported as damage: %+v", res.Damaged)
	}
	if b, err := os.ReadFile(filepath.Join(target, d.src, "big.bin")); err != nil || !bytes.Equal(b, d.big) {
		t.Fatalf("big.bin not restored intact: %v", err)
	}

	// Cut short, and the single request fails on the network: stop.
	f.batch[d.chunks[2]] = fmt.Errorf("%w: the server's answer ended early", vault.ErrTruncated)
	f.blob[d.chunks[2]] = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	if _, err := agent.Restore(context.Background(), f, d.root, agent.RestoreOptions{Target: t.TempDir()}); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("restore went on after the network failed: %v", err)
	}
}

// TestRemoteDamaged runs the damage tests with the vault behind a vault
// server, the restorer talking to it through the HTTPS client.
func TestRemoteDamaged(t *testing.T) {
	remoteMode = true
	defer func() { remoteMode = false }()
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"GoesOnPastDamagedChunks", TestRestoreGoesOnPastDamagedChunks},
		{"DeleteDamaged", TestRestoreDeleteDamaged},
		{"LostDirectory", TestRestoreLostDirectory},
		{"ChunkSizeUnknown", TestRestoreChunkSizeUnknown},
		{"FaultsAreNotDamage", TestRestoreFaultsAreNotDamage},
		{"BatchCutShortIsNotDamage", TestRestoreBatchCutShortIsNotDamage},
	} {
		t.Run(tc.name, tc.f)
	}
}
