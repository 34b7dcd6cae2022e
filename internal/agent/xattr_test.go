package agent_test

import (
	"context"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// xattrsOf walks a snapshot and returns each entry's extended attributes
// (name=value, sorted as stored) by path below src.
func xattrsOf(t *testing.T, v *testVault, root vault.ID, src string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := agent.Walk(context.Background(), v.repo, root, src, 0, func(p string, n *format.Node) error {
		rel, _ := filepath.Rel(src, p)
		var xs []string
		for _, x := range n.Xattrs {
			xs = append(xs, string(x.Name)+"="+string(x.Value))
		}
		out[rel] = xs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantXattrs(t *testing.T, got map[string][]string, want map[string]string) {
	t.Helper()
	for p, w := range want {
		g := ""
		if len(got[p]) > 1 {
			t.Errorf("%s: %d xattrs %q, want one", p, len(got[p]), got[p])
			continue
		}
		if len(got[p]) == 1 {
			g = got[p][0]
		}
		if g != w {
			t.Errorf("%s: xattrs %q, want %q", p, g, w)
		}
	}
}

// TestRerunXattrs: a re-run takes an unchanged file's extended attributes
// from the parent without listing them, and sees every change to them
// (setting or removing one changes the file's change time), on files read
// through their descriptor, empty files, directories and unchanged ones.
func TestRerunXattrs(t *testing.T) {
	src := t.TempDir()
	write(t, filepath.Join(src, "a"), randBytes(1, 5000))
	write(t, filepath.Join(src, "b"), randBytes(2, 5000))
	write(t, filepath.Join(src, "c"), randBytes(3, 5000))
	write(t, filepath.Join(src, "keep"), randBytes(4, 5000))
	write(t, filepath.Join(src, "empty"), nil)
	write(t, filepath.Join(src, "d", "in"), randBytes(5, 100))
	set := func(rel, name, val string) {
		t.Helper()
		if err := unix.Setxattr(filepath.Join(src, rel), name, []byte(val), 0); err != nil {
			if rel == "a" {
				t.Skipf("file system has no user xattrs: %v", err)
			}
			t.Fatal(err)
		}
	}
	set("a", "user.k", "a1")
	set("b", "user.k", "b1")
	set("keep", "user.k", "keep")
	set("empty", "user.k", "e1")
	set("d", "user.k", "d1")
	v := newVault(t, small)
	first := backup(t, v, src)
	wantXattrs(t, xattrsOf(t, v, first.Snapshot.Tree, src), map[string]string{
		"a": "user.k=a1", "b": "user.k=b1", "c": "", "keep": "user.k=keep", "empty": "user.k=e1", "d": "user.k=d1", "d/in": "",
	})

	// Unchanged: src's tree is the same blob (the directories above it,
	// in /tmp, may change meanwhile).
	again := backup(t, v, src)
	if a, f := subtree(t, v, again.Snapshot.Tree, src), subtree(t, v, first.Snapshot.Tree, src); a != f {
		t.Errorf("unchanged re-run: tree of %s is %s, want the parent's %s", src, a.Short(), f.Short())
	}

	set("a", "user.k", "a2")
	if err := unix.Removexattr(filepath.Join(src, "b"), "user.k"); err != nil {
		t.Fatal(err)
	}
	set("c", "user.k", "c1")
	set("empty", "user.k", "e2")
	set("d", "user.k", "d2")
	set("d/in", "user.k", "in")
	third := backup(t, v, src)
	wantXattrs(t, xattrsOf(t, v, third.Snapshot.Tree, src), map[string]string{
		"a": "user.k=a2", "b": "", "c": "user.k=c1", "keep": "user.k=keep", "empty": "user.k=e2", "d": "user.k=d2", "d/in": "user.k=in",
	})
	if third.Reused < 1 {
		t.Errorf("reused %d files, want keep reused", third.Reused)
	}
}
