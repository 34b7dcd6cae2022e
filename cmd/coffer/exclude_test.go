package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// --- backup: what is left out -------------------------------------------

// tree makes files (a trailing / makes a directory) under a new directory.
func tree(t *testing.T, names ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	for _, n := range names {
		p := filepath.Join(dir, n)
		if strings.HasSuffix(n, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		writeFile(t, p, []byte("data of "+n+"\n"), 0o644)
	}
	return dir
}

// lsRel lists the latest snapshot below dir, relative to it.
func lsRel(t *testing.T, e *testEnv, dir string) []string {
	t.Helper()
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(mustCoffer(t, e, "ls", "latest", dir)), "\n") {
		if l == dir {
			continue
		}
		rel, ok := strings.CutPrefix(l, dir+"/")
		if !ok {
			t.Fatalf("ls latest %s listed %q", dir, l)
		}
		got = append(got, rel)
	}
	return got
}

func wantListing(t *testing.T, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("snapshot holds\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestBackupExcludePatterns(t *testing.T) {
	all := []string{
		"a.log", "keep.log", "sub/b.log", "sub/keep.log", "notes.txt",
		"node_modules/x.js", "app/node_modules/y.js", "app/src/node_modules/z.js", "app/node_modules2/w.js",
		"home/ann/cache/c1", "home/bob/cache/c2", "home/ann/x/cache/c3",
		"foo/in-dir", "bar/foo",
		"build/out/a.o", "build/keep.me",
		"Photo.JPG", "photo2.jpg", "photo3.png",
		"weird[1].txt", "star*.txt", "!bang",
	}
	cases := []struct {
		name  string
		flags []string
		gone  []string // left out (a directory with all it holds)
	}{
		{"double star", []string{"--exclude", "**/node_modules"}, []string{"node_modules", "app/node_modules", "app/src/node_modules"}},
		{"relative name", []string{"--exclude", "node_modules"}, []string{"node_modules", "app/node_modules", "app/src/node_modules"}},
		{"anchored", []string{"--exclude", "DATA/home/*/cache"}, []string{"home/ann/cache", "home/bob/cache"}},
		{"relative with slash", []string{"--exclude", "ann/cache"}, []string{"home/ann/cache"}},
		{"negation", []string{"--exclude", "*.log", "--exclude", "!keep.log"}, []string{"a.log", "sub/b.log"}},
		{"dirs only", []string{"--exclude", "foo/"}, []string{"foo"}},
		{"inside only", []string{"--exclude", "build/**", "--exclude", "!keep.me"}, []string{"build/out"}},
		{"iexclude", []string{"--iexclude", "*.jpg"}, []string{"Photo.JPG", "photo2.jpg"}},
		{"case matters", []string{"--exclude", "*.jpg"}, []string{"photo2.jpg"}},
		{"class and escapes", []string{"--exclude", `weird\[[0-9]\].txt`, "--exclude", `star\*.txt`, "--exclude", `\!bang`}, []string{"weird[1].txt", "star*.txt", "!bang"}},
		{"short flag", []string{"-e", "*.txt"}, []string{"notes.txt", "weird[1].txt", "star*.txt"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			data := tree(t, all...)
			flags := slices.Clone(c.flags)
			for i := range flags {
				flags[i] = strings.ReplaceAll(flags[i], "DATA", data)
			}
			_, errOut, code := coffer(t, e, append([]string{"backup", data}, flags...)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if strings.Contains(errOut, "matched nothing") {
				t.Errorf("a pattern that matched is reported as matching nothing: %s", errOut)
			}
			var want []string
		entries:
			for _, p := range allEntries(all) {
				for _, g := range c.gone {
					if p == g || strings.HasPrefix(p, g+"/") {
						continue entries
					}
				}
				want = append(want, p)
			}
			wantListing(t, lsRel(t, e, data), want...)
		})
	}
}

// allEntries lists the files and every directory above them.
func allEntries(files []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		for p := strings.TrimSuffix(f, "/"); p != "."; p = filepath.Dir(p) {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// TestBackupExcludeMatchedNothing: a pattern that matched nothing is a
// warning that names it; the backup succeeds with exit 0.
func TestBackupExcludeMatchedNothing(t *testing.T) {
	e := newEnv(t)
	data := tree(t, "a.txt", "docs/b.txt")
	out, errOut, code := coffer(t, e, "backup", data, "--exclude", "docs/b.txt", "--exclude", "docs/nope", "--iexclude", "*.TMP")
	if code != exitOK {
		t.Fatalf("exit %d, want 0: %s", code, errOut)
	}
	if !strings.Contains(out, "saved") {
		t.Errorf("no snapshot saved: %q", out)
	}
	for _, w := range []string{`warning: --exclude "docs/nope": matched nothing`, `warning: --iexclude "*.TMP": matched nothing`} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	if strings.Contains(errOut, "docs/b.txt") {
		t.Errorf("a pattern that matched is reported:\n%s", errOut)
	}
	if n := strings.Count(errOut, "warning:"); n != 2 {
		t.Errorf("%d warnings, want 2:\n%s", n, errOut)
	}
	wantListing(t, lsRel(t, e, data), "a.txt", "docs")
}

// TestBackupExcludeGivenPath: the paths given are matched too, as in
// restic, so an exclude file filters a --files-from list.
func TestBackupExcludeGivenPath(t *testing.T) {
	e := newEnv(t)
	data := tree(t, "a.log", "b.txt", "logs/c.txt")
	mustCoffer(t, e, "backup", filepath.Join(data, "a.log"), filepath.Join(data, "b.txt"), filepath.Join(data, "logs"), "--exclude", "*.log", "--exclude", "logs/")
	wantListing(t, lsRel(t, e, data), "b.txt")
}

func TestBackupExcludeFile(t *testing.T) {
	e := newEnv(t)
	data := tree(t, "a.tmp", "b.txt", "c d.txt", "e.txt ", "$RECYCLE.BIN/x", "home/ann/.cache/y", "home/ann/doc", "UPPER.Bak", "lower.bak")
	e.setenv("HOMES", filepath.Join(data, "home"))
	ex := filepath.Join(t.TempDir(), "excludes")
	writeFile(t, ex, []byte("\ufeff# a comment\n\n  *.tmp  \r\nc d.txt\ne.txt\\ \n$$RECYCLE.BIN\n${HOMES}/*/.cache\n  # indented comment\n"), 0o644)
	iex := filepath.Join(t.TempDir(), "iexcludes")
	writeFile(t, iex, []byte("*.BAK\n"), 0o644)
	mustCoffer(t, e, "backup", data, "--exclude-file", ex, "--iexclude-file", iex)
	wantListing(t, lsRel(t, e, data), "b.txt", "home", "home/ann", "home/ann/doc")

	// An unset variable is an error naming the line, before anything is
	// created; so is a bad pattern, and a file that cannot be read.
	writeFile(t, ex, []byte("*.tmp\n$NOT_SET/x\n"), 0o644)
	writeFile(t, iex, []byte("ok\n\n[oops\n"), 0o644)
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--exclude-file", ex}, "--exclude-file " + ex + " line 2: $NOT_SET is not set"},
		{[]string{"--iexclude-file", iex}, "--iexclude-file " + iex + ` line 3: bad pattern "[oops"`},
		{[]string{"--exclude-file", filepath.Join(data, "nope")}, "--exclude-file: open " + filepath.Join(data, "nope")},
		{[]string{"--exclude", "a/[b"}, `--exclude: bad pattern "a/[b"`},
		{[]string{"--exclude-if-present", "a/b"}, `--exclude-if-present "a/b": give a file name`},
	} {
		e := newEnv(t)
		_, errOut, code := coffer(t, e, append([]string{"backup", data}, c.flags...)...)
		if code != exitFailure || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d, %q; want 1 and %q", c.flags, code, errOut, c.want)
		}
		if _, err := os.Lstat(e.vaultDir()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%q: a refused backup created the vault", c.flags)
		}
	}
}

func TestBackupExcludeCachesAndIfPresent(t *testing.T) {
	e := newEnv(t)
	data := tree(t, "a.txt", "cache/blob", "cache/sub/blob", "fake/blob", "skipme/x", "skipme/.nobackup", "hdr/x", "hdr/.tag", "nohdr/x", "nohdr/.tag")
	writeFile(t, filepath.Join(data, "cache", "CACHEDIR.TAG"), []byte("Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n"), 0o644)
	writeFile(t, filepath.Join(data, "fake", "CACHEDIR.TAG"), []byte("not a tag\n"), 0o644)
	writeFile(t, filepath.Join(data, "hdr", ".tag"), []byte("NOBACKUP please\n"), 0o644)
	writeFile(t, filepath.Join(data, "nohdr", ".tag"), []byte("something else\n"), 0o644)
	mustCoffer(t, e, "backup", data, "--exclude-caches", "--exclude-if-present", ".nobackup", "--exclude-if-present", ".tag:NOBACKUP")
	wantListing(t, lsRel(t, e, data), "a.txt",
		"cache", "cache/CACHEDIR.TAG",
		"fake", "fake/CACHEDIR.TAG", "fake/blob",
		"skipme", "skipme/.nobackup",
		"hdr", "hdr/.tag",
		"nohdr", "nohdr/.tag", "nohdr/x")
}

func TestBackupExcludeLargerThan(t *testing.T) {
	e := newEnv(t)
	data := tree(t, "small")
	writeFile(t, filepath.Join(data, "exact"), make([]byte, 1024), 0o644)
	writeFile(t, filepath.Join(data, "big"), make([]byte, 1025), 0o644)
	writeFile(t, filepath.Join(data, "sub", "big2"), make([]byte, 4096), 0o644)
	mustCoffer(t, e, "backup", data, "--exclude-larger-than", "1K")
	wantListing(t, lsRel(t, e, data), "small", "exact", "sub")

	for _, bad := range []string{"1X", "K", "-1", "1.5M", "0", "99999999999T"} {
		_, errOut, code := coffer(t, newEnv(t), "backup", data, "--exclude-larger-than", bad)
		if code != exitFailure || !strings.Contains(errOut, "--exclude-larger-than") {
			t.Errorf("--exclude-larger-than %s: exit %d, %q", bad, code, errOut)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
	}{
		{"2048", 2048}, {"2048b", 2048}, {"1k", 1024}, {"10K", 10 << 10}, {"10m", 10 << 20}, {"10M", 10 << 20},
		{"1G", 1 << 30}, {"3GiB", 3 << 30}, {"2t", 2 << 40}, {"2TiB", 2 << 40}, {"16777215T", 16777215 << 40},
	} {
		if got, err := parseSize(c.in); err != nil || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "M", "1MB", "1 M", "1.5G", "-1", "0x10", "16777216T", "18446744073709551616"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestBackupFilesFrom(t *testing.T) {
	data := tree(t, "a.txt", "b.txt", "c.log", "d/e.txt", "d/f.txt", "x y.txt", "#hash", "g*")
	lists := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(lists, name)
		writeFile(t, p, []byte(s), 0o644)
		return p
	}
	j := func(n string) string { return filepath.Join(data, n) }

	t.Run("lines", func(t *testing.T) {
		e := newEnv(t)
		l := write("list", "# comment\n\n  "+j("a.txt")+"  \n"+j("d")+"/*.txt\n"+j("x y.txt")+"\n")
		mustCoffer(t, e, "backup", "--files-from", l)
		wantListing(t, lsRel(t, e, data), "a.txt", "d", "d/e.txt", "d/f.txt", "x y.txt")
	})
	t.Run("with args and excludes", func(t *testing.T) {
		e := newEnv(t)
		l := write("list2", j("c.log")+"\n"+j("b.txt")+"\n")
		mustCoffer(t, e, "backup", j("a.txt"), "--files-from", l, "--exclude", "*.log")
		wantListing(t, lsRel(t, e, data), "a.txt", "b.txt")
	})
	t.Run("missing path", func(t *testing.T) {
		e := newEnv(t)
		missing := j("gone.txt")
		l := write("list3", j("a.txt")+"\n"+missing+"\n")
		out, errOut, code := coffer(t, e, "backup", "--files-from", l)
		if code != exitPartial {
			t.Fatalf("exit %d, want 3: %s", code, errOut)
		}
		if !strings.Contains(errOut, "warning: "+missing+":") || !strings.Contains(out, "saved") {
			t.Errorf("stdout %q, stderr %q: want a warning naming %s and a saved snapshot", out, errOut, missing)
		}
		wantListing(t, lsRel(t, e, data), "a.txt")
	})
	t.Run("verbatim", func(t *testing.T) {
		e := newEnv(t)
		l := write("list4", j("#hash")+"\n"+j("g*")+"\n\n")
		mustCoffer(t, e, "backup", "--files-from-verbatim", l)
		wantListing(t, lsRel(t, e, data), "#hash", "g*")
	})
	t.Run("raw from stdin", func(t *testing.T) {
		e := newEnv(t)
		in := j("x y.txt") + "\x00" + j("d/e.txt") + "\x00"
		_, errOut, code := cofferIn(t, e, in, "backup", "--files-from-raw", "-")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		wantListing(t, lsRel(t, e, data), "x y.txt", "d", "d/e.txt")
	})
	t.Run("empty list", func(t *testing.T) {
		e := newEnv(t)
		l := write("empty", "# nothing\n")
		_, errOut, code := coffer(t, e, "backup", "--files-from", l)
		if code != exitFailure || !strings.Contains(errOut, "nothing to back up") {
			t.Errorf("exit %d, %q", code, errOut)
		}
		_, errOut, code = coffer(t, e, "backup", "--files-from", filepath.Join(lists, "nope"))
		if code != exitFailure || !strings.Contains(errOut, "--files-from: open") {
			t.Errorf("missing list: exit %d, %q", code, errOut)
		}
		if _, err := os.Lstat(e.vaultDir()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a backup of nothing created the vault")
		}
	})
}

// TestBackupOneFileSystem mounts a tmpfs inside the tree (root only): with
// --one-file-system the mount point is saved empty, unless it is itself a
// path given to back up.
func TestBackupOneFileSystem(t *testing.T) {
	data := tree(t, "a.txt", "mnt/")
	mnt := filepath.Join(data, "mnt")
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v): needs root", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	writeFile(t, filepath.Join(mnt, "other-fs.txt"), []byte("on the tmpfs\n"), 0o644)

	e := newEnv(t)
	mustCoffer(t, e, "backup", data)
	wantListing(t, lsRel(t, e, data), "a.txt", "mnt", "mnt/other-fs.txt")
	mustCoffer(t, e, "backup", data, "--one-file-system")
	wantListing(t, lsRel(t, e, data), "a.txt", "mnt")
	mustCoffer(t, e, "backup", data, mnt, "-x")
	wantListing(t, lsRel(t, e, data), "a.txt", "mnt", "mnt/other-fs.txt")
}

// TestBackupExcludeRemote: excludes are the agent's; a backup into a vault
// server leaves out the same entries and warns the same way.
func TestBackupExcludeRemote(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", srv.OwnerToken)

	data := tree(t, "a.txt", "b.log", "keep.log", "app/node_modules/x.js", "cache/blob", "big")
	writeFile(t, filepath.Join(data, "cache", "CACHEDIR.TAG"), []byte("Signature: 8a477f597d28d172789f06886806bc55"), 0o644)
	writeFile(t, filepath.Join(data, "big"), make([]byte, 2<<10), 0o644)
	_, errOut, code := coffer(t, e, "backup", data, "-e", "**/node_modules/", "-e", "*.log", "-e", "!keep.log", "-e", "/nowhere", "--exclude-caches", "--exclude-larger-than", "1K")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, `warning: --exclude "/nowhere": matched nothing`) {
		t.Errorf("no warning for the pattern that matched nothing:\n%s", errOut)
	}
	wantListing(t, lsRel(t, e, data), "a.txt", "keep.log", "app", "cache", "cache/CACHEDIR.TAG")
}
