package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// spreadData backs up, in three snapshots, files spread over several data
// packs: the second backup changes big.bin's tail and adds docs/c.bin, so
// its pack holds the end of big.bin and all of c.bin. It returns the
// source directory and the snapshots' IDs.
func spreadData(t *testing.T, e *testEnv) (string, []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	writeFile(t, filepath.Join(dir, "a.txt"), []byte("alpha\n"), 0o644)
	writeFile(t, filepath.Join(dir, "docs", "b.txt"), []byte("bravo\n"), 0o640)
	big := randBytes(11, 9<<20)
	writeFile(t, filepath.Join(dir, "big.bin"), big, 0o755)
	s1 := backupJSON(t, e, dir)
	copy(big[len(big)-100_000:], randBytes(12, 100_000))
	writeFile(t, filepath.Join(dir, "big.bin"), big, 0o755)
	writeFile(t, filepath.Join(dir, "docs", "c.bin"), randBytes(13, 200_000), 0o644)
	s2 := backupJSON(t, e, dir)
	writeFile(t, filepath.Join(dir, "d.txt"), []byte("delta\n"), 0o644)
	s3 := backupJSON(t, e, dir)
	return dir, []string{s1, s2, s3}
}

// blobIndex is what a test needs of a vault's engine to know where each
// blob is.
type blobIndex interface {
	Lookup(t vault.BlobType, id vault.ID) (vault.BlobRecord, bool)
	LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error)
}

