package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/srcvol"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// testEnv is one user's world: COFFER_HOME in a temporary directory, an
// environment that holds nothing else, and a clock that moves one minute
// per command so that "latest" and the times shown are deterministic.
type testEnv struct {
	home string

	mu    sync.Mutex
	vars  map[string]string
	clock time.Time
	// volumes is the machine the commands find source volumes on (zero:
	// this one).
	volumes srcvol.Detector
}

// setVolumes makes the commands find source volumes with d.
func (e *testEnv) setVolumes(d srcvol.Detector) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.volumes = d
}

var clockStart = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	home := t.TempDir()
	return &testEnv{home: home, vars: map[string]string{"COFFER_HOME": home}, clock: clockStart}
}

func (e *testEnv) getenv(k string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.vars[k] // never the real environment: no HOME, no COFFER_VAULT
}

func (e *testEnv) setenv(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.vars[k] = v
}

func (e *testEnv) now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.clock
}

func (e *testEnv) tick() {
	e.mu.Lock()
	e.clock = e.clock.Add(time.Minute)
	e.mu.Unlock()
}

func (e *testEnv) keyFile() string  { return filepath.Join(e.home, "keys", "platform.key") }
func (e *testEnv) vaultDir() string { return filepath.Join(e.home, "vaults", "default") }
func (e *testEnv) storeDir() string { return filepath.Join(e.vaultDir(), "store") }

// coffer runs the CLI in-process, as main would, and returns what it
// printed and its exit code.
func coffer(t *testing.T, e *testEnv, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	e.tick()
	var out, errb bytes.Buffer
	e.mu.Lock()
	h := appHooks{volumes: e.volumes}
	e.mu.Unlock()
	code = runHooked(context.Background(), args, strings.NewReader(""), &out, &errb, e.getenv, e.now, h)
	return out.String(), errb.String(), code
}

