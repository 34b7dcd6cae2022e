package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/store/mem"
	"github.com/coffer-backup/coffer/internal/vault"
)

var (
	ctx       = context.Background()
	testStart = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
)

// clock is a test clock that moves one second per reading.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// env is what a vault needs: a store, a SQLite catalog and a platform key
// file, all in one temporary directory.
type env struct {
	dir   string
	store vault.Store
	cat   *sqlite.Catalog
	keys  *platform.Keystore
	clock *clock
}

func (e *env) opts() engine.Options {
	return engine.Options{Store: e.store, Catalog: e.cat, Keys: e.keys, Name: "test", Now: e.clock.Now}
}

// newEnv uses st, or a local store in the directory when st is nil.
func newEnv(t *testing.T, st vault.Store) *env {
	t.Helper()
	dir := t.TempDir()
	if st == nil {
		ls, err := local.Open(filepath.Join(dir, "store"))
		if err != nil {
			t.Fatal(err)
		}
		st = ls
	}
	cat, err := sqlite.Open(filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	ks, err := platform.Create(filepath.Join(dir, "platform.key"), testStart)
	if err != nil {
		t.Fatal(err)
	}
	return &env{dir: dir, store: st, cat: cat, keys: ks, clock: &clock{t: testStart}}
}

func create(t *testing.T, e *env) *engine.Vault {
	t.Helper()
	v, err := engine.Create(ctx, e.opts(), engine.DefaultChunker())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func randBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// save stores data as a data blob and returns its ID.
func save(t *testing.T, v *engine.Vault, data []byte) (vault.ID, bool) {
	t.Helper()
	id := v.BlobID(data)
	isNew, err := v.SaveBlob(ctx, vault.DataBlob, id, v.Codec().Encode(nil, data), len(data))
	if err != nil {
		t.Fatal(err)
	}
	return id, isNew
}

func flush(t *testing.T, v *engine.Vault) {
	t.Helper()
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func load(t *testing.T, v *engine.Vault, id vault.ID) []byte {
	t.Helper()
	b, err := v.LoadBlob(ctx, vault.DataBlob, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// packSizes lists the sizes of the packs in the store.
func packSizes(t *testing.T, st vault.Store) []int64 {
	t.Helper()
	var sizes []int64
	if err := st.List(ctx, vault.PackObject, func(oi vault.ObjectInfo) error {
		sizes = append(sizes, oi.Size)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(sizes)
	return sizes
}

// snapshotOf saves a tree holding one file made of chunks, in a
// directory, and a snapshot of it.
func snapshotOf(t *testing.T, v *engine.Vault, host string, chunks ...[]byte) vault.SnapshotRecord {
	t.Helper()
	var ids []vault.ID
	var size uint64
	for _, c := range chunks {
		id, _ := save(t, v, c)
		ids = append(ids, id)
		size += uint64(len(c))
	}
	sub := &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("file"), Perm: 0o644, Size: size, Content: ids}}}
	subID, err := v.SaveTree(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	root := &format.Tree{Nodes: []format.Node{{Kind: format.KindDir, Name: []byte("dir"), Perm: 0o755, Subtree: subID}}}
	rootID, err := v.SaveTree(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	flush(t, v)
	s, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart, Host: host, Paths: []string{"/dir"}, Tree: rootID, Files: 1, Dirs: 1, Bytes: size})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCreateOpenRoundTrip(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	data := randBytes(1, 3000)
	id, _ := save(t, v, data)
	s := snapshotOf(t, v, "h", []byte("chunk one"), []byte("chunk two"))
	v.Close()

	w, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Record().ID != v.Record().ID || w.Record().Name != "test" {
		t.Errorf("reopened vault record %+v, created %+v", w.Record(), v.Record())
	}
	if w.Config().ID != v.Record().ID.String() || w.Config().PackSize != format.PackTargetSize ||
		w.Config().Chunker != engine.DefaultChunker() || !w.Config().Created.Equal(testStart.Add(time.Second)) {
		t.Errorf("reopened config %+v", w.Config())
	}
	// Same secrets: the same data has the same ID, and is found stored.
	if w.BlobID(data) != id || !w.Has(vault.DataBlob, id) {
		t.Errorf("reopened vault does not recognise the blob it stored")
	}
	if got := load(t, w, id); !bytes.Equal(got, data) {
		t.Errorf("reopened vault loads other data")
	}
	snaps, err := w.Snapshots(ctx)
	if err != nil || len(snaps) != 1 || snaps[0].ID != s.ID || snaps[0].Tree != s.Tree {
		t.Fatalf("snapshots after reopen: %+v, %v", snaps, err)
	}
	stored, err := w.LoadSnapshot(ctx, s.ID)
	if err != nil || stored.Tree != s.Tree || stored.Host != "h" {
		t.Errorf("LoadSnapshot: %+v, %v", stored, err)
	}
	tree, err := w.LoadTree(ctx, s.Tree)
	if err != nil || len(tree.Nodes) != 1 || string(tree.Nodes[0].Name) != "dir" {
		t.Errorf("LoadTree: %+v, %v", tree, err)
	}

	// Another vault's keys cannot open it.
	other := newEnv(t, mem.New())
	opt := e.opts()
	opt.Keys = other.keys
	if _, err := engine.Open(ctx, opt); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("open with another key file: %v, want ErrWrongKey", err)
	}
}

// TestCreateTwice: Create on a store that holds a vault completes and
// opens that vault; it never makes a second one or new keys.
func TestCreateTwice(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	again, err := engine.Create(ctx, e.opts(), engine.DefaultChunker())
	if err != nil || again.Record().ID != v.Record().ID {
		t.Fatalf("second Create on the same store: %v, want the same vault", err)
	}
	// With a fresh catalog the store's vault is adopted, not replaced.
	e2 := newEnv(t, e.store)
	e2.keys = e.keys
	adopted, err := engine.Create(ctx, e2.opts(), engine.DefaultChunker())
	if err != nil || adopted.Record().ID != v.Record().ID {
		t.Fatalf("Create on a store holding a vault, other catalog: %v, want the store's vault", err)
	}
	var keyrings []string
	e.store.List(ctx, vault.KeyObject, func(oi vault.ObjectInfo) error {
		keyrings = append(keyrings, oi.Handle.Name)
		return nil
	})
	if !slices.Equal(keyrings, []string{"0000000001"}) {
		t.Errorf("keyrings after repeated creations: %v", keyrings)
	}
	// A catalog that knows another vault under the name is refused.
	e3 := newEnv(t, mem.New())
	e3.cat = e.cat
	e3.keys = e.keys
	if _, err := engine.Create(ctx, e3.opts(), engine.DefaultChunker()); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("catalog naming another vault: %v, want ErrCorrupt", err)
	}
}

func TestSaveBlobDedup(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	data := randBytes(2, 100_000)
	id, isNew := save(t, v, data)
	if !isNew {
		t.Errorf("first SaveBlob reported the blob as known")
	}
	if _, again := save(t, v, data); again {
		t.Errorf("second SaveBlob of a pending blob reported it new")
	}
	if v.BytesAdded() != 0 {
		t.Errorf("BytesAdded %d before any pack was stored", v.BytesAdded())
	}
	flush(t, v)
	if _, again := save(t, v, data); again {
		t.Errorf("SaveBlob of a stored blob reported it new")
	}
	flush(t, v)
	sizes := packSizes(t, e.store)
	if len(sizes) != 1 {
		t.Fatalf("%d packs, want 1 (dedup)", len(sizes))
	}
	if v.BytesAdded() != uint64(sizes[0]) {
		t.Errorf("BytesAdded %d, pack is %d bytes", v.BytesAdded(), sizes[0])
	}
	if sizes[0] < 100_000 || sizes[0] > 100_000+200 {
		t.Errorf("a 100 kB incompressible blob made a %d-byte pack", sizes[0])
	}
	if n := catalogBlobs(t, e); len(n) != 1 || n[0].ID != id || n[0].RawLen != 100_000 {
		t.Errorf("catalog holds blobs %+v, want just %s", n, id.Short())
	}

	// Another handle on the same vault knows it too, and adds nothing.
	w, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, again := save(t, w, data); again {
		t.Errorf("SaveBlob on a reopened vault stored a known blob again")
	}
	flush(t, w)
	if w.BytesAdded() != 0 || len(packSizes(t, e.store)) != 1 {
		t.Errorf("reopened vault added %d bytes", w.BytesAdded())
	}
	// The same bytes as a tree blob are another blob.
	if isNew, err := w.SaveBlob(ctx, vault.TreeBlob, id, w.Codec().Encode(nil, data), len(data)); err != nil || !isNew {
		t.Errorf("same ID as a tree blob: new %v, %v", isNew, err)
	}
}

func TestSaveBlobConcurrent(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	blobs := make([][]byte, 64)
	for i := range blobs {
		blobs[i] = randBytes(uint64(100+i), 20_000+i)
	}
	var mu sync.Mutex
	newCount := map[vault.ID]int{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range blobs {
				data := blobs[(i+g*7)%len(blobs)]
				id := v.BlobID(data)
				isNew, err := v.SaveBlob(ctx, vault.DataBlob, id, v.Codec().Encode(nil, data), len(data))
				if err != nil {
					t.Error(err)
					return
				}
				if isNew {
					mu.Lock()
					newCount[id]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	flush(t, v)
	if len(newCount) != len(blobs) {
		t.Errorf("%d blobs reported new, want %d", len(newCount), len(blobs))
	}
	for id, n := range newCount {
		if n != 1 {
			t.Errorf("blob %s reported new %d times", id.Short(), n)
		}
	}
	for _, b := range blobs {
		if got := load(t, v, v.BlobID(b)); !bytes.Equal(got, b) {
			t.Fatal("a concurrently saved blob loads wrong")
		}
	}
	if n := len(catalogBlobs(t, e)); n != len(blobs) {
		t.Errorf("catalog holds %d blobs, want %d", n, len(blobs))
	}
}

func TestPackRollover(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	const n = 40
	var ids []vault.ID
	for i := range n {
		id, _ := save(t, v, randBytes(uint64(1000+i), 1<<20))
		ids = append(ids, id)
	}
	flush(t, v)
	sizes := packSizes(t, e.store)
	if len(sizes) < 3 {
		t.Errorf("40 MiB of blobs went into %d packs: %v", len(sizes), sizes)
	}
	var total int64
	for _, s := range sizes {
		total += s
		if s > format.PackTargetSize {
			t.Errorf("pack of %d bytes exceeds %d", s, format.PackTargetSize)
		}
	}
	// All but the last pack are full: closed only when the next blob
	// would not fit.
	for _, s := range sizes[1:] {
		if s < format.PackTargetSize-(1<<20)-(64<<10) {
			t.Errorf("pack of %d bytes closed early (sizes %v)", s, sizes)
		}
	}
	if total < n<<20 || uint64(total) != v.BytesAdded() {
		t.Errorf("packs hold %d bytes, BytesAdded %d, blobs %d", total, v.BytesAdded(), n<<20)
	}
	for i, id := range ids {
		if got := load(t, v, id); !bytes.Equal(got, randBytes(uint64(1000+i), 1<<20)) {
			t.Fatalf("blob %d loads wrong", i)
		}
	}
	// A blob larger than a pack gets a pack of its own.
	big := randBytes(7, format.PackTargetSize+(1<<20))
	id, _ := save(t, v, big)
	flush(t, v)
	if got := load(t, v, id); !bytes.Equal(got, big) {
		t.Error("oversized blob loads wrong")
	}
	sizes = packSizes(t, e.store)
	if last := sizes[len(sizes)-1]; last < int64(len(big)) || last > int64(len(big))+200 {
		t.Errorf("oversized blob's pack is %d bytes", last)
	}
}

func TestLoadBlobMissing(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	id, _ := save(t, v, []byte("stored as data"))
	flush(t, v)
	var unknown vault.ID
	unknown[0] = 1
	for _, c := range []struct {
		name string
		t    vault.BlobType
		id   vault.ID
	}{
		{"unknown ID", vault.DataBlob, unknown},
		{"data blob asked as tree", vault.TreeBlob, id},
	} {
		_, err := v.LoadBlob(ctx, c.t, c.id, nil)
		if !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", c.name, err)
		}
		if _, err := v.BlobSize(c.t, c.id); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("BlobSize of %s: %v, want ErrNotFound", c.name, err)
		}
	}
	// A pack that vanished from the store.
	rec, _ := v.Lookup(vault.DataBlob, id)
	if err := e.store.Delete(ctx, vault.Handle{Type: vault.PackObject, Name: rec.Pack.String()}); err != nil {
		t.Fatal(err)
	}
	w, err := engine.Open(ctx, e.opts()) // no cached pack opener
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.LoadBlob(ctx, vault.DataBlob, id, nil); !errors.Is(err, vault.ErrNotFound) || !strings.Contains(err.Error(), rec.Pack.String()) {
		t.Errorf("blob of a deleted pack: %v, want ErrNotFound naming the pack", err)
	}
}

func mkSnap(id string, minute int) vault.SnapshotRecord {
	s := vault.SnapshotRecord{Time: testStart.Add(time.Duration(minute) * time.Minute)}
	b, err := vault.ParseID(id + strings.Repeat("0", 64-len(id)))
	if err != nil {
		panic(err)
	}
	s.ID = b
	return s
}

func TestFindSnapshot(t *testing.T) {
	// Listed oldest first, except that the newest is in the middle: latest
	// goes by time.
	snaps := []vault.SnapshotRecord{
		mkSnap("ab12", 1),
		mkSnap("ab34", 9),
		mkSnap("cd56", 5),
		mkSnap("ef", 3),
	}
	full := snaps[2].ID.String()
	cases := []struct {
		ref  string
		want string // ID prefix, or "" for an error
		err  error
	}{
		{"latest", "ab34", nil},
		{full, "cd56", nil},
		{strings.ToUpper(full), "cd56", nil},
		{"ab1", "ab12", nil},
		{"AB3", "ab34", nil},
		{"c", "cd56", nil},
		{"cd5", "cd56", nil},
		{"ab", "", vault.ErrAmbiguous},
		{"a", "", vault.ErrAmbiguous},
		{"0", "", vault.ErrNotFound},
		{"ab123", "", vault.ErrNotFound},
		{full[:63] + "1", "", vault.ErrNotFound},
		{"", "", nil},
		{"xyz", "", nil},
		{"Latest", "", nil},
		{full + "0", "", nil},
	}
	for _, c := range cases {
		t.Run(c.ref, func(t *testing.T) {
			s, err := engine.FindSnapshot(snaps, c.ref)
			if c.want != "" {
				if err != nil || !strings.HasPrefix(s.ID.String(), c.want) {
					t.Errorf("FindSnapshot(%q) = %s, %v; want %s…", c.ref, s.ID.Short(), err, c.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("FindSnapshot(%q) = %s, want an error", c.ref, s.ID.Short())
			}
			if c.err != nil && !errors.Is(err, c.err) {
				t.Errorf("FindSnapshot(%q): %v, want %v", c.ref, err, c.err)
			}
			if c.err == nil && (errors.Is(err, vault.ErrNotFound) || errors.Is(err, vault.ErrAmbiguous)) {
				t.Errorf("FindSnapshot(%q): %v: a malformed reference is not a lookup miss", c.ref, err)
			}
			if c.ref != "" && !strings.Contains(err.Error(), strings.ToLower(c.ref)) {
				t.Errorf("FindSnapshot(%q): %q does not quote the reference", c.ref, err)
			}
		})
	}
	if _, err := engine.FindSnapshot(nil, "latest"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("latest of no snapshots: %v, want ErrNotFound", err)
	}
}

// TestVaultFindSnapshot resolves references against a real vault, whose
// snapshot objects are authenticated on the way.
func TestVaultFindSnapshot(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	s1 := snapshotOf(t, v, "a", []byte("one"))
	s2 := snapshotOf(t, v, "b", []byte("two"))
	got, err := v.FindSnapshot(ctx, s2.ID.String()[:10])
	if err != nil || got.ID != s2.ID {
		t.Fatalf("FindSnapshot(prefix) = %s, %v", got.ID.Short(), err)
	}
	// A catalog that points s2 at s1's tree (edited, or from another
	// vault state) is caught by the authenticated snapshot object.
	opt := e.opts()
	opt.Catalog = treeSwapCatalog{e.cat, s2.ID, s1.Tree}
	w, err := engine.Open(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.FindSnapshot(ctx, s2.ID.String()); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("FindSnapshot through a catalog that lies about the tree: %v, want ErrCorrupt", err)
	}
	if got, err := w.FindSnapshot(ctx, s1.ID.String()); err != nil || got.Tree != s1.Tree {
		t.Errorf("FindSnapshot of the other snapshot: %v", err)
	}
	// Delete s2's snapshot object: the catalog still lists it, but it can
	// no longer be trusted or used.
	if err := e.store.Delete(ctx, vault.Handle{Type: vault.SnapshotObject, Name: s2.ID.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.FindSnapshot(ctx, s2.ID.String()); !errors.Is(err, vault.ErrNotFound) || !strings.Contains(err.Error(), s2.ID.String()) {
		t.Errorf("FindSnapshot of a snapshot whose object is gone: %v", err)
	}
	// Replace it with s1's object under s2's name: it does not authenticate.
	rc, err := e.store.Get(ctx, vault.Handle{Type: vault.SnapshotObject, Name: s1.ID.String()}, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if err := e.store.Put(ctx, vault.Handle{Type: vault.SnapshotObject, Name: s2.ID.String()}, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if _, err := v.FindSnapshot(ctx, s2.ID.String()); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("FindSnapshot of a snapshot whose object was swapped: %v, want ErrCorrupt", err)
	}
}

// treeSwapCatalog reports snapshot id with another root tree.
type treeSwapCatalog struct {
	vault.Catalog
	id   vault.ID
	tree vault.ID
}

func (c treeSwapCatalog) SnapshotChain(ctx context.Context, v vault.ID) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
	es, snaps, err := c.Catalog.SnapshotChain(ctx, v)
	for i := range snaps {
		if snaps[i].ID == c.id {
			snaps[i].Tree = c.tree
		}
	}
	return es, snaps, err
}

// catalogBlobs opens the vault in e afresh and lists the blobs its index
// loaded from the catalog.
func catalogBlobs(t *testing.T, e *env) []vault.BlobRecord {
	t.Helper()
	w, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	type key struct {
		t  vault.BlobType
		id vault.ID
	}
	var keys []key
	if err := w.EachBlob(ctx, func(bt vault.BlobType, id vault.ID, _ uint32) bool {
		keys = append(keys, key{bt, id})
		return true
	}); err != nil {
		t.Fatal(err)
	}
	var out []vault.BlobRecord
	for _, k := range keys {
		r, _ := w.Lookup(k.t, k.id)
		out = append(out, r)
	}
	return out
}

func TestCheckClean(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	big := randBytes(3, 2<<20)
	snapshotOf(t, v, "h", big[:1<<20], big[1<<20:], []byte("tail"))
	snapshotOf(t, v, "h", []byte("other file"))
	for _, readData := range []bool{false, true} {
		var progress int
		rep, err := v.Check(ctx, engine.CheckOptions{ReadData: readData, Progress: func(engine.CheckProgress) { progress++ }})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || len(rep.Errors) != 0 || len(rep.Warnings) != 0 {
			t.Errorf("ReadData=%v: clean vault reported %v, warnings %v", readData, rep.Errors, rep.Warnings)
		}
		// Two snapshots, each a data pack and a tree pack; 4 data blobs
		// and 4 trees (the two "dir" roots differ, the file trees too).
		if rep.Packs != 4 || rep.Blobs != 8 || rep.Snapshots != 2 || rep.Trees != 4 {
			t.Errorf("ReadData=%v: report %+v", readData, rep)
		}
		if readData != (rep.BytesRead > 2<<20) {
			t.Errorf("ReadData=%v: %d bytes read", readData, rep.BytesRead)
		}
		if progress == 0 {
			t.Errorf("ReadData=%v: no progress reported", readData)
		}
	}

	// And it is not blind: a pack gone from the store is an error.
	var victim string
	e.store.List(ctx, vault.PackObject, func(oi vault.ObjectInfo) error { victim = oi.Handle.Name; return nil })
	e.store.Delete(ctx, vault.Handle{Type: vault.PackObject, Name: victim})
	rep, err := v.Check(ctx, engine.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || !strings.Contains(strings.Join(rep.Errors, "\n"), victim) {
		t.Errorf("check with a pack deleted: %v", rep.Errors)
	}
}

func TestKeyInfo(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	ki := v.KeyInfo()
	created := testStart.Add(time.Second) // the clock's first reading
	want := engine.KeyInfo{
		Algorithm: "AES-256-GCM", KeySource: "platform-managed", KEK: e.keys.Current(), WrapAlg: platform.Alg,
		DEKVersion: 1, DEKCount: 1, Created: created, LastRotated: created, KeyringGen: 1,
	}
	if ki != want {
		t.Errorf("KeyInfo:\n got %+v\nwant %+v", ki, want)
	}
	if ki.KEK.Provider != "platform" || ki.KEK.Version != "1" || ki.KEK.KeyID == "" {
		t.Errorf("KEK %+v", ki.KEK)
	}
	// The same after reopening.
	w, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.KeyInfo() != want {
		t.Errorf("KeyInfo after reopen: %+v", w.KeyInfo())
	}
}

// failingStore fails every pack Put.
type failingStore struct{ vault.Store }

var errInjected = errors.New("injected store failure")

func (s failingStore) Put(ctx context.Context, h vault.Handle, rd io.Reader, size int64) error {
	if h.Type == vault.PackObject {
		return errInjected
	}
	return s.Store.Put(ctx, h, rd, size)
}

func TestFlushStoreError(t *testing.T) {
	e := newEnv(t, failingStore{mem.New()})
	v := create(t, e)
	save(t, v, randBytes(5, 1000))
	if err := v.Flush(ctx); !errors.Is(err, errInjected) {
		t.Fatalf("Flush with a failing store: %v", err)
	}
	// The catalog never learns of a pack that is not stored.
	var n int
	e.cat.Packs(ctx, v.Record().ID, func(vault.PackRecord) error { n++; return nil })
	if n != 0 {
		t.Errorf("catalog lists %d packs that were never stored", n)
	}
	// The error sticks.
	if _, err := v.SaveBlob(ctx, vault.DataBlob, v.BlobID([]byte("x")), v.Codec().Encode(nil, []byte("x")), 1); !errors.Is(err, errInjected) {
		t.Errorf("SaveBlob after a failed upload: %v", err)
	}
}

// TestNothingReadableAtRest stores blobs, trees and a snapshot that carry
// a marker and searches every file of the store and the catalog for the
// marker, and for every 8-byte piece of it.
func TestNothingReadableAtRest(t *testing.T) {
	e := newEnv(t, nil) // a local store: everything is a file in e.dir
	v := create(t, e)
	const marker = "COFFER-PLAINTEXT-MARKER-4f1d9a"

	compressible := bytes.Repeat([]byte(marker+" "), 5000)
	incompressible := randBytes(9, 300_000)
	copy(incompressible[150_000:], marker)
	small := []byte(marker)
	var chunks []vault.ID
	for _, b := range [][]byte{compressible, incompressible, small} {
		id, _ := save(t, v, b)
		chunks = append(chunks, id)
	}
	tree := &format.Tree{Nodes: []format.Node{
		{Kind: format.KindFile, Name: []byte(marker + ".txt"), Perm: 0o644, Size: uint64(len(compressible) + len(incompressible) + len(small)), Content: chunks,
			Xattrs: []format.Xattr{{Name: []byte("user." + marker), Value: []byte(marker)}}},
		{Kind: format.KindSymlink, Name: []byte("link"), Perm: 0o777, Target: []byte("/" + marker)},
	}}
	sub, err := v.SaveTree(ctx, tree)
	if err != nil {
		t.Fatal(err)
	}
	root, err := v.SaveTree(ctx, &format.Tree{Nodes: []format.Node{{Kind: format.KindDir, Name: []byte("dir-" + marker), Perm: 0o755, Subtree: sub}}})
	if err != nil {
		t.Fatal(err)
	}
	flush(t, v)
	if _, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart, Host: "host", Paths: []string{"/dir"}, Tree: root}); err != nil {
		t.Fatal(err)
	}
	// Make sure the blobs really are there, readable with the keys.
	if got := load(t, v, chunks[0]); !bytes.Equal(got, compressible) {
		t.Fatal("marker blob does not load")
	}
	v.Close()
	e.cat.Close() // checkpoint the WAL into the file; any -wal left is searched too

	hits, files := findPieces(t, e.dir, marker)
	for _, h := range hits {
		t.Error(h)
	}
	if files < 6 { // config, keyring, 2 packs, snapshot, catalog
		t.Errorf("searched only %d files", files)
	}
	// The search does find the marker where it is in the clear.
	if err := os.WriteFile(filepath.Join(e.dir, "clear"), []byte("x"+marker[5:20]+"x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if hits, _ := findPieces(t, e.dir, marker); len(hits) != 1 {
		t.Fatalf("the search misses a piece of the marker in the clear: %v", hits)
	}
}

// findPieces searches every file below dir but the key file for any 8-byte
// piece of marker, and returns what it found and how many files it read.
func findPieces(t *testing.T, dir, marker string) (hits []string, files int) {
	t.Helper()
	var pieces [][]byte
	for i := 0; i+8 <= len(marker); i++ {
		pieces = append(pieces, []byte(marker[i:i+8]))
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || filepath.Base(p) == "platform.key" {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, piece := range pieces {
			if i := bytes.Index(b, piece); i >= 0 {
				hits = append(hits, fmt.Sprintf("%s holds %q of the marker at offset %d", p, piece, i))
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits, files
}

// TestConcurrentFlush: several callers saving and flushing at once (agents
// sharing a vault on a server). When a Flush returns, every blob its
// caller saved before it is stored and indexed, even when another Flush
// took the pack holding it; and concurrent Flushes never misuse their
// wait (the race detector and a WaitGroup panic caught that once).
func TestConcurrentFlush(t *testing.T) {
	e := newEnv(t, mem.New())
	v := create(t, e)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for round := range 6 {
				var ids []vault.ID
				for i := range 5 {
					data := randBytes(uint64(1000*g+10*round+i), 30_000)
					id := v.BlobID(data)
					if _, err := v.SaveBlob(ctx, vault.DataBlob, id, v.Codec().Encode(nil, data), len(data)); err != nil {
						t.Error(err)
						return
					}
					ids = append(ids, id)
				}
				if err := v.Flush(ctx); err != nil {
					t.Error(err)
					return
				}
				for _, id := range ids {
					if _, ok := v.Lookup(vault.DataBlob, id); !ok {
						t.Errorf("blob %s saved before Flush returned is not indexed", id.Short())
					}
				}
			}
		})
	}
	wg.Wait()
}
