package server_test

// Incremental remote backups (issue 13): a re-run through a vault server
// reuses the parent's unchanged files without reading them, as a local
// one does, in a handful of requests beyond the parent's tree loads; what
// it reuses is held against a concurrent prune exactly like what it
// uploads; and naming a parent gains an agent nothing and tells it
// nothing about other sources' snapshots.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/vault"
)

// openWatch counts the opens of regular files in a set of directories
// (inotify IN_OPEN), whoever makes them: a file the backup reuses must
// not be opened at all.
type openWatch struct {
	t  testing.TB
	fd int
}

func watchOpens(t testing.TB, root string) *openWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	w := &openWatch{t: t, fd: fd}
	t.Cleanup(func() { unix.Close(fd) })
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		_, err = unix.InotifyAddWatch(fd, p, unix.IN_OPEN)
		return err
	})
	if err != nil {
		t.Fatalf("inotify watch: %v", err)
	}
	return w
}

// opened drains the events and returns the names of the regular files
// opened since the last call.
func (w *openWatch) opened() []string {
	w.t.Helper()
	var names []string
	buf := make([]byte, 64<<10)
	for range 1 << 16 { // bounded: each round drains up to 64 KiB of events
		n, err := unix.Read(w.fd, buf)
		if err == unix.EAGAIN {
			return names
		}
		if err != nil {
			w.t.Fatalf("inotify read: %v", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.t.Fatal("inotify queue overflowed: opens were not all counted")
			}
			if ev.Mask&unix.IN_ISDIR == 0 && name != "" {
				names = append(names, name)
			}
		}
	}
	w.t.Fatal("inotify: events without end")
	return nil
}

// requestCounts reads the server's request counters by route.
func (a *arena) requestCounts() map[string]int {
	a.t.Helper()
	text, err := a.owner.Metrics(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "coffer_http_requests_total{") {
			continue
		}
		i := strings.Index(line, `route="`)
		sp := strings.LastIndexByte(line, ' ')
		if i < 0 || sp < 0 {
			continue
		}
		route := line[i+len(`route="`):]
		route = route[:strings.IndexByte(route, '"')]
		n, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			a.t.Fatalf("metrics line %q: %v", line, err)
		}
		out[route] += int(n)
	}
	return out
}

// diffCounts is after minus before, without the routes that did not move.
func diffCounts(before, after map[string]int) map[string]int {
	d := map[string]int{}
	for r, n := range after {
		if n-before[r] != 0 {
			d[r] = n - before[r]
		}
	}
	return d
}

// manySmallFiles writes files small files into dirs directories under root
// and returns their paths.
func manySmallFiles(t testing.TB, root string, dirs, files int) []string {
	t.Helper()
	var paths []string
	for i := range files {
		p := filepath.Join(root, fmt.Sprintf("d%02d", i%dirs), fmt.Sprintf("f%05d.txt", i))
		if i < dirs {
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		body := bytes.Repeat([]byte(fmt.Sprintf("file %d of the tree; ", i)), 1+i%50)
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// subtree returns the ID of the tree of directory dir in snapshot sn, read
// as the owner.
func (a *arena) subtree(sn vault.SnapshotRecord, dir string) vault.ID {
	a.t.Helper()
	ctx := context.Background()
	view, err := a.owner.Vault("a").ForSnapshot(ctx, sn)
	if err != nil {
		a.t.Fatal(err)
	}
	id := sn.Tree
	for _, name := range strings.Split(strings.Trim(dir, "/"), "/") {
		tr, err := view.LoadTree(ctx, id)
		if err != nil {
			a.t.Fatal(err)
		}
		n := tr.Find([]byte(name))
		if n == nil {
			a.t.Fatalf("snapshot %s has no %s", sn.ID.Short(), dir)
		}
		id = n.Subtree
	}
	return id
}

// remoteBackup runs one backup of dir as a fresh agent process would: a
// new client (nothing known from an earlier run), its dedup keys loaded,
// its host and parent horizon as the server binds them.
func (a *arena) remoteBackup(token, dir, host string) (*agent.BackupResult, *client.Vault, error) {
	a.t.Helper()
	ctx := context.Background()
	v := a.client(token).Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		return nil, v, err
	}
	if b := v.BoundHost(); b != "" {
		host = b
	}
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{dir}, Host: host, ParentSince: v.BoundHostSince()})
	return res, v, err
}

