package main

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// fourDailyBackups makes four backups of one source a day apart and
// returns their IDs, oldest first; the clock is then a day after the last.
func fourDailyBackups(t *testing.T, e *testEnv) []string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	var ids []string
	for i := range 4 {
		writeFile(t, filepath.Join(src, "f"), randBytes(uint64(i), 1000), 0o644)
		ids = append(ids, backupJSON(t, e, src))
		e.advance(24 * time.Hour)
	}
	return ids
}

// TestPolicyShownAsFlags: policy set and policy show print the policy as
// the flags that set it, and --json is a fixed object with snake_case
// keys, never the stored Go struct (they printed {"Last":0,...,"Within":
// 2592000000000000,"GroupBy":0,"Location":null}).
func TestPolicyShownAsFlags(t *testing.T) {
	e := newEnv(t)
	fourDailyBackups(t, e)
	want := "--keep-daily 7 --keep-weekly 5 --keep-within 30d --group-by host,paths"
	out := mustCoffer(t, e, "policy", "set", "--keep-daily", "7", "--keep-weekly", "5", "--keep-within", "30d")
	if !strings.HasPrefix(out, "policy: "+want+"\n") || strings.Contains(out, "{") {
		t.Errorf("policy set printed:\n%s", out)
	}
	if out := mustCoffer(t, e, "policy", "show"); out != "policy: "+want+"\n" {
		t.Errorf("policy show printed %q", out)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "policy", "show", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	wantJSON := map[string]any{"policy": map[string]any{"keep_last": 0.0, "keep_hourly": 0.0, "keep_daily": 7.0, "keep_weekly": 5.0,
		"keep_monthly": 0.0, "keep_yearly": 0.0, "keep_within": "30d", "keep_tags": []any{}, "group_by": "host,paths", "flags": want}}
	if !reflect.DeepEqual(got, wantJSON) {
		t.Errorf("policy show --json:\n got %v\nwant %v", got, wantJSON)
	}
	var show struct {
		Protection struct {
			Policy map[string]any `json:"policy"`
		} `json:"protection"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "vault", "show", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(show.Protection.Policy, wantJSON["policy"]) {
		t.Errorf("vault show --json policy: %v", show.Protection.Policy)
	}
	if out := mustCoffer(t, e, "vault", "show"); !strings.Contains(out, want) {
		t.Errorf("vault show:\n%s", out)
	}
	// The event log says it as flags too.
	if log := mustCoffer(t, e, "vault", "log"); !strings.Contains(log, "policy none → "+want) || strings.Contains(log, "Daily") {
		t.Errorf("vault log:\n%s", log)
	}
	// Unlimited is what the flag takes: -1.
	out = mustCoffer(t, e, "policy", "set", "--keep-last", "-1", "--keep-tag", "two words", "--json")
	var set struct {
		Policy  *policyJSON `json:"policy"`
		Changed string      `json:"changed"`
	}
	if err := json.Unmarshal([]byte(out), &set); err != nil {
		t.Fatal(err)
	}
	if set.Policy == nil || set.Policy.KeepLast != -1 || set.Policy.Flags != `--keep-last -1 --keep-tag "two words" --group-by host,paths` ||
		!strings.Contains(set.Changed, "→ --keep-last -1") {
		t.Errorf("policy set --json: %s", out)
	}
	mustCoffer(t, e, "policy", "set", "--clear")
	if out := mustCoffer(t, e, "policy", "show", "--json"); strings.TrimSpace(out) != `{"policy":null}` && !strings.Contains(out, `"policy": null`) {
		t.Errorf("policy show --json without a policy: %q", out)
	}
}

// TestPolicySetDryRun: policy set --dry-run lists what the policy would
// forget and keep, and stores nothing: no policy, no event.
func TestPolicySetDryRun(t *testing.T) {
	e := newEnv(t)
	ids := fourDailyBackups(t, e)
	events := mustCoffer(t, e, "vault", "log", "--json")
	out := mustCoffer(t, e, "policy", "set", "--keep-last", "2", "--dry-run")
	for _, want := range []string{
		"policy (dry run, not stored): --keep-last 2 --group-by host,paths\n",
		ids[3][:8], ids[0][:8],
		"would forget 2 snapshots",
		"nothing was stored: run the same command without --dry-run to store the policy\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("policy set --dry-run lacks %q:\n%s", want, out)
		}
	}
	for i, id := range ids {
		what := "forget"
		if i >= 2 {
			what = "keep"
		}
		if !lineHas(out, id[:8], what) {
			t.Errorf("policy set --dry-run does not say %s for snapshot %d:\n%s", what, i, out)
		}
	}
	var dry struct {
		DryRun    bool           `json:"dry_run"`
		Policy    policyJSON     `json:"policy"`
		Forgotten []snapshotJSON `json:"forgotten"`
		Protected []snapshotJSON `json:"protected"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "policy", "set", "--keep-last", "2", "--dry-run", "--json")), &dry); err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || dry.Policy.KeepLast != 2 || len(dry.Forgotten) != 2 || dry.Forgotten[0].ID != ids[0] && dry.Forgotten[1].ID != ids[0] || dry.Protected == nil {
		t.Errorf("policy set --dry-run --json: %+v", dry)
	}
	if out := mustCoffer(t, e, "policy", "show"); !strings.Contains(out, "no stored policy") {
		t.Errorf("a dry run stored a policy: %s", out)
	}
	if after := mustCoffer(t, e, "vault", "log", "--json"); after != events {
		t.Errorf("a dry run recorded events:\nbefore %s\nafter %s", events, after)
	}
	if n := len(listSnapshots(t, e)); n != 4 {
		t.Errorf("a dry run forgot snapshots: %d live", n)
	}
	// A policy the vault would refuse is refused by the dry run too.
	mustCoffer(t, e, "policy", "set", "--keep-last", "3")
	mustCoffer(t, e, "vault", "set", "--immutability", "enabled")
	failsWith(t, e, "cannot be shortened", "policy", "set", "--keep-last", "2", "--dry-run")
	failsWith(t, e, "--keep-daily", "policy", "set", "--keep-daily", "-5", "--dry-run")
	if out := mustCoffer(t, e, "policy", "set", "--keep-last", "4", "--dry-run"); !strings.Contains(out, "would forget no snapshots") {
		t.Errorf("a longer policy's dry run:\n%s", out)
	}
	if out := mustCoffer(t, e, "policy", "show"); out != "policy: --keep-last 3 --group-by host,paths\n" {
		t.Errorf("after dry runs the stored policy is %q", out)
	}
}

