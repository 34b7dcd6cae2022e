package server_test

// Attacks on the posture report (docs/posture.md): who may read it, what
// a client can make it say, and whether a report can be forged or edited
// without `audit verify --report` noticing.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/posture"
)

// TestAttackPostureRoles: a token without posture.read on the vault gets
// 403 — the roles agents and dashboards hold, the contributor, a key
// officer of another vault, an agent's own source token — and no token
// gets 401; the owner, a key officer and a security approver read it.
func TestAttackPostureRoles(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	if _, err := a.owner.CreateVault(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	path := "/v1/vaults/a/posture"
	a.mustStatus(http.StatusUnauthorized, "GET", path, "", nil)
	a.mustStatus(http.StatusUnauthorized, "GET", path, "not-a-token", nil)
	for _, tc := range []struct {
		name  string
		token string
		want  int
	}{
		{"backup-reader", a.roleToken(authn.RoleBackupReader, "a"), http.StatusForbidden},
		{"backup-operator", a.roleToken(authn.RoleBackupOperator, "a"), http.StatusForbidden},
		{"backup-contributor", a.roleToken(authn.RoleBackupContributor, ""), http.StatusForbidden},
		{"source (agent) token", a.addSource("db1"), http.StatusForbidden},
		{"key-officer of vault b", a.roleToken(authn.RoleKeyOfficer, "b"), http.StatusForbidden},
		{"key-officer of vault a", a.roleToken(authn.RoleKeyOfficer, "a"), http.StatusOK},
		{"server-wide key-officer", a.roleToken(authn.RoleKeyOfficer, ""), http.StatusOK},
		{"security-approver", a.roleToken(authn.RoleSecurityApprover, ""), http.StatusOK},
		{"owner", a.env.OwnerToken, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, out := a.call("GET", path, tc.token, nil)
			if st != tc.want {
				t.Fatalf("status %d, want %d: %s", st, tc.want, out)
			}
			if st == http.StatusOK {
				if _, err := posture.Verify(out, a.env.Server.AuditVerifierKey()); err != nil {
					t.Errorf("report: %v", err)
				}
			} else if bytes.Contains(out, []byte(`"checks"`)) {
				t.Errorf("a refusal carries the report: %s", out)
			}
		})
	}
	// A principal holding the role reads it as its token does; one holding
	// backup-reader does not.
	a.principal("auditor", "user", "", authn.RoleKeyOfficer, "a")
	a.principal("dash", "user", "", authn.RoleBackupReader, "a")
	for name, want := range map[string]int{"auditor": http.StatusOK, "dash": http.StatusForbidden} {
		tok, err := a.owner.CreateToken(ctx, api.CreateToken{Name: name, Principal: name})
		if err != nil {
			t.Fatal(err)
		}
		a.mustStatus(want, "GET", path, tok.Secret, nil)
	}
	// An unknown vault is 404 for a reader of every vault, and nothing is
	// computed for it.
	a.mustStatus(http.StatusNotFound, "GET", "/v1/vaults/nope/posture", a.env.OwnerToken, nil)
	a.mustStatus(http.StatusNotFound, "GET", "/v1/vaults/..%2fa/posture", a.env.OwnerToken, nil)
}

// TestAttackPostureNoInjectedFacts: nothing a client sends changes a
// fact: query parameters, headers, a body, another method; a check a
// client cuts short, or one of a subset, does not count as the data
// verified; the history window is bounded.
func TestAttackPostureNoInjectedFacts(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	base := a.postureOf(a.env.OwnerToken, "a", "")
	statuses := func(r *posture.Report) string {
		var s []string
		for _, c := range r.Vaults[0].Checks {
			s = append(s, c.ID+"="+string(c.Status))
		}
		return strings.Join(s, " ")
	}
	want := statuses(base)
	for _, q := range []string{
		"status=pass", "rpo=1000d&policy.rpo_seconds=99999999", "mode=local", "tls_min=1.3&now=2020-01-01T00:00:00Z",
		"source.encryption=pass&host=db1&volumes=encrypted", "since=90d&since=1d&vault=b",
	} {
		st, out := a.call("GET", "/v1/vaults/a/posture?"+q, a.env.OwnerToken, nil)
		if st != http.StatusOK {
			t.Fatalf("?%s: %d %s", q, st, out)
		}
		r, err := posture.Verify(out, a.env.Server.AuditVerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		if got := statuses(r); got != want {
			t.Errorf("?%s changed the report:\n%s\nwant\n%s", q, got, want)
		}
		if r.Policy != base.Policy {
			t.Errorf("?%s changed the policy: %+v", q, r.Policy)
		}
	}
	// Headers and a body are not read.
	req, _ := http.NewRequest("GET", a.env.URL+"/v1/vaults/a/posture", strings.NewReader(`{"checks":[{"id":"audit.verifies","status":"pass"}],"rpo_seconds":1}`))
	req.Header.Set("Authorization", "Bearer "+a.env.OwnerToken)
	req.Header.Set("X-Coffer-Now", "2020-01-01T00:00:00Z")
	req.Header.Set("Date", "Wed, 01 Jan 2020 00:00:00 GMT")
	resp, err := a.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	resp.Body.Close()
	r, err := posture.Verify(buf.Bytes(), a.env.Server.AuditVerifierKey())
	if err != nil || statuses(r) != want {
		t.Errorf("a body or headers changed the report: %v", err)
	}
	// Only GET: no method writes a report or a fact.
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		if st, _ := a.call(m, "/v1/vaults/a/posture", a.env.OwnerToken, map[string]string{"status": "pass"}); st != http.StatusMethodNotAllowed && st != http.StatusNotFound {
			t.Errorf("%s /posture: %d", m, st)
		}
	}
	// The window is bounded and parsed strictly.
	for _, q := range []string{"since=100000d", "since=-5d", "since=0", "since=abc", "since=9999999999h"} {
		if st, out := a.call("GET", "/v1/vaults/a/posture?"+q, a.env.OwnerToken, nil); st != http.StatusBadRequest {
			t.Errorf("?%s: %d, want 400: %s", q, st, out)
		}
	}

	// A check an operator's client asks for with ?read_data=true in the
	// query but not in its body is not a read-data check; neither is a
	// subset.
	op := a.roleToken(authn.RoleBackupOperator, "a")
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/check?read_data=true&completed=true&errors=0", op, api.CheckRequest{})
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/check", op, api.CheckRequest{ReadDataSubset: "1/1000"})
	r = a.postureOf(a.env.OwnerToken, "a", "")
	if c := checkOf(t, r, posture.CheckVerified); c.Status != posture.Warn {
		t.Errorf("a check without read-data, or of a subset, counted: %s %s", c.Status, c.Summary)
	}
	if _, err := a.owner.Vault("a").Check(ctx, true, nil); err != nil {
		t.Fatal(err)
	}
	r = a.postureOf(a.env.OwnerToken, "a", "")
	if c := checkOf(t, r, posture.CheckVerified); c.Status != posture.Pass {
		t.Errorf("a full check --read-data did not count: %s %s", c.Status, c.Summary)
	}
}