// mustCoffer runs the CLI and fails the test unless it exits 0.
func mustCoffer(t *testing.T, e *testEnv, args ...string) string {
	t.Helper()
	out, errOut, code := coffer(t, e, args...)
	if code != exitOK {
		t.Fatalf("coffer %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// backupJSON runs `backup --json` and returns the new snapshot's full ID.
func backupJSON(t *testing.T, e *testEnv, args ...string) string {
	t.Helper()
	out := mustCoffer(t, e, append([]string{"backup", "--json"}, args...)...)
	var r struct {
		ID string `json:"snapshot_id"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.ID) != 64 {
		t.Fatalf("backup --json printed %q (%v)", out, err)
	}
	return r.ID
}

func listSnapshots(t *testing.T, e *testEnv) []snapshotJSON {
	t.Helper()
	var snaps []snapshotJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "snapshots", "--json")), &snaps); err != nil {
		t.Fatalf("snapshots --json: %v", err)
	}
	return snaps
}

// --- data sets ---------------------------------------------------------

// randBytes returns n deterministic pseudo-random (incompressible) bytes.
func randBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func writeFile(t testing.TB, path string, data []byte, perm fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // umask
		t.Fatal(err)
	}
}

// sampleData makes a small directory of every common kind of entry:
//
//	data/a.txt              text, 0600
//	data/docs/b.txt         text, 0640
//	data/docs/big.bin       9 MiB random (at least two chunks: the maximum is 8 MiB)
//	data/docs/empty         empty
//	data/docs/deep/c.txt    text
//	data/link -> a.txt      symlink
//	data/skip.tmp           for --exclude
func sampleData(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	writeFile(t, filepath.Join(dir, "a.txt"), []byte("alpha\n"), 0o600)
	writeFile(t, filepath.Join(dir, "docs", "b.txt"), []byte("bravo bravo bravo\n"), 0o640)
	writeFile(t, filepath.Join(dir, "docs", "big.bin"), randBytes(1, 9<<20), 0o644)
	writeFile(t, filepath.Join(dir, "docs", "empty"), nil, 0o644)
	writeFile(t, filepath.Join(dir, "docs", "deep", "c.txt"), []byte("charlie\n"), 0o644)
	writeFile(t, filepath.Join(dir, "skip.tmp"), []byte("scratch\n"), 0o644)
	if err := os.Symlink("a.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// smallData is sampleData without the multi-chunk file, so that every
// count (blobs, packs, sizes) is the same on every run: golden tests.
func smallData(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	writeFile(t, filepath.Join(dir, "a.txt"), []byte("alpha\n"), 0o600)
	writeFile(t, filepath.Join(dir, "docs", "b.txt"), []byte("bravo bravo bravo\n"), 0o640)
	writeFile(t, filepath.Join(dir, "docs", "r.bin"), randBytes(2, 100_000), 0o644)
	writeFile(t, filepath.Join(dir, "docs", "deep", "c.txt"), []byte("charlie\n"), 0o644)
	return dir
}

// assertSameTree checks that dst holds exactly what src holds: the same
// entries with the same types, permissions, contents, symlink targets and
// file modification times.
func assertSameTree(t testing.TB, src, dst string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		seen[rel] = true
		q := filepath.Join(dst, rel)
		si, err := os.Lstat(p)
		if err != nil {
			return err
		}
		di, err := os.Lstat(q)
		if err != nil {
			t.Errorf("restored copy lacks %s: %v", rel, err)
			return nil
		}
		if si.Mode() != di.Mode() {
			t.Errorf("%s: mode %v, restored %v", rel, si.Mode(), di.Mode())
			return nil
		}
		switch {
		case si.Mode().IsRegular():
			a, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(q)
			if err != nil {
				return err
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s: restored content differs (%d bytes, restored %d)", rel, len(a), len(b))
			}
			if !si.ModTime().Equal(di.ModTime()) {
				t.Errorf("%s: mtime %v, restored %v", rel, si.ModTime(), di.ModTime())
			}
		case si.Mode()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(q)
			if a != b {
				t.Errorf("%s: symlink to %q, restored to %q", rel, a, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		if !seen[rel] {
			t.Errorf("restored copy has %s, which the source does not", rel)
		}
		return nil
	})
}

// regularFiles lists the regular files below dir, relative to it.
func regularFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// --- golden files ------------------------------------------------------

// normaliser replaces what changes from run to run (IDs, paths, times,
// sealed sizes) with stable placeholders.
type normaliser struct{ pairs []string }

func (n *normaliser) add(old, new string) {
	if old != "" {
		n.pairs = append(n.pairs, old, new)
	}
}

// addSnapshot names a snapshot's full and short ID.
func (n *normaliser) addSnapshot(id, name string) {
	n.add(id, "<"+name+">")
	n.add(id[:8], "<"+name+">")
}

var (
	reTime     = regexp.MustCompile(`\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d| [A-Z]{2,5}\b| [+-]\d{2,4}\b)?`)
	reHexID    = regexp.MustCompile(`\b[0-9a-f]{64}\b`)
	reSize     = regexp.MustCompile(`\b\d+(\.\d)? (B|KiB|MiB|GiB)\b`)
	reSealedNo = regexp.MustCompile(`"(bytes_added|stored_bytes|bytes_read)": \d+`)
	reDuration = regexp.MustCompile(`"duration_seconds": [0-9.e-]+`)
)

func (n *normaliser) apply(s string) string {
	// Longest first, so that a path is replaced before a prefix of it.
	pairs := slices.Clone(n.pairs)
	idx := make([]int, len(pairs)/2)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return len(pairs[2*idx[a]]) > len(pairs[2*idx[b]]) })
	var ordered []string
	for _, i := range idx {
		ordered = append(ordered, pairs[2*i], pairs[2*i+1])
	}
	s = strings.NewReplacer(ordered...).Replace(s)
	s = reHexID.ReplaceAllString(s, "<ID>")
	s = reTime.ReplaceAllString(s, "<TIME>")
	s = reSize.ReplaceAllString(s, "<SIZE>")
	s = reSealedNo.ReplaceAllString(s, `"$1": <N>`)
	s = reDuration.ReplaceAllString(s, `"duration_seconds": <N>`)
	return s
}

// golden compares got with testdata/golden/name; -update rewrites it.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got == string(want) {
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Errorf("%s differs from the golden file at line %d:\n got: %q\nwant: %q\n(whole output:\n%s)\nrun go test -run %s -update if the change is intended",
				path, i+1, g, w, got, t.Name())
			return
		}
	}
}

// tableCells rewrites a tabwriter table (header and rows) as cells
// separated by " | ", split where the header's columns start, so that a
// golden file does not depend on the width of temporary paths;
// assertAligned checks the alignment itself.
func tableCells(table string) string {
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	cols := regexp.MustCompile(`\S+`).FindAllStringIndex(lines[0], -1)
	var b strings.Builder
	for _, l := range lines {
		for j, c := range cols {
			end := len(l)
			if j+1 < len(cols) {
				end = min(len(l), cols[j+1][0])
			}
			if j > 0 {
				b.WriteString(" | ")
			}
			b.WriteString(strings.TrimSpace(l[min(c[0], len(l)):end]))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// assertAligned checks that every row of a table starts each column where
// the header does.
func assertAligned(t *testing.T, table string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	cols := regexp.MustCompile(`\S+`).FindAllStringIndex(lines[0], -1)
	for _, row := range lines[1:] {
		for _, c := range cols[1:] {
			start := c[0]
			if len(row) < start {
				break // trailing empty cells
			}
			if row[start-1] != ' ' || row[start-2] != ' ' {
				t.Errorf("row %q: column at %d is not separated from the previous one", row, start)
			}
			if start < len(row) && row[start] == ' ' && strings.TrimSpace(row[start:min(len(row), start+2)]) != "" {
				t.Errorf("row %q: column at %d is misaligned", row, start)
			}
		}
	}
}

// --- A: the CLI --------------------------------------------------------

func TestBackupCreatesVaultAndPrintsID(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	out, errOut, code := coffer(t, e, "backup", data, "--host", "h1")
	if code != exitOK {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	m := regexp.MustCompile(`^snapshot ([0-9a-f]{8}) saved\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("backup did not print the snapshot ID first:\n%s", out)
	}
	if !strings.Contains(errOut, "created vault") || !strings.Contains(errOut, e.keyFile()) {
		t.Errorf("first backup does not say that it created the vault and where the key file is:\n%s", errOut)
	}

	snaps := listSnapshots(t, e)
	if len(snaps) != 1 || !strings.HasPrefix(snaps[0].ID, m[1]) {
		t.Fatalf("backup printed %s, snapshots lists %+v", m[1], snaps)
	}
	id := snaps[0].ID

	// The documented layout.
	for _, p := range []string{
		e.keyFile(),
		filepath.Join(e.vaultDir(), "catalog.db"),
		filepath.Join(e.storeDir(), "config"),
		filepath.Join(e.storeDir(), "keys", "0000000001"),
		filepath.Join(e.storeDir(), "snapshots", id),
	} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("vault layout: %v", err)
		}
	}
	packs, _ := filepath.Glob(filepath.Join(e.storeDir(), "packs", "*", "*"))
	if len(packs) == 0 {
		t.Errorf("no packs under %s", filepath.Join(e.storeDir(), "packs"))
	}
	for _, p := range packs {
		if name, dir := filepath.Base(p), filepath.Base(filepath.Dir(p)); !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(name) || dir != name[:2] {
			t.Errorf("pack %s is not at packs/<2 hex>/<64 hex>", p)
		}
	}
	if fi, err := os.Stat(e.keyFile()); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}

	n := &normaliser{}
	n.add(e.home, "$COFFER_HOME")
	n.add(data, "$DATA")
	n.addSnapshot(id, "SNAP1")
	golden(t, "backup_first.txt", n.apply("stdout:\n"+out+"stderr:\n"+errOut))

	// A second backup does not announce a new vault.
	out, errOut, code = coffer(t, e, "backup", data, "--host", "h1")
	if code != exitOK || strings.Contains(errOut, "created vault") {
		t.Errorf("second backup: exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "(4 files unchanged)") {
		t.Errorf("second backup of unchanged data should reuse all 4 files:\n%s", out)
	}
}

