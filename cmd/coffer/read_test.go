package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// runRaw runs the CLI with stdout given as is (a file, a terminal), as
// main does.
func runRaw(t *testing.T, e *testEnv, stdout io.Writer, args ...string) (stderr string, code int) {
	t.Helper()
	e.tick()
	var errb bytes.Buffer
	code = runWith(context.Background(), args, strings.NewReader(""), stdout, &errb, e.getenv, e.now)
	return errb.String(), code
}

// readSource is a small tree with a file in two snapshots, one added
// in the second, a symlink, an executable and an empty directory.
func readSource(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "docs", "Report.TXT"), []byte("quarterly report\n"), 0o644)
	writeFile(t, filepath.Join(src, "docs", "notes.txt"), randBytes(7, 3<<20), 0o640)
	writeFile(t, filepath.Join(src, "bin", "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	if err := os.Symlink("../docs/notes.txt", filepath.Join(src, "bin", "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "docs", "Report.TXT"), old, old); err != nil {
		t.Fatal(err)
	}
	return src
}

func findJSON(t *testing.T, e *testEnv, args ...string) []findMatchJSON {
	t.Helper()
	out := mustCoffer(t, e, append([]string{"find", "--json"}, args...)...)
	var ms []findMatchJSON
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m findMatchJSON
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("find --json line %q: %v", line, err)
		}
		ms = append(ms, m)
	}
	return ms
}

// TestFind: restic's find semantics: a name glob, a path glob (absolute
// or trailing components), -i, per-snapshot reports, the snapshot
// filters, --snapshot, and the mtime bounds.
func TestFind(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "web01")
	src := readSource(t)
	first := backupJSON(t, e, src)
	writeFile(t, filepath.Join(src, "docs", "later.txt"), []byte("later"), 0o644)
	second := backupJSON(t, e, src, "--tag", "daily")

	ms := findJSON(t, e, "*.txt")
	var got []string
	for _, m := range ms {
		got = append(got, m.SnapshotID[:8]+" "+strings.TrimPrefix(m.Path, src))
		if m.Host != "web01" || m.Type != "file" || m.SnapshotTime.IsZero() {
			t.Errorf("find --json match %+v", m)
		}
	}
	want := []string{first[:8] + " /docs/notes.txt", second[:8] + " /docs/later.txt", second[:8] + " /docs/notes.txt"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("find '*.txt':\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ms[0].Size != 3<<20 || ms[0].Mode != "-rw-r-----" {
		t.Errorf("find --json: size %d mode %s", ms[0].Size, ms[0].Mode)
	}

	cases := []struct {
		name string
		args []string
		want int
	}{
		{"case-sensitive misses", []string{"*.txt", "--snapshot", first}, 1},
		{"-i", []string{"-i", "*.txt", "--snapshot", first}, 2},
		{"absolute path glob", []string{src + "/docs/*", "--snapshot", first}, 2},
		{"trailing components", []string{"docs/n*", "--snapshot", first}, 1},
		{"directory by name", []string{"empty"}, 2},
		{"symlink", []string{"bin/link", "--snapshot", "latest"}, 1},
		{"several patterns", []string{"run.sh", "later.txt"}, 3},
		{"tag filter", []string{"notes.txt", "--tag", "daily"}, 1},
		{"host filter excludes", []string{"notes.txt", "--host", "web02"}, 0},
		{"newest bound", []string{"*", "--newest", "2021-01-01", "--snapshot", first}, 1},
		{"oldest bound", []string{"-i", "*.txt", "--oldest", "2021-01-01", "--snapshot", first}, 1},
		{"no partial name match", []string{"notes"}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := findJSON(t, e, c.args...); len(got) != c.want {
				t.Errorf("find %v: %d matches, want %d: %+v", c.args, len(got), c.want, got)
			}
		})
	}

	out := mustCoffer(t, e, "find", "notes.txt")
	if strings.Count(out, "Found matching entries in snapshot") != 2 || !strings.Contains(out, first[:8]) || !strings.Contains(out, "3145728") {
		t.Errorf("find text output:\n%s", out)
	}
	for _, bad := range [][]string{{"find", "["}, {"find", ""}, {"find", "x", "--newest", "yesterday"}, {"find", "x", "--host", ""}} {
		if _, errOut, code := coffer(t, e, bad...); code != exitFailure || errOut == "" {
			t.Errorf("%q: exit %d, %q", bad, code, errOut)
		}
	}
}

