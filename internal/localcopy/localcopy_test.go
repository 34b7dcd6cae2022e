package localcopy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// fakeKeys is a vault's key source: it wraps under its own KEK, and can
// be revoked.
type fakeKeys struct {
	mu      sync.Mutex
	kek     seal.Key
	revoked bool
	down    bool // unreachable
}

func (f *fakeKeys) NewKey(context.Context) (seal.Key, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revoked {
		return seal.Key{}, nil, vault.ErrKeyUnavailable
	}
	k := seal.NewRandomKey()
	return k, seal.Wrap(f.kek, k, []byte("test")), nil
}

func (f *fakeKeys) Unwrap(_ context.Context, w []byte) (seal.Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return seal.Key{}, errors.New("connection refused")
	}
	if f.revoked {
		return seal.Key{}, errors.Join(ErrRefused, vault.ErrKeyUnavailable)
	}
	k, err := seal.Unwrap(f.kek, w, []byte("test"))
	if err != nil {
		return k, errors.Join(ErrReset, err)
	}
	return k, nil
}

type fixture struct {
	t     *testing.T
	v     *engine.Vault // the backed-up vault
	keys  *fakeKeys
	opt   Options
	clock time.Time
	src   string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := local.Open(filepath.Join(dir, "vault", "store"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := sqlite.Open(filepath.Join(dir, "vault", "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, keys: &fakeKeys{kek: seal.NewRandomKey()}, clock: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), src: filepath.Join(dir, "src")}
	v, err := engine.Create(context.Background(), engine.Options{Store: st, Catalog: cat, Keys: cacheKEK{seal.NewRandomKey()}, Name: "v", Now: f.now}, engine.DefaultChunker())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(); cat.Close(); st.Close() })
	f.v = v
	f.opt = Options{Dir: filepath.Join(dir, "home", "local-copies", "x"), Secret: filepath.Join(dir, "home", "keys", "secret"), Vault: "local:test", Now: f.now}
	return f
}

func (f *fixture) now() time.Time { return f.clock }

func (f *fixture) write(name, data string) {
	f.t.Helper()
	p := filepath.Join(f.src, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// backup backs paths up through a Tee over repo (the vault when nil),
// keeping keep, and commits unless the backup failed.
func (f *fixture) backup(repo agent.BackupRepo, keep int, paths ...string) (vault.SnapshotRecord, int, error) {
	f.t.Helper()
	f.clock = f.clock.Add(time.Minute)
	if repo == nil {
		repo = f.v
	}
	if len(paths) == 0 {
		paths = []string{f.src}
	}
	c, _, err := OpenForBackup(context.Background(), f.opt, f.keys, f.v.Dedup())
	if err != nil {
		return vault.SnapshotRecord{}, 0, err
	}
	defer c.Close()
	tee, r := c.Tee(repo, keep)
	res, err := agent.Backup(context.Background(), r, agent.BackupOptions{Paths: paths, Host: "h", Now: f.now})
	if err != nil {
		return vault.SnapshotRecord{}, 0, err
	}
	held, err := tee.Commit(context.Background())
	return res.Snapshot, held, err
}

func (f *fixture) restore(s vault.SnapshotRecord) string {
	f.t.Helper()
	c, err := OpenOffline(context.Background(), f.opt, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	defer c.Close()
	var e *Entry
	for _, x := range c.Entries() {
		if x.Snapshot.ID == s.ID {
			e = &x
		}
	}
	if e == nil {
		f.t.Fatalf("snapshot %s is not held", s.ID.Short())
	}
	dst := f.t.TempDir()
	res, err := agent.Restore(context.Background(), c.Vault(), e.Snapshot.Tree, agent.RestoreOptions{Target: dst})
	if err != nil {
		f.t.Fatal(err)
	}
	if len(res.Damaged) > 0 || len(res.LostDirs) > 0 || len(res.Warnings) > 0 {
		f.t.Fatalf("restore from the cache: %+v", res)
	}
	return dst
}

// recorder is a repository whose SaveSnapshot is recorded (and can fail,
// as a crash between the cache's copy and the vault's commit would).
type recorder struct {
	*engine.Vault
	fail  bool
	saved []vault.SnapshotRecord
}

func (r *recorder) SaveSnapshot(ctx context.Context, s vault.SnapshotRecord) (vault.SnapshotRecord, error) {
	r.saved = append(r.saved, s)
	if r.fail {
		return s, errors.New("crash")
	}
	return r.Vault.SaveSnapshot(ctx, s)
}

// TestTeeReportsLocalCopies: the record the vault is asked to save
// carries Source.LocalCopies (keep, what will be held, encrypted, the
// cipher), next to whatever Source already held.
func TestTeeReportsLocalCopies(t *testing.T) {
	f := newFixture(t)
	f.write("a.txt", "one")
	rec := &recorder{Vault: f.v}
	for i, want := range []int{1, 2, 2} {
		f.write("n.txt", strings.Repeat("x", i+1))
		if _, held, err := f.backup(rec, 2); err != nil || held != want {
			t.Fatalf("backup %d: held %d, %v; want %d", i+1, held, err, want)
		}
		lc := rec.saved[len(rec.saved)-1].Source.LocalCopies
		if lc == nil || lc.Keep != 2 || lc.Held != want || !lc.Encrypted || lc.Cipher != "AES-256-GCM" {
			t.Fatalf("backup %d: Source.LocalCopies %+v, want keep 2, held %d, encrypted AES-256-GCM", i+1, lc, want)
		}
	}
	// Volumes the agent found are kept.
	c, _, err := OpenForBackup(context.Background(), f.opt, f.keys, f.v.Dedup())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tee, _ := c.Tee(rec, 2)
	s, err := agent.Backup(context.Background(), f.v, agent.BackupOptions{Paths: []string{f.src}, Host: "h", Now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	r := s.Snapshot
	// The vault checks a report names only the snapshot's paths.
	vols := []vault.SourceVolume{{Path: r.Paths[0], Mount: "/", Device: "/dev/mapper/root", FSType: "ext4", Encryption: vault.VolumeEncrypted, Method: "luks2"}}
	r.Source = &vault.SourceFacts{Volumes: vols}
	if _, err := tee.SaveSnapshot(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	got := rec.saved[len(rec.saved)-1].Source
	if len(got.Volumes) != 1 || got.Volumes[0] != vols[0] || got.LocalCopies == nil || r.Source.LocalCopies != nil {
		t.Fatalf("Source %+v: want the volumes kept, local copies added, the caller's record untouched", got)
	}
}

// TestCrashMidCopyLeavesCacheUsable: a backup whose blobs reached the
// cache but whose snapshot was never committed (the vault's save failed,
// as a crash would leave it), and a snapshot the cache saved but the
// manifest never named, are never read as held; the cache still restores
// what it held, and the next backup's prune removes what they left.
func TestCrashMidCopyLeavesCacheUsable(t *testing.T) {
	f := newFixture(t)
	f.write("a.txt", "first")
	first, _, err := f.backup(nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	f.write("b.bin", strings.Repeat("half-copied ", 100000))
	if _, _, err := f.backup(&recorder{Vault: f.v, fail: true}, 2); err == nil {
		t.Fatal("the failed backup did not fail")
	}
	// A snapshot in the cache's own vault that no manifest names.
	c, _, err := OpenForBackup(context.Background(), f.opt, f.keys, f.v.Dedup())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.v.SaveSnapshot(context.Background(), vault.SnapshotRecord{Time: f.now(), Host: snapHost, Paths: []string{"/"}, Tags: []string{}, Tree: first.Tree, Files: 1, Dirs: 10}); err != nil {
		t.Fatal(err)
	}
	c.Close()

	oc, err := OpenOffline(context.Background(), f.opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if es := oc.Entries(); len(es) != 1 || es[0].Snapshot.ID != first.ID {
		t.Fatalf("after the crash the cache holds %v, want the first snapshot only", es)
	}
	oc.Close()
	dst := f.restore(first)
	if b, _ := os.ReadFile(filepath.Join(dst, f.src, "a.txt")); string(b) != "first" {
		t.Fatalf("restored a.txt = %q", b)
	}
	second, held, err := f.backup(nil, 2)
	if err != nil || held != 2 {
		t.Fatalf("backup after the crash: held %d, %v", held, err)
	}
	dst = f.restore(second)
	if b, _ := os.ReadFile(filepath.Join(dst, f.src, "b.bin")); len(b) != len("half-copied ")*100000 {
		t.Fatalf("restored b.bin has %d bytes", len(b))
	}
	c, _, err = OpenForBackup(context.Background(), f.opt, f.keys, f.v.Dedup())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	snaps, _ := c.v.Snapshots(context.Background())
	if len(snaps) != 2 {
		t.Fatalf("the cache's vault keeps %d snapshots, want the 2 the manifest names (the orphan pruned)", len(snaps))
	}
}

// TestKeepCountsPerPathSet: --local-copies N counts the snapshots of one
// host and set of paths; backing up another set does not drop the first.
func TestKeepCountsPerPathSet(t *testing.T) {
	f := newFixture(t)
	f.write("a/x", "a")
	f.write("b/y", "b")
	a := filepath.Join(f.src, "a")
	b := filepath.Join(f.src, "b")
	sa, _, err := f.backup(nil, 1, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, held, err := f.backup(nil, 1, b); err != nil || held != 1 {
		t.Fatalf("held %d, %v", held, err)
	}
	f.restore(sa)
	f.write("a/x", "a2")
	sa2, held, err := f.backup(nil, 1, a)
	if err != nil || held != 1 {
		t.Fatalf("held %d, %v", held, err)
	}
	c, err := OpenOffline(context.Background(), f.opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	es := c.Entries()
	c.Close()
	if len(es) != 2 || es[1].Snapshot.ID != sa2.ID {
		t.Fatalf("held %v: want b's and a's newest", es)
	}
}

// TestAttackLeaseRules: an expired lease is refused and deleted; a
// revoked vault key refuses renewal and the lease goes at once; a second
// backup at the same time makes no copy; a lease moved to another
// cache, or a manifest swapped with another cache's, does not open.
func TestAttackLeaseRules(t *testing.T) {
	f := newFixture(t)
	f.write("a", "secret text")
	s, _, err := f.backup(nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := OpenForBackup(context.Background(), f.opt, f.keys, f.v.Dedup())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenForBackup(context.Background(), f.opt, f.keys, f.v.Dedup()); !errors.Is(err, ErrBusy) {
		t.Errorf("a second backup at once: %v, want ErrBusy", err)
	}
	c.Close()

	// Another cache on the same machine: its lease and manifest do not
	// open this one.
	g := *f
	g.opt.Dir = filepath.Join(filepath.Dir(f.opt.Dir), "y")
	g.opt.Vault = "local:other"
	gf := &g
	if _, _, err := gf.backup(nil, 1); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{leaseFile, manifestFile} {
		mine, _ := os.ReadFile(filepath.Join(f.opt.Dir, name))
		theirs, _ := os.ReadFile(filepath.Join(g.opt.Dir, name))
		os.WriteFile(filepath.Join(f.opt.Dir, name), theirs, 0o600)
		if c, err := OpenOffline(context.Background(), f.opt, nil); err == nil {
			c.Close()
			t.Errorf("another cache's %s opened this cache", name)
		}
		os.WriteFile(filepath.Join(f.opt.Dir, name), mine, 0o600)
	}
	f.restore(s)

	// Expired: refused, and the lease is gone.
	f.clock = f.clock.Add(DefaultLease)
	if _, err := OpenOffline(context.Background(), f.opt, nil); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("after the lease: %v, want ErrLeaseExpired", err)
	}
	if _, err := os.Stat(filepath.Join(f.opt.Dir, leaseFile)); err == nil {
		t.Error("the expired lease is still on disk")
	}
	// Renewed; the vault unreachable: no renewal, and the lease stays
	// (the copies are for when the vault cannot be reached).
	if _, err := Renew(context.Background(), f.opt, f.keys); err != nil {
		t.Fatal(err)
	}
	f.keys.down = true
	if _, _, err := OpenForBackup(context.Background(), f.opt, f.keys, f.v.Dedup()); err == nil {
		t.Fatal("renewed with the vault down")
	}
	f.restore(s)
	f.keys.down = false
	// Renewed, then the vault's key is revoked: renewal refused, lease
	// deleted, nothing readable even though its time has not passed.
	if _, err := Renew(context.Background(), f.opt, f.keys); err != nil {
		t.Fatal(err)
	}
	f.restore(s)
	f.keys.revoked = true
	if _, err := Renew(context.Background(), f.opt, f.keys); err == nil {
		t.Fatal("renewal succeeded with the key revoked")
	}
	if _, err := OpenOffline(context.Background(), f.opt, nil); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("after a refused renewal: %v, want ErrLeaseExpired", err)
	}
	if _, _, err := OpenForBackup(context.Background(), f.opt, f.keys, f.v.Dedup()); err == nil {
		t.Fatal("a backup renewed the lease with the key revoked")
	}
	// Renewed, then the vault answers that the key is no longer one it
	// opens for this agent (its key encryption key was given up): the
	// lease goes at once too.
	f.keys.revoked = false
	if _, err := Renew(context.Background(), f.opt, f.keys); err != nil {
		t.Fatal(err)
	}
	f.restore(s)
	f.keys.kek = seal.NewRandomKey()
	if _, err := Renew(context.Background(), f.opt, f.keys); !errors.Is(err, ErrReset) {
		t.Fatalf("renewal of a key the vault no longer opens: %v, want ErrReset", err)
	}
	if _, err := OpenOffline(context.Background(), f.opt, nil); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("after the vault gave the key up: %v, want ErrLeaseExpired", err)
	}
	// The key record does not hold the key in the clear.
	kb, _ := os.ReadFile(filepath.Join(f.opt.Dir, keyFile))
	if bytes.Contains(kb, []byte("secret text")) {
		t.Fatal("plaintext in the key record")
	}
}
