package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/coffer-backup/coffer/internal/posture"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// postureJSON runs `coffer posture --format json` and parses the report.
func postureJSON(t *testing.T, e *testEnv, args ...string) *posture.Report {
	t.Helper()
	out := mustCoffer(t, e, append([]string{"posture", "--format", "json"}, args...)...)
	r, _, err := posture.Open([]byte(out))
	if err != nil {
		t.Fatalf("posture --format json: %v\n%s", err, out)
	}
	return r
}

func wantStatus(t *testing.T, r *posture.Report, id string, want posture.Status, remedy string) posture.Check {
	t.Helper()
	for _, c := range r.Vaults[0].Checks {
		if c.ID != id {
			continue
		}
		if c.Status != want {
			t.Errorf("%s: %s (%s), want %s", id, c.Status, c.Summary, want)
		}
		if remedy != "" && !strings.Contains(c.Remediation, remedy) {
			t.Errorf("%s: remediation %q lacks %q", id, c.Remediation, remedy)
		}
		return c
	}
	t.Fatalf("no check %s", id)
	return posture.Check{}
}

// TestPostureLocalStates: a local vault in each interesting state, as a
// user reads it with coffer posture.
func TestPostureLocalStates(t *testing.T) {
	t.Run("platform key, soft delete off, then locked", func(t *testing.T) {
		e := newEnv(t)
		data := smallData(t)
		e.setVolumes(fixtureMachine(t, data)) // the source's data on a LUKS2 volume
		backupJSON(t, e, data)
		r := postureJSON(t, e)
		if r.Mode != "local" || r.Signed || !strings.Contains(r.UnsignedReason, "no server") {
			t.Errorf("a local report: mode %q signed %v, reason %q", r.Mode, r.Signed, r.UnsignedReason)
		}
		c := wantStatus(t, r, posture.CheckKeySource, posture.Pass, "")
		if !strings.Contains(c.Summary, "platform-managed") {
			t.Errorf("key source: %q", c.Summary)
		}
		wantStatus(t, r, posture.CheckKeyReachable, posture.Pass, "")
		wantStatus(t, r, posture.CheckKEKRotation, posture.Pass, "")
		wantStatus(t, r, posture.CheckTLSMinimum, posture.NA, "")
		wantStatus(t, r, posture.CheckAudit, posture.NA, "")
		wantStatus(t, r, posture.CheckRPO, posture.Pass, "")
		wantStatus(t, r, posture.CheckSourceEncrypt, posture.Pass, "")
		wantStatus(t, r, posture.CheckLocalCopies, posture.NA, "")
		wantStatus(t, r, posture.CheckMUA, posture.Warn, "coffer server")
		wantStatus(t, r, posture.CheckSoftDelete, posture.Pass, "")

		mustCoffer(t, e, "vault", "set", "--soft-delete", "off", "--confirm")
		r = postureJSON(t, e)
		wantStatus(t, r, posture.CheckSoftDelete, posture.Fail, "--soft-delete on")

		mustCoffer(t, e, "vault", "set", "--soft-delete", "always-on", "--confirm")
		mustCoffer(t, e, "vault", "set", "--immutability", "enabled", "--confirm")
		mustCoffer(t, e, "vault", "set", "--immutability", "locked", "--confirm")
		mustCoffer(t, e, "vault", "set", "--min-retention", "30d", "--confirm")
		r = postureJSON(t, e)
		c = wantStatus(t, r, posture.CheckSoftDelete, posture.Pass, "")
		if !strings.Contains(c.Summary, "always on") {
			t.Errorf("always-on not noted: %q", c.Summary)
		}
		wantStatus(t, r, posture.CheckImmutability, posture.Pass, "")
		wantStatus(t, r, posture.CheckMinRetention, posture.Pass, "")

		// The text report says the same, and that it is unsigned.
		out := mustCoffer(t, e, "posture")
		for _, want := range []string{"UNSIGNED", "[PASS] protect.immutability", "[PASS] source.encryption", "[WARN] protect.multi-user-authorization", "[N/A ] tls.minimum", "→ "} {
			if !strings.Contains(out, want) {
				t.Errorf("text report lacks %q:\n%s", want, out)
			}
		}
		// HTML and Markdown to files, private.
		for _, f := range []string{"html", "md"} {
			path := filepath.Join(t.TempDir(), "report."+f)
			mustCoffer(t, e, "posture", "--format", f, "--out", path)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("%s written with mode %v", path, fi.Mode().Perm())
			}
			if !strings.Contains(string(b), "immutability") || !strings.Contains(string(b), "At rest, in the vault") || !strings.Contains(string(b), "UNSIGNED") {
				t.Errorf("%s report lacks its checks or scope", f)
			}
		}
		failsWith(t, e, "unknown --format", "posture", "--format", "pdf")
	})
	t.Run("customer key, then unreachable", func(t *testing.T) {
		e := newEnv(t)
		backupJSON(t, e, smallData(t))
		uri := rsaKeyFile(t, t.TempDir())
		mustCoffer(t, e, "key", "use-cmk", uri, "--confirm")
		r := postureJSON(t, e)
		c := wantStatus(t, r, posture.CheckKeySource, posture.Pass, "")
		if !strings.Contains(c.Summary, "customer-managed") || !strings.Contains(c.Summary, "rsa-file") {
			t.Errorf("key source: %q", c.Summary)
		}
		wantStatus(t, r, posture.CheckKEKRotation, posture.NA, "")
		if err := os.Remove(strings.TrimPrefix(uri, "rsa-file://")); err != nil {
			t.Fatal(err)
		}
		r = postureJSON(t, e)
		wantStatus(t, r, posture.CheckKeyReachable, posture.Fail, "grant wrap/unwrap")
		wantStatus(t, r, posture.CheckKeySource, posture.Pass, "")
		wantStatus(t, r, posture.CheckSoftDelete, posture.Fail, "key reachable")
		// The snapshots are still listed (the backup is within the RPO),
		// but the reports they seal cannot be read: unknown, and why.
		wantStatus(t, r, posture.CheckRPO, posture.Pass, "")
		c = wantStatus(t, r, posture.CheckSourceEncrypt, posture.Warn, "coffer agent status")
		if ev := evidenceWith(c); !strings.Contains(ev, "volumes: not read: the vault's key is out of reach") {
			t.Errorf("source.encryption evidence:\n%s", ev)
		}
	})
}

