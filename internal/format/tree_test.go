package format_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

func TestTreeRoundTrip(t *testing.T) {
	many := &format.Tree{}
	for i := range 1000 {
		many.Nodes = append(many.Nodes, format.Node{Kind: format.KindFile, Name: fmt.Appendf(nil, "n%05d", i),
			Perm: 0o644, Size: uint64(i), Content: []vault.ID{testID(string(rune(i)))}})
	}
	manyXattrs := &format.Tree{Nodes: []format.Node{{Kind: format.KindFIFO, Name: []byte("x")}}}
	for i := range 2000 {
		manyXattrs.Nodes[0].Xattrs = append(manyXattrs.Nodes[0].Xattrs,
			format.Xattr{Name: binary.BigEndian.AppendUint16([]byte("user."), uint16(i)), Value: bytes.Repeat([]byte{byte(i)}, i%7)})
	}
	bigFile := &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("big"), Size: 1 << 50}}}
	for i := range 5000 {
		bigFile.Nodes[0].Content = append(bigFile.Nodes[0].Content, testID(string(rune(i))))
	}
	longName := &format.Tree{Nodes: []format.Node{{Kind: format.KindSymlink, Name: bytes.Repeat([]byte{0xfe}, 70000),
		Target: bytes.Repeat([]byte("a/"), 40000)}}}

	for _, c := range []struct {
		name string
		tree *format.Tree
	}{
		{"sample", sampleTree()},
		{"empty", &format.Tree{}},
		{"1000 nodes", many},
		{"2000 xattrs", manyXattrs},
		{"5000 chunks", bigFile},
		{"long name and target", longName},
	} {
		t.Run(c.name, func(t *testing.T) {
			enc := mustEncodeTree(t, c.tree)
			if want := specEncodeTree(c.tree); !bytes.Equal(enc, want) {
				t.Fatal("encoding differs from §5")
			}
			got, err := format.DecodeTree(enc)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := dumpTree(got), dumpTree(c.tree); a != b {
				t.Fatalf("decoded tree differs:\n got %s\nwant %s", a, b)
			}
			again := mustEncodeTree(t, got)
			if !bytes.Equal(again, enc) {
				t.Error("re-encoding differs")
			}
			// Find on the decoded tree.
			for _, n := range c.tree.Nodes {
				if f := got.Find(n.Name); f == nil || !bytes.Equal(f.Name, n.Name) {
					t.Fatalf("Find(%q) = %v", n.Name, f)
				}
			}
			if got.Find([]byte("\xff\xff\xff not there")) != nil {
				t.Error("Find of a missing name succeeded")
			}
			// EncodeTree appends to dst.
			pre := []byte("prefix")
			if b := mustEncodeTree(t, &format.Tree{Nodes: c.tree.Nodes}); !bytes.Equal(b, enc) {
				t.Error("EncodeTree(nil) not deterministic")
			}
			if b, _ := format.EncodeTree(bytes.Clone(pre), c.tree); !bytes.Equal(b, append(pre, enc...)) {
				t.Error("EncodeTree does not append to dst")
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"", false}, {".", false}, {"..", false}, {"/", false}, {"a/b", false}, {"a\x00", false}, {"\x00", false},
		{"...", true}, {".a", true}, {"a.", true}, {"\xff", true}, {" ", true}, {"\\", true}, {"a\nb", true},
	} {
		if got := format.ValidName([]byte(c.name)); got != c.ok {
			t.Errorf("ValidName(%q) = %v, want %v", c.name, got, c.ok)
		}
	}
}

func TestTreeSort(t *testing.T) {
	tr := &format.Tree{Nodes: []format.Node{
		{Kind: format.KindFIFO, Name: []byte("b")}, {Kind: format.KindFIFO, Name: []byte("\xff")},
		{Kind: format.KindFIFO, Name: []byte("B")}, {Kind: format.KindFIFO, Name: []byte("a")},
		{Kind: format.KindFIFO, Name: []byte("ab")},
	}}
	if _, err := format.EncodeTree(nil, tr); err == nil {
		t.Error("EncodeTree accepted unsorted nodes")
	}
	tr.Sort()
	var names []string
	for _, n := range tr.Nodes {
		names = append(names, string(n.Name))
	}
	if got := strings.Join(names, ","); got != "B,a,ab,b,\xff" {
		t.Errorf("sorted by bytes: %q", got)
	}
	if _, err := format.EncodeTree(nil, tr); err != nil {
		t.Error(err)
	}
}

func TestEncodeTreeRejects(t *testing.T) {
	node := func(name string) format.Node { return format.Node{Kind: format.KindFIFO, Name: []byte(name)} }
	for _, c := range []struct {
		name  string
		nodes []format.Node
	}{
		{"empty name", []format.Node{node("")}},
		{"dot", []format.Node{node(".")}},
		{"dot dot", []format.Node{node("..")}},
		{"slash", []format.Node{node("a/b")}},
		{"NUL", []format.Node{node("a\x00")}},
		{"duplicate", []format.Node{node("a"), node("a")}},
		{"unsorted", []format.Node{node("b"), node("a")}},
		{"kind 0", []format.Node{{Kind: 0, Name: []byte("a")}}},
		{"kind 8", []format.Node{{Kind: 8, Name: []byte("a")}}},
		{"empty xattr name", []format.Node{{Kind: format.KindFIFO, Name: []byte("a"), Xattrs: []format.Xattr{{Value: []byte("v")}}}}},
		{"perm 0o10000", []format.Node{{Kind: format.KindFIFO, Name: []byte("a"), Perm: 0o10000}}},
		{"perm with file type bits", []format.Node{{Kind: format.KindFIFO, Name: []byte("a"), Perm: 0o100644}}},
		{"65537 xattrs", []format.Node{{Kind: format.KindFIFO, Name: []byte("a"), Xattrs: make([]format.Xattr, specMaxXattrs+1)}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if b, err := format.EncodeTree(nil, &format.Tree{Nodes: c.nodes}); err == nil {
				t.Errorf("EncodeTree accepted it: %x", b)
			}
		})
	}
}

// treeEnc assembles a tree encoding from raw parts.
func treeEnc(count uint64, nodes ...[]byte) []byte {
	b := binary.AppendUvarint([]byte("CFTR\x01"), count)
	for _, n := range nodes {
		b = append(b, n...)
	}
	return b
}

// rawNode assembles one node: kind, name, nine zero fields, xattrs, rest.
func rawNode(kind byte, name string, xattrs []byte, rest ...byte) []byte {
	b := []byte{kind}
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = append(b, make([]byte, 9)...)
	if xattrs == nil {
		xattrs = []byte{0}
	}
	b = append(b, xattrs...)
	return append(b, rest...)
}

func TestDecodeTreeRejects(t *testing.T) {
	fifo := func(name string) []byte { return rawNode(4, name, nil) }
	id := bytes.Repeat([]byte{7}, 32)
	valid := treeEnc(2, fifo("a"), fifo("b"))
	if _, err := format.DecodeTree(valid); err != nil {
		t.Fatalf("base case: %v", err)
	}
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"magic only", []byte("CFTR")},
		{"bad magic", append([]byte("CFTX"), valid[4:]...)},
		{"version 0", append([]byte("CFTR\x00"), valid[5:]...)},
		{"version 2", append([]byte("CFTR\x02"), valid[5:]...)},
		{"no count", []byte("CFTR\x01")},
		{"unsorted", treeEnc(2, fifo("b"), fifo("a"))},
		{"duplicate", treeEnc(2, fifo("a"), fifo("a"))},
		{"empty name", treeEnc(1, fifo(""))},
		{"dot", treeEnc(1, fifo("."))},
		{"dot dot", treeEnc(1, fifo(".."))},
		{"slash", treeEnc(1, fifo("a/b"))},
		{"only slash", treeEnc(1, fifo("/"))},
		{"NUL", treeEnc(1, fifo("a\x00b"))},
		{"kind 0", treeEnc(1, rawNode(0, "a", nil))},
		{"kind 8", treeEnc(1, rawNode(8, "a", nil))},
		{"kind 255", treeEnc(1, rawNode(255, "a", nil, make([]byte, 40)...))},
		{"trailing byte", append(bytes.Clone(valid), 0)},
		{"trailing node", treeEnc(1, fifo("a"), fifo("b"))},
		{"count too small", treeEnc(0, fifo("a"))},
		{"count one too large", treeEnc(3, fifo("a"), fifo("b"))},
		{"huge count", treeEnc(1<<62, fifo("a"))},
		{"max count", treeEnc(1<<64-1, fifo("a"))},
		{"count overflows uvarint", append([]byte("CFTR\x01"), bytes.Repeat([]byte{0xff}, 10)...)},
		{"name length beyond input", treeEnc(1, []byte{4, 0x80, 0x80, 0x04}, bytes.Repeat([]byte{'a'}, 20))},
		{"name length huge", treeEnc(1, []byte{4}, binary.AppendUvarint(nil, 1<<63), bytes.Repeat([]byte{'a'}, 20))},
		{"empty xattr name", treeEnc(1, rawNode(4, "a", []byte{1, 0, 1, 'v'}))},
		{"xattr count huge", treeEnc(1, rawNode(4, "a", binary.AppendUvarint(nil, 1<<40)))},
		{"xattr count 65537", treeEnc(1, rawNode(4, "a", binary.AppendUvarint(nil, specMaxXattrs+1), make([]byte, 3*(specMaxXattrs+1))...))},
		{"xattr count beyond input", treeEnc(1, rawNode(4, "a", []byte{2, 1, 'n', 0}))},
		{"xattr value beyond input", treeEnc(1, rawNode(4, "a", []byte{1, 1, 'n', 5, 'v'}))},
		{"chunk count huge", treeEnc(1, rawNode(1, "a", nil, binary.AppendUvarint(nil, 1<<60)...))},
		{"chunk count beyond input", treeEnc(1, rawNode(1, "a", nil, append([]byte{2}, id...)...))},
		{"file without chunk count", treeEnc(1, rawNode(1, "a", nil))},
		{"dir short ID", treeEnc(1, rawNode(2, "a", nil, id[:31]...))},
		{"dir missing ID", treeEnc(1, rawNode(2, "a", nil))},
		{"symlink target beyond input", treeEnc(1, rawNode(3, "a", nil, 9, 'x'))},
		{"device without rdev", treeEnc(1, rawNode(5, "a", nil))},
		{"socket with extra", treeEnc(1, rawNode(7, "a", nil, 0))},
		{"perm not minimal", treeEnc(1, []byte{4, 1, 'a', 0xc9, 0x00}, make([]byte, 9))},
		{"perm 0o10000", treeEnc(1, append(binary.AppendUvarint([]byte{4, 1, 'a'}, 0o10000), make([]byte, 9)...))},
		{"perm 2^32 (would truncate to 0)", treeEnc(1, append(binary.AppendUvarint([]byte{4, 1, 'a'}, 1<<32), make([]byte, 9)...))},
		{"perm st_mode with type bits", treeEnc(1, append(binary.AppendUvarint([]byte{4, 1, 'a'}, 0o100644), make([]byte, 9)...))},
		{"uid not minimal", treeEnc(1, []byte{4, 1, 'a', 0, 0x80, 0x80, 0x00}, make([]byte, 8))},
		{"mtime not minimal", treeEnc(1, []byte{4, 1, 'a', 0, 0, 0, 0, 0x81, 0x00}, make([]byte, 5))},
		{"count not minimal", append([]byte("CFTR\x01\x81\x00"), rawNode(4, "a", nil)...)},
		{"name length not minimal", treeEnc(1, []byte{4, 0x81, 0x00, 'a'}, make([]byte, 10))},
		{"zero count not minimal", []byte("CFTR\x01\x80\x00")},
		{"varint overflow in perm", treeEnc(1, append(append([]byte{4, 1, 'a'}, bytes.Repeat([]byte{0x80}, 10)...), 1))},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, err := format.DecodeTree(c.in)
			if err == nil {
				t.Fatalf("accepted: %s", dumpTree(tr))
			}
			wantOutcome(t, "DecodeTree", err, "corrupt")
		})
	}
	// The maximum number of xattrs is accepted.
	xs := make([]format.Xattr, specMaxXattrs)
	for i := range xs {
		xs[i].Name = []byte{byte(i), byte(i >> 8), 1}
	}
	tr := &format.Tree{Nodes: []format.Node{{Kind: format.KindFIFO, Name: []byte("a"), Xattrs: xs}}}
	if _, err := format.DecodeTree(mustEncodeTree(t, tr)); err != nil {
		t.Errorf("65536 xattrs: %v", err)
	}
}

