package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/audit/audittest"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func TestAuditStore(t *testing.T) {
	audittest.TestStore(t, func(t testing.TB) audit.Store { c, _ := openTemp(t); return c })
}

// TestAuditStoreTwoReplicas races appends through two catalogs on one
// database, as two servers would: the advisory lock and the size check,
// not the handle, keep them from interleaving.
func TestAuditStoreTwoReplicas(t *testing.T) {
	ctx := t.Context()
	a, url := openTemp(t)
	b, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	audittest.Append(t, a, audittest.Records(0, 1))
	rs := audittest.Records(1, 1)
	hs, err := audittest.Hashes(ctx, b, 1, rs)
	if err != nil {
		t.Fatal(err)
	}
	audittest.Append(t, b, audittest.Records(1, 1))
	if err := a.AppendAudit(ctx, 1, rs, hs); !errors.Is(err, audit.ErrConflict) {
		t.Errorf("append through the other catalog at a stale size: %v, want ErrConflict", err)
	}
	if n, err := a.AuditSize(ctx); err != nil || n != 2 {
		t.Errorf("AuditSize = %d, %v; want 2", n, err)
	}
}

// TestAuditAppendOnly plays someone (or a later bug) with write access to
// the catalog's rows: the schema refuses to change or remove audit rows.
func TestAuditAppendOnly(t *testing.T) {
	c, _ := openTemp(t)
	audittest.Append(t, c, audittest.Records(0, 3))
	if err := c.AddAuditCheckpoint(t.Context(), audit.Checkpoint{Size: 3, Note: "n\n", Time: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddAuditCheckpoint(t.Context(), audit.Checkpoint{Size: 3, Note: "other\n", Time: time.Unix(2, 0)}); !errors.Is(err, audit.ErrExists) {
		t.Errorf("a second checkpoint of one size: %v, want ErrExists", err)
	}
	for _, q := range []string{
		`DELETE FROM audit_entries`,
		`DELETE FROM audit_entries WHERE idx = 2`,
		`UPDATE audit_entries SET record = '\x00' WHERE idx = 0`,
		`TRUNCATE audit_entries`,
		`DELETE FROM audit_hashes`,
		`UPDATE audit_hashes SET hash = '\x00'`,
		`TRUNCATE audit_hashes`,
		`DELETE FROM audit_checkpoints`,
		`UPDATE audit_checkpoints SET note = ''`,
		`TRUNCATE audit_checkpoints`,
		`INSERT INTO audit_entries (idx, record) VALUES (0, '\x00') ON CONFLICT (idx) DO UPDATE SET record = excluded.record`,
	} {
		if _, err := c.update(t.Context(), q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want refused as append-only", q, err)
		}
	}
	if n, _ := c.AuditSize(t.Context()); n != 3 {
		t.Errorf("size %d after refused statements, want 3", n)
	}
}

// TestMigrateConcurrent: servers starting at once on a new database
// migrate it once, and all of them work.
func TestMigrateConcurrent(t *testing.T) {
	url := pgtest.URL(t)
	var wg sync.WaitGroup
	cs := make([]*Catalog, 4)
	errs := make([]error, len(cs))
	for i := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs[i], errs[i] = Open(context.Background(), url)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer cs[i].Close()
	}
	ctx := t.Context()
	id := vault.ID{1}
	if err := cs[0].CreateVault(ctx, vault.VaultRecord{ID: id, Name: "v", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		if v, err := c.Vault(ctx, "v"); err != nil || v.ID != id {
			t.Errorf("catalog %d: %v, %v", i, v.ID, err)
		}
	}
	var v int
	if err := cs[1].pool.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Errorf("schema version %d, %v; want %d", v, err, SchemaVersion())
	}
}

// TestNewerSchema: a database migrated by a newer release is refused,
// not written to.
func TestNewerSchema(t *testing.T) {
	c, url := openTemp(t)
	if _, err := c.update(t.Context(), `UPDATE schema_version SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), url); !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open of a newer schema: %v, want ErrNewerSchema", err)
	}
}

// TestMigrateRollsBack: a migration that fails leaves the database as it
// was, so that the next start tries again from the same version.
func TestMigrateRollsBack(t *testing.T) {
	url := pgtest.URL(t)
	c, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Make version 1's first statement fail on a fresh start: drop the
	// version and leave a table in the way.
	if _, err := c.update(t.Context(), `DROP TABLE schema_version; DROP TABLE audit_checkpoints CASCADE`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), url); err == nil {
		t.Fatal("migration over existing tables succeeded")
	}
	var n int
	if err := c.pool.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN ('schema_version', 'audit_checkpoints')`).Scan(&n); err != nil || n != 0 {
		t.Errorf("a failed migration left %d of its tables, %v", n, err)
	}
}

// TestURLPasswordNotShown: an error opening the catalog never repeats
// the URL's password.
func TestURLPasswordNotShown(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	base := pgtest.Server(t)
	for _, url := range []string{
		strings.Replace(base, "postgres@", "nosuchuser:"+secret+"@", 1) + "&connect_timeout=5",
		"postgres://u:" + secret + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"postgres://u:" + secret + "@127.0.0.1:1/db?sslmode=bogus",
	} {
		c, err := Open(t.Context(), url)
		if err == nil {
			c.Close()
			t.Errorf("Open succeeded for %s", Redact(url))
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the password: %v", err)
		}
	}
	if r := Redact("postgres://u:" + secret + "@db.example.com:5433/coffer"); strings.Contains(r, secret) || r != "postgres://u@db.example.com:5433/coffer" {
		t.Errorf("Redact = %q", r)
	}
}

// TestUpgradeUnsealedStoreURLs: a catalog of schema version 4, which kept
// vaults' store URLs in plain text, migrates to sealed rows without
// trusting the plain ones: a vault that had one is refused with the fix
// named (not opened on the default store) until a server records its URL
// sealed; a vault without one is unaffected.
func TestUpgradeUnsealedStoreURLs(t *testing.T) {
	url := pgtest.URL(t)
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	// The database as version 4 left it, with a plain store URL.
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, m := range ms[:4] {
		if _, err := conn.Exec(t.Context(), m.sql); err != nil {
			t.Fatalf("version %d: %v", m.version, err)
		}
	}
	if _, err := conn.Exec(t.Context(), `CREATE TABLE schema_version (one integer NOT NULL PRIMARY KEY CHECK (one = 1), version integer NOT NULL);
		INSERT INTO schema_version VALUES (1, 4);
		INSERT INTO vault_stores (name, url) VALUES ('prod', 's3://backups/prod?endpoint=https://s3.example:9000')`); err != nil {
		t.Fatal(err)
	}

	c, err := Open(t.Context(), url)
	if err != nil {
		t.Fatalf("migrate from version 4: %v", err)
	}
	defer c.Close()
	got, err := c.VaultStore(t.Context(), "prod")
	if !errors.Is(err, vault.ErrUnsealedStoreURL) || got != nil || !strings.Contains(err.Error(), "vaults/prod/store.url") {
		t.Fatalf("vault with a plain store URL: %q, %v; want ErrUnsealedStoreURL naming the fix", got, err)
	}
	if got, err := c.VaultStore(t.Context(), "other"); got != nil || err != nil {
		t.Fatalf("vault without a store of its own: %q, %v", got, err)
	}
	// Recorded sealed (as a server does from store.url), it is the row read.
	if err := c.SetVaultStore(t.Context(), "prod", []byte("sealed bytes")); err != nil {
		t.Fatal(err)
	}
	if got, err := c.VaultStore(t.Context(), "prod"); err != nil || string(got) != "sealed bytes" {
		t.Fatalf("after recording it sealed: %q, %v", got, err)
	}
	// An operator who dropped the old table loses nothing.
	if err := c.SetVaultStore(t.Context(), "prod", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `DROP TABLE vault_stores_unsealed`); err != nil {
		t.Fatal(err)
	}
	if got, err := c.VaultStore(t.Context(), "prod"); got != nil || err != nil {
		t.Fatalf("after the old table is dropped: %q, %v", got, err)
	}
}