// TestPostureRemote: the server's report through the CLI, saved as JSON,
// then verified offline against the key an audit verify pinned.
func TestPostureRemote(t *testing.T) {
	srv, e := remoteVaultEnv(t, servertest.Options{})
	backupJSON(t, e, smallData(t))
	r := postureJSON(t, e, "--since", "30d")
	if !r.Signed || r.Mode != "server" || r.HistorySince == nil {
		t.Errorf("server report: signed %v mode %q history %v", r.Signed, r.Mode, r.HistorySince)
	}
	wantStatus(t, r, posture.CheckTLSMinimum, posture.Pass, "")
	wantStatus(t, r, posture.CheckAudit, posture.Pass, "")
	wantStatus(t, r, posture.CheckMUA, posture.Pass, "")

	file := filepath.Join(t.TempDir(), "report.json")
	mustCoffer(t, e, "posture", "--format", "json", "--out", file)
	// Nothing pinned yet and no key given: refused, never the report's word.
	failsWith(t, e, "no verifier key is pinned", "audit", "verify", "--report", file)
	mustCoffer(t, e, "audit", "verify", "--vault", srv.URL) // pins the server's key
	out := mustCoffer(t, e, "audit", "verify", "--report", file)
	if !strings.Contains(out, "signature verifies") || !strings.Contains(out, "vault prod") {
		t.Errorf("audit verify --report said %q", out)
	}
	mustCoffer(t, e, "audit", "verify", "--report", file, "--verifier-key", srv.Server.AuditVerifierKey())
	// Text and history.
	out = mustCoffer(t, e, "posture", "--since", "7d")
	for _, want := range []string{"signed by the server's audit key", "Controls since", "PCI DSS v4.0 4.2"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	failsWith(t, e, "since", "posture", "--since", "1000d")
}

// evidenceWith is the evidence lines of c, one per fact.
func evidenceWith(c posture.Check) string {
	var b strings.Builder
	for _, e := range c.Evidence {
		fmt.Fprintf(&b, "%s: %s [%s]\n", e.Fact, e.Value, e.Source)
	}
	return b.String()
}

// TestPostureSourceEncryptionEndToEnd: agents back up through a server
// from a machine whose volumes the agent's own detection reads (a fixture
// /proc and /sys: a plain partition, and LUKS2 mappings); each snapshot
// carries that report, and the server's source.encryption check reflects
// it, host by host, with its remediation, until the flagged disk is
// encrypted; a source that stops reporting within the RPO is flagged.
func TestPostureSourceEncryptionEndToEnd(t *testing.T) {
	srv, e := remoteVaultEnv(t, servertest.Options{})
	web := strings.TrimSpace(mustCoffer(t, e, "source", "add", "web"))
	db := strings.TrimSpace(mustCoffer(t, e, "source", "add", "db"))
	webDir, dbDir := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(webDir, "index.html"), []byte("<p>hi</p>"), 0o644)
	os.WriteFile(filepath.Join(dbDir, "db.sqlite"), []byte("rows"), 0o644)

	// db's data is on a LUKS2 volume, web's on the plain root partition.
	e.setVolumes(fixtureMachine(t, dbDir))
	dbSnap := backupJSON(t, e, dbDir, "--token", db)
	r := postureJSON(t, e)
	c := wantStatus(t, r, posture.CheckSourceEncrypt, posture.Pass, "")
	ev := evidenceWith(c)
	for _, want := range []string{"source db: newest snapshot " + dbSnap, "written by agent:db", "source db volume: encrypted (luks2) — path " + dbDir + " on " + dbDir + " (/dev/mapper/crypt0, ext4)", "[snapshot source report (agent)]"} {
		if !strings.Contains(ev, want) {
			t.Errorf("evidence lacks %q:\n%s", want, ev)
		}
	}
	if c.Remediation != "" {
		t.Errorf("a passing check has a remediation: %q", c.Remediation)
	}

	webSnap := backupJSON(t, e, webDir, "--token", web)
	r = postureJSON(t, e)
	c = wantStatus(t, r, posture.CheckSourceEncrypt, posture.Fail, "Encrypt the source volumes flagged (LUKS/dm-crypt, fscrypt, BitLocker, FileVault)")
	if c.Summary != "unencrypted volume on web" {
		t.Errorf("summary %q", c.Summary)
	}
	ev = evidenceWith(c)
	for _, want := range []string{"source web: newest snapshot " + webSnap, "written by agent:web", "source web volume: unencrypted — path " + webDir + " on / (/dev/sda1, ext4): sda1 (partition) of sda: plain disk", "source db volume: encrypted (luks2)"} {
		if !strings.Contains(ev, want) {
			t.Errorf("evidence lacks %q:\n%s", want, ev)
		}
	}
	if r.Vaults[0].Status != posture.Fail {
		t.Errorf("vault status %s with an unencrypted source", r.Vaults[0].Status)
	}
	// What the user reads: the text report, and the agent's own view.
	out := mustCoffer(t, e, "posture")
	for _, want := range []string{"[FAIL] source.encryption", "unencrypted volume on web", "→ Encrypt the source volumes flagged"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	var st agentStatus
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "agent", "status", "--json", "--token", web, webDir)), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Paths) != 1 || st.Paths[0].Volume.Encryption != "unencrypted" || st.Paths[0].LastBackup == nil {
		t.Errorf("agent status: %+v", st.Paths)
	}

	// web's disk is encrypted (its data moves to a LUKS2 volume); its next
	// backup reports so, and the check passes again.
	e.setVolumes(fixtureMachine(t, dbDir, webDir))
	backupJSON(t, e, webDir, "--token", web)
	r = postureJSON(t, e, "--since", "30d")
	c = wantStatus(t, r, posture.CheckSourceEncrypt, posture.Pass, "")
	if c.Summary != "all 2 sources report encrypted volumes, within the 24h RPO" {
		t.Errorf("summary %q", c.Summary)
	}
	var changed bool
	for _, ch := range r.Vaults[0].Changes {
		changed = changed || ch.Check == posture.CheckSourceEncrypt && ch.From == posture.Fail && ch.To == posture.Pass
	}
	if !changed {
		t.Errorf("the change from fail to pass is not in the history: %+v", r.Vaults[0].Changes)
	}

	// A day and more later, neither source has reported within the RPO:
	// their reports are flagged as stale, and the RPO check fails.
	srv.Clock.Add(int64(26 * time.Hour))
	r = postureJSON(t, e)
	c = wantStatus(t, r, posture.CheckSourceEncrypt, posture.Warn, "a fresh backup")
	if !strings.Contains(c.Summary, "last reported more than 24h ago by db, web") {
		t.Errorf("summary %q", c.Summary)
	}
	wantStatus(t, r, posture.CheckRPO, posture.Fail, "keep a schedule within the RPO")
}