// TestDecodeTreeEveryPrefix: every proper prefix of a valid encoding is an
// error, never a panic and never a tree.
func TestDecodeTreeEveryPrefix(t *testing.T) {
	enc := mustEncodeTree(t, sampleTree())
	for n := range len(enc) {
		if tr, err := format.DecodeTree(enc[:n]); err == nil {
			t.Fatalf("prefix of %d/%d bytes decodes to %d nodes", n, len(enc), len(tr.Nodes))
		} else if outcome(err) != "corrupt" {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
	}
}

// TestDecodeTreeAliases documents that decoded byte slices alias the input
// and cannot grow into it.
func TestDecodeTreeAliases(t *testing.T) {
	enc := mustEncodeTree(t, sampleTree())
	tr, err := format.DecodeTree(enc)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range tr.Nodes {
		if cap(n.Name) != len(n.Name) {
			t.Errorf("name %q has spare capacity %d: an append would overwrite the input", n.Name, cap(n.Name)-len(n.Name))
		}
	}
}

// allocBytes returns the bytes allocated by f (averaged over runs).
func allocBytes(runs int, f func()) uint64 {
	var a, b runtime.MemStats
	f()
	runtime.GC()
	runtime.ReadMemStats(&a)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&b)
	return (b.TotalAlloc - a.TotalAlloc) / uint64(runs)
}

