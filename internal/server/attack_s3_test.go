package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// s3Arena starts a server whose vaults live in bucket on sv, each under
// coffer/vaults/NAME, with vault "a".
func s3Arena(t *testing.T, sv *s3test.Server, bucket string) *arena {
	t.Helper()
	return newArenaWith(t, servertest.Options{Configure: func(o *server.Options) {
		o.OpenStore = func(ctx context.Context, name string) (vault.Store, error) {
			return s3.Open(ctx, s3.Options{Bucket: bucket, Prefix: "coffer/vaults/" + name, Endpoint: sv.Endpoint,
				Region: "us-east-1", PathStyle: true, Credentials: sv.Credentials(), MaxBackoff: 100 * time.Millisecond})
		}
	}})
}

func s3Client(t *testing.T, a *arena) *client.Vault {
	t.Helper()
	ctx := context.Background()
	c, err := client.New(client.Options{Server: a.env.URL, Token: token(t, a.owner, "backup-operator", "a"), TLS: a.env.TLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	v := c.Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}
	return v
}

func s3Backup(t *testing.T, v *client.Vault, files map[string][]byte) (string, vault.SnapshotRecord) {
	t.Helper()
	ctx := context.Background()
	src := t.TempDir()
	writeTree(t, src, files)
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	return src, res.Snapshot
}

func s3Restore(t *testing.T, v agent.RestoreRepo, snap vault.SnapshotRecord, src string, files map[string][]byte) {
	t.Helper()
	dst := t.TempDir()
	if _, err := agent.Restore(context.Background(), v, snap.Tree, agent.RestoreOptions{Target: dst}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, src, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s differs after the restore: %v", name, err)
		}
	}
}

// TestAttackS3ObjectLock plays someone holding the bucket's credentials
// (not Coffer's) against a vault whose immutability is locked, straight
// through the S3 API: every version Coffer wrote, those written before the
// lock included, refuses deletion; plain deletes (delete markers) and
// overwrites (new versions) of every object change nothing Coffer reads:
// the vault still lists its snapshot and restores byte for byte.
func TestAttackS3ObjectLock(t *testing.T) {
	sv := s3test.Start(t)
	bucket := sv.Bucket(t, true)
	a := s3Arena(t, sv, bucket)
	ctx := context.Background()

	files := map[string][]byte{"big": randomBytes(1, 5<<20), "d/small": []byte("small"), "d/mid": randomBytes(2, 200_000)}
	// A first backup before the lock: its objects get retention when the
	// vault is locked.
	v := s3Client(t, a)
	s3Backup(t, v, map[string][]byte{"early": randomBytes(3, 100_000)})
	for _, s := range []string{"enabled", "locked"} {
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{Immutability: &s})
	}
	src, snap := s3Backup(t, v, files)

	prefix := "coffer/vaults/a/"
	out, err := sv.Client.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &prefix})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, ver := range out.Versions {
		key := aws.ToString(ver.Key)
		kinds[strings.SplitN(strings.TrimPrefix(key, prefix), "/", 2)[0]]++
		if _, err := sv.Client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: ver.Key, VersionId: ver.VersionId}); err == nil {
			t.Errorf("the bucket let the attacker delete version %s of %s", aws.ToString(ver.VersionId), key)
		}
	}
	for _, k := range []string{"config", "keys", "snapshots", "packs"} {
		if kinds[k] == 0 {
			t.Fatalf("no %s object in the bucket (%v): the vault does not live there", k, kinds)
		}
	}
	for _, ver := range out.Versions {
		if _, err := sv.Client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: ver.Key}); err != nil {
			t.Fatal(err)
		}
		if _, err := sv.Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &bucket, Key: ver.Key, Body: bytes.NewReader([]byte("attacker"))}); err != nil {
			t.Fatal(err)
		}
	}
	s3Restore(t, v, snap, src, files)
}

// TestS3StoreBackupRestore: a vault on a plain bucket (no versions, no
// lock) backs up and restores through the server; deleting the vault
// empties its prefix.
func TestS3StoreBackupRestore(t *testing.T) {
	sv := s3test.Start(t)
	bucket := sv.Bucket(t, false)
	a := s3Arena(t, sv, bucket)
	files := map[string][]byte{"big": randomBytes(4, 3<<20), "d/small": []byte("small")}
	v := s3Client(t, a)
	src, snap := s3Backup(t, v, files)
	s3Restore(t, v, snap, src, files)
	if _, err := os.Stat(filepath.Join(a.env.DataDir, "vaults", "a", "store")); err == nil {
		t.Fatal("the vault has a local store beside its S3 one")
	}
}