// usesOf maps each file of the snapshot with root tree root to its chunks'
// records, in order.
func usesOf(t *testing.T, ix blobIndex, root vault.ID) map[string][]vault.BlobRecord {
	t.Helper()
	out := map[string][]vault.BlobRecord{}
	err := agent.Walk(context.Background(), ix, root, "/", 0, func(p string, n *format.Node) error {
		if n.Kind != format.KindFile {
			return nil
		}
		for _, c := range n.Content {
			r, ok := ix.Lookup(vault.DataBlob, c)
			if !ok {
				return fmt.Errorf("%s: chunk %s not indexed", p, c.Short())
			}
			out[p] = append(out[p], r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// expectedLoss is, for each file, the merged byte ranges held by lost
// blobs.
func expectedLoss(uses map[string][]vault.BlobRecord, lost func(vault.BlobRecord) bool) map[string][][2]uint64 {
	out := map[string][][2]uint64{}
	for p, recs := range uses {
		var off uint64
		for _, r := range recs {
			end := off + uint64(r.RawLen)
			if lost(r) {
				rs := out[p]
				if n := len(rs); n > 0 && rs[n-1][1] == off {
					rs[n-1][1] = end
				} else {
					rs = append(rs, [2]uint64{off, end})
				}
				out[p] = rs
			}
			off = end
		}
	}
	return out
}

// restoreReport is restore --json's output.
type restoreReport struct {
	Files   uint64 `json:"files"`
	Damaged []struct {
		Path      string `json:"path"`
		Size      uint64 `json:"size"`
		LostBytes uint64 `json:"lost_bytes"`
		Lost      []struct {
			Offset uint64 `json:"offset"`
			End    uint64 `json:"end"`
			Error  string `json:"error"`
		} `json:"lost"`
		Deleted bool `json:"deleted"`
	} `json:"damaged"`
	LostDirs  []json.RawMessage `json:"lost_dirs"`
	LostBytes uint64            `json:"lost_bytes"`
}

func (r restoreReport) ranges() map[string][][2]uint64 {
	out := map[string][][2]uint64{}
	for _, d := range r.Damaged {
		for _, l := range d.Lost {
			out[d.Path] = append(out[d.Path], [2]uint64{l.Offset, l.End})
		}
	}
	return out
}

// assertRestoredExcept checks every regular file of src against the
// restore in target: files in lost match src with zeros in their lost
// ranges and have mode 0600 (or are gone, with deleted); all others match
// src byte for byte, with their mode.
func assertRestoredExcept(t *testing.T, src, target string, lost map[string][][2]uint64, deleted bool) {
	t.Helper()
	for _, rel := range regularFiles(t, src) {
		p := filepath.Join(src, rel)
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(p)
		out := filepath.Join(target, p)
		rs, damaged := lost[p]
		if damaged && deleted {
			if _, err := os.Lstat(out); !os.IsNotExist(err) {
				t.Errorf("%s: damaged, left in the target with --delete-damaged (%v)", p, err)
			}
			continue
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Errorf("%s not restored: %v", p, err)
			continue
		}
		mode := fi.Mode()
		if damaged {
			for _, r := range rs {
				clear(want[r[0]:r[1]])
			}
			mode = 0o600
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: restored content differs (damaged: %v)", p, damaged)
		}
		if gi, err := os.Stat(out); err != nil || gi.Mode() != mode {
			t.Errorf("%s: restored with mode %v, want %v", p, gi.Mode(), mode)
		}
	}
}

// damageCase damages a pack and says which of its blobs it costs.
type damageCase struct {
	name string
	do   func(t *testing.T, path string, blobs []vault.BlobRecord) func(vault.BlobRecord) bool
}

var packDamage = []damageCase{
	{"deleted", func(t *testing.T, path string, blobs []vault.BlobRecord) func(vault.BlobRecord) bool {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		return func(vault.BlobRecord) bool { return true }
	}},
	{"truncated", func(t *testing.T, path string, blobs []vault.BlobRecord) func(vault.BlobRecord) bool {
		// Cut in the middle of the second blob: the first stays whole.
		cut := int64(blobs[1].Offset + blobs[1].Length/2)
		if err := os.Truncate(path, cut); err != nil {
			t.Fatal(err)
		}
		return func(r vault.BlobRecord) bool { return int64(r.Offset+r.Length) > cut }
	}},
	{"byte flipped", func(t *testing.T, path string, blobs []vault.BlobRecord) func(vault.BlobRecord) bool {
		victim := blobs[len(blobs)-1]
		flipBit(t, path, int64(victim.Offset+victim.Length/2), 4)
		return func(r vault.BlobRecord) bool { return r.ID == victim.ID }
	}},
}

// damagedPack returns the data pack the second backup wrote (the one
// holding docs/c.bin) and its blobs in pack order.
func damagedPack(t *testing.T, uses map[string][]vault.BlobRecord, src string) (vault.ID, []vault.BlobRecord) {
	t.Helper()
	c := uses[filepath.Join(src, "docs", "c.bin")]
	if len(c) == 0 {
		t.Fatal("c.bin has no chunks")
	}
	pack := c[0].Pack
	seen := map[vault.ID]bool{}
	var blobs []vault.BlobRecord
	for _, recs := range uses {
		for _, r := range recs {
			if r.Pack == pack && !seen[r.ID] {
				seen[r.ID] = true
				blobs = append(blobs, r)
			}
		}
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].Offset < blobs[j].Offset })
	if len(blobs) < 2 {
		t.Fatalf("the second backup's pack holds %d blobs, want at least 2", len(blobs))
	}
	return pack, blobs
}

// assertDamageRestore runs restore (JSON, human, --delete-damaged) and
// check --read-data on a damaged vault and checks what each says.
func assertDamageRestore(t *testing.T, e *testEnv, src string, snaps []string, lost map[string][][2]uint64) {
	t.Helper()
	if len(lost) == 0 {
		t.Fatal("the damage costs no file: the test damages nothing")
	}
	// --json: the damaged files with their ranges, exit 3.
	target := t.TempDir()
	out, errOut, code := coffer(t, e, "restore", "latest", "--target", target, "--json")
	if code != exitPartial {
		t.Fatalf("restore of a damaged vault: exit %d, want 3\n%s%s", code, out, errOut)
	}
	var rep restoreReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("restore --json: %v\n%s", err, out)
	}
	if got := rep.ranges(); fmt.Sprint(got) != fmt.Sprint(lost) {
		t.Errorf("restore --json lists lost ranges %v, want %v", got, lost)
	}
	var total uint64
	for _, rs := range lost {
		for _, r := range rs {
			total += r[1] - r[0]
		}
	}
	if rep.LostBytes != total {
		t.Errorf("lost_bytes %d, want %d", rep.LostBytes, total)
	}
	for _, d := range rep.Damaged {
		for _, l := range d.Lost {
			if l.Error == "" {
				t.Errorf("%s: a lost range without its cause", d.Path)
			}
		}
	}
	assertRestoredExcept(t, src, target, lost, false)

	// --dry-run --verify reads every chunk and writes nothing: the same
	// files and ranges, exit 3.
	dry := filepath.Join(t.TempDir(), "dry")
	out, errOut, code = coffer(t, e, "restore", "latest", "--target", dry, "--dry-run", "--verify", "--json")
	if code != exitPartial {
		t.Fatalf("restore --dry-run --verify of a damaged vault: exit %d, want 3\n%s%s", code, out, errOut)
	}
	var plan restoreReport
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("restore --dry-run --verify --json: %v\n%s", err, out)
	}
	if got := plan.ranges(); fmt.Sprint(got) != fmt.Sprint(lost) {
		t.Errorf("restore --dry-run --verify lists lost ranges %v, want %v", got, lost)
	}
	if plan.LostBytes != total {
		t.Errorf("dry run: lost_bytes %d, want %d", plan.LostBytes, total)
	}
	if _, err := os.Lstat(dry); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("restore --dry-run --verify created the target: %v", err)
	}
	out, errOut, code = coffer(t, e, "restore", "latest", "--target", dry, "--dry-run", "--verify")
	if code != exitPartial || !strings.Contains(out, "damaged chunks") {
		t.Errorf("restore --dry-run --verify: exit %d, want 3 and the damage named\n%s%s", code, out, errOut)
	}
	for p := range lost {
		if lineWith(errOut, "damaged: "+p+":") == "" {
			t.Errorf("restore --dry-run --verify does not list damaged %s:\n%s", p, errOut)
		}
	}

	// Human output: each damaged file with its ranges, then a summary.
	target = t.TempDir()
	out, errOut, code = coffer(t, e, "restore", "latest", "--target", target)
	if code != exitPartial {
		t.Fatalf("restore: exit %d, want 3\n%s%s", code, out, errOut)
	}
	for p, rs := range lost {
		line := lineWith(errOut, "damaged: "+p+":")
		if line == "" {
			t.Errorf("restore does not list damaged %s:\n%s", p, errOut)
			continue
		}
		for _, r := range rs {
			if !strings.Contains(line, fmt.Sprintf("%d–%d", r[0], r[1])) {
				t.Errorf("restore's line for %s does not give range %d–%d: %s", p, r[0], r[1], line)
			}
		}
	}
	if !strings.Contains(errOut, plural(len(lost), "file", "files")+" damaged, "+humanBytes(total)+" lost") {
		t.Errorf("no summary of the damage:\n%s", errOut)
	}
	assertRestoredExcept(t, src, target, lost, false)

	// --delete-damaged: no damaged file is left.
	target = t.TempDir()
	out, errOut, code = coffer(t, e, "restore", "latest", "--target", target, "--delete-damaged")
	if code != exitPartial {
		t.Fatalf("restore --delete-damaged: exit %d, want 3\n%s%s", code, out, errOut)
	}
	assertRestoredExcept(t, src, target, lost, true)

	// check --read-data names the snapshots and files, with the ranges.
	out, errOut, code = coffer(t, e, "check", "--read-data")
	if code != exitFailure {
		t.Fatalf("check --read-data of a damaged vault: exit %d\n%s%s", code, out, errOut)
	}
	for _, s := range snaps[1:] { // the second and third snapshots use the pack
		for p, rs := range lost {
			for _, r := range rs {
				want := fmt.Sprintf("damaged: snapshot %s: %s: bytes %d–%d lost", s[:8], p, r[0], r[1])
				if !strings.Contains(errOut, want) {
					t.Errorf("check does not say %q:\n%s", want, errOut)
				}
			}
		}
	}
	if strings.Contains(errOut, "damaged: snapshot "+snaps[0][:8]) {
		t.Errorf("check names the first snapshot, which does not use the damaged pack:\n%s", errOut)
	}
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestRestoreDamagedVault: a pack deleted, truncated or with a byte
// flipped costs the files that use it only those bytes; restore restores
// everything else byte for byte, lists the damaged files with their
// ranges and exits 3; check --read-data names the same files.
func TestRestoreDamagedVault(t *testing.T) {
	e0 := newEnv(t)
	src, snaps := spreadData(t, e0)
	v := openTestVault(t, e0)
	uses := usesOf(t, v.Vault, mustParseID(t, listSnapshots(t, e0)[2].Tree))
	v.Close()
	pack, blobs := damagedPack(t, uses, src)
	f := &damageFixture{home: e0.home}
	for _, c := range packDamage {
		t.Run(c.name, func(t *testing.T) {
			e := f.clone(t)
			lostBlob := c.do(t, packFile(e, pack.String()), blobs)
			lost := expectedLoss(uses, func(r vault.BlobRecord) bool { return r.Pack == pack && lostBlob(r) })
			assertDamageRestore(t, e, src, snaps, lost)
		})
	}
}

// TestRestoreDamagedVaultRemote: the same through a vault server, whose
// store is damaged: blobs the server cannot deliver, or that fail to
// authenticate at the server.
func TestRestoreDamagedVaultRemote(t *testing.T) {
	for _, c := range packDamage {
		t.Run(c.name, func(t *testing.T) {
			srv, e := remoteVaultEnv(t, servertest.Options{})
			src, snaps := spreadData(t, e)
			eng, err := srv.Server.Engine(context.Background(), "prod")
			if err != nil {
				t.Fatal(err)
			}
			uses := usesOf(t, eng, mustParseID(t, listSnapshots(t, e)[2].Tree))
			pack, blobs := damagedPack(t, uses, src)
			store := filepath.Join(server.VaultDir(srv.DataDir, "prod"), "store")
			lostBlob := c.do(t, filepath.Join(store, "packs", pack.String()[:2], pack.String()), blobs)
			lost := expectedLoss(uses, func(r vault.BlobRecord) bool { return r.Pack == pack && lostBlob(r) })
			assertDamageRestore(t, e, src, snaps, lost)
		})
	}
}

// remoteVaultEnv starts a server with vault "prod" and an env using it
// with the owner's token.
func remoteVaultEnv(t *testing.T, opt servertest.Options) (*servertest.Env, *testEnv) {
	t.Helper()
	srv := servertest.StartWith(t, opt)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	return srv, e
}

// cutProxy forwards TCP connections to a server and, once the server has
// sent more than limit bytes, calls cut (once). The cut is made before
// the byte past the limit is forwarded, and every forwarder waits for it:
// the client never receives more than limit bytes (plus one read) before
// the cut has happened, however the goroutines are scheduled.
type cutProxy struct {
	ln     net.Listener
	target string
	limit  int64
	sent   atomic.Int64
	cut    func(p *cutProxy)
	once   sync.Once
	mu     sync.Mutex
	conns  []net.Conn
	closed bool // closeAll ran: connections accepted since are closed at once
}

func startCutProxy(t *testing.T, target string, limit int64, cut func(p *cutProxy)) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, limit: limit, cut: cut}
	t.Cleanup(p.closeAll)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.closed {
				// Accepted while closeAll ran: the server is gone for
				// this connection too.
				p.mu.Unlock()
				c.Close()
				s.Close()
				continue
			}
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						if p.sent.Add(int64(n)) > p.limit {
							// Synchronously: nothing past the limit is
							// forwarded until the cut is made.
							p.once.Do(func() { p.cut(p) })
						}
						if _, werr := c.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	}()
	return p
}