// TestDecodeTreeAllocation: a length field cannot make the decoder allocate
// beyond a small multiple of its input (§5).
func TestDecodeTreeAllocation(t *testing.T) {
	if testing.Short() {
		t.Skip("measures allocation")
	}
	lies := map[string][]byte{
		"count 2^62":        treeEnc(1<<62, rawNode(4, "a", nil)),
		"count 2^20":        treeEnc(1<<20, rawNode(4, "a", nil)),
		"xattrs 65536":      treeEnc(1, rawNode(4, "a", binary.AppendUvarint(nil, specMaxXattrs))),
		"xattrs 2^40":       treeEnc(1, rawNode(4, "a", binary.AppendUvarint(nil, 1<<40))),
		"chunks 2^30":       treeEnc(1, rawNode(1, "a", nil, binary.AppendUvarint(nil, 1<<30)...)),
		"name length 2^30":  treeEnc(1, append([]byte{4}, binary.AppendUvarint(nil, 1<<30)...)),
		"count fits, empty": treeEnc(100, bytes.Repeat([]byte{0}, 1300)),
	}
	for name, in := range lies {
		t.Run(name, func(t *testing.T) {
			got := allocBytes(20, func() { format.DecodeTree(in) })
			// A decoded node (format.Node) is ~17 times the 13 bytes of the
			// smallest encoded node, an xattr 16 times its 3, so 20× is
			// the decoder's own bound; a lie would be megabytes.
			if limit := uint64(20*len(in) + 1024); got > limit {
				t.Errorf("%d-byte input allocates %d bytes (limit %d)", len(in), got, limit)
			}
		})
	}
}
