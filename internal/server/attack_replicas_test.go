package server_test

// The attacker's cases against servers on different hosts sharing one
// PostgreSQL catalog and one bucket (docs/postgres.md, "Several servers"):
// someone who can write the catalog's rows, or the bucket, but holds
// neither the deployment key nor the vaults' keys.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// replicaRig is a deployment of servers on "different hosts": one
// PostgreSQL catalog, one versitygw bucket, data directories of their
// own; db is the attacker's own connection to the catalog.
type replicaRig struct {
	t      *testing.T
	ctx    context.Context
	url    string
	sv     *s3test.Server
	bucket string
	conf   func(*server.Options)
	a      *servertest.Env
	db     *pgx.Conn
}

func newReplicaRig(t *testing.T, lock bool) *replicaRig {
	t.Helper()
	ctx := context.Background()
	url := pgtest.URL(t)
	sv := s3test.Start(t)
	s3Credentials(t, sv)
	r := &replicaRig{t: t, ctx: ctx, url: url, sv: sv, bucket: sv.Bucket(t, lock)}
	r.conf = func(o *server.Options) { o.Catalog = url }
	r.a = servertest.StartWith(t, servertest.Options{Configure: r.conf})
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	r.db = db
	return r
}

// createVaults creates vaults through c, each with a store of its own
// under hosts/NAME in the rig's bucket.
func (r *replicaRig) createVaults(c *client.Client, names ...string) {
	r.t.Helper()
	for _, v := range names {
		if _, err := c.CreateVaultWith(r.ctx, api.CreateVault{Name: v, Store: r.sv.URL(r.bucket, "hosts/"+v)}); err != nil {
			r.t.Fatal(err)
		}
	}
}

// join starts another server of the deployment, on a host of its own.
func (r *replicaRig) join() *servertest.Env {
	r.t.Helper()
	return servertest.StartWith(r.t, servertest.Options{Configure: r.conf, Host: r.a})
}

func (r *replicaRig) exec(sql string, args ...any) {
	r.t.Helper()
	if _, err := r.db.Exec(r.ctx, sql, args...); err != nil {
		r.t.Fatal(err)
	}
}

// storeRow returns the catalog's (sealed) row for vault name's own
// store, as the attacker reads it.
func (r *replicaRig) storeRow(name string) []byte {
	r.t.Helper()
	var b []byte
	if err := r.db.QueryRow(r.ctx, `SELECT sealed FROM vault_stores WHERE name = $1`, name).Scan(&b); err != nil {
		r.t.Fatalf("vault %s's store row: %v", name, err)
	}
	return b
}

// setStoreRow writes b as vault name's store row, as a catalog writer
// can: a URL of their choosing (in plain: they cannot seal it), or a row
// they read.
func (r *replicaRig) setStoreRow(name string, b []byte) {
	r.t.Helper()
	r.exec(`INSERT INTO vault_stores (name, sealed) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed`, name, b)
}

// copyPrefix copies every object under from to to in the bucket, as a
// store writer keeping a copy of a vault's store would.
func (r *replicaRig) copyPrefix(from, to string) {
	r.t.Helper()
	for name := range r.sv.Names(r.t, r.bucket, from) {
		src := r.bucket + "/" + from + name
		if _, err := r.sv.Client.CopyObject(r.ctx, &awss3.CopyObjectInput{Bucket: &r.bucket, Key: aws.String(to + name), CopySource: &src}); err != nil {
			r.t.Fatalf("copy %s: %v", src, err)
		}
	}
}

func replicaBackup(t *testing.T, v *client.Vault, src, host string) (vault.SnapshotRecord, error) {
	t.Helper()
	ctx := context.Background()
	if err := v.LoadDedup(ctx); err != nil {
		return vault.SnapshotRecord{}, err
	}
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: host})
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	return res.Snapshot, nil
}

