package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
)

func compileT(t testing.TB, r ExcludeRules) *excluder {
	t.Helper()
	x, err := compileExcludes(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func pats(ps ...string) ExcludeRules {
	var r ExcludeRules
	for _, p := range ps {
		r.Patterns = append(r.Patterns, ExcludePattern{Pattern: p, Source: "--exclude"})
	}
	return r
}

func TestExcludeMatch(t *testing.T) {
	const dir, file = true, false
	cases := []struct {
		pats  []string
		path  string
		isDir bool
		want  bool
	}{
		// A name at any depth.
		{[]string{"*.log"}, "/var/log/syslog.log", file, true},
		{[]string{"*.log"}, "/var/log/syslog", file, false},
		{[]string{"*.log"}, "/srv/a.log.1", file, false},
		{[]string{"foo"}, "/a/foo", dir, true},
		{[]string{"foo"}, "/foo", file, true},
		{[]string{"foo"}, "/a/foobar", file, false},
		{[]string{"foo"}, "/a/barfoo", file, false},
		{[]string{"*"}, "/a", file, true},
		{[]string{"fo?"}, "/x/foo", file, true},
		{[]string{"fo?"}, "/x/fooo", file, false},
		{[]string{"cache*"}, "/x/cache-1", dir, true},
		{[]string{"cache*"}, "/x/xcache", dir, false},
		{[]string{".*"}, "/home/ann/.bashrc", file, true},
		{[]string{".*"}, "/home/ann/bashrc", file, false},
		// * never crosses a /.
		{[]string{"b*ash"}, "/bin/bash", file, true},
		{[]string{"/b*sh"}, "/bin/bash", file, false},
		// Several components: the path's last ones, at any depth.
		{[]string{"cache/tmp"}, "/home/ann/cache/tmp", dir, true},
		{[]string{"cache/tmp"}, "/cache/tmp", dir, true},
		{[]string{"cache/tmp"}, "/home/ann/xcache/tmp", dir, false},
		{[]string{"cache/tmp"}, "/home/ann/cache/tmp2", dir, false},
		{[]string{"cache/tmp"}, "/home/ann/tmp", dir, false},
		// Anchored at the root.
		{[]string{"/home/*/cache"}, "/home/ann/cache", dir, true},
		{[]string{"/home/*/cache"}, "/home/bob/cache", file, true},
		{[]string{"/home/*/cache"}, "/srv/home/ann/cache", dir, false},
		{[]string{"/home/*/cache"}, "/home/ann/x/cache", dir, false},
		{[]string{"/home/*/cache"}, "/home/cache", dir, false},
		{[]string{"/bin"}, "/bin", dir, true},
		{[]string{"/bin"}, "/usr/bin", dir, false},
		{[]string{"/srv/data/"}, "/srv/data", dir, true},
		{[]string{"//srv//data"}, "/srv/data", dir, true},
		// ** is any number of directories.
		{[]string{"**/node_modules"}, "/node_modules", dir, true},
		{[]string{"**/node_modules"}, "/home/ann/app/node_modules", dir, true},
		{[]string{"**/node_modules"}, "/home/ann/app/node_modules2", dir, false},
		{[]string{"/home/**/node_modules"}, "/home/node_modules", dir, true},
		{[]string{"/home/**/node_modules"}, "/home/a/b/c/node_modules", dir, true},
		{[]string{"/home/**/node_modules"}, "/srv/home/a/node_modules", dir, false},
		{[]string{"foo/**/bar"}, "/dir1/foo/dir2/bar", dir, true},
		{[]string{"foo/**/bar"}, "/foo/bar", file, true},
		{[]string{"foo/**/bar"}, "/tmp/foo/x/y/z/bar", file, true},
		{[]string{"foo/**/bar"}, "/tmp/foo/x/y/z/baz", file, false},
		{[]string{"foo/**/bar"}, "/tmp/bar", file, false},
		{[]string{"a/**/b/**/c"}, "/x/a/1/b/2/3/c", file, true},
		{[]string{"a/**/b/**/c"}, "/x/a/1/c/2/3/b", file, false},
		{[]string{"**/*.o"}, "/src/x.o", file, true},
		{[]string{"**"}, "/anything", file, true},
		// A trailing ** is what is inside, not the directory itself.
		{[]string{"build/**"}, "/src/build", dir, false},
		{[]string{"build/**"}, "/src/build/x", file, true},
		{[]string{"build/**"}, "/src/build/x/y", file, true},
		{[]string{"/srv/build/**"}, "/srv/build/x", file, true},
		{[]string{"/srv/build/**"}, "/srv/build", dir, false},
		// A trailing / is directories only.
		{[]string{"foo/"}, "/a/foo", dir, true},
		{[]string{"foo/"}, "/a/foo", file, false},
		{[]string{"/a/foo/"}, "/a/foo", file, false},
		// ! puts back what an earlier pattern left out; the last match wins.
		{[]string{"*.log", "!keep.log"}, "/var/keep.log", file, false},
		{[]string{"*.log", "!keep.log"}, "/var/drop.log", file, true},
		{[]string{"!keep.log", "*.log"}, "/var/keep.log", file, true},
		{[]string{"/home/ann/*", "!/home/ann/Documents"}, "/home/ann/Documents", dir, false},
		{[]string{"/home/ann/*", "!/home/ann/Documents"}, "/home/ann/Music", dir, true},
		{[]string{"/home/ann/*", "!/home/ann/Documents"}, "/home/ann/Documents/x.txt", file, false},
		{[]string{"*.log", "!keep.log/"}, "/var/keep.log", file, true},
		// Character classes and escapes.
		{[]string{"*.[oa]"}, "/src/x.o", file, true},
		{[]string{"*.[oa]"}, "/src/x.c", file, false},
		{[]string{"*.py[cod]"}, "/src/x.pyc", file, true},
		{[]string{"[^.]*"}, "/src/.hidden", file, false},
		{[]string{"[^.]*"}, "/src/shown", file, true},
		{[]string{`\*`}, "/src/*", file, true},
		{[]string{`\*`}, "/src/x", file, false},
		{[]string{`\!important`}, "/src/!important", file, true},
		{[]string{`$RECYCLE.BIN`}, "/mnt/c/$RECYCLE.BIN", dir, true},
		{[]string{`a\ b`}, "/x/a b", file, true},
		// Case matters unless asked (--iexclude, below).
		{[]string{"*.JPG"}, "/p/a.jpg", file, false},
		// A relative pattern with a dot segment is the same pattern.
		{[]string{"./foo"}, "/a/foo", file, true},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.pats, ",")+" "+c.path, func(t *testing.T) {
			x := compileT(t, pats(c.pats...))
			if got := x.match(c.path, c.isDir); got != c.want {
				t.Errorf("%q on %s (dir %v): excluded %v, want %v", c.pats, c.path, c.isDir, got, c.want)
			}
		})
	}
}

