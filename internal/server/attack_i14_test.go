package server_test

import (
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

// packFiles lists the pack files in vault "a"'s store.
func (a *arena) packFiles() []string {
	a.t.Helper()
	var out []string
	root := filepath.Join(server.VaultDir(a.env.DataDir, "a"))
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(filepath.Dir(p))) == "packs" {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		a.t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// damagedBackup backs up a new file as host and deletes the largest pack
// that backup wrote (the file's data; its trees stay): its snapshot then
// uses lost data, the others do not.
func (a *arena) damagedBackup(tok, host string, seed uint64) vault.SnapshotRecord {
	a.t.Helper()
	before := a.packFiles()
	dir := a.t.TempDir()
	writeTree(a.t, dir, map[string][]byte{"f-" + host: randomBytes(seed, 300<<10)})
	s := a.backupAs(tok, dir, host)
	var big string
	var size int64
	for _, p := range a.packFiles() {
		if fi, err := os.Stat(p); err == nil && !slices.Contains(before, p) && fi.Size() > size {
			big, size = p, fi.Size()
		}
	}
	if size < 300<<10 {
		a.t.Fatalf("the backup wrote no data pack (largest new pack: %d bytes)", size)
	}
	if err := os.Remove(big); err != nil {
		a.t.Fatal(err)
	}
	return s
}

func (a *arena) repairIndex(tok string, dry bool) api.RepairIndexReport {
	a.t.Helper()
	var r api.RepairIndexReport
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/repair/index", tok, api.Repair{DryRun: dry}), &r); err != nil {
		a.t.Fatal(err)
	}
	return r
}

// requestRepair asks, as the owner, to repair the snapshots that use lost
// data, and returns the answer (202: a request).
func (a *arena) requestRepair() api.RepairSnapshotsReport {
	a.t.Helper()
	var r api.RepairSnapshotsReport
	if err := json.Unmarshal(a.mustStatus(http.StatusAccepted, "POST", "/v1/vaults/a/repair/snapshots", a.env.OwnerToken, api.Repair{}), &r); err != nil {
		a.t.Fatal(err)
	}
	if r.Request == nil || r.Request.Op != "repair-snapshots" {
		a.t.Fatalf("repair snapshots: no request in %+v", r)
	}
	return r
}

func (a *arena) approve(id string) api.Request {
	a.t.Helper()
	var r api.Request
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+id+"/approve", a.roleToken(authn.RoleSecurityApprover, ""), nil), &r); err != nil {
		a.t.Fatal(err)
	}
	return r
}

func snapIDs(l []vault.SnapshotRecord) []vault.ID {
	out := []vault.ID{}
	for _, s := range l {
		out = append(out, s.ID)
	}
	return out
}

// TestAttackRepairRolesRefused: repair is the owner's (vault.repair).
// Readers, operators, agents, contributors and key officers (role tokens
// and users holding the role) are refused both repairs, dry runs
// included, and the vault's index and snapshots stay as they were.
func TestAttackRepairRolesRefused(t *testing.T) {
	a := newArena(t)
	op := a.roleToken(authn.RoleBackupOperator, "a")
	a.backupAs(op, t.TempDir(), "db01")
	a.damagedBackup(op, "web01", 1)
	before := a.liveSnapshots()
	a.principal("carl", "user", "", authn.RoleBackupContributor, "a")
	_, carl := a.mint(a.env.OwnerToken, "POST", "/v1/tokens", api.CreateToken{Name: "carl", Principal: "carl"})
	toks := map[string]string{
		"reader":                  a.roleToken(authn.RoleBackupReader, "a"),
		"operator":                op,
		"agent":                   a.addSource("web02"),
		"contributor":             a.roleToken(authn.RoleBackupContributor, "a"),
		"server-wide contributor": a.roleToken(authn.RoleBackupContributor, ""),
		"contributor user":        carl.Secret,
		"key officer":             a.roleToken(authn.RoleKeyOfficer, "a"),
		"approver":                a.roleToken(authn.RoleSecurityApprover, ""),
		"nobody":                  "",
	}
	for name, tok := range toks {
		for _, what := range []string{"index", "snapshots"} {
			for _, dry := range []bool{true, false} {
				got, out := a.call("POST", "/v1/vaults/a/repair/"+what, tok, api.Repair{DryRun: dry})
				if got != http.StatusForbidden && got != http.StatusUnauthorized {
					t.Errorf("%s: repair %s (dry run %v): status %d, want 403: %s", name, what, dry, got, out)
				}
			}
		}
	}
	// Nothing was repaired: the index still lists the lost packs.
	if r := a.repairIndex(a.env.OwnerToken, true); len(r.Removed) == 0 {
		t.Errorf("a refused repair changed the index: %+v", r)
	}
	if after := a.liveSnapshots(); !slices.Equal(snapIDs(after), snapIDs(before)) {
		t.Errorf("a refused repair changed the snapshots: %v, then %v", snapIDs(before), snapIDs(after))
	}
	rs := a.mustStatus(http.StatusOK, "GET", "/v1/requests?all=true", a.env.OwnerToken, nil)
	if strings.Contains(string(rs), "repair") {
		t.Errorf("a refused repair made a request: %s", rs)
	}
}