// TestAttackReplicaStoreURLRows: a catalog writer points a vault's store
// row somewhere else: at a copy of the vault's own store a store writer
// saved earlier (an older state of the vault, same keyring), at another
// vault's store, or at a URL of their own making. A server that opens the
// vault afterwards (one that never had it open, or the same one after a
// restart) must refuse rather than read or write there: a backup through
// it adds nothing to the place the row names, and the vault's real store
// keeps working through a server that was not fooled.
func TestAttackReplicaStoreURLRows(t *testing.T) {
	r := newReplicaRig(t, false)
	ctx := r.ctx
	owner := r.a.Client(t, r.a.OwnerToken)
	r.createVaults(owner, "far", "near")
	tok := token(t, owner, "backup-operator", "far")
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": randomBytes(31, 1<<20)})
	first, err := replicaBackup(t, r.a.Client(t, tok).Vault("far"), src, "h")
	if err != nil {
		t.Fatal(err)
	}
	// The store writer's copy of far's store, taken now; far then moves
	// on (a second snapshot, with data the copy lacks).
	r.copyPrefix("hosts/far/", "saved/far/")
	writeTree(t, src, map[string][]byte{"f": randomBytes(32, 1<<20)})
	second, err := replicaBackup(t, r.a.Client(t, tok).Vault("far"), src, "h")
	if err != nil {
		t.Fatal(err)
	}
	genuine := r.storeRow("far")

	cases := []struct {
		name string
		row  []byte
		at   string // the prefix the row leads to, "" for none in the bucket
	}{
		{"the saved copy of far's store", []byte(r.sv.URL(r.bucket, "saved/far")), "saved/far/"},
		{"near's row moved to far", r.storeRow("near"), "hosts/near/"},
		{"an empty prefix of the attacker's", []byte(r.sv.URL(r.bucket, "attacker/far")), "attacker/far/"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r.setStoreRow("far", c.row)
			defer r.setStoreRow("far", genuine)
			var before map[string]bool
			if c.at != "" {
				before = r.sv.Names(t, r.bucket, c.at)
			}
			b := r.join() // never had far open
			defer b.Close()
			vb := b.Client(t, tok).Vault("far")
			other := t.TempDir()
			writeTree(t, other, map[string][]byte{"f": randomBytes(33, 1<<20)})
			if snap, err := replicaBackup(t, vb, other, "h"); err == nil {
				t.Errorf("a backup through a server that read the edited row succeeded (snapshot %s): want it refused", snap.ID)
			}
			if _, err := vb.Snapshots(ctx); err == nil {
				t.Errorf("listing far's snapshots through a server that read the edited row succeeded: want it refused")
			}
			// The upkeep of every vault's Object Lock retention says so
			// rather than skipping the vault in silence.
			if err := b.Server.Maintain(ctx); err == nil || !strings.Contains(err.Error(), "far") {
				t.Errorf("maintenance on a server that cannot read far's store row: %v; want an error naming far", err)
			}
			if c.at != "" {
				if after := r.sv.Names(t, r.bucket, c.at); !maps.Equal(before, after) {
					t.Errorf("the server wrote to %s, which the edited row names: %d objects before, %d after", c.at, len(before), len(after))
				}
			}
		})
	}
	// far's genuine row back: a new server opens the real store, which
	// holds both snapshots and restores them.
	b := r.join()
	vb := b.Client(t, tok).Vault("far")
	restoreAndCompare(t, vb, second, filepath.Clean(src))
	if snaps, err := vb.Snapshots(ctx); err != nil || len(snaps) != 2 || snaps[0].ID != first.ID {
		t.Errorf("far's snapshots through a new server: %d, %v; want the two", len(snaps), err)
	}
}

