package server_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/catalog/postgres"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// startReplicas starts two servers, each on its own port, sharing one
// PostgreSQL catalog, one bucket on a versitygw with Object Lock (every
// vault's store is NAME/ in it, as with coffer server --store
// s3://BUCKET) and the data directory (the platform key, the audit
// signing key, the TLS material). Each server has its own connections to
// both, as replicas on two hosts have.
func startReplicas(t *testing.T) (a, b *servertest.Env, sh shared) {
	t.Helper()
	url := pgtest.URL(t)
	sv := s3test.Start(t)
	bucket := sv.Bucket(t, true)
	sh = shared{catalog: url, s3: sv, bucket: bucket}
	conf := func(o *server.Options) {
		o.Catalog = url
		o.OpenStore = func(ctx context.Context, name string) (vault.Store, error) {
			return s3.Open(ctx, s3.Options{Bucket: bucket, Prefix: name, Endpoint: sv.Endpoint,
				Region: "us-east-1", PathStyle: true, Credentials: sv.Credentials(), MaxBackoff: 100 * time.Millisecond})
		}
	}
	a = servertest.StartWith(t, servertest.Options{Configure: conf})
	b = servertest.StartWith(t, servertest.Options{Configure: conf, Replica: a})
	return a, b, sh
}

// shared is what replicas share besides the data directory.
type shared struct {
	catalog string // postgres:// URL
	s3      *s3test.Server
	bucket  string
}