func TestSnapshotsListing(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)

	// Before the first backup there is no vault: an error, not a list.
	if _, errOut, code := coffer(t, e, "snapshots"); code != exitFailure || !strings.Contains(errOut, "coffer backup") {
		t.Errorf("snapshots before any backup: exit %d, %q", code, errOut)
	}
	// An empty vault lists nothing.
	mustCoffer(t, e, "vault", "create", "default")
	if out := mustCoffer(t, e, "snapshots"); out != "no snapshots yet\n" {
		t.Errorf("snapshots of an empty vault: %q", out)
	}
	if out := mustCoffer(t, e, "snapshots", "--json"); out != "[]\n" {
		t.Errorf("snapshots --json of an empty vault: %q", out)
	}
	id1 := backupJSON(t, e, data, "--host", "alpha", "--tag", "daily", "--tag", "first")
	t1 := e.now()
	id2 := backupJSON(t, e, data, filepath.Join(data, "docs"), "--host", "beta")
	t2 := e.now()

	out := mustCoffer(t, e, "snapshots")
	table, ok := strings.CutSuffix(out, "2 snapshots\n")
	if !ok {
		t.Errorf("snapshots does not end with the count:\n%s", out)
	}
	assertAligned(t, table)
	n := &normaliser{}
	n.add(e.home, "$COFFER_HOME")
	n.add(data, "$DATA")
	n.addSnapshot(id1, "SNAP1")
	n.addSnapshot(id2, "SNAP2")
	golden(t, "snapshots.txt", n.apply(tableCells(table)))

	raw := mustCoffer(t, e, "snapshots", "--json")
	golden(t, "snapshots.json", n.apply(raw))
	var objs []map[string]any
	if err := json.Unmarshal([]byte(raw), &objs); err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("snapshots --json lists %d snapshots, want 2", len(objs))
	}
	for _, o := range objs {
		for _, k := range []string{"id", "host", "paths", "tags", "files", "bytes", "bytes_added", "time", "tree"} {
			if _, ok := o[k]; !ok {
				t.Errorf("snapshots --json: field %q missing in %v", k, o)
			}
		}
		if _, ok := o["tags"].([]any); !ok {
			t.Errorf("tags is %T (%v), want a JSON array even when empty", o["tags"], o["tags"])
		}
	}

	snaps := listSnapshots(t, e)
	want := []struct {
		id    string
		time  time.Time
		host  string
		paths []string
		tags  []string
	}{
		{id1, t1, "alpha", []string{data}, []string{"daily", "first"}},
		// docs is inside data: it is backed up already, so not listed again.
		{id2, t2, "beta", []string{data}, []string{}},
	}
	var sum uint64
	for _, f := range []string{"a.txt", "docs/b.txt", "docs/r.bin", "docs/deep/c.txt"} {
		fi, err := os.Stat(filepath.Join(data, f))
		if err != nil {
			t.Fatal(err)
		}
		sum += uint64(fi.Size())
	}
	for i, w := range want {
		s := snaps[i]
		if s.ID != w.id || s.Host != w.host || !slices.Equal(s.Paths, w.paths) || !slices.Equal(s.Tags, w.tags) {
			t.Errorf("snapshot %d: got id %s host %q paths %q tags %q, want %s %q %q %q", i, s.ID, s.Host, s.Paths, s.Tags, w.id, w.host, w.paths, w.tags)
		}
		if s.Files != 4 || s.Bytes != sum {
			t.Errorf("snapshot %d: files %d bytes %d, want 4 and %d", i, s.Files, s.Bytes, sum)
		}
		if !s.Time.Equal(w.time) {
			t.Errorf("snapshot %d: time %v is not the injected clock's", i, s.Time)
		}
	}
	if snaps[0].BytesAdded < 100_000 {
		t.Errorf("first snapshot added %d bytes, less than its incompressible file", snaps[0].BytesAdded)
	}
	// The second backup has another host, so no parent, but every chunk
	// is in the vault already: at most new trees are added.
	if snaps[1].BytesAdded >= snaps[0].BytesAdded/10 {
		t.Errorf("second snapshot of the same data added %d bytes (first %d): no dedup?", snaps[1].BytesAdded, snaps[0].BytesAdded)
	}
}