// closeAll refuses new connections and cuts those open: the server is
// gone, for the client.
func (p *cutProxy) closeAll() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
}

// TestRestoreFaultsStopRemote: a server that goes away mid-restore, or a
// key that stops being available mid-restore, stops the restore with exit
// 1 and says why: neither is reported as damage.
func TestRestoreFaultsStopRemote(t *testing.T) {
	t.Run("server gone", func(t *testing.T) {
		srv, e := remoteVaultEnv(t, servertest.Options{})
		spreadData(t, e)
		p := startCutProxy(t, strings.TrimPrefix(srv.URL, "https://"), 2<<20, (*cutProxy).closeAll)
		e.setenv("COFFER_VAULT", "https://"+p.ln.Addr().String()+"/prod")
		target := t.TempDir()
		out, errOut, code := coffer(t, e, "restore", "latest", "--target", target)
		if code != exitFailure {
			t.Fatalf("restore with the server gone mid-way: exit %d, want 1\n%s%s", code, out, errOut)
		}
		if p.sent.Load() <= 2<<20 {
			t.Fatalf("the connection was never cut (%d bytes)", p.sent.Load())
		}
		t.Logf("restore said: %s", errOut)
		if strings.Contains(errOut, "damaged") || !strings.Contains(errOut, "connection") && !strings.Contains(errOut, "unexpected EOF") {
			t.Errorf("the restore does not say the connection failed, or calls it damage:\n%s", errOut)
		}
	})
	t.Run("key removed", func(t *testing.T) {
		keyDir := t.TempDir()
		srv, e := remoteVaultEnv(t, servertest.Options{Configure: func(o *server.Options) {
			o.KeyTTL = time.Millisecond // the key is used again at (nearly) every request
			o.KeyDirs = []string{keyDir}
		}})
		uri := rsaKeyFile(t, keyDir)
		mustCoffer(t, e, "key", "use-cmk", uri)
		spreadData(t, e)
		p := startCutProxy(t, strings.TrimPrefix(srv.URL, "https://"), 2<<20, func(*cutProxy) {
			os.Remove(strings.TrimPrefix(uri, "rsa-file://"))
		})
		e.setenv("COFFER_VAULT", "https://"+p.ln.Addr().String()+"/prod")
		target := t.TempDir()
		out, errOut, code := coffer(t, e, "restore", "latest", "--target", target)
		if p.sent.Load() <= 2<<20 {
			t.Fatalf("the key was never removed (%d bytes)", p.sent.Load())
		}
		if code != exitFailure {
			t.Fatalf("restore with the key gone mid-way: exit %d, want 1\n%s%s", code, out, errOut)
		}
		t.Logf("restore said: %s", errOut)
		if strings.Contains(errOut, "damaged") || !strings.Contains(errOut, "key unavailable") {
			t.Errorf("the restore does not say the key is unavailable, or calls it damage:\n%s", errOut)
		}
	})
}

