package audit_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/coffer-backup/coffer/internal/audit"
)

// FuzzParseRecord: parsing untrusted records never panics, and what
// parses encodes back to the same bytes (one entry, one record).
func FuzzParseRecord(f *testing.F) {
	recs, err := os.ReadFile("testdata/records.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	for _, l := range bytes.Split(recs, []byte("\n")) {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, r []byte) {
		e, err := audit.ParseRecord(r)
		if err != nil {
			return
		}
		again, err := e.MarshalRecord()
		if err != nil {
			t.Fatalf("parsed %q but cannot encode it: %v", r, err)
		}
		if !bytes.Equal(again, r) {
			t.Fatalf("%q parsed and encoded to %q", r, again)
		}
	})
}

// FuzzVerifyExport: any archive bytes give an error or a report, never a
// panic, with or without a key.
func FuzzVerifyExport(f *testing.F) {
	golden, err := os.ReadFile("testdata/export-v1.tar")
	if err != nil {
		f.Fatal(err)
	}
	vkey, err := os.ReadFile("testdata/key/verifier.key")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden, false)
	f.Add(golden, true)
	f.Add(golden[:1024], true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, archive []byte, withKey bool) {
		key := ""
		if withKey {
			key = string(bytes.TrimSpace(vkey))
		}
		r, err := audit.VerifyExport(bytes.NewReader(archive), key, audit.VerifyOptions{})
		if err == nil && r == nil {
			t.Fatal("no report and no error")
		}
		if err == nil && r.OK() && r.Latest == nil && r.Entries > 0 {
			t.Fatalf("entries verified without a checkpoint: %s", r)
		}
	})
}

// FuzzParseCheckpointNote: a trusted checkpoint file read back, or any
// note, never panics.
func FuzzParseCheckpointNote(f *testing.F) {
	vkey, err := os.ReadFile("testdata/key/verifier.key")
	if err != nil {
		f.Fatal(err)
	}
	note := "go.sum database tree\n23\nwN3jKSjNPHcRwnSnAhc3XyeJianAJsKf5um3yrKqubw=\n\n— coffer-audit H4gi5Z8fwh/vJLegqB9zdpBR98+meatJ6E2avPynbBQtelQXoB9urrqqEqi/3WMk9+Dt6lXTgH1kyh0dCB0/eQA4YAw=\n"
	if c, err := audit.ParseCheckpointNote([]byte(note), string(bytes.TrimSpace(vkey))); err != nil || c.Size != 23 {
		f.Fatalf("seed note: %+v, %v", c, err)
	}
	f.Add([]byte(note))
	f.Add([]byte("go.sum database tree\n-1\nAAAA\n\n— coffer-audit AAAA\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		c, err := audit.ParseCheckpointNote(msg, string(bytes.TrimSpace(vkey)))
		if err == nil && (c.Size < 0 || c.Note != string(msg)) {
			t.Fatalf("accepted %q as %+v", msg, c)
		}
	})
}
