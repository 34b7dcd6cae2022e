package main

// Attacks on a local vault's snapshot list from the CLI (issue 12): the
// attacker edits catalog.db with SQL and deletes store objects, holding
// no key; restore latest, snapshots and check must refuse, saying what
// is wrong.

import (
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

func catalogSQL(t *testing.T, e *testEnv) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(e.vaultDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	res, err := db.Exec(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		t.Fatalf("%s: changed nothing", q)
	}
}

// wantRefused runs each command and expects it to fail with every word
// in its output.
func wantRefused(t *testing.T, e *testEnv, words []string, cmds ...[]string) {
	t.Helper()
	for _, args := range cmds {
		out, stderr, code := coffer(t, e, args...)
		all := out + stderr
		ok := code != exitOK
		for _, w := range words {
			ok = ok && strings.Contains(all, w)
		}
		if !ok {
			t.Errorf("coffer %s: exit %d, output %q; want a failure naming %q", strings.Join(args, " "), code, all, words)
		}
	}
}

// Editing the old snapshot's time so that "latest" restores old data:
// restore, snapshots and check all refuse, naming the snapshot and the
// field.
func TestAttackCLILatestByEditedTime(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("old contents"), 0o644)
	old := backupJSON(t, e, src)
	writeFile(t, filepath.Join(src, "f"), []byte("new contents"), 0o644)
	backupJSON(t, e, src)

	mustExec(t, catalogSQL(t, e), `UPDATE snapshots SET time = ? WHERE hex(id) = upper(?)`, time.Now().Add(24*time.Hour).UnixNano(), old)
	target := t.TempDir()
	wantRefused(t, e, []string{old[:8], "time"},
		[]string{"restore", "latest", "--target", target},
		[]string{"snapshots"},
		[]string{"check"})
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("restore latest wrote %d entries from a tampered list", len(entries))
	}
}

// Removing the newest snapshot everywhere (catalog row, chain entry and
// store object): this machine's pin in $COFFER_HOME/chain says the list
// was longer.
func TestAttackCLINewestSnapshotRemoved(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	var ids []string
	for i := range 3 {
		writeFile(t, filepath.Join(src, "f"), []byte{byte(i)}, 0o644)
		ids = append(ids, backupJSON(t, e, src))
	}
	mustCoffer(t, e, "snapshots")
	db := catalogSQL(t, e)
	mustExec(t, db, `DELETE FROM snapshots WHERE hex(id) = upper(?)`, ids[2])
	mustExec(t, db, `DELETE FROM snapshot_chain WHERE hex(snapshot) = upper(?)`, ids[2]) // the newest entry
	if err := os.Remove(filepath.Join(e.storeDir(), "snapshots", ids[2])); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, e, []string{"rolled back"},
		[]string{"restore", "latest", "--target", t.TempDir()},
		[]string{"snapshots"},
		[]string{"check"})
}

// A vault written before format 2 upgrades on its first open and stays
// readable; an old coffer is then refused by the catalog's schema
// version (checked by hand with the d9aa820 binary: "catalog schema too
// new: version 8, this coffer supports up to 7; upgrade coffer").
func TestUpgradeFormat1CLI(t *testing.T) {
	e := newEnv(t)
	os.RemoveAll(e.home)
	if err := os.CopyFS(e.home, os.DirFS("../../internal/engine/testdata/vault-v1")); err != nil {
		t.Fatal(err)
	}
	snaps := listSnapshots(t, e)
	if len(snaps) != 2 || snaps[1].Tags[0] != "second" {
		t.Fatalf("snapshots after the upgrade: %+v", snaps)
	}
	target := t.TempDir()
	e.setenv("COFFER_HOST", snaps[1].Host) // latest is this host's
	mustCoffer(t, e, "restore", "latest", "--target", target)
	if b, err := os.ReadFile(filepath.Join(target, "tmp", "v1src", "a.txt")); err != nil || string(b) != "alpha two\n" {
		t.Errorf("restored a.txt = %q, %v", b, err)
	}
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check after the upgrade:\n%s", out)
	}
	var v int
	if err := catalogSQL(t, e).QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != 16 {
		t.Errorf("schema version %d, %v", v, err)
	}
	// The upgrade indexed every pack: none is left for the next open,
	// which reads only those.
	var packs, unindexed int
	if err := catalogSQL(t, e).QueryRow(`SELECT (SELECT count(*) FROM packs), (SELECT count(*) FROM unindexed_packs)`).Scan(&packs, &unindexed); err != nil || packs == 0 || unindexed != 0 {
		t.Errorf("after the upgrade: %d packs, %d unindexed, %v; want some packs, none unindexed", packs, unindexed, err)
	}
}

// On a server, each snapshot saved or forgotten records the chain's new
// head in the audit log, so that the log's signed checkpoints (and the
// CLI's pins of them) also fix the snapshot list.
func TestServerAuditRecordsChainHead(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL)
	mustCoffer(t, e, "vault", "create", "prod")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"), 0o644)
	id := backupJSON(t, e, src, "--vault", srv.URL+"/prod")
	mustCoffer(t, e, "forget", id[:12], "--vault", srv.URL+"/prod")
	var es []auditEntryJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "audit", "log", "--json")), &es); err != nil {
		t.Fatal(err)
	}
	heads := map[string]string{}
	for _, x := range es {
		if x.Outcome == "ok" && x.Vault == "prod" && x.Params["chain"] != "" {
			heads[x.Op] = x.Params["chain"]
		}
	}
	if h := heads["POST /v1/vaults/{vault}/snapshots"]; !strings.HasPrefix(h, "2:") || len(h) != 2+64 { // entry 1 binds the settings
		t.Errorf("snapshot save's audit entry records chain head %q, want 2:<64 hex>", h)
	}
	forgot := ""
	for op, h := range heads {
		if strings.Contains(op, "forget") {
			forgot = h
		}
	}
	if !strings.HasPrefix(forgot, "3:") {
		t.Errorf("forget's audit entry records chain head %q (entries %v), want 3:…", forgot, heads)
	}
}