// TestRemoteIncremental: an unchanged re-run through the server reuses
// every file and opens none, for a backup-operator token and for a
// source's agent (which may not download the index), in a bounded number
// of requests; after a few files change, only those are read.
func TestRemoteIncremental(t *testing.T) {
	const dirs, files = 40, 3000
	for _, kind := range []string{"operator", "source"} {
		t.Run(kind, func(t *testing.T) {
			a := newArena(t)
			var tok string
			if kind == "operator" {
				tok = a.roleToken(authn.RoleBackupOperator, "a")
			} else {
				a.setScope("source")
				tok = a.addSource("web")
			}
			src := filepath.Join(t.TempDir(), "src")
			paths := manySmallFiles(t, src, dirs, files)
			first, _, err := a.remoteBackup(tok, src, "web")
			if err != nil {
				t.Fatal(err)
			}
			if first.Reused != 0 {
				t.Fatalf("first backup reused %d files", first.Reused)
			}

			w := watchOpens(t, src)
			before := a.requestCounts()
			t0 := time.Now()
			second, _, err := a.remoteBackup(tok, src, "web")
			t.Logf("re-run took %v", time.Since(t0))
			if err != nil {
				t.Fatal(err)
			}
			reqs := diffCounts(before, a.requestCounts())
			if second.Reused != files {
				t.Errorf("unchanged re-run reused %d of %d files", second.Reused, files)
			}
			if got := w.opened(); len(got) != 0 {
				t.Errorf("unchanged re-run opened %d files (e.g. %s), want none", len(got), got[0])
			}
			if second.Snapshot.Parent != first.Snapshot.ID {
				t.Errorf("parent %s, want %s", second.Snapshot.Parent.Short(), first.Snapshot.ID.Short())
			}
			// Only the trees of the directories above src may change (other
			// tests touch the temporary directory); src's must not.
			if s1, s2 := a.subtree(first.Snapshot, src), a.subtree(second.Snapshot, src); s1 != s2 || second.Snapshot.BytesAdded > 4<<10 {
				t.Errorf("unchanged re-run: tree of src %s (want %s), %d bytes added", s2.Short(), s1.Short(), second.Snapshot.BytesAdded)
			}
			// The parent's trees are read (the directories, src and the
			// directories above it) in batches of up to 256 through
			// POST …/read, the root alone; everything else is a handful.
			depth := strings.Count(src, "/")
			trees := reqs["GET /v1/vaults/{vault}/trees/{id}"] + reqs["POST /v1/vaults/{vault}/read"]
			other := 0
			for r, n := range reqs {
				if r != "GET /v1/vaults/{vault}/trees/{id}" && r != "POST /v1/vaults/{vault}/read" && r != "GET /metrics" {
					other += n
				}
			}
			t.Logf("unchanged re-run of %d files: requests %v", files, reqs)
			if want := 2 * (depth + 3); trees > want {
				t.Errorf("%d requests loaded the trees of %d directories; want them batched, at most %d", trees, dirs+depth+1, want)
			}
			if other > 10 {
				t.Errorf("%d requests besides the tree loads, want a handful: %v", other, reqs)
			}
			if n := reqs["POST /v1/vaults/{vault}/blobs"]; n > 1 {
				t.Errorf("unchanged re-run uploaded %d times (at most the trees above src may be new)", n)
			}

			// Change three files (content and mtime): exactly those are read.
			changed := map[string]bool{}
			for _, i := range []int{7, 1500, 2999} {
				p := paths[i]
				if err := os.WriteFile(p, []byte(fmt.Sprintf("changed %d", i)), 0o600); err != nil {
					t.Fatal(err)
				}
				changed[filepath.Base(p)] = true
			}
			third, _, err := a.remoteBackup(tok, src, "web")
			if err != nil {
				t.Fatal(err)
			}
			if third.Reused != files-3 {
				t.Errorf("after 3 changes: reused %d, want %d", third.Reused, files-3)
			}
			for _, n := range w.opened() {
				if !changed[n] {
					t.Errorf("unchanged file %s was opened", n)
				}
			}
			if third.Snapshot.Parent != second.Snapshot.ID {
				t.Errorf("parent %s, want %s", third.Snapshot.Parent.Short(), second.Snapshot.ID.Short())
			}
			rep, err := a.owner.Vault("a").Check(context.Background(), true, nil)
			if err != nil || len(rep.Errors) > 0 {
				t.Fatalf("check --read-data: %v %v", err, rep.Errors)
			}
			view, err := a.owner.Vault("a").ForSnapshot(context.Background(), third.Snapshot)
			if err != nil {
				t.Fatal(err)
			}
			dst := t.TempDir()
			if _, err := agent.Restore(context.Background(), view, third.Snapshot.Tree, agent.RestoreOptions{Target: dst}); err != nil {
				t.Fatal(err)
			}
			sameTree(t, src, dst)
		})
	}
}

