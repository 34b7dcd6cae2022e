package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// restoredFrom runs restore with args into a fresh directory and returns
// which of srcs it restored (by their file f), and the snapshot ID.
func restoredFrom(t *testing.T, e *testEnv, srcs []string, args ...string) (string, string) {
	t.Helper()
	dst := t.TempDir()
	out := mustCoffer(t, e, append([]string{"restore", "--json", "--target", dst}, args...)...)
	var r struct {
		ID string `json:"snapshot_id"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("restore --json printed %q: %v", out, err)
	}
	var got []string
	for _, src := range srcs {
		if _, err := os.Stat(filepath.Join(dst, src, "f")); err == nil {
			got = append(got, src)
		}
	}
	if len(got) != 1 {
		t.Fatalf("restore %v restored %v, want exactly one source", args, got)
	}
	return got[0], r.ID
}

// snapshotIDs lists the IDs `snapshots --json args` prints.
func snapshotIDs(t *testing.T, e *testEnv, args ...string) []string {
	t.Helper()
	var snaps []snapshotJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, append([]string{"snapshots", "--json"}, args...)...)), &snaps); err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, s := range snaps {
		ids = append(ids, s.ID)
	}
	return ids
}

// TestLatestIsThisHosts plays web02 on a vault shared with web01: its
// backup is newer, and on web01 "latest" must still be web01's own, for
// restore, ls and diff. Other hosts are reached only when asked for.
func TestLatestIsThisHosts(t *testing.T) {
	e := newEnv(t)
	web01, web02 := filepath.Join(t.TempDir(), "web01"), filepath.Join(t.TempDir(), "web02")
	writeFile(t, filepath.Join(web01, "f"), []byte("web01's data"), 0o644)
	writeFile(t, filepath.Join(web02, "f"), []byte("web02's data"), 0o644)
	srcs := []string{web01, web02}

	e.setenv("COFFER_HOST", "web01")
	id1 := backupJSON(t, e, web01, "--host", "web01")
	id2 := backupJSON(t, e, web02, "--host", "web02")
	if s := listSnapshots(t, e); len(s) != 2 || s[0].Host != "web01" || s[1].Host != "web02" {
		t.Fatalf("snapshots: %+v, want web01's then web02's", s)
	}

	if got, id := restoredFrom(t, e, srcs, "latest"); got != web01 || id != id1 {
		t.Errorf("on web01, restore latest restored %s (%s), want web01's %s", got, id, id1)
	}
	if out := mustCoffer(t, e, "ls", "latest"); !strings.Contains(out, web01) || strings.Contains(out, web02) {
		t.Errorf("on web01, ls latest listed:\n%s", out)
	}
	if out := mustCoffer(t, e, "diff", id1, "latest"); !strings.Contains(out, "0 added, 0 removed, 0 modified") {
		t.Errorf("on web01, diff %s latest compared with another snapshot:\n%s", id1[:8], out)
	}
	// Other hosts when asked: by name, or any.
	if got, id := restoredFrom(t, e, srcs, "latest", "--host", "web02"); got != web02 || id != id2 {
		t.Errorf("restore latest --host web02 restored %s (%s)", got, id)
	}
	if got, _ := restoredFrom(t, e, srcs, "latest", "--any-host"); got != web02 {
		t.Errorf("restore latest --any-host restored %s, want the newest (web02's)", got)
	}
	if got, _ := restoredFrom(t, e, srcs, "latest", "--host", "web01", "--host", "web02"); got != web02 {
		t.Errorf("restore latest --host web01 --host web02 restored %s, want the newer of both (web02's)", got)
	}
	// An ID names a snapshot whatever its host.
	if got, _ := restoredFrom(t, e, srcs, id2[:10]); got != web02 {
		t.Errorf("restore %s restored %s, want web02's", id2[:10], got)
	}

	// A host with no snapshot: says so, names the others and the way out.
	e.setenv("COFFER_HOST", "web03")
	for _, args := range [][]string{{"restore", "latest", "--target", t.TempDir()}, {"ls", "latest"}, {"diff", id1, "latest"}} {
		msg := failsWith(t, e, `no snapshot of this host ("web03") yet`, args...)
		for _, w := range []string{"web01", "web02", "--host NAME", "--any-host"} {
			if !strings.Contains(msg, w) {
				t.Errorf("coffer %s: %q does not mention %q", strings.Join(args, " "), msg, w)
			}
		}
	}
	// An empty --host (an unset variable in a script) does not widen the
	// choice to every host; --host and --any-host exclude each other.
	failsWith(t, e, "give a host name", "restore", "latest", "--host", "", "--target", t.TempDir())
	failsWith(t, e, "not both", "ls", "latest", "--host", "web01", "--any-host")
	// Host names are exact: a case variant is another host.
	failsWith(t, e, `no snapshot of host "WEB01"`, "ls", "latest", "--host", "WEB01")
}

// TestSelectFilters: --host, --path and --tag with restic's semantics,
// on snapshots, on "latest", and on IDs (which filters must not exclude).
func TestSelectFilters(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "web01")
	root := t.TempDir()
	srv, etc, home := filepath.Join(root, "srv"), filepath.Join(root, "etc"), filepath.Join(root, "home")
	for _, d := range []string{srv, etc, home} {
		writeFile(t, filepath.Join(d, "f"), []byte(d), 0o644)
	}
	sA := backupJSON(t, e, srv, etc, "--tag", "nightly", "--tag", "db") // web01 {etc, srv} nightly,db
	sB := backupJSON(t, e, home, "--tag", "nightly")                    // web01 {home} nightly
	sC := backupJSON(t, e, srv, "--host", "web02", "--tag", "db")       // web02 {srv} db
	sD := backupJSON(t, e, home)                                        // web01 {home} untagged
	sF := backupJSON(t, e, srv, etc, "--host", "web02", "--tag", "weekly")

	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, []string{sA, sB, sC, sD, sF}}, // a listing: every host
		{[]string{"--host", "web02"}, []string{sC, sF}},
		{[]string{"--host", "web01", "--host", "web02"}, []string{sA, sB, sC, sD, sF}},
		{[]string{"--path", srv}, []string{sA, sC, sF}},
		{[]string{"--path", srv, "--path", etc}, []string{sA, sF}}, // every path named
		{[]string{"--path", srv, "--path", home}, []string{}},      // none has both
		{[]string{"--path", filepath.Join(srv, "f")}, []string{}},  // a path inside is not a backed-up path
		{[]string{"--tag", "nightly"}, []string{sA, sB}},
		{[]string{"--tag", "nightly,db"}, []string{sA}},                    // a list: all its tags
		{[]string{"--tag", "db", "--tag", "weekly"}, []string{sA, sC, sF}}, // repeated: any list
		{[]string{"--tag", ""}, []string{sD}},                              // untagged
		{[]string{"--host", "web02", "--path", srv, "--tag", "db"}, []string{sC}},
		{[]string{"--host", "web01", "--path", filepath.Join(srv, ".")}, []string{sA}},
	} {
		if got := snapshotIDs(t, e, c.args...); !slices.Equal(got, c.want) {
			t.Errorf("snapshots %q: %d snapshots %v, want %v", c.args, len(got), got, c.want)
		}
	}
	// A relative --path is taken from the current directory, as backup
	// takes its paths.
	wd, _ := os.Getwd()
	if err := os.Chdir(root); err != nil {
		t.Fatal(err)
	}
	got := snapshotIDs(t, e, "--path", "home")
	os.Chdir(wd)
	if !slices.Equal(got, []string{sB, sD}) {
		t.Errorf("snapshots --path home (from %s): %v, want %v", root, got, []string{sB, sD})
	}
	if out := mustCoffer(t, e, "snapshots", "--host", "nohost"); !strings.Contains(out, "no snapshot matches --host nohost (of 5 snapshots)") {
		t.Errorf("snapshots --host nohost: %q", out)
	}

	// "latest": this host's, narrowed by --path and --tag. web01's newest
	// is sD (home); --path srv picks sA, although web02's sF is newer.
	latestID := func(args ...string) (string, string) {
		t.Helper()
		out, errOut, code := coffer(t, e, append([]string{"restore", "latest", "--json", "--target", t.TempDir()}, args...)...)
		var r struct {
			ID string `json:"snapshot_id"`
		}
		if code != exitOK || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("restore latest %v: exit %d: %s%s", args, code, out, errOut)
		}
		return r.ID, errOut
	}
	id, note := latestID()
	if id != sD {
		t.Errorf("restore latest on web01: %s, want %s", id, sD)
	}
	// web01 backs up two sets of paths: latest says which it took.
	if !strings.Contains(note, "note: latest is of "+home) || !strings.Contains(note, "--path") {
		t.Errorf("restore latest with two path sets on this host: stderr %q does not say which set it took", note)
	}
	if _, note := latestID("--path", home); note != "" {
		t.Errorf("restore latest --path: stderr %q, want nothing", note)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--path", srv}, sA},
		{[]string{"--path", srv, "--host", "web02"}, sF},
		{[]string{"--tag", "nightly"}, sB},
		{[]string{"--tag", "db", "--any-host"}, sC},
		{[]string{"--path", srv, "--any-host"}, sF},
	} {
		if id, _ := latestID(c.args...); id != c.want {
			t.Errorf("restore latest %q: %s, want %s", c.args, id, c.want)
		}
	}
	failsWith(t, e, `no snapshot of "web01" matches --path `+home+" --tag weekly", "ls", "latest", "--path", home, "--tag", "weekly")

	// An ID that the filters given exclude is refused, by every command.
	for _, args := range [][]string{
		{"ls", sC, "--host", "web01"},
		{"restore", sC, "--target", t.TempDir(), "--path", home},
		{"diff", sA, sC, "--tag", "nightly"},
	} {
		msg := failsWith(t, e, "is not selected by", args...)
		if !strings.Contains(msg, sC[:8]) {
			t.Errorf("coffer %s: %q does not name the snapshot", strings.Join(args, " "), msg)
		}
	}
	mustCoffer(t, e, "ls", sC, "--host", "web02", "--path", srv)
}

// TestForgetSelection: a policy given with filters keeps or forgets only
// the snapshots they select; another host's are untouched, however the
// policy would treat them. IDs the filters exclude are refused.
func TestForgetSelection(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "web01")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644)
	var web01, web02 []string
	for range 3 {
		web01 = append(web01, backupJSON(t, e, src))
		web02 = append(web02, backupJSON(t, e, src, "--host", "web02"))
	}
	// Nothing forgotten by ID when a filter excludes one of them.
	msg := failsWith(t, e, "is not selected by --host web02", "forget", web02[0], web01[0], "--host", "web02")
	if !strings.Contains(msg, "nothing was done") {
		t.Errorf("forget of an excluded ID: %q does not say nothing was done", msg)
	}
	if got := snapshotIDs(t, e); len(got) != 6 {
		t.Fatalf("after a refused forget: %d snapshots, want 6", len(got))
	}
	mustCoffer(t, e, "forget", "--host", "web02", "--keep-last", "1")
	want := append(slices.Clone(web01), web02[2])
	if got := snapshotIDs(t, e); !slices.Equal(got, want) {
		t.Errorf("after forget --host web02 --keep-last 1: %v, want web01's three and web02's newest %v", got, want)
	}
	// By ID with a filter that selects it.
	mustCoffer(t, e, "forget", web01[0], "--host", "web01")
	if got := snapshotIDs(t, e, "--host", "web01"); !slices.Equal(got, web01[1:]) {
		t.Errorf("after forget ID --host web01: %v, want %v", got, web01[1:])
	}
	// The forgotten ones, filtered the same way.
	if got := snapshotIDs(t, e, "--deleted", "--host", "web01"); !slices.Equal(got, web01[:1]) {
		t.Errorf("snapshots --deleted --host web01: %v, want %v", got, web01[:1])
	}
}

// TestBackupParentChoice: the parent is the newest snapshot of the same
// host and paths whatever its tags; --parent chooses one of this host's,
// never another's; --force reads every file.
func TestBackupParentChoice(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "web01")
	src := smallData(t)
	other := filepath.Join(t.TempDir(), "other")
	writeFile(t, filepath.Join(other, "f"), []byte("other"), 0o644)
	type result struct {
		ID        string `json:"snapshot_id"`
		Parent    string `json:"parent"`
		Unchanged uint64 `json:"files_unchanged"`
	}
	backup := func(args ...string) result {
		t.Helper()
		var r result
		out := mustCoffer(t, e, append([]string{"backup", "--json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := backup(src, "--tag", "a")
	web02 := backup(src, "--host", "web02")
	second := backup(src, "--tag", "b")
	if second.Parent != first.ID || second.Unchanged != 4 {
		t.Errorf("a backup tagged b: parent %s, %d unchanged; want %s (tagged a), 4", second.Parent, second.Unchanged, first.ID)
	}
	if r := backup(src, "--force"); r.Parent != "" || r.Unchanged != 0 {
		t.Errorf("backup --force: parent %q, %d files unchanged; want none, 0", r.Parent, r.Unchanged)
	}
	if r := backup(src, "--parent", first.ID[:8]); r.Parent != first.ID || r.Unchanged != 4 {
		t.Errorf("backup --parent %s: parent %s, %d unchanged", first.ID[:8], r.Parent, r.Unchanged)
	}
	// Another set of paths may be the parent (nothing of it matches).
	o := backup(other)
	if r := backup(src, "--parent", o.ID); r.Parent != o.ID || r.Unchanged != 0 {
		t.Errorf("backup --parent (other paths): parent %s, %d unchanged", r.Parent, r.Unchanged)
	}
	// "latest" is this host's newest, even with web02's newer.
	web02b := backup(src, "--host", "web02")
	if r := backup(src, "--parent", "latest"); r.Parent == web02b.ID || r.Parent == "" {
		t.Errorf("backup --parent latest took %q (web02's is %s)", r.Parent, web02b.ID)
	}
	// Another host's snapshot is never the parent: its files would be
	// taken as this host's without being read.
	n := len(listSnapshots(t, e))
	failsWith(t, e, `is of host "web02", not of this backup's host "web01"`, "backup", src, "--parent", web02.ID)
	failsWith(t, e, "not both", "backup", src, "--parent", first.ID, "--force")
	failsWith(t, e, "--parent 0000000", "backup", src, "--parent", "0000000")
	if got := len(listSnapshots(t, e)); got != n {
		t.Errorf("refused backups recorded %d snapshots", got-n)
	}
}

// TestLsNonRecursiveAndLong: --no-recursive lists PATH and its direct
// entries; -l shows ls's modes and this machine's user and group names.
func TestLsNonRecursiveAndLong(t *testing.T) {
	e := newEnv(t)
	data := sampleData(t)
	backupJSON(t, e, data)

	out := mustCoffer(t, e, "ls", "latest", data, "--no-recursive")
	var want []string
	for _, f := range []string{"", "a.txt", "docs", "link", "skip.tmp"} {
		want = append(want, filepath.Join(data, f))
	}
	if got := strings.Split(strings.TrimSpace(out), "\n"); !slices.Equal(got, want) {
		t.Errorf("ls --no-recursive %s:\n%s\nwant:\n%s", data, out, strings.Join(want, "\n"))
	}
	// The root: its first level only.
	if out := mustCoffer(t, e, "ls", "latest", "--no-recursive"); strings.TrimSpace(out) != "/"+strings.Split(data, "/")[1] {
		t.Errorf("ls latest --no-recursive: %q", out)
	}
	// A file: itself.
	if out := mustCoffer(t, e, "ls", "latest", filepath.Join(data, "a.txt"), "--no-recursive"); out != filepath.Join(data, "a.txt")+"\n" {
		t.Errorf("ls --no-recursive of a file: %q", out)
	}

	uid, gid := os.Getuid(), os.Getgid()
	uname, gname := strconv.Itoa(uid), strconv.Itoa(gid)
	if u, err := user.LookupId(uname); err == nil {
		uname = u.Username
	}
	if g, err := user.LookupGroupId(gname); err == nil {
		gname = g.Name
	}
	out = mustCoffer(t, e, "ls", "latest", data, "--no-recursive", "-l")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("ls -l --no-recursive: %d lines:\n%s", len(lines), out)
	}
	for i, prefix := range []string{"drwx", "-rw-------", "drwx", "lrwxrwxrwx", "-rw-"} {
		f := strings.Fields(lines[i])
		if len(f) < 7 || !strings.HasPrefix(f[0], prefix) || f[1] != uname || f[2] != gname {
			t.Errorf("ls -l line %q: want mode %s…, owner %s, group %s", lines[i], prefix, uname, gname)
		}
	}
	if !strings.HasSuffix(lines[3], " -> a.txt") {
		t.Errorf("ls -l of a symlink: %q", lines[3])
	}
	// --json carries the names too.
	out = mustCoffer(t, e, "ls", "latest", filepath.Join(data, "a.txt"), "--json")
	var n nodeJSON
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatal(err)
	}
	if n.UID != uint64(uid) || (n.User != uname && n.User != "") || (n.User == "" && uname != strconv.Itoa(uid)) {
		t.Errorf("ls --json: uid %d user %q, want %d %q", n.UID, n.User, uid, uname)
	}
	if n.Group != gname && !(n.Group == "" && gname == strconv.Itoa(gid)) {
		t.Errorf("ls --json: group %q, want %q", n.Group, gname)
	}
}

