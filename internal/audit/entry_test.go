package audit

import (
	"bufio"
	"bytes"
	"maps"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestMarshalRecordGolden freezes the record encoding: a change here
// changes every record's hash, which would break verification of logs
// already written.
func TestMarshalRecordGolden(t *testing.T) {
	e := Entry{
		Time:      time.Date(2026, 3, 4, 6, 6, 7, 80_000_000, time.FixedZone("CET", 3600)),
		Principal: "0123456789abcdef", Source: "192.0.2.7:51234", Vault: "primary", Op: "snapshot.forget",
		Params:  map[string]string{"snapshot": "abcd", "reason": `<old> & "x"`},
		Outcome: OutcomeOK,
	}
	want := `{"time":"2026-03-04T05:06:07.08Z","principal":"0123456789abcdef","source":"192.0.2.7:51234","vault":"primary","op":"snapshot.forget","params":{"reason":"<old> & \"x\"","snapshot":"abcd"},"outcome":"ok"}`
	got, err := e.MarshalRecord()
	if err != nil || string(got) != want {
		t.Fatalf("MarshalRecord =\n%s, %v\nwant\n%s", got, err, want)
	}
	back, err := ParseRecord(got)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Time.Equal(e.Time) || back.Op != e.Op || !maps.Equal(back.Params, e.Params) || back.Outcome != e.Outcome {
		t.Errorf("ParseRecord = %+v, want %+v", back, e)
	}
}

// TestRecordVectors reads testdata/records.jsonl (canonical records: each
// parses and encodes back to the same bytes) and testdata/bad-records.txt
// (each refused).
func TestRecordVectors(t *testing.T) {
	for i, line := range readLines(t, "testdata/records.jsonl") {
		e, err := ParseRecord([]byte(line))
		if err != nil {
			t.Errorf("records.jsonl line %d: %v", i+1, err)
			continue
		}
		again, err := e.MarshalRecord()
		if err != nil || string(again) != line {
			t.Errorf("records.jsonl line %d re-encodes to\n%s, %v", i+1, again, err)
		}
	}
	bad := readLines(t, "testdata/bad-records.txt")
	bad = append(bad, "", "{", strings.Repeat(" ", MaxRecord+1))
	for i, line := range bad {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if e, err := ParseRecord([]byte(line)); err == nil {
			t.Errorf("bad record %d %q parsed: %+v", i+1, line, e)
		}
	}
}

func readLines(t *testing.T, name string) []string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ls []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if s.Text() != "" {
			ls = append(ls, s.Text())
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return ls
}

func TestMarshalRecordRefuses(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, e := range map[string]Entry{
		"no op":        {Time: at, Outcome: OutcomeOK},
		"no outcome":   {Time: at, Op: "x"},
		"no time":      {Op: "x", Outcome: OutcomeOK},
		"year 10000":   {Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Op: "x", Outcome: OutcomeOK},
		"invalid utf8": {Time: at, Op: "x", Outcome: OutcomeOK, Detail: "\xff"},
		"invalid key":  {Time: at, Op: "x", Outcome: OutcomeOK, Params: map[string]string{"\xff": ""}},
	} {
		if r, err := e.MarshalRecord(); err == nil {
			t.Errorf("%s: MarshalRecord = %s", name, r)
		}
	}
}

func TestScrub(t *testing.T) {
	token := "cft_" + strings.Repeat("A", 20) + strings.Repeat("b-_9", 5) + "xyz" // 43 characters
	for _, c := range []struct{ in, want string }{
		{"nothing secret", "nothing secret"},
		{"Bearer " + token, "Bearer cft_[redacted]"},
		{token + "," + token, "cft_[redacted],cft_[redacted]"},
		{"cft_" + strings.Repeat("x", 25), "cft_[redacted]"}, // truncated token: still secret
		{"cft_short", "cft_short"},
		{"pkcs11:token=a;object=k?module-path=/m.so&pin-value=1234&x=y", "pkcs11:token=a;object=k?module-path=/m.so&pin-value=[redacted]&x=y"},
		{"PIN-VALUE=s3cret", "PIN-VALUE=[redacted]"},
		{"pin-value=", "pin-value=[redacted]"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
	} {
		if got := Scrub(c.in); got != c.want {
			t.Errorf("Scrub(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestClean(t *testing.T) {
	token := "cft_" + strings.Repeat("Q", 43)
	params := map[string]string{
		"password": "hunter2", "client_secret": "s", "PIN": "1234", "new-password": "x", "query.Password": "y",
		"uri": "pkcs11:x?pin-value=9", "name": "laptop", "note": token,
		"long": strings.Repeat("é", maxField), // 2 bytes a rune: must cut on a boundary
	}
	orig := maps.Clone(params)
	e := clean(Entry{Time: time.Unix(1, 0), Op: "token.create", Outcome: OutcomeOK, Principal: token, Detail: strings.Repeat("d", 2*maxDetail), Params: params})
	if !maps.Equal(params, orig) {
		t.Error("clean changed the caller's map")
	}
	for k, want := range map[string]string{
		"password": Redacted, "client_secret": Redacted, "PIN": Redacted, "new-password": Redacted, "query.Password": Redacted,
		"uri": "pkcs11:x?pin-value=" + Redacted, "name": "laptop", "note": "cft_" + Redacted,
	} {
		if e.Params[k] != want {
			t.Errorf("param %s = %q, want %q", k, e.Params[k], want)
		}
	}
	if l := e.Params["long"]; len(l) > maxField || !utf8.ValidString(l) || !strings.HasSuffix(l, "(truncated)") {
		t.Errorf("long param: %d bytes, valid %v: %q…", len(l), utf8.ValidString(l), l[:10])
	}
	if len(e.Detail) > maxDetail || !strings.HasSuffix(e.Detail, "(truncated)") {
		t.Errorf("detail: %d bytes", len(e.Detail))
	}
	if e.Principal != "cft_"+Redacted {
		t.Errorf("principal %q", e.Principal)
	}
	r, err := e.MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2", "1234", "QQQQQQQQQQQQQQQQQQQQ", "pin-value=9"} {
		if bytes.Contains(r, []byte(secret)) {
			t.Errorf("record holds %q: %s", secret, r)
		}
	}

	// Too many parameters: the first maxParams kept, the rest counted.
	many := map[string]string{}
	for i := range maxParams + 10 {
		many[strings.Repeat("k", 1+i/26)+string(rune('a'+i%26))] = "v"
	}
	e = clean(Entry{Op: "x", Outcome: OutcomeOK, Params: many})
	if len(e.Params) != maxParams+1 || e.Params["…"] != "10 more parameters not recorded" {
		t.Errorf("%d params kept, marker %q", len(e.Params), e.Params["…"])
	}
	// The largest entry clean can produce still fits a record.
	huge := Entry{Time: time.Unix(0, 0), Op: strings.Repeat("\x01", 10*maxField), Outcome: strings.Repeat("\x01", 10*maxField),
		Principal: strings.Repeat("\x01", 10*maxField), Source: strings.Repeat("\x01", 10*maxField), Vault: strings.Repeat("\x01", 10*maxField),
		Detail: strings.Repeat("\x01", 10*maxDetail), Params: map[string]string{}}
	for i := range maxParams + 1 {
		huge.Params[strings.Repeat("\x01", maxField)+string(rune('a'+i%26))+strings.Repeat("b", i/26)] = strings.Repeat("\x01", 10*maxField)
	}
	if _, err := clean(huge).MarshalRecord(); err != nil {
		t.Errorf("largest cleaned entry: %v", err)
	}
}
