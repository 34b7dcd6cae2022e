package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestAttackRetagOperatorsRefused: a retag forgets the original, so no
// one without snapshot.delete (an agent, an operator's role or user
// token, a reader) may retag, not even its own snapshots.
func TestAttackRetagOperatorsRefused(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	web := a.addSource("web01")
	s := a.backupAs(web, dir, "web01")
	a.principal("olga", "user", "", authn.RoleBackupOperator, "a")
	olga, err := a.owner.CreateToken(context.Background(), api.CreateToken{Name: "olga", Principal: "olga"})
	if err != nil {
		t.Fatal(err)
	}
	body := api.Retag{ID: s.ID.String(), Add: []string{"x"}}
	for name, tok := range map[string]string{"agent": web, "operator": a.roleToken(authn.RoleBackupOperator, "a"), "user": olga.Secret, "reader": a.roleToken(authn.RoleBackupReader, "a")} {
		if got, out := a.call("POST", "/v1/vaults/a/retag", tok, body); got != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403: %s", name, got, out)
		}
		rw := api.Rewrite{ID: s.ID.String(), Patterns: []api.ExcludePattern{{Pattern: "f"}}}
		if got, out := a.call("POST", "/v1/vaults/a/rewrite", tok, rw); got != http.StatusForbidden {
			t.Errorf("%s: rewrite: status %d, want 403: %s", name, got, out)
		}
	}
	if live := a.liveSnapshots(); len(live) != 1 || live[0].ID != s.ID || len(live[0].Tags) != 0 {
		t.Errorf("the list changed: %v", live)
	}
}

// TestAttackRetagKeepsTimeAndHost: a retag made long after the backup by
// an owner who also names a time and a host keeps the original's time
// and host (the server copies them), is not the host's writer (the
// operator that backs the host up still may), and the agent's latest
// stays its own.
func TestAttackRetagKeepsTimeAndHost(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	web := a.addSource("web01")
	sw := a.backupAs(web, dir, "web01")
	op := a.roleToken(authn.RoleBackupOperator, "a")
	sd := a.backupAs(op, dir, "db01")
	a.advance(400 * 24 * time.Hour)

	// Fields beyond the tags are refused outright, not ignored.
	for _, raw := range []string{
		`{"id":"` + sw.ID.String() + `","add":["x"],"time":"2099-01-01T00:00:00Z"}`,
		`{"id":"` + sw.ID.String() + `","add":["x"],"host":"db01"}`,
		`{"id":"` + sw.ID.String() + `","add":["x"],"tree":"` + sd.Tree.String() + `"}`,
	} {
		if got, out := a.call("POST", "/v1/vaults/a/retag", a.env.OwnerToken, []byte(raw)); got != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400: %s", raw, got, out)
		}
	}
	// Tags are checked as at backup: no control bytes for another
	// user's terminal, no more than a snapshot may hold.
	many := make([]string, 1000)
	for i := range many {
		many[i] = strings.Repeat("t", i%7+1) + string(rune('a'+i%26))
	}
	for _, bad := range []api.Retag{
		{ID: sw.ID.String(), Add: []string{"\x1b]52;c;evil\x07"}},
		{ID: sw.ID.String(), Add: []string{"a\nb"}},
		{ID: sw.ID.String(), Set: &many},
		{ID: sw.ID.String()},
		{ID: "latest", Add: []string{"x"}},
	} {
		if got, out := a.call("POST", "/v1/vaults/a/retag", a.env.OwnerToken, bad); got != http.StatusBadRequest {
			t.Errorf("%+v: status %d, want 400: %s", bad, got, out)
		}
	}
	contributor := a.client(a.roleToken(authn.RoleBackupContributor, "a")).Vault("a")
	for _, s := range []vault.SnapshotRecord{sw, sd} {
		n, old, err := contributor.Retag(context.Background(), s.ID, api.Retag{Add: []string{"keep"}})
		if err != nil {
			t.Fatal(err)
		}
		if !n.Time.Equal(s.Time) || n.Host != s.Host || n.Tree != s.Tree || !slices.Equal(n.Paths, s.Paths) || !slices.Equal(n.Tags, []string{"keep"}) {
			t.Errorf("retag of %s gave %+v", s.ID.Short(), n)
		}
		if old.ID != s.ID || old.Deleted.IsZero() {
			t.Errorf("original %+v not forgotten", old)
		}
	}
	live := a.liveSnapshots()
	if len(live) != 2 {
		t.Fatalf("live %v", live)
	}
	// The operator still backs db01 up: the retag did not take the host.
	a.backupAs(op, dir, "db01")
	// Every change of the list is pinned in the audit log.
	var es []api.AuditEntry
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/audit", a.env.OwnerToken, nil), &es); err != nil {
		t.Fatal(err)
	}
	pinned := 0
	for _, e := range es {
		if strings.HasSuffix(e.Op, "/retag") && e.Outcome == "ok" {
			if e.Params["chain"] == "" || e.Params["new_snapshot"] == "" {
				t.Errorf("retag audited without the chain head or the new snapshot: %+v", e)
			}
			pinned++
		}
	}
	if pinned != 2 {
		t.Errorf("%d retags audited, want 2", pinned)
	}
	// web01's snapshots are still the agent's own and one: its newest (its
	// latest) is the retagged one, at the backup's time.
	var webs []vault.SnapshotRecord
	for _, s := range a.liveSnapshots() {
		if s.Host == "web01" {
			webs = append(webs, s)
		}
	}
	if len(webs) != 1 || !webs[0].Time.Equal(sw.Time) || !slices.Equal(webs[0].Tags, []string{"keep"}) {
		t.Errorf("web01's snapshots: %+v", webs)
	}
}

