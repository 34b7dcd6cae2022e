package server_test

// Stored retention policies and the server's daily run: someone who has
// just typed a policy must get the chance to see what it would do
// (coffer forget --policy --dry-run) before the server applies it, and the
// daily run must apply it once, at its time, within the vault's
// protection.

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// setClock moves the server's clock so that it reads t now.
func (a *arena) setClock(t time.Time) { a.env.Clock.Store(int64(time.Until(t))) }

// policyRuns returns the audit entries of the server's policy runs.
func (a *arena) policyRuns() []api.AuditEntry {
	a.t.Helper()
	var es []api.AuditEntry
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/audit", a.env.OwnerToken, nil), &es); err != nil {
		a.t.Fatal(err)
	}
	var out []api.AuditEntry
	for _, e := range es {
		if strings.Contains(e.Op, "policy-applied") {
			out = append(out, e)
		}
	}
	return out
}

// TestAttackPolicyDailyRunAtItsTime: a policy stored at 10:00 with the
// daily run at 03:00 forgets nothing at 10:01 (it used to be applied at
// the next minute's maintenance), is applied at 03:00 the next day once,
// however many maintenance ticks follow, and leaves alone what the
// minimum retention protects. The audit entry shows the policy as flags.
func TestAttackPolicyDailyRunAtItsTime(t *testing.T) {
	a := newArenaWith(t, servertest.Options{Configure: func(o *server.Options) {
		o.RetentionAt = "03:00"
		o.Location = time.UTC
	}})
	ctx := context.Background()
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, 1) // midnight, tomorrow
	a.setClock(day.Add(9 * time.Hour))
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("old")})
	old := a.backupAs(a.env.OwnerToken, dir, "h")
	// Two more, three days later: one is forgotten by the policy but
	// younger than the minimum retention, the newest is kept.
	a.setClock(day.AddDate(0, 0, 3).Add(9 * time.Hour))
	writeTree(t, dir, map[string][]byte{"f": []byte("young")})
	young := a.backupAs(a.env.OwnerToken, dir, "h")
	a.advance(time.Minute)
	writeTree(t, dir, map[string][]byte{"f": []byte("newest")})
	newest := a.backupAs(a.env.OwnerToken, dir, "h")
	minRet := int64(2 * 24 * 3600)
	if _, err := a.owner.Vault("a").ChangeSettings(ctx, api.SettingsChange{MinRetentionSeconds: &minRet}); err != nil {
		t.Fatal(err)
	}

	a.setClock(day.AddDate(0, 0, 3).Add(10 * time.Hour))
	a.storePolicy(retention.Policy{Last: 1})
	a.advance(time.Minute)
	for range 2 {
		if err := a.env.Server.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(a.liveSnapshots()); n != 3 {
		t.Fatalf("a minute after policy set, %d snapshots live, want all 3: the policy was applied before its daily run", n)
	}
	if runs := a.policyRuns(); len(runs) != 0 {
		t.Fatalf("policy runs before the daily run time: %+v", runs)
	}
	// 02:59 the next day: still nothing.
	a.setClock(day.AddDate(0, 0, 4).Add(2*time.Hour + 59*time.Minute))
	if err := a.env.Server.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(a.liveSnapshots()); n != 3 {
		t.Fatalf("at 02:59, %d snapshots live, want 3", n)
	}

	// 03:00: applied, once, over two ticks.
	a.setClock(day.AddDate(0, 0, 4).Add(3 * time.Hour))
	for range 2 {
		if err := a.env.Server.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		a.advance(time.Minute)
	}
	live := map[string]bool{}
	for _, s := range a.liveSnapshots() {
		live[s.ID.String()] = true
	}
	if live[old.ID.String()] || !live[young.ID.String()] || !live[newest.ID.String()] {
		t.Errorf("after the daily run: old live %v (want false), young live %v (want true: minimum retention), newest live %v (want true)",
			live[old.ID.String()], live[young.ID.String()], live[newest.ID.String()])
	}
	runs := a.policyRuns()
	if len(runs) != 1 {
		t.Fatalf("%d policy runs audited after two ticks at 03:00, want 1: %+v", len(runs), runs)
	}
	if r := runs[0]; r.Outcome != "ok" || !strings.Contains(r.Detail, "--keep-last 1 --group-by host,paths") ||
		!strings.Contains(r.Detail, "forgot 1 snapshot") || !strings.Contains(r.Detail, "1 more") || strings.Contains(r.Detail, "{") {
		t.Errorf("the policy run's audit entry: %+v", r)
	}

	// The next day's run is at 03:00 again, not 24 hours after the last
	// tick.
	a.setClock(day.AddDate(0, 0, 5).Add(2 * time.Hour))
	if err := a.env.Server.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(a.policyRuns()); n != 1 {
		t.Errorf("%d policy runs at 02:00 the day after, want still 1", n)
	}
	a.setClock(day.AddDate(0, 0, 5).Add(3*time.Hour + 30*time.Second))
	if err := a.env.Server.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if runs := a.policyRuns(); len(runs) != 2 || runs[1].Outcome != "ok" {
		t.Errorf("the second day's run: %+v", runs)
	}
}