// TestFindUntrustedNamesEscaped: a name that carries terminal escapes is
// printed escaped, never raw, by find's text output.
func TestFindUntrustedNamesEscaped(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "evil\x1b]0;owned\x07.txt"), []byte("x"), 0o644)
	backupJSON(t, e, src)
	out := mustCoffer(t, e, "find", "evil*")
	if strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, "evil") {
		t.Errorf("find printed a raw escape: %q", out)
	}
}

// TestDump: a file's bytes to stdout; a directory as tar and zip with
// modes, times, symlinks and contents; --target writes a new file and
// refuses one that exists; a missing path fails.
func TestDump(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "web01")
	src := readSource(t)
	backupJSON(t, e, src)
	notes, _ := os.ReadFile(filepath.Join(src, "docs", "notes.txt"))

	if out := mustCoffer(t, e, "dump", "latest", filepath.Join(src, "docs", "notes.txt")); out != string(notes) {
		t.Errorf("dump of a file: %d bytes, want %d", len(out), len(notes))
	}

	tarOut := mustCoffer(t, e, "dump", "latest", src)
	tr := tar.NewReader(strings.NewReader(tarOut))
	seen := map[string]*tar.Header{}
	contents := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("dump tar: %v", err)
		}
		seen[h.Name] = h
		contents[h.Name], _ = io.ReadAll(tr)
	}
	for name, check := range map[string]func(h *tar.Header) bool{
		"src/":                func(h *tar.Header) bool { return h.Typeflag == tar.TypeDir },
		"src/empty/":          func(h *tar.Header) bool { return h.Typeflag == tar.TypeDir && h.Mode == 0o700 },
		"src/bin/run.sh":      func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg && h.Mode == 0o755 },
		"src/bin/link":        func(h *tar.Header) bool { return h.Typeflag == tar.TypeSymlink && h.Linkname == "../docs/notes.txt" },
		"src/docs/notes.txt":  func(h *tar.Header) bool { return h.Mode == 0o640 && h.Size == 3<<20 },
		"src/docs/Report.TXT": func(h *tar.Header) bool { return h.ModTime.Equal(time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)) },
	} {
		if h := seen[name]; h == nil || !check(h) {
			t.Errorf("dump tar entry %s: %+v", name, h)
		}
	}
	if !bytes.Equal(contents["src/docs/notes.txt"], notes) || string(contents["src/bin/run.sh"]) != "#!/bin/sh\necho hi\n" {
		t.Errorf("dump tar contents differ")
	}
	if len(seen) != 8 {
		t.Errorf("dump tar has %d entries, want 8: %v", len(seen), seen)
	}
	for name := range seen {
		if strings.HasPrefix(name, "/") || strings.Contains(name, "..") {
			t.Errorf("dump tar entry %q is not relative", name)
		}
	}

	// The whole snapshot: entries relative to the root.
	whole := mustCoffer(t, e, "dump", "latest", "/")
	if h, err := tar.NewReader(strings.NewReader(whole)).Next(); err != nil || strings.HasPrefix(h.Name, "/") {
		t.Errorf("dump latest /: first entry %+v, %v", h, err)
	}

	zipFile := filepath.Join(t.TempDir(), "docs.zip")
	mustCoffer(t, e, "dump", "latest", filepath.Join(src, "bin"), "--archive", "zip", "--target", zipFile)
	zr, err := zip.OpenReader(zipFile)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	zseen := map[string]string{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		zseen[f.Name] = f.Mode().String() + " " + string(b)
	}
	if zseen["bin/run.sh"] != "-rwxr-xr-x #!/bin/sh\necho hi\n" || zseen["bin/link"] != "Lrwxrwxrwx ../docs/notes.txt" || !strings.HasPrefix(zseen["bin/"], "d") {
		t.Errorf("dump zip: %q", zseen)
	}

	if _, errOut, code := coffer(t, e, "dump", "latest", filepath.Join(src, "bin"), "--target", zipFile); code != exitFailure || !strings.Contains(errOut, "exists") {
		t.Errorf("dump --target over an existing file: exit %d, %s", code, errOut)
	}
	if st, err := os.Stat(zipFile); err != nil || st.Size() == 0 {
		t.Errorf("the existing target was touched: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "m.tar")
	if _, errOut, code := coffer(t, e, "dump", "latest", filepath.Join(src, "nope"), "--target", missing); code != exitFailure || !strings.Contains(errOut, "not found") {
		t.Errorf("dump of a missing path: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed dump left its target behind: %v", err)
	}
	if _, _, code := coffer(t, e, "dump", "latest", src, "--archive", "rar"); code != exitFailure {
		t.Errorf("dump --archive rar: exit %d", code)
	}
}

// TestDumpLeavesOutWhatZipCannotHold: a FIFO goes into tar, not into
// zip, which says so on stderr and exits 3; the archive written to
// --target is whole and kept.
func TestDumpLeavesOutWhatZipCannotHold(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644)
	if err := unix.Mkfifo(filepath.Join(src, "pipe"), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	backupJSON(t, e, src)
	tarOut := mustCoffer(t, e, "dump", "latest", src)
	tr := tar.NewReader(strings.NewReader(tarOut))
	fifo := false
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		fifo = fifo || (h.Typeflag == tar.TypeFifo && strings.HasSuffix(h.Name, "/pipe"))
	}
	if !fifo {
		t.Errorf("dump tar has no FIFO entry")
	}
	target := filepath.Join(t.TempDir(), "out.zip")
	_, errOut, code := coffer(t, e, "dump", "latest", src, "--archive", "zip", "--target", target)
	if code != exitPartial || !strings.Contains(errOut, "left out") || !strings.Contains(errOut, "pipe") {
		t.Errorf("dump zip of a FIFO: exit %d, %s", code, errOut)
	}
	zr, err := zip.OpenReader(target)
	if err != nil {
		t.Fatalf("the zip archive with an entry left out was not kept whole: %v", err)
	}
	defer zr.Close()
	if len(zr.File) != 2 { // the directory and f
		t.Errorf("zip holds %d entries, want 2", len(zr.File))
	}
}