// TestAttackReplicaStoreURLDeleteOther: a catalog writer moves a
// protected vault's store row onto an empty vault's row, then the empty
// vault is deleted with an approval, by its owner acting in good faith.
// Deleting a vault removes every object of its store: the store it
// removes must be the deleted vault's, never the one the row was moved
// from, even on a server that had the empty vault open when the row was
// moved.
func TestAttackReplicaStoreURLDeleteOther(t *testing.T) {
	r := newReplicaRig(t, false)
	ctx := r.ctx
	t.Setenv(server.CatalogEnv, r.url) // the approver's token is made on the server machine
	owner := r.a.Client(t, r.a.OwnerToken)
	r.createVaults(owner, "victim", "empty")
	tok := token(t, owner, "backup-operator", "victim")
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": randomBytes(41, 1<<20)})
	snap, err := replicaBackup(t, r.a.Client(t, tok).Vault("victim"), src, "h")
	if err != nil {
		t.Fatal(err)
	}
	victimObjects := r.sv.Names(t, r.bucket, "hosts/victim/")

	b := r.join()
	ownerB := b.Client(t, b.OwnerToken)
	if _, err := ownerB.Vault("empty").KeyStatus(ctx); err != nil { // b has "empty" open
		t.Fatal(err)
	}
	r.setStoreRow("empty", r.storeRow("victim"))

	req, err := ownerB.Vault("empty").Delete(ctx)
	if err == nil && req != nil {
		approver, _, err := server.IssueApproverToken(ctx, b.DataDir, "approver", time.Time{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		b.Client(t, approver).Decide(ctx, req.ID, true) // the owner's request, approved in good faith
	}
	if after := r.sv.Names(t, r.bucket, "hosts/victim/"); !maps.Equal(victimObjects, after) {
		t.Fatalf("deleting vault empty removed objects of vault victim's store: %d objects before, %d after", len(victimObjects), len(after))
	}
	restoreAndCompare(t, r.a.Client(t, tok).Vault("victim"), snap, filepath.Clean(src))
}

// TestAttackReplicaDiskDeleteOther: someone who kept one server's disk
// (its deployment key) and can write the catalog seals vault victim's
// store URL under vault empty's name, so the row opens. A server that
// opens empty afterwards refuses it (the store holds another vault); and
// deleting empty, approved in good faith through a server that had it
// open before the edit, must still leave victim's store whole: the
// deletion checks that the store it empties holds the deleted vault.
func TestAttackReplicaDiskDeleteOther(t *testing.T) {
	r := newReplicaRig(t, false)
	ctx := r.ctx
	t.Setenv(server.CatalogEnv, r.url)
	owner := r.a.Client(t, r.a.OwnerToken)
	r.createVaults(owner, "victim", "empty")
	tok := token(t, owner, "backup-operator", "victim")
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": randomBytes(51, 1<<20)})
	snap, err := replicaBackup(t, r.a.Client(t, tok).Vault("victim"), src, "h")
	if err != nil {
		t.Fatal(err)
	}
	victimObjects := r.sv.Names(t, r.bucket, "hosts/victim/")
	dk, _, err := platform.LoadDeploymentKey(server.DeploymentKeyFile(r.a.DataDir), false)
	if err != nil {
		t.Fatal(err)
	}
	b := r.join()
	ownerB := b.Client(t, b.OwnerToken)
	if _, err := ownerB.Vault("empty").KeyStatus(ctx); err != nil { // b has "empty" open
		t.Fatal(err)
	}
	r.setStoreRow("empty", server.SealStoreURL(dk, "empty", r.sv.URL(r.bucket, "hosts/victim")))
	c := r.join()
	if _, err := c.Client(t, c.OwnerToken).Vault("empty").KeyStatus(ctx); err == nil {
		t.Error("vault empty opened, through a server that did not have it open, from a row leading to vault victim's store")
	}

	req, err := ownerB.Vault("empty").Delete(ctx)
	if err == nil && req != nil {
		approver, _, err := server.IssueApproverToken(ctx, b.DataDir, "approver", time.Time{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		b.Client(t, approver).Decide(ctx, req.ID, true)
	}
	if after := r.sv.Names(t, r.bucket, "hosts/victim/"); !maps.Equal(victimObjects, after) {
		t.Fatalf("deleting vault empty removed objects of vault victim's store: %d objects before, %d after", len(victimObjects), len(after))
	}
	restoreAndCompare(t, r.a.Client(t, tok).Vault("victim"), snap, filepath.Clean(src))
}

// deleteVaultVia deletes vault name through e: the owner's request,
// approved by a security approver made on the server machine.
func (r *replicaRig) deleteVaultVia(e *servertest.Env, name string) {
	r.t.Helper()
	req, err := e.Client(r.t, e.OwnerToken).Vault(name).Delete(r.ctx)
	if err != nil || req == nil {
		r.t.Fatalf("delete vault %s: %v", name, err)
	}
	approver, _, err := server.IssueApproverToken(r.ctx, e.DataDir, "approver-"+name, time.Time{}, time.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	if out, err := e.Client(r.t, approver).Decide(r.ctx, req.ID, true); err != nil || out.State == string(vault.RequestPending) {
		r.t.Fatalf("approve the deletion of %s: %+v, %v", name, out, err)
	}
}

// TestAttackReplicasAgreeOnDeletion: a vault deleted through server a
// while server b has it open. b must not go on serving the deleted vault:
// a backup through b is refused and writes nothing to the deleted vault's
// emptied store (no pack sealed under the deleted vault's keys lands
// there), b answers nothing for the name, and the name stays taken on b
// as on a.
func TestAttackReplicasAgreeOnDeletion(t *testing.T) {
	r := newReplicaRig(t, false)
	ctx := r.ctx
	t.Setenv(server.CatalogEnv, r.url)
	owner := r.a.Client(t, r.a.OwnerToken)
	if _, err := owner.CreateVaultWith(ctx, api.CreateVault{Name: "x", Store: r.sv.URL(r.bucket, "hosts/x1")}); err != nil {
		t.Fatal(err)
	}
	b := r.join()
	ownerB := b.Client(t, b.OwnerToken)
	if _, err := ownerB.Vault("x").KeyStatus(ctx); err != nil { // b has x open
		t.Fatal(err)
	}
	tok := token(t, owner, "backup-operator", "x")

	// Deleted through a: b refuses the name.
	r.deleteVaultVia(r.a, "x")
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": randomBytes(61, 256<<10)})
	if snap, err := replicaBackup(t, b.Client(t, tok).Vault("x"), src, "h"); err == nil {
		t.Errorf("a backup through b into vault x, deleted through a, succeeded (snapshot %s)", snap.ID)
	}
	if n := r.sv.Names(t, r.bucket, "hosts/x1/"); len(n) != 0 {
		t.Errorf("the deleted vault's store holds %d objects after requests through b: want none: %v", len(n), n)
	}

	// The name stays taken: b does not take a creation either.
	if _, err := ownerB.CreateVaultWith(ctx, api.CreateVault{Name: "x", Store: r.sv.URL(r.bucket, "hosts/x2")}); err == nil {
		t.Error("vault x created again through b after its deletion through a")
	}
	if _, err := ownerB.Vault("x").KeyStatus(ctx); err == nil {
		t.Error("b still answers for the deleted vault x")
	}
}

// TestAttackReplicasAgreeOnRolesAndLocks: changes made through server a
// hold on server b at its next request, for a login token b already
// served and a vault b already has open: a role taken back, immutability
// turned on with a minimum retention (b then refuses to turn soft delete
// off or to forget a young snapshot), and a retention policy lengthened
// (b refuses to shorten it again).
func TestAttackReplicasAgreeOnRolesAndLocks(t *testing.T) {
	r := newReplicaRig(t, false)
	ctx := r.ctx
	owner := r.a.Client(t, r.a.OwnerToken)
	r.createVaults(owner, "v")
	tok := token(t, owner, "backup-operator", "v")
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": randomBytes(71, 64<<10)})
	snap, err := replicaBackup(t, r.a.Client(t, tok).Vault("v"), src, "h")
	if err != nil {
		t.Fatal(err)
	}
	b := r.join()
	ownerB := b.Client(t, b.OwnerToken)

	// A role taken back through a: pat's login through b loses it.
	if _, err := owner.CreatePrincipal(ctx, api.CreatePrincipal{Name: "pat", Kind: "user", Password: attackPassword}); err != nil {
		t.Fatal(err)
	}
	role := api.RoleAssignment{Principal: "pat", Role: "backup-reader", Vault: "v"}
	if _, err := owner.AssignRole(ctx, role); err != nil {
		t.Fatal(err)
	}
	login, err := b.Client(t, "").Login(ctx, api.Login{Name: "pat", Password: attackPassword})
	if err != nil {
		t.Fatal(err)
	}
	pat := b.Client(t, login.Secret).Vault("v")
	if _, err := pat.Snapshots(ctx); err != nil {
		t.Fatalf("pat through b before the role is taken back: %v", err)
	}
	if _, err := owner.RevokeRole(ctx, role); err != nil {
		t.Fatal(err)
	}
	if _, err := pat.Snapshots(ctx); err == nil {
		t.Error("pat's login through b still reads vault v after a took the role back")
	}

	// b has v open and has read its settings; a turns immutability on
	// and lengthens the retention policy.
	if _, err := ownerB.Vault("v").Settings(ctx); err != nil {
		t.Fatal(err)
	}
	on := "enabled"
	lb, _ := json.Marshal(retention.Policy{Daily: 90})
	sb, _ := json.Marshal(retention.Policy{Daily: 1})
	long, short := string(lb), string(sb)
	if _, err := owner.Vault("v").ChangeSettings(ctx, api.SettingsChange{Policy: &short}); err != nil {
		t.Fatal(err)
	}
	minRet := int64(30 * 24 * 3600)
	if _, err := owner.Vault("v").ChangeSettings(ctx, api.SettingsChange{Immutability: &on, MinRetentionSeconds: &minRet}); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Vault("v").ChangeSettings(ctx, api.SettingsChange{Policy: &long}); err != nil {
		t.Fatal(err)
	}
	off := "off"
	if res, err := ownerB.Vault("v").ChangeSettings(ctx, api.SettingsChange{SoftDelete: &off}); err == nil {
		t.Errorf("b turned soft delete off on a vault a made immutable: %+v", res)
	}
	if res, err := ownerB.Vault("v").ChangeSettings(ctx, api.SettingsChange{Policy: &short}); err == nil {
		t.Errorf("b shortened the retention policy a lengthened on an immutable vault: %+v", res)
	}
	if _, _, err := ownerB.Vault("v").Forget(ctx, []vault.ID{snap.ID}); err == nil {
		t.Error("b forgot a snapshot younger than the minimum retention a set")
	}
	if snaps, err := ownerB.Vault("v").Snapshots(ctx); err != nil || len(snaps) != 1 {
		t.Errorf("v's snapshots through b: %d, %v; want the one", len(snaps), err)
	}
}

// TestAttackReplicaBucketGarbage: someone holding the bucket's
// credentials (not Coffer's keys) plants objects with well-formed names
// in a vault's store. A "pack" and a "snapshot" of random bytes are not
// taken for the vault's: through the other server a prune completes
// without deleting anything a snapshot needs, check --read-data passes
// over what the catalog lists, and the snapshot restores byte for byte.
// A keyring object past the anchored generation (the newest's bytes under
// the next name, or JSON whose MAC does not verify), planted under
// COMPLIANCE retention in a bucket with Object Lock so that nobody can
// delete it, does not authenticate and is never used: a server started
// after it opens the vault on the anchored generation, restores, lists the
// object in check, and rotates the DEK into the generation after it; the
// servers started later use that one.
func TestAttackReplicaBucketGarbage(t *testing.T) {
	r := newReplicaRig(t, true)
	ctx := r.ctx
	owner := r.a.Client(t, r.a.OwnerToken)
	r.createVaults(owner, "v")
	tok := token(t, owner, "backup-operator", "v")
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": randomBytes(81, 2<<20), "g": []byte("small")})
	snap, err := replicaBackup(t, r.a.Client(t, tok).Vault("v"), src, "h")
	if err != nil {
		t.Fatal(err)
	}
	before, err := owner.Vault("v").KeyStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, body []byte) {
		t.Helper()
		if _, err := r.sv.Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &r.bucket, Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
			t.Fatalf("plant %s: %v", key, err)
		}
	}
	garbage := randomBytes(82, 64<<10)
	put("hosts/v/packs/"+hex.EncodeToString(randomBytes(83, 32)), garbage)
	put("hosts/v/snapshots/"+hex.EncodeToString(randomBytes(84, 32)), garbage)

	b := r.join()
	ownerB := b.Client(t, b.OwnerToken)
	if _, err := ownerB.Vault("v").Prune(ctx, false); err != nil {
		t.Errorf("prune through b with planted objects in the bucket: %v", err)
	}
	rep, err := owner.Vault("v").Check(ctx, true, nil)
	if err != nil || len(rep.Errors) > 0 {
		t.Errorf("check --read-data through a after b's prune: %v %v", rep.Errors, err)
	}
	restoreAndCompare(t, b.Client(t, tok).Vault("v"), snap, filepath.Clean(src))

	// A generation past the newest, named as the store names them,
	// holding the newest's bytes.
	var gens []string
	for name := range r.sv.Names(t, r.bucket, "hosts/v/keys/") {
		gens = append(gens, name)
	}
	if len(gens) == 0 {
		t.Fatal("no keyring generation in the bucket")
	}
	newest := slices.Max(gens)
	n, err := strconv.Atoi(newest)
	if err != nil {
		t.Fatalf("keyring generation name %q: %v", newest, err)
	}
	body, err := r.sv.Client.GetObject(ctx, &awss3.GetObjectInput{Bucket: &r.bucket, Key: aws.String("hosts/v/keys/" + newest)})
	if err != nil {
		t.Fatal(err)
	}
	kb, err := io.ReadAll(body.Body)
	body.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	plantedName := fmt.Sprintf("%0*d", len(newest), n+1)
	planted := "hosts/v/keys/" + plantedName
	until := time.Now().Add(24 * time.Hour)
	if _, err := r.sv.Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &r.bucket, Key: aws.String(planted), Body: bytes.NewReader(kb),
		ObjectLockMode: types.ObjectLockModeCompliance, ObjectLockRetainUntilDate: &until}); err != nil {
		t.Fatalf("plant %s under retention: %v", planted, err)
	}
	if got := retainedUntil(t, r.sv, r.bucket, planted); got.Before(until.Add(-time.Minute)) {
		t.Fatalf("the planted generation is retained until %v, want %v", got, until)
	}
	c := r.join()
	ownerC := c.Client(t, c.OwnerToken)
	if st, err := ownerC.Vault("v").KeyStatus(ctx); err != nil || st.KeyringGen != before.KeyringGen {
		t.Fatalf("the keys through a server started after keys/%s was planted: %+v, %v; want generation %d", plantedName, st, err, before.KeyringGen)
	}
	restoreAndCompare(t, c.Client(t, tok).Vault("v"), snap, filepath.Clean(src))
	rep, err = ownerC.Vault("v").Check(ctx, false, nil)
	if err != nil || len(rep.Errors) > 0 {
		t.Errorf("check with keys/%s planted: %v %v", plantedName, rep.Errors, err)
	}
	if !slices.ContainsFunc(rep.Warnings, func(w string) bool { return strings.Contains(w, "keys/"+plantedName) }) {
		t.Errorf("check does not list the planted keys/%s: %q", plantedName, rep.Warnings)
	}
	kc, err := ownerC.Vault("v").RotateKey(ctx)
	if err != nil {
		t.Fatalf("rotate the DEK with keys/%s planted: %v", plantedName, err)
	}
	if kc.KeyringGen != uint64(n+2) {
		t.Errorf("the rotation wrote generation %d, want %d (above the planted one)", kc.KeyringGen, n+2)
	}
	writeTree(t, src, map[string][]byte{"f": randomBytes(85, 1<<20), "g": []byte("after")})
	snap2, err := replicaBackup(t, r.a.Client(t, tok).Vault("v"), src, "h")
	if err != nil {
		t.Fatalf("a backup through a after the rotation: %v", err)
	}
	d := r.join()
	if st, err := d.Client(t, d.OwnerToken).Vault("v").KeyStatus(ctx); err != nil || st.KeyringGen != uint64(n+2) {
		t.Errorf("the keys through a server started after the rotation: %+v, %v; want generation %d", st, err, n+2)
	}
	restoreAndCompare(t, d.Client(t, tok).Vault("v"), snap2, filepath.Clean(src))
	if _, ok := r.sv.Names(t, r.bucket, "hosts/v/keys/")[plantedName]; !ok {
		t.Errorf("keys/%s under retention is gone", plantedName)
	}

	// Next: well-formed JSON past the newest generation, naming a
	// customer key of the attacker's choice, with a MAC that does not
	// verify. A server picks the key provider from the generation the
	// anchor accepts, not from this object.
	var raw map[string]any
	if err := json.Unmarshal(kb, &raw); err != nil {
		t.Fatal(err)
	}
	raw["generation"] = n + 3
	raw["kek"] = map[string]any{"provider": "rsa-file", "key_id": "attacker", "version": "1", "alg": "rsa-oaep-sha256"}
	raw["mac"] = randomBytes(86, 32)
	jb, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	plantedJSON := fmt.Sprintf("%0*d", len(newest), n+3)
	if _, err := r.sv.Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &r.bucket, Key: aws.String("hosts/v/keys/" + plantedJSON), Body: bytes.NewReader(jb),
		ObjectLockMode: types.ObjectLockModeCompliance, ObjectLockRetainUntilDate: &until}); err != nil {
		t.Fatalf("plant keys/%s under retention: %v", plantedJSON, err)
	}
	e := r.join()
	if st, err := e.Client(t, e.OwnerToken).Vault("v").KeyStatus(ctx); err != nil || st.KeyringGen != uint64(n+2) {
		t.Errorf("the keys through a server started after keys/%s was planted: %+v, %v; want generation %d", plantedJSON, st, err, n+2)
	}
	restoreAndCompare(t, e.Client(t, tok).Vault("v"), snap2, filepath.Clean(src))
	if kc, err := e.Client(t, e.OwnerToken).Vault("v").RotateKey(ctx); err != nil || kc.KeyringGen != uint64(n+4) {
		t.Errorf("rotate the DEK with keys/%s planted: %+v, %v; want generation %d", plantedJSON, kc, err, n+4)
	}
}

