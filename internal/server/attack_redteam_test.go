package server_test

// Second-round attacker tests (redteam): what the first round's fixes of
// issues 11 and 12 still let through, each played over loopback TLS.

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/server"
)

// A backup-contributor floods the approvers' queue with critical
// settings changes: each call was a new pending request (a catalog row,
// a vault event, and up to 1 MiB of recorded change), without limit, so
// the one request that matters drowned in the approvers' `coffer
// requests` view. One requester holds a bounded number of pending
// requests, and asking again for the same change answers the pending
// request instead of a new one.
func TestAttackRedteamRequestFlood(t *testing.T) {
	a := newArena(t)
	contrib := a.roleToken(authn.RoleBackupContributor, "a")
	long := 180
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", contrib, api.SettingsChange{SoftDeleteDays: &long})
	accepted, refused := 0, 0
	for i := range 40 {
		days := 14 + i%30 // shortening soft delete: critical, needs approval
		st, out := a.call("POST", "/v1/vaults/a/settings", contrib, api.SettingsChange{SoftDeleteDays: &days})
		switch st {
		case http.StatusAccepted:
			accepted++
		case http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("critical change %d: status %d: %s", i, st, out)
		}
	}
	approver := a.roleToken(authn.RoleSecurityApprover, "")
	var rs []api.Request
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/requests", approver, nil), &rs); err != nil {
		t.Fatal(err)
	}
	if len(rs) > server.MaxPendingRequests || refused == 0 {
		t.Errorf("one contributor holds %d pending requests (%d accepted, %d refused); want at most %d", len(rs), accepted, refused, server.MaxPendingRequests)
	}
	// The same change asked twice is one request.
	seen := map[string]bool{}
	for _, r := range rs {
		if seen[r.Summary] {
			t.Errorf("the same change is pending twice: %q", r.Summary)
		}
		seen[r.Summary] = true
	}
	// Another requester is not held back by the flood.
	days := 20
	if st, out := a.call("POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{SoftDeleteDays: &days}); st != http.StatusAccepted {
		t.Errorf("the owner's own critical change after the flood: status %d: %s", st, out)
	}
}

// docs/security.md: "On a server, every audit entry of a snapshot change
// records the chain head", so that the audit log's signed checkpoints pin
// the snapshot list. The daily policy's forgets and prune's removals
// changed the list without recording it: a later catalog writer could
// cut those entries off the chain and no audit pin would say otherwise.
func TestAttackRedteamAuditPinsEveryChainChange(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	for i := range 2 {
		writeTree(t, dir, map[string][]byte{"f": []byte(strings.Repeat("x", i+1))})
		a.backupAs(a.env.OwnerToken, dir, "h")
		a.advance(time.Hour)
	}
	a.storePolicy(retention.Policy{Last: 1})
	a.advance(25 * time.Hour)
	if err := a.env.Server.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(a.liveSnapshots()); n != 1 {
		t.Fatalf("%d live snapshots after the policy, want 1", n)
	}
	a.advance(15 * 24 * time.Hour) // past soft delete
	var rep api.PruneReport
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/prune", a.env.OwnerToken, api.Prune{}), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Expired) != 1 {
		t.Fatalf("prune removed %d snapshots, want 1", len(rep.Expired))
	}
	var es []api.AuditEntry
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/audit", a.env.OwnerToken, nil), &es); err != nil {
		t.Fatal(err)
	}
	var policy, prune bool
	for _, e := range es {
		switch {
		case strings.Contains(e.Op, "policy-applied") && e.Outcome == "ok":
			policy = true
			if e.Params["chain"] == "" {
				t.Errorf("the policy's forget is audited without the chain head: %+v", e)
			}
		case strings.Contains(e.Op, "prune") && e.Outcome == "ok":
			prune = true
			if e.Params["chain"] == "" {
				t.Errorf("prune's removal is audited without the chain head: %+v", e)
			}
		}
	}
	if !policy || !prune {
		t.Errorf("audit entries found: policy %v, prune %v; want both", policy, prune)
	}
}

// A token's expiry beyond what the catalog can store (year 2300) was
// accepted by the checks and failed in the catalog: a 500 and an internal
// error logged for a request any owner (or contributor, through source
// add) can send. It is a 400 that says what to do.
func TestAttackRedteamTokenExpiryOutOfRange(t *testing.T) {
	a := newArena(t)
	contrib := a.roleToken(authn.RoleBackupContributor, "a")
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		tok, path string
		body      any
	}{
		{a.env.OwnerToken, "/v1/tokens", api.CreateToken{Name: "far", Role: string(authn.RoleBackupReader), Vault: "a", Expires: far}},
		{contrib, "/v1/vaults/a/sources", api.AddSource{Name: "far-agent", Expires: far}},
	} {
		if st, out := a.call("POST", c.path, c.tok, c.body); st != http.StatusBadRequest {
			t.Errorf("POST %s expiring in %d: status %d, want 400: %s", c.path, far.Year(), st, out)
		}
	}
}