// TestDumpRefusesTerminal: dump writes no file bytes (which could be
// escape sequences) to a terminal; redirected, it writes them.
func TestDumpRefusesTerminal(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("\x1b]0;owned\x07"), 0o644)
	backupJSON(t, e, src)
	_, tty := openPTY(t)
	errOut, code := runRaw(t, e, tty, "dump", "latest", filepath.Join(src, "f"))
	if code != exitFailure || !strings.Contains(errOut, "terminal") {
		t.Errorf("dump to a terminal: exit %d, %s", code, errOut)
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if errOut, code := runRaw(t, e, out, "dump", "latest", filepath.Join(src, "f")); code != exitOK {
		t.Fatalf("dump to a file: exit %d, %s", code, errOut)
	}
	if b, _ := os.ReadFile(out.Name()); string(b) != "\x1b]0;owned\x07" {
		t.Errorf("dump to a file wrote %q, want the bytes unchanged", b)
	}
}

// saveBombSnapshot records in e's local vault (as someone with the
// vault directory could) a snapshot of a tree bomb: levels trees, each
// directory naming the one below twice, over one file, 2^levels files
// in all, while the record claims one file and one directory.
func saveBombSnapshot(t *testing.T, e *testEnv, levels int) vault.ID {
	t.Helper()
	v := openTestVault(t, e)
	defer v.Close()
	ctx := context.Background()
	content := []byte("bomb")
	id := v.BlobID(content)
	if _, err := v.SaveBlob(ctx, vault.DataBlob, id, v.Codec().Encode(nil, content), len(content)); err != nil {
		t.Fatal(err)
	}
	tid, err := v.SaveTree(ctx, &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("f"), Perm: 0o600, Size: 4, Content: []vault.ID{id}}}})
	if err != nil {
		t.Fatal(err)
	}
	for range levels {
		if tid, err = v.SaveTree(ctx, &format.Tree{Nodes: []format.Node{
			{Kind: format.KindDir, Name: []byte("a"), Perm: 0o700, Subtree: tid},
			{Kind: format.KindDir, Name: []byte("b"), Perm: 0o700, Subtree: tid}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: e.now(), Host: "bomber", Paths: []string{"/b"}, Tree: tid, Files: 1, Dirs: 1, Bytes: 4})
	if err != nil {
		t.Fatal(err)
	}
	return s.ID
}

// TestAttackDumpFindTreeBomb: a snapshot whose 41 trees expand to 2^40
// files but whose record claims two entries: dump (tar and zip), find and
// stats stop at the record's bound with an error, having written a bounded
// archive, instead of streaming without end.
func TestAttackDumpFindTreeBomb(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644)
	backupJSON(t, e, src)
	id := saveBombSnapshot(t, e, 40)
	for _, args := range [][]string{
		{"dump", id.String(), "/"},
		{"dump", id.String(), "/a", "--archive", "zip"},
		{"find", "f", "--snapshot", id.String()},
		{"stats", id.String()},
		{"stats", id.String(), "--mode", "raw-data"},
	} {
		out, errOut, code := coffer(t, e, args...)
		// Stopped by the entry bound, or by dump's byte bound (the second
		// file already exceeds the 4 bytes the record says).
		if code != exitFailure || !strings.Contains(errOut, "tree bomb") && !strings.Contains(errOut, "more than the 4 bytes its record says") {
			t.Errorf("%v on a tree bomb: exit %d, %s", args, code, errOut)
		}
		if len(out) > 1<<20 {
			t.Errorf("%v wrote %d bytes before stopping", args, len(out))
		}
	}
	// A larger --max-entries is honoured, and still a bound.
	if _, errOut, code := coffer(t, e, "dump", id.String(), "/", "--max-entries", "1000"); code != exitFailure || !strings.Contains(errOut, "stopped after 1000 entries") {
		t.Errorf("dump --max-entries 1000 of a tree bomb: exit %d, %s", code, errOut)
	}
}