// TestAttackPolicyStoredJustBeforeTheRun: a policy stored at 02:30 is
// not applied at 03:00, half an hour later, but at 03:00 the next day.
func TestAttackPolicyStoredJustBeforeTheRun(t *testing.T) {
	a := newArena(t) // the run at 03:00 UTC by default
	ctx := context.Background()
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, 1)
	a.setClock(day.Add(time.Hour))
	dir := t.TempDir()
	for i := range 2 {
		writeTree(t, dir, map[string][]byte{"f": []byte(strings.Repeat("x", i+1))})
		a.backupAs(a.env.OwnerToken, dir, "h")
		a.advance(time.Minute)
	}
	a.setClock(day.Add(2*time.Hour + 30*time.Minute))
	a.storePolicy(retention.Policy{Last: 1})
	a.setClock(day.Add(3 * time.Hour))
	if err := a.env.Server.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(a.liveSnapshots()); n != 2 || len(a.policyRuns()) != 0 {
		t.Fatalf("a policy stored at 02:30 was applied at 03:00: %d snapshots live, runs %+v", n, a.policyRuns())
	}
	a.setClock(day.AddDate(0, 0, 1).Add(3 * time.Hour))
	if err := a.env.Server.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(a.liveSnapshots()); n != 1 || len(a.policyRuns()) != 1 {
		t.Errorf("at 03:00 the next day: %d snapshots live, want 1; runs %+v", n, a.policyRuns())
	}
}

// TestAttackPolicyOnlyManagersSetIt: tokens without the vault.settings
// permission on the vault (backup operator, reader, key officer, an agent,
// and a contributor of another vault) cannot store a policy, and those
// without snapshot.delete cannot forget what a policy picks; the stored
// settings and the vault's events stay as they were.
func TestAttackPolicyOnlyManagersSetIt(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	if _, err := a.owner.CreateVault(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	s1 := a.backupAs(a.env.OwnerToken, dir, "h")
	a.advance(time.Hour)
	a.backupAs(a.env.OwnerToken, dir, "h")
	before, err := a.owner.Vault("a").Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := func() int {
		evs, err := a.owner.Vault("a").Events(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	nev := events()
	policy := `{"Last":1}`
	for name, tok := range map[string]string{
		"backup-operator":              a.roleToken(authn.RoleBackupOperator, "a"),
		"backup-reader":                a.roleToken(authn.RoleBackupReader, "a"),
		"key-officer":                  a.roleToken(authn.RoleKeyOfficer, "a"),
		"agent":                        a.addSource("web01"),
		"contributor of another vault": a.roleToken(authn.RoleBackupContributor, "b"),
	} {
		if st, out := a.call("POST", "/v1/vaults/a/settings", tok, api.SettingsChange{Policy: &policy}); st != http.StatusForbidden {
			t.Errorf("%s stores a policy: status %d: %s", name, st, out)
		}
		if st, out := a.call("POST", "/v1/vaults/a/forget", tok, api.Forget{IDs: []string{s1.ID.String()}}); st != http.StatusForbidden {
			t.Errorf("%s forgets a snapshot: status %d: %s", name, st, out)
		}
	}
	after, err := a.owner.Vault("a").Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Policy) != 0 || !after.Updated.Equal(before.Updated) {
		t.Errorf("settings changed by refused requests: %+v → %+v", before, after)
	}
	if n := events(); n != nev {
		t.Errorf("refused requests added %d vault events", n-nev)
	}
	if n := len(a.liveSnapshots()); n != 2 {
		t.Errorf("%d snapshots live after refused forgets, want 2", n)
	}
}

// TestAttackPolicyAuditShowsFlags: a policy change is audited, and
// recorded as a vault event, as the flags that set it; neither shows the
// stored JSON (a raw Go struct with nanosecond durations and bit sets).
func TestAttackPolicyAuditShowsFlags(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	a.storePolicy(retention.Policy{Daily: 7, Weekly: 5, Within: 30 * 24 * time.Hour, GroupBy: retention.GroupByHost | retention.GroupByPaths})
	want := "--keep-daily 7 --keep-weekly 5 --keep-within 30d --group-by host,paths"
	var es []api.AuditEntry
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/audit", a.env.OwnerToken, nil), &es); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range es {
		if e.Op != "POST /v1/vaults/{vault}/settings" {
			continue
		}
		found = true
		if e.Params["policy"] != want {
			t.Errorf("audit entry of policy set: policy %q, want %q", e.Params["policy"], want)
		}
		for k, v := range e.Params {
			if strings.Contains(v, "Daily") || strings.Contains(v, "GroupBy") {
				t.Errorf("audit entry of policy set shows the stored JSON in %s: %s", k, v)
			}
		}
	}
	if !found {
		t.Fatal("no audit entry for policy set")
	}
	evs, err := a.owner.Vault("a").Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := evs[len(evs)-1].Detail; d != "policy none → "+want {
		t.Errorf("vault event of policy set: %q", d)
	}
}

func TestParseTimeOfDay(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"03:00", 3 * time.Hour, true}, {"0:05", 5 * time.Minute, true}, {"23:59", 23*time.Hour + 59*time.Minute, true},
		{"24:00", 0, false}, {"03:60", 0, false}, {"3", 0, false}, {"03:0", 0, false}, {"-1:00", 0, false},
		{"", 0, false}, {"03:00:00", 0, false}, {"+3:00", 0, false}, {"003:00", 0, false},
	} {
		got, err := server.ParseTimeOfDay(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseTimeOfDay(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}
