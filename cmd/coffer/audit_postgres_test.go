package main

import (
	"context"
	"encoding/json"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// pgAuditSite is a server whose catalog is a fresh PostgreSQL schema
// (url), with e set to make requests of it as its owner.
type pgAuditSite struct {
	srv *servertest.Env
	url string
	e   *testEnv
}

func newPGAuditSite(t *testing.T) *pgAuditSite {
	t.Helper()
	u := pgtest.URL(t)
	srv := servertest.StartWith(t, servertest.Options{Configure: func(o *server.Options) { o.Catalog = u }})
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL)
	return &pgAuditSite{srv: srv, url: u, e: e}
}

// requests makes the server record entries: a vault created, tokens
// issued, a denied request.
func (s *pgAuditSite) requests(t *testing.T, tokens int) {
	t.Helper()
	if _, _, code := coffer(t, s.e, "vault", "create", "prod"); code != exitOK {
		mustCoffer(t, s.e, "snapshots", "--vault", s.srv.URL+"/prod")
	}
	for range tokens {
		mustCoffer(t, s.e, "token", "create", "--role", "backup-reader", "--vault", s.srv.URL+"/prod")
	}
	failsWith(t, s.e, "", "audit", "log", "--token", "cft_"+strings.Repeat("A", 43))
}

// sql runs statements on the catalog's database as its owner would (or
// anyone who can write it: the attacker of these tests).
func (s *pgAuditSite) sql(t *testing.T, stmt string, args ...any) int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, stmt, args...)
	if err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
	return tag.RowsAffected()
}

// dropAppendOnly disables the triggers that make the audit tables
// append-only, as someone with the tables' owner (or a superuser) can.
func (s *pgAuditSite) dropAppendOnly(t *testing.T) {
	t.Helper()
	for _, tbl := range []string{"audit_entries", "audit_hashes", "audit_checkpoints"} {
		s.sql(t, `ALTER TABLE `+tbl+` DISABLE TRIGGER USER`)
	}
}

// auditorURL makes a login role that may only read the audit tables
// (and the schema's version) and returns the catalog's URL for it.
func (s *pgAuditSite) auditorURL(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	schema := u.Query().Get("search_path")
	role := "auditor_" + strings.TrimPrefix(schema, "t_")
	s.sql(t, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, s.url)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		conn.Exec(ctx, `DROP OWNED BY `+role)
		conn.Exec(ctx, `DROP ROLE `+role)
	})
	s.sql(t, `GRANT USAGE ON SCHEMA `+schema+` TO `+role)
	s.sql(t, `GRANT SELECT ON audit_entries, audit_hashes, audit_checkpoints, schema_version TO `+role)
	u.User = url.User(role)
	return u.String()
}

type auditReportJSON struct {
	OK          bool     `json:"ok"`
	Entries     int64    `json:"entries"`
	Checkpoints int      `json:"checkpoints"`
	Problems    []string `json:"problems"`
}

// verifyCatalog runs coffer audit verify --json on the catalog at u as
// e, with args, and returns its exit code and report.
func verifyCatalog(t *testing.T, e *testEnv, u string, args ...string) (int, auditReportJSON) {
	t.Helper()
	out, errOut, code := coffer(t, e, append([]string{"audit", "verify", "--json", "--catalog", u}, args...)...)
	var r auditReportJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("audit verify --catalog: exit %d, not a JSON report: %v\n%s%s", code, err, out, errOut)
	}
	return code, r
}

// newAuditor is an auditor's environment on another machine, whose clock
// is the real one (the log's entries carry the server's real times).
func newAuditor(t *testing.T) *testEnv {
	e := newEnv(t)
	e.clock = time.Now()
	return e
}