// An operator token keeps one backup session alive for ever (a missing
// query every few minutes, never a snapshot): prune waits for every
// session that began before a pack was condemned, so the data of a
// snapshot the owner forgot stayed in the store for good, whatever the
// owner pruned. A writer session is bounded in age (vault.SessionMaxAge):
// past it, prune no longer waits for it, and its snapshot is refused.
func TestAttackRedteamImmortalSession(t *testing.T) {
	a := newArena(t)
	approver := a.roleToken(authn.RoleSecurityApprover, "")
	off := "off"
	var res api.SettingsResult
	if err := json.Unmarshal(a.mustStatus(http.StatusAccepted, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{SoftDelete: &off}), &res); err != nil {
		t.Fatal(err)
	}
	a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+res.Request.ID+"/approve", approver, nil)

	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"secret": []byte("to be shredded")})
	snap := a.backupAs(a.env.OwnerToken, dir, "h")

	operator := a.roleToken(authn.RoleBackupOperator, "a")
	hold := func() {
		t.Helper()
		req, err := http.NewRequest("POST", a.env.URL+"/v1/vaults/a/missing", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+operator)
		req.Header.Set(api.HeaderSession, strings.Repeat("ab", 16))
		resp, err := a.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("missing: status %d", resp.StatusCode)
		}
	}
	hold()
	a.advance(time.Minute)
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/forget", a.env.OwnerToken, api.Forget{IDs: []string{snap.ID.String()}})
	prune := func() api.PruneReport {
		t.Helper()
		var rep api.PruneReport
		if err := json.Unmarshal(a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/prune", a.env.OwnerToken, api.Prune{}), &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := prune(); rep.Waiting == 0 {
		t.Fatalf("prune did not wait for the operator's session: %+v", rep)
	}
	// Eight days of a session kept alive every ten minutes.
	for range 8 * 24 * 6 {
		a.advance(10 * time.Minute)
		hold()
	}
	rep := prune()
	if rep.Waiting != 0 || rep.Deleted == 0 {
		t.Errorf("after 8 days, the forgotten snapshot's packs still wait for the operator's session: %d waiting, %d deleted", rep.Waiting, rep.Deleted)
	}
}

// The agents' fix of issue 11 binds an agent's snapshots to its name; a
// machine backed up with a user's or a role token named its host freely,
// and so did every other writer: an operator's role token saved three
// snapshots of host db01 (server-stamped, so the newest), and the stored
// --keep-last 3 forgot every genuine db01 snapshot, while `restore latest
// --host db01` restored the operator's tree. A host's newest snapshot now
// names its writer (in its chain entry), and an operator records only
// hosts nobody else writes; a writer that may forget snapshots anyway,
// and a token taking over from a revoked one, may.
func TestAttackRedteamOperatorCrowdsNonAgentHost(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("genuine")})
	st, mt := a.mint(a.env.OwnerToken, "POST", "/v1/tokens", api.CreateToken{Name: "db01-machine", Role: string(authn.RoleBackupOperator), Vault: "a"})
	if st != http.StatusCreated {
		t.Fatalf("token for db01: status %d", st)
	}
	machine := mt.Secret
	var genuine []string
	for range 3 {
		a.advance(time.Hour)
		genuine = append(genuine, a.backupAs(machine, dir, "db01").ID.String())
	}
	// The same paths, the attacker's content (on its own machine).
	writeTree(t, dir, map[string][]byte{"f": []byte("evil")})
	attacker := a.roleToken(authn.RoleBackupOperator, "a")
	for _, host := range []string{"db01", "DB01"} {
		a.advance(time.Hour)
		v := a.client(attacker).Vault("a")
		if err := v.LoadDedup(context.Background()); err != nil {
			t.Fatal(err)
		}
		_, err := agent.Backup(context.Background(), v, agent.BackupOptions{Paths: []string{dir}, Host: host})
		if host == "db01" && (err == nil || !strings.Contains(err.Error(), "forbidden")) {
			t.Errorf("another operator's backup of host db01: %v, want forbidden", err)
		}
	}
	a.storePolicy(retention.Policy{Last: 3})
	a.advance(25 * time.Hour)
	if err := a.env.Server.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	for _, s := range a.liveSnapshots() {
		live[s.ID.String()] = true
	}
	for _, id := range genuine {
		if !live[id] {
			t.Errorf("genuine snapshot %s of db01 was pushed out by another operator's snapshots", id[:8])
		}
	}
	// The machine's token revoked (replaced), a new one takes the host
	// over; the owner may write any host.
	a.mustStatus(http.StatusNoContent, "DELETE", "/v1/tokens/"+mt.ID, a.env.OwnerToken, nil)
	a.backupAs(attacker, dir, "db01")
	a.backupAs(a.env.OwnerToken, dir, "db01")
}
