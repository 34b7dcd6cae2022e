package server_test

// A writer of the server's catalog edits a vault's settings row
// (docs/format.md §8.4). The server reads settings for its decisions
// through the engine, which checks them against the snapshot chain: the
// edit is refused and nothing is deleted or unconfined.

import (
	"database/sql"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/retention"
)

// editSettings runs q against the server's catalog file as an attacker.
func (a *arena) editSettings(q string) {
	a.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(a.env.DataDir, "catalog.db"))
	if err != nil {
		a.t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(q)
	if err != nil {
		a.t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		a.t.Fatalf("%s: changed nothing", q)
	}
}

func wantNamed(t *testing.T, what string, status int, body []byte) {
	t.Helper()
	if status < 400 || !strings.Contains(string(body), "changed outside coffer") {
		t.Errorf("%s after the catalog writer's edit: %d %s; want a refusal naming the edit", what, status, body)
	}
}

// Immutability locked → disabled by SQL: forget, the policy run and
// vault deletion still refuse to delete anything.
func TestAttackSettingsServerUnlocked(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("keep")})
	web := a.addSource("web01")
	var snaps []string
	for range 3 {
		a.advance(time.Hour)
		snaps = append(snaps, a.backupAs(web, dir, "web01").ID.String())
	}
	a.storePolicy(retention.Policy{Last: 1, GroupBy: retention.GroupByHost})
	for _, s := range []string{"enabled", "locked"} {
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{Immutability: &s})
	}
	a.editSettings(`UPDATE vault_settings SET immutability = 'disabled', soft_delete = 'on'`)

	st, body := a.call("POST", "/v1/vaults/a/forget", a.env.OwnerToken, api.Forget{IDs: []string{snaps[0]}})
	wantNamed(t, "forget", st, body)
	st, body = a.call("DELETE", "/v1/vaults/a", a.env.OwnerToken, nil)
	wantNamed(t, "vault delete", st, body)
	a.advance(25 * time.Hour)
	if err := a.env.Server.Maintain(t.Context()); err == nil || !strings.Contains(err.Error(), "changed outside coffer") {
		t.Logf("maintain: %v", err)
	}
	var live int
	db, err := sql.Open("sqlite", filepath.Join(a.env.DataDir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT count(*) FROM snapshots WHERE deleted IS NULL`).Scan(&live); err != nil || live != 3 {
		t.Errorf("live snapshots after the edit and a policy run: %d, %v; want 3", live, err)
	}
}

// Dedup scope source → vault by SQL: the agent is not given the
// vault-wide domain; its requests are refused instead.
func TestAttackSettingsServerDedupScope(t *testing.T) {
	a := newArena(t)
	scope := "source"
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{DedupScope: &scope})
	web := a.addSource("web01")
	a.editSettings(`UPDATE vault_settings SET dedup_scope = 'vault'`)
	st, body := a.call("GET", "/v1/vaults/a/snapshots", web, nil)
	wantNamed(t, "an agent's listing", st, body)
	st, body = a.call("GET", "/v1/vaults/a/settings", a.env.OwnerToken, nil)
	t.Logf("settings shown: %d %s", st, body)
}
