package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/fusefs"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// requireFUSE skips t when this machine cannot mount FUSE file systems,
// unless COFFER_REQUIRE_SERVICES is set (.ci/run installs fuse3).
func requireFUSE(t testing.TB) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "/dev/fuse is absent"
	} else if _, err1 := exec.LookPath("fusermount3"); err1 != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			why = "neither fusermount3 nor fusermount is installed (apt-get install fuse3)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("COFFER_REQUIRE_SERVICES") != "" {
		t.Fatalf("cannot mount FUSE file systems: %s; COFFER_REQUIRE_SERVICES is set", why)
	}
	t.Skipf("cannot mount FUSE file systems: %s", why)
}

// syncBuffer is a buffer written by a running command and read by a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runMount starts `coffer mount dir args…` and waits until the file system
// is there; the returned stop interrupts it (as Ctrl-C does) and checks
// that it unmounted and exited 0.
func runMount(t *testing.T, e *testEnv, dir string, args ...string) (stop func() (stdout, stderr string)) {
	t.Helper()
	requireFUSE(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- runWith(ctx, append([]string{"mount", dir}, args...), strings.NewReader(""), &out, &errb, e.getenv, e.now)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "snapshots")); err == nil {
			break
		}
		select {
		case c := <-code:
			cancel()
			t.Fatalf("coffer mount exited %d before mounting\nstdout:\n%s\nstderr:\n%s", c, out.String(), errb.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("coffer mount did not mount in time\nstderr:\n%s", errb.String())
		}
	}
	stopped := false
	stopFn := func() (string, string) {
		if stopped {
			return out.String(), errb.String()
		}
		stopped = true
		cancel()
		select {
		case c := <-code:
			if c != exitOK {
				t.Errorf("coffer mount exited %d after Ctrl-C\nstderr:\n%s", c, errb.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("coffer mount did not end after Ctrl-C")
		}
		if _, err := os.Stat(filepath.Join(dir, "snapshots")); err == nil {
			t.Errorf("%s is still mounted after Ctrl-C", dir)
		}
		return out.String(), errb.String()
	}
	t.Cleanup(func() {
		stopFn()
	})
	return stopFn
}

// assertSameOwners checks that every entry below mounted has the owner and
// group of its source.
func assertSameOwners(t *testing.T, src, mounted string) {
	t.Helper()
	filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		var a, b syscall.Stat_t
		if err := syscall.Lstat(p, &a); err != nil {
			return err
		}
		if err := syscall.Lstat(filepath.Join(mounted, rel), &b); err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if a.Uid != b.Uid || a.Gid != b.Gid || a.Size != b.Size && d.Type().IsRegular() {
			t.Errorf("%s: uid %d gid %d size %d, mounted %d %d %d", rel, a.Uid, a.Gid, a.Size, b.Uid, b.Gid, b.Size)
		}
		return nil
	})
}

// TestMountLocal backs up a tree (a multi-chunk file, an empty file, a
// symlink, nested directories), mounts the local vault, finds every file
// byte for byte with its mode, size, owner and mtime under snapshots/,
// hosts/ and ids/, sees writes fail with EROFS, and unmounts on Ctrl-C.
func TestMountLocal(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	e.setenv("COFFER_HOST", "web01")
	src := sampleData(t)
	for i := range 150 { // more entries than a record's slack
		writeFile(t, filepath.Join(src, "many", fmt.Sprintf("f%03d", i)), []byte{byte(i)}, 0o644)
	}
	id := backupJSON(t, e, src)
	e.setenv("COFFER_HOST", "db01")
	other := t.TempDir()
	writeFile(t, filepath.Join(other, "only-db01"), []byte("db\n"), 0o600)
	backupJSON(t, e, other)

	dir := t.TempDir()
	stop := runMount(t, e, dir)
	latest := filepath.Join(dir, "hosts", "web01", "latest")
	assertSameTree(t, src, filepath.Join(latest, src))
	assertSameOwners(t, src, filepath.Join(latest, src))
	assertSameTree(t, src, filepath.Join(dir, "ids", id[:8], src))
	if _, err := os.Stat(filepath.Join(dir, "snapshots", "latest", other, "only-db01")); err != nil {
		t.Errorf("snapshots/latest is not the newest snapshot: %v", err)
	}
	// A walk of the whole mount meets each snapshot at several places
	// (snapshots/, hosts/, ids/, latest): each is whole, none runs into
	// the bound on entries a snapshot holds.
	walked := 0
	if err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		walked++
		return err
	}); err != nil || walked < 3*160 {
		t.Errorf("a walk of the mount: %d entries, %v", walked, err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "snapshots"))
	if err != nil || len(ents) != 3 {
		t.Errorf("snapshots/ holds %v (%v), want two times and latest", ents, err)
	}
	big := filepath.Join(latest, src, "docs", "big.bin")
	if err := os.WriteFile(big, []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing a mounted file: %v, want EROFS", err)
	}
	if err := os.Remove(big); !errors.Is(err, syscall.EROFS) {
		t.Errorf("removing a mounted file: %v, want EROFS", err)
	}
	out, _ := stop()
	if !strings.Contains(out, "Unmounted") {
		t.Errorf("mount said %q at the end", out)
	}
}

