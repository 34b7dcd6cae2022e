package format

import (
	"bytes"
	"fmt"

	"github.com/coffer-backup/coffer/internal/vault"
)

// CheckTree checks that b is an encoded tree that DecodeTree accepts,
// without building it: it allocates nothing, so the vault server can
// check every tree an agent uploads. It calls ref for every blob the tree
// references, in order: each directory's subtree (a tree blob) and each
// file's chunks (data blobs); an error from ref stops the check and is
// returned as is. Other errors wrap vault.ErrCorrupt, as DecodeTree's do.
func CheckTree(b []byte, ref func(t vault.BlobType, id vault.ID) error) error {
	if len(b) < 5 || string(b[:4]) != TreeMagic {
		return fmt.Errorf("%w: tree: bad magic", vault.ErrCorrupt)
	}
	if b[4] != TreeVersion {
		return fmt.Errorf("%w: tree: unknown version %d", vault.ErrCorrupt, b[4])
	}
	d := decoder{b: b[5:]}
	count := d.uvarint()
	if d.err == nil && count > uint64(len(d.b))/13 {
		return fmt.Errorf("%w: tree: node count %d exceeds its size", vault.ErrCorrupt, count)
	}
	var prev []byte
	for i := uint64(0); i < count && d.err == nil; i++ {
		kind := NodeKind(d.byte())
		name := d.bytes()
		if perm := d.uvarint(); perm > 0o7777 {
			return fmt.Errorf("%w: tree: node %q has mode bits %o beyond 07777", vault.ErrCorrupt, name, perm)
		}
		for range 3 { // uid, gid, size
			d.uvarint()
		}
		d.varint()    // mtime
		d.varint()    // ctime
		for range 3 { // inode, device, nlink
			d.uvarint()
		}
		nx := d.uvarint()
		if d.err != nil {
			break
		}
		if nx > maxXattrs || nx > uint64(len(d.b))/3 {
			return fmt.Errorf("%w: tree: node %q claims %d xattrs", vault.ErrCorrupt, name, nx)
		}
		for range nx {
			xn := d.bytes()
			d.bytes()
			if d.err == nil && len(xn) == 0 {
				return fmt.Errorf("%w: tree: node %q has an xattr with an empty name", vault.ErrCorrupt, name)
			}
		}
		// ref may see the references of a node refused further on (a bad
		// name below): the tree is refused all the same.
		switch kind {
		case KindFile:
			nc := d.uvarint()
			if d.err == nil && nc > uint64(len(d.b))/vault.IDSize {
				return fmt.Errorf("%w: tree: node %q claims %d chunks", vault.ErrCorrupt, name, nc)
			}
			for range nc {
				id := d.id()
				if d.err != nil {
					break
				}
				if err := ref(vault.DataBlob, id); err != nil {
					return err
				}
			}
		case KindDir:
			id := d.id()
			if d.err == nil {
				if err := ref(vault.TreeBlob, id); err != nil {
					return err
				}
			}
		case KindSymlink:
			d.bytes()
		case KindCharDev, KindBlockDev:
			d.uvarint()
		case KindFIFO, KindSocket:
		default:
			return fmt.Errorf("%w: tree: node %d has unknown kind %d", vault.ErrCorrupt, i, kind)
		}
		if d.err != nil {
			break
		}
		if !ValidName(name) {
			return fmt.Errorf("%w: tree: invalid name %q", vault.ErrCorrupt, name)
		}
		if i > 0 && bytes.Compare(prev, name) >= 0 {
			return fmt.Errorf("%w: tree: names not sorted or duplicated at %q", vault.ErrCorrupt, name)
		}
		prev = name
	}
	if d.err != nil {
		return fmt.Errorf("%w: tree: %v", vault.ErrCorrupt, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: tree: %d trailing bytes", vault.ErrCorrupt, len(d.b))
	}
	return nil
}
