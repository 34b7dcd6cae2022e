package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

func (e *testEnv) advance(d time.Duration) {
	e.mu.Lock()
	e.clock = e.clock.Add(d)
	e.mu.Unlock()
}

func failsWith(t *testing.T, e *testEnv, want string, args ...string) string {
	t.Helper()
	_, stderr, code := coffer(t, e, args...)
	if code != exitFailure || !strings.Contains(stderr, want) {
		t.Errorf("coffer %s: exit %d, stderr %q; want exit 1 mentioning %q", strings.Join(args, " "), code, stderr, want)
	}
	return stderr
}

// TestForgetUndeletePrune walks soft delete from the CLI: forget, the
// deleted list, undelete with a restore compared byte for byte, prune
// keeping a forgotten snapshot's data until its period ends (on a moved
// clock), then reclaiming it, with check --read-data clean throughout.
func TestForgetUndeletePrune(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a"), randBytes(1, 2<<20), 0o644)
	first := backupJSON(t, e, src)
	writeFile(t, filepath.Join(src, "a"), randBytes(2, 2<<20), 0o644)
	second := backupJSON(t, e, src)

	if out := mustCoffer(t, e, "forget", first[:8]); !strings.Contains(out, "forgot 1 snapshot") || !strings.Contains(out, "coffer undelete") {
		t.Errorf("forget said %q", out)
	}
	if snaps := listSnapshots(t, e); len(snaps) != 1 || snaps[0].ID != second {
		t.Errorf("snapshots after forget: %+v", snaps)
	}
	var deleted []snapshotJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "snapshots", "--deleted", "--json")), &deleted); err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0].ID != first || deleted[0].Expires == nil || deleted[0].Expires.Sub(*deleted[0].Deleted) != 14*24*time.Hour || deleted[0].DeletedBy == "" {
		t.Errorf("snapshots --deleted: %+v", deleted)
	}
	failsWith(t, e, "not found", "restore", first[:8], "--target", t.TempDir())

	mustCoffer(t, e, "undelete", first[:8])
	dst := t.TempDir()
	mustCoffer(t, e, "restore", first[:8], "--target", dst)
	if got, _ := os.ReadFile(filepath.Join(dst, src, "a")); !bytes.Equal(got, randBytes(1, 2<<20)) {
		t.Error("the undeleted snapshot restores different data")
	}

	mustCoffer(t, e, "forget", first[:8])
	storeBytes := func() int64 {
		var n int64
		filepath.Walk(filepath.Join(e.storeDir(), "packs"), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				n += fi.Size()
			}
			return nil
		})
		return n
	}
	before := storeBytes()
	out := mustCoffer(t, e, "prune")
	if !strings.Contains(out, "removed 0 expired") || storeBytes() != before {
		t.Errorf("prune within the soft-delete period: %q (store %d → %d bytes)", out, before, storeBytes())
	}
	e.advance(15 * 24 * time.Hour)
	if out := mustCoffer(t, e, "prune", "--dry-run"); !strings.Contains(out, "would remove 1 expired") || storeBytes() != before {
		t.Errorf("prune --dry-run: %q (store %d → %d bytes)", out, before, storeBytes())
	}
	var rep struct {
		Deleted      int   `json:"packs_deleted"`
		DeletedBytes int64 `json:"bytes_deleted"`
		Expired      []snapshotJSON
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "prune", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Deleted == 0 || rep.DeletedBytes < 2<<20 || storeBytes() > before-(2<<20) {
		t.Errorf("prune after expiry: %+v (store %d → %d bytes)", rep, before, storeBytes())
	}
	failsWith(t, e, "not found", "undelete", first[:8])
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check after prune: %s", out)
	}
	dst = t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", dst)
	if got, _ := os.ReadFile(filepath.Join(dst, src, "a")); !bytes.Equal(got, randBytes(2, 2<<20)) {
		t.Error("the remaining snapshot restores different data after prune")
	}
	log := mustCoffer(t, e, "vault", "log")
	for _, want := range []string{"forget", "undelete", "prune"} {
		if !strings.Contains(log, want) {
			t.Errorf("vault log lacks %s:\n%s", want, log)
		}
	}
}