// TestAttackDumpContentBomb: a file whose node names one chunk a
// thousand times (and claims the matching size) in a snapshot whose
// record says 4 bytes: dump stops before writing what the record does not
// account for.
func TestAttackDumpContentBomb(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644)
	backupJSON(t, e, src)
	v := openTestVault(t, e)
	ctx := context.Background()
	chunk := randBytes(5, 64<<10)
	id := v.BlobID(chunk)
	if _, err := v.SaveBlob(ctx, vault.DataBlob, id, v.Codec().Encode(nil, chunk), len(chunk)); err != nil {
		t.Fatal(err)
	}
	n := format.Node{Kind: format.KindFile, Name: []byte("big"), Perm: 0o600, Size: 1000 * uint64(len(chunk))}
	for range 1000 {
		n.Content = append(n.Content, id)
	}
	tid, err := v.SaveTree(ctx, &format.Tree{Nodes: []format.Node{n}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: e.now(), Host: "bomber", Paths: []string{"/big"}, Tree: tid, Files: 1, Bytes: 4})
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	for _, args := range [][]string{{"dump", s.ID.String(), "/"}, {"dump", s.ID.String(), "/big"}} {
		out, errOut, code := coffer(t, e, args...)
		if code != exitFailure || !strings.Contains(errOut, "more than the 4 bytes its record says") || len(out) > len(chunk) {
			t.Errorf("%v of a content bomb: exit %d, %d bytes written, %s", args, code, len(out), errOut)
		}
	}
}