// retainedUntil reads the retention of key's oldest version straight from
// the bucket.
func retainedUntil(t *testing.T, sv *s3test.Server, bucket, key string) time.Time {
	t.Helper()
	ctx := context.Background()
	out, err := sv.Client.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &key})
	if err != nil || len(out.Versions) == 0 {
		t.Fatalf("versions of %s: %v", key, err)
	}
	oldest := out.Versions[len(out.Versions)-1]
	h, err := sv.Client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &bucket, Key: &key, VersionId: oldest.VersionId})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToTime(h.ObjectLockRetainUntilDate)
}

// TestS3ObjectLockUpkeep: a locked vault's objects stay retained as time
// passes: maintenance lengthens the retention of a pack still in use and
// of the live snapshot to the earliest moment Coffer would let them go,
// counted from the new now; a forgotten snapshot's is not lengthened
// past its soft-delete period.
func TestS3ObjectLockUpkeep(t *testing.T) {
	sv := s3test.Start(t)
	bucket := sv.Bucket(t, true)
	a := s3Arena(t, sv, bucket)
	ctx := context.Background()
	for _, s := range []string{"enabled", "locked"} {
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{Immutability: &s})
	}
	v := s3Client(t, a)
	_, live := s3Backup(t, v, map[string][]byte{"f": randomBytes(5, 300_000)})
	_, gone := s3Backup(t, v, map[string][]byte{"g": randomBytes(6, 300_000)})
	prefix := "coffer/vaults/a/"
	var pack string
	out, err := sv.Client.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: &bucket, Prefix: aws.String(prefix + "packs/")})
	if err != nil || len(out.Contents) == 0 {
		t.Fatalf("no packs: %v", err)
	}
	pack = aws.ToString(out.Contents[0].Key)
	period := 14 * 24 * time.Hour // default soft delete, no minimum retention
	if got := retainedUntil(t, sv, bucket, pack); got.Before(time.Now().Add(period)) {
		t.Fatalf("a new pack of a locked vault is retained until %v, want at least %v", got, time.Now().Add(period))
	}
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/forget", a.env.OwnerToken, api.Forget{IDs: []string{gone.ID.String()}})
	forgotAt := time.Now().Add(time.Duration(a.env.Clock.Load()))
	goneUntil := retainedUntil(t, sv, bucket, prefix+"snapshots/"+gone.ID.String())

	a.advance(10 * 24 * time.Hour)
	if err := a.env.Server.Maintain(ctx); err != nil {
		t.Fatalf("maintain: %v", err)
	}
	now := time.Now().Add(time.Duration(a.env.Clock.Load()))
	for _, key := range []string{pack, prefix + "snapshots/" + live.ID.String(), prefix + "config"} {
		if got := retainedUntil(t, sv, bucket, key); got.Before(now.Add(period)) {
			t.Errorf("after 10 days and a maintenance run, %s is retained until %v, want at least %v", key, got, now.Add(period))
		}
	}
	if got := retainedUntil(t, sv, bucket, prefix+"snapshots/"+gone.ID.String()); got.After(goneUntil) && got.After(forgotAt.Add(period+time.Minute)) {
		t.Errorf("a forgotten snapshot's retention was lengthened to %v, past its soft-delete period (%v)", got, forgotAt.Add(period))
	}
}

