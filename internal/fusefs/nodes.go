package fusefs

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// dirNode is a directory of a snapshot: its root, or an entry of a tree.
// It loads its tree when it is looked into, not before.
type dirNode struct {
	fs.Inode
	snap   *snap
	budget *budget // of the snapshot's directory it lies in
	tree   vault.ID
	path   string // from the snapshot's root, for messages and the length bound
	root   bool   // the snapshot's root: part of the fixed layout
	node   format.Node
}

var (
	_ fs.NodeLookuper    = (*dirNode)(nil)
	_ fs.NodeReaddirer   = (*dirNode)(nil)
	_ fs.NodeGetattrer   = (*dirNode)(nil)
	_ fs.NodeOnForgetter = (*dirNode)(nil)
)

func (d *dirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if d.root {
		t := d.snap.rec.Time
		out.Mode = fuse.S_IFDIR | 0o555
		out.Nlink = 2
		out.SetTimes(nil, &t, &t)
		return 0
	}
	fillAttr(&out.Attr, &d.node)
	return 0
}

func (d *dirNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (d *dirNode) OnForget() {
	if !d.root {
		d.budget.release()
	}
}

func (d *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	t, err := d.snap.tree(ctx, d.tree)
	if err != nil {
		return nil, d.snap.fail(d.display(), err)
	}
	// Listed, its subdirectories are likely looked into next.
	d.snap.treesAhead(ctx, t)
	list := make([]fuse.DirEntry, 0, len(t.Nodes))
	for i := range t.Nodes {
		n := &t.Nodes[i]
		mode, ok := kindMode(n.Kind)
		if !ok {
			continue // a kind this coffer does not know: not shown
		}
		list = append(list, fuse.DirEntry{Name: string(n.Name), Mode: mode})
	}
	return fs.NewListDirStream(list), 0
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, err := d.snap.tree(ctx, d.tree)
	if err != nil {
		return nil, d.snap.fail(d.display(), err)
	}
	n := t.Find([]byte(name))
	if n == nil {
		return nil, syscall.ENOENT
	}
	mode, ok := kindMode(n.Kind)
	if !ok {
		return nil, syscall.ENOENT
	}
	p := d.path + "/" + name
	if len(p) > agent.MaxPathBytes {
		// The bound of every walk of a snapshot: no backup reads a
		// longer path, and it keeps a hostile tree's depth small.
		return nil, d.snap.fail(d.display(), fmt.Errorf("%w: an entry %d bytes deep", agent.ErrPathTooLong, len(p)))
	}
	if ch := d.GetChild(name); ch != nil {
		// The kernel revalidates a name it holds: the same entry.
		fillAttr(&out.Attr, n)
		return ch, 0
	}
	// Each entry the kernel holds counts against what the snapshot's
	// record says it holds (released when the kernel forgets it): trees
	// that name one subtree many times over (a tree bomb) run into it
	// instead of into this machine's memory.
	if !d.budget.take() {
		return nil, d.snap.fail(p, fmt.Errorf("%w: more than %d of its entries are open at once", agent.ErrTooManyEntries, d.snap.max))
	}
	var op fs.InodeEmbedder
	switch n.Kind {
	case format.KindDir:
		op = &dirNode{snap: d.snap, budget: d.budget, tree: n.Subtree, path: p, node: *n}
	case format.KindFile:
		op = &fileNode{snap: d.snap, budget: d.budget, path: p, node: *n, dir: d.tree}
	default:
		op = &leafNode{snap: d.snap, budget: d.budget, node: *n}
	}
	fillAttr(&out.Attr, n)
	return d.NewInode(ctx, op, fs.StableAttr{Mode: mode}), 0
}

func (d *dirNode) display() string {
	if d.path == "" {
		return "/"
	}
	return d.path
}

// kindMode is the file type bits of a kind; false for a kind unknown.
func kindMode(k format.NodeKind) (uint32, bool) {
	switch k {
	case format.KindDir:
		return fuse.S_IFDIR, true
	case format.KindFile:
		return fuse.S_IFREG, true
	case format.KindSymlink:
		return fuse.S_IFLNK, true
	case format.KindFIFO:
		return syscall.S_IFIFO, true
	case format.KindCharDev:
		return syscall.S_IFCHR, true
	case format.KindBlockDev:
		return syscall.S_IFBLK, true
	case format.KindSocket:
		return syscall.S_IFSOCK, true
	}
	return 0, false
}

// nobody stands for an owner ID that does not fit in 32 bits.
const nobody = 65534

func id32(id uint64) uint32 {
	if id > math.MaxUint32 {
		return nobody
	}
	return uint32(id)
}

// fillAttr sets a's attributes from the snapshot's node n.
func fillAttr(a *fuse.Attr, n *format.Node) {
	mode, _ := kindMode(n.Kind)
	a.Mode = mode | n.Perm&0o7777
	a.Uid = id32(n.UID)
	a.Gid = id32(n.GID)
	a.Nlink = 1
	switch n.Kind {
	case format.KindFile:
		a.Size = n.Size
	case format.KindSymlink:
		a.Size = uint64(len(n.Target))
	case format.KindDir:
		a.Nlink = 2
	case format.KindCharDev, format.KindBlockDev:
		a.Rdev = uint32(n.RDev) // shown only: the mount is nodev
	}
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	m, c := time.Unix(0, n.MTime), time.Unix(0, n.CTime)
	a.SetTimes(&m, &m, &c)
}

// leafNode is a symlink, FIFO, socket or device of a snapshot.
type leafNode struct {
	fs.Inode
	snap   *snap
	budget *budget
	node   format.Node
}

func (l *leafNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, &l.node)
	return 0
}