// TestPostureSourceEncryptionLocal: the same through a local vault.
func TestPostureSourceEncryptionLocal(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "laptop")
	plain, enc := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(plain, "a"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(enc, "b"), []byte("b"), 0o644)
	e.setVolumes(fixtureMachine(t, enc))
	backupJSON(t, e, enc)
	wantStatus(t, postureJSON(t, e), posture.CheckSourceEncrypt, posture.Pass, "")
	// One path of the newest snapshot on a plain disk fails the host.
	backupJSON(t, e, enc, plain)
	c := wantStatus(t, postureJSON(t, e), posture.CheckSourceEncrypt, posture.Fail, "Encrypt the source volumes flagged")
	if c.Summary != "unencrypted volume on laptop" || !strings.Contains(evidenceWith(c), "unencrypted — path "+plain) {
		t.Errorf("summary %q, evidence:\n%s", c.Summary, evidenceWith(c))
	}
}

// tamper rewrites the report in file with edit applied to its decoded
// JSON, as someone with the file and an editor would, and returns the
// new file.
func tamper(t *testing.T, file string, edit func(env map[string]any)) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]any
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	edit(env)
	out, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tampered.json")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAttackPostureReportTampered: a server's saved report, edited to
// look better (a failing check made to pass, the vault's status, the
// date, a remediation removed), stripped of its signature, or re-signed
// with another key, fails coffer audit verify --report; the untouched
// report, re-indented, verifies. A local vault's report is refused as
// unsigned, and says why.
func TestAttackPostureReportTampered(t *testing.T) {
	srv, e := remoteVaultEnv(t, servertest.Options{})
	backupJSON(t, e, smallData(t))
	mustCoffer(t, e, "audit", "verify", "--vault", srv.URL) // pins the server's key
	file := filepath.Join(t.TempDir(), "report.json")
	mustCoffer(t, e, "posture", "--format", "json", "--out", file)
	mustCoffer(t, e, "audit", "verify", "--report", file)
	mustCoffer(t, e, "audit", "verify", "--report", tamper(t, file, func(map[string]any) {}))

	vault0 := func(env map[string]any) map[string]any {
		return env["report"].(map[string]any)["vaults"].([]any)[0].(map[string]any)
	}
	notPassing := func(env map[string]any) map[string]any {
		for _, c := range vault0(env)["checks"].([]any) {
			if c := c.(map[string]any); c["status"] != "pass" && c["status"] != "n/a" {
				return c
			}
		}
		t.Fatal("the report has no failing or warning check to hide")
		return nil
	}
	for name, edit := range map[string]func(env map[string]any){
		"check made to pass": func(env map[string]any) {
			c := notPassing(env)
			c["status"] = "pass"
			delete(c, "remediation")
		},
		"vault status": func(env map[string]any) { vault0(env)["status"] = "pass" },
		"generated later": func(env map[string]any) {
			env["report"].(map[string]any)["generated"] = "2031-01-01T00:00:00Z"
		},
		"evidence changed": func(env map[string]any) {
			c := notPassing(env)
			c["evidence"].([]any)[0].(map[string]any)["value"] = "fine"
		},
		"field added": func(env map[string]any) { env["report"].(map[string]any)["auditor_approved"] = true },
		"signature removed": func(env map[string]any) {
			env["signature"] = nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			failsWith(t, e, "the posture report does not verify", "audit", "verify", "--report", tamper(t, file, edit))
		})
	}

	// Re-signed: the attacker's edits signed with a key of their own, which
	// they name in the report. The pinned key is what counts.
	skey, vkey, err := note.GenerateKey(rand.Reader, "coffer-audit")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	b, _ := os.ReadFile(file)
	r, _, err := posture.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range r.Vaults[0].Checks {
		r.Vaults[0].Checks[i].Status, r.Vaults[0].Checks[i].Remediation = posture.Pass, ""
	}
	r.Vaults[0].Status = posture.Pass
	forged, err := posture.Seal(r, signer)
	if err != nil {
		t.Fatal(err)
	}
	forgedFile := filepath.Join(t.TempDir(), "forged.json")
	os.WriteFile(forgedFile, forged, 0o600)
	failsWith(t, e, "not by the verifier key", "audit", "verify", "--report", forgedFile)
	failsWith(t, e, "differs from the key pinned", "audit", "verify", "--report", forgedFile, "--verifier-key", vkey)

	// A local vault's report: unsigned, and it says why; verify refuses it.
	l := newEnv(t)
	backupJSON(t, l, smallData(t))
	local := filepath.Join(t.TempDir(), "local.json")
	mustCoffer(t, l, "posture", "--format", "json", "--out", local)
	lb, _ := os.ReadFile(local)
	lr, sig, err := posture.Open(lb)
	if err != nil || sig != nil || lr.Signed || lr.UnsignedReason != unsignedLocal {
		t.Fatalf("local report: signed %v, signature %v, reason %q (%v)", lr.Signed, sig, lr.UnsignedReason, err)
	}
	for _, f := range []string{"text", "md", "html"} {
		if out := mustCoffer(t, l, "posture", "--format", f); !strings.Contains(out, "UNSIGNED") || !strings.Contains(out, "no audit key") {
			t.Errorf("the %s report does not say it is unsigned and why", f)
		}
	}
	failsWith(t, l, "the report is not signed", "audit", "verify", "--report", local, "--verifier-key", srv.Server.AuditVerifierKey())
}