// TestAttackPostureForgedReport: a report edited in any field, one signed
// by another server's key, one whose signature was moved from another
// report, and an unsigned one all fail verification against the server's
// pinned key.
func TestAttackPostureForgedReport(t *testing.T) {
	a := newArena(t)
	b := newArena(t) // another server, with its own audit key
	vk := a.env.Server.AuditVerifierKey()
	good := a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a/posture", a.env.OwnerToken, nil)
	if _, err := posture.Verify(good, vk); err != nil {
		t.Fatal(err)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(good, &env); err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(env["report"], &rep); err != nil {
		t.Fatal(err)
	}
	// Edit each top-level field and each check's status in turn.
	edits := map[string]func(map[string]any){}
	for k := range rep {
		edits["remove "+k] = func(m map[string]any) { delete(m, k) }
		edits["change "+k] = func(m map[string]any) { m[k] = "forged" }
	}
	edits["add a field"] = func(m map[string]any) { m["note"] = "all good" }
	edits["a check passes"] = func(m map[string]any) {
		for _, c := range m["vaults"].([]any)[0].(map[string]any)["checks"].([]any) {
			c.(map[string]any)["status"] = "pass"
		}
	}
	edits["evidence value"] = func(m map[string]any) {
		c := m["vaults"].([]any)[0].(map[string]any)["checks"].([]any)[0].(map[string]any)
		c["evidence"].([]any)[0].(map[string]any)["value"] = "AES-128"
	}
	for name, edit := range edits {
		var m map[string]any
		json.Unmarshal(env["report"], &m)
		edit(m)
		rb, _ := json.Marshal(m)
		forged, _ := json.Marshal(map[string]json.RawMessage{"report": rb, "signature": env["signature"]})
		if _, err := posture.Verify(forged, vk); err == nil {
			t.Errorf("%s: the edited report verifies", name)
		}
	}
	other := b.mustStatus(http.StatusOK, "GET", "/v1/vaults/a/posture", b.env.OwnerToken, nil)
	if _, err := posture.Verify(other, vk); err == nil {
		t.Error("another server's report verifies with this server's key")
	}
	var oenv map[string]json.RawMessage
	json.Unmarshal(other, &oenv)
	moved, _ := json.Marshal(map[string]json.RawMessage{"report": oenv["report"], "signature": env["signature"]})
	if _, err := posture.Verify(moved, vk); err == nil {
		t.Error("a signature moved onto another report verifies")
	}
	unsigned, _ := json.Marshal(map[string]json.RawMessage{"report": env["report"], "signature": json.RawMessage("null")})
	if _, err := posture.Verify(unsigned, vk); err == nil {
		t.Error("an unsigned report verifies")
	}
}

// TestAttackPostureHostileHost: a host name an agent chose (markup, table
// cells, links) reaches the report as data and is escaped in HTML and
// Markdown.
func TestAttackPostureHostileHost(t *testing.T) {
	a := newArena(t)
	host := `<img src=x onerror=alert(1)>|**x**|[a](http://e.example)`
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"f": []byte("x")})
	a.backupAs(a.env.OwnerToken, src, host)
	r := a.postureOf(a.env.OwnerToken, "a", "")
	c := checkOf(t, r, posture.CheckRPO)
	evidenceHas(t, c, "source "+host)
	var h, m bytes.Buffer
	if err := posture.WriteHTML(&h, r); err != nil {
		t.Fatal(err)
	}
	if err := posture.WriteMarkdown(&m, r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h.String(), "<img") || !strings.Contains(h.String(), "&lt;img") {
		t.Error("the host reaches the HTML report unescaped")
	}
	if strings.Contains(m.String(), "<img") || strings.Contains(m.String(), "](http") || strings.Contains(m.String(), "|**x**|") {
		t.Error("the host reaches the Markdown report unescaped")
	}
}