// TestReplicas: two servers serve one vault at once through a shared
// PostgreSQL catalog and one bucket. Eight agents back up through both
// while a prune runs on one; then every snapshot passes check --read-data
// through either, the catalog's packs are the bucket's, data stored
// through one deduplicates through the other, and a settings change or a
// token revocation made through one holds on the other at its next
// request.
func TestReplicas(t *testing.T) {
	ctx := context.Background()
	a, b, sh := startReplicas(t)
	ownerA, ownerB := a.Client(t, a.OwnerToken), b.Client(t, b.OwnerToken)
	if _, err := ownerA.CreateVault(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	tok := token(t, ownerB, "backup-operator", "shared") // issued through the other replica
	open := func(e *servertest.Env) *client.Vault {
		v := e.Client(t, tok).Vault("shared")
		if err := v.LoadDedup(ctx); err != nil {
			t.Fatal(err)
		}
		return v
	}
	va, vb := open(a), open(b)

	// A blob stored through one replica deduplicates through the other.
	common := t.TempDir()
	writeTree(t, common, map[string][]byte{"big": randomBytes(1, 3<<20), "small": randomBytes(2, 10_000)})
	first, err := agent.Backup(ctx, va, agent.BackupOptions{Paths: []string{common}, Host: "common"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := agent.Backup(ctx, vb, agent.BackupOptions{Paths: []string{common}, Host: "common"})
	if err != nil {
		t.Fatal(err)
	}
	if first.Snapshot.BytesAdded < 3<<20 || again.Snapshot.BytesAdded > 64<<10 {
		t.Errorf("backup through a then b added %d then %d bytes; want the second to deduplicate",
			first.Snapshot.BytesAdded, again.Snapshot.BytesAdded)
	}

	// Eight agents over both replicas, and a prune on one meanwhile.
	srcs := make([]string, 8)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range srcs {
		srcs[i] = t.TempDir()
		writeTree(t, srcs[i], map[string][]byte{
			"own":           randomBytes(uint64(100+i), 1<<20),
			"shared":        randomBytes(7, 2<<20), // the same in every source
			"dir/" + "note": []byte(fmt.Sprintf("agent %d", i)),
		})
		// Each agent its own client, as agents are: a client is one
		// backup session at a time.
		v := open(a)
		if i%2 == 1 {
			v = open(b)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				if _, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{srcs[i]}, Host: fmt.Sprintf("agent%d", i)}); err != nil {
					errs <- fmt.Errorf("agent %d: %w", i, err)
					return
				}
			}
		}()
	}
	pruneA := a.Client(t, a.OwnerToken).Vault("shared")
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := pruneA.Prune(ctx, false); err != nil {
			errs <- fmt.Errorf("prune: %w", err)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if _, err := pruneA.Prune(ctx, false); err != nil {
		t.Fatalf("prune after the backups: %v", err)
	}

	for _, v := range []*client.Vault{va, vb} {
		snaps, err := v.Snapshots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(snaps) != 2+2*len(srcs) {
			t.Errorf("%d snapshots, want %d", len(snaps), 2+2*len(srcs))
		}
		rep, err := v.Check(ctx, true, nil)
		if err != nil || len(rep.Errors) > 0 {
			t.Fatalf("check --read-data: %v %v", rep.Errors, err)
		}
	}
	// The packs live in the bucket, and the bucket holds exactly the
	// packs the catalog lists: nothing stored by one replica is unknown
	// to the catalog, nothing the catalog lists is missing.
	cat, err := postgres.Open(ctx, sh.catalog)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	rec, err := cat.Vault(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	inCatalog := map[string]bool{}
	if err := cat.Packs(ctx, rec.ID, func(p vault.PackRecord) error {
		inCatalog[p.ID.String()] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	inBucket := sh.s3.Names(t, sh.bucket, "shared/packs/")
	if len(inBucket) == 0 || !maps.Equal(inCatalog, inBucket) {
		t.Errorf("the catalog lists %d packs, the bucket holds %d; want the same, more than none", len(inCatalog), len(inBucket))
	}
	if _, err := os.Stat(filepath.Join(a.DataDir, "vaults", "shared", "store")); err == nil {
		t.Error("the vault has a store in the data directory besides the bucket")
	}

	for i, src := range srcs {
		v := vb
		if i%2 == 1 {
			v = va // restore through the replica that did not write it
		}
		snaps, err := v.Snapshots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var snap vault.SnapshotRecord
		for _, s := range snaps { // oldest first: the last is the newest
			if s.Host == fmt.Sprintf("agent%d", i) {
				snap = s
			}
		}
		if snap.ID.IsZero() {
			t.Fatalf("no snapshot of agent %d", i)
		}
		restoreAndCompare(t, v, snap, filepath.Clean(src))
	}

	// A settings change made through a holds on b.
	days := 30
	if _, err := ownerA.Vault("shared").ChangeSettings(ctx, api.SettingsChange{SoftDeleteDays: &days}); err != nil {
		t.Fatal(err)
	}
	st, err := ownerB.Vault("shared").Settings(ctx)
	if err != nil || st.SoftDeleteDays != days {
		t.Errorf("settings through b after a change through a: %d days, %v; want %d", st.SoftDeleteDays, err, days)
	}

	// A token revoked through a is refused by b at its next request.
	toks, err := ownerA.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var opID string
	for _, tk := range toks {
		if tk.Role == "backup-operator" && tk.Vault == "shared" {
			opID = tk.ID
		}
	}
	if _, err := vb.Snapshots(ctx); err != nil {
		t.Fatalf("b before the revocation: %v", err)
	}
	if _, err := ownerA.RevokeToken(ctx, opID); err != nil {
		t.Fatal(err)
	}
	if _, err := vb.Snapshots(ctx); status(err) != http.StatusUnauthorized {
		t.Errorf("b after a revocation through a: %v, want 401", err)
	}
}

// TestReplicasOnePrune: while one server prunes a vault (holds the
// vault's prune job lock in the shared catalog), a prune asked of
// another server is refused with 409 Conflict; once the lock is free it
// runs. A dry run needs no lock.
func TestReplicasOnePrune(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	conf := func(o *server.Options) { o.Catalog = url }
	a := servertest.StartWith(t, servertest.Options{Configure: conf})
	b := servertest.StartWith(t, servertest.Options{Configure: conf, Replica: a})
	info, err := a.Client(t, a.OwnerToken).CreateVault(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	// The other server's prune, as the job lock it holds.
	other, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	unlock, ok, err := other.TryJobLock(ctx, "prune "+info.ID)
	if err != nil || !ok {
		t.Fatalf("TryJobLock = %v, %v", ok, err)
	}
	vb := b.Client(t, b.OwnerToken).Vault("v")
	if _, err := vb.Prune(ctx, false); status(err) != http.StatusConflict {
		t.Errorf("prune while another server prunes: %v, want 409", err)
	}
	if _, err := vb.Prune(ctx, true); err != nil {
		t.Errorf("dry-run prune while another server prunes: %v", err)
	}
	unlock()
	if _, err := vb.Prune(ctx, false); err != nil {
		t.Errorf("prune after the other server's: %v", err)
	}
}

// TestReplicasKeyChanges: a DEK rotation, a platform key rotation and a
// switch to a customer key made through one replica hold on the other at
// its next request, though it has the vault open with its keys unwrapped:
// its key status shows the new keys, and a backup through it seals its
// packs under the new DEK (and the other replica reads them back). The
// replicas share a data directory, or each has its own (the customer
// key's URI then reaches the other through the catalog).
func TestReplicasKeyChanges(t *testing.T) {
	t.Run("SharedDataDir", func(t *testing.T) { testReplicasKeyChanges(t, false) })
	t.Run("SeparateDataDirs", func(t *testing.T) { testReplicasKeyChanges(t, true) })
}

func testReplicasKeyChanges(t *testing.T, separate bool) {
	ctx := context.Background()
	url := pgtest.URL(t)
	keyDir := t.TempDir()
	var openStore func(ctx context.Context, name string) (vault.Store, error)
	if separate {
		// Replicas on different hosts: the stores in a bucket they share.
		sv := s3test.Start(t)
		bucket := sv.Bucket(t, false)
		openStore = func(ctx context.Context, name string) (vault.Store, error) {
			return s3.Open(ctx, s3.Options{Bucket: bucket, Prefix: name, Endpoint: sv.Endpoint,
				Region: "us-east-1", PathStyle: true, Credentials: sv.Credentials(), MaxBackoff: 100 * time.Millisecond})
		}
	}
	conf := func(o *server.Options) {
		o.Catalog = url
		o.KEKRotation = 90 * 24 * time.Hour
		o.KeyDirs = []string{keyDir}
		o.OpenStore = openStore
	}
	a := servertest.StartWith(t, servertest.Options{Configure: conf})
	join := servertest.Options{Configure: conf, Replica: a}
	if separate {
		join = servertest.Options{Configure: conf, Host: a}
	}
	b := servertest.StartWith(t, join)
	info, err := a.Client(t, a.OwnerToken).CreateVault(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	id, err := vault.ParseID(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	va, vb := a.Client(t, a.OwnerToken).Vault("k"), b.Client(t, b.OwnerToken).Vault("k")
	seen := map[vault.ID]bool{}
	round := 0
	// backupThroughB backs up fresh data through b and returns the DEK
	// versions of the packs it stored.
	backupThroughB := func() map[uint32]int {
		t.Helper()
		round++
		src := t.TempDir()
		writeTree(t, src, map[string][]byte{"f": randomBytes(uint64(1000+round), 1<<20)})
		if err := vb.LoadDedup(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := agent.Backup(ctx, vb, agent.BackupOptions{Paths: []string{src}, Host: fmt.Sprintf("round%d", round)}); err != nil {
			t.Fatalf("backup %d through b: %v", round, err)
		}
		vers := map[uint32]int{}
		if err := cat.Packs(ctx, id, func(p vault.PackRecord) error {
			if !seen[p.ID] {
				seen[p.ID] = true
				vers[p.DEKVersion]++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return vers
	}
	// agree checks that b's key status is a's, and that a backup through
	// b seals under the DEK a made current.
	agree := func(what string) {
		t.Helper()
		sa, err := va.KeyStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := vb.KeyStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !sb.Reachable || sb.KEK != sa.KEK || sb.DEKVersion != sa.DEKVersion || sb.KeyringGen != sa.KeyringGen {
			t.Errorf("after %s through a: b's key status %+v, a's %+v", what, sb, sa)
		}
		vers := backupThroughB()
		if len(vers) != 1 || vers[sa.DEKVersion] == 0 {
			t.Errorf("after %s through a: a backup through b stored packs under DEK versions %v, want only v%d", what, vers, sa.DEKVersion)
		}
	}

	if vers := backupThroughB(); len(vers) != 1 || vers[1] == 0 { // b opens the vault, keys unwrapped
		t.Fatalf("first backup through b: DEK versions %v, want v1", vers)
	}

	if _, err := va.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	agree("a DEK rotation")

	before, err := va.KeyStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.Clock.Add(int64(91 * 24 * time.Hour))
	if err := a.Server.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if after, err := va.KeyStatus(ctx); err != nil || after.KEK == before.KEK || !strings.HasPrefix(after.KEK, "platform") {
		t.Fatalf("platform key not rotated through a: %s, then %+v, %v", before.KEK, after, err)
	}
	agree("a platform key rotation")

	uri := rsaKeyAt(t, keyDir)
	if _, req, err := va.UseCMK(ctx, uri); err != nil || req != nil {
		t.Fatalf("use-cmk through a: %v (request %v)", err, req)
	}
	agree("a switch to a customer key")
	if st, err := vb.KeyStatus(ctx); err != nil || !strings.HasPrefix(st.KEK, "rsa") {
		t.Errorf("b's key after use-cmk through a: %+v, %v", st, err)
	}

	// Everything stored through b reads back through a.
	if rep, err := va.Check(ctx, true, nil); err != nil || len(rep.Errors) > 0 {
		t.Fatalf("check --read-data through a: %v %v", rep.Errors, err)
	}
	if separate {
		// The URI reached b through the catalog, sealed: neither data
		// directory holds it, nor the catalog in plaintext.
		for _, e := range []*servertest.Env{a, b} {
			if es, _ := os.ReadDir(filepath.Join(e.DataDir, "keys", "cmk")); len(es) > 0 {
				t.Errorf("%s holds %d key URI files", e.DataDir, len(es))
			}
		}
		uris, err := cat.KeyURIs(ctx, id)
		if err != nil || len(uris) != 1 {
			t.Fatalf("key URIs in the catalog: %d, %v; want 1", len(uris), err)
		}
		for _, sealed := range uris {
			if strings.Contains(string(sealed), strings.TrimPrefix(uri, "rsa-file://")) {
				t.Error("the catalog holds the key URI in plaintext")
			}
		}
	}
}
