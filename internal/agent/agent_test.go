package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// testVault is a real local vault (directory store, SQLite catalog,
// platform key file) in a temporary directory.
//
// In the remote variant of the suite (TestRemote) the vault lives in a vault
// server on loopback TLS: Vault is the server's engine (for inspection and
// for planting hand-made objects) and repo, which the agent uses, is the
// HTTPS client.
type testVault struct {
	*engine.Vault
	dir  string
	repo repo
}

// repo is the agent's vault contract.
type repo interface {
	agent.BackupRepo
	agent.RestoreRepo
}

func newVault(t testing.TB, chunking vault.ChunkerParams) *testVault {
	t.Helper()
	if remoteMode {
		return newRemoteVault(t, chunking)
	}
	dir := t.TempDir()
	ks, err := platform.Create(filepath.Join(dir, "keys", "platform.key"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := local.Open(filepath.Join(dir, "vault", "store"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := sqlite.Open(filepath.Join(dir, "vault", "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close(); st.Close() })
	v, err := engine.Create(context.Background(), engine.Options{Store: st, Catalog: cat, Keys: ks, Name: "test"}, chunking)
	if err != nil {
		t.Fatal(err)
	}
	return &testVault{Vault: v, dir: filepath.Join(dir, "vault"), repo: v}
}

// small chunking so tests make many chunks from little data.
var small = vault.ChunkerParams{Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10}

func backup(t testing.TB, v *testVault, paths ...string) *agent.BackupResult {
	t.Helper()
	res, err := agent.Backup(context.Background(), v.repo, agent.BackupOptions{Paths: paths, Host: "testhost"})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return res
}

func restore(t testing.TB, v *testVault, root vault.ID, opt agent.RestoreOptions) *agent.RestoreResult {
	t.Helper()
	res, err := agent.Restore(context.Background(), v.repo, root, opt)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	return res
}

func write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func lstatT(t testing.TB, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func TestFidelity(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "plain.txt"), []byte("hello\n"))
	write(t, filepath.Join(src, "empty"), nil)
	write(t, filepath.Join(src, "dir", "big.bin"), randBytes(1, 300_000))
	write(t, filepath.Join(src, "dir", "deep", "x"), []byte("x"))
	if err := os.MkdirAll(filepath.Join(src, "emptydir"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("plain.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(src, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "plain.txt"), filepath.Join(src, "dir", "hardlink")); err != nil {
		t.Fatal(err)
	}
	bad := string([]byte{'b', 0xff, 0xfe, 'd'}) // not valid UTF-8
	write(t, filepath.Join(src, bad), []byte("bad name"))
	if err := os.Chmod(filepath.Join(src, "plain.txt"), 0o640|fs.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	// Sparse: 8 MiB with data only at both ends.
	sp := filepath.Join(src, "sparse")
	f, err := os.Create(sp)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("start"))
	f.WriteAt([]byte("end"), 8<<20-3)
	f.Close()
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	xattrOK := unix.Setxattr(filepath.Join(src, "plain.txt"), "user.coffer", []byte("xattr value"), 0) == nil
	if os.Geteuid() == 0 {
		if err := os.Lchown(filepath.Join(src, "empty"), 1234, 5678); err != nil {
			t.Fatal(err)
		}
	}
	// A socket is skipped with a warning, never a crash.
	sock := filepath.Join(src, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Nanosecond mtimes, set last (after all writes), on files and dirs.
	mt := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	for _, p := range []string{"plain.txt", "dir/big.bin", "dir", "emptydir", "empty"} {
		if err := os.Chtimes(filepath.Join(src, p), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Lutimes(filepath.Join(src, "link"), []unix.Timeval{{Sec: 1e9}, {Sec: 1e9}}); err != nil {
		t.Fatal(err)
	}

	v := newVault(t, small)
	var warnings []agent.Warning
	res, err := agent.Backup(context.Background(), v.repo, agent.BackupOptions{Paths: []string{src}, Host: "h",
		Warn: func(w agent.Warning) { warnings = append(warnings, w) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Unreadable != 0 {
		t.Fatalf("unreadable = %d, warnings %v", res.Unreadable, warnings)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0].String(), "socket") {
		t.Fatalf("want one socket warning, got %v", warnings)
	}

	dst := t.TempDir()
	restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: dst, Owners: os.Geteuid() == 0})
	out := filepath.Join(dst, src)

	for _, p := range []string{"plain.txt", "empty", "dir/big.bin", "dir/deep/x", bad, "sparse"} {
		want, _ := os.ReadFile(filepath.Join(src, p))
		got, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: content differs (err %v)", p, err)
		}
	}
	for _, p := range []string{"plain.txt", "dir/big.bin", "dir", "emptydir", "empty", "link", "fifo", "sparse"} {
		a, b := lstatT(t, filepath.Join(src, p)), lstatT(t, filepath.Join(out, p))
		if a.Mode != b.Mode {
			t.Errorf("%s: mode %o, want %o", p, b.Mode, a.Mode)
		}
		if a.Mtim != b.Mtim {
			t.Errorf("%s: mtime %v, want %v", p, b.Mtim, a.Mtim)
		}
		if os.Geteuid() == 0 && (a.Uid != b.Uid || a.Gid != b.Gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, b.Uid, b.Gid, a.Uid, a.Gid)
		}
	}
	if target, err := os.Readlink(filepath.Join(out, "link")); err != nil || target != "plain.txt" {
		t.Errorf("symlink: %q %v", target, err)
	}
	if target, err := os.Readlink(filepath.Join(out, "dangling")); err != nil || target != "/nonexistent/target" {
		t.Errorf("dangling symlink: %q %v", target, err)
	}
	a, b := lstatT(t, filepath.Join(out, "plain.txt")), lstatT(t, filepath.Join(out, "dir", "hardlink"))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link not restored as a link: inodes %d %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if xattrOK {
		buf := make([]byte, 64)
		n, err := unix.Getxattr(filepath.Join(out, "plain.txt"), "user.coffer", buf)
		if err != nil || string(buf[:n]) != "xattr value" {
			t.Errorf("xattr: %q %v", buf[:n], err)
		}
	} else {
		t.Log("filesystem has no user xattrs: xattr check skipped")
	}
	if st := lstatT(t, filepath.Join(out, "sparse")); st.Blocks*512 >= 1<<20 {
		t.Errorf("sparse file restored with %d bytes allocated, want holes", st.Blocks*512)
	}
	if _, err := os.Lstat(filepath.Join(out, "sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket should not be restored: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(out, "emptydir")); err != nil || !fi.IsDir() {
		t.Errorf("empty dir: %v", err)
	}
}

// TestNothingReadableAtRest writes names and contents holding a marker and
// searches every byte under the vault for it.
func TestNothingReadableAtRest(t *testing.T) {
	const marker = "CofferMarker7Q"
	src := filepath.Join(t.TempDir(), "top")
	content := bytes.Repeat([]byte(marker+" compressible text "), 5000)
	write(t, filepath.Join(src, "dir-"+marker, "file-"+marker+".txt"), content)
	write(t, filepath.Join(src, "raw.bin"), append(randBytes(3, 100_000), []byte(marker)...))
	if err := os.Symlink("target-"+marker, filepath.Join(src, "link-"+marker)); err != nil {
		t.Fatal(err)
	}
	unix.Setxattr(filepath.Join(src, "raw.bin"), "user.m", []byte(marker), 0)
	v := newVault(t, small)
	res := backup(t, v, src)
	if err := v.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	checked := 0
	err := filepath.WalkDir(v.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		checked++
		if bytes.Contains(b, []byte(marker)) || bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(marker))) {
			t.Errorf("%s holds the marker in plaintext", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 4 {
		t.Fatalf("only %d files under the vault: test is not looking at it", checked)
	}
	// And the data is really there.
	dst := t.TempDir()
	restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: dst})
	got, err := os.ReadFile(filepath.Join(dst, src, "dir-"+marker, "file-"+marker+".txt"))
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("restore: %v", err)
	}
}

func TestIncremental(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	for i := range 50 {
		write(t, filepath.Join(src, "d", string(rune('a'+i%26))+strings.Repeat("x", i)), randBytes(uint64(i), 20_000))
	}
	big := filepath.Join(src, "big.bin")
	write(t, big, randBytes(99, 64<<20))
	v := newVault(t, vault.ChunkerParams{Min: 512 << 10, Avg: 1 << 20, Max: 8 << 20})
	first := backup(t, v, src)
	second := backup(t, v, src)
	if second.Reused != 51 {
		t.Errorf("unchanged re-run read %d files again", 51-second.Reused)
	}
	if second.Snapshot.Parent != first.Snapshot.ID {
		t.Errorf("parent = %s, want %s", second.Snapshot.Parent.Short(), first.Snapshot.ID.Short())
	}
	// Only the trees of the directories above src may change (other
	// processes touch /tmp); src's own subtree must be the same blob.
	if second.Snapshot.BytesAdded > 4<<10 {
		t.Errorf("unchanged re-run added %d bytes", second.Snapshot.BytesAdded)
	}
	if subtree(t, v, first.Snapshot.Tree, src) != subtree(t, v, second.Snapshot.Tree, src) {
		t.Error("unchanged data gave a different tree")
	}
	// Change 1 MiB at several places of the 64 MiB file. Each edit touches
	// the chunks it overlaps, and chunking resyncs after it; now and then
	// the resync takes a few chunks (a boundary that fell within the
	// minimum size of the shifted chunk start is skipped), so the test
	// asserts the average over several edits, and a bound on each.
	prev := second
	total := 0
	const edits = 5
	var third *agent.BackupResult
	for i := range edits {
		f, err := os.OpenFile(big, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(randBytes(uint64(100+i), 1<<20), int64(5+12*i)<<20)
		f.Close()
		third = backup(t, v, src)
		if third.Reused != 50 {
			t.Errorf("reused %d files, want the 50 unchanged ones", third.Reused)
		}
		before, after := chunksOf(t, v, prev.Snapshot.Tree, big), chunksOf(t, v, third.Snapshot.Tree, big)
		old := map[vault.ID]bool{}
		for _, id := range before {
			old[id] = true
		}
		fresh := 0
		for _, id := range after {
			if !old[id] {
				fresh++
			}
		}
		t.Logf("edit %d: %d of %d chunks new, %d bytes added", i, fresh, len(after), third.Snapshot.BytesAdded)
		if fresh == 0 || fresh > 10 {
			t.Errorf("edit %d: %d new chunks", i, fresh)
		}
		if added := third.Snapshot.BytesAdded; added > uint64(fresh)*(8<<20)+(64<<10) {
			t.Errorf("edit %d: %d bytes added for %d new chunks", i, added, fresh)
		}
		total += fresh
		prev = third
	}
	if avg := float64(total) / edits; avg > 3.5 {
		t.Errorf("changing 1 MiB added %.1f chunks on average, want about two", avg)
	}
	dst := t.TempDir()
	restore(t, v, third.Snapshot.Tree, agent.RestoreOptions{Target: dst})
	want, _ := os.ReadFile(big)
	got, _ := os.ReadFile(filepath.Join(dst, big))
	if !bytes.Equal(got, want) {
		t.Fatal("modified big file restored wrong")
	}
}

func chunksOf(t *testing.T, v *testVault, root vault.ID, p string) []vault.ID {
	t.Helper()
	var ids []vault.ID
	err := agent.Walk(context.Background(), v.repo, root, p, 0, func(q string, n *format.Node) error {
		if q == p {
			ids = n.Content
		}
		return nil
	})
	if err != nil || len(ids) == 0 {
		t.Fatalf("find %s in snapshot: %v", p, err)
	}
	return ids
}

func subtree(t *testing.T, v *testVault, root vault.ID, p string) vault.ID {
	t.Helper()
	var id vault.ID
	err := agent.Walk(context.Background(), v.repo, root, p, 0, func(q string, n *format.Node) error {
		if q == p {
			id = n.Subtree
		}
		return nil
	})
	if err != nil || id.IsZero() {
		t.Fatalf("find %s in snapshot: %v", p, err)
	}
	return id
}

// maliciousTree stores a hand-encoded tree, bypassing EncodeTree's checks.
func maliciousTree(t *testing.T, v *testVault, names ...string) vault.ID {
	t.Helper()
	var b []byte
	b = append(b, format.TreeMagic...)
	b = append(b, format.TreeVersion, byte(len(names)))
	for _, n := range names {
		b = append(b, byte(format.KindFile), byte(len(n)))
		b = append(b, n...)
		b = append(b, 0o6, 0, 0, 1, 0, 0, 0, 0, 0, 0) // perm..nlink (size 1)
		content := []byte("x")
		id := v.BlobID(content)
		if _, err := v.SaveBlob(context.Background(), vault.DataBlob, id, v.Codec().Encode(nil, content), 1); err != nil {
			t.Fatal(err)
		}
		b = append(b, 1)
		b = append(b, id[:]...)
	}
	id := v.BlobID(b)
	if _, err := v.SaveBlob(context.Background(), vault.TreeBlob, id, v.Codec().Encode(nil, b), len(b)); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestSafeRestoreRefusesMaliciousTrees(t *testing.T) {
	for _, name := range []string{"..", "../x", "/etc/passwd", "a/b", ".", "", "nul\x00"} {
		t.Run(name, func(t *testing.T) {
			v := newVault(t, small)
			root := maliciousTree(t, v, name)
			parent := t.TempDir()
			target := filepath.Join(parent, "target")
			_, err := agent.Restore(context.Background(), v.repo, root, agent.RestoreOptions{Target: target})
			if err == nil {
				t.Fatal("restore of a malicious tree succeeded")
			}
			if !errors.Is(err, vault.ErrCorrupt) && !errors.Is(err, agent.ErrUnsafePath) {
				t.Fatalf("error %v is neither corrupt nor unsafe", err)
			}
			entries, _ := os.ReadDir(parent)
			if len(entries) != 1 {
				t.Fatalf("restore wrote outside the target: %v", entries)
			}
		})
	}
	t.Run("duplicate names", func(t *testing.T) {
		v := newVault(t, small)
		root := maliciousTree(t, v, "a", "a")
		if _, err := agent.Restore(context.Background(), v.repo, root, agent.RestoreOptions{Target: t.TempDir()}); !errors.Is(err, vault.ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
	})
}

func TestRestoreRefusesSymlinkInTarget(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "sub", "f"), []byte("data"))
	v := newVault(t, small)
	res := backup(t, v, src)
	target := t.TempDir()
	outside := t.TempDir()
	// The target already holds the first path component as a symlink
	// pointing outside: restoring must not write through it.
	first := strings.Split(strings.TrimPrefix(src, "/"), "/")[0]
	if err := os.Symlink(outside, filepath.Join(target, first)); err != nil {
		t.Fatal(err)
	}
	for _, overwrite := range []bool{false, true} {
		_, err := agent.Restore(context.Background(), v.repo, res.Snapshot.Tree, agent.RestoreOptions{Target: target, Overwrite: overwrite})
		if !errors.Is(err, agent.ErrUnsafePath) {
			t.Fatalf("overwrite=%v: got %v, want ErrUnsafePath", overwrite, err)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("restore wrote through the symlink: %v", entries)
		}
	}
}

func TestRestoreOverwrite(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "f"), []byte("from backup"))
	write(t, filepath.Join(src, "g"), []byte("other"))
	v := newVault(t, small)
	res := backup(t, v, src)
	target := t.TempDir()
	existing := filepath.Join(target, src, "f")
	write(t, existing, []byte("precious local edit"))

	r := restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: target})
	if r.Skipped != 1 {
		t.Errorf("skipped = %d, want 1", r.Skipped)
	}
	if got, _ := os.ReadFile(existing); string(got) != "precious local edit" {
		t.Fatalf("existing file overwritten without --overwrite: %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(target, src, "g")); string(got) != "other" {
		t.Fatalf("missing file not restored: %q", got)
	}
	restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: target, Overwrite: true})
	if got, _ := os.ReadFile(existing); string(got) != "from backup" {
		t.Fatalf("--overwrite did not replace: %q", got)
	}
}

func TestRestoreInclude(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "keep", "a"), []byte("a"))
	write(t, filepath.Join(src, "keep2"), []byte("not me"))
	write(t, filepath.Join(src, "other", "b"), []byte("b"))
	v := newVault(t, small)
	res := backup(t, v, src)
	target := t.TempDir()
	restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: target, Include: []string{filepath.Join(src, "keep")}})
	if got, _ := os.ReadFile(filepath.Join(target, src, "keep", "a")); string(got) != "a" {
		t.Fatal("included file missing")
	}
	for _, p := range []string{"keep2", "other"} {
		if _, err := os.Lstat(filepath.Join(target, src, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s restored though not included", p)
		}
	}
}

