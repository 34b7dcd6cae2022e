package agent

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/format"
)

// statNode fills a node's metadata from an lstat result.
func statNode(name string, st *unix.Stat_t) format.Node {
	n := format.Node{
		Name:   []byte(name),
		Perm:   st.Mode & 0o7777,
		UID:    uint64(st.Uid),
		GID:    uint64(st.Gid),
		MTime:  st.Mtim.Nano(),
		CTime:  st.Ctim.Nano(),
		Inode:  st.Ino,
		Device: st.Dev,
		NLink:  uint64(st.Nlink),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		n.Kind = format.KindFile
		n.Size = uint64(st.Size)
	case unix.S_IFDIR:
		n.Kind = format.KindDir
	case unix.S_IFLNK:
		n.Kind = format.KindSymlink
		n.Size = uint64(st.Size)
	case unix.S_IFIFO:
		n.Kind = format.KindFIFO
	case unix.S_IFCHR:
		n.Kind = format.KindCharDev
		n.RDev = st.Rdev
	case unix.S_IFBLK:
		n.Kind = format.KindBlockDev
		n.RDev = st.Rdev
	case unix.S_IFSOCK:
		n.Kind = format.KindSocket
	}
	if n.Kind != format.KindFile {
		// Only files need link detection; directories' nlink counts subdirs.
		n.NLink = 0
		if n.Kind == format.KindDir {
			n.Inode, n.Device = 0, 0
		}
	}
	return n
}

func lstat(path string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	for {
		err := unix.Lstat(path, &st)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "lstat", Path: path, Err: err}
		}
		return &st, nil
	}
}

// readXattrs returns path's extended attributes (without following a
// symlink). Filesystems without xattr support yield none.
func readXattrs(path string) ([]format.Xattr, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil || size == 0 {
		if err != nil && !ignorableXattrErr(err) {
			return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
		}
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(path, buf)
	if err != nil {
		if ignorableXattrErr(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	var out []format.Xattr
	for _, name := range splitNul(buf[:size]) {
		vsize, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			if ignorableXattrErr(err) || errors.Is(err, unix.ENODATA) {
				continue
			}
			return nil, fmt.Errorf("read xattr %s of %s: %w", name, path, err)
		}
		val := make([]byte, vsize)
		if vsize > 0 {
			vsize, err = unix.Lgetxattr(path, name, val)
			if err != nil {
				if errors.Is(err, unix.ENODATA) {
					continue
				}
				return nil, fmt.Errorf("read xattr %s of %s: %w", name, path, err)
			}
		}
		out = append(out, format.Xattr{Name: []byte(name), Value: val[:vsize]})
	}
	// Sorted, so that an unchanged directory encodes to the same tree.
	sort.Slice(out, func(i, j int) bool { return string(out[i].Name) < string(out[j].Name) })
	return out, nil
}

func ignorableXattrErr(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
