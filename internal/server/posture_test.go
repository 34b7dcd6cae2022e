package server_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/posture"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// postureOf fetches vault name's report as token and checks its signature
// with the server's audit key.
func (a *arena) postureOf(token, name, since string) *posture.Report {
	a.t.Helper()
	path := "/v1/vaults/" + name + "/posture"
	if since != "" {
		path += "?since=" + since
	}
	b := a.mustStatus(http.StatusOK, "GET", path, token, nil)
	r, err := posture.Verify(b, a.env.Server.AuditVerifierKey())
	if err != nil {
		a.t.Fatalf("the server's report does not verify: %v\n%s", err, b)
	}
	if len(r.Vaults) != 1 || r.Vaults[0].Name != name || r.Mode != "server" {
		a.t.Fatalf("report of %+v", r.Vaults)
	}
	return r
}

func checkOf(t testing.TB, r *posture.Report, id string) posture.Check {
	t.Helper()
	for _, c := range r.Vaults[0].Checks {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("no check %s", id)
	return posture.Check{}
}

func wantCheck(t testing.TB, r *posture.Report, id string, want posture.Status, remedy string) posture.Check {
	t.Helper()
	c := checkOf(t, r, id)
	if c.Status != want {
		t.Errorf("%s: %s (%s), want %s", id, c.Status, c.Summary, want)
	}
	if remedy != "" && !strings.Contains(c.Remediation, remedy) {
		t.Errorf("%s: remediation %q lacks %q", id, c.Remediation, remedy)
	}
	return c
}

func evidenceHas(t testing.TB, c posture.Check, want string) {
	t.Helper()
	var all []string
	for _, e := range c.Evidence {
		all = append(all, e.Fact+": "+e.Value+" ["+e.Source+"]")
	}
	if !strings.Contains(strings.Join(all, "\n"), want) {
		t.Errorf("%s: evidence lacks %q:\n%s", c.ID, want, strings.Join(all, "\n"))
	}
}

// TestPostureServerStates builds a server vault in each interesting state
// and reads each check's status and remediation from the signed report.
func TestPostureServerStates(t *testing.T) {
	ctx := context.Background()
	t.Run("platform key, fresh backup, checked", func(t *testing.T) {
		a := newArena(t)
		r := a.postureOf(a.env.OwnerToken, "a", "")
		// Nothing backed up yet.
		wantCheck(t, r, posture.CheckRPO, posture.Fail, "coffer backup")
		wantCheck(t, r, posture.CheckSourceEncrypt, posture.NA, "")
		wantCheck(t, r, posture.CheckVerified, posture.Warn, "--read-data")

		src := t.TempDir()
		writeTree(t, src, map[string][]byte{"f": randomBytes(1, 1000)})
		agentTok := a.addSource("db1")
		snap := a.backupAs(agentTok, src, "db1")
		if _, err := a.owner.Vault("a").Check(ctx, true, nil); err != nil {
			t.Fatal(err)
		}
		r = a.postureOf(a.env.OwnerToken, "a", "")
		wantCheck(t, r, posture.CheckAtRest, posture.Pass, "")
		c := wantCheck(t, r, posture.CheckKeySource, posture.Pass, "")
		evidenceHas(t, c, "platform-managed")
		wantCheck(t, r, posture.CheckKeyReachable, posture.Pass, "")
		c = wantCheck(t, r, posture.CheckKEKRotation, posture.Pass, "")
		evidenceHas(t, c, "key encryption key created")
		wantCheck(t, r, posture.CheckDEKRotation, posture.Pass, "")
		c = wantCheck(t, r, posture.CheckTLSMinimum, posture.Pass, "")
		evidenceHas(t, c, "TLS 1.2")
		wantCheck(t, r, posture.CheckTLSCert, posture.Pass, "")
		wantCheck(t, r, posture.CheckSoftDelete, posture.Pass, "")
		wantCheck(t, r, posture.CheckImmutability, posture.Warn, "--immutability")
		wantCheck(t, r, posture.CheckMinRetention, posture.Warn, "--min-retention")
		wantCheck(t, r, posture.CheckMUA, posture.Pass, "")
		c = wantCheck(t, r, posture.CheckRPO, posture.Pass, "")
		evidenceHas(t, c, snap.ID.String())
		evidenceHas(t, c, "written by agent:db1") // the writer, from the audit log
		wantCheck(t, r, posture.CheckVerified, posture.Pass, "")
		wantCheck(t, r, posture.CheckAudit, posture.Pass, "")
		// Snapshots carry no source report yet: "not reported", flagged.
		c = wantCheck(t, r, posture.CheckSourceEncrypt, posture.Warn, "reports its volumes")
		evidenceHas(t, c, "not reported")
		wantCheck(t, r, posture.CheckLocalCopies, posture.Warn, "")

		// A day and more later, the backup is beyond the RPO, and the
		// posture record kept shows the change.
		a.env.Clock.Add(int64(26 * time.Hour))
		r = a.postureOf(a.env.OwnerToken, "a", "90d")
		wantCheck(t, r, posture.CheckRPO, posture.Fail, "schedule")
		var changed bool
		for _, ch := range r.Vaults[0].Changes {
			if ch.Check == posture.CheckRPO && ch.From == posture.Pass && ch.To == posture.Fail {
				changed = true
			}
		}
		if !changed || r.Vaults[0].Records < 2 {
			t.Errorf("history: %d records, changes %+v", r.Vaults[0].Records, r.Vaults[0].Changes)
		}
	})
	t.Run("soft delete off, then always-on and locked", func(t *testing.T) {
		a := newArena(t)
		off, on, locked, en := "off", "always-on", "locked", "enabled"
		approver := a.roleToken("security-approver", "")
		st, out := a.call("POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{SoftDelete: &off})
		var res api.SettingsResult
		if err := json.Unmarshal(out, &res); st != http.StatusAccepted || err != nil || res.Request == nil {
			t.Fatalf("soft delete off: %d %s", st, out)
		}
		a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+res.Request.ID+"/approve", approver, nil)
		r := a.postureOf(a.env.OwnerToken, "a", "")
		wantCheck(t, r, posture.CheckSoftDelete, posture.Fail, "--soft-delete on")
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{SoftDelete: &on})
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{Immutability: &en})
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{Immutability: &locked})
		days := int64(30 * 24 * 3600)
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{MinRetentionSeconds: &days})
		r = a.postureOf(a.env.OwnerToken, "a", "")
		c := wantCheck(t, r, posture.CheckSoftDelete, posture.Pass, "")
		if !strings.Contains(c.Summary, "always on") {
			t.Errorf("always-on not noted: %q", c.Summary)
		}
		wantCheck(t, r, posture.CheckImmutability, posture.Pass, "")
		evidenceHas(t, checkOf(t, r, posture.CheckImmutability), "locked")
		wantCheck(t, r, posture.CheckMinRetention, posture.Pass, "")
		// The change from fail to pass is on record.
		var changed bool
		for _, ch := range r.Vaults[0].Changes {
			changed = changed || ch.Check == posture.CheckSoftDelete && ch.From == posture.Fail && ch.To == posture.Pass
		}
		if !changed {
			t.Errorf("soft delete's change is not in the history: %+v", r.Vaults[0].Changes)
		}
	})
	t.Run("customer key, then unreachable", func(t *testing.T) {
		dir := t.TempDir()
		uri := rsaKeyAt(t, dir)
		a := newArenaWith(t, servertest.Options{Configure: func(o *server.Options) {
			o.KeyDirs = []string{dir}
			o.KeyTTL = time.Millisecond // the key is unwrapped again at each request
		}})
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/key/use-cmk", a.roleToken("key-officer", ""), api.UseCMK{URI: uri})
		officer := a.roleToken("key-officer", "a")
		r := a.postureOf(officer, "a", "")
		c := wantCheck(t, r, posture.CheckKeySource, posture.Pass, "")
		evidenceHas(t, c, "customer-managed")
		evidenceHas(t, c, "rsa-file")
		wantCheck(t, r, posture.CheckKEKRotation, posture.NA, "key manager")
		wantCheck(t, r, posture.CheckKeyReachable, posture.Pass, "")

		if err := os.Remove(strings.TrimPrefix(uri, "rsa-file://")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		r = a.postureOf(officer, "a", "")
		wantCheck(t, r, posture.CheckKeyReachable, posture.Fail, "grant wrap/unwrap")
		// What the store says of the keys is still reported.
		wantCheck(t, r, posture.CheckKeySource, posture.Pass, "")
		wantCheck(t, r, posture.CheckSoftDelete, posture.Fail, "key reachable")
	})
}