// TestForgetPolicy: --keep-* flags forget what the policy does not keep,
// per host and paths; --dry-run changes nothing.
func TestForgetPolicy(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	var ids []string
	for i := range 4 {
		writeFile(t, filepath.Join(src, "f"), randBytes(uint64(i), 1000), 0o644)
		ids = append(ids, backupJSON(t, e, src))
		e.advance(24 * time.Hour)
	}
	var dry struct {
		DryRun    bool           `json:"dry_run"`
		Forgotten []snapshotJSON `json:"forgotten"`
		Groups    []struct {
			Key       string `json:"group"`
			Snapshots []struct {
				ID      string   `json:"id"`
				Keep    bool     `json:"keep"`
				Reasons []string `json:"reasons"`
			} `json:"snapshots"`
		} `json:"groups"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "forget", "--keep-last", "2", "--dry-run", "--json")), &dry); err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || len(dry.Forgotten) != 2 || len(dry.Groups) != 1 || len(dry.Groups[0].Snapshots) != 4 {
		t.Fatalf("forget --dry-run: %+v", dry)
	}
	if len(listSnapshots(t, e)) != 4 {
		t.Fatal("--dry-run forgot something")
	}
	out := mustCoffer(t, e, "forget", "--keep-last", "2")
	if !strings.Contains(out, "forgot 2 snapshot") || !strings.Contains(out, "last") {
		t.Errorf("forget --keep-last 2 said:\n%s", out)
	}
	snaps := listSnapshots(t, e)
	if len(snaps) != 2 || snaps[0].ID != ids[2] || snaps[1].ID != ids[3] {
		t.Errorf("kept %+v, want the two newest", snaps)
	}
	failsWith(t, e, "not both", "forget", ids[3][:8], "--keep-last", "1")
	failsWith(t, e, "--keep-daily", "forget", "--keep-daily", "-5")
	failsWith(t, e, "name the snapshots", "forget")
	failsWith(t, e, "not found", "forget", "deadbeef")
}

// TestVaultProtection: vault set from the CLI, with the refusals a local
// vault gives: critical changes need a second person, immutability is
// one way, a locked vault cannot be loosened, the minimum retention keeps
// young snapshots; bad values change nothing. A single-user vault allows
// critical changes with --confirm.
func TestVaultProtection(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"), 0o644)
	id := backupJSON(t, e, src)

	if out := mustCoffer(t, e, "vault", "set", "--soft-delete-days", "30"); !strings.Contains(out, "soft-delete days 14 → 30") {
		t.Errorf("vault set said %q", out)
	}
	failsWith(t, e, "second person", "vault", "set", "--soft-delete-days", "14")
	failsWith(t, e, "second person", "vault", "set", "--soft-delete", "off")
	failsWith(t, e, "14 to 180", "vault", "set", "--soft-delete-days", "200")
	failsWith(t, e, "nothing to change", "vault", "set")
	failsWith(t, e, "enable", "vault", "set", "--immutability", "locked")
	// Refused, never wrapped into a short one (it once was: 0.29 s).
	failsWith(t, e, "at most 36500d", "vault", "set", "--min-retention", "200y")
	failsWith(t, e, "too long", "vault", "set", "--min-retention", "300y")

	mustCoffer(t, e, "vault", "set", "--min-retention", "30d")
	failsWith(t, e, "--min-retention 30d", "forget", id[:8])
	e.advance(31 * 24 * time.Hour)

	mustCoffer(t, e, "policy", "set", "--keep-daily", "7", "--keep-weekly", "4")
	mustCoffer(t, e, "vault", "set", "--immutability", "enabled")
	failsWith(t, e, "immutability is enabled", "vault", "set", "--min-retention", "7d")
	failsWith(t, e, "cannot be shortened", "policy", "set", "--keep-daily", "3", "--keep-weekly", "4")
	mustCoffer(t, e, "policy", "set", "--keep-daily", "14", "--keep-weekly", "4")
	failsWith(t, e, "cannot be undone", "vault", "set", "--immutability", "locked")
	mustCoffer(t, e, "vault", "set", "--immutability", "locked", "--confirm")
	failsWith(t, e, "locked", "vault", "set", "--immutability", "disabled")
	failsWith(t, e, "always-on", "vault", "set", "--soft-delete", "on")

	var show struct {
		Protection map[string]any `json:"protection"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "vault", "show", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	p := show.Protection
	if p["immutability"] != "locked" || p["soft_delete"] != "always-on" || p["soft_delete_days"] != float64(30) || p["min_retention"] != "30d" || p["policy"] == nil {
		t.Errorf("vault show protection: %v", p)
	}
	// Forgetting an old enough snapshot is still allowed (soft delete).
	mustCoffer(t, e, "forget", id[:8])
	log := mustCoffer(t, e, "vault", "log", "--json")
	var evs []struct {
		Event string `json:"event"`
		OK    bool   `json:"ok"`
	}
	if err := json.Unmarshal([]byte(log), &evs); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, ev := range evs {
		if !ev.OK {
			refused++
		}
	}
	if refused < 5 {
		t.Errorf("%d refusals in the vault log, want every refused change: %s", refused, log)
	}

	// A single-user vault: critical changes with --confirm.
	e2 := newEnv(t)
	if out := mustCoffer(t, e2, "vault", "create", "solo", "--single-user"); !strings.Contains(out, "single-user") {
		t.Errorf("vault create said %q", out)
	}
	failsWith(t, e2, "exists", "vault", "create", "solo")
	mustCoffer(t, e2, "vault", "set", "solo", "--soft-delete-days", "60")
	failsWith(t, e2, "--confirm", "vault", "set", "solo", "--soft-delete-days", "20")
	mustCoffer(t, e2, "vault", "set", "solo", "--soft-delete-days", "20", "--confirm")
	if out := mustCoffer(t, e2, "vault", "log", "--vault", "solo"); !strings.Contains(out, "critical") {
		t.Errorf("a confirmed critical change is not marked in the log:\n%s", out)
	}
}

// TestPruneWhileBackingUp runs backups and prunes at the same time on one
// vault; afterwards every snapshot passes check --read-data and restores.
func TestPruneWhileBackingUp(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	for i := range 3 {
		writeFile(t, filepath.Join(src, "f"), randBytes(uint64(i), 1<<20), 0o644)
		id := backupJSON(t, e, src)
		mustCoffer(t, e, "forget", id[:8])
	}
	e.advance(15 * 24 * time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	run := func(args ...string) {
		defer wg.Done()
		var out, errb bytes.Buffer
		code := runWith(t.Context(), args, strings.NewReader(""), &out, &errb, e.getenv, e.now)
		if code != exitOK && !strings.Contains(errb.String(), "another prune") {
			mu.Lock()
			failures = append(failures, strings.Join(args, " ")+": "+errb.String())
			mu.Unlock()
		}
	}
	for i := range 3 {
		// Backs up data the forgotten snapshots held: deduplication
		// races with prune condemning it.
		dir := filepath.Join(t.TempDir(), "b")
		writeFile(t, filepath.Join(dir, "f"), randBytes(uint64(i), 1<<20), 0o644)
		wg.Add(2)
		go run("backup", dir)
		go run("prune")
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	mustCoffer(t, e, "prune")
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check after backups and prunes at once: %s", out)
	}
	snaps := listSnapshots(t, e)
	if len(snaps) != 3 {
		t.Fatalf("%d snapshots, want 3", len(snaps))
	}
	for _, s := range snaps {
		mustCoffer(t, e, "restore", s.ID[:8], "--target", t.TempDir())
	}
}

// TestRemoteProtection: deletion protection on a vault server. Operators
// and readers get 403 for forget, prune, undelete and vault set; an owner
// forgets and undeletes; a critical change becomes a request that only a
// security approver (never the owner) approves, that expires, and that
// can be rejected; a locked vault refuses loosening; the server applies a
// stored policy daily; prune reclaims after the soft-delete period.
func TestRemoteProtection(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	src := filepath.Join(t.TempDir(), "src")
	var ids []string
	for i := range 3 {
		writeFile(t, filepath.Join(src, "f"), randBytes(uint64(i), 500_000), 0o644)
		ids = append(ids, backupJSON(t, e, src))
	}
	op := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-operator", "--name", "web01"))
	rd := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-reader", "--name", "dash"))
	mustCoffer(t, e, "forget", ids[0][:8])
	for _, tok := range []string{op, rd} {
		for _, args := range [][]string{{"forget", ids[1][:8]}, {"prune"}, {"undelete", ids[0][:8]}, {"vault", "set", "--soft-delete-days", "30"}, {"policy", "set", "--keep-last", "1"}} {
			failsWith(t, e, "forbidden", append(args, "--token", tok)...)
		}
	}
	failsWith(t, e, "server machine", "token", "create", "--role", "security-approver", "--name", "mallory", "--vault", srv.URL)

	var del []snapshotJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "snapshots", "--deleted", "--json")), &del); err != nil {
		t.Fatal(err)
	}
	if len(del) != 1 || del[0].ID != ids[0] || !strings.HasPrefix(del[0].DeletedBy, "token:") {
		t.Errorf("snapshots --deleted: %+v", del)
	}
	mustCoffer(t, e, "undelete", ids[0][:8])
	dst := t.TempDir()
	mustCoffer(t, e, "restore", ids[0][:8], "--target", dst)
	if got, _ := os.ReadFile(filepath.Join(dst, src, "f")); !bytes.Equal(got, randBytes(0, 500_000)) {
		t.Error("undeleted snapshot restores different data")
	}

	// Critical changes wait for a security approver.
	mustCoffer(t, e, "vault", "set", "--soft-delete-days", "30")
	settings := func() map[string]any {
		var show struct {
			Protection map[string]any `json:"protection"`
		}
		if err := json.Unmarshal([]byte(mustCoffer(t, e, "vault", "show", "--json")), &show); err != nil {
			t.Fatal(err)
		}
		return show.Protection
	}
	out := mustCoffer(t, e, "vault", "set", "--soft-delete-days", "14")
	req := requestID(t, out)
	if d := settings()["soft_delete_days"]; d != float64(30) {
		t.Fatalf("a critical change took effect before approval: %v", d)
	}
	if list := mustCoffer(t, e, "requests", "--vault", srv.URL); !strings.Contains(list, req) || !strings.Contains(list, "shortening soft delete") {
		t.Errorf("requests:\n%s", list)
	}
	failsWith(t, e, "forbidden", "approve", req, "--vault", srv.URL) // an owner cannot approve
	approver, _, err := server.IssueApproverToken(t.Context(), srv.DataDir, "alice", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	failsWith(t, e, "forbidden", "snapshots", "--token", approver) // approvers see no data
	if out := mustCoffer(t, e, "approve", req, "--vault", srv.URL, "--token", approver); !strings.Contains(out, "approved") {
		t.Errorf("approve said %q", out)
	}
	if d := settings()["soft_delete_days"]; d != float64(14) {
		t.Errorf("after approval soft delete is %v days", d)
	}
	failsWith(t, e, "not pending", "approve", req, "--vault", srv.URL, "--token", approver)

	// Rejected, and expired.
	req = requestID(t, mustCoffer(t, e, "vault", "set", "--soft-delete", "off"))
	if out := mustCoffer(t, e, "reject", req, "--vault", srv.URL, "--token", approver); !strings.Contains(out, "rejected") {
		t.Errorf("reject said %q", out)
	}
	if sd := settings()["soft_delete"]; sd != "on" {
		t.Errorf("a rejected change took effect: %v", sd)
	}
	req = requestID(t, mustCoffer(t, e, "vault", "set", "--soft-delete", "off"))
	srv.Clock.Add(int64(25 * time.Hour))
	failsWith(t, e, "expired", "approve", req, "--vault", srv.URL, "--token", approver)
	if sd := settings()["soft_delete"]; sd != "on" {
		t.Errorf("an expired request took effect: %v", sd)
	}

	// The stored policy, applied by the server at its daily run (03:00
	// UTC), not at once.
	mustCoffer(t, e, "policy", "set", "--keep-last", "1")
	if err := srv.Server.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if snaps := listSnapshots(t, e); len(snaps) != 3 {
		t.Errorf("the stored policy was applied before the daily run: %d snapshots live", len(snaps))
	}
	srv.Clock.Add(int64(26 * time.Hour))
	if err := srv.Server.Maintain(t.Context()); err != nil {
		t.Fatal(err)
	}
	snaps := listSnapshots(t, e)
	if len(snaps) != 1 || snaps[0].ID != ids[2] {
		t.Errorf("after the server applied keep-last 1: %+v", snaps)
	}
	if log := mustCoffer(t, e, "vault", "log"); !strings.Contains(log, "policy-applied") || !strings.Contains(log, "approve") || !strings.Contains(log, "reject") {
		t.Errorf("vault log:\n%s", log)
	}

	// Immutability is one way once locked.
	mustCoffer(t, e, "vault", "set", "--immutability", "enabled")
	failsWith(t, e, "cannot be undone", "vault", "set", "--immutability", "locked")
	mustCoffer(t, e, "vault", "set", "--immutability", "locked", "--confirm")
	failsWith(t, e, "locked", "vault", "set", "--immutability", "disabled")
	failsWith(t, e, "always-on", "vault", "set", "--soft-delete", "off")
	if p := settings(); p["immutability"] != "locked" || p["soft_delete"] != "always-on" {
		t.Errorf("after locking: %v", p)
	}

	failsWith(t, e, "cannot be shortened", "policy", "set", "--keep-last", "0", "--keep-daily", "1")

	// Prune after the soft-delete period.
	srv.Clock.Add(int64(15 * 24 * time.Hour))
	var rep struct {
		Expired []snapshotJSON `json:"expired_snapshots"`
		Deleted int            `json:"packs_deleted"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "prune", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Expired) != 2 || rep.Deleted == 0 {
		t.Errorf("prune on the server: %+v", rep)
	}
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check: %s", out)
	}
}

// TestLastOwnerNeedsApproval: revoking the last active owner token is a
// critical change; with another owner left it is not.
func TestLastOwnerNeedsApproval(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_VAULT", srv.URL)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	var toks []struct {
		ID   string `json:"id"`
		Role string `json:"role"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "token", "list", "--json")), &toks); err != nil || len(toks) != 1 {
		t.Fatalf("token list: %v %+v", err, toks)
	}
	first := toks[0].ID
	out := mustCoffer(t, e, "token", "revoke", first)
	req := requestID(t, out)
	if !strings.Contains(out, "last owner") {
		t.Errorf("token revoke of the last owner said %q", out)
	}
	mustCoffer(t, e, "token", "list") // the owner token still works
	approver, _, err := server.IssueApproverToken(t.Context(), srv.DataDir, "alice", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// An owner token issued by the first one is no second owner: revoking
	// the first revokes it too.
	minted := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "owner", "--name", "minted"))
	if out := mustCoffer(t, e, "token", "revoke", first, "--token", minted); !strings.Contains(out, "last owner") {
		t.Errorf("revoke with only a token it issued left: %q", out)
	}
	// An owner who logs in is one...
	cofferIn(t, e, "bob's long passphrase\n", "user", "create", "bob", "--password-stdin")
	mustCoffer(t, e, "role", "assign", "--principal", "bob", "--role", "owner")
	out, errOut, code := cofferIn(t, e, "bob's long passphrase\n", "login", "bob")
	if code != exitOK {
		t.Fatalf("login: %s", errOut)
	}
	second := strings.TrimSpace(out)
	// ...with whom revoking the first is ordinary...
	if out := mustCoffer(t, e, "token", "revoke", first, "--token", second); !strings.Contains(out, "revoked") {
		t.Errorf("revoke with another owner left: %q", out)
	}
	failsWith(t, e, "unknown, expired or revoked", "token", "list")
	failsWith(t, e, "unknown, expired or revoked", "token", "list", "--token", minted)
	// ...and the pending request, made by the token now revoked, is void:
	// approving it does nothing.
	failsWith(t, e, "void", "approve", req, "--token", approver)
	mustCoffer(t, e, "token", "list", "--token", second)
}