// TestAttackPostureCatalogEdited: a catalog writer edits the snapshot list
// (here the unencrypted host's newest snapshot is moved to look like
// another host's, to hide it). The sources' reports are no longer proved,
// and source.encryption fails, saying so, instead of passing.
func TestAttackPostureCatalogEdited(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "laptop")
	plain := t.TempDir()
	os.WriteFile(filepath.Join(plain, "a"), []byte("a"), 0o644)
	e.setVolumes(fixtureMachine(t))
	id := backupJSON(t, e, plain)
	wantStatus(t, postureJSON(t, e), posture.CheckSourceEncrypt, posture.Fail, "Encrypt")

	mustExec(t, catalogSQL(t, e), `UPDATE snapshots SET host = 'vault-host' WHERE hex(id) = upper(?)`, id)
	r := postureJSON(t, e)
	c := wantStatus(t, r, posture.CheckSourceEncrypt, posture.Fail, "coffer check")
	if !strings.Contains(c.Summary, "cannot be verified") || !strings.Contains(evidenceWith(c), id[:8]) {
		t.Errorf("summary %q, evidence:\n%s", c.Summary, evidenceWith(c))
	}
	wantStatus(t, r, posture.CheckRPO, posture.Fail, "coffer check")
}

// TestPostureRemoteStates: a server's vault in each state, set and read
// with the CLI as its owner, approver and key officer would: soft delete
// off (after approval), then always-on, locked and with a minimum
// retention; a customer key, then revoked. Roles without posture.read
// are refused.
func TestPostureRemoteStates(t *testing.T) {
	keyDir := t.TempDir()
	srv, e := remoteVaultEnv(t, servertest.Options{Configure: func(o *server.Options) {
		o.KeyTTL = time.Hour
		o.KeyDirs = []string{keyDir}
	}})
	backupJSON(t, e, smallData(t))
	approver, _, err := server.IssueApproverToken(t.Context(), srv.DataDir, "alice", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	req := requestID(t, mustCoffer(t, e, "vault", "set", "--soft-delete", "off"))
	wantStatus(t, postureJSON(t, e), posture.CheckSoftDelete, posture.Pass, "") // not before approval
	mustCoffer(t, e, "approve", req, "--vault", srv.URL, "--token", approver)
	r := postureJSON(t, e, "--token", approver) // the approver reads the evidence it judges on
	wantStatus(t, r, posture.CheckSoftDelete, posture.Fail, "--soft-delete on")
	wantStatus(t, r, posture.CheckImmutability, posture.Warn, "--immutability enabled")
	wantStatus(t, r, posture.CheckMinRetention, posture.Warn, "--min-retention 30d")
	wantStatus(t, r, posture.CheckMUA, posture.Pass, "")

	// One-way changes ask for --confirm even on a server.
	for _, args := range [][]string{{"--soft-delete", "always-on", "--confirm"}, {"--immutability", "enabled"}, {"--immutability", "locked", "--confirm"}, {"--min-retention", "30d"}} {
		mustCoffer(t, e, append([]string{"vault", "set"}, args...)...)
	}
	r = postureJSON(t, e, "--since", "30d")
	c := wantStatus(t, r, posture.CheckSoftDelete, posture.Pass, "")
	if !strings.Contains(c.Summary, "always on") {
		t.Errorf("always-on not noted: %q", c.Summary)
	}
	if c := wantStatus(t, r, posture.CheckImmutability, posture.Pass, ""); !strings.Contains(c.Summary, "locked") {
		t.Errorf("immutability: %q", c.Summary)
	}
	wantStatus(t, r, posture.CheckMinRetention, posture.Pass, "")
	var changed bool
	for _, ch := range r.Vaults[0].Changes {
		changed = changed || ch.Check == posture.CheckSoftDelete && ch.From == posture.Fail && ch.To == posture.Pass
	}
	if !changed {
		t.Errorf("soft delete's change is not in the history: %+v", r.Vaults[0].Changes)
	}

	// A customer-managed key, then revoked (the key file moved away, the
	// server's unwrapped keys past their time to live).
	uri := rsaKeyFile(t, keyDir)
	// With immutability locked, the switch waits for the approver.
	mustCoffer(t, e, "approve", requestID(t, mustCoffer(t, e, "key", "use-cmk", uri)), "--vault", srv.URL, "--token", approver)
	r = postureJSON(t, e)
	if c := wantStatus(t, r, posture.CheckKeySource, posture.Pass, ""); !strings.Contains(c.Summary, "customer-managed") {
		t.Errorf("key source: %q", c.Summary)
	}
	wantStatus(t, r, posture.CheckKeyReachable, posture.Pass, "")
	wantStatus(t, r, posture.CheckKEKRotation, posture.NA, "key manager")
	path := strings.TrimPrefix(uri, "rsa-file://")
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	srv.Clock.Add(int64(2 * time.Hour))
	r = postureJSON(t, e)
	wantStatus(t, r, posture.CheckKeyReachable, posture.Fail, "grant wrap/unwrap")
	wantStatus(t, r, posture.CheckSoftDelete, posture.Fail, "key reachable")
	out := mustCoffer(t, e, "posture")
	for _, want := range []string{"[FAIL] key.reachable", "→ Restore the vault's access to its key encryption key"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}

	// Roles without posture.read: an agent's token, a backup-operator's.
	agentTok := strings.TrimSpace(mustCoffer(t, e, "source", "add", "web"))
	failsWith(t, e, "forbidden", "posture", "--token", agentTok)
	opTok := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-operator", "--name", "op"))
	failsWith(t, e, "forbidden", "posture", "--token", opTok)
}