func TestFileChangedWhileReadIsReported(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	p := filepath.Join(src, "growing")
	write(t, p, randBytes(5, 4<<20))
	v := newVault(t, small)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // keep appending while the backup reads
		defer close(done)
		f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		defer f.Close()
		for {
			select {
			case <-stop:
				return
			default:
				f.Write([]byte("more"))
			}
		}
	}()
	var warned bool
	_, err := agent.Backup(context.Background(), v.repo, agent.BackupOptions{Paths: []string{src}, Host: "h",
		Warn: func(w agent.Warning) {
			if strings.Contains(w.Err.Error(), "changed while") {
				warned = true
			}
		}})
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if !warned {
		t.Fatal("a file that changed while being read was not reported")
	}
}

func TestDiff(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "same"), []byte("same"))
	write(t, filepath.Join(src, "mod"), []byte("v1"))
	write(t, filepath.Join(src, "gone", "x"), []byte("x"))
	v := newVault(t, small)
	a := backup(t, v, src)
	os.RemoveAll(filepath.Join(src, "gone"))
	write(t, filepath.Join(src, "mod"), []byte("v2 longer"))
	write(t, filepath.Join(src, "new"), []byte("n"))
	b := backup(t, v, src)
	got := map[string]byte{}
	if err := agent.Diff(context.Background(), v.repo, a.Snapshot.Tree, b.Snapshot.Tree, 0, func(c agent.Change) error {
		got[c.Path] = c.Op
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]byte{src + "/gone": '-', src + "/gone/x": '-', src + "/mod": 'M', src + "/new": '+'}
	for p, op := range want {
		if got[p] != op {
			t.Errorf("%s: op %q, want %q (all: %q)", p, got[p], op, got)
		}
	}
	if _, ok := got[src+"/same"]; ok {
		t.Error("unchanged file reported")
	}
}