func (l *leafNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (l *leafNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if l.node.Kind != format.KindSymlink {
		return nil, syscall.EINVAL
	}
	return l.node.Target, 0
}

func (l *leafNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.EROFS // a FIFO or device: never opened through the mount
}

func (l *leafNode) OnForget() { l.budget.release() }

// fileNode is a regular file of a snapshot. Its chunks are loaded when
// they are read, through the chunk cache.
type fileNode struct {
	fs.Inode
	snap   *snap
	budget *budget
	path   string
	node   format.Node
	dir    vault.ID // the tree that lists it, for read-ahead

	mu   sync.Mutex
	offs []int64 // offs[i] is where chunk i starts; offs[len] the end
}

var (
	_ fs.NodeOpener = (*fileNode)(nil)
	_ fs.NodeReader = (*fileNode)(nil)
)

func (f *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, &f.node)
	return 0
}

func (f *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (f *fileNode) OnForget() { f.budget.release() }

const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC | syscall.O_APPEND | syscall.O_CREAT

func (f *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&writeFlags != 0 {
		return nil, 0, syscall.EROFS
	}
	if _, err := f.layout(ctx); err != nil {
		return nil, 0, f.snap.fail(f.path, err)
	}
	// The content never changes: the kernel may keep its pages.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// layout is where each chunk of the file starts, from the chunks' sizes in
// the vault's index; they must add up to the file's size.
func (f *fileNode) layout(ctx context.Context) ([]int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.offs != nil {
		return f.offs, nil
	}
	r, err := f.snap.getRepo(ctx)
	if err != nil {
		return nil, err
	}
	offs := make([]int64, len(f.node.Content)+1)
	var sum uint64
	for i, id := range f.node.Content {
		n, err := r.BlobSize(vault.DataBlob, id)
		if err != nil {
			return nil, fmt.Errorf("chunk %d of %d: %w", i+1, len(f.node.Content), err)
		}
		sum += uint64(n)
		if sum > math.MaxInt64/2 {
			return nil, fmt.Errorf("chunks add up to more than any file holds")
		}
		offs[i+1] = int64(sum)
	}
	if sum != f.node.Size {
		return nil, fmt.Errorf("its chunks hold %d bytes, its entry says %d: the snapshot is damaged or was altered", sum, f.node.Size)
	}
	f.offs = offs
	return offs, nil
}

func (f *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	offs, err := f.layout(ctx)
	if err != nil {
		return nil, f.snap.fail(f.path, err)
	}
	end := offs[len(offs)-1]
	if off < 0 || off >= end {
		return fuse.ReadResultData(nil), 0
	}
	want := min(int64(len(dest)), end-off)
	out := dest[:0]
	// The chunk that holds off, then the ones after it until dest is full.
	i := sort.Search(len(offs)-1, func(i int) bool { return offs[i+1] > off })
	for int64(len(out)) < want && i < len(offs)-1 {
		data, err := f.chunk(ctx, i, offs[i+1]-offs[i])
		if err != nil {
			return nil, f.snap.fail(f.path, err)
		}
		at := off + int64(len(out)) - offs[i]
		n := min(int64(len(data))-at, want-int64(len(out)))
		out = append(out, data[at:at+n]...)
		i++
	}
	return fuse.ReadResultData(out), 0
}

// chunk is chunk i of the file, of size bytes, from the cache or the vault.
func (f *fileNode) chunk(ctx context.Context, i int, size int64) ([]byte, error) {
	id := f.node.Content[i]
	k := f.snap.key(id)
	if b, ok := f.snap.chunks.get(k); ok {
		return b, nil
	}
	r, err := f.snap.getRepo(ctx)
	if err != nil {
		return nil, err
	}
	if bl, ok := r.(batchLoader); ok {
		return f.chunksAhead(ctx, bl, i)
	}
	b, err := r.LoadBlob(ctx, vault.DataBlob, id, nil)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id.Short(), err)
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("chunk %s holds %d bytes, the index says %d: the vault is damaged or was altered", id.Short(), len(b), size)
	}
	f.snap.chunks.put(k, b)
	return b, nil
}

// batchLoader is the optional capability of a Repo that reads many blobs
// per request (the HTTPS client): reads then fetch the chunks after the
// one asked for as well.
type batchLoader interface {
	LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error
}

