package fusefs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// requireFUSE skips t when this machine cannot mount FUSE file systems,
// unless COFFER_REQUIRE_SERVICES is set (CI installs fuse3).
func requireFUSE(t testing.TB) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "/dev/fuse is absent"
	} else if _, err1 := exec.LookPath("fusermount3"); err1 != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			why = "neither fusermount3 nor fusermount is installed (apt-get install fuse3)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("COFFER_REQUIRE_SERVICES") != "" {
		t.Fatalf("cannot mount FUSE file systems: %s; COFFER_REQUIRE_SERVICES is set", why)
	}
	t.Skipf("cannot mount FUSE file systems: %s", why)
}

// fakeRepo is a vault in memory that counts what is loaded from it.
type fakeRepo struct {
	trees map[vault.ID]*format.Tree
	blobs map[vault.ID][]byte
	sizes map[vault.ID]uint32 // overrides the index's size of a blob

	mu         sync.Mutex
	blobLoads  map[vault.ID]int
	treeLoads  int
	totalLoads int
}

func newFakeRepo() *fakeRepo {
	return &fakeRepo{trees: map[vault.ID]*format.Tree{}, blobs: map[vault.ID][]byte{}, sizes: map[vault.ID]uint32{}, blobLoads: map[vault.ID]int{}}
}

var idSeq struct {
	sync.Mutex
	n uint64
}

func newID() vault.ID {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	var id vault.ID
	binary.BigEndian.PutUint64(id[:8], idSeq.n<<32|idSeq.n)
	id[31] = 0xcf
	return id
}

func (r *fakeRepo) addTree(nodes ...format.Node) vault.ID {
	id := newID()
	t := &format.Tree{Nodes: nodes}
	t.Sort()
	r.trees[id] = t
	return id
}

// addFile stores data in chunks of at most chunk bytes and returns its node.
func (r *fakeRepo) addFile(name string, data []byte, chunk int) format.Node {
	n := format.Node{Kind: format.KindFile, Name: []byte(name), Perm: 0o640, UID: 1000, GID: 1000, Size: uint64(len(data)),
		MTime: time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC).UnixNano()}
	for len(data) > 0 {
		c := data[:min(chunk, len(data))]
		data = data[len(c):]
		id := newID()
		r.blobs[id] = bytes.Clone(c)
		n.Content = append(n.Content, id)
	}
	return n
}

func dirNodeOf(name string, sub vault.ID) format.Node {
	return format.Node{Kind: format.KindDir, Name: []byte(name), Perm: 0o755, Subtree: sub, MTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}
}

func (r *fakeRepo) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	r.mu.Lock()
	r.treeLoads++
	r.mu.Unlock()
	t, ok := r.trees[id]
	if !ok {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), vault.ErrNotFound)
	}
	// A copy, as a decoder would return.
	c := &format.Tree{Nodes: append([]format.Node(nil), t.Nodes...)}
	return c, nil
}

func (r *fakeRepo) LoadBlob(ctx context.Context, typ vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	r.mu.Lock()
	r.blobLoads[id]++
	r.totalLoads++
	r.mu.Unlock()
	b, ok := r.blobs[id]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", id.Short(), vault.ErrNotFound)
	}
	return append(dst[:0], b...), nil
}

func (r *fakeRepo) BlobSize(typ vault.BlobType, id vault.ID) (uint32, error) {
	if n, ok := r.sizes[id]; ok {
		return n, nil
	}
	b, ok := r.blobs[id]
	if !ok {
		return 0, fmt.Errorf("blob %s: %w", id.Short(), vault.ErrNotFound)
	}
	return uint32(len(b)), nil
}

func (r *fakeRepo) loads() (total int, per map[vault.ID]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	per = map[vault.ID]int{}
	for k, v := range r.blobLoads {
		per[k] = v
	}
	return r.totalLoads, per
}

type mounted struct {
	dir  string
	logs *logSink
}

type logSink struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logSink) add(m string) {
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
}

func (l *logSink) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.msgs, "\n")
}

// mountFake mounts snaps read from r in a temporary directory until the
// test ends.
func mountFake(t *testing.T, r Repo, snaps ...vault.SnapshotRecord) mounted {
	t.Helper()
	return mountFakeWith(t, r, Options{Snapshots: snaps})
}