// TestRestoreHardLinkNotToExistingFile: when the first name of a hard-linked
// file exists in the target and is left alone, the other names must not be
// linked to that unrelated file.
func TestRestoreHardLinkNotToExistingFile(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "a"), []byte("backed up"))
	if err := os.Link(filepath.Join(src, "a"), filepath.Join(src, "b")); err != nil {
		t.Fatal(err)
	}
	v := newVault(t, small)
	res := backup(t, v, src)
	target := t.TempDir()
	write(t, filepath.Join(target, src, "a"), []byte("someone else's file"))
	restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: target})
	if got, _ := os.ReadFile(filepath.Join(target, src, "b")); string(got) != "backed up" {
		t.Fatalf("b restored as %q, want the backed-up content", got)
	}
	if got, _ := os.ReadFile(filepath.Join(target, src, "a")); string(got) != "someone else's file" {
		t.Fatalf("existing a changed to %q", got)
	}
}

func TestRestoreIncludeMissing(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "a"), []byte("a"))
	v := newVault(t, small)
	res := backup(t, v, src)
	target := t.TempDir()
	_, err := agent.Restore(context.Background(), v.repo, res.Snapshot.Tree, agent.RestoreOptions{Target: target, Include: []string{filepath.Join(src, "nope")}})
	if !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("restore of a missing path wrote %v", entries)
	}
}

// TestBackupChecksLabelsFirst: a tag or host the vault would refuse
// fails the backup before anything is read or stored.
func TestBackupChecksLabelsFirst(t *testing.T) {
	v := newVault(t, small)
	src := t.TempDir()
	write(t, filepath.Join(src, "f"), randBytes(1, 1000))
	for _, opt := range []agent.BackupOptions{
		{Paths: []string{src}, Host: "h", Tags: []string{"bad\x1b[2J"}},
		{Paths: []string{src}, Host: "h\n"},
		{Paths: []string{src}, Host: "h", Tags: []string{"t", "t"}},
	} {
		_, err := agent.Backup(context.Background(), v.repo, opt)
		if !errors.Is(err, format.ErrInvalidSnapshot) {
			t.Errorf("backup with host %q tags %q: %v, want an invalid snapshot", opt.Host, opt.Tags, err)
		}
	}
	if snaps, err := v.repo.Snapshots(context.Background()); err != nil || len(snaps) != 0 {
		t.Errorf("refused backups left %d snapshots (%v)", len(snaps), err)
	}
}