// TestRemoteFindDump: through a vault server, a backup-reader finds
// files (names and metadata) but may not dump their contents; an
// operator dumps.
func TestRemoteFindDump(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_HOST", "web01")
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	op := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-operator", "--name", "web01"))
	reader := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-reader", "--name", "dash"))
	e.setenv("COFFER_TOKEN", op)
	src := readSource(t)
	id := backupJSON(t, e, src)
	notes, _ := os.ReadFile(filepath.Join(src, "docs", "notes.txt"))

	e.setenv("COFFER_TOKEN", reader)
	ms := findJSON(t, e, "*.txt")
	if len(ms) != 1 || ms[0].SnapshotID != id || ms[0].Path != filepath.Join(src, "docs", "notes.txt") {
		t.Errorf("remote find as a reader: %+v", ms)
	}
	if _, errOut, code := coffer(t, e, "dump", "latest", filepath.Join(src, "docs", "notes.txt")); code != exitFailure || !strings.Contains(errOut, "forbidden") {
		t.Errorf("remote dump as a backup-reader: exit %d, %s", code, errOut)
	}

	e.setenv("COFFER_TOKEN", op)
	if out := mustCoffer(t, e, "dump", "latest", filepath.Join(src, "docs", "notes.txt")); out != string(notes) {
		t.Errorf("remote dump of a file: %d bytes, want %d", len(out), len(notes))
	}
	tr := tar.NewReader(strings.NewReader(mustCoffer(t, e, "dump", id[:8], filepath.Join(src, "docs"))))
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "docs/notes.txt" {
			if b, _ := io.ReadAll(tr); !bytes.Equal(b, notes) {
				t.Errorf("remote dump tar: notes.txt differs")
			}
		}
		n++
	}
	if n != 3 {
		t.Errorf("remote dump tar: %d entries, want 3", n)
	}
}

func statsOf(t *testing.T, e *testEnv, args ...string) statsJSON {
	t.Helper()
	var s statsJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, append([]string{"stats", "--json"}, args...)...)), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStats: restore-size counts every snapshot's files; raw-data counts
// each blob once, with stored sizes and both ratios on a local vault.
func TestStats(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "web01")
	src := t.TempDir()
	text := bytes.Repeat([]byte("all work and no play makes jack a dull boy\n"), 50_000) // compressible
	writeFile(t, filepath.Join(src, "a", "text"), text, 0o644)
	writeFile(t, filepath.Join(src, "a", "rand"), randBytes(3, 1<<20), 0o644)
	first := backupJSON(t, e, src)
	writeFile(t, filepath.Join(src, "b"), []byte("new"), 0o644)
	backupJSON(t, e, src)

	rs := statsOf(t, e)
	wantOne := uint64(len(text) + 1<<20)
	if rs.Mode != "restore-size" || rs.Snapshots != 2 || rs.Total.Files != 5 || rs.Total.TotalSize != 2*wantOne+3 || len(rs.Each) != 2 ||
		rs.Each[0].ID != first || rs.Each[0].TotalSize != wantOne || rs.Total.Blobs != 0 {
		t.Errorf("stats restore-size: %+v", rs)
	}
	rd := statsOf(t, e, "--mode", "raw-data")
	tot := rd.Total
	if tot.StoredSize == nil || tot.DataBlobs == 0 || tot.TreeBlobs == 0 || tot.RawSize < wantOne || tot.RawSize > wantOne+4096 {
		t.Fatalf("stats raw-data: %+v", tot)
	}
	// Both snapshots hold the same 3 MiB: stored once, restored twice.
	if tot.DedupRatio < 1.9 || tot.CompressionRatio < 1.5 || *tot.StoredSize >= tot.RawSize {
		t.Errorf("stats raw-data ratios: dedup %.2f compression %.2f stored %d raw %d", tot.DedupRatio, tot.CompressionRatio, *tot.StoredSize, tot.RawSize)
	}
	if rd.Each[0].RawSize >= tot.RawSize+1 || rd.Each[1].Blobs <= rd.Each[0].Blobs {
		t.Errorf("stats raw-data per snapshot: %+v", rd.Each)
	}
	if one := statsOf(t, e, first[:8], "--mode", "raw-data"); one.Snapshots != 1 || one.Total.DedupRatio > 1.01 {
		t.Errorf("stats of one snapshot: %+v", one)
	}
	if out := mustCoffer(t, e, "stats", "--mode", "raw-data"); !strings.Contains(out, "Dedup ratio") || !strings.Contains(out, "Compression ratio") {
		t.Errorf("stats text:\n%s", out)
	}
	if _, _, code := coffer(t, e, "stats", "--mode", "blobs"); code != exitFailure {
		t.Errorf("stats --mode blobs: exit %d", code)
	}
}

