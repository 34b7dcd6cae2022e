package main

import (
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

type auditEntryJSON struct {
	Index     int64             `json:"index"`
	Params    map[string]string `json:"params"`
	Principal string            `json:"principal"`
	Vault     string            `json:"vault"`
	Op        string            `json:"op"`
	Outcome   string            `json:"outcome"`
	Source    string            `json:"source"`
}

// TestAuditTrail: a server's requests land in its audit log (changes,
// data reads, denials) without secrets; the log exports and verifies
// offline with the server's key; the CLI pins the key and the newest
// checkpoint, so that an entry changed in the catalog with SQL, and a
// rollback, are both reported.
func TestAuditTrail(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL)
	mustCoffer(t, e, "vault", "create", "prod")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"), 0o644)
	backupJSON(t, e, src, "--vault", srv.URL+"/prod")
	mustCoffer(t, e, "restore", "latest", "--vault", srv.URL+"/prod", "--target", t.TempDir())
	reader := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-reader", "--vault", srv.URL+"/prod"))
	failsWith(t, e, "forbidden", "restore", "latest", "--vault", srv.URL+"/prod", "--target", t.TempDir(), "--token", reader)

	var es []auditEntryJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "audit", "log", "--json")), &es); err != nil {
		t.Fatal(err)
	}
	has := func(op, outcome string) bool {
		for _, x := range es {
			if x.Op == op && x.Outcome == outcome && x.Source != "" {
				return true
			}
		}
		return false
	}
	for _, want := range [][2]string{
		{"POST /v1/vaults", "ok"},
		{"POST /v1/vaults/{vault}/snapshots", "ok"},
		{"GET /v1/vaults/{vault}/snapshots/{ref}", "ok"}, // the read a restore starts with
		{"POST /v1/tokens", "ok"},
		{"GET /v1/vaults/{vault}/index", "denied"},
	} {
		if !has(want[0], want[1]) {
			t.Errorf("no %s entry for %s in the audit log", want[1], want[0])
		}
	}
	for _, x := range es {
		if x.Op == "POST /v1/tokens" && (x.Params["role"] != "backup-reader" || x.Params["vault"] != "prod") {
			t.Errorf("the token creation's parameters are not recorded: %+v", x)
		}
	}
	raw := mustCoffer(t, e, "audit", "log", "--json")
	if strings.Contains(raw, reader) || strings.Contains(raw, srv.OwnerToken) {
		t.Error("a token secret is in the audit log")
	}
	failsWith(t, e, "forbidden", "audit", "log", "--token", reader)

	// Evidence: export, then verify offline with the server's key.
	ev := filepath.Join(t.TempDir(), "evidence.tar")
	mustCoffer(t, e, "audit", "export", "--out", ev)
	vk := srv.Server.AuditVerifierKey()
	if out := mustCoffer(t, e, "audit", "verify", "--export", ev, "--verifier-key", vk); !strings.Contains(strings.ToLower(out), "ok") {
		t.Errorf("verify --export said:\n%s", out)
	}
	failsWith(t, e, "", "audit", "verify", "--export", ev, "--verifier-key", "coffer-audit+00000000+AQ"+strings.Repeat("A", 43))

	// Online verify pins the key and the newest checkpoint.
	mustCoffer(t, e, "audit", "verify")
	mustCoffer(t, e, "snapshots", "--vault", srv.URL+"/prod") // more entries
	mustCoffer(t, e, "audit", "verify")

	// Tamper with the catalog directly: change one entry.
	db, err := sql.Open("sqlite", filepath.Join(srv.DataDir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	triggers := []string{}
	rows, err := db.Query(`SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name LIKE 'audit_%'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		triggers = append(triggers, n)
	}
	rows.Close()
	for _, n := range triggers {
		if _, err := db.Exec(`DROP TRIGGER "` + n + `"`); err != nil {
			t.Fatal(err)
		}
	}
	res, err := db.Exec(`UPDATE audit_entries SET record = CAST(replace(CAST(record AS TEXT), 'POST /v1/tokens', 'GET /v1/tokens') AS BLOB)
		WHERE CAST(record AS TEXT) LIKE '%POST /v1/tokens%'`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("the tampering changed %d entries, want 1", n)
	}
	failsWith(t, e, "does not verify", "audit", "verify")
	failsWith(t, e, "does not verify", "audit", "verify", "--data", srv.DataDir)
}

// TestAuditRollback: entries removed from the end of the log together
// with their hashes and the checkpoints that covered them leave a log
// that is consistent in itself; the checkpoint an earlier verify kept
// exposes it.
func TestAuditRollback(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL)
	mustCoffer(t, e, "vault", "create", "prod")
	if err := srv.Server.CheckpointAudit(t.Context()); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(srv.DataDir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var keep int64
	if err := db.QueryRow(`SELECT count(*) FROM audit_entries`).Scan(&keep); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		mustCoffer(t, e, "token", "create", "--role", "backup-reader", "--vault", srv.URL+"/prod")
	}
	if err := srv.Server.CheckpointAudit(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The auditor's verify on the server machine keeps the newest
	// checkpoint it saw.
	mustCoffer(t, e, "audit", "verify", "--data", srv.DataDir)
	if err := srv.Stop(); err != nil { // no more entries, as after a shutdown
		t.Fatal(err)
	}

	// Roll back to keep entries, as someone with the catalog could.
	for _, stmt := range []string{
		`DROP TRIGGER IF EXISTS audit_entries_no_delete`, `DROP TRIGGER IF EXISTS audit_hashes_no_delete`,
		`DROP TRIGGER IF EXISTS audit_checkpoints_no_delete`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []struct {
		stmt string
		arg  int64
	}{
		{`DELETE FROM audit_entries WHERE idx >= ?`, keep},
		{`DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashCount(keep)},
		{`DELETE FROM audit_checkpoints WHERE size > ?`, keep},
	} {
		if _, err := db.Exec(q.stmt, q.arg); err != nil {
			t.Fatal(err)
		}
	}
	failsWith(t, e, "does not verify", "audit", "verify", "--data", srv.DataDir)
	// A verifier without the earlier checkpoint cannot see it: the log
	// is consistent in itself (docs/audit.md says so).
	fresh := newEnv(t)
	mustCoffer(t, fresh, "audit", "verify", "--data", srv.DataDir)
}