func mountFakeWith(t *testing.T, r Repo, opt Options) mounted {
	t.Helper()
	requireFUSE(t)
	logs := &logSink{}
	opt.Open = func(context.Context, vault.SnapshotRecord) (Repo, error) { return r, nil }
	opt.Log = logs.add
	f, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srv, err := Mount(dir, f)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mounted{dir: dir, logs: logs}
}

func record(tree vault.ID, host string, tm time.Time, files, dirs uint64, tags ...string) vault.SnapshotRecord {
	return vault.SnapshotRecord{ID: newID(), Time: tm, Host: host, Tree: tree, Files: files, Dirs: dirs, Tags: tags, Paths: []string{"/data"}}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// TestMountLazyChunks: reading one file of a large snapshot loads that
// file's chunks and nothing else, the listing loads only the trees on the
// way, a second read comes from the cache, and the layout names the
// snapshot by time, host, tag and ID.
func TestMountLazyChunks(t *testing.T) {
	r := newFakeRepo()
	var files []format.Node
	contents := map[string][]byte{}
	for i := range 40 {
		name := fmt.Sprintf("f%02d", i)
		data := pattern(3*1000+i, byte(i))
		contents[name] = data
		files = append(files, r.addFile(name, data, 1000))
	}
	other := r.addTree(r.addFile("untouched", pattern(5000, 9), 1000))
	big := r.addTree(files...)
	root := r.addTree(dirNodeOf("big", big), dirNodeOf("other", other))
	tm := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s := record(root, "web01", tm, 41, 2, "daily")
	m := mountFake(t, r, s)

	p := filepath.Join(m.dir, "snapshots", "2026-12-01T10:00:00Z", "big", "f17")
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, contents["f17"]) {
		t.Fatal("f17 differs from what was backed up")
	}
	total, per := r.loads()
	want := files[17].Content
	if total != len(want) {
		t.Fatalf("reading one file of 4 chunks loaded %d blobs, want %d (only its own)", total, len(want))
	}
	for _, id := range want {
		if per[id] != 1 {
			t.Fatalf("chunk %s loaded %d times, want 1", id.Short(), per[id])
		}
	}
	r.mu.Lock()
	trees := r.treeLoads
	r.mu.Unlock()
	if trees != 2 {
		t.Fatalf("loaded %d trees to reach one file, want 2 (root, big): the other directory must stay unloaded", trees)
	}
	// Read through another name of the same snapshot: the cache answers.
	for _, alt := range []string{"hosts/web01/2026-12-01T10:00:00Z", "tags/daily/latest", "ids/" + s.ID.Short(), "snapshots/latest", "hosts/web01/latest"} {
		got, err := os.ReadFile(filepath.Join(m.dir, alt, "big", "f17"))
		if err != nil {
			t.Fatalf("%s: %v", alt, err)
		}
		if !bytes.Equal(got, contents["f17"]) {
			t.Fatalf("%s: content differs", alt)
		}
	}
	if total2, _ := r.loads(); total2 != total {
		t.Fatalf("reading the same file again loaded %d more blobs, want 0 (chunk cache)", total2-total)
	}
	if tgt, err := os.Readlink(filepath.Join(m.dir, "snapshots", "latest")); err != nil || tgt != "2026-12-01T10:00:00Z" {
		t.Fatalf("snapshots/latest -> %q, %v", tgt, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o640 || fi.Size() != int64(len(contents["f17"])) || !fi.ModTime().Equal(time.Unix(0, files[17].MTime)) {
		t.Fatalf("attributes %v %d %v differ from the snapshot's", fi.Mode(), fi.Size(), fi.ModTime())
	}
	// A read in the middle of a chunk, across a boundary.
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	buf := make([]byte, 1500)
	n, err := fh.ReadAt(buf, 700)
	if err != nil || n != 1500 || !bytes.Equal(buf, contents["f17"][700:2200]) {
		t.Fatalf("ReadAt 700+1500: %d, %v, equal %v", n, err, bytes.Equal(buf[:n], contents["f17"][700:700+n]))
	}
}

// TestMountReadOnly: every way of writing fails with EROFS.
func TestMountReadOnly(t *testing.T) {
	r := newFakeRepo()
	sub := r.addTree(r.addFile("f", []byte("hello"), 4))
	root := r.addTree(dirNodeOf("d", sub), format.Node{Kind: format.KindSymlink, Name: []byte("l"), Perm: 0o777, Target: []byte("d/f")})
	m := mountFake(t, r, record(root, "h", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 2, 1))
	base := filepath.Join(m.dir, "snapshots", "latest")
	f := filepath.Join(base, "d", "f")
	if b, err := os.ReadFile(f); err != nil || string(b) != "hello" {
		t.Fatalf("read: %q %v", b, err)
	}
	ops := map[string]func() error{
		"open for writing": func() error {
			h, err := os.OpenFile(f, os.O_WRONLY, 0)
			if err == nil {
				h.Close()
			}
			return err
		},
		"open read-write": func() error {
			h, err := os.OpenFile(f, os.O_RDWR, 0)
			if err == nil {
				h.Close()
			}
			return err
		},
		"create":          func() error { return os.WriteFile(filepath.Join(base, "d", "new"), []byte("x"), 0o644) },
		"create at root":  func() error { return os.WriteFile(filepath.Join(m.dir, "new"), []byte("x"), 0o644) },
		"mkdir":           func() error { return os.Mkdir(filepath.Join(base, "d", "x"), 0o755) },
		"mkdir in hosts":  func() error { return os.Mkdir(filepath.Join(m.dir, "hosts", "x"), 0o755) },
		"remove":          func() error { return os.Remove(f) },
		"remove snapshot": func() error { return os.Remove(filepath.Join(m.dir, "snapshots", "latest")) },
		"rmdir":           func() error { return syscall.Rmdir(filepath.Join(base, "d")) },
		"rename":          func() error { return os.Rename(f, filepath.Join(base, "d", "g")) },
		"chmod":           func() error { return os.Chmod(f, 0o777) },
		"chown":           func() error { return os.Lchown(f, 0, 0) },
		"truncate":        func() error { return os.Truncate(f, 0) },
		"utimes":          func() error { return os.Chtimes(f, time.Now(), time.Now()) },
		"symlink":         func() error { return os.Symlink("x", filepath.Join(base, "d", "s")) },
		"link":            func() error { return os.Link(f, filepath.Join(base, "d", "h")) },
		"setxattr":        func() error { return syscall.Setxattr(f, "user.x", []byte("1"), 0) },
		"mknod":           func() error { return syscall.Mkfifo(filepath.Join(base, "d", "p"), 0o644) },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	if b, err := os.ReadFile(f); err != nil || string(b) != "hello" {
		t.Fatalf("after the writes: %q %v", b, err)
	}
}

// TestMountNoDevNoSuid: a snapshot (perhaps a hostile one) holding a
// set-user-ID root program or a device node gains nothing: the mount is
// read-only, nodev and nosuid, and a device cannot be opened through it.
func TestMountNoDevNoSuid(t *testing.T) {
	r := newFakeRepo()
	suid := r.addFile("su", []byte("#!/bin/sh\n"), 64)
	suid.Perm, suid.UID = 0o4755, 0
	mem := format.Node{Kind: format.KindCharDev, Name: []byte("mem"), Perm: 0o666, RDev: uint64(unixMkdev(1, 1))}
	root := r.addTree(suid, mem)
	m := mountFake(t, r, record(root, "h", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 2, 0))
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("no /proc/self/mountinfo: %v", err)
	}
	var line string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == m.dir {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("mount point %s not in mountinfo", m.dir)
	}
	opts := strings.Split(strings.Fields(line)[5], ",")
	for _, want := range []string{"ro", "nosuid", "nodev"} {
		if !contains(opts, want) {
			t.Errorf("mount options %v lack %s", opts, want)
		}
	}
	dev := filepath.Join(m.dir, "snapshots", "latest", "mem")
	fi, err := os.Lstat(dev)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeCharDevice == 0 {
		t.Fatalf("mem shows as %v, want a character device (the snapshot's metadata)", fi.Mode())
	}
	if h, err := os.Open(dev); err == nil {
		h.Close()
		t.Fatal("a device node of a snapshot opened through the mount")
	}
}

func unixMkdev(major, minor uint32) uint64 {
	return uint64(major)<<8 | uint64(minor)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// TestMountTreeBomb: 30 trees each naming the next twice expand to 2^30
// paths while the record counts a handful. A walk of the mount ends with
// errors after about the record's count, instead of filling memory.
func TestMountTreeBomb(t *testing.T) {
	r := newFakeRepo()
	leaf := r.addTree(r.addFile("f", []byte("x"), 1))
	cur := leaf
	for range 30 {
		cur = r.addTree(dirNodeOf("a", cur), dirNodeOf("b", cur))
	}
	s := record(cur, "h", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 1, 2)
	m := mountFake(t, r, s)
	base := filepath.Join(m.dir, "snapshots", "latest")
	visited, failed := 0, 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		filepath.WalkDir(base+"/", func(p string, d fs.DirEntry, err error) error {
			visited++
			if err != nil {
				failed++
			}
			if visited > 100000 {
				return filepath.SkipAll
			}
			return nil
		})
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the walk of a tree bomb did not end")
	}
	if visited > 10000 {
		t.Fatalf("a walk visited %d entries of a snapshot whose record counts 3", visited)
	}
	if failed == 0 {
		t.Fatalf("the walk met no error after %d entries: the tree bomb was served; log %s", visited, m.logs.text())
	}
	if !strings.Contains(m.logs.text(), "hold more entries than its record says") {
		t.Fatalf("the user was not told why: %q", m.logs.text())
	}
}

// TestMountHostileTrees: trees that name "..", a name with '/', a file
// whose chunks do not add up to its size, a chunk longer than the index
// says, and paths deeper than any backup reads give errors (EIO,
// ENAMETOOLONG), never a path outside the snapshot or a panic.
func TestMountHostileTrees(t *testing.T) {
	r := newFakeRepo()
	dotdot := r.addTree(format.Node{Kind: format.KindFile, Name: []byte(".."), Perm: 0o644})
	slash := r.addTree(format.Node{Kind: format.KindFile, Name: []byte("a/b"), Perm: 0o644})
	short := r.addFile("short", []byte("abcdef"), 3)
	short.Size = 100 // the entry says more than its chunks hold
	liar := r.addFile("liar", []byte("abcdef"), 3)
	r.sizes[liar.Content[0]] = 2 // the index says less than the chunk holds
	liar.Size = 5
	// A chain of 255-byte names deeper than MaxPathBytes.
	deep := r.addTree(r.addFile("end", []byte("x"), 1))
	long := strings.Repeat("n", 255)
	for range 40 {
		deep = r.addTree(dirNodeOf(long, deep))
	}
	root := r.addTree(dirNodeOf("dotdot", dotdot), dirNodeOf("slash", slash), short, liar, dirNodeOf("deep", deep))
	m := mountFake(t, r, record(root, "h", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 100, 100))
	base := filepath.Join(m.dir, "snapshots", "latest")
	for _, d := range []string{"dotdot", "slash"} {
		if _, err := os.ReadDir(filepath.Join(base, d)); !errors.Is(err, syscall.EIO) {
			t.Errorf("listing %s: %v, want EIO", d, err)
		}
	}
	for _, f := range []string{"short", "liar"} {
		if _, err := os.ReadFile(filepath.Join(base, f)); !errors.Is(err, syscall.EIO) {
			t.Errorf("reading %s: %v, want EIO", f, err)
		}
	}
	p := filepath.Join(base, "deep")
	var err error
	for i := 0; i < 40 && err == nil; i++ {
		p = filepath.Join(p, long)
		// Step one directory at a time, as a walker would (a whole path
		// is refused by the kernel first).
		var fd int
		fd, err = syscall.Open(filepath.Dir(p), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err == nil {
			var st unix.Stat_t
			err = unix.Fstatat(fd, long, &st, 0)
			syscall.Close(fd)
		}
		if err != nil && errors.Is(err, syscall.ENAMETOOLONG) && len(p)-len(base) < 4096 {
			t.Fatalf("refused at %d bytes, before any bound", len(p)-len(base))
		}
	}
	if !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("a path deeper than any backup reads: %v, want ENAMETOOLONG", err)
	}
	logs := m.logs.text()
	for _, want := range []string{"unsafe path", "its entry says 100", "the index says 2"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q:\n%s", want, logs)
		}
	}
}

// TestEscapeName: hosts and tags that are not file names get distinct
// names that are.
func TestEscapeName(t *testing.T) {
	in := []string{"", ".", "..", "a/b", "a%2Fb", "%", "%2E", "web01", "a\x00b", "../etc"}
	seen := map[string]string{}
	for _, s := range in {
		e := escapeName(s)
		if !format.ValidName([]byte(e)) {
			t.Errorf("%q -> %q, not a valid name", s, e)
		}
		if o, dup := seen[e]; dup {
			t.Errorf("%q and %q both -> %q", o, s, e)
		}
		seen[e] = s
	}
}

// TestMountLayoutHostileHosts: snapshots with hosts and tags that are not
// file names ("..", "a/b") appear under escaped names, and two snapshots
// of the same second get distinct names.
func TestMountLayoutHostileHosts(t *testing.T) {
	r := newFakeRepo()
	root := r.addTree(r.addFile("f", []byte("x"), 1))
	tm := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	a := record(root, "..", tm, 1, 0, "a/b")
	b := record(root, "x/y", tm, 1, 0, "..")
	m := mountFake(t, r, a, b)
	names, err := os.ReadDir(filepath.Join(m.dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range names {
		got = append(got, n.Name())
	}
	want := []string{"2026-05-06T07:08:09Z-" + a.ID.Short(), "2026-05-06T07:08:09Z-" + b.ID.Short(), "latest"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("snapshots/ holds %v, want %v", got, want)
	}
	for _, p := range []string{"hosts/%2E%2E", "hosts/x%2Fy", "tags/a%2Fb", "tags/%2E%2E"} {
		if _, err := os.ReadFile(filepath.Join(m.dir, p, "latest", "f")); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// TestLayoutDistinctNames: snapshots a hostile server lists with one time
// and one ID each get a name of their own in every listing (none hides
// another), without mounting.
func TestLayoutDistinctNames(t *testing.T) {
	tm := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	a := record(newID(), "h", tm, 1, 0, "t")
	b := a // the same ID, time, host and tag
	c := a
	c.ID[31] ^= 1 // the same short ID
	layout := newLayout([]*snap{{rec: a}, {rec: b}, {rec: c}})
	var check func(where string, d *dirSpec)
	check = func(where string, d *dirSpec) {
		seen := map[string]bool{}
		for _, e := range d.entries {
			if seen[e.name] || !format.ValidName([]byte(e.name)) {
				t.Errorf("%s: name %q twice or invalid", where, e.name)
			}
			seen[e.name] = true
			if e.dir != nil {
				check(where+"/"+e.name, e.dir)
			}
		}
	}
	check("", layout)
	snapshots := layout.entries[2]
	if snapshots.name != "snapshots" || len(snapshots.dir.entries) != 4 {
		t.Fatalf("snapshots/ holds %d entries, want 3 snapshots and latest", len(snapshots.dir.entries))
	}
}

// TestMountHugeDirectory: ls -l in a directory larger than the tree cache
// loads its tree once, not once per entry.
func TestMountHugeDirectory(t *testing.T) {
	r := newFakeRepo()
	var nodes []format.Node
	for i := range 2000 {
		nodes = append(nodes, format.Node{Kind: format.KindFile, Name: []byte(fmt.Sprintf("f%04d", i)), Perm: 0o644})
	}
	huge := r.addTree(nodes...)
	root := r.addTree(dirNodeOf("huge", huge))
	m := mountFakeWith(t, r, Options{treeNodes: 100,
		Snapshots: []vault.SnapshotRecord{record(root, "h", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 2000, 1)}})
	dir := filepath.Join(m.dir, "snapshots", "latest", "huge")
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 2000 {
		t.Fatalf("listed %d entries: %v", len(ents), err)
	}
	for _, e := range ents {
		if _, err := os.Lstat(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	r.mu.Lock()
	loads := r.treeLoads
	r.mu.Unlock()
	if loads > 3 {
		t.Fatalf("ls -l of a directory of 2000 entries loaded trees %d times, want its tree once (and the root)", loads)
	}
}

// TestNewRefusesHugeLayouts: a server listing a snapshot with a million
// tags (or a million snapshots) is refused at mount, before the layout is
// built.
func TestNewRefusesHugeLayouts(t *testing.T) {
	s := record(newID(), "h", time.Now(), 1, 0)
	s.Tags = make([]string, maxPlaces)
	for i := range s.Tags {
		s.Tags[i] = "t"
	}
	_, err := New(Options{Snapshots: []vault.SnapshotRecord{s}, Open: func(context.Context, vault.SnapshotRecord) (Repo, error) { return nil, nil }})
	if !errors.Is(err, ErrTooManySnapshots) {
		t.Fatalf("New with %d tags: %v, want ErrTooManySnapshots", len(s.Tags), err)
	}
}
