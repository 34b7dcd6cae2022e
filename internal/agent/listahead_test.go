package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
)

// A tree of several large directories (whose listings the walk reads
// ahead, and whose entries two goroutines look at) keeps what the
// excluder leaves out, every kind of entry and the order of the walk,
// and an unchanged re-run stores the same trees.
func TestListAheadKeepsWhatIsStored(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	want := map[string]format.NodeKind{}
	for d := range 6 {
		dir := filepath.Join(src, fmt.Sprintf("d%d", d))
		for i := range 150 {
			p := filepath.Join(dir, fmt.Sprintf("f%03d", i))
			write(t, p, []byte(p))
			if d != 2 && !(d == 3 && i%2 == 1) {
				want[p] = format.KindFile
			}
		}
		want[dir] = format.KindDir
		if d == 3 {
			// Odd files end in .skip: excluded by pattern.
			for i := 1; i < 150; i += 2 {
				p := filepath.Join(dir, fmt.Sprintf("f%03d", i))
				if err := os.Rename(p, p+".skip"); err != nil {
					t.Fatal(err)
				}
			}
		}
		sub := filepath.Join(dir, "sub")
		write(t, filepath.Join(sub, "x"), []byte("x"))
		if d != 2 {
			want[sub] = format.KindDir
			want[filepath.Join(sub, "x")] = format.KindFile
		}
	}
	// d2 holds the tag: only the tag is kept.
	write(t, filepath.Join(src, "d2", "NOBACKUP"), nil)
	want[filepath.Join(src, "d2", "NOBACKUP")] = format.KindFile
	link := filepath.Join(src, "d4", "link")
	if err := os.Symlink("f000", link); err != nil {
		t.Fatal(err)
	}
	want[link] = format.KindSymlink
	fifo := filepath.Join(src, "d5", "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	want[fifo] = format.KindFIFO
	hard := filepath.Join(src, "d1", "hard")
	if err := os.Link(filepath.Join(src, "d0", "f000"), hard); err != nil {
		t.Fatal(err)
	}
	want[hard] = format.KindFile

	v := newVault(t, small)
	opt := agent.BackupOptions{Paths: []string{src}, Host: "testhost", Exclude: agent.ExcludeRules{
		Patterns:  []agent.ExcludePattern{{Pattern: "*.skip", Source: "--exclude"}},
		IfPresent: []string{"NOBACKUP"},
	}}
	var warnings []agent.Warning
	opt.Warn = func(w agent.Warning) { warnings = append(warnings, w) }
	var res [2]*agent.BackupResult
	for i := range res {
		r, err := agent.Backup(context.Background(), v.repo, opt)
		if err != nil {
			t.Fatal(err)
		}
		res[i] = r
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %v", warnings)
	}
	files := 0
	for _, k := range want {
		if k == format.KindFile {
			files++
		}
	}
	if res[1].Reused != uint64(files) {
		t.Errorf("re-run reused %d files, want %d", res[1].Reused, files)
	}
	if a, b := subtree(t, v, res[0].Snapshot.Tree, src), subtree(t, v, res[1].Snapshot.Tree, src); a != b {
		t.Error("unchanged tree stored differently by the re-run")
	}
	got := map[string]format.NodeKind{}
	var order []string
	err := agent.Walk(context.Background(), v.repo, res[1].Snapshot.Tree, src, 0, func(p string, n *format.Node) error {
		if p != src {
			got[p] = n.Kind
			order = append(order, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, k := range want {
		if got[p] != k {
			t.Errorf("%s: kind %v, want %v", strings.TrimPrefix(p, src), got[p], k)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s stored, not wanted", strings.TrimPrefix(p, src))
		}
	}
	if len(order) != len(want) {
		t.Errorf("%d entries stored, want %d", len(order), len(want))
	}
}