// TestAttackRetagMinimumRetention: within the minimum retention a retag,
// which forgets the original, is refused like forget; nothing changes.
func TestAttackRetagMinimumRetention(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	secs := int64(30 * 24 * 3600)
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{MinRetentionSeconds: &secs})
	s := a.backupAs(a.roleToken(authn.RoleBackupOperator, "a"), dir, "db01")
	got, out := a.call("POST", "/v1/vaults/a/retag", a.env.OwnerToken, api.Retag{ID: s.ID.String(), Set: &[]string{"x"}})
	if got != http.StatusForbidden || !strings.Contains(string(out), "minimum retention") {
		t.Errorf("status %d, want 403: %s", got, out)
	}
	if live := a.liveSnapshots(); len(live) != 1 || live[0].ID != s.ID {
		t.Errorf("the list changed: %v", live)
	}
	a.advance(31 * 24 * time.Hour)
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/retag", a.env.OwnerToken, api.Retag{ID: s.ID.String(), Set: &[]string{"x"}})
}

// TestAttackRewriteServer: the server rewrites the trees itself from the
// verified original; a body naming a tree, a time or a host is refused;
// the result keeps the original's time and host and only lacks what the
// patterns matched; within the minimum retention nothing is written.
func TestAttackRewriteServer(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"keep": []byte("keep"), "secret.key": []byte("secret")})
	web := a.addSource("web01")
	s := a.backupAs(web, dir, "web01")
	other := a.backupAs(a.roleToken(authn.RoleBackupOperator, "a"), t.TempDir(), "db01")
	a.advance(100 * 24 * time.Hour)
	for _, raw := range []string{
		`{"id":"` + s.ID.String() + `","patterns":[{"pattern":"*.key"}],"tree":"` + other.Tree.String() + `"}`,
		`{"id":"` + s.ID.String() + `","patterns":[{"pattern":"*.key"}],"time":"2099-01-01T00:00:00Z"}`,
		`{"id":"` + s.ID.String() + `","patterns":[]}`,
		`{"id":"` + s.ID.String() + `","patterns":[{"pattern":"nothing-matches"}]}`,
	} {
		if got, out := a.call("POST", "/v1/vaults/a/rewrite", a.env.OwnerToken, []byte(raw)); got != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400: %s", raw, got, out)
		}
	}
	n, old, err := a.owner.Vault("a").Rewrite(context.Background(), s.ID, []api.ExcludePattern{{Pattern: "*.key"}})
	if err != nil {
		t.Fatal(err)
	}
	if !n.Time.Equal(s.Time) || n.Host != "web01" || !slices.Equal(n.Paths, s.Paths) || n.Files != s.Files-1 || n.Tree == s.Tree || old.Deleted.IsZero() {
		t.Fatalf("rewrite of %+v gave %+v (original %+v)", s, n, old)
	}
	if got, err := a.owner.Vault("a").FindSnapshot(context.Background(), n.ID.String()); err != nil || got.Tree != n.Tree {
		t.Fatalf("the rewritten snapshot does not verify: %v", err)
	}

	secs := int64(30 * 24 * 3600)
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{MinRetentionSeconds: &secs})
	young := a.backupAs(web, dir, "web01")
	packs := a.packObjects()
	got, out := a.call("POST", "/v1/vaults/a/rewrite", a.env.OwnerToken, api.Rewrite{ID: young.ID.String(), Patterns: []api.ExcludePattern{{Pattern: "*.key"}}})
	if got != http.StatusForbidden || !strings.Contains(string(out), "minimum retention") {
		t.Errorf("young snapshot: status %d, want 403: %s", got, out)
	}
	if after := a.packObjects(); after != packs {
		t.Errorf("a refused rewrite wrote packs: %d, then %d", packs, after)
	}
}

