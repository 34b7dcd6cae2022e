package posture

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/coffer-backup/coffer/internal/vault"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// good is a server vault in order on every check.
func good() Facts {
	st := vault.VaultSettings{SoftDelete: vault.SoftDeleteAlwaysOn, SoftDeleteDays: 30, Immutability: vault.ImmutabilityLocked, MinRetention: 30 * 24 * time.Hour}
	enc := &vault.SourceFacts{Volumes: []vault.SourceVolume{{Path: "/srv", Mount: "/", Device: "/dev/mapper/root", FSType: "ext4", Encryption: vault.VolumeEncrypted, Method: "luks2"}},
		LocalCopies: &vault.LocalCopyStatus{Keep: 2, Held: 2, Encrypted: true, Cipher: "AES-256-GCM"}}
	return Facts{Now: t0, Mode: "server",
		Key: KeyFacts{Algorithm: "AES-256-GCM", KeySource: "platform-managed", KEK: vault.KeyRef{Provider: "platform", KeyID: "default", Version: "3"},
			DEKVersion: 2, DEKCount: 2, DEKCreated: t0.Add(-10 * 24 * time.Hour), KEKCreated: t0.Add(-12 * 24 * time.Hour), Read: t0},
		Settings: &st, SetRead: t0,
		TLS:         &TLSFacts{MinVersion: tls.VersionTLS12, Subject: "CN=coffer", NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(300 * 24 * time.Hour), Fingerprint: "ab", Read: t0},
		SourcesRead: t0,
		Sources:     []SourceFact{{Host: "db1", Snapshot: "s1", Time: t0.Add(-time.Hour), Writer: "agent-db1", Facts: enc}},
		Checks:      &CheckRun{Time: t0.Add(-48 * time.Hour), ReadData: true, OK: true, Source: SrcAudit},
		Audit:       &AuditFacts{Entries: 10, Checkpoints: 2, Read: t0},
	}
}