// TestAttackRepairSnapshotsNeedsApproval: an owner alone cannot drop
// files from history: repair snapshots is a request; the owner cannot
// approve it; until a security approver does, nothing changes; the
// approved repair touches the snapshots the approver was shown, never one
// damaged since; the original is soft-deleted (undelete brings it back,
// prune keeps it for the soft-delete period); it is audited.
func TestAttackRepairSnapshotsNeedsApproval(t *testing.T) {
	a := newArena(t)
	op := a.roleToken(authn.RoleBackupOperator, "a")
	good := a.backupAs(op, t.TempDir(), "db01")
	bad := a.damagedBackup(op, "web01", 1)
	if r := a.repairIndex(a.env.OwnerToken, false); len(r.Removed) == 0 {
		t.Fatalf("repair index removed nothing: %+v", r)
	}
	// The dry run names the damaged snapshot only.
	var dry api.RepairSnapshotsReport
	json.Unmarshal(a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/repair/snapshots", a.env.OwnerToken, api.Repair{DryRun: true}), &dry)
	if len(dry.Snapshots) != 1 || dry.Snapshots[0].SnapshotID != bad.ID.String() || dry.Request != nil {
		t.Fatalf("dry run: %+v", dry)
	}
	req := a.requestRepair()
	if len(req.Snapshots) != 1 || req.Snapshots[0].SnapshotID != bad.ID.String() || !strings.Contains(req.Request.Summary, bad.ID.Short()) {
		t.Fatalf("request: %+v", req)
	}
	if live := a.liveSnapshots(); !slices.Equal(snapIDs(live), []vault.ID{good.ID, bad.ID}) {
		t.Fatalf("the request changed the snapshots: %v", snapIDs(live))
	}
	// The owner, and a token it mints, cannot approve.
	for name, tok := range map[string]string{"owner": a.env.OwnerToken, "minted": a.roleToken(authn.RoleOwner, "")} {
		if got, out := a.call("POST", "/v1/requests/"+req.Request.ID+"/approve", tok, nil); got != http.StatusForbidden {
			t.Errorf("%s approved its own repair: status %d: %s", name, got, out)
		}
	}
	// Damage after the request: the approval does not cover it.
	later := a.damagedBackup(op, "mail01", 2)
	a.repairIndex(a.env.OwnerToken, false)

	done := a.approve(req.Request.ID)
	if !strings.Contains(done.Result, "repaired "+bad.ID.Short()) || strings.Contains(done.Result, later.ID.Short()) {
		t.Fatalf("approved: %+v", done)
	}
	live := a.liveSnapshots()
	ids := snapIDs(live)
	if slices.Contains(ids, bad.ID) || !slices.Contains(ids, good.ID) || !slices.Contains(ids, later.ID) || len(ids) != 3 {
		t.Fatalf("after the approved repair: %v (good %s, bad %s, later %s)", ids, good.ID.Short(), bad.ID.Short(), later.ID.Short())
	}
	var repaired vault.SnapshotRecord
	for _, s := range live {
		if s.Parent == bad.ID {
			repaired = s
		}
	}
	if repaired.ID.IsZero() || !repaired.Time.Equal(bad.Time) || repaired.Host != bad.Host || repaired.Files != 0 || repaired.Tree == bad.Tree {
		t.Errorf("repaired snapshot %+v of %+v", repaired, bad)
	}
	// Soft-deleted, kept by prune, and undelete brings it back.
	a.advance(2 * 24 * time.Hour)
	a.pruneNow()
	var deleted []api.Snapshot
	json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a/deleted", a.env.OwnerToken, nil), &deleted)
	if len(deleted) != 1 || deleted[0].ID != bad.ID.String() {
		t.Fatalf("deleted after prune: %+v", deleted)
	}
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/undelete", a.env.OwnerToken, api.Undelete{ID: bad.ID.String()})

	// Audited: who asked, with the dry-run flag, and who approved.
	var asked, approved bool
	var es []api.AuditEntry
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/audit", a.env.OwnerToken, nil), &es); err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Op == "POST /v1/vaults/{vault}/repair/snapshots" && e.Params["dry_run"] == "false" && e.Params["request"] == req.Request.ID {
			asked = true
		}
		if e.Op == "POST /v1/requests/{id}/approve" && e.Params["request_op"] == "repair-snapshots" {
			approved = true
		}
	}
	if !asked || !approved {
		t.Errorf("audit: request %v, approval %v", asked, approved)
	}
}

// TestAttackRepairMinimumRetention: in a locked vault, an approved repair
// of a snapshot younger than the minimum retention writes the repaired
// copy but does not forget the original (and says so); the repair cannot
// shorten what the vault promised to keep.
func TestAttackRepairMinimumRetention(t *testing.T) {
	a := newArena(t)
	secs := int64(30 * 24 * 3600)
	en, lock := "enabled", "locked"
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{MinRetentionSeconds: &secs, Immutability: &en})
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{Immutability: &lock})
	op := a.roleToken(authn.RoleBackupOperator, "a")
	bad := a.damagedBackup(op, "web01", 1)
	a.repairIndex(a.env.OwnerToken, false)
	req := a.requestRepair()
	done := a.approve(req.Request.ID)
	if !strings.Contains(done.Result, "original stays") || !strings.Contains(done.Result, "minimum retention") {
		t.Errorf("approved: %+v", done)
	}
	ids := snapIDs(a.liveSnapshots())
	if !slices.Contains(ids, bad.ID) || len(ids) != 2 {
		t.Errorf("after the repair: %v, want the original %s live and its repair", ids, bad.ID.Short())
	}
	var deleted []api.Snapshot
	json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a/deleted", a.env.OwnerToken, nil), &deleted)
	if len(deleted) != 0 {
		t.Errorf("deleted: %+v", deleted)
	}
}