// s3Credentials puts sv's credentials where the standard AWS chain finds
// them (the environment), as an operator would for coffer server, and
// keeps the chain away from this machine's own AWS files.
func s3Credentials(t *testing.T, sv *s3test.Server) {
	t.Setenv("AWS_ACCESS_KEY_ID", sv.Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", sv.Secret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// TestS3VaultOwnStore: on a server whose vaults default to local stores,
// an owner creates vault prod with a store of its own on S3 (coffer vault
// create prod --store s3://…). Its objects go to the bucket under the
// prefix given, nothing to the data directory; the server records the
// URL and, after a restart without any --store, reopens that store and
// restores the snapshot byte for byte; deleting the vault empties the
// prefix. Refused: an unknown scheme, credentials in the URL (never
// echoed or audited), a store given by a backup-contributor (who may
// create vaults, but not choose where a vault's data goes and which
// endpoint the server signs requests for).
func TestS3VaultOwnStore(t *testing.T) {
	sv := s3test.Start(t)
	s3Credentials(t, sv)
	bucket := sv.Bucket(t, false)
	a := newArena(t)
	ctx := context.Background()
	storeURL := sv.URL(bucket, "backups/prod")

	for _, bad := range []struct{ store, want string }{
		{"gs://backups/prod", `unknown scheme "gs"`},
		{"file:///var/backups/prod", `unknown scheme "file"`},
		{"/var/backups/prod", "want s3://BUCKET/PREFIX"},
		{"s3://AKIAEXAMPLE:hunter2@backups/prod", "credentials do not belong in the URL"},
		{"s3://backups/prod?secret_key=hunter2", "unknown parameter"},
	} {
		out := a.mustStatus(http.StatusBadRequest, "POST", "/v1/vaults", a.env.OwnerToken, api.CreateVault{Name: "prod", Store: bad.store})
		var e api.Error
		if err := json.Unmarshal(out, &e); err != nil || !strings.Contains(e.Message, bad.want) {
			t.Errorf("store %q refused with %s, want it to say %q", bad.store, out, bad.want)
		}
		if strings.Contains(string(out), "hunter2") {
			t.Errorf("the refusal of %q repeats its credentials: %s", bad.store, out)
		}
	}
	contributor := a.roleToken(authn.RoleBackupContributor, "")
	a.mustStatus(http.StatusForbidden, "POST", "/v1/vaults", contributor, api.CreateVault{Name: "prod", Store: storeURL})
	if _, err := os.Stat(filepath.Join(a.env.DataDir, "vaults", "prod")); err == nil {
		t.Fatal("a refused creation left the vault's directory")
	}
	a.mustStatus(http.StatusCreated, "POST", "/v1/vaults", a.env.OwnerToken, api.CreateVault{Name: "prod", Store: storeURL})
	a.mustStatus(http.StatusConflict, "POST", "/v1/vaults", a.env.OwnerToken, api.CreateVault{Name: "prod", Store: storeURL})

	c, err := client.New(client.Options{Server: a.env.URL, Token: token(t, a.owner, "backup-operator", "prod"), TLS: a.env.TLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v := c.Vault("prod")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"big": randomBytes(7, 3<<20), "d/small": []byte("small")}
	src, snap := s3Backup(t, v, files)
	prefix := "backups/prod/"
	out, err := sv.Client.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range out.Contents {
		kinds[strings.SplitN(strings.TrimPrefix(aws.ToString(o.Key), prefix), "/", 2)[0]]++
	}
	for _, k := range []string{"config", "keys", "snapshots", "packs"} {
		if kinds[k] == 0 {
			t.Fatalf("no %s object under %s (%v): the vault does not live in its own store", k, prefix, kinds)
		}
	}
	if _, err := os.Stat(filepath.Join(a.env.DataDir, "vaults", "prod", "store")); err == nil {
		t.Fatal("the vault has a local store beside its own")
	}
	// Vault a, made without a store, stays local.
	if _, err := os.Stat(filepath.Join(a.env.DataDir, "vaults", "a", "store")); err != nil {
		t.Fatalf("vault a (no store given) is not in the server's default store: %v", err)
	}

	// Restart without any --store: the recorded URL brings prod back.
	c.Close()
	if err := a.env.Close(); err != nil {
		t.Fatal(err)
	}
	srv, _, err := server.Open(ctx, server.Options{DataDir: a.env.DataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	eng, err := srv.Engine(ctx, "prod")
	if err != nil {
		t.Fatalf("the restarted server does not reopen prod's own store: %v", err)
	}
	snaps, err := eng.AllSnapshots(ctx)
	if err != nil || len(snaps) != 1 || snaps[0].ID != snap.ID {
		t.Fatalf("after the restart prod holds %v (%v), want snapshot %s", snaps, err, snap.ID)
	}
	s3Restore(t, eng, snap, src, files)

	if _, err := srv.RemoveVault(ctx, "prod", "test"); err != nil {
		t.Fatalf("delete prod: %v", err)
	}
	out, err = sv.Client.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	if err != nil || len(out.Contents) != 0 {
		t.Fatalf("deleting prod left %d objects under %s (%v)", len(out.Contents), prefix, err)
	}
}

// TestS3RecoverVault: vault prod lives in its own S3 store under a
// customer RSA key; the server's whole data directory (catalog, platform
// key, recorded URLs) is then lost. A new server, given the store's URL
// and the key's URI alone (coffer vault recover), rebuilds prod: every
// snapshot restores byte for byte through the new server, and backups go
// on deduplicating. Refused: a backup-contributor, a key the keyring does
// not name, and recovering a vault whose catalog holds snapshots.
func TestS3RecoverVault(t *testing.T) {
	sv := s3test.Start(t)
	s3Credentials(t, sv)
	bucket := sv.Bucket(t, true)
	ctx := context.Background()
	storeURL := sv.URL(bucket, "backups/prod")
	keyDir := t.TempDir()
	newKey := func(name string) string {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(keyDir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
			t.Fatal(err)
		}
		return "rsa-file://" + path
	}
	cmk, other := newKey("cmk.pem"), newKey("other.pem")
	withKeys := servertest.Options{Configure: func(o *server.Options) { o.KeyDirs = []string{keyDir} }}

	old := newArenaWith(t, withKeys)
	if _, err := old.owner.CreateVaultWith(ctx, api.CreateVault{Name: "prod", Store: storeURL}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := old.owner.Vault("prod").UseCMK(ctx, cmk); err != nil {
		t.Fatalf("use-cmk: %v", err)
	}
	opClient := func(a *arena) *client.Vault {
		c, err := client.New(client.Options{Server: a.env.URL, Token: token(t, a.owner, "backup-operator", "prod"), TLS: a.env.TLS})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		v := c.Vault("prod")
		if err := v.LoadDedup(ctx); err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := opClient(old)
	type backup struct {
		src   string
		snap  vault.SnapshotRecord
		files map[string][]byte
	}
	var backups []backup
	for i := range 2 {
		files := map[string][]byte{"big": randomBytes(uint64(20+i), 2<<20), "d/small": []byte{byte(i)}}
		src, snap := s3Backup(t, v, files)
		backups = append(backups, backup{src, snap, files})
	}
	if err := old.env.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(old.env.DataDir); err != nil {
		t.Fatal(err)
	}

	a := newArenaWith(t, withKeys)
	contributor := a.roleToken(authn.RoleBackupContributor, "")
	a.mustStatus(http.StatusForbidden, "POST", "/v1/recover", contributor, api.RecoverVault{Name: "prod", Store: storeURL, Key: cmk})
	a.mustStatus(http.StatusBadRequest, "POST", "/v1/recover", a.env.OwnerToken, api.RecoverVault{Name: "prod", Store: storeURL, Key: other})
	a.mustStatus(http.StatusBadRequest, "POST", "/v1/recover", a.env.OwnerToken, api.RecoverVault{Name: "prod", Store: "gs://backups/prod", Key: cmk})
	res, err := a.owner.RecoverVault(ctx, api.RecoverVault{Name: "prod", Store: storeURL, Key: cmk})
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if res.Snapshots != len(backups) || res.Packs == 0 || len(res.Unreadable) != 0 || res.Vault.KEKProvider == "platform" {
		t.Fatalf("recover answered %+v", res)
	}
	a.mustStatus(http.StatusConflict, "POST", "/v1/recover", a.env.OwnerToken, api.RecoverVault{Name: "prod", Key: cmk})

	v = opClient(a)
	snaps, err := v.Snapshots(ctx)
	if err != nil || len(snaps) != len(backups) {
		t.Fatalf("after recover the server lists %d snapshots (%v), want %d", len(snaps), err, len(backups))
	}
	for _, b := range backups {
		s3Restore(t, v, b.snap, b.src, b.files)
	}
	// The recovered index deduplicates: backing up the same data again
	// adds (almost) nothing.
	if _, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{backups[1].src}, Host: "h"}); err != nil {
		t.Fatalf("backup after recover: %v", err)
	}
	if got, err := v.Snapshots(ctx); err != nil || len(got) != len(backups)+1 {
		t.Fatalf("after a backup on the recovered vault: %d snapshots, %v", len(got), err)
	}
}