func TestLs(t *testing.T) {
	e := newEnv(t)
	data := sampleData(t)
	e.setenv("COFFER_HOST", "h") // the host of backups and of "latest"
	id := backupJSON(t, e, data)

	out := mustCoffer(t, e, "ls", "latest")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// The tree mirrors the absolute path: every parent of data is listed.
	var want []string
	for p := data; p != "/"; p = filepath.Dir(p) {
		want = append(want, p)
	}
	slices.Reverse(want)
	for _, f := range []string{"a.txt", "docs", "docs/b.txt", "docs/big.bin", "docs/deep", "docs/deep/c.txt", "docs/empty", "link", "skip.tmp"} {
		want = append(want, filepath.Join(data, f))
	}
	if !slices.Equal(lines, want) {
		t.Errorf("ls latest:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}

	// A prefix of the ID and a path inside the snapshot.
	out = mustCoffer(t, e, "ls", id[:6], filepath.Join(data, "docs"))
	want = nil
	for _, f := range []string{"docs", "docs/b.txt", "docs/big.bin", "docs/deep", "docs/deep/c.txt", "docs/empty"} {
		want = append(want, filepath.Join(data, f))
	}
	if got := strings.Split(strings.TrimSpace(out), "\n"); !slices.Equal(got, want) {
		t.Errorf("ls %s docs:\n%s\nwant:\n%s", id[:6], out, strings.Join(want, "\n"))
	}
	// A single file.
	if out := mustCoffer(t, e, "ls", id, filepath.Join(data, "a.txt")); out != filepath.Join(data, "a.txt")+"\n" {
		t.Errorf("ls of one file: %q", out)
	}
	// A path that is not in the snapshot.
	_, errOut, code := coffer(t, e, "ls", "latest", filepath.Join(data, "nope"))
	if code != exitFailure || !strings.Contains(errOut, "not found") {
		t.Errorf("ls of a missing path: exit %d, %q", code, errOut)
	}

	// --json: one object per line.
	out = mustCoffer(t, e, "ls", "latest", data, "--json")
	sc := bufio.NewScanner(strings.NewReader(out))
	got := map[string]nodeJSON{}
	for sc.Scan() {
		var n nodeJSON
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&n); err != nil {
			t.Fatalf("ls --json line %q: %v", sc.Text(), err)
		}
		got[strings.TrimPrefix(n.Path, data)] = n
	}
	if len(got) != 10 {
		t.Errorf("ls --json printed %d objects, want 10:\n%s", len(got), out)
	}
	checks := []struct {
		rel, typ, mode string
		size           uint64
		target         string
	}{
		{"", "dir", "drwxr-xr-x", 0, ""},
		{"/a.txt", "file", "-rw-------", 6, ""},
		{"/docs/b.txt", "file", "-rw-r-----", 18, ""},
		{"/docs/big.bin", "file", "-rw-r--r--", 9 << 20, ""},
		{"/docs/empty", "file", "-rw-r--r--", 0, ""},
		{"/link", "symlink", "Lrwxrwxrwx", 0, "a.txt"},
	}
	for _, c := range checks {
		n, ok := got[c.rel]
		if !ok {
			t.Errorf("ls --json lacks %s", c.rel)
			continue
		}
		if n.Type != c.typ || n.Mode != c.mode || (c.typ == "file" && n.Size != c.size) || n.Target != c.target {
			t.Errorf("ls --json %s: %+v, want type %s mode %s size %d target %q", c.rel, n, c.typ, c.mode, c.size, c.target)
		}
	}
	if n := got["/docs/big.bin"]; n.Chunks < 2 {
		t.Errorf("big.bin has %d chunks, want several", n.Chunks)
	}
	if fi, err := os.Stat(filepath.Join(data, "a.txt")); err == nil && !got["/a.txt"].MTime.Equal(fi.ModTime()) {
		t.Errorf("ls --json mtime %v, file has %v", got["/a.txt"].MTime, fi.ModTime())
	}

	// -l shows the symlink target.
	out = mustCoffer(t, e, "ls", "latest", filepath.Join(data, "link"), "-l")
	if !strings.HasSuffix(out, filepath.Join(data, "link")+" -> a.txt\n") {
		t.Errorf("ls -l of a symlink: %q", out)
	}
}

func TestRestoreRoundTrip(t *testing.T) {
	e := newEnv(t)
	data := sampleData(t)
	mustCoffer(t, e, "backup", data)
	target := filepath.Join(t.TempDir(), "restored")
	out := mustCoffer(t, e, "restore", "latest", "--target", target)
	if !strings.Contains(out, "restored snapshot") || !strings.Contains(out, "6 files") {
		t.Errorf("restore printed %q", out)
	}
	assertSameTree(t, data, filepath.Join(target, data))
}

func TestRestoreInclude(t *testing.T) {
	e := newEnv(t)
	data := sampleData(t)
	mustCoffer(t, e, "backup", data)

	target := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", target, "--include", filepath.Join(data, "docs", "b.txt"))
	want := []string{strings.TrimPrefix(filepath.Join(data, "docs", "b.txt"), "/")}
	if got := regularFiles(t, target); !slices.Equal(got, want) {
		t.Errorf("restore --include one file restored %q, want %q", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(target, data, "docs", "b.txt")); err != nil || string(b) != "bravo bravo bravo\n" {
		t.Errorf("included file: %q, %v", b, err)
	}

	// A directory brings what is below it, and nothing beside it.
	target = t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", target, "--include", filepath.Join(data, "docs", "deep"))
	want = []string{strings.TrimPrefix(filepath.Join(data, "docs", "deep", "c.txt"), "/")}
	if got := regularFiles(t, target); !slices.Equal(got, want) {
		t.Errorf("restore --include a directory restored %q, want %q", got, want)
	}
}

func TestRestoreExistingTarget(t *testing.T) {
	e := newEnv(t)
	data := sampleData(t)
	mustCoffer(t, e, "backup", data)

	target := t.TempDir()
	existing := filepath.Join(target, data, "a.txt")
	writeFile(t, existing, []byte("precious local edit\n"), 0o644)

	out, errOut, code := coffer(t, e, "restore", "latest", "--target", target)
	if code == exitOK {
		t.Fatalf("restore over an existing file without --overwrite exited 0:\n%s%s", out, errOut)
	}
	if !strings.Contains(errOut, existing[len(target):]) || !strings.Contains(errOut, "--overwrite") {
		t.Errorf("restore does not name the file it left alone and the way out:\n%s", errOut)
	}
	if b, _ := os.ReadFile(existing); string(b) != "precious local edit\n" {
		t.Errorf("restore without --overwrite changed the existing file to %q", b)
	}
	// Everything else was restored.
	if b, err := os.ReadFile(filepath.Join(target, data, "docs", "b.txt")); err != nil || string(b) != "bravo bravo bravo\n" {
		t.Errorf("other files were not restored: %q, %v", b, err)
	}

	mustCoffer(t, e, "restore", "latest", "--target", target, "--overwrite")
	if b, _ := os.ReadFile(existing); string(b) != "alpha\n" {
		t.Errorf("restore --overwrite left %q", b)
	}
	assertSameTree(t, data, filepath.Join(target, data))
}

func TestDiff(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	id1 := backupJSON(t, e, data)

	writeFile(t, filepath.Join(data, "new.txt"), []byte("new\n"), 0o644)            // +
	writeFile(t, filepath.Join(data, "newdir", "n.txt"), []byte("n\n"), 0o644)      // + and +
	if err := os.Remove(filepath.Join(data, "docs", "deep", "c.txt")); err != nil { // -
		t.Fatal(err)
	}
	bravo := filepath.Join(data, "docs", "b.txt")
	fi, err := os.Stat(bravo)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, bravo, []byte("BRAVO BRAVO BRAVO\n"), 0o640) // M, same size
	// A new mtime even on a coarse clock, or backup rightly takes the
	// file for unchanged.
	if err := os.Chtimes(bravo, fi.ModTime(), fi.ModTime().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	id2 := backupJSON(t, e, data)

	out := mustCoffer(t, e, "diff", id1[:8], id2)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, want := range []string{
		"+  " + filepath.Join(data, "new.txt"),
		"+  " + filepath.Join(data, "newdir"),
		"+  " + filepath.Join(data, "newdir", "n.txt"),
		"-  " + filepath.Join(data, "docs", "deep", "c.txt"),
		"M  " + filepath.Join(data, "docs", "b.txt"),
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	for _, l := range lines {
		if strings.Contains(l, "a.txt") || strings.Contains(l, "r.bin") {
			t.Errorf("diff lists an unchanged file: %q", l)
		}
	}
	// The golden file holds what changed below data; the directories
	// above it (/tmp, ...) change metadata as other programs use them.
	var below []string
	metaOnly := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "U  ") {
			metaOnly++
		}
		if len(l) > 3 && l[1:3] == "  " && !strings.HasPrefix(l[3:], data) {
			continue
		}
		below = append(below, l)
	}
	summary := regexp.MustCompile(`^(\d+) added, (\d+) removed, (\d+) modified, (\d+) type changed, (\d+) metadata only$`).FindStringSubmatch(below[len(below)-1])
	if summary == nil || summary[5] != strconv.Itoa(metaOnly) {
		t.Errorf("diff summary %q does not count the %d U lines", below[len(below)-1], metaOnly)
	} else {
		below[len(below)-1] = strings.Replace(below[len(below)-1], summary[5]+" metadata", "<N> metadata", 1)
	}
	n := &normaliser{}
	n.add(data, "$DATA")
	golden(t, "diff.txt", n.apply(strings.Join(below, "\n")+"\n"))

	// The other way round, additions are removals.
	back := mustCoffer(t, e, "diff", id2, id1)
	if !strings.Contains(back, "-  "+filepath.Join(data, "new.txt")+"\n") || !strings.Contains(back, "+  "+filepath.Join(data, "docs", "deep", "c.txt")+"\n") {
		t.Errorf("reverse diff:\n%s", back)
	}
	if same := mustCoffer(t, e, "diff", id1, id1); same != "0 added, 0 removed, 0 modified, 0 type changed, 0 metadata only\n" {
		t.Errorf("diff of a snapshot with itself: %q", same)
	}

	// --json: one object per line.
	js := mustCoffer(t, e, "diff", id1, id2, "--json")
	ops := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(js), "\n") {
		var c struct{ Op, Path string }
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("diff --json line %q: %v", l, err)
		}
		ops[c.Path] = c.Op
	}
	if ops[filepath.Join(data, "new.txt")] != "+" || ops[filepath.Join(data, "docs", "deep", "c.txt")] != "-" || ops[filepath.Join(data, "docs", "b.txt")] != "M" {
		t.Errorf("diff --json: %v", ops)
	}
}