// TestAttackReplicaVaultRowsSwapped: a catalog writer swaps the names of
// two vaults' rows, so that each name leads to the other vault's ID (and
// keys, settings and snapshots) while its store row still leads to its
// own store. No server, one with both vaults open or one starting after
// the swap, serves a name with the other vault's store or writes a
// backup across: requests are refused until the rows are put back, and
// then everything is as before.
func TestAttackReplicaVaultRowsSwapped(t *testing.T) {
	r := newReplicaRig(t, false)
	ctx := r.ctx
	owner := r.a.Client(t, r.a.OwnerToken)
	r.createVaults(owner, "p", "q")
	tok := token(t, owner, "backup-operator", "p")
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": randomBytes(91, 256<<10)})
	snap, err := replicaBackup(t, r.a.Client(t, tok).Vault("p"), src, "h")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Vault("q").KeyStatus(ctx); err != nil { // a has both open
		t.Fatal(err)
	}
	// Tokens name their vault (a foreign key): the writer turns the
	// checks off for the session, as the database's owner can.
	swap := func() {
		r.exec(`SET session_replication_role = replica`)
		r.exec(`UPDATE vaults SET name = 'swap-tmp' WHERE name = 'p'`)
		r.exec(`UPDATE vaults SET name = 'p' WHERE name = 'q'`)
		r.exec(`UPDATE vaults SET name = 'q' WHERE name = 'swap-tmp'`)
		r.exec(`SET session_replication_role = DEFAULT`)
	}
	storeP, storeQ := r.sv.Names(t, r.bucket, "hosts/p/"), r.sv.Names(t, r.bucket, "hosts/q/")
	swap()
	b := r.join()
	other := t.TempDir()
	writeTree(t, other, map[string][]byte{"f": randomBytes(92, 256<<10)})
	for _, e := range []*servertest.Env{r.a, b} {
		for _, v := range []string{"p", "q"} {
			if snaps, err := e.Client(t, e.OwnerToken).Vault(v).Snapshots(ctx); err == nil {
				t.Errorf("vault %s's snapshots after the swap: %d, served", v, len(snaps))
			}
		}
		if s, err := replicaBackup(t, e.Client(t, tok).Vault("p"), other, "h"); err == nil {
			t.Errorf("a backup into p after the swap succeeded (snapshot %s)", s.ID)
		}
	}
	if p, q := r.sv.Names(t, r.bucket, "hosts/p/"), r.sv.Names(t, r.bucket, "hosts/q/"); !maps.Equal(p, storeP) || !maps.Equal(q, storeQ) {
		t.Errorf("the stores changed while the rows were swapped: p %d → %d objects, q %d → %d", len(storeP), len(p), len(storeQ), len(q))
	}
	swap()
	for _, e := range []*servertest.Env{r.a, b} {
		if snaps, err := e.Client(t, tok).Vault("p").Snapshots(ctx); err != nil || len(snaps) != 1 || snaps[0].ID != snap.ID {
			t.Errorf("p's snapshots with the rows put back: %v, %v", snaps, err)
		}
	}
	restoreAndCompare(t, b.Client(t, tok).Vault("p"), snap, filepath.Clean(src))
}

