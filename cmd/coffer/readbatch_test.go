package main

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// requestCounts reads srv's request counters by route.
func requestCounts(t *testing.T, srv *servertest.Env) map[string]int {
	t.Helper()
	c := srv.Client(t, srv.OwnerToken)
	text, err := c.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		i, sp := strings.Index(line, `route="`), strings.LastIndexByte(line, ' ')
		if !strings.HasPrefix(line, "coffer_http_requests_total{") || i < 0 || sp < 0 {
			continue
		}
		route := line[i+len(`route="`):]
		route = route[:strings.IndexByte(route, '"')]
		n, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[route] += int(n)
	}
	return out
}

const (
	routeTree = "GET /v1/vaults/{vault}/trees/{id}"
	routeData = "GET /v1/vaults/{vault}/data/{id}"
	routeRead = "POST /v1/vaults/{vault}/read"
	routeMiss = "POST /v1/vaults/{vault}/missing"
)

// tarFiles reads the tar archive at p: each regular file's content by
// name, and the number of entries.
func tarFiles(t *testing.T, p string) (map[string][]byte, int) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, n := map[string][]byte{}, 0
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, n
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		n++
		if h.Typeflag == tar.TypeReg {
			if files[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatalf("%s: %s: %v", p, h.Name, err)
			}
		}
	}
}

// zipFiles is tarFiles for a zip archive.
func zipFiles(t *testing.T, p string) (map[string][]byte, int) {
	t.Helper()
	zr, err := zip.OpenReader(p)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	files := map[string][]byte{}
	for _, f := range zr.File {
		if !f.Mode().IsRegular() {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		if files[f.Name], err = io.ReadAll(rc); err != nil {
			t.Fatalf("%s: %s: %v", p, f.Name, err)
		}
		rc.Close()
	}
	return files, len(zr.File)
}

// assertArchiveHolds checks that files (an archive's regular files, named
// from the root without the leading '/') are exactly the regular files
// below src, byte for byte.
func assertArchiveHolds(t *testing.T, what string, files map[string][]byte, src string) {
	t.Helper()
	n := 0
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		n++
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := files[strings.TrimPrefix(p, "/")]; !ok || !bytes.Equal(got, want) {
			t.Errorf("%s: %s: %d bytes (held: %v), want the source's %d", what, p, len(got), ok, len(want))
		}
		return nil
	})
	if len(files) != n {
		t.Errorf("%s holds %d files, the source %d", what, len(files), n)
	}
}

