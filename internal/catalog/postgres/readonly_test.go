package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
)

// TestOpenReadOnly: OpenReadOnly refuses a schema without a catalog
// (creating nothing in it) and one migrated by a newer Coffer, reads what
// servers wrote, and cannot write, whatever its user may do; its errors
// never show the URL's password.
func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	empty := pgtest.URL(t)
	if c, err := OpenReadOnly(ctx, empty); !errors.Is(err, ErrNoCatalog) {
		if err == nil {
			c.Close()
		}
		t.Errorf("OpenReadOnly of an empty schema: %v, want ErrNoCatalog", err)
	}
	conn, err := pgx.Connect(ctx, empty)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil || tables != 0 {
		t.Errorf("OpenReadOnly of an empty schema left %d tables (%v)", tables, err)
	}

	w, url := openTemp(t)
	rec := []byte(`{"op":"x"}`)
	if err := w.AppendAudit(ctx, 0, [][]byte{rec}, []tlog.Hash{tlog.RecordHash(rec)}); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReadOnly(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, err := r.AuditSize(ctx); err != nil || n != 1 {
		t.Errorf("AuditSize through the read-only catalog: %d, %v; want 1", n, err)
	}
	for _, stmt := range []string{
		`INSERT INTO audit_entries (idx, record) VALUES (1, 'x')`,
		`CREATE TABLE planted (i integer)`,
	} {
		if _, err := r.update(ctx, stmt); pgCode(err) != "25006" { // read_only_sql_transaction
			t.Errorf("%s through the read-only catalog: %v, want refused as a write in a read-only transaction", stmt, err)
		}
	}
	if n, _ := w.AuditSize(ctx); n != 1 {
		t.Errorf("the log holds %d entries after a write through the read-only catalog, want 1", n)
	}

	if _, err := w.update(ctx, `UPDATE schema_version SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	if c, err := OpenReadOnly(ctx, url); !errors.Is(err, ErrNewerSchema) {
		if err == nil {
			c.Close()
		}
		t.Errorf("OpenReadOnly of a newer schema: %v, want ErrNewerSchema", err)
	}

	const secret = "s3cr3t-Pa55"
	for _, u := range []string{
		strings.Replace(pgtest.Server(t), "postgres@", "nosuchuser:"+secret+"@", 1) + "&connect_timeout=5",
		"postgres://u:" + secret + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"postgres://u:" + secret + "@127.0.0.1:1/db?sslmode=bogus",
	} {
		c, err := OpenReadOnly(ctx, u)
		if err == nil {
			c.Close()
			t.Errorf("OpenReadOnly succeeded for %s", Redact(u))
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// TestLocation: a catalog's location names its host, port, database and
// schema, never its user or password, so that two users' URLs of one
// catalog name it alike and two schemas differently.
func TestLocation(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"postgres://coffer:s3cr3t@db.example.com:5433/coffer?search_path=prod&sslmode=require", "db.example.com:5433/coffer?search_path=prod"},
		{"postgres://auditor@db.example.com:5433/coffer?search_path=prod", "db.example.com:5433/coffer?search_path=prod"},
		{"postgres://auditor@db.example.com:5433/coffer?search_path=test", "db.example.com:5433/coffer?search_path=test"},
		{"postgresql://db.example.com/coffer", "db.example.com:5432/coffer"},
	} {
		got, err := Location(c.url)
		if err != nil || got != c.want {
			t.Errorf("Location(%s) = %q, %v; want %q", Redact(c.url), got, err, c.want)
		}
	}
	if _, err := Location("postgres://u:s3cr3t@h/db?sslmode=bogus"); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("Location of a malformed URL: %v; want an error without the password", err)
	}
}
