package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	st, err := statRetry(func(st *unix.Stat_t) error { return unix.Lstat(path, st) })
	if err != nil {
		return nil, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	return st, nil
}

// fstatat is lstat of name in the open directory dfd (of path by path
// when dfd is -1); errors name path.
func fstatat(dfd int, name, path string) (*unix.Stat_t, error) {
	if dfd < 0 {
		return lstat(path)
	}
	st, err := statRetry(func(st *unix.Stat_t) error { return unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW) })
	if err != nil {
		return nil, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	return st, nil
}

// fstatatName is fstatat of name in the open directory dfd of path dir;
// the path is joined only for an error.
func fstatatName(dfd int, name, dir string) (*unix.Stat_t, error) {
	st, err := statRetry(func(st *unix.Stat_t) error { return unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW) })
	if err != nil {
		return nil, &os.PathError{Op: "lstat", Path: filepath.Join(dir, name), Err: err}
	}
	return st, nil
}

// statRetry calls stat until it is not interrupted (EINTR).
func statRetry(stat func(*unix.Stat_t) error) (*unix.Stat_t, error) {
	var st unix.Stat_t
	for {
		err := stat(&st)
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return nil, err
			}
			return &st, nil
		}
	}
}

// readlinkAt is readlink of name in the open directory dfd (of path by
// path when dfd is -1).
func readlinkAt(dfd int, name []byte, path string) (string, error) {
	if dfd < 0 {
		return os.Readlink(path)
	}
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dfd, string(name), buf)
		if errors.Is(err, unix.EINTR) {
			size /= 2
			continue
		}
		if err != nil {
			return "", &os.PathError{Op: "readlink", Path: path, Err: err}
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// xattrOps lists and reads the extended attributes of one file, by path
// or through an open descriptor.
type xattrOps struct {
	list func(dest []byte) (int, error)
	get  func(attr string, dest []byte) (int, error)
}

// readXattrs returns path's extended attributes (without following a
// symlink). Filesystems without xattr support yield none.
func readXattrs(path string) ([]format.Xattr, error) {
	return readXattrsWith(path, xattrOps{
		list: func(dest []byte) (int, error) { return unix.Llistxattr(path, dest) },
		get:  func(attr string, dest []byte) (int, error) { return unix.Lgetxattr(path, attr, dest) },
	})
}

// readXattrsFD is readXattrs through fd, the file at path opened (never
// a symlink: files are opened with O_NOFOLLOW): no lookup of the path.
func readXattrsFD(fd int, path string) ([]format.Xattr, error) {
	return readXattrsWith(path, xattrOps{
		list: func(dest []byte) (int, error) { return unix.Flistxattr(fd, dest) },
		get:  func(attr string, dest []byte) (int, error) { return unix.Fgetxattr(fd, attr, dest) },
	})
}

func readXattrsWith(path string, op xattrOps) ([]format.Xattr, error) {
	size, err := op.list(nil)
	if err != nil || size == 0 {
		if err != nil && !ignorableXattrErr(err) {
			return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
		}
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = op.list(buf)
	if err != nil {
		if ignorableXattrErr(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	var out []format.Xattr
	for _, name := range splitNul(buf[:size]) {
		vsize, err := op.get(name, nil)
		if err != nil {
			if ignorableXattrErr(err) || errors.Is(err, unix.ENODATA) {
				continue
			}
			return nil, fmt.Errorf("read xattr %s of %s: %w", name, path, err)
		}
		val := make([]byte, vsize)
		if vsize > 0 {
			vsize, err = op.get(name, val)
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