// TestPostureDailyRecordAudited: each record the server keeps is an audit
// entry carrying its hash, and the audit log still verifies.
func TestPostureDailyRecordAudited(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	if err := a.env.Server.RecordPostures(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.env.Server.RecordPostures(ctx); err != nil { // once a day
		t.Fatal(err)
	}
	es, err := a.owner.AuditLog(ctx, url.Values{"op": {server.OpPostureRecord}})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 {
		t.Fatalf("%d posture records after two runs on one day, want 1", len(es))
	}
	e := es[0]
	rec, err := posture.ParseRecord([]byte(e.Params["record"]), e.Params["sha256"])
	if err != nil || e.Vault != "a" || e.Principal != "server" || len(rec.Status) != len(posture.CheckIDs()) {
		t.Fatalf("record entry %+v: %v", e, err)
	}
	a.env.Clock.Add(int64(25 * time.Hour))
	if err := a.env.Server.RecordPostures(ctx); err != nil {
		t.Fatal(err)
	}
	if es, _ = a.owner.AuditLog(ctx, url.Values{"op": {server.OpPostureRecord}}); len(es) != 2 {
		t.Fatalf("%d posture records after a second day, want 2", len(es))
	}
	if err := a.env.Server.CheckpointAudit(ctx); err != nil {
		t.Fatal(err)
	}
	r := a.postureOf(a.env.OwnerToken, "a", "")
	wantCheck(t, r, posture.CheckAudit, posture.Pass, "")
}

// rsaKeyAt writes a new RSA key into dir and returns its rsa-file URI.
func rsaKeyAt(t *testing.T, dir string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cmk.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	return "rsa-file://" + path
}