func statusOf(t *testing.T, cs []Check, id string) Check {
	t.Helper()
	for _, c := range cs {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("no check %s", id)
	return Check{}
}

func TestAllPass(t *testing.T) {
	cs := Run(good())
	if len(cs) != len(CheckIDs()) {
		t.Fatalf("%d checks, want %d", len(cs), len(CheckIDs()))
	}
	for _, c := range cs {
		if c.Status != Pass {
			t.Errorf("%s: %s (%s)", c.ID, c.Status, c.Summary)
		}
		if c.Remediation != "" || c.Title == "" || len(c.Controls) == 0 || len(c.Evidence) == 0 {
			t.Errorf("%s: remediation %q title %q controls %v evidence %d", c.ID, c.Remediation, c.Title, c.Controls, len(c.Evidence))
		}
		for _, e := range c.Evidence {
			if e.Source == "" || e.Read.IsZero() {
				t.Errorf("%s: evidence %q without source or time", c.ID, e.Fact)
			}
		}
	}
}

// TestStates sets each interesting state and asserts the status and the
// remediation of the check it concerns.
func TestStates(t *testing.T) {
	bad := &vault.SourceFacts{Volumes: []vault.SourceVolume{{Path: "/home", Mount: "/home", Device: "/dev/sdb1", FSType: "ext4", Encryption: vault.VolumeUnencrypted}}}
	unknown := &vault.SourceFacts{Volumes: []vault.SourceVolume{{Path: "/x", Mount: "/x", Encryption: vault.VolumeUnknown, Detail: "no device-mapper"}}}
	plainCopies := &vault.SourceFacts{Volumes: good().Sources[0].Facts.Volumes, LocalCopies: &vault.LocalCopyStatus{Keep: 1, Held: 1}}
	for _, tc := range []struct {
		name   string
		change func(*Facts)
		id     string
		want   Status
		remedy string // a word the remediation must hold; "" for none
	}{
		{"customer key", func(f *Facts) {
			f.Key.KeySource, f.Key.KEK = "customer-managed", vault.KeyRef{Provider: "rsa-file", KeyID: "k"}
		}, CheckKeySource, Pass, ""},
		{"customer key rotation", func(f *Facts) { f.Key.KeySource, f.Key.KEKCreated = "customer-managed", time.Time{} }, CheckKEKRotation, NA, "key manager"},
		{"key unreachable", func(f *Facts) { f.Key.ProbeErr = "key revoked" }, CheckKeyReachable, Fail, "grant wrap/unwrap"},
		{"old platform key", func(f *Facts) { f.Key.KEKCreated = t0.Add(-100 * 24 * time.Hour) }, CheckKEKRotation, Fail, "Rotate"},
		{"old DEK", func(f *Facts) { f.Key.DEKCreated = t0.Add(-400 * 24 * time.Hour) }, CheckDEKRotation, Warn, "coffer key rotate"},
		{"no DEK", func(f *Facts) { f.Key.DEKCount = 0 }, CheckAtRest, Fail, "vault recover"},
		{"TLS 1.0", func(f *Facts) { f.TLS.MinVersion = tls.VersionTLS10 }, CheckTLSMinimum, Fail, "--tls-min"},
		{"cert expiring", func(f *Facts) { f.TLS.NotAfter = t0.Add(20 * 24 * time.Hour) }, CheckTLSCert, Warn, "Renew"},
		{"cert expired", func(f *Facts) { f.TLS.NotAfter = t0.Add(-time.Hour) }, CheckTLSCert, Fail, "valid certificate"},
		{"server without TLS facts", func(f *Facts) { f.TLS, f.TLSErr = nil, "not serving" }, CheckTLSMinimum, Fail, "HTTPS"},
		{"local has no TLS", func(f *Facts) { f.TLS, f.Mode = nil, "local" }, CheckTLSCert, NA, ""},
		{"unencrypted volume", func(f *Facts) { f.Sources[0].Facts = bad }, CheckSourceEncrypt, Fail, "Encrypt the source volumes"},
		{"unknown volume", func(f *Facts) { f.Sources[0].Facts = unknown }, CheckSourceEncrypt, Warn, "coffer agent status"},
		{"not reported", func(f *Facts) { f.Sources[0].Facts = nil }, CheckSourceEncrypt, Warn, "reports its volumes"},
		{"report stale", func(f *Facts) { f.Sources[0].Time = t0.Add(-48 * time.Hour) }, CheckSourceEncrypt, Warn, "fresh backup"},
		{"one bad of two", func(f *Facts) {
			f.Sources = append(f.Sources, SourceFact{Host: "web", Snapshot: "s2", Time: t0, Facts: bad})
		}, CheckSourceEncrypt, Fail, "Encrypt"},
		{"no sources", func(f *Facts) { f.Sources = nil }, CheckSourceEncrypt, NA, ""},
		{"local copies unencrypted", func(f *Facts) { f.Sources[0].Facts = plainCopies }, CheckLocalCopies, Fail, "delete unencrypted"},
		{"local copies not reported", func(f *Facts) { f.Sources[0].Facts = nil }, CheckLocalCopies, Warn, "reports its local copies"},
		{"no local copies", func(f *Facts) { f.Sources[0].Facts = &vault.SourceFacts{Volumes: bad.Volumes} }, CheckLocalCopies, NA, ""},
		{"soft delete off", func(f *Facts) { f.Settings.SoftDelete = vault.SoftDeleteOff }, CheckSoftDelete, Fail, "--soft-delete on"},
		{"soft delete on, not always", func(f *Facts) { f.Settings.SoftDelete = vault.SoftDeleteOn }, CheckSoftDelete, Pass, ""},
		{"immutability disabled", func(f *Facts) { f.Settings.Immutability = vault.ImmutabilityDisabled }, CheckImmutability, Warn, "--immutability enabled"},
		{"immutability enabled", func(f *Facts) { f.Settings.Immutability = vault.ImmutabilityEnabled }, CheckImmutability, Pass, ""},
		{"no min retention", func(f *Facts) { f.Settings.MinRetention = 0 }, CheckMinRetention, Warn, "--min-retention"},
		{"settings unreadable", func(f *Facts) { f.Settings, f.SetErr = nil, "key out of reach" }, CheckSoftDelete, Fail, "key reachable"},
		{"local single user", func(f *Facts) { f.Mode, f.Settings.SingleUser = "local", true }, CheckMUA, Warn, "security approver"},
		{"backup late", func(f *Facts) { f.Sources[0].Time = t0.Add(-25 * time.Hour) }, CheckRPO, Fail, "schedule"},
		{"RPO policy", func(f *Facts) { f.Sources[0].Time, f.Policy.RPO = t0.Add(-25*time.Hour), 48*time.Hour }, CheckRPO, Pass, ""},
		{"no backup", func(f *Facts) { f.Sources = nil }, CheckRPO, Fail, "coffer backup"},
		{"no check", func(f *Facts) { f.Checks = nil }, CheckVerified, Warn, "--read-data"},
		{"old check", func(f *Facts) { f.Checks.Time = t0.Add(-40 * 24 * time.Hour) }, CheckVerified, Warn, "schedule"},
		{"check found errors", func(f *Facts) { f.Checks.Errors = 2 }, CheckVerified, Fail, "repair"},
		{"check unfinished", func(f *Facts) { f.Checks.OK = false }, CheckVerified, Fail, "repair"},
		{"audit tampered", func(f *Facts) { f.Audit.Problems = []string{"entry 3 changed"} }, CheckAudit, Fail, "incident"},
		{"audit unverifiable", func(f *Facts) { f.Audit.Err = "catalog down" }, CheckAudit, Fail, "audit verify"},
		{"local has no audit log", func(f *Facts) { f.Audit = nil }, CheckAudit, NA, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := good()
			st := *f.Settings
			f.Settings = &st
			tl := *f.TLS
			f.TLS = &tl
			cr := *f.Checks
			f.Checks = &cr
			f.Sources = append([]SourceFact(nil), f.Sources...)
			tc.change(&f)
			c := statusOf(t, Run(f), tc.id)
			if c.Status != tc.want {
				t.Errorf("%s: %s (%s), want %s", tc.id, c.Status, c.Summary, tc.want)
			}
			if tc.remedy == "" && c.Status == Pass && c.Remediation != "" {
				t.Errorf("passing check with remediation %q", c.Remediation)
			}
			if tc.remedy != "" && !strings.Contains(c.Remediation, tc.remedy) {
				t.Errorf("remediation %q lacks %q", c.Remediation, tc.remedy)
			}
		})
	}
}