// pruneAtFlush is a backup's repository that runs hook once, when the
// agent has walked its files (and asked which of its parent's chunks are
// stored) and is about to flush: a prune racing the backup's end.
type pruneAtFlush struct {
	*client.Vault
	hook func()
}

func (p *pruneAtFlush) Flush(ctx context.Context) error {
	if p.hook != nil {
		p.hook()
		p.hook = nil
	}
	return p.Vault.Flush(ctx)
}

// softDeleteOff turns soft delete off in vault "a" (a critical change,
// approved), so that prune removes a forgotten snapshot at once.
func (a *arena) softDeleteOff() {
	a.t.Helper()
	approver := a.roleToken(authn.RoleSecurityApprover, "")
	off := "off"
	var res api.SettingsResult
	if err := json.Unmarshal(a.mustStatus(http.StatusAccepted, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{SoftDelete: &off}), &res); err != nil {
		a.t.Fatal(err)
	}
	a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+res.Request.ID+"/approve", approver, nil)
}

// pruneNow prunes vault "a" as the owner.
func (a *arena) pruneNow() api.PruneReport {
	a.t.Helper()
	var rep api.PruneReport
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/prune", a.env.OwnerToken, api.Prune{}), &rep); err != nil {
		a.t.Fatal(err)
	}
	return rep
}

// checkAndRestore fails t unless check --read-data finds vault "a" sound
// and snapshot sn restores to src's content.
func (a *arena) checkAndRestore(sn vault.SnapshotRecord, src string) {
	a.t.Helper()
	ctx := context.Background()
	rep, err := a.owner.Vault("a").Check(ctx, true, nil)
	if err != nil || len(rep.Errors) > 0 {
		a.t.Fatalf("check --read-data: %v %v", err, rep.Errors)
	}
	view, err := a.owner.Vault("a").ForSnapshot(ctx, sn)
	if err != nil {
		a.t.Fatal(err)
	}
	dst := a.t.TempDir()
	if _, err := agent.Restore(ctx, view, sn.Tree, agent.RestoreOptions{Target: dst}); err != nil {
		a.t.Fatalf("restore %s: %v", sn.ID.Short(), err)
	}
	sameTree(a.t, src, dst)
}

// TestAttackIncrementalPruneMidBackup: the owner forgets a re-run's
// parent and prunes while the re-run, which reuses every file of that
// parent unread, is about to save its snapshot. The packs the re-run
// relies on wait for its session; the server refuses the vanished parent
// (as not found) and the agent saves its snapshot without one, saying
// why; and the snapshot is complete: check --read-data and a restore
// agree, before and after a second prune.
func TestAttackIncrementalPruneMidBackup(t *testing.T) {
	a := newArena(t)
	a.setScope("source")
	a.softDeleteOff()
	tok := a.addSource("web")
	src := filepath.Join(t.TempDir(), "src")
	const files = 300
	manySmallFiles(t, src, 6, files)
	first, _, err := a.remoteBackup(tok, src, "web")
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	v := a.client(tok).Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}
	var rep api.PruneReport
	repo := &pruneAtFlush{Vault: v, hook: func() {
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/forget", a.env.OwnerToken, api.Forget{IDs: []string{first.Snapshot.ID.String()}})
		rep = a.pruneNow()
	}}
	var warned []string
	res, err := agent.Backup(ctx, repo, agent.BackupOptions{Paths: []string{src}, Host: v.BoundHost(), ParentSince: v.BoundHostSince(),
		Warn: func(w agent.Warning) { warned = append(warned, w.String()) }})
	if err != nil {
		t.Fatalf("re-run while its parent was pruned: %v", err)
	}
	if len(rep.Expired) != 1 || rep.Condemned == 0 || rep.Waiting == 0 {
		t.Fatalf("prune: %d expired, %d condemned, %d waiting: want the parent removed and its packs held for the running backup", len(rep.Expired), rep.Condemned, rep.Waiting)
	}
	if res.Reused != files {
		t.Errorf("re-run reused %d of %d files", res.Reused, files)
	}
	if !res.Snapshot.Parent.IsZero() {
		t.Errorf("snapshot names parent %s, which was pruned", res.Snapshot.Parent.Short())
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "deleted while this backup ran") {
		t.Errorf("warnings %q, want one saying the parent was deleted meanwhile", warned)
	}
	a.checkAndRestore(res.Snapshot, src)
	// The session has ended: the next prune finds the new snapshot needs
	// the condemned packs, and keeps them.
	if rep := a.pruneNow(); rep.Reprieved == 0 {
		t.Errorf("second prune: %d reprieved, %d deleted, want the held packs reprieved", rep.Reprieved, rep.Deleted)
	}
	a.checkAndRestore(res.Snapshot, src)
}