func TestCheckGoodVault(t *testing.T) {
	e := newEnv(t)
	data := sampleData(t)
	mustCoffer(t, e, "backup", data)
	mustCoffer(t, e, "backup", data, "--tag", "again")

	out := mustCoffer(t, e, "check")
	if !regexp.MustCompile(`^checked structure: \d+ packs, \d+ blobs, 2 snapshots, \d+ trees\nno errors found\n$`).MatchString(out) {
		t.Errorf("check printed %q", out)
	}
	out = mustCoffer(t, e, "check", "--read-data")
	if !regexp.MustCompile(`^checked structure and data: \d+ packs, \d+ blobs, 2 snapshots, \d+ trees, [0-9.]+ MiB read\nno errors found\n$`).MatchString(out) {
		t.Errorf("check --read-data printed %q", out)
	}
	var rep struct {
		OK       bool     `json:"ok"`
		ReadData bool     `json:"read_data"`
		Packs    int      `json:"packs"`
		Errors   []string `json:"errors"`
		Bytes    int64    `json:"bytes_read"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "check", "--read-data", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || !rep.ReadData || rep.Packs < 2 || rep.Errors == nil || len(rep.Errors) != 0 || rep.Bytes < 9<<20 {
		t.Errorf("check --read-data --json: %+v", rep)
	}
}

func TestVaultShow(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	id := backupJSON(t, e, data)

	out := mustCoffer(t, e, "vault", "show")
	for _, want := range []string{"AES-256-GCM", "platform-managed", e.keyFile(), "DEK v1", "key reachable: yes"} {
		if !strings.Contains(out, want) {
			t.Errorf("vault show lacks %q:\n%s", want, out)
		}
	}
	raw := mustCoffer(t, e, "vault", "show", "--json")
	var js struct {
		ID         string `json:"id"`
		Name       string `json:"name"`
		Path       string `json:"path"`
		Snapshots  int    `json:"snapshots"`
		Packs      int    `json:"packs"`
		Encryption struct {
			Algorithm  string    `json:"algorithm"`
			KeySource  string    `json:"key_source"`
			KEKID      string    `json:"kek_id"`
			KEKProv    string    `json:"kek_provider"`
			KeyFile    string    `json:"key_file"`
			DEKVersion int       `json:"dek_version"`
			DEKs       int       `json:"deks"`
			Created    time.Time `json:"created"`
			Rotated    time.Time `json:"last_rotated"`
			Reachable  bool      `json:"key_reachable"`
		} `json:"encryption"`
	}
	if err := json.Unmarshal([]byte(raw), &js); err != nil {
		t.Fatal(err)
	}
	enc := js.Encryption
	if js.Name != "default" || js.Path != e.vaultDir() || js.Snapshots != 1 || js.Packs != 2 ||
		enc.Algorithm != "AES-256-GCM" || enc.KeySource != "platform-managed" || enc.KEKProv != "platform" ||
		enc.KeyFile != e.keyFile() || enc.DEKVersion != 1 || enc.DEKs != 1 || !enc.Reachable {
		t.Errorf("vault show --json: %s", raw)
	}
	// Created on the first backup, by the injected clock.
	if created := clockStart.Add(time.Minute); !enc.Created.Equal(created) || !enc.Rotated.Equal(created) {
		t.Errorf("vault show --json: created %v, rotated %v, want %v", enc.Created, enc.Rotated, created)
	}
	if !strings.Contains(out, "(1 minute ago)") {
		t.Errorf("vault show does not measure the key's age with the injected clock:\n%s", out)
	}

	n := &normaliser{}
	n.add(e.home, "$COFFER_HOME")
	n.add(js.ID, "<VAULT>")
	n.add(js.ID[:8], "<VAULT>")
	n.add(enc.KEKID, "<KEK>")
	n.addSnapshot(id, "SNAP1")
	golden(t, "vault_show.txt", n.apply(out))
	golden(t, "vault_show.json", n.apply(raw))
}

func TestSnapshotResolution(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)

	// Back up until two snapshot IDs share their first hex digit; there
	// are 16 digits, so 17 backups are always enough.
	byDigit := map[byte][]string{}
	var ids []string
	var ambiguous byte
	for range 17 {
		id := backupJSON(t, e, data)
		ids = append(ids, id)
		byDigit[id[0]] = append(byDigit[id[0]], id)
		if len(byDigit[id[0]]) == 2 {
			ambiguous = id[0]
			break
		}
	}
	if ambiguous == 0 {
		t.Fatal("17 snapshots without two sharing a first digit")
	}
	latest := ids[len(ids)-1]
	first := ids[0]
	// The shortest prefix of first that no other ID has.
	uniq := ""
	for n := 1; n <= 64 && uniq == ""; n++ {
		p := first[:n]
		count := 0
		for _, id := range ids {
			if strings.HasPrefix(id, p) {
				count++
			}
		}
		if count == 1 {
			uniq = p
		}
	}
	unknown := strings.Repeat("0", 64)
	for _, id := range ids {
		if id == unknown {
			t.Skip("a snapshot ID is all zeros")
		}
	}
	// restore --json says which snapshot a reference picked.
	resolves := func(ref, want string) {
		t.Helper()
		out, errOut, code := coffer(t, e, "restore", ref, "--target", t.TempDir(), "--json")
		var r struct {
			ID string `json:"snapshot_id"`
		}
		if code != exitOK || json.Unmarshal([]byte(out), &r) != nil {
			t.Errorf("SNAPSHOT %q: exit %d: %s%s", ref, code, out, errOut)
			return
		}
		if r.ID != want {
			t.Errorf("SNAPSHOT %q resolved to %s, want %s", ref, r.ID, want)
		}
	}
	resolves(first, first)                  // full ID
	resolves(strings.ToUpper(first), first) // IDs are case-insensitive
	resolves(uniq, first)                   // shortest unique prefix
	resolves(latest[:12], latest)
	// The clock moves on with every command, so the last backup is the
	// newest (that latest goes by time, not by position, is an engine test).
	resolves("latest", latest)

	cases := []struct {
		name, ref string
		want      []string
	}{
		{"unknown full ID", unknown, []string{unknown, "not found"}},
		{"unknown prefix", "0000000", []string{"0000000", "not found"}},
		{"not hex", "yesterday", []string{"yesterday", "latest", "hex"}},
		{"ambiguous", string(ambiguous), []string{"matches 2 snapshots", "ambiguous", "more digits"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "unknown prefix" {
				for _, id := range ids {
					if strings.HasPrefix(id, c.ref) {
						t.Skip("a snapshot starts with 0000000")
					}
				}
			}
			for _, args := range [][]string{
				{"ls", c.ref},
				{"restore", c.ref, "--target", t.TempDir()},
				{"diff", c.ref, "latest"},
			} {
				out, errOut, code := coffer(t, e, args...)
				if code != exitFailure {
					t.Errorf("coffer %s: exit %d, want 1\n%s%s", strings.Join(args, " "), code, out, errOut)
				}
				for _, w := range c.want {
					if !strings.Contains(errOut, w) {
						t.Errorf("coffer %s: message %q lacks %q", strings.Join(args, " "), errOut, w)
					}
				}
			}
		})
	}
}

// openTestVault opens e's default vault the way the commands do.
func openTestVault(t *testing.T, e *testEnv) *openedVault {
	t.Helper()
	a := &app{getenv: e.getenv, now: e.now, stdout: io.Discard, stderr: io.Discard}
	v, err := a.openVault(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// unreadableFile returns a path to a regular file that this process
// cannot read, and whether it lies inside dir. As a normal user that is
// a file in dir with mode 0. Root reads any file whatever its mode, so
// there the test uses a kernel file whose open or read fails even for
// root: a write-only sysctl (procfs checks its mode bits for root too),
// or else the process's own memory file (reading address 0 fails with
// EIO). Both are regular files to lstat, so backup treats them as files.
func unreadableFile(t *testing.T, dir string) (path string, inside bool) {
	t.Helper()
	if os.Geteuid() != 0 {
		p := filepath.Join(dir, "secret.txt")
		writeFile(t, p, []byte("no peeking\n"), 0o600)
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(p, 0o600) })
		return p, true
	}
	for _, p := range []string{"/proc/sys/vm/drop_caches", fmt.Sprintf("/proc/%d/mem", os.Getpid())} {
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		f, err := os.Open(p)
		if err == nil {
			_, err = f.Read(make([]byte, 1))
			f.Close()
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return p, false
		}
	}
	t.Skip("running as root and no file here that root cannot read")
	return "", false
}

func TestBackupUnreadableFile(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	bad, inside := unreadableFile(t, data)
	args := []string{"backup", data}
	if !inside {
		args = append(args, bad)
	}
	out, errOut, code := coffer(t, e, args...)
	if code != exitPartial {
		t.Fatalf("backup with an unreadable file: exit %d, want 3\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "warning: "+bad+":") {
		t.Errorf("stderr does not name the unreadable file %s:\n%s", bad, errOut)
	}
	if !strings.Contains(errOut, "1 file or directory could not be read") {
		t.Errorf("stderr does not sum up: %q", errOut)
	}
	// The snapshot was saved with everything else, and without the file.
	listing := mustCoffer(t, e, "ls", "latest")
	if !strings.Contains(listing, filepath.Join(data, "docs", "b.txt")+"\n") {
		t.Errorf("the readable files are missing from the snapshot:\n%s", listing)
	}
	if strings.Contains(listing, bad+"\n") {
		t.Errorf("the unreadable file is listed in the snapshot:\n%s", listing)
	}
	mustCoffer(t, e, "check", "--read-data")
}

func TestBackupExclude(t *testing.T) {
	e := newEnv(t)
	data := sampleData(t)
	mustCoffer(t, e, "backup", data, "--exclude", "*.tmp", "--exclude", filepath.Join(data, "docs", "deep"))
	listing := mustCoffer(t, e, "ls", "latest")
	for _, gone := range []string{"skip.tmp", "deep"} {
		if strings.Contains(listing, gone) {
			t.Errorf("excluded %s is in the snapshot:\n%s", gone, listing)
		}
	}
	for _, kept := range []string{"a.txt", "docs/b.txt", "docs/big.bin"} {
		if !strings.Contains(listing, filepath.Join(data, kept)+"\n") {
			t.Errorf("%s is missing from the snapshot:\n%s", kept, listing)
		}
	}
	target := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", target)
	if _, err := os.Lstat(filepath.Join(target, data, "skip.tmp")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("excluded file restored: %v", err)
	}

	_, errOut, code := coffer(t, e, "backup", data, "--exclude", "[")
	if code != exitFailure || !strings.Contains(errOut, `--exclude: bad pattern "["`) {
		t.Errorf("backup with a malformed pattern: exit %d, %q", code, errOut)
	}
}

func TestHelpListsExitCodes(t *testing.T) {
	e := newEnv(t)
	out := mustCoffer(t, e, "help")
	for _, want := range []string{"Exit codes:", "0  success", "1  failure", "3  finished, but some files could not be read"} {
		if !strings.Contains(out, want) {
			t.Errorf("coffer help lacks %q", want)
		}
	}
	golden(t, "help.txt", out)
	if _, err := os.Stat(e.vaultDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("help touched the vault: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"backup", "--frobnicate", "."}, "unknown flag: --frobnicate"},
		{[]string{"snapshots", "--frobnicate"}, "unknown flag: --frobnicate"},
		{[]string{"backup"}, "requires at least 1 arg"},
		{[]string{"ls"}, "accepts between 1 and 2 arg"},
		{[]string{"diff", "latest"}, "accepts 2 arg"},
		{[]string{"restore", "latest"}, "--target"},
		{[]string{"--vault", "bad name!", "snapshots"}, "invalid vault name"},
		{[]string{"snapshots"}, "no vault at"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			e := newEnv(t)
			out, errOut, code := coffer(t, e, c.args...)
			if code != exitFailure {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.HasPrefix(errOut, "coffer: ") || !strings.Contains(errOut, c.want) {
				t.Errorf("stderr %q lacks %q", errOut, c.want)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}

// TestNoProgressWhenNotATerminal runs a backup and a restore with stderr
// on a file: no carriage return or escape sequence may reach it. The same
// commands on a pseudo-terminal do draw the progress line, which proves
// the check can fail.
func TestNoProgressWhenNotATerminal(t *testing.T) {
	data := sampleData(t)
	runOn := func(t *testing.T, e *testEnv, stderr *os.File, args ...string) int {
		e.tick()
		var out bytes.Buffer
		return runWith(context.Background(), args, strings.NewReader(""), &out, stderr, e.getenv, e.now)
	}
	cmds := func(target string) [][]string {
		return [][]string{{"backup", data}, {"restore", "latest", "--target", target}, {"check", "--read-data"}}
	}

	t.Run("file", func(t *testing.T) {
		e := newEnv(t)
		f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, args := range cmds(t.TempDir()) {
			if code := runOn(t, e, f, args...); code != exitOK {
				t.Fatalf("%v: exit %d", args, code)
			}
		}
		b, _ := os.ReadFile(f.Name())
		if bytes.ContainsAny(b, "\r\x1b") {
			t.Errorf("progress output on a non-terminal stderr: %q", b)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		pty, tty := openPTY(t)
		var mu sync.Mutex
		var got bytes.Buffer
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 4096)
			for {
				n, err := pty.Read(buf)
				mu.Lock()
				got.Write(buf[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		e := newEnv(t)
		for _, args := range cmds(t.TempDir()) {
			if code := runOn(t, e, tty, args...); code != exitOK {
				t.Fatalf("%v: exit %d", args, code)
			}
		}
		tty.Close()
		pty.Close()
		<-done
		mu.Lock()
		b := got.Bytes()
		mu.Unlock()
		if !bytes.Contains(b, []byte("\r\x1b[K")) {
			t.Errorf("no progress line on a terminal (the non-terminal test proves nothing): %q", b)
		}
	})

	t.Run("terminal with --no-progress", func(t *testing.T) {
		pty, tty := openPTY(t)
		got := make(chan []byte)
		go func() {
			b, _ := io.ReadAll(pty) // until the tty closes (EIO)
			got <- b
		}()
		e := newEnv(t)
		for _, args := range cmds(t.TempDir()) {
			if code := runOn(t, e, tty, append(args, "--no-progress")...); code != exitOK {
				t.Fatalf("%v: exit %d", args, code)
			}
		}
		tty.Close()
		if b := <-got; bytes.ContainsAny(b, "\r\x1b") {
			t.Errorf("progress output with --no-progress: %q", b)
		}
	})
}

// TestLsJSONNonUTF8 checks that ls --json keeps names that are not valid
// UTF-8 recoverable: path shows replacement characters, path_bytes the
// exact bytes.
func TestLsJSONNonUTF8(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(t.TempDir(), "d")
	name := string([]byte{'b', 0xff, 0xfe, 'd'})
	writeFile(t, filepath.Join(dir, name), []byte("x"), 0o644)
	writeFile(t, filepath.Join(dir, "plain"), []byte("y"), 0o644)
	mustCoffer(t, e, "backup", dir)
	out := mustCoffer(t, e, "ls", "latest", dir, "--json")
	var found, plain bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var n struct {
			Path      string `json:"path"`
			PathBytes []byte `json:"path_bytes"`
		}
		if err := json.Unmarshal([]byte(line), &n); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		switch {
		case string(n.PathBytes) == filepath.Join(dir, name):
			found = true
		case n.Path == filepath.Join(dir, "plain"):
			plain = n.PathBytes == nil
		}
	}
	if !found {
		t.Errorf("no line carries the exact bytes of %q:\n%s", name, out)
	}
	if !plain {
		t.Errorf("a valid UTF-8 path should have no path_bytes:\n%s", out)
	}
}