// lineHas reports whether one line of out holds all of words.
func lineHas(out string, words ...string) bool {
	for line := range strings.SplitSeq(out, "\n") {
		ok := true
		for _, w := range words {
			if !strings.Contains(line, w) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// TestForgetStoredPolicy: forget --policy applies the stored policy now
// on a local vault (which has no daily run), leaves what the minimum
// retention protects and says so; with --dry-run it changes nothing;
// without a stored policy it says how to store one.
func TestForgetStoredPolicy(t *testing.T) {
	e := newEnv(t)
	ids := fourDailyBackups(t, e)
	failsWith(t, e, "no stored retention policy", "forget", "--policy")
	failsWith(t, e, "coffer policy set --keep-daily", "forget", "--policy", "--dry-run")
	mustCoffer(t, e, "policy", "set", "--keep-last", "1")
	// Ages now: about 4, 3, 2 and 1 days. 50 hours protects the third.
	mustCoffer(t, e, "vault", "set", "--min-retention", "50h")
	failsWith(t, e, "--policy applies the stored policy", "forget", "--policy", ids[0][:8])
	failsWith(t, e, "--policy applies the stored policy", "forget", "--policy", "--keep-last", "2")

	out := mustCoffer(t, e, "forget", "--policy", "--dry-run")
	for _, want := range []string{"stored policy: --keep-last 1 --group-by host,paths\n",
		"1 snapshot not kept by the policy is younger than the minimum retention (--min-retention 2d2h) and stays\n",
		"would forget 2 snapshots"} {
		if !strings.Contains(out, want) {
			t.Errorf("forget --policy --dry-run lacks %q:\n%s", want, out)
		}
	}
	if !lineHas(out, ids[2][:8], "keep", "minimum retention") || !lineHas(out, ids[0][:8], "forget") || !lineHas(out, ids[3][:8], "keep", "last #1") {
		t.Errorf("forget --policy --dry-run decisions:\n%s", out)
	}
	if n := len(listSnapshots(t, e)); n != 4 {
		t.Fatalf("forget --policy --dry-run forgot snapshots: %d live", n)
	}
	var res struct {
		DryRun    bool           `json:"dry_run"`
		Policy    policyJSON     `json:"policy"`
		Forgotten []snapshotJSON `json:"forgotten"`
		Protected []snapshotJSON `json:"protected"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "forget", "--policy", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	if res.DryRun || res.Policy.Flags != "--keep-last 1 --group-by host,paths" || len(res.Forgotten) != 2 || len(res.Protected) != 1 || res.Protected[0].ID != ids[2] {
		t.Errorf("forget --policy --json: %+v", res)
	}
	snaps := listSnapshots(t, e)
	if len(snaps) != 2 || snaps[0].ID != ids[2] || snaps[1].ID != ids[3] {
		t.Errorf("after forget --policy: %+v", snaps)
	}
}

// TestRemotePolicyDryRunWritesNothing plays a vault server's owner and its
// operators: policy set --dry-run sends no change (no audit entry of a
// settings change, no vault event, the settings untouched), an operator
// can neither store a policy nor apply one with forget --policy, and an
// owner's forget --policy applies the stored policy as the daily run
// would (grouped by host), audited as a forget.
func TestRemotePolicyDryRunWritesNothing(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	src := filepath.Join(t.TempDir(), "src")
	var ids []string
	for i := range 3 {
		writeFile(t, filepath.Join(src, "f"), randBytes(uint64(i), 1000), 0o644)
		ids = append(ids, backupJSON(t, e, src))
	}
	audit := func() []api.AuditEntry {
		var es []api.AuditEntry
		if err := json.Unmarshal([]byte(mustCoffer(t, e, "audit", "log", "--json", "--vault", srv.URL)), &es); err != nil {
			t.Fatal(err)
		}
		return es
	}
	changes := func() (n int) {
		for _, en := range audit() {
			if strings.HasSuffix(en.Op, "/settings") && strings.HasPrefix(en.Op, "POST") || strings.HasSuffix(en.Op, "/forget") {
				n++
			}
		}
		return n
	}
	settingsJSON := mustCoffer(t, e, "vault", "show", "--json")
	events := mustCoffer(t, e, "vault", "log", "--json")
	before := changes()

	out := mustCoffer(t, e, "policy", "set", "--keep-last", "1", "--dry-run")
	if !strings.Contains(out, "would forget 2 snapshots") {
		t.Errorf("policy set --dry-run on a server:\n%s", out)
	}
	failsWith(t, e, "grouped by host", "policy", "set", "--keep-last", "1", "--group-by", "paths", "--dry-run")
	op := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-operator", "--name", "web01"))
	mustCoffer(t, e, "policy", "set", "--keep-last", "1", "--dry-run", "--token", op) // reads only what it may read
	if n := changes(); n != before {
		t.Errorf("dry runs made %d settings changes or forgets", n-before)
	}
	if after := mustCoffer(t, e, "vault", "show", "--json"); after != settingsJSON {
		t.Errorf("dry runs changed the vault:\nbefore %s\nafter %s", settingsJSON, after)
	}
	if after := mustCoffer(t, e, "vault", "log", "--json"); after != events {
		t.Errorf("dry runs recorded events:\nbefore %s\nafter %s", events, after)
	}

	failsWith(t, e, "no stored retention policy", "forget", "--policy")
	failsWith(t, e, "forbidden", "policy", "set", "--keep-last", "1", "--token", op)
	mustCoffer(t, e, "policy", "set", "--keep-last", "1")
	failsWith(t, e, "forbidden", "forget", "--policy", "--token", op)
	if n := len(listSnapshots(t, e)); n != 3 {
		t.Fatalf("%d snapshots live after an operator's forget --policy, want 3", n)
	}
	if out := mustCoffer(t, e, "forget", "--policy", "--dry-run"); !strings.Contains(out, "would forget 2 snapshots") || !strings.Contains(out, "stored policy: --keep-last 1 --group-by host,paths") {
		t.Errorf("forget --policy --dry-run on a server:\n%s", out)
	}
	if out := mustCoffer(t, e, "forget", "--policy"); !strings.Contains(out, "forgot 2 snapshots") {
		t.Errorf("forget --policy on a server:\n%s", out)
	}
	if snaps := listSnapshots(t, e); len(snaps) != 1 || snaps[0].ID != ids[2] {
		t.Errorf("after forget --policy on a server: %+v", snaps)
	}
}