// TestVaultDelete: deleting a vault is critical (a request, approved by a
// security approver; a single-user local vault with --confirm) and
// forbidden while immutable with snapshots, also when immutability was
// enabled between the request and its approval.
func TestVaultDelete(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	for _, name := range []string{"prod", "tmp", "late"} {
		mustCoffer(t, e, "vault", "create", name, "--vault", srv.URL)
	}
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"), 0o644)
	for _, name := range []string{"prod", "tmp", "late"} {
		mustCoffer(t, e, "backup", src, "--vault", srv.URL+"/"+name)
	}
	approver, _, err := server.IssueApproverToken(t.Context(), srv.DataDir, "alice", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	req := requestID(t, mustCoffer(t, e, "vault", "delete", "tmp", "--vault", srv.URL))
	mustCoffer(t, e, "snapshots", "--vault", srv.URL+"/tmp") // still there
	if out := mustCoffer(t, e, "approve", req, "--vault", srv.URL, "--token", approver); !strings.Contains(out, "deleted") {
		t.Errorf("approve said %q", out)
	}
	failsWith(t, e, "not found", "snapshots", "--vault", srv.URL+"/tmp")
	if _, err := os.Stat(server.VaultDir(srv.DataDir, "tmp")); !os.IsNotExist(err) {
		t.Errorf("the deleted vault's store is still there: %v", err)
	}
	failsWith(t, e, "exists", "vault", "create", "tmp", "--vault", srv.URL)

	mustCoffer(t, e, "vault", "set", "--immutability", "enabled", "--vault", srv.URL+"/prod")
	failsWith(t, e, "immutability is enabled", "vault", "delete", "prod", "--vault", srv.URL)

	req = requestID(t, mustCoffer(t, e, "vault", "delete", "late", "--vault", srv.URL))
	mustCoffer(t, e, "vault", "set", "--immutability", "enabled", "--vault", srv.URL+"/late")
	failsWith(t, e, "could not be made", "approve", req, "--vault", srv.URL, "--token", approver)
	mustCoffer(t, e, "snapshots", "--vault", srv.URL+"/late")

	// Local vaults.
	l := newEnv(t)
	backupJSON(t, l, src)
	failsWith(t, l, "second person", "vault", "delete")
	mustCoffer(t, l, "vault", "create", "solo", "--single-user")
	failsWith(t, l, "--confirm", "vault", "delete", "solo")
	if out := mustCoffer(t, l, "vault", "delete", "solo", "--confirm"); !strings.Contains(out, "deleted") {
		t.Errorf("vault delete said %q", out)
	}
	if _, err := os.Stat(filepath.Join(l.home, "vaults", "solo")); !os.IsNotExist(err) {
		t.Errorf("the local vault is still there: %v", err)
	}
}

// TestForgetPolicyKeepsProtected: a policy given with --keep-* flags
// treats snapshots younger than the minimum retention as the daily run and
// forget --policy do: they stay and are listed, and the others the policy
// does not keep are forgotten (a dry run shows the same and changes
// nothing).
func TestForgetPolicyKeepsProtected(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"), 0o644)
	old := backupJSON(t, e, src)
	e.advance(40 * 24 * time.Hour)
	writeFile(t, filepath.Join(src, "f"), []byte("data 2"), 0o644)
	young := backupJSON(t, e, src)
	e.advance(time.Hour)
	writeFile(t, filepath.Join(src, "f"), []byte("data 3"), 0o644)
	newest := backupJSON(t, e, src)
	mustCoffer(t, e, "vault", "set", "--min-retention", "30d")

	for _, dry := range []bool{true, false} {
		args := []string{"forget", "--keep-last", "1", "--json"}
		if dry {
			args = append(args, "--dry-run")
		}
		var r struct {
			DryRun    bool                  `json:"dry_run"`
			Forgotten []struct{ ID string } `json:"forgotten"`
			Protected []struct{ ID string } `json:"protected"`
		}
		if err := json.Unmarshal([]byte(mustCoffer(t, e, args...)), &r); err != nil {
			t.Fatal(err)
		}
		if r.DryRun != dry || len(r.Forgotten) != 1 || r.Forgotten[0].ID != old || len(r.Protected) != 1 || r.Protected[0].ID != young {
			t.Fatalf("dry run %v: forgot %v, protected %v; want forgot %s, protected %s", dry, r.Forgotten, r.Protected, old, young)
		}
		var list []struct{ ID string }
		if err := json.Unmarshal([]byte(mustCoffer(t, e, "snapshots", "--json")), &list); err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, s := range list {
			listed[s.ID] = true
		}
		if listed[old] != dry || !listed[young] || !listed[newest] {
			t.Errorf("dry run %v: listed %v (oldest %s, young %s, newest %s)", dry, listed, old, young, newest)
		}
	}
	out := mustCoffer(t, e, "forget", "--keep-last", "1", "--dry-run")
	if !strings.Contains(out, "minimum retention") || !strings.Contains(out, "would forget no snapshots") {
		t.Errorf("forget --dry-run said %q", out)
	}
}