// TestSourceEvidence: the report shows which host reported what, in which
// snapshot, and when.
func TestSourceEvidence(t *testing.T) {
	c := statusOf(t, Run(good()), CheckSourceEncrypt)
	var all []string
	for _, e := range c.Evidence {
		all = append(all, e.Fact+"="+e.Value+"@"+e.Read.Format(time.RFC3339))
	}
	s := strings.Join(all, "\n")
	for _, want := range []string{"source db1=newest snapshot s1", "written by agent-db1", "luks2", "/dev/mapper/root", t0.Add(-time.Hour).Format(time.RFC3339)} {
		if !strings.Contains(s, want) {
			t.Errorf("evidence lacks %q:\n%s", want, s)
		}
	}
}

func testSigner(t *testing.T) (note.Signer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "coffer-audit")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

func testReport() *Report {
	return &Report{Generated: t0, Mode: "server", Producer: "test", Policy: ReportPolicy(Policy{}),
		Vaults: []Vault{NewVault("prod", "0123", Run(good()), nil, t0)}}
}

// TestSignature: a signed report verifies; any altered, added or removed
// field fails, as does another key, an unsigned report, or a signature
// moved to another report.
func TestSignature(t *testing.T) {
	signer, vkey := testSigner(t)
	b, err := Seal(testReport(), signer)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := Verify(b, vkey); err != nil || r.Vaults[0].Name != "prod" || !r.Signed {
		t.Fatalf("Verify: %v, %+v", err, r)
	}
	// Whitespace and key order are not the report: re-indenting keeps it valid.
	var compact bytes.Buffer
	json.Compact(&compact, b)
	if _, err := Verify(compact.Bytes(), vkey); err != nil {
		t.Errorf("compacted report: %v", err)
	}
	for _, edit := range []struct{ name, from, to string }{
		{"status", `"status": "pass"`, `"status": "fail"`},
		{"vault name", `"name": "prod"`, `"name": "prod2"`},
		{"generated", `"generated": "2026-12-07T12:00:00Z"`, `"generated": "2027-12-07T12:00:00Z"`},
		{"added field", `"schema": "coffer.posture/v1"`, `"schema": "coffer.posture/v1", "extra": 1`},
		{"case variant", `"schema": "coffer.posture/v1"`, `"schema": "coffer.posture/v1", "Mode": "local"`},
		{"number spelling", `"rpo_seconds": 86400`, `"rpo_seconds": 86400.0`},
		{"removed field", `"producer": "test",`, ``},
		{"signature", `"sig": "`, `"sig": "AA`},
		{"key hash", `"key_hash": "`, `"key_hash": "0`},
	} {
		t.Run(edit.name, func(t *testing.T) {
			if !bytes.Contains(b, []byte(edit.from)) {
				t.Fatalf("report lacks %s", edit.from)
			}
			alt := bytes.Replace(b, []byte(edit.from), []byte(edit.to), 1)
			if _, err := Verify(alt, vkey); err == nil {
				t.Errorf("altered report verifies")
			}
		})
	}
	// Another key.
	other, ovkey := testSigner(t)
	if _, err := Verify(b, ovkey); err == nil {
		t.Error("verifies with another key")
	}
	forged, _ := Seal(testReport(), other)
	if _, err := Verify(forged, vkey); err == nil {
		t.Error("a report signed by another key verifies")
	}
	// Unsigned.
	unsigned, _ := Seal(testReport(), nil)
	if _, err := Verify(unsigned, vkey); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("unsigned report: %v", err)
	}
	// A signature moved onto another report.
	r2 := testReport()
	r2.Vaults[0].Name = "other"
	b2, _ := Seal(r2, nil)
	var e1, e2 Envelope
	json.Unmarshal(b, &e1)
	json.Unmarshal(b2, &e2)
	e2.Signature = e1.Signature
	moved, _ := json.Marshal(e2)
	if _, err := Verify(moved, vkey); err == nil {
		t.Error("a signature moved to another report verifies")
	}
	// A checkpoint note's signature is not a report's.
	msg, _ := note.Sign(&note.Note{Text: "go.sum database tree\n1\nAAAA\n"}, signer)
	if _, err := Verify(append(msg, '}'), vkey); err == nil {
		t.Error("garbage verifies")
	}
}

