package audit_test

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/audit/audittest"
)

var update = flag.Bool("update", false, "rewrite testdata/export-v1.tar")

// exportOf exports e's log after signing everything.
func (e *env) export() []byte {
	e.t.Helper()
	if _, err := e.log.Checkpoint(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
	var b bytes.Buffer
	if err := audit.Export(e.t.Context(), e.cat, e.vkey, &b); err != nil {
		e.t.Fatal(err)
	}
	return b.Bytes()
}

func verifyExport(t *testing.T, archive []byte, vkey string, trusted *audit.Checkpoint) *audit.Report {
	t.Helper()
	r, err := audit.VerifyExport(bytes.NewReader(archive), vkey, audit.VerifyOptions{Trusted: trusted})
	if err != nil {
		t.Fatalf("VerifyExport: %v", err)
	}
	return r
}

// TestExportOffline exports a log, then verifies the archive in a fresh
// directory with the catalog closed and gone: the archive and the key
// are all it needs.
func TestExportOffline(t *testing.T) {
	e := newEnv(t)
	e.fill(75, 13*time.Second)
	archive := e.export()
	latest, err := e.cat.LatestAuditCheckpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	vkey := e.vkey
	if err := e.cat.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(e.dir); err != nil {
		t.Fatal(err)
	}

	elsewhere := filepath.Join(t.TempDir(), "evidence.tar")
	if err := os.WriteFile(elsewhere, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(elsewhere)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := audit.VerifyExport(f, vkey, audit.VerifyOptions{Trusted: &latest})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Entries != 75 || r.Latest == nil || r.Latest.Size != 75 || r.Unproven != 0 || !r.TrustedOK {
		t.Fatalf("offline verify: %v\n%s", r.Err(), r)
	}

	// Without a key: the archive's own, and the report says so.
	r = verifyExport(t, archive, "", nil)
	if !r.OK() || !strings.Contains(strings.Join(r.Notes, "\n"), "archive's own verifier key "+vkey) {
		t.Errorf("with the archive's key: %v, notes %q", r.Err(), r.Notes)
	}

	// What the archive holds.
	files := untar(t, archive)
	if got := string(files["coffer-audit/verifier.key"]); got != vkey+"\n" {
		t.Errorf("verifier.key = %q", got)
	}
	if n := bytes.Count(files["coffer-audit/entries.jsonl"], []byte("\n")); n != 75 {
		t.Errorf("entries.jsonl has %d lines", n)
	}
	if string(files["coffer-audit/checkpoint.note"]) != latest.Note {
		t.Error("checkpoint.note is not the latest checkpoint")
	}
	if !strings.Contains(string(files["coffer-audit/README.txt"]), "first 75 entries have tree hash") {
		t.Errorf("README.txt does not describe the cut:\n%s", files["coffer-audit/README.txt"])
	}
}

// TestExportCutsAtCheckpoint: entries after the latest checkpoint are
// not exported; the archive is covered exactly.
func TestExportCutsAtCheckpoint(t *testing.T) {
	e := newEnv(t)
	e.fill(10, time.Minute)
	e.fill(5, 0) // unsigned
	var b bytes.Buffer
	if err := audit.Export(t.Context(), e.cat, e.vkey, &b); err != nil {
		t.Fatal(err)
	}
	r := verifyExport(t, b.Bytes(), e.vkey, nil)
	if !r.OK() || r.Entries != 10 {
		t.Errorf("export: %v, %d entries; want 10", r.Err(), r.Entries)
	}
	// Without any checkpoint there is nothing to export.
	empty := newEnv(t)
	if err := audit.Export(t.Context(), empty.cat, empty.vkey, io.Discard); err == nil {
		t.Error("Export of a log without checkpoints succeeded")
	}
}

// TestExportDamagedLog: Export copies a damaged log as it is, and the
// archive shows the damage.
func TestExportDamagedLog(t *testing.T) {
	e, _ := tamperEnv(t)
	e.tamper(`DELETE FROM audit_entries WHERE idx = 12`)
	r := verifyExport(t, e.export(), e.vkey, nil)
	// Without the stored hashes the tree cannot be recomputed past the
	// hole, so later checkpoints go unchecked; the hole itself shows.
	if !hasProblem(r, audit.KindEntryMissing, 12, 13) {
		t.Errorf("problems %v, want entry-missing[12,13)", kinds(r))
	}
}

// editArchive rewrites the named file of an archive.
func editArchive(t *testing.T, archive []byte, name string, edit func([]byte) []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			data, found = edit(data), true
		}
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if !found {
		t.Fatalf("no %s in the archive", name)
	}
	tw.Close()
	return b.Bytes()
}

func untar(t *testing.T, archive []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
}

func lines(b []byte) [][]byte {
	return bytes.SplitAfter(b, []byte("\n"))[:bytes.Count(b, []byte("\n"))]
}

// TestExportTampered edits an archive in the ways someone holding it
// could, and checks that VerifyExport fails.
func TestExportTampered(t *testing.T) {
	e, latest := tamperEnv(t)
	archive := e.export()
	entries := "coffer-audit/entries.jsonl"

	t.Run("edit an entry", func(t *testing.T) {
		bad := editArchive(t, archive, entries, func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"n":"17"`), []byte(`"n":"18"`), 1)
		})
		r := verifyExport(t, bad, e.vkey, nil)
		lo, hi := e.checkpointAround(17)
		if !hasProblem(r, audit.KindCheckpointMismatch, lo, hi) {
			t.Errorf("problems %v, want checkpoint-mismatch[%d,%d)", kinds(r), lo, hi)
		}
	})
	t.Run("swap two entries", func(t *testing.T) {
		bad := editArchive(t, archive, entries, func(b []byte) []byte {
			ls := lines(b)
			ls[3], ls[20] = ls[20], ls[3]
			return bytes.Join(ls, nil)
		})
		if r := verifyExport(t, bad, e.vkey, nil); r.OK() {
			t.Error("swapped entries verify")
		}
	})
	t.Run("drop the newest entries", func(t *testing.T) {
		bad := editArchive(t, archive, entries, func(b []byte) []byte { return bytes.Join(lines(b)[:35], nil) })
		r := verifyExport(t, bad, e.vkey, nil)
		if !hasProblem(r, audit.KindRollback, 35, 40) {
			t.Errorf("problems %v, want rollback[35,40)", kinds(r))
		}
	})
	t.Run("add an entry", func(t *testing.T) {
		bad := editArchive(t, archive, entries, func(b []byte) []byte {
			return append(b, lines(b)[0]...)
		})
		r := verifyExport(t, bad, e.vkey, nil)
		if !hasProblem(r, audit.KindUnproven, 40, 41) {
			t.Errorf("problems %v, want unproven[40,41)", kinds(r))
		}
	})
	t.Run("re-sign with another key", func(t *testing.T) {
		// Edit an entry and replace key and checkpoints with one's own.
		signer, vkey, err := audit.LoadOrCreateKey(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		var recs [][]byte
		bad := editArchive(t, archive, entries, func(b []byte) []byte {
			b = bytes.Replace(b, []byte(`"outcome":"ok"`), []byte(`"outcome":"denied"`), 1)
			for _, l := range lines(b) {
				recs = append(recs, bytes.TrimSuffix(l, []byte("\n")))
			}
			return b
		})
		hs, err := audittest.Hashes(t.Context(), audittest.NewMemStore(), 0, recs)
		if err != nil {
			t.Fatal(err)
		}
		th, err := tlog.TreeHash(40, tlog.HashReaderFunc(func(xs []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(xs))
			for i, x := range xs {
				out[i] = hs[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		msg, err := note.Sign(&note.Note{Text: string(tlog.FormatTree(tlog.Tree{N: 40, Hash: th}))}, signer)
		if err != nil {
			t.Fatal(err)
		}
		bad = editArchive(t, bad, "coffer-audit/verifier.key", func([]byte) []byte { return []byte(vkey + "\n") })
		bad = editArchive(t, bad, "coffer-audit/checkpoint.note", func([]byte) []byte { return msg })
		bad = editArchive(t, bad, "coffer-audit/checkpoints.jsonl", func([]byte) []byte {
			return fmt.Appendf(nil, "{\"size\":40,\"time\":\"2026-01-01T00:00:00Z\",\"note\":%q}\n", msg)
		})
		// Against the server's key: refused.
		r := verifyExport(t, bad, e.vkey, nil)
		if r.OK() || !hasProblem(r, audit.KindSignature, -1, -1) {
			t.Errorf("with the server's key: problems %v", kinds(r))
		}
		// Against its own key it is consistent, which is why the report
		// names the key it used.
		r = verifyExport(t, bad, "", nil)
		if !r.OK() || !strings.Contains(strings.Join(r.Notes, "\n"), vkey) {
			t.Errorf("with the archive's key: %v, notes %q", r.Err(), r.Notes)
		}
		// A trusted checkpoint catches it even so.
		r = verifyExport(t, bad, "", &latest)
		if r.OK() {
			t.Error("a re-signed archive verifies against a trusted checkpoint of the real key")
		}
	})
	t.Run("older trusted checkpoint", func(t *testing.T) {
		older := e.checkpoints()[4]
		if r := verifyExport(t, archive, e.vkey, &older); !r.OK() || !r.TrustedOK {
			t.Errorf("%v", r.Err())
		}
	})
}

// TestExportMalformed: archives VerifyExport cannot read are errors,
// never panics or a passing report.
func TestExportMalformed(t *testing.T) {
	e := newEnv(t)
	e.fill(5, time.Minute)
	archive := e.export()
	files := untar(t, archive)
	order := []string{"coffer-audit/README.txt", "coffer-audit/verifier.key", "coffer-audit/checkpoint.note", "coffer-audit/checkpoints.jsonl", "coffer-audit/entries.jsonl"}
	build := func(names []string, over map[string][]byte) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, n := range names {
			data := files[n]
			if d, ok := over[n]; ok {
				data = d
			}
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Size: int64(len(data)), Mode: 0o644})
			tw.Write(data)
		}
		tw.Close()
		return b.Bytes()
	}
	if r := verifyExport(t, build(order, nil), e.vkey, nil); !r.OK() {
		t.Fatalf("rebuilt archive: %v", r.Err())
	}
	for name, archive := range map[string][]byte{
		"empty":                nil,
		"not a tar":            []byte("hello"),
		"truncated":            archive[:len(archive)/2],
		"files out of order":   build([]string{order[1], order[0], order[2], order[3], order[4]}, nil),
		"entries missing":      build(order[:4], nil),
		"an extra file":        build(append(order, "coffer-audit/x"), nil),
		"entry without \\n":    build(order, map[string][]byte{order[4]: bytes.TrimSuffix(files[order[4]], []byte("\n"))}),
		"huge entry line":      build(order, map[string][]byte{order[4]: append(bytes.Repeat([]byte("x"), audit.MaxRecord+2), '\n')}),
		"checkpoints not json": build(order, map[string][]byte{order[3]: []byte("{\n")}),
		"checkpoints unsorted": build(order, map[string][]byte{order[3]: append(lines(files[order[3]])[1], lines(files[order[3]])[0]...)}),
		"bad verifier key":     build(order, map[string][]byte{order[1]: []byte("nonsense\n")}),
	} {
		if r, err := audit.VerifyExport(bytes.NewReader(archive), "", audit.VerifyOptions{}); err == nil {
			t.Errorf("%s: no error; report %v", name, r)
		}
	}
	// A checkpoint.note that is not a signed checkpoint is a problem, not
	// an error: the rest still verifies.
	r := verifyExport(t, build(order, map[string][]byte{order[2]: []byte("garbage")}), e.vkey, nil)
	if r.OK() || !hasProblem(r, audit.KindSignature, -1, -1) {
		t.Errorf("bad checkpoint.note: problems %v", kinds(r))
	}
}

// goldenLog builds, with the key in testdata/key and a fixed clock, the
// log that testdata/export-v1.tar holds.
func goldenLog(t *testing.T) (audit.Store, string) {
	t.Helper()
	signer, vkey, err := audit.LoadOrCreateKey("testdata/key")
	if err != nil {
		t.Fatal(err)
	}
	s := audittest.NewMemStore()
	c := newClock()
	l, err := audit.Open(t.Context(), audit.Config{Store: s, Signer: signer, VerifierKey: vkey, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 23 {
		c.Add(17 * time.Second)
		x := entry(i)
		if i == 5 {
			x = audit.Entry{Principal: "", Source: "203.0.113.9:55000", Op: "token.list", Outcome: audit.OutcomeDenied, Detail: "401: malformed token"}
		}
		if _, err := l.Append(t.Context(), x); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

// TestExportGolden freezes the export format: the same log exports to
// the same bytes as testdata/export-v1.tar, which this version (and
// every later one) verifies.
func TestExportGolden(t *testing.T) {
	s, vkey := goldenLog(t)
	var b bytes.Buffer
	if err := audit.Export(t.Context(), s, vkey, &b); err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/export-v1.tar"
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("Export differs from %s (run go test -run TestExportGolden -update after a deliberate format change, and keep the old file verifying)", golden)
	}
	r := verifyExport(t, want, vkey, nil)
	if !r.OK() || r.Entries != 23 {
		t.Errorf("%s: %v, %d entries", golden, r.Err(), r.Entries)
	}
}