// Read-ahead through a vault server: a read that misses the cache fetches
// its chunk and the file's next ones that are not cached, in one request:
// at most readAheadChunks, and readAheadBytes (or a quarter of the cache,
// if less) past the first. When the file's chunks leave room and the
// file before it in its directory was read (a copy or a search of the
// mount going through the directory in order), the chunks of the small
// files listed after it (up to siblingFileMax each, siblingBytes in all)
// come along: reading a directory of small files costs a request per
// readAheadChunks files, not one per file, while opening one file of a
// snapshot still fetches only that file's chunks.
const (
	readAheadChunks = 32
	readAheadBytes  = 8 << 20
	siblingFileMax  = 256 << 10
	siblingBytes    = 2 << 20
	siblingScan     = 4 * readAheadChunks // entries looked at, at most
)

// chunksAhead loads chunk i of the file and the ones after it (as above)
// into the cache, and returns chunk i. Each is checked against its ID by
// the reader, and against its size in the index, as when read alone.
func (f *fileNode) chunksAhead(ctx context.Context, bl batchLoader, i int) ([]byte, error) {
	offs, err := f.layout(ctx)
	if err != nil {
		return nil, err
	}
	budget := min(int64(readAheadBytes), f.snap.chunks.maxItem)
	ids := []vault.ID{f.node.Content[i]}
	sizes := []int64{offs[i+1] - offs[i]}
	var ahead int64
	j := i + 1
	for ; j < len(f.node.Content) && len(ids) < readAheadChunks; j++ {
		if ahead += offs[j+1] - offs[j]; ahead > budget {
			break
		}
		if _, ok := f.snap.chunks.get(f.snap.key(f.node.Content[j])); ok {
			break // cached from here on, most likely: read-ahead stops
		}
		ids, sizes = append(ids, f.node.Content[j]), append(sizes, offs[j+1]-offs[j])
	}
	if j == len(f.node.Content) && len(ids) < readAheadChunks {
		ids, sizes = f.siblingsAhead(ids, sizes, min(budget-ahead, siblingBytes))
	}
	var first []byte
	err = bl.LoadBlobs(ctx, vault.DataBlob, ids, func(k int, data []byte) error {
		if int64(len(data)) != sizes[k] {
			return fmt.Errorf("chunk %s holds %d bytes, the index says %d: the vault is damaged or was altered", ids[k].Short(), len(data), sizes[k])
		}
		b := bytes.Clone(data) // data is the reader's buffer
		if k == 0 {
			first = b
		}
		f.snap.chunks.put(f.snap.key(ids[k]), b)
		return nil
	})
	if first != nil {
		return first, nil // a later chunk's failure is the read of that chunk's to report
	}
	if err == nil {
		err = fmt.Errorf("%w: the server's answer left it out", vault.ErrTruncated)
	}
	return nil, fmt.Errorf("chunk %s: %w", ids[0].Short(), err)
}

// siblingsAhead adds to ids (of sizes) the chunks of the small files
// after f in its directory that no cache holds, within budget bytes and
// readAheadChunks chunks in all. Only a directory tree still cached is
// looked at (a file holds no tree of its own: a tree bomb's many open
// files must not pin many copies of one large tree).
func (f *fileNode) siblingsAhead(ids []vault.ID, sizes []int64, budget int64) ([]vault.ID, []int64) {
	t, ok := f.snap.cached(f.dir)
	if !ok || budget <= 0 {
		return ids, sizes
	}
	r, err := f.snap.getRepo(context.Background()) // opened already: f's layout needed it
	if err != nil {
		return ids, sizes
	}
	at := sort.Search(len(t.Nodes), func(k int) bool { return string(t.Nodes[k].Name) > string(f.node.Name) })
	if !f.afterRead(t, at-1) {
		return ids, sizes
	}
	queued := map[vault.ID]bool{}
	for _, id := range ids {
		queued[id] = true
	}
	for k := at; k < len(t.Nodes) && k < at+siblingScan && len(ids) < readAheadChunks; k++ {
		n := &t.Nodes[k]
		if n.Kind != format.KindFile || n.Size == 0 || n.Size > siblingFileMax || len(n.Content) > readAheadChunks-len(ids) {
			continue
		}
		var add []vault.ID
		var addSizes []int64
		var sum int64
		for _, id := range n.Content {
			if _, ok := f.snap.chunks.get(f.snap.key(id)); ok || queued[id] {
				continue
			}
			sz, err := r.BlobSize(vault.DataBlob, id)
			if err != nil {
				return ids, sizes // its read reports that
			}
			add, addSizes, sum = append(add, id), append(addSizes, int64(sz)), sum+int64(sz)
		}
		if sum > budget {
			break
		}
		budget -= sum
		for _, id := range add {
			queued[id] = true
		}
		ids, sizes = append(ids, add...), append(sizes, addSizes...)
	}
	return ids, sizes
}

// afterRead reports whether the file with content listed before entry k
// of directory t (f itself being entry k) was read: its first chunk is
// cached.
func (f *fileNode) afterRead(t *format.Tree, k int) bool {
	for j := k - 1; j >= 0 && j >= k-siblingScan; j-- {
		n := &t.Nodes[j]
		if n.Kind != format.KindFile || len(n.Content) == 0 {
			continue
		}
		_, ok := f.snap.chunks.get(f.snap.key(n.Content[0]))
		return ok
	}
	return false
}