// TestAuditVerifyPostgres: the audit log of servers on a PostgreSQL
// catalog verifies straight from the database: as an auditor with a
// role that may only SELECT the audit tables (so verify migrates and
// writes nothing), given the servers' verifier key once and then pinned
// for the catalog, whichever user connects; while the server appends;
// on the server machine with --data and COFFER_CATALOG; and as an export
// taken from the catalog. A first verify without a key is refused (the
// catalog does not hold it), so is a key other than the pinned one.
func TestAuditVerifyPostgres(t *testing.T) {
	s := newPGAuditSite(t)
	s.requests(t, 2)
	if err := s.srv.Server.CheckpointAudit(t.Context()); err != nil {
		t.Fatal(err)
	}
	vk := s.srv.Server.AuditVerifierKey()
	ro := s.auditorURL(t)
	if strings.Contains(ro, "postgres@") {
		t.Fatalf("the auditor's URL %s connects as the superuser", ro)
	}
	auditor := newAuditor(t)

	failsWith(t, auditor, "--verifier-key", "audit", "verify", "--catalog", ro)
	code, r := verifyCatalog(t, auditor, ro, "--verifier-key", vk)
	if code != exitOK || !r.OK || r.Entries < 4 || r.Checkpoints < 1 {
		t.Fatalf("audit verify --catalog as the read-only auditor: exit %d, %+v", code, r)
	}
	// The role may not write: so verify wrote nothing (and migrated nothing).
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, ro)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO audit_checkpoints (size, note, time) VALUES (1000000, 'x', 0)`); err == nil {
		t.Error("the auditor's role may write the audit tables: the test shows nothing")
	}
	conn.Close(ctx)

	// Pinned: later runs need no key, also through another user's URL;
	// the server goes on appending meanwhile.
	s.requests(t, 1)
	if code, r2 := verifyCatalog(t, auditor, s.url); code != exitOK || !r2.OK || r2.Entries <= r.Entries {
		t.Errorf("audit verify --catalog with the pinned key, after more requests: exit %d, %+v (before: %d entries)", code, r2, r.Entries)
	}
	other := newEnvKey(t)
	failsWith(t, auditor, "verifier key changed", "audit", "verify", "--catalog", ro, "--verifier-key", other)

	// Evidence for an auditor without database access.
	ev := filepath.Join(t.TempDir(), "evidence.tar")
	failsWith(t, auditor, "--verifier-key", "audit", "export", "--out", ev, "--catalog", ro)
	mustCoffer(t, auditor, "audit", "export", "--out", ev, "--catalog", ro, "--verifier-key", vk)
	if out := mustCoffer(t, newAuditor(t), "audit", "verify", "--export", ev, "--verifier-key", vk); !strings.Contains(out, "OK") {
		t.Errorf("verify of the export taken from the catalog:\n%s", out)
	}

	// On the server machine, as the server reads its catalog.
	op := newAuditor(t)
	op.setenv(server.CatalogEnv, s.url)
	if out := mustCoffer(t, op, "audit", "verify", "--data", s.srv.DataDir); !strings.Contains(out, "OK") {
		t.Errorf("audit verify --data with COFFER_CATALOG:\n%s", out)
	}
	failsWith(t, op, "verifier.key", "audit", "verify", "--data", s.srv.DataDir, "--verifier-key", other)
	failsWith(t, newAuditor(t), "a server on PostgreSQL", "audit", "verify", "--data", s.srv.DataDir)
	failsWith(t, newAuditor(t), "postgres://", "audit", "verify", "--catalog", "mysql://db/coffer", "--verifier-key", vk)
	failsWith(t, newAuditor(t), "no coffer catalog", "audit", "verify", "--catalog", pgtest.URL(t), "--verifier-key", vk)
}

// newEnvKey is the verifier key of a fresh server: a valid key that did
// not sign this log.
func newEnvKey(t *testing.T) string {
	t.Helper()
	return servertest.Start(t).Server.AuditVerifierKey()
}

// TestAuditVerifyPostgresTampered plays an attacker with SQL access to
// the catalog (the tables' owner, who can disable the append-only
// triggers) after an auditor verified the log and pinned its key and
// newest checkpoint: an entry edited, an entry edited with its stored
// leaf hash recomputed, an entry deleted, two entries swapped, and the
// newest entries removed with their hashes and checkpoints. Each is
// reported by coffer audit verify --catalog.
func TestAuditVerifyPostgresTampered(t *testing.T) {
	type tamper struct {
		name string
		do   func(t *testing.T, s *pgAuditSite, keep int64)
		want []string // problem kinds, each must be reported
	}
	tokenEntry := func(t *testing.T, s *pgAuditSite) int64 {
		t.Helper()
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, s.url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var idx int64
		if err := conn.QueryRow(ctx, `SELECT min(idx) FROM audit_entries WHERE convert_from(record, 'UTF8') LIKE '%"POST /v1/tokens"%'`).Scan(&idx); err != nil {
			t.Fatal(err)
		}
		return idx
	}
	for _, tc := range []tamper{
		{"edited", func(t *testing.T, s *pgAuditSite, _ int64) {
			i := tokenEntry(t, s)
			if n := s.sql(t, `UPDATE audit_entries SET record = convert_to(replace(convert_from(record, 'UTF8'), 'backup-reader', 'owner'), 'UTF8') WHERE idx = $1`, i); n != 1 {
				t.Fatalf("edited %d entries", n)
			}
		}, []string{"entry-changed", "checkpoint-mismatch"}},
		{"edited with its hash", func(t *testing.T, s *pgAuditSite, _ int64) {
			i := tokenEntry(t, s)
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, s.url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var rec []byte
			if err := conn.QueryRow(ctx, `SELECT record FROM audit_entries WHERE idx = $1`, i).Scan(&rec); err != nil {
				t.Fatal(err)
			}
			rec = []byte(strings.Replace(string(rec), "backup-reader", "owner", 1))
			h := tlog.RecordHash(rec)
			s.sql(t, `UPDATE audit_entries SET record = $1 WHERE idx = $2`, rec, i)
			if n := s.sql(t, `UPDATE audit_hashes SET hash = $1 WHERE idx = $2`, h[:], tlog.StoredHashIndex(0, i)); n != 1 {
				t.Fatalf("updated %d hashes", n)
			}
		}, []string{"checkpoint-mismatch"}},
		{"deleted", func(t *testing.T, s *pgAuditSite, _ int64) {
			if n := s.sql(t, `DELETE FROM audit_entries WHERE idx = $1`, tokenEntry(t, s)); n != 1 {
				t.Fatalf("deleted %d entries", n)
			}
		}, []string{"entry-missing"}},
		{"reordered", func(t *testing.T, s *pgAuditSite, _ int64) {
			i := tokenEntry(t, s)
			n := s.sql(t, `UPDATE audit_entries a SET record = b.record FROM audit_entries b
				WHERE (a.idx, b.idx) IN (($1::bigint, $1::bigint + 1), ($1::bigint + 1, $1::bigint))`, i)
			if n != 2 {
				t.Fatalf("swapped %d entries", n)
			}
		}, []string{"entry-moved"}},
		{"rolled back", func(t *testing.T, s *pgAuditSite, keep int64) {
			s.sql(t, `DELETE FROM audit_entries WHERE idx >= $1`, keep)
			s.sql(t, `DELETE FROM audit_hashes WHERE idx >= $1`, tlog.StoredHashCount(keep))
			s.sql(t, `DELETE FROM audit_checkpoints WHERE size > $1`, keep)
		}, []string{"checkpoint-removed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPGAuditSite(t)
			s.requests(t, 2)
			if err := s.srv.Server.CheckpointAudit(t.Context()); err != nil {
				t.Fatal(err)
			}
			var keep int64
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, s.url)
			if err != nil {
				t.Fatal(err)
			}
			if err := conn.QueryRow(ctx, `SELECT max(size) FROM audit_checkpoints`).Scan(&keep); err != nil {
				t.Fatal(err)
			}
			conn.Close(ctx)
			s.requests(t, 2)
			if err := s.srv.Stop(); err != nil { // its last checkpoint: the log is complete
				t.Fatal(err)
			}
			vk := s.srv.Server.AuditVerifierKey()
			auditor := newAuditor(t)
			if code, r := verifyCatalog(t, auditor, s.url, "--verifier-key", vk); code != exitOK || !r.OK {
				t.Fatalf("before the tampering: exit %d, %+v", code, r)
			}

			s.dropAppendOnly(t)
			tc.do(t, s, keep)

			code, r := verifyCatalog(t, auditor, s.url)
			if code != exitFailure || r.OK {
				t.Errorf("after the log was %s in the database: exit %d, %+v; want it reported", tc.name, code, r)
			}
			for _, kind := range tc.want {
				if !slices.ContainsFunc(r.Problems, func(p string) bool { return strings.HasPrefix(p, kind+":") }) {
					t.Errorf("after the log was %s: no %s problem among %q", tc.name, kind, r.Problems)
				}
			}
			if tc.name == "rolled back" {
				// Only the checkpoint the auditor kept shows it: the log
				// is consistent in itself (docs/audit.md §5.1).
				if code, r := verifyCatalog(t, newAuditor(t), s.url, "--verifier-key", vk); code != exitOK || !r.OK {
					t.Errorf("a verifier without the earlier checkpoint, of the rolled-back log: exit %d, %+v; want it consistent in itself", code, r)
				}
			}
		})
	}
}
