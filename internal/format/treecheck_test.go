package format_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

type treeRef struct {
	t  vault.BlobType
	id vault.ID
}

// refsOf lists what DecodeTree's tree references, in CheckTree's order.
func refsOf(tr *format.Tree) []treeRef {
	var out []treeRef
	for _, n := range tr.Nodes {
		switch n.Kind {
		case format.KindFile:
			for _, c := range n.Content {
				out = append(out, treeRef{vault.DataBlob, c})
			}
		case format.KindDir:
			out = append(out, treeRef{vault.TreeBlob, n.Subtree})
		}
	}
	return out
}

// FuzzCheckTree: CheckTree accepts exactly what DecodeTree accepts, and
// reports exactly the decoded tree's references; it never panics.
func FuzzCheckTree(f *testing.F) {
	f.Add(mustEncodeTree(f, sampleTree()))
	f.Add(mustEncodeTree(f, &format.Tree{}))
	for _, n := range sampleTree().Nodes {
		f.Add(mustEncodeTree(f, &format.Tree{Nodes: []format.Node{n}}))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got []treeRef
		cerr := format.CheckTree(b, func(bt vault.BlobType, id vault.ID) error {
			got = append(got, treeRef{bt, id})
			return nil
		})
		tr, derr := format.DecodeTree(b)
		if (cerr == nil) != (derr == nil) {
			t.Fatalf("CheckTree: %v; DecodeTree: %v", cerr, derr)
		}
		if cerr != nil {
			if !errors.Is(cerr, vault.ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", cerr)
			}
			return
		}
		if want := refsOf(tr); !slices.Equal(got, want) {
			t.Fatalf("CheckTree reported %d references, the tree holds %d", len(got), len(want))
		}
	})
}

// TestCheckTreeRefs: the callback's error stops the check and is
// returned as is; a valid tree is checked without allocating.
func TestCheckTreeRefs(t *testing.T) {
	b := mustEncodeTree(t, sampleTree())
	want := refsOf(sampleTree())
	if len(want) < 2 {
		t.Fatalf("the sample tree references %d blobs; the test needs several", len(want))
	}
	errMissing := errors.New("missing")
	n := 0
	err := format.CheckTree(b, func(vault.BlobType, vault.ID) error {
		n++
		if n == 2 {
			return errMissing
		}
		return nil
	})
	if err != errMissing || n != 2 {
		t.Errorf("CheckTree with a failing callback: %v after %d references, want the callback's error after 2", err, n)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := format.CheckTree(b, func(vault.BlobType, vault.ID) error { return nil }); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("CheckTree allocates %v times per tree, want 0", allocs)
	}
}

// BenchmarkCheckTree: the check the server runs on every uploaded tree,
// against BenchmarkDecodeTree on the same tree.
func BenchmarkCheckTree(b *testing.B) {
	enc, _ := format.EncodeTree(nil, benchTree(1000))
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if err := format.CheckTree(enc, func(vault.BlobType, vault.ID) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