func TestLsMode(t *testing.T) {
	for _, c := range []struct {
		kind format.NodeKind
		perm uint32
		want string
	}{
		{format.KindFile, 0o644, "-rw-r--r--"},
		{format.KindDir, 0o755, "drwxr-xr-x"},
		{format.KindSymlink, 0o777, "lrwxrwxrwx"},
		{format.KindFile, 0o4755, "-rwsr-xr-x"},
		{format.KindFile, 0o4644, "-rwSr--r--"},
		{format.KindFile, 0o2750, "-rwxr-s---"},
		{format.KindFile, 0o2740, "-rwxr-S---"},
		{format.KindDir, 0o1777, "drwxrwxrwt"},
		{format.KindDir, 0o1776, "drwxrwxrwT"},
		{format.KindFIFO, 0o600, "prw-------"},
		{format.KindCharDev, 0o666, "crw-rw-rw-"},
		{format.KindBlockDev, 0o660, "brw-rw----"},
		{format.KindSocket, 0o755, "srwxr-xr-x"},
		{format.KindFile, 0, "----------"},
	} {
		if got := lsMode(&format.Node{Kind: c.kind, Perm: c.perm}); got != c.want {
			t.Errorf("lsMode(%v, %#o) = %s, want %s", c.kind, c.perm, got, c.want)
		}
	}
}