// TestRemoteStatsRoles: through a server a backup-reader gets the
// restore size (names and metadata) but not blob sizes, which tell about
// contents; an operator gets raw data without stored sizes.
func TestRemoteStatsRoles(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_HOST", "web01")
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	op := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-operator", "--name", "web01"))
	reader := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-reader", "--name", "dash"))
	e.setenv("COFFER_TOKEN", op)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), randBytes(1, 100_000), 0o644)
	backupJSON(t, e, src)

	e.setenv("COFFER_TOKEN", reader)
	if rs := statsOf(t, e); rs.Total.Files != 1 || rs.Total.TotalSize != 100_000 {
		t.Errorf("remote stats as a reader: %+v", rs)
	}
	if _, errOut, code := coffer(t, e, "stats", "--mode", "raw-data"); code != exitFailure || !strings.Contains(errOut, "forbidden") {
		t.Errorf("remote stats raw-data as a reader: exit %d, %s", code, errOut)
	}
	e.setenv("COFFER_TOKEN", op)
	rd := statsOf(t, e, "--mode", "raw-data")
	if rd.Total.RawSize < 100_000 || rd.Total.StoredSize != nil || rd.Total.DataBlobs == 0 {
		t.Errorf("remote stats raw-data as an operator: %+v", rd.Total)
	}
}

// secretStrings are the encodings in which key bytes could appear in
// output: raw, base64 (as encoding/json writes []byte) and hex.
func secretStrings(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	return []string{string(b), base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b), hex.EncodeToString(b)}
}