func TestExcludeIgnoreCase(t *testing.T) {
	r := ExcludeRules{Patterns: []ExcludePattern{
		{Pattern: "*.JPG", IgnoreCase: true},
		{Pattern: "/Home/*/Cache/", IgnoreCase: true},
		{Pattern: "Thumbs.db"}, // this one still cares
		{Pattern: "!KEEP.jpg", IgnoreCase: true},
	}}
	x := compileT(t, r)
	for _, c := range []struct {
		path  string
		isDir bool
		want  bool
	}{
		{"/p/a.jpg", false, true},
		{"/p/a.Jpg", false, true},
		{"/P/A.JPG", false, true},
		{"/p/keep.JPG", false, false},
		{"/home/ann/cache", true, true},
		{"/HOME/ann/CACHE", true, true},
		{"/home/ann/cache", false, false},
		{"/p/Thumbs.db", false, true},
		{"/p/thumbs.db", false, false},
		{"/p/ÄRGER.JPG", false, true},
	} {
		if got := x.match(c.path, c.isDir); got != c.want {
			t.Errorf("%s: excluded %v, want %v", c.path, got, c.want)
		}
	}
}

func TestExcludeBadPatterns(t *testing.T) {
	for _, p := range []string{"[", "a/[b", `foo\`, "", "/", "!", "!/", "a/../b", "//"} {
		_, err := compileExcludes(pats(p), nil)
		if err == nil {
			t.Errorf("%q: no error", p)
			continue
		}
		if !strings.Contains(err.Error(), "--exclude: bad pattern") {
			t.Errorf("%q: %v does not say which pattern is bad", p, err)
		}
	}
	for _, s := range []string{"", ":x", "a/b:x", "..", "."} {
		if _, err := compileExcludes(ExcludeRules{IfPresent: []string{s}}, nil); err == nil {
			t.Errorf("--exclude-if-present %q: no error", s)
		}
	}
	if err := (ExcludeRules{Patterns: []ExcludePattern{{Pattern: "ok/**"}}, IfPresent: []string{".nobackup:x"}}).Check(); err != nil {
		t.Errorf("good rules: %v", err)
	}
	if err := (ExcludeRules{Patterns: []ExcludePattern{{Pattern: "[", Source: "--exclude-file x line 2"}}}).Check(); err == nil || !strings.Contains(err.Error(), "--exclude-file x line 2") {
		t.Errorf("a bad pattern from a file is not named by its line: %v", err)
	}
}

// TestExcludeUnmatched: each pattern that matched no path is a warning,
// once, naming where it came from; one that matched (even when a later
// pattern overrode it) is not.
func TestExcludeUnmatched(t *testing.T) {
	x := compileT(t, ExcludeRules{Patterns: []ExcludePattern{
		{Pattern: "*.log", Source: "--exclude"},
		{Pattern: "!keep.log", Source: "--exclude"},
		{Pattern: "/nowhere", Source: "--exclude-file ex.txt line 3"},
		{Pattern: "node_modules/", Source: "--exclude"},
	}})
	x.match("/a/keep.log", false)
	x.match("/a/node_modules", false) // a file: the directory pattern does not match it
	var got []string
	x.warnUnmatched(func(w Warning) {
		if w.Unreadable {
			t.Errorf("%v counts as unreadable: it would change the exit code", w)
		}
		got = append(got, w.String())
	})
	want := []string{
		`--exclude-file ex.txt line 3 "/nowhere": ` + errNoMatch.Error(),
		`--exclude "node_modules/": ` + errNoMatch.Error(),
	}
	if !slices.Equal(got, want) {
		t.Errorf("warnings:\n%q\nwant\n%q", got, want)
	}
}

func TestExcludeLargerThan(t *testing.T) {
	x := compileT(t, ExcludeRules{LargerThan: 100})
	for _, c := range []struct {
		n    format.Node
		want bool
	}{
		{format.Node{Kind: format.KindFile, Size: 100}, false},
		{format.Node{Kind: format.KindFile, Size: 101}, true},
		{format.Node{Kind: format.KindSymlink, Size: 1000}, false},
		{format.Node{Kind: format.KindDir, Size: 1 << 20}, false},
	} {
		if got := x.excluded("/x", &c.n); got != c.want {
			t.Errorf("%v of %d bytes: excluded %v, want %v", c.n.Kind, c.n.Size, got, c.want)
		}
	}
}

func TestExcludeContents(t *testing.T) {
	d := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(d, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "")
	write(cacheDirTag, cacheDirSignature+"\n# made by a test\n")
	write(".nobackup", "")
	write("z", "")
	names := []string{".nobackup", cacheDirTag, "a", "z"}

	for _, c := range []struct {
		name string
		r    ExcludeRules
		want []string
	}{
		{"none", ExcludeRules{}, names},
		{"caches", ExcludeRules{Caches: true}, []string{cacheDirTag}},
		{"present", ExcludeRules{IfPresent: []string{".nobackup"}}, []string{".nobackup"}},
		{"both", ExcludeRules{Caches: true, IfPresent: []string{".nobackup"}}, []string{".nobackup", cacheDirTag}},
		{"header matches", ExcludeRules{IfPresent: []string{cacheDirTag + ":Signature: 8a47"}}, []string{cacheDirTag}},
		{"header differs", ExcludeRules{IfPresent: []string{".nobackup:x"}}, names},
		{"absent", ExcludeRules{IfPresent: []string{".nothere"}}, names},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := compileT(t, c.r)
			if got := x.contents(d, slices.Clone(names)); !slices.Equal(got, c.want) {
				t.Errorf("kept %q, want %q", got, c.want)
			}
		})
	}

	// A CACHEDIR.TAG without the signature, or a symlink to a good one,
	// tags nothing.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, cacheDirTag), []byte("Signature: not the one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := t.TempDir()
	if err := os.Symlink(filepath.Join(d, cacheDirTag), filepath.Join(link, cacheDirTag)); err != nil {
		t.Fatal(err)
	}
	x := compileT(t, ExcludeRules{Caches: true})
	for _, dir := range []string{bad, link} {
		if got := x.contents(dir, []string{cacheDirTag, "data"}); len(got) != 2 {
			t.Errorf("%s: kept %q, want both: the tag is not valid", dir, got)
		}
	}
}

func FuzzExcludePattern(f *testing.F) {
	for _, s := range []string{"*.log", "**/a/**/b", "/x/*/y/", "![a-", `\`, "a/**", "**", "/"} {
		f.Add(s, "/home/ann/a/x/b", true)
	}
	f.Fuzz(func(t *testing.T, pattern, path string, fold bool) {
		x, err := compileExcludes(ExcludeRules{Patterns: []ExcludePattern{{Pattern: pattern, IgnoreCase: fold}}}, nil)
		if err != nil {
			return
		}
		x.match(path, false)
		x.match("/"+path, true)
	})
}

// BenchmarkExcludeMatch matches 10 patterns of the usual kinds against a
// path that none of them matches (the common case: every entry of a
// backup is checked).
func BenchmarkExcludeMatch(b *testing.B) {
	for _, bc := range []struct {
		name string
		r    ExcludeRules
	}{
		{"none", ExcludeRules{}},
		{"10", pats("*.tmp", "*.log", "!keep.log", "node_modules/", "**/.cache/**", "/home/*/Downloads", "target/**/*.jar", ".git", "*.py[cod]", "/var/lib/docker/")},
		{"10-iexclude", func() ExcludeRules {
			r := pats("*.tmp", "*.log", "!keep.log", "node_modules/", "**/.cache/**", "/home/*/Downloads", "target/**/*.jar", ".git", "*.py[cod]", "/var/lib/docker/")
			for i := range r.Patterns {
				r.Patterns[i].IgnoreCase = true
			}
			return r
		}()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			x := compileT(b, bc.r)
			const p = "/home/ann/src/project/internal/agent/backup.go"
			b.ReportAllocs()
			for b.Loop() {
				if x.match(p, false) {
					b.Fatal("matched")
				}
			}
		})
	}
}

// FuzzExcludeSegment: the fast paths of a segment (literal, *x, x*, the
// text a glob needs) decide as filepath.Match does.
func FuzzExcludeSegment(f *testing.F) {
	for _, s := range [][2]string{
		{"*.py[cod]", "x.pyc"}, {"*.py[cod]", "backup.go"}, {`a\*b*`, "a*bc"}, {`\[x*`, "[xy"},
		{"ab?d[]]e", "abcd]e"}, {"*.log", "a.log"}, {"cache*", "cache1"}, {"[^.]*", ".x"}, {`*\`, "x"},
		{"x?y*z", "xqyz"}, {"*a*b", "xxab"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, glob, name string) {
		if glob == "" || strings.Contains(glob, "/") || strings.Contains(name, "/") || glob == "**" {
			return
		}
		want, err := filepath.Match(glob, name)
		if err != nil {
			return
		}
		sg := classify(glob)
		if got := sg.match(name); got != want {
			t.Errorf("segment %q (kind %d, needs %q) on %q: %v, filepath.Match says %v", glob, sg.kind, sg.need, name, got, want)
		}
	})
}

// TestExcludeCompiledForm: patterns that need no ** matching are compiled
// to the fast form (compared from the path's end, nothing split).
func TestExcludeCompiledForm(t *testing.T) {
	for _, c := range []struct {
		pat            string
		deep, anchored bool
		segs           int
	}{
		{"*.log", false, false, 1},
		{"**/node_modules", false, false, 1},
		{"/**/node_modules/", false, false, 1},
		{"**", false, false, 1},
		{"/home/*/cache", false, true, 3},
		{"a/**/b", true, true, 4}, // ** a ** b
		{"/a/**", true, true, 2},
	} {
		x := compileT(t, pats(c.pat))
		pt := x.pats[0]
		if pt.deep != c.deep || pt.anchored != c.anchored || len(pt.segs) != c.segs {
			t.Errorf("%q: deep %v anchored %v %d segments, want %v %v %d", c.pat, pt.deep, pt.anchored, len(pt.segs), c.deep, c.anchored, c.segs)
		}
	}
}