// TestMountHostFilter: --host web01 mounts web01's snapshots only.
func TestMountHostFilter(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	src := smallData(t)
	for _, h := range []string{"web01", "db01"} {
		e.setenv("COFFER_HOST", h)
		backupJSON(t, e, src)
	}
	dir := t.TempDir()
	runMount(t, e, dir, "--host", "web01")
	hosts, err := os.ReadDir(filepath.Join(dir, "hosts"))
	if err != nil || len(hosts) != 1 || hosts[0].Name() != "web01" {
		t.Fatalf("hosts/ holds %v (%v), want web01 alone", hosts, err)
	}
}

// TestMountRemote mounts a vault on a server over loopback TLS. With a
// backup reader's token (listing, never contents) the tree shows with its
// names, modes, sizes and times, and reading any file fails with EACCES and
// a line saying why; with an operator's token every file reads back byte
// for byte.
func TestMountRemote(t *testing.T) {
	requireFUSE(t)
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	op := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--vault", srv.URL+"/prod", "--role", "backup-operator", "--name", "web01", "--token", srv.OwnerToken))
	reader := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--vault", srv.URL+"/prod", "--role", "backup-reader", "--token", srv.OwnerToken))
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", op)
	src := sampleData(t)
	backupJSON(t, e, src)

	e.setenv("COFFER_TOKEN", reader)
	dir := t.TempDir()
	stop := runMount(t, e, dir)
	mounted := filepath.Join(dir, "snapshots", "latest", src)
	n := 0
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		si, _ := os.Lstat(p)
		mi, err := os.Lstat(filepath.Join(mounted, rel))
		if err != nil {
			t.Errorf("reader: %s: %v", rel, err)
			return nil
		}
		if si.Mode() != mi.Mode() || (si.Mode().IsRegular() && (si.Size() != mi.Size() || !si.ModTime().Equal(mi.ModTime()))) {
			t.Errorf("reader: %s: %v %d %v, mounted %v %d %v", rel, si.Mode(), si.Size(), si.ModTime(), mi.Mode(), mi.Size(), mi.ModTime())
		}
		if si.Mode().IsRegular() && si.Size() > 0 { // an empty file has no contents to read
			n++
			if _, err := os.ReadFile(filepath.Join(mounted, rel)); !errors.Is(err, syscall.EACCES) {
				t.Errorf("reader: reading %s: %v, want EACCES (a backup reader never reads contents)", rel, err)
			}
		}
		return nil
	})
	if err != nil || n < 3 {
		t.Fatalf("walked %d files: %v", n, err)
	}
	if err := os.Mkdir(filepath.Join(dir, "snapshots", "latest", "x"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("mkdir in the mount: %v, want EROFS", err)
	}
	if _, errOut := stop(); !strings.Contains(errOut, "forbidden") && !strings.Contains(errOut, "permission") {
		t.Errorf("the reader was not told why reads failed:\n%s", errOut)
	}

	e.setenv("COFFER_TOKEN", op)
	stop = runMount(t, e, dir)
	assertSameTree(t, src, mounted)
	stop()
}

// TestMountPointErrors: a missing mount point and a file get messages
// that say what to do; nothing is mounted.
func TestMountPointErrors(t *testing.T) {
	e := newEnv(t)
	backupJSON(t, e, smallData(t))
	missing := filepath.Join(t.TempDir(), "nope")
	_, errOut, code := coffer(t, e, "mount", missing)
	if code == exitOK || !strings.Contains(errOut, "mkdir -p") {
		t.Errorf("missing mount point: exit %d, %q", code, errOut)
	}
	file := filepath.Join(t.TempDir(), "f")
	writeFile(t, file, nil, 0o644)
	_, errOut, code = coffer(t, e, "mount", file)
	if code == exitOK || !strings.Contains(errOut, "not a directory") {
		t.Errorf("file as mount point: exit %d, %q", code, errOut)
	}
	if err := staleMount("/mnt/x"); !strings.Contains(err.Error(), "fusermount -u /mnt/x") {
		t.Errorf("stale mount message %q lacks the fusermount hint", err)
	}
	if err := mountError("/mnt/x", syscall.ENOTCONN); !strings.Contains(err.Error(), "fusermount -u /mnt/x") {
		t.Errorf("mount error %q lacks the fusermount hint", err)
	}
}

