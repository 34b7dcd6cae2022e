package format

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Tree encoding constants (docs/format.md §5).
const (
	TreeMagic   = "CFTR"
	TreeVersion = 0x01
	maxXattrs   = 65536
)

// NodeKind is the kind of a tree node.
type NodeKind uint8

const (
	KindFile      NodeKind = 1
	KindDir       NodeKind = 2
	KindSymlink   NodeKind = 3
	KindFIFO      NodeKind = 4
	KindCharDev   NodeKind = 5
	KindBlockDev  NodeKind = 6
	KindSocket    NodeKind = 7
	maxKnownKinds          = KindSocket
)

func (k NodeKind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindDir:
		return "dir"
	case KindSymlink:
		return "symlink"
	case KindFIFO:
		return "fifo"
	case KindCharDev:
		return "chardev"
	case KindBlockDev:
		return "blockdev"
	case KindSocket:
		return "socket"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  []byte
	Value []byte
}

// Node is one entry of a directory.
type Node struct {
	Kind    NodeKind
	Name    []byte // raw bytes, not necessarily UTF-8
	Perm    uint32 // st_mode & 07777
	UID     uint64
	GID     uint64
	Size    uint64
	MTime   int64 // ns since the Unix epoch
	CTime   int64
	Inode   uint64
	Device  uint64
	NLink   uint64
	Xattrs  []Xattr
	Content []vault.ID // file chunks
	Subtree vault.ID   // dir
	Target  []byte     // symlink
	RDev    uint64     // devices
}

// Tree is one directory's listing, sorted by name.
type Tree struct {
	Nodes []Node
}

// ValidName reports whether name may appear in a tree.
func ValidName(name []byte) bool {
	if len(name) == 0 || bytes.Equal(name, []byte(".")) || bytes.Equal(name, []byte("..")) {
		return false
	}
	return bytes.IndexByte(name, '/') < 0 && bytes.IndexByte(name, 0) < 0
}

// Sort orders t's nodes by name, as encoding requires.
func (t *Tree) Sort() {
	slices.SortFunc(t.Nodes, func(a, b Node) int { return bytes.Compare(a.Name, b.Name) })
}

// Find returns the node named name, or nil.
func (t *Tree) Find(name []byte) *Node {
	i, ok := slices.BinarySearchFunc(t.Nodes, name, func(n Node, name []byte) int { return bytes.Compare(n.Name, name) })
	if !ok {
		return nil
	}
	return &t.Nodes[i]
}

// EncodeTree appends t's encoding to dst. It fails on a tree that would
// not decode (bad names, unsorted or duplicate names).
func EncodeTree(dst []byte, t *Tree) ([]byte, error) {
	dst = append(dst, TreeMagic...)
	dst = append(dst, TreeVersion)
	dst = binary.AppendUvarint(dst, uint64(len(t.Nodes)))
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if !ValidName(n.Name) {
			return nil, fmt.Errorf("encode tree: invalid name %q", n.Name)
		}
		if i > 0 && bytes.Compare(t.Nodes[i-1].Name, n.Name) >= 0 {
			return nil, fmt.Errorf("encode tree: names not sorted or duplicated at %q", n.Name)
		}
		if n.Kind == 0 || n.Kind > maxKnownKinds {
			return nil, fmt.Errorf("encode tree: %q has unknown kind %d", n.Name, n.Kind)
		}
		if n.Perm > 0o7777 {
			return nil, fmt.Errorf("encode tree: %q has mode bits %o beyond 07777", n.Name, n.Perm)
		}
		if len(n.Xattrs) > maxXattrs {
			return nil, fmt.Errorf("encode tree: %q has too many xattrs", n.Name)
		}
		dst = append(dst, byte(n.Kind))
		dst = appendBytes(dst, n.Name)
		dst = binary.AppendUvarint(dst, uint64(n.Perm))
		dst = binary.AppendUvarint(dst, n.UID)
		dst = binary.AppendUvarint(dst, n.GID)
		dst = binary.AppendUvarint(dst, n.Size)
		dst = binary.AppendVarint(dst, n.MTime)
		dst = binary.AppendVarint(dst, n.CTime)
		dst = binary.AppendUvarint(dst, n.Inode)
		dst = binary.AppendUvarint(dst, n.Device)
		dst = binary.AppendUvarint(dst, n.NLink)
		dst = binary.AppendUvarint(dst, uint64(len(n.Xattrs)))
		for _, x := range n.Xattrs {
			if len(x.Name) == 0 {
				return nil, fmt.Errorf("encode tree: %q has an xattr with an empty name", n.Name)
			}
			dst = appendBytes(dst, x.Name)
			dst = appendBytes(dst, x.Value)
		}
		switch n.Kind {
		case KindFile:
			dst = binary.AppendUvarint(dst, uint64(len(n.Content)))
			for _, id := range n.Content {
				dst = append(dst, id[:]...)
			}
		case KindDir:
			dst = append(dst, n.Subtree[:]...)
		case KindSymlink:
			dst = appendBytes(dst, n.Target)
		case KindCharDev, KindBlockDev:
			dst = binary.AppendUvarint(dst, n.RDev)
		}
	}
	return dst, nil
}

