package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/catalog/postgres"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestReplicasSeparateDataDirs: two servers on "different hosts" share
// only the PostgreSQL catalog and an S3 bucket (with Object Lock); each has
// a data directory of its own, given only the deployment key and the audit
// signing key. A vault created through a with a store of its own is
// served by b with nothing about it on b's disk; backups go through both;
// a DEK rotation and a platform key rotation through a hold on b, which
// restores byte for byte; the platform key version no vault needs is
// retired from the catalog; the stored retention policy is applied by b's
// daily run; a prune through b leaves every snapshot passing check
// --read-data through either server, and the bucket holds exactly the
// packs the catalog lists.
func TestReplicasSeparateDataDirs(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	sv := s3test.Start(t)
	s3Credentials(t, sv)
	bucket := sv.Bucket(t, true)
	conf := func(o *server.Options) {
		o.Catalog = url
		o.KEKRotation = 90 * 24 * time.Hour
		o.RetentionAt = "03:00"
		o.Location = time.UTC
	}
	a := servertest.StartWith(t, servertest.Options{Configure: conf})
	b := servertest.StartWith(t, servertest.Options{Configure: conf, Host: a})
	if a.DataDir == b.DataDir {
		t.Fatal("the replicas share a data directory")
	}
	ownerA, ownerB := a.Client(t, a.OwnerToken), b.Client(t, b.OwnerToken)
	const prefix = "hosts/far"
	if _, err := ownerA.CreateVaultWith(ctx, api.CreateVault{Name: "far", Store: sv.URL(bucket, prefix)}); err != nil {
		t.Fatal(err)
	}
	tok := token(t, ownerB, "backup-operator", "far")
	va, vb := a.Client(t, tok).Vault("far"), b.Client(t, tok).Vault("far")
	backup := func(v *client.Vault, src, host string) vault.SnapshotRecord {
		t.Helper()
		if err := v.LoadDedup(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: host})
		if err != nil {
			t.Fatalf("backup of %s: %v", host, err)
		}
		return res.Snapshot
	}

	// Backups through both: one host twice (the policy keeps its newest),
	// another once.
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": randomBytes(11, 2<<20), "g": []byte("first")})
	first := backup(va, src, "h")
	writeTree(t, src, map[string][]byte{"f": randomBytes(11, 2<<20), "g": []byte("second")})
	second := backup(vb, src, "h")
	if second.BytesAdded > 64<<10 {
		t.Errorf("the second backup, through b, added %d bytes: want it to deduplicate against a's", second.BytesAdded)
	}

	// A DEK rotation and a platform key rotation through a.
	if _, err := ownerA.Vault("far").RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := ownerA.Vault("far").KeyStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.Clock.Add(int64(91 * 24 * time.Hour))
	if err := a.Server.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	sa, err := ownerA.Vault("far").KeyStatus(ctx)
	if err != nil || sa.KEK == before.KEK || !strings.HasPrefix(sa.KEK, "platform") {
		t.Fatalf("platform key not rotated through a: %s, then %+v, %v", before.KEK, sa, err)
	}
	sb, err := ownerB.Vault("far").KeyStatus(ctx)
	if err != nil || !sb.Reachable || sb.KEK != sa.KEK || sb.DEKVersion != sa.DEKVersion || sb.KeyringGen != sa.KeyringGen {
		t.Errorf("b's key status %+v (%v), a's %+v", sb, err, sa)
	}
	cat, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	if ks, err := cat.PlatformKeys(ctx); err != nil || len(ks) != 1 || ks[0].Version != 2 {
		t.Errorf("platform key versions in the catalog after the rotation and the rewrap: %+v, %v; want v2 alone (v1 retired)", ks, err)
	}
	other := t.TempDir()
	writeTree(t, other, map[string][]byte{"o": randomBytes(12, 1<<20)})
	third := backup(va, other, "o") // sealed under the new keys through a
	restoreAndCompare(t, vb, third, filepath.Clean(other))
	restoreAndCompare(t, vb, second, filepath.Clean(src))

	// The stored retention policy, applied by b's daily run.
	pb, err := json.Marshal(retention.Policy{Last: 1})
	if err != nil {
		t.Fatal(err)
	}
	ps := string(pb)
	if _, err := ownerA.Vault("far").ChangeSettings(ctx, api.SettingsChange{Policy: &ps}); err != nil {
		t.Fatal(err)
	}
	// b's clock two days past a's (moved 91 days for the rotation): past a
	// daily run time and the grace after the policy was stored.
	b.Clock.Add(int64(93 * 24 * time.Hour))
	if err := b.Server.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	live := map[vault.ID]bool{}
	snaps, err := va.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		live[s.ID] = true
	}
	if live[first.ID] || !live[second.ID] || !live[third.ID] || len(live) != 2 {
		t.Errorf("after b's policy run: live %v; want the older snapshot of h forgotten (%v), %v and %v kept", live, first.ID, second.ID, third.ID)
	}

	// A prune through b, then check --read-data through both.
	if _, err := ownerB.Vault("far").Prune(ctx, false); err != nil {
		t.Fatalf("prune through b: %v", err)
	}
	for _, v := range []string{"a", "b"} {
		o := ownerA
		if v == "b" {
			o = ownerB
		}
		rep, err := o.Vault("far").Check(ctx, true, nil)
		if err != nil || len(rep.Errors) > 0 {
			t.Fatalf("check --read-data through %s: %v %v", v, rep.Errors, err)
		}
	}
	restoreAndCompare(t, va, second, filepath.Clean(src))

	rec, err := cat.Vault(ctx, "far")
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
	inBucket := sv.Names(t, bucket, prefix+"/packs/")
	if len(inBucket) == 0 || !maps.Equal(inCatalog, inBucket) {
		t.Errorf("the catalog lists %d packs, the bucket holds %d; want the same, more than none", len(inCatalog), len(inBucket))
	}
	// Nothing about the vault, and no platform key, on either disk.
	for _, e := range []*servertest.Env{a, b} {
		for _, p := range []string{filepath.Join(e.DataDir, "vaults", "far"), filepath.Join(e.DataDir, "keys", "platform.key")} {
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s exists (%v): a replica's data directory should hold neither the vault nor the platform key", p, err)
			}
		}
	}
}