const hostile = "evil<script>alert(1)</script>\x1b[2K\r\u202e|**bold**|[x](http://e)\n# Heading"

func hostileReport() *Report {
	f := good()
	f.Sources[0].Host = hostile
	f.Sources[0].Facts.Volumes[0].Path = hostile
	r := testReport()
	r.Vaults = []Vault{NewVault(hostile, hostile, Run(f), nil, t0)}
	r.Producer = hostile
	return r
}

// TestHostileStrings: host names and paths a source chose cannot inject
// markup, script, links, table cells, headings or terminal controls.
func TestHostileStrings(t *testing.T) {
	r := hostileReport()
	var h bytes.Buffer
	if err := WriteHTML(&h, r); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"<script", "\x1b", "\u202e", "\r", "href=\"http"} {
		if strings.Contains(h.String(), bad) {
			t.Errorf("HTML holds %q", bad)
		}
	}
	if !strings.Contains(h.String(), "&lt;script&gt;") {
		t.Error("HTML does not show the escaped host")
	}
	var m bytes.Buffer
	if err := WriteMarkdown(&m, r); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"<script", "\x1b", "\u202e", "\r", "**bold**", "](http", "\n# Heading", "|**"} {
		if strings.Contains(m.String(), bad) {
			t.Errorf("Markdown holds %q", bad)
		}
	}
	// A hostile value cannot close a table cell or start a line.
	e := md(hostile)
	for i := range len(e) {
		if e[i] == '|' && (i == 0 || e[i-1] != '\\') {
			t.Errorf("md(%q) = %q: an unescaped |", hostile, e)
		}
	}
	if strings.ContainsAny(e, "\n\r") {
		t.Errorf("md(%q) = %q holds a line break", hostile, e)
	}
	var tx bytes.Buffer
	esc := func(s string) string {
		return strings.NewReplacer("\x1b", `\x1b`, "\r", `\r`, "\n", `\n`, "\u202e", `\u202e`).Replace(s)
	}
	if err := WriteText(&tx, r, esc); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"\x1b", "\u202e", "\r", "\n# Heading"} {
		if strings.Contains(tx.String(), bad) {
			t.Errorf("text holds %q", bad)
		}
	}
}

