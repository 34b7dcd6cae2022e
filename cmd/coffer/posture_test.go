package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/posture"
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
		backupJSON(t, e, smallData(t))
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
		wantStatus(t, r, posture.CheckSourceEncrypt, posture.Warn, "reports its volumes")
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
		for _, want := range []string{"UNSIGNED", "[PASS] protect.immutability", "[WARN] source.encryption", "[N/A ] tls.minimum", "→ "} {
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
