package local

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/coffer-backup/coffer/internal/store/storetest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) vault.Store { return open(t) })
}

// TestConformanceLinkFallback runs the suite with publishing by link and
// unlink, as on filesystems without renameat2(RENAME_NOREPLACE).
func TestConformanceLinkFallback(t *testing.T) {
	storetest.Run(t, func(t *testing.T) vault.Store {
		s := open(t)
		s.noRenameat2.Store(true)
		return s
	})
}

var (
	packHandle = vault.Handle{Type: vault.PackObject, Name: strings.Repeat("ab", 32)}
	snapHandle = vault.Handle{Type: vault.SnapshotObject, Name: strings.Repeat("cd", 32)}
)

func put(t *testing.T, s *Store, h vault.Handle, data string) {
	t.Helper()
	if err := s.Put(context.Background(), h, strings.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s *Store, h vault.Handle) string {
	t.Helper()
	rc, err := s.Get(context.Background(), h, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func listNames(t *testing.T, s *Store, typ vault.ObjectType) []string {
	t.Helper()
	var names []string
	err := s.List(context.Background(), typ, func(oi vault.ObjectInfo) error {
		names = append(names, oi.Handle.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// tempFiles returns the temp files anywhere in the store.
func tempFiles(t *testing.T, s *Store) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(s.Path(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tempPrefix) {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestLayout(t *testing.T) {
	s := open(t)
	put(t, s, packHandle, "pack")
	put(t, s, snapHandle, "snapshot")
	put(t, s, vault.Handle{Type: vault.KeyObject, Name: "1"}, "key")
	put(t, s, vault.Handle{Type: vault.ConfigObject, Name: "config"}, "config")
	for p, want := range map[string]string{
		"packs/ab/" + packHandle.Name:  "pack",
		"snapshots/" + snapHandle.Name: "snapshot",
		"keys/1":                       "key",
		"config":                       "config",
	} {
		got, err := os.ReadFile(filepath.Join(s.Path(), filepath.FromSlash(p)))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	if !filepath.IsAbs(s.Path()) {
		t.Errorf("Path() = %q, want an absolute path", s.Path())
	}
}

func TestModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	dir := filepath.Join(t.TempDir(), "a", "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, packHandle, "pack")
	put(t, s, snapHandle, "snapshot")
	put(t, s, vault.Handle{Type: vault.KeyObject, Name: "1"}, "key")
	put(t, s, vault.Handle{Type: vault.ConfigObject, Name: "config"}, "config")
	err = filepath.WalkDir(s.Path(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenNotADirectory(t *testing.T) {
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p); err == nil {
		t.Fatal("Open of a file succeeded")
	}
	if _, err := Open(""); err == nil {
		t.Fatal("Open of an empty path succeeded")
	}
}

func TestRenameat2Used(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("renameat2 is Linux-only")
	}
	s := open(t)
	put(t, s, packHandle, "pack")
	if s.noRenameat2.Load() {
		t.Logf("renameat2(RENAME_NOREPLACE) unsupported in %s; only the link fallback was tested", s.Path())
	}
}

func TestTraversalRejected(t *testing.T) {
	root := t.TempDir()
	s, err := Open(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, h := range []vault.Handle{
		{Type: vault.SnapshotObject, Name: "../escaped"},
		{Type: vault.SnapshotObject, Name: "../../escaped"},
		{Type: vault.KeyObject, Name: "../snapshots/x"},
		{Type: vault.PackObject, Name: "../escaped"},
		{Type: vault.PackObject, Name: "ab/../../../escaped"},
		{Type: vault.SnapshotObject, Name: ".."},
		{Type: vault.SnapshotObject, Name: `..\escaped`},
		{Type: vault.ConfigObject, Name: "../config"},
		{Type: "..", Name: "escaped"},
		{Type: "../..", Name: "escaped"},
	} {
		if err := s.Put(ctx, h, strings.NewReader("x"), 1); err == nil {
			t.Errorf("Put(%q) succeeded", h)
		}
		if err := s.Delete(ctx, h); err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Errorf("Delete(%q) = %v, want a validation error", h, err)
		}
	}
	var found []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			found = append(found, p)
		}
		return err
	})
	if len(found) > 0 {
		t.Errorf("rejected Puts left files: %v", found)
	}
}

func TestStaleTemp(t *testing.T) {
	s := open(t)
	put(t, s, packHandle, "pack")
	put(t, s, snapHandle, "snapshot")
	put(t, s, vault.Handle{Type: vault.ConfigObject, Name: "config"}, "config")
	old := time.Now().Add(-2 * time.Hour)
	var stale []string
	for _, dir := range []string{"packs/ab", "snapshots", "keys", "."} {
		d := filepath.Join(s.Path(), filepath.FromSlash(dir))
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{tempPrefix + "old", tempPrefix + "fresh"} {
			p := filepath.Join(d, name)
			if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(name, "old") {
				if err := os.Chtimes(p, old, old); err != nil {
					t.Fatal(err)
				}
				stale = append(stale, p)
			}
		}
	}

	for typ, want := range map[vault.ObjectType]int{vault.PackObject: 1, vault.SnapshotObject: 1, vault.KeyObject: 0, vault.ConfigObject: 1} {
		if got := listNames(t, s, typ); len(got) != want {
			t.Errorf("List(%s) = %q, want %d objects", typ, got, want)
		}
	}

	n, err := s.RemoveStaleTemp(time.Hour)
	if err != nil || n != len(stale) {
		t.Fatalf("RemoveStaleTemp(1h) = %d, %v; want %d, nil", n, err, len(stale))
	}
	for _, p := range stale {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale %s survived: %v", p, err)
		}
	}
	if got := tempFiles(t, s); len(got) != 4 {
		t.Errorf("fresh temp files left = %q, want 4", got)
	}
	if got := get(t, s, packHandle); got != "pack" {
		t.Errorf("pack = %q after RemoveStaleTemp", got)
	}
	if n, err := s.RemoveStaleTemp(0); err != nil || n != 4 {
		t.Fatalf("RemoveStaleTemp(0) = %d, %v; want 4, nil", n, err)
	}
	if got := tempFiles(t, s); len(got) != 0 {
		t.Errorf("temp files left = %q", got)
	}
	if n, err := open(t).RemoveStaleTemp(0); err != nil || n != 0 {
		t.Fatalf("RemoveStaleTemp(0) of an empty store = %d, %v", n, err)
	}
}

// TestListSkipsStrays checks that List reports only what Get can open.
func TestListSkipsStrays(t *testing.T) {
	s := open(t)
	put(t, s, packHandle, "pack")
	for _, p := range []string{
		"packs/ab/UPPER",              // invalid name
		"packs/cd/" + packHandle.Name, // in the wrong fan-out directory
		"packs/stray",                 // a file in packs/
		"packs/.hidden/abcd",          // a hidden directory
		"snapshots/.DS_Store",
	} {
		p = filepath.Join(s.Path(), filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(s.Path(), "snapshots", "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, s, vault.PackObject); len(got) != 1 || got[0] != packHandle.Name {
		t.Errorf("List(packs) = %q, want just %s", got, packHandle.Name)
	}
	if got := listNames(t, s, vault.SnapshotObject); len(got) != 0 {
		t.Errorf("List(snapshots) = %q, want nothing", got)
	}
}

// TestPublishRace makes another Put win between writing the temp file and
// publishing it, so that publish itself, not the early existence check,
// must refuse to overwrite.
func TestPublishRace(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		s := open(t)
		s.noRenameat2.Store(fallback)
		s.beforePublish = func(tmp, final string) error {
			if _, err := os.Lstat(tmp); err != nil {
				t.Errorf("temp file missing before publish: %v", err)
			}
			return os.WriteFile(final, []byte("winner"), 0o600)
		}
		err := s.Put(context.Background(), packHandle, strings.NewReader("loser"), 5)
		if !errors.Is(err, vault.ErrExists) {
			t.Errorf("fallback=%v: Put losing the race = %v, want ErrExists", fallback, err)
		}
		if got := get(t, s, packHandle); got != "winner" {
			t.Errorf("fallback=%v: content = %q, want the winner's", fallback, got)
		}
		if got := tempFiles(t, s); len(got) != 0 {
			t.Errorf("fallback=%v: temp files left: %q", fallback, got)
		}
	}
}

func TestFailBeforePublish(t *testing.T) {
	s := open(t)
	errInjected := errors.New("injected")
	s.beforePublish = func(string, string) error { return errInjected }
	err := s.Put(context.Background(), snapHandle, strings.NewReader("x"), 1)
	if !errors.Is(err, errInjected) {
		t.Fatalf("Put = %v, want the injected error", err)
	}
	if got := tempFiles(t, s); len(got) != 0 {
		t.Errorf("temp files left: %q", got)
	}
	if _, err := s.Stat(context.Background(), snapHandle); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Stat after a failed Put = %v, want ErrNotFound", err)
	}
}

// TestFailedPutsLeaveNoTemp checks that every way a Put can fail after
// creating its temp file removes it.
func TestFailedPutsLeaveNoTemp(t *testing.T) {
	s := open(t)
	put(t, s, snapHandle, "existing")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	for name, putFn := range map[string]func() error{
		"failing reader": func() error {
			rd := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(errors.New("boom")))
			return s.Put(bg, packHandle, rd, 100)
		},
		"short reader": func() error { return s.Put(bg, packHandle, strings.NewReader("short"), 100) },
		"long reader":  func() error { return s.Put(bg, packHandle, strings.NewReader("long"), 2) },
		"cancelled":    func() error { return s.Put(cancelled, packHandle, strings.NewReader("x"), 1) },
		"existing":     func() error { return s.Put(bg, snapHandle, strings.NewReader("x"), 1) },
		"invalid": func() error {
			return s.Put(bg, vault.Handle{Type: vault.KeyObject, Name: "../x"}, strings.NewReader("x"), 1)
		},
		"negative size": func() error { return s.Put(bg, packHandle, strings.NewReader(""), -1) },
	} {
		if err := putFn(); err == nil {
			t.Errorf("%s: Put succeeded", name)
		}
		if got := tempFiles(t, s); len(got) != 0 {
			t.Errorf("%s: temp files left: %q", name, got)
		}
	}
}

// TestGetReaderOutlivesDelete checks that an open reader keeps working
// after its object is deleted (on Unix, where open files can be removed).
func TestGetReaderOutlivesDelete(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("open files cannot be removed")
	}
	s := open(t)
	put(t, s, packHandle, "0123456789")
	rc, err := s.Get(context.Background(), packHandle, 2, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := s.Delete(context.Background(), packHandle); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(rc); err != nil || string(got) != "23456" {
		t.Fatalf("read after Delete = %q, %v", got, err)
	}
}

const crashDirEnv = "COFFER_LOCAL_CRASH_DIR"

// TestCrashHelper is the child process of TestCrashDuringPut: it starts a
// Put, says "ready" once part of the object is written and stalls until it
// is killed.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("child process of TestCrashDuringPut")
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	rd := io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), stallReader{})
	err = s.Put(context.Background(), packHandle, rd, 4<<20)
	t.Fatalf("Put returned: %v", err)
}

type stallReader struct{}

func (stallReader) Read([]byte) (int, error) {
	os.Stdout.WriteString("ready\n")
	time.Sleep(time.Hour)
	return 0, io.EOF
}

// TestCrashDuringPut kills (SIGKILL on Unix) a process in the middle of a
// Put and checks that the store shows no object, accepts the same name
// again and removes the leftover temp file.
func TestCrashDuringPut(t *testing.T) {
	if os.Getenv(crashDirEnv) != "" {
		t.Skip("in the child process")
	}
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("child exited before stalling; stderr:\n%s", stderr.Bytes())
		}
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not stall in time; stderr:\n%s", stderr.Bytes())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	leftovers := tempFiles(t, s)
	if len(leftovers) != 1 {
		t.Fatalf("temp files after the crash = %q, want 1", leftovers)
	}
	if fi, err := os.Stat(leftovers[0]); err != nil || fi.Size() == 0 {
		t.Fatalf("the crashed Put's temp file is empty or unreadable: %v", err)
	}
	if got := listNames(t, s, vault.PackObject); len(got) != 0 {
		t.Fatalf("List after the crash = %q, want nothing", got)
	}
	if _, err := s.Stat(context.Background(), packHandle); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("Stat after the crash = %v, want ErrNotFound", err)
	}
	put(t, s, packHandle, "retried")
	if got := get(t, s, packHandle); got != "retried" {
		t.Fatalf("content = %q, want the retried Put's", got)
	}
	if n, err := s.RemoveStaleTemp(time.Hour); err != nil || n != 0 {
		t.Fatalf("RemoveStaleTemp(1h) = %d, %v; want 0, nil", n, err)
	}
	if n, err := s.RemoveStaleTemp(0); err != nil || n != 1 {
		t.Fatalf("RemoveStaleTemp(0) = %d, %v; want 1, nil", n, err)
	}
	if got := tempFiles(t, s); len(got) != 0 {
		t.Fatalf("temp files left = %q", got)
	}
	if got := get(t, s, packHandle); got != "retried" {
		t.Fatalf("content after RemoveStaleTemp = %q", got)
	}
}