// packObjects counts the packs in vault "a"'s store.
func (a *arena) packObjects() int {
	a.t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(server.VaultDir(a.env.DataDir, "a"), "packs"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil && !os.IsNotExist(err) {
		a.t.Fatal(err)
	}
	return n
}

// TestAttackCopyClaimCannotDate: copied_from is a claim a writer makes;
// it never dates a snapshot (its time is the server's), never frees an
// agent's host, and never makes latest or the minimum retention prefer it.
func TestAttackCopyClaimCannotDate(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	web := a.addSource("web01")
	s := a.backupAs(web, dir, "web01")
	a.advance(time.Hour)
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	future := time.Now().Add(400 * 24 * time.Hour)
	for name, tok := range map[string]string{"agent": web, "operator": a.roleToken(authn.RoleBackupOperator, "a")} {
		for _, when := range []time.Time{old, future} {
			w := api.FromSnapshot(s)
			w.ID, w.Time, w.Parent = "", time.Time{}, ""
			w.Host = "web01"
			if name == "operator" {
				w.Host = "db01"
			}
			w.CopiedFrom = &api.SnapshotCopy{Vault: strings.Repeat("ab", 32), Snapshot: strings.Repeat("cd", 32), Time: when}
			var got api.Snapshot
			if err := json.Unmarshal(a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", tok, w), &got); err != nil {
				t.Fatal(err)
			}
			rec, err := got.Record()
			if err != nil {
				t.Fatal(err)
			}
			if !rec.Time.After(s.Time) || rec.Copy == nil || !rec.Copy.Time.Equal(when) {
				t.Errorf("%s: a copy claiming %s was recorded at %s (copy %+v)", name, when, rec.Time, rec.Copy)
			}
		}
	}
	// The operator may not record the agent's host by claiming a copy.
	w := api.FromSnapshot(s)
	w.ID, w.Time, w.Parent = "", time.Time{}, ""
	w.CopiedFrom = &api.SnapshotCopy{Vault: strings.Repeat("ab", 32), Snapshot: s.ID.String(), Time: s.Time}
	if got, out := a.call("POST", "/v1/vaults/a/snapshots", a.roleToken(authn.RoleBackupOperator, "a"), w); got != http.StatusForbidden {
		t.Errorf("operator copy under the agent's host: status %d, want 403: %s", got, out)
	}
	// Malformed claims are refused.
	for _, c := range []api.SnapshotCopy{{Vault: "xyz", Snapshot: strings.Repeat("cd", 32), Time: old}, {Vault: strings.Repeat("00", 32), Snapshot: strings.Repeat("cd", 32), Time: old}, {Vault: strings.Repeat("ab", 32), Snapshot: strings.Repeat("cd", 32), Time: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)}} {
		w := api.FromSnapshot(s)
		w.ID, w.Time, w.Parent = "", time.Time{}, ""
		w.CopiedFrom = &c
		if got, out := a.call("POST", "/v1/vaults/a/snapshots", web, w); got != http.StatusBadRequest {
			t.Errorf("claim %+v: status %d, want 400: %s", c, got, out)
		}
	}
	// Every copy sorts by its own time: the last recorded is the newest.
	live := a.liveSnapshots()
	for _, sn := range live[1:] {
		if sn.Time.Before(live[0].Time) {
			t.Errorf("snapshot %s sorts before the first backup", sn.ID.Short())
		}
	}
}