// TestOwnerNamesBounded: a snapshot with a new owner on every entry does
// not make ls look up more than maxOwnerLookups IDs; unknown IDs print as
// numbers, names as safe text.
func TestOwnerNamesBounded(t *testing.T) {
	o := newOwnerNames()
	lookups := 0
	o.lookupUser = func(id string) (string, error) {
		lookups++
		if id == "7" {
			return "evil\x1b[2Jname", nil
		}
		return "", errors.New("unknown user")
	}
	for i := range uint64(3 * maxOwnerLookups) {
		o.user(i)
		o.user(i) // remembered
	}
	if lookups != maxOwnerLookups {
		t.Errorf("%d lookups for %d distinct IDs, want %d", lookups, 3*maxOwnerLookups, maxOwnerLookups)
	}
	if got := orNumber(o.user(12), 12); got != "12" {
		t.Errorf("unknown uid 12 printed as %q", got)
	}
	if got := orNumber(o.user(7), 7); strings.ContainsRune(got, 0x1b) {
		t.Errorf("user name printed raw: %q", got)
	}
}

// TestRemoteSelection: through a real server, "latest" is this host's for
// tokens with no host of their own (an owner's, and a backup-reader's,
// which may not even ask for one), filters narrow snapshots, and forget
// --host touches only that host.
func TestRemoteSelection(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	e.setenv("COFFER_HOST", "web01")
	mustCoffer(t, e, "vault", "create", "prod")
	web01, web02 := filepath.Join(t.TempDir(), "web01"), filepath.Join(t.TempDir(), "web02")
	writeFile(t, filepath.Join(web01, "f"), []byte("web01's data"), 0o644)
	writeFile(t, filepath.Join(web02, "f"), []byte("web02's data"), 0o644)
	srcs := []string{web01, web02}
	id1 := backupJSON(t, e, web01)
	backupJSON(t, e, web02, "--host", "web02")
	backupJSON(t, e, web02, "--host", "web02")

	if got, id := restoredFrom(t, e, srcs, "latest"); got != web01 || id != id1 {
		t.Errorf("remote restore latest on web01: %s (%s), want web01's", got, id)
	}
	reader := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-reader"))
	e.setenv("COFFER_TOKEN", reader)
	if out := mustCoffer(t, e, "ls", "latest"); !strings.Contains(out, web01) || strings.Contains(out, web02) {
		t.Errorf("remote ls latest on web01 (reader token) listed:\n%s", out)
	}
	if out := mustCoffer(t, e, "ls", "latest", "--host", "web02"); !strings.Contains(out, web02) {
		t.Errorf("remote ls latest --host web02 (reader token) listed:\n%s", out)
	}
	if got := snapshotIDs(t, e, "--host", "web02"); len(got) != 2 {
		t.Errorf("remote snapshots --host web02: %v", got)
	}
	// An agent's latest is its own, whatever COFFER_HOST says.
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	agentTok := strings.TrimSpace(mustCoffer(t, e, "source", "add", "db01"))
	db01 := filepath.Join(t.TempDir(), "db01")
	writeFile(t, filepath.Join(db01, "f"), []byte("db01's data"), 0o644)
	e.setenv("COFFER_TOKEN", agentTok)
	idDB := backupJSON(t, e, db01)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	backupJSON(t, e, web01) // web01's, newer
	e.setenv("COFFER_TOKEN", agentTok)
	if got, id := restoredFrom(t, e, []string{web01, web02, db01}, "latest"); got != db01 || id != idDB {
		t.Errorf("agent db01's restore latest with COFFER_HOST=web01: %s (%s), want its own %s", got, id, idDB)
	}
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "forget", "--host", "web02", "--keep-last", "1")
	var hosts []string
	for _, s := range listSnapshots(t, e) {
		hosts = append(hosts, s.Host)
	}
	if !slices.Equal(hosts, []string{"web01", "web02", "db01", "web01"}) {
		t.Errorf("after remote forget --host web02 --keep-last 1: hosts %v, want web01 web02 db01 web01", hosts)
	}
}