// vaultSecrets reads, as a test may, every secret of e's local vault that
// cat could leak: the platform key file, and each keyring generation's
// root secret, wrapped DEKs and MAC.
func vaultSecrets(t *testing.T, e *testEnv) []string {
	t.Helper()
	kf, err := os.ReadFile(e.keyFile())
	if err != nil {
		t.Fatal(err)
	}
	var keyFile struct {
		Keys []struct {
			Key []byte `json:"key"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(kf, &keyFile); err != nil || len(keyFile.Keys) == 0 || len(keyFile.Keys[0].Key) == 0 {
		t.Fatalf("key file does not decode as the test expects: %v", err)
	}
	var out []string
	for _, k := range keyFile.Keys {
		out = append(out, secretStrings(k.Key)...)
	}
	n := 0
	filepath.WalkDir(e.storeDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Base(filepath.Dir(p)) != string(vault.KeyObject) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var kr format.Keyring
		if json.Unmarshal(b, &kr) != nil || len(kr.Root) == 0 || len(kr.DEKs) == 0 {
			t.Fatalf("keyring %s does not decode as the test expects", p)
		}
		n++
		out = append(out, secretStrings(kr.Root)...)
		out = append(out, secretStrings(kr.MAC)...)
		for _, d := range kr.DEKs {
			out = append(out, secretStrings(d.Wrapped)...)
		}
		return nil
	})
	if n == 0 {
		t.Fatal("no keyring found in the store")
	}
	return out
}

// TestCatLocal: cat shows the decoded config, keyring, snapshot and tree,
// and never key material: not the key file, not the keyring's root
// secret, wrapped DEKs or MAC, even after a DEK rotation.
func TestCatLocal(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "web01")
	src := readSource(t)
	id := backupJSON(t, e, src, "--tag", "t1")
	mustCoffer(t, e, "key", "rotate")

	var cfg format.Config
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "cat", "config")), &cfg); err != nil || cfg.Format == 0 || cfg.Chunker.Avg == 0 || cfg.ID == "" {
		t.Errorf("cat config: %+v, %v", cfg, err)
	}
	kout := mustCoffer(t, e, "cat", "keyring")
	var kr format.KeyringInfo
	if err := json.Unmarshal([]byte(kout), &kr); err != nil || len(kr.DEKs) != 2 || kr.CurrentDEK != 2 || kr.KEK.Provider == "" {
		t.Errorf("cat keyring: %+v, %v\n%s", kr, err, kout)
	}
	var fields map[string]any
	json.Unmarshal([]byte(kout), &fields)
	for _, k := range []string{"root", "mac", "wrapped"} {
		if _, ok := fields[k]; ok || strings.Contains(kout, `"`+k+`"`) {
			t.Errorf("cat keyring has a %q field:\n%s", k, kout)
		}
	}
	var all strings.Builder
	for _, args := range [][]string{{"cat", "config"}, {"cat", "keyring"}, {"cat", "snapshot", "latest"}, {"cat", "tree", "latest"},
		{"cat", "tree", id[:8] + ":" + filepath.Join(src, "docs")}} {
		all.WriteString(mustCoffer(t, e, args...))
	}
	for _, s := range vaultSecrets(t, e) {
		if strings.Contains(all.String(), s) {
			t.Errorf("cat printed key material %q", s)
		}
	}

	var snap catSnapshotJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "cat", "snapshot", id[:8])), &snap); err != nil || snap.ID != id || snap.Host != "web01" || snap.Tags[0] != "t1" {
		t.Errorf("cat snapshot: %+v, %v", snap, err)
	}
	var tree catTreeJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "cat", "tree", id+":"+filepath.Join(src, "docs"))), &tree); err != nil ||
		len(tree.Nodes) != 2 || tree.Nodes[1].Name != "notes.txt" || len(tree.Nodes[1].Content) == 0 || tree.Nodes[1].Size != 3<<20 {
		t.Errorf("cat tree: %+v, %v", tree, err)
	}
	for _, bad := range [][]string{{"cat", "index"}, {"cat", "config", "x"}, {"cat", "tree"}, {"cat", "tree", "latest:" + filepath.Join(src, "docs", "notes.txt")},
		{"cat", "tree", "latest:/nope"}, {"cat", "snapshot", "latest:/x"}} {
		if _, errOut, code := coffer(t, e, bad...); code != exitFailure || errOut == "" {
			t.Errorf("%q: exit %d, %s", bad, code, errOut)
		}
	}
}

// TestAttackCatRoles: through a server, a backup-reader's and an
// operator's tokens are refused the vault's key metadata (cat config,
// cat keyring); a key-officer's and the owner's get it without key
// material; a key-officer, who lists nothing, is refused snapshots and
// trees.
func TestAttackCatRoles(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_HOST", "web01")
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	tok := map[string]string{"owner": srv.OwnerToken}
	for _, role := range []string{"backup-operator", "backup-reader", "key-officer", "backup-contributor"} {
		tok[role] = strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", role, "--name", role))
	}
	e.setenv("COFFER_TOKEN", tok["backup-operator"])
	src := readSource(t)
	backupJSON(t, e, src)

	for _, role := range []string{"backup-operator", "backup-reader", "backup-contributor"} {
		e.setenv("COFFER_TOKEN", tok[role])
		for _, kind := range []string{"config", "keyring"} {
			out, errOut, code := coffer(t, e, "cat", kind)
			if code != exitFailure || !strings.Contains(errOut, "forbidden") || out != "" {
				t.Errorf("%s: cat %s: exit %d, stdout %q, %s", role, kind, code, out, errOut)
			}
		}
	}
	for _, role := range []string{"owner", "key-officer"} {
		e.setenv("COFFER_TOKEN", tok[role])
		var kr format.KeyringInfo
		kout := mustCoffer(t, e, "cat", "keyring")
		if err := json.Unmarshal([]byte(kout), &kr); err != nil || len(kr.DEKs) != 1 || kr.Generation == 0 {
			t.Errorf("%s: cat keyring: %+v, %v", role, kr, err)
		}
		for _, k := range []string{`"root"`, `"wrapped"`, `"mac"`} {
			if strings.Contains(kout, k) {
				t.Errorf("%s: remote cat keyring shows %s:\n%s", role, k, kout)
			}
		}
		var cfg format.Config
		if err := json.Unmarshal([]byte(mustCoffer(t, e, "cat", "config")), &cfg); err != nil || cfg.ID == "" {
			t.Errorf("%s: cat config: %+v, %v", role, cfg, err)
		}
	}
	e.setenv("COFFER_TOKEN", tok["key-officer"])
	for _, kind := range []string{"snapshot", "tree"} {
		if out, errOut, code := coffer(t, e, "cat", kind, "latest", "--any-host"); code != exitFailure || !strings.Contains(errOut, "forbidden") || out != "" {
			t.Errorf("key-officer: cat %s: exit %d, %q, %s", kind, code, out, errOut)
		}
	}
	e.setenv("COFFER_TOKEN", tok["backup-reader"])
	var tree catTreeJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "cat", "tree", "latest:"+filepath.Join(src, "docs"))), &tree); err != nil || len(tree.Nodes) != 2 {
		t.Errorf("reader: cat tree: %+v, %v", tree, err)
	}
}

// TestAttackSourceReadsOwnOnly: in a vault whose dedup scope is "source",
// one source's token learns nothing of another's through find, dump,
// stats or cat: not its file names, not its contents, not its blob
// sizes, even naming the other's snapshot by ID.
func TestAttackSourceReadsOwnOnly(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "shared", "--dedup-scope", "source", "--vault", srv.URL, "--token", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL+"/shared")
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	web := strings.TrimSpace(mustCoffer(t, e, "source", "add", "web"))
	db := strings.TrimSpace(mustCoffer(t, e, "source", "add", "db"))
	webSrc, dbSrc := filepath.Join(t.TempDir(), "web"), filepath.Join(t.TempDir(), "db")
	writeFile(t, filepath.Join(webSrc, "index.html"), []byte("<h1>web</h1>\n"), 0o644)
	writeFile(t, filepath.Join(dbSrc, "payroll.csv"), randBytes(9, 200_000), 0o644)
	e.setenv("COFFER_TOKEN", web)
	backupJSON(t, e, webSrc)
	e.setenv("COFFER_TOKEN", db)
	dbID := backupJSON(t, e, dbSrc)

	e.setenv("COFFER_TOKEN", web)
	ms := findJSON(t, e, "*")
	for _, m := range ms {
		if strings.Contains(m.Path, "payroll") || strings.HasPrefix(m.Path, dbSrc) || m.SnapshotID == dbID {
			t.Errorf("web's find * sees db's %+v", m)
		}
	}
	if len(ms) == 0 || !strings.HasSuffix(ms[len(ms)-1].Path, "index.html") {
		t.Errorf("web's find * misses its own index.html: %+v", ms)
	}
	rd := statsOf(t, e, "--mode", "raw-data")
	if rd.Snapshots != 1 || rd.Total.RawSize >= 200_000 {
		t.Errorf("web's stats raw-data counts another source's data: %+v", rd.Total)
	}
	for _, args := range [][]string{
		{"find", "*", "--snapshot", dbID},
		{"dump", dbID, "/"},
		{"stats", dbID, "--mode", "raw-data"},
		{"cat", "snapshot", dbID},
		{"cat", "tree", dbID},
	} {
		out, errOut, code := coffer(t, e, args...)
		if code != exitFailure || strings.Contains(out, "payroll") || strings.Contains(errOut, "payroll") || strings.Contains(out, "200000") {
			t.Errorf("web's %v on db's snapshot: exit %d, %q, %s", args, code, out, errOut)
		}
	}
}
