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
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/agent"
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
			// The parent's trees are read once each (the directories, src
			// and the directories above it); everything else is a handful.
			depth := strings.Count(src, "/")
			trees := reqs["GET /v1/vaults/{vault}/trees/{id}"]
			other := 0
			for r, n := range reqs {
				if r != "GET /v1/vaults/{vault}/trees/{id}" && r != "GET /metrics" {
					other += n
				}
			}
			t.Logf("unchanged re-run of %d files: requests %v", files, reqs)
			if trees > dirs+depth+1 {
				t.Errorf("%d tree loads for %d directories", trees, dirs+depth+1)
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