// TestAttackIncrementalParentNamesNothing: with dedup scope "source", an
// agent names as its snapshot's parent another source's snapshot, a
// snapshot that was pruned, and an ID that names nothing: each is refused
// alike (404, the same message but for the ID), nothing is recorded, and
// the answer says nothing of the other source (its host). Nor can it
// read the other source's trees to reuse them.
func TestAttackIncrementalParentNamesNothing(t *testing.T) {
	a := newArena(t)
	a.setScope("source")
	a.softDeleteOff()
	ts := a.twoSources()
	webDir := t.TempDir()
	writeTree(t, webDir, map[string][]byte{"gone": []byte("a snapshot soon pruned")})
	gone := a.backupAs(ts.web, webDir, "web")
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/forget", a.env.OwnerToken, api.Forget{IDs: []string{gone.ID.String()}})
	a.pruneNow()

	good := func(parent vault.ID) api.Snapshot {
		return api.Snapshot{Host: "web", Paths: ts.webSnap.Paths, Tree: ts.webSnap.Tree.String(), Parent: parent.String(),
			Files: ts.webSnap.Files, Dirs: ts.webSnap.Dirs, Bytes: ts.webSnap.Bytes}
	}
	objects, rows := a.snapshotObjects(), len(a.liveSnapshots())
	var madeUp vault.ID
	madeUp[0], madeUp[31] = 0xcd, 0x01
	answer := func(parent vault.ID) (int, string) {
		st, out := a.call("POST", "/v1/vaults/a/snapshots", ts.web, good(parent))
		return st, strings.ReplaceAll(string(out), parent.Short(), "ID")
	}
	wantSt, want := answer(madeUp)
	if wantSt != http.StatusNotFound {
		t.Fatalf("made-up parent: status %d, want 404: %s", wantSt, want)
	}
	for name, id := range map[string]vault.ID{"another source's": ts.dbSnap.ID, "pruned": gone.ID} {
		st, got := answer(id)
		if st != wantSt || got != want {
			t.Errorf("%s snapshot as parent: %d %s\nwant as for a made-up ID: %d %s", name, st, got, wantSt, want)
		}
		if strings.Contains(got, `"db"`) || strings.Contains(got, "agt_") {
			t.Errorf("%s snapshot as parent: the answer names the other source: %s", name, got)
		}
	}
	if n := a.snapshotObjects(); n != objects {
		t.Errorf("the store holds %d snapshot objects after refused saves, want %d", n, objects)
	}
	if n := len(a.liveSnapshots()); n != rows {
		t.Errorf("the catalog lists %d snapshots after refused saves, want %d", n, rows)
	}
	// Its own live snapshot is still a parent it may name.
	a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", ts.web, good(ts.webSnap.ID))
	// Reusing db's files would need db's trees: refused like a tree that
	// does not exist.
	st1, out1 := a.call("GET", "/v1/vaults/a/trees/"+ts.dbSnap.Tree.String(), ts.web, nil)
	st2, out2 := a.call("GET", "/v1/vaults/a/trees/"+madeUp.String(), ts.web, nil)
	if st1 != http.StatusNotFound || st2 != st1 || strings.ReplaceAll(string(out1), ts.dbSnap.Tree.String(), "ID") != strings.ReplaceAll(string(out2), madeUp.String(), "ID") {
		t.Errorf("web reads db's root tree: %d %s; a made-up tree: %d %s", st1, out1, st2, out2)
	}
}