func appendBytes(dst, b []byte) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(b))), b...)
}

// DecodeTree parses an encoded tree. Byte slices in the result alias b.
func DecodeTree(b []byte) (*Tree, error) {
	d := decoder{b: b}
	if len(b) < 5 || string(b[:4]) != TreeMagic {
		return nil, fmt.Errorf("%w: tree: bad magic", vault.ErrCorrupt)
	}
	if b[4] != TreeVersion {
		return nil, fmt.Errorf("%w: tree: unknown version %d", vault.ErrCorrupt, b[4])
	}
	d.b = b[5:]
	count := d.uvarint()
	// Each node takes at least 13 bytes, so a count beyond that is a lie.
	if d.err == nil && count > uint64(len(d.b))/13 {
		return nil, fmt.Errorf("%w: tree: node count %d exceeds its size", vault.ErrCorrupt, count)
	}
	t := &Tree{Nodes: make([]Node, 0, count)}
	for i := uint64(0); i < count && d.err == nil; i++ {
		var n Node
		n.Kind = NodeKind(d.byte())
		n.Name = d.bytes()
		perm := d.uvarint()
		if perm > 0o7777 {
			return nil, fmt.Errorf("%w: tree: node %q has mode bits %o beyond 07777", vault.ErrCorrupt, n.Name, perm)
		}
		n.Perm = uint32(perm)
		n.UID = d.uvarint()
		n.GID = d.uvarint()
		n.Size = d.uvarint()
		n.MTime = d.varint()
		n.CTime = d.varint()
		n.Inode = d.uvarint()
		n.Device = d.uvarint()
		n.NLink = d.uvarint()
		nx := d.uvarint()
		if d.err != nil {
			break
		}
		if nx > maxXattrs || nx > uint64(len(d.b))/3 {
			return nil, fmt.Errorf("%w: tree: node %q claims %d xattrs", vault.ErrCorrupt, n.Name, nx)
		}
		if nx > 0 {
			n.Xattrs = make([]Xattr, nx)
			for j := range n.Xattrs {
				n.Xattrs[j].Name = d.bytes()
				n.Xattrs[j].Value = d.bytes()
				if d.err == nil && len(n.Xattrs[j].Name) == 0 {
					return nil, fmt.Errorf("%w: tree: node %q has an xattr with an empty name", vault.ErrCorrupt, n.Name)
				}
			}
		}
		switch n.Kind {
		case KindFile:
			nc := d.uvarint()
			if d.err == nil && nc > uint64(len(d.b))/vault.IDSize {
				return nil, fmt.Errorf("%w: tree: node %q claims %d chunks", vault.ErrCorrupt, n.Name, nc)
			}
			if nc > 0 {
				n.Content = make([]vault.ID, nc)
				for j := range n.Content {
					n.Content[j] = d.id()
				}
			}
		case KindDir:
			n.Subtree = d.id()
		case KindSymlink:
			n.Target = d.bytes()
		case KindCharDev, KindBlockDev:
			n.RDev = d.uvarint()
		case KindFIFO, KindSocket:
		default:
			return nil, fmt.Errorf("%w: tree: node %d has unknown kind %d", vault.ErrCorrupt, i, n.Kind)
		}
		if d.err != nil {
			break
		}
		if !ValidName(n.Name) {
			return nil, fmt.Errorf("%w: tree: invalid name %q", vault.ErrCorrupt, n.Name)
		}
		if len(t.Nodes) > 0 && bytes.Compare(t.Nodes[len(t.Nodes)-1].Name, n.Name) >= 0 {
			return nil, fmt.Errorf("%w: tree: names not sorted or duplicated at %q", vault.ErrCorrupt, n.Name)
		}
		t.Nodes = append(t.Nodes, n)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: tree: %v", vault.ErrCorrupt, d.err)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: tree: %d trailing bytes", vault.ErrCorrupt, len(d.b))
	}
	return t, nil
}

// decoder reads varint-framed fields, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

var errShort = fmt.Errorf("unexpected end of data")

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = errShort
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n > 1 && d.b[n-1] == 0 { // overflow, short, or not minimal
		d.err = fmt.Errorf("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || n > 1 && d.b[n-1] == 0 { // overflow, short, or not minimal
		d.err = fmt.Errorf("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) id() vault.ID {
	var id vault.ID
	if d.err != nil {
		return id
	}
	if len(d.b) < vault.IDSize {
		d.err = errShort
		return id
	}
	copy(id[:], d.b)
	d.b = d.b[vault.IDSize:]
	return id
}