// TestMountHelperProcess is not a test: TestMountStaleMountPoint runs the
// test binary with it to mount a file system in a process it then kills.
func TestMountHelperProcess(t *testing.T) {
	dir := os.Getenv("COFFER_TEST_MOUNT_HELPER")
	if dir == "" {
		t.Skip("helper process for TestMountStaleMountPoint")
	}
	f, err := fusefs.New(fusefs.Options{Open: func(context.Context, vault.SnapshotRecord) (fusefs.Repo, error) {
		return nil, errors.New("no snapshots")
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fusefs.Mount(dir, f); err != nil {
		t.Fatal(err)
	}
	fmt.Println("mounted")
	time.Sleep(5 * time.Minute) // until killed
}

// TestMountStaleMountPoint: a mount whose process was killed (SIGKILL, a
// crash) leaves a stale mount point; coffer mount refuses it and says to
// run fusermount -u.
func TestMountStaleMountPoint(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMountHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "COFFER_TEST_MOUNT_HELPER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 64)
	n, _ := out.Read(line)
	if !strings.Contains(string(line[:n]), "mounted") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the helper process said %q", line[:n])
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Cleanup(func() {
		for _, fm := range []string{"fusermount3", "fusermount"} {
			if exec.Command(fm, "-u", dir).Run() == nil {
				return
			}
		}
	})
	if _, err := os.Stat(dir); !errors.Is(err, syscall.ENOTCONN) {
		t.Skipf("killing the mounting process did not leave a stale mount here (%v)", err)
	}
	e := newEnv(t)
	_, errOut, code := coffer(t, e, "mount", dir)
	if code == exitOK || !strings.Contains(errOut, "stale mount") || !strings.Contains(errOut, "fusermount -u "+dir) {
		t.Errorf("mount on a stale mount point: exit %d, %q", code, errOut)
	}
}

// TestMountCtrlCWhileBusy: Ctrl-C while a file in the mount is open says
// the mount point is busy, keeps trying, and unmounts once it is closed.
func TestMountCtrlCWhileBusy(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	src := smallData(t)
	backupJSON(t, e, src)
	dir := t.TempDir()
	stop := runMount(t, e, dir)
	h, err := os.Open(filepath.Join(dir, "snapshots", "latest", src, "a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond)
		h.Close()
	}()
	out, errOut := stop()
	if !strings.Contains(errOut, "is busy") {
		t.Errorf("Ctrl-C with a file open did not say the mount is busy: %q", errOut)
	}
	if !strings.Contains(out, "Unmounted") {
		t.Errorf("mount said %q at the end", out)
	}
}

// TestMountDedupScopeSource: in a vault whose dedup scope is "source", a
// source's token mounts its own snapshots only (no other source's host
// appears), and the owner's mount reads each source's files in its own
// dedup domain, the same file of both byte for byte.
func TestMountDedupScopeSource(t *testing.T) {
	requireFUSE(t)
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	url := srv.URL + "/shared"
	mustCoffer(t, e, "vault", "create", "shared", "--dedup-scope", "source", "--vault", srv.URL, "--token", srv.OwnerToken)
	owner := func(args ...string) []string { return append(args, "--vault", url, "--token", srv.OwnerToken) }
	web := strings.TrimSpace(mustCoffer(t, e, owner("source", "add", "web")...))
	db := strings.TrimSpace(mustCoffer(t, e, owner("source", "add", "db")...))
	common := bytes.Repeat([]byte("a file both sources hold\n"), 4000)
	webSrc, dbSrc := filepath.Join(t.TempDir(), "web"), filepath.Join(t.TempDir(), "db")
	writeFile(t, filepath.Join(webSrc, "common.txt"), common, 0o644)
	writeFile(t, filepath.Join(dbSrc, "common.txt"), common, 0o644)
	writeFile(t, filepath.Join(dbSrc, "payroll.csv"), []byte("alice,100\n"), 0o600)
	backupJSON(t, e, webSrc, "--vault", url, "--token", web)
	backupJSON(t, e, dbSrc, "--vault", url, "--token", db)

	dir := t.TempDir()
	stop := runMount(t, e, dir, "--vault", url, "--token", web)
	hosts, err := os.ReadDir(filepath.Join(dir, "hosts"))
	if err != nil || len(hosts) != 1 {
		t.Fatalf("source web's mount shows hosts %v (%v), want its own only", hosts, err)
	}
	assertSameTree(t, webSrc, filepath.Join(dir, "snapshots", "latest", webSrc))
	if _, err := os.Stat(filepath.Join(dir, "snapshots", "latest", dbSrc)); err == nil {
		t.Error("source web's mount shows source db's files")
	}
	stop()

	stop = runMount(t, e, dir, "--vault", url, "--token", srv.OwnerToken)
	for _, src := range []string{webSrc, dbSrc} {
		var found string
		ents, _ := os.ReadDir(filepath.Join(dir, "ids"))
		for _, en := range ents {
			if _, err := os.Stat(filepath.Join(dir, "ids", en.Name(), src)); err == nil {
				found = filepath.Join(dir, "ids", en.Name(), src)
			}
		}
		if found == "" {
			t.Fatalf("the owner's mount lacks %s", src)
		}
		assertSameTree(t, src, found)
	}
	stop()
}
