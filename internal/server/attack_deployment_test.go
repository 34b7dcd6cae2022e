package server_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/catalog/postgres"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestAttackReplicaPlatformKeyRows: someone with write access to the
// shared catalog but not the deployment key edits the platform key's
// rows in PostgreSQL. A version sealed under a key of their own, or a row
// moved to another version, stops a server from starting (it names the
// row) rather than being used; a running server keeps wrapping under the
// version it read; a server that read v2 refuses a catalog rolled back to
// v1 after a restart; and a genuine row put back with another creation
// time (to put off the next rotation) does not open.
func TestAttackReplicaPlatformKeyRows(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	conf := func(o *server.Options) { o.Catalog = url; o.KEKRotation = 90 * 24 * time.Hour }
	a := servertest.StartWith(t, servertest.Options{Configure: conf})
	owner := a.Client(t, a.OwnerToken)
	if _, err := owner.CreateVault(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	a.Clock.Add(int64(91 * 24 * time.Hour))
	if err := a.Server.Maintain(ctx); err != nil { // v2, the vault rewrapped, v1 retired
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	var keyID string
	var sealed []byte
	if err := db.QueryRow(ctx, `SELECT key_id, sealed FROM platform_keys WHERE version = 2`).Scan(&keyID, &sealed); err != nil {
		t.Fatalf("platform key v2 in the catalog: %v", err)
	}
	if n := count(t, db, `SELECT count(*) FROM platform_keys`); n != 1 {
		t.Fatalf("%d platform key rows after the rotation and retirement, want 1", n)
	}
	join := func() error {
		t.Helper()
		dir := t.TempDir()
		os.Chmod(dir, 0o700)
		// Every server of a deployment is given the audit signing key too.
		os.Mkdir(filepath.Join(dir, "audit"), 0o700)
		b, err := os.ReadFile(filepath.Join(a.DataDir, "audit", audit.SigningKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "audit", audit.SigningKeyFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, _, err := server.Open(ctx, server.Options{DataDir: dir, Catalog: url, DeploymentKey: a.DataDir + "/keys/deployment.key"})
		if err == nil {
			s.Close()
		}
		return err
	}
	if err := join(); err != nil {
		t.Fatalf("a server given the deployment key joins: %v", err)
	}

	// A version of their own, v3, sealed under another key (they have no
	// other): refused at start, not used by the running server.
	exec(`INSERT INTO platform_keys (version, key_id, created, sealed) VALUES (3, $1, $2, $3)`, keyID, time.Now().Add(200*24*time.Hour).UnixNano(), sealed)
	if err := join(); !errors.Is(err, vault.ErrWrongKey) || !strings.Contains(err.Error(), "v3") {
		t.Errorf("a server starting on a catalog with a forged v3: %v, want ErrWrongKey naming v3", err)
	}
	if _, err := owner.CreateVault(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	if st, err := owner.Vault("w").KeyStatus(ctx); err != nil || !strings.HasSuffix(st.KEK, " v2") {
		t.Errorf("a vault created after the forged v3: %+v, %v; want it wrapped under v2", st, err)
	}
	exec(`DELETE FROM platform_keys WHERE version = 3`)

	// The genuine v2 presented as v3 (and v2 deleted): the AAD binds the
	// version, so it does not open as v3.
	exec(`UPDATE platform_keys SET version = 3 WHERE version = 2`)
	if err := join(); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("a server starting with v2's row moved to v3: %v, want ErrWrongKey", err)
	}
	exec(`UPDATE platform_keys SET version = 2 WHERE version = 3`)

	// Rolled back: v2 deleted. a, which read v2, refuses the catalog
	// after a restart (its data directory remembers v2).
	a.Close()
	exec(`DELETE FROM platform_keys WHERE version = 2`)
	if s, _, err := server.Open(ctx, server.Options{DataDir: a.DataDir, Catalog: url}); err == nil || !strings.Contains(err.Error(), "rolled back") {
		if err == nil {
			s.Close()
		}
		t.Errorf("a restart on a catalog whose v2 was deleted: %v, want a refusal naming the rollback", err)
	}
	exec(`INSERT INTO platform_keys (version, key_id, created, sealed) VALUES (2, $1, $2, $3)`, keyID, 0, sealed)
	if err := join(); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("v2 put back with another time: %v, want ErrWrongKey", err)
	}
}

func count(t *testing.T, db *pgx.Conn, sql string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSharedCatalogAdoptsKeyFile: servers that shared a data directory
// before keep their vaults: the first start on a catalog without a
// platform key copies the versions of the directory's key file into it
// (same key ID, versions and times), so what they wrapped still unwraps,
// through the catalog, under the deployment key made beside it.
func TestSharedCatalogAdoptsKeyFile(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	t0 := time.Now().Add(-24 * time.Hour).UTC()
	file, err := platform.Create(filepath.Join(dir, "keys", "platform.key"), t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.Rotate(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	secret, aad := bytes.Repeat([]byte{5}, 32), []byte("aad")
	w, err := file.Wrap(ctx, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := server.Open(ctx, server.Options{DataDir: dir, Catalog: url})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	cat, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	dk, made, err := platform.LoadDeploymentKey(server.DeploymentKeyFile(dir), false)
	if err != nil || made {
		t.Fatalf("deployment key: %v", err)
	}
	ks, err := platform.OpenCatalog(cat, dk, "")
	if err != nil {
		t.Fatal(err)
	}
	if ks.ID() != file.ID() || ks.Current() != file.Current() || len(ks.Versions()) != 2 || !ks.Created().Equal(file.Created()) {
		t.Errorf("the catalog's platform key %s %v (%d versions, created %v); want the key file's %s %v (2, %v)",
			ks.ID(), ks.Current(), len(ks.Versions()), ks.Created(), file.ID(), file.Current(), file.Created())
	}
	if got, err := ks.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("a secret wrapped by the key file, through the catalog: %v", err)
	}
}
