package posture

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

var update = flag.Bool("update", false, "rewrite testdata/report-v1.json")

// A fixed test key, so that the frozen report's signature is too. It signs
// nothing but this test's report.
const (
	frozenSKey = "PRIVATE+KEY+coffer-audit+2704b9ae+AeIUjWExzrD+1kGYVWEljaFTvT85Qo0HowPGgPfEXhRd"
	frozenVKey = "coffer-audit+2704b9ae+AQR20BA4rH23wXr0Cxo8DHyKVJAVQBOYRBs86rkMpdVs"
)

// fullReport is a report with every field of the schema set, optional
// ones included: history, held_since, changes, remediation.
func fullReport() *Report {
	f := good()
	f.Sources[0].Facts.Volumes[0].Encryption = "unencrypted" // a failing check, with its remediation
	since := t0.Add(-90 * 24 * time.Hour)
	recs := []Record{RecordOf("prod", t0.Add(-48*time.Hour), Run(good())), RecordOf("prod", t0.Add(-24*time.Hour), Run(good()))}
	return &Report{Generated: t0, Mode: "server", Producer: "coffer server, TLS certificate SHA-256 ab", Policy: ReportPolicy(Policy{}),
		HistorySince: &since, Vaults: []Vault{NewVault("prod", "0123", Run(f), recs, t0)}}
}

// TestSchemaFrozen: the JSON of a coffer.posture/v1 report, signature
// included, is frozen in testdata/report-v1.json. A change to a field's
// name, type or meaning changes the file (rewrite it with -update only
// for a pure addition of optional fields; anything else is a new schema
// version), and the frozen report must keep verifying and parsing.
func TestSchemaFrozen(t *testing.T) {
	signer, err := note.NewSigner(frozenSKey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Seal(fullReport(), signer)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report-v1.json")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/posture -run TestSchemaFrozen -update)", err)
	}
	if !bytes.Equal(append(b, '\n'), want) {
		t.Errorf("the report's JSON differs from %s: the schema changed\ngot:\n%s", golden, b)
	}
	r, err := Verify(want, frozenVKey)
	if err != nil {
		t.Fatalf("the frozen report does not verify: %v", err)
	}
	if r.Schema != Schema || r.Vaults[0].Status != Fail || r.HistorySince == nil || len(r.Vaults[0].Controls) == 0 {
		t.Errorf("the frozen report parses as %+v", r)
	}
}

// jsonPaths lists the object keys of a JSON value as paths
// ("report.vaults[].checks[].id").
func jsonPaths(v any, prefix string, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			out[p] = true
			jsonPaths(e, p, out)
		}
	case []any:
		for _, e := range x {
			jsonPaths(e, prefix+"[]", out)
		}
	}
}

func pathsOf(t *testing.T, what string, b []byte) map[string]bool {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, b)
	}
	out := map[string]bool{}
	jsonPaths(v, "", out)
	return out
}

// TestSchemaDocumented: docs/posture.md's JSON schema names exactly the
// fields a report has (a signed one and an unsigned one together).
func TestSchemaDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "posture.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## JSON schema \\(`" + regexp.QuoteMeta(Schema) + "`\\)\n\n```json\n(.*?)\n```").FindSubmatch(doc)
	if m == nil {
		t.Fatalf("docs/posture.md has no JSON schema block for %s", Schema)
	}
	documented := pathsOf(t, "the documented schema", m[1])

	signer, _ := testSigner(t)
	signed, err := Seal(fullReport(), signer)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := fullReport()
	unsigned.UnsignedReason = "a local vault"
	plain, err := Seal(unsigned, nil)
	if err != nil {
		t.Fatal(err)
	}
	actual := pathsOf(t, "a signed report", signed)
	for p := range pathsOf(t, "an unsigned report", plain) {
		actual[p] = true
	}
	var missing, extra []string
	for p := range actual {
		if !documented[p] {
			missing = append(missing, p)
		}
	}
	for p := range documented {
		if !actual[p] {
			extra = append(extra, p)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("fields a report has that docs/posture.md does not document: %s", strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		t.Errorf("fields docs/posture.md documents that no report has: %s", strings.Join(extra, ", "))
	}
	// The documented check ids are the checks'.
	for _, id := range CheckIDs() {
		if !bytes.Contains(doc, []byte("| `"+id+"` |")) {
			t.Errorf("docs/posture.md's check table lacks %s", id)
		}
	}
}