// TestRestoreLostDirectoryCLI: a tree that cannot be read (its pack
// damaged at the blob) loses its directory, reported by path; the rest is
// restored; exit 3. check names the directory as well.
func TestRestoreLostDirectoryCLI(t *testing.T) {
	e := newEnv(t)
	src, _ := spreadData(t, e)
	v := openTestVault(t, e)
	root := mustParseID(t, listSnapshots(t, e)[2].Tree)
	var docs vault.ID
	agent.Walk(context.Background(), v.Vault, root, "/", 0, func(p string, n *format.Node) error {
		if p == filepath.Join(src, "docs") {
			docs = n.Subtree
		}
		return nil
	})
	r, ok := v.Lookup(vault.TreeBlob, docs)
	v.Close()
	if !ok {
		t.Fatal("docs' tree not found")
	}
	flipBit(t, packFile(e, r.Pack.String()), int64(r.Offset+r.Length/2), 2)
	target := t.TempDir()
	out, errOut, code := coffer(t, e, "restore", "latest", "--target", target)
	if code != exitPartial {
		t.Fatalf("restore with a directory's tree damaged: exit %d, want 3\n%s%s", code, out, errOut)
	}
	if lineWith(errOut, "lost: "+filepath.Join(src, "docs")+":") == "" || !strings.Contains(errOut, "1 directory lost") {
		t.Errorf("the lost directory is not reported:\n%s", errOut)
	}
	for _, p := range []string{"a.txt", "big.bin", "d.txt"} {
		want, _ := os.ReadFile(filepath.Join(src, p))
		if got, err := os.ReadFile(filepath.Join(target, src, p)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s not restored intact: %v", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(target, src, "docs")); !errorsIsNotExist(err) {
		t.Errorf("the lost directory was created: %v", err)
	}
	_, errOut, code = coffer(t, e, "check", "--read-data")
	if code != exitFailure || !strings.Contains(errOut, ": "+filepath.Join(src, "docs")+"/: the directory's listing") {
		t.Errorf("check --read-data does not name the lost directory (exit %d):\n%s", code, errOut)
	}
}

func errorsIsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