// TestAttackReplicasAgreeOnObjectLock: a vault's immutability is locked
// through server a while server b has the vault open (armed when the vault
// was not locked). The objects of the next backup through b must be under
// COMPLIANCE retention at once, as they are through a: someone holding
// the bucket's credentials must not find a window in which a locked
// vault's new packs and snapshot can be deleted.
func TestAttackReplicasAgreeOnObjectLock(t *testing.T) {
	r := newReplicaRig(t, true)
	ctx := r.ctx
	owner := r.a.Client(t, r.a.OwnerToken)
	r.createVaults(owner, "v")
	tok := token(t, owner, "backup-operator", "v")
	b := r.join()
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": randomBytes(101, 256<<10)})
	if _, err := replicaBackup(t, b.Client(t, tok).Vault("v"), src, "h"); err != nil { // b has v open, unlocked
		t.Fatal(err)
	}
	before := r.sv.Names(t, r.bucket, "hosts/v/")
	for _, s := range []string{"enabled", "locked"} {
		if _, err := owner.Vault("v").ChangeSettings(ctx, api.SettingsChange{Immutability: &s}); err != nil {
			t.Fatal(err)
		}
	}
	writeTree(t, src, map[string][]byte{"f": randomBytes(102, 256<<10)})
	snap, err := replicaBackup(t, b.Client(t, tok).Vault("v"), src, "h")
	if err != nil {
		t.Fatal(err)
	}
	want := time.Now().Add(14 * 24 * time.Hour) // the default soft-delete period
	var n int
	for name := range r.sv.Names(t, r.bucket, "hosts/v/") {
		if before[name] || !(strings.HasPrefix(name, "packs/") || strings.HasPrefix(name, "snapshots/")) {
			continue
		}
		n++
		if got := retainedUntil(t, r.sv, r.bucket, "hosts/v/"+name); got.Before(want) {
			t.Errorf("%s, written through b after a locked the vault, is retained until %v; want at least %v", name, got, want)
		}
	}
	if n == 0 {
		t.Fatalf("the backup through b (snapshot %s) wrote no new pack or snapshot object", snap.ID)
	}
}