// TestHistory: status changes between records are listed, and each check
// and control says since when it has held.
func TestHistory(t *testing.T) {
	f := good()
	cur := Run(f)
	old := good()
	old.Settings = &vault.VaultSettings{SoftDelete: vault.SoftDeleteOff, SoftDeleteDays: 14, Immutability: vault.ImmutabilityLocked, MinRetention: time.Hour}
	d := func(n int) time.Time { return t0.Add(-time.Duration(n) * 24 * time.Hour) }
	recs := []Record{RecordOf("prod", d(30), Run(old)), RecordOf("prod", d(20), Run(old)), RecordOf("prod", d(10), cur), RecordOf("prod", d(5), cur)}
	v := NewVault("prod", "id", cur, recs, t0)
	if len(v.Changes) != 1 || v.Changes[0].Check != CheckSoftDelete || v.Changes[0].From != Fail || v.Changes[0].To != Pass || !v.Changes[0].At.Equal(d(10)) {
		t.Fatalf("changes %+v", v.Changes)
	}
	sd := statusOf(t, v.Checks, CheckSoftDelete)
	if sd.HeldSince == nil || !sd.HeldSince.Equal(d(10)) {
		t.Errorf("soft delete held since %v, want %v", sd.HeldSince, d(10))
	}
	at := statusOf(t, v.Checks, CheckAtRest)
	if at.HeldSince == nil || !at.HeldSince.Equal(d(30)) {
		t.Errorf("at-rest held since %v", at.HeldSince)
	}
	for _, cs := range v.Controls {
		if cs.Control == iso813 && (cs.Since == nil || !cs.Since.Equal(d(10))) {
			t.Errorf("%s held since %v, want %v (the latest of its checks)", cs.Control, cs.Since, d(10))
		}
		if cs.Control == pci42 && (cs.Since == nil || !cs.Since.Equal(d(30))) {
			t.Errorf("%s held since %v", cs.Control, cs.Since)
		}
	}
	// A record parses back only with its hash.
	r := recs[0]
	if got, err := ParseRecord(r.Encode(), r.Hash()); err != nil || !SameStatus(got, r) {
		t.Errorf("ParseRecord: %v", err)
	}
	if _, err := ParseRecord(bytes.Replace(r.Encode(), []byte(`"fail"`), []byte(`"pass"`), 1), r.Hash()); err == nil {
		t.Error("an edited record parses")
	}
}