// TestRemoteReadsBatched: through a vault server, dump, copy, ls, find,
// stats and diff read trees and chunks many per request, as the server's
// request counters show (a snapshot of 40 directories and 400 small
// files, and one file of several chunks, took a request per tree and one,
// for copy two, per chunk), and what they write is byte for byte what a
// read one by one gives: the source's files.
func TestRemoteReadsBatched(t *testing.T) {
	srv := servertest.Start(t)
	e := serverEnv(t, srv)
	mustCoffer(t, e, "vault", "create", "prod")
	mustCoffer(t, e, "vault", "create", "copy")
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	src := filepath.Join(t.TempDir(), "data")
	for d := range 40 {
		for f := range 10 {
			writeFile(t, filepath.Join(src, fmt.Sprintf("d%02d", d), "sub", fmt.Sprintf("f%d", f)), randBytes(uint64(100*d+f), 3000+d*7+f), 0o644)
		}
	}
	writeFile(t, filepath.Join(src, "big.bin"), randBytes(7, 12<<20), 0o644)
	writeFile(t, filepath.Join(src, "empty"), nil, 0o600)
	first := backupJSON(t, e, src)
	// What the first snapshot holds, for the copy's check below.
	old := filepath.Join(t.TempDir(), "old")
	if err := os.CopyFS(old, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "d07", "sub", "f3"), []byte("changed"), 0o644)
	second := backupJSON(t, e, src)

	measure := func(args ...string) (map[string]int, string) {
		t.Helper()
		before := requestCounts(t, srv)
		out := mustCoffer(t, e, args...)
		after := requestCounts(t, srv)
		d := map[string]int{}
		for _, r := range []string{routeTree, routeData, routeRead, routeMiss} {
			d[r] = after[r] - before[r]
		}
		t.Logf("coffer %s: %d tree GETs, %d data GETs, %d batched reads, %d missing probes", strings.Join(args, " "), d[routeTree], d[routeData], d[routeRead], d[routeMiss])
		return d, out
	}
	// One by one: 83 tree GETs (root, 40 dirs, 40 subs, …) and 402 data
	// GETs.
	tmp := t.TempDir()
	if d, _ := measure("dump", "latest", "/", "--target", filepath.Join(tmp, "all.tar")); d[routeData] > 0 || d[routeRead] > 12 || d[routeTree] > 2 {
		t.Errorf("dump: %v", d)
	}
	files, _ := tarFiles(t, filepath.Join(tmp, "all.tar"))
	assertArchiveHolds(t, "dump as tar", files, src)
	if d, _ := measure("dump", "latest", src, "--archive", "zip", "--target", filepath.Join(tmp, "all.zip")); d[routeData] > 0 || d[routeRead] > 12 || d[routeTree] > 6 {
		t.Errorf("dump as zip: %v", d)
	}
	files, _ = zipFiles(t, filepath.Join(tmp, "all.zip"))
	named := map[string][]byte{} // from src's parent in the archive
	for name, b := range files {
		named[strings.TrimPrefix(filepath.Join(filepath.Dir(src), name), "/")] = b
	}
	assertArchiveHolds(t, "dump as zip", named, src)
	if d, _ := measure("dump", "latest", src+"/big.bin", "--target", filepath.Join(tmp, "big")); d[routeData] > 0 || d[routeRead] > 1 {
		t.Errorf("dump of one file: %v", d)
	}
	if got, _ := os.ReadFile(filepath.Join(tmp, "big")); !bytes.Equal(got, randBytes(7, 12<<20)) {
		t.Errorf("dump of one file: %d bytes, not the file's", len(got))
	}

	// find and stats walk both snapshots: twice ls's bound.
	d, out := measure("ls", "latest")
	if d[routeTree]+d[routeRead] > 8 {
		t.Errorf("ls: %v", d)
	}
	for _, name := range []string{"/big.bin", "/empty", "/d00/sub/f0", "/d39/sub/f9"} {
		if !strings.Contains(out, src+name+"\n") {
			t.Errorf("ls does not list %s", name)
		}
	}
	if n := strings.Count(out, "\n"); n < 40*11+2 {
		t.Errorf("ls lists %d lines, want every one of the snapshot's %d entries", n, 40*11+2)
	}
	d, out = measure("find", "f3", "--json")
	if d[routeTree]+d[routeRead] > 16 {
		t.Errorf("find: %v", d)
	}
	if n := strings.Count(out, "/sub/f3"); n != 80 {
		t.Errorf("find f3 found %d, want 40 in each snapshot:\n%s", n, out)
	}
	d, out = measure("stats", "--json")
	if d[routeTree]+d[routeRead] > 16 {
		t.Errorf("stats: %v", d)
	}
	var st statsJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	// The snapshots differ in one file: 3052 bytes, then 7.
	if st.Snapshots != 2 || len(st.Each) != 2 || st.Each[0].Files != 402 || st.Each[1].Files != 402 ||
		max(st.Each[0].TotalSize, st.Each[1].TotalSize)-min(st.Each[0].TotalSize, st.Each[1].TotalSize) != 3052-7 {
		t.Errorf("stats: %s", out)
	}
	d, out = measure("diff", first[:8], second[:8])
	if d[routeTree]+d[routeRead] > 8 {
		t.Errorf("diff: %v", d)
	}
	if !strings.Contains(out, "M  "+src+"/d07/sub/f3\n") || !strings.Contains(out, "\n0 added, 0 removed, 1 modified,") {
		t.Errorf("diff: %s", out)
	}

	copyArgs := []string{"copy", "--from-vault", srv.URL + "/prod", "--to-vault", srv.URL + "/copy", first[:8]}
	if d, _ := measure(copyArgs...); d[routeData] > 0 || d[routeTree]+d[routeRead]+d[routeMiss] > 24 {
		t.Errorf("copy: %v", d)
	}
	// A second copy compares the trees of both sides, many per request.
	if d, _ := measure(copyArgs...); d[routeData] > 0 || d[routeTree]+d[routeRead]+d[routeMiss] > 24 {
		t.Errorf("second copy: %v", d)
	}
	// The copy holds the first snapshot's files.
	e.setenv("COFFER_VAULT", srv.URL+"/copy")
	mustCoffer(t, e, "dump", "latest", "/", "--target", filepath.Join(tmp, "copy.tar"))
	files, _ = tarFiles(t, filepath.Join(tmp, "copy.tar"))
	named = map[string][]byte{} // src's files, as they were
	for name, b := range files {
		named[strings.TrimPrefix(filepath.Join(old, strings.TrimPrefix("/"+name, src)), "/")] = b
	}
	assertArchiveHolds(t, "the copy", named, old)
	mustCoffer(t, e, "check", "--read-data")
}

// TestMountRemoteBatched: a mount through a vault server, walked and read
// in full (as cp -r does), loads the trees a directory level per request
// and the small files' chunks many per request; what it reads is the
// source, byte for byte.
func TestMountRemoteBatched(t *testing.T) {
	requireFUSE(t)
	srv := servertest.Start(t)
	e := serverEnv(t, srv)
	mustCoffer(t, e, "vault", "create", "prod")
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	src := filepath.Join(t.TempDir(), "data")
	for d := range 20 {
		for f := range 10 {
			writeFile(t, filepath.Join(src, fmt.Sprintf("d%02d", d), fmt.Sprintf("f%d", f)), randBytes(uint64(100*d+f), 2000+d*7+f), 0o644)
		}
	}
	writeFile(t, filepath.Join(src, "big.bin"), randBytes(7, 6<<20), 0o644)
	backupJSON(t, e, src)

	before := requestCounts(t, srv)
	dir := t.TempDir()
	stop := runMount(t, e, dir)
	mounted := filepath.Join(dir, "snapshots", "latest", src)
	n := 0
	err := filepath.WalkDir(mounted, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(mounted, p)
		got, err := os.ReadFile(p)
		want, _ := os.ReadFile(filepath.Join(src, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes read (%v), not the source's %d", rel, len(got), err, len(want))
		}
		n++
		return nil
	})
	if err != nil || n != 201 {
		t.Fatalf("walked the mount: %d files read, %v", n, err)
	}
	assertSameTree(t, src, mounted)
	stop()
	after := requestCounts(t, srv)
	d := map[string]int{}
	for _, r := range []string{routeTree, routeData, routeRead} {
		d[r] = after[r] - before[r]
	}
	t.Logf("mount, walked and read: %d tree GETs, %d data GETs, %d batched reads", d[routeTree], d[routeData], d[routeRead])
	// One by one: 21 trees below src and 201+ chunks, a request each.
	// Batched: a directory's first file alone, the others together.
	if d[routeTree]+d[routeData]+d[routeRead] > 60 {
		t.Errorf("mount: %v", d)
	}
}
