// Package fusefs presents a vault's snapshots as a read-only FUSE file
// system (coffer mount): snapshots/<time>/…, hosts/<host>/<time>/…,
// tags/<tag>/<time>/… and ids/<ID>/…, each with a "latest" link where it
// lists times.
//
// Snapshot trees are untrusted (a hostile server or vault directory can
// serve any tree that decodes), so the file system is bounded like the
// walkers of ls and restore: a directory is loaded only when it is looked
// at, one tree at a time; the entries each place a snapshot appears has
// alive in the kernel at once never exceed what its record counts (a tree
// bomb gets EIO, not the machine's memory); no path is longer than
// agent.MaxPathBytes; loaded trees and file chunks sit in caches of fixed
// size. Every write fails with EROFS, and the mount is read-only, nodev and
// nosuid.
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Repo is what the file system reads a snapshot through: the vault's view
// of the snapshot's dedup domain (the local engine or the HTTPS client).
type Repo interface {
	LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error)
	LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error)
	BlobSize(t vault.BlobType, id vault.ID) (uint32, error)
}

// Options configure a file system.
type Options struct {
	// Snapshots are the snapshots shown (live ones; the caller filters).
	Snapshots []vault.SnapshotRecord
	// Open returns the repository snapshot s is read through. It is called
	// once per snapshot, when the snapshot is first looked into.
	Open func(ctx context.Context, s vault.SnapshotRecord) (Repo, error)
	// MaxEntries is the most entries of snapshot s alive in the kernel at
	// once (default agent.MaxEntries(s): what its record counts).
	MaxEntries func(s vault.SnapshotRecord) uint64
	// CacheBytes bounds the chunk cache (default DefaultCacheBytes).
	CacheBytes int64
	// Denied reports whether err means the token may not read what was
	// asked (a backup reader's token and file contents): the kernel then
	// gets EACCES instead of EIO.
	Denied func(error) bool
	// treeNodes overrides treeCacheNodes (tests).
	treeNodes int64
	// Log receives errors the file system turns into EIO, so the user
	// learns why a read failed. Messages hold untrusted text (paths,
	// names): the caller makes them safe for a terminal.
	Log func(msg string)
}

// maxPlaces bounds the directories of the fixed layout: each snapshot's
// under snapshots/, hosts/ and ids/, and one under tags/ per tag.
const maxPlaces = 1 << 20

// ErrTooManySnapshots reports a selection of snapshots too large to mount.
var ErrTooManySnapshots = errors.New("too many snapshots to mount")

// DefaultCacheBytes is the chunk cache's default size.
const DefaultCacheBytes = 64 << 20

// treeCacheNodes bounds the entries of the loaded trees kept for later
// lookups. A larger tree (a directory of more entries) is kept alone, in
// FS.bigTree, until another such tree takes its place: ls -l in a huge
// directory looks up each entry in the one tree loaded, not in a tree
// loaded again per entry.
const treeCacheNodes = 1 << 18

func treeWeight(t *format.Tree) int64 { return int64(len(t.Nodes)) + 1 }

type bigTree struct {
	key  cacheKey
	tree *format.Tree
}

// maxLogged is how many errors a mount reports before it goes quiet: a
// tool walking a damaged snapshot must not flood the terminal.
const maxLogged = 100

// timeout is how long the kernel may cache names and attributes: a
// snapshot never changes.
const timeout = time.Minute

// FS is a file system of snapshots, ready to mount.
type FS struct {
	root   *rootDir
	logged atomic.Int64
	log    func(string)
	denied func(error) bool
	// bigTree is the one tree too large for the tree cache kept.
	bigTree atomic.Pointer[bigTree]
}

// New lays out the snapshots of opt.
func New(opt Options) (*FS, error) {
	if opt.Open == nil {
		return nil, errors.New("fusefs: Options.Open is required")
	}
	if opt.MaxEntries == nil {
		opt.MaxEntries = agent.MaxEntries
	}
	if opt.CacheBytes <= 0 {
		opt.CacheBytes = DefaultCacheBytes
	}
	f := &FS{log: opt.Log, denied: opt.Denied}
	// A chunk larger than a quarter of the cache is not kept: it would
	// push out most of the rest.
	chunks := newLRU[cacheKey, []byte](opt.CacheBytes, opt.CacheBytes/4, func(b []byte) int64 { return int64(len(b)) })
	if opt.treeNodes <= 0 {
		opt.treeNodes = treeCacheNodes
	}
	trees := newLRU[cacheKey, *format.Tree](opt.treeNodes, opt.treeNodes, treeWeight)
	snaps := make([]*snap, 0, len(opt.Snapshots))
	for _, s := range opt.Snapshots {
		snaps = append(snaps, &snap{rec: s, max: opt.MaxEntries(s), open: opt.Open, fs: f, chunks: chunks, trees: trees})
	}
	places := 0
	for _, s := range snaps {
		places += 3 + len(s.rec.Tags)
	}
	if places > maxPlaces {
		// Each place is a directory the mount keeps while mounted (and
		// each has its own entry bound): a hostile server listing
		// millions of snapshots or tags must not make the mount hold them.
		return nil, fmt.Errorf("%w: %d snapshots with their tags need %d directories, more than a mount shows (%d): narrow them with --host, --path or --tag", ErrTooManySnapshots, len(snaps), places, maxPlaces)
	}
	f.root = &rootDir{layout: newLayout(snaps)}
	return f, nil
}

// Root is the root node, for fs.Mount.
func (f *FS) Root() fs.InodeEmbedder { return f.root }

// Mount mounts f at dir: read-only, without devices or set-user-ID
// programs, visible to the mounting user only. Unmount the returned server
// (or fusermount -u dir) to end it.
func Mount(dir string, f *FS) (*fuse.Server, error) {
	t := timeout
	return fs.Mount(dir, f.Root(), &fs.Options{
		EntryTimeout:    &t,
		AttrTimeout:     &t,
		NegativeTimeout: &t,
		MountOptions: fuse.MountOptions{
			FsName: "coffer",
			Name:   "coffer",
			// ro: the kernel refuses writes before they reach us (our
			// nodes refuse them too). nodev, nosuid: a device node or a
			// set-user-ID program in a snapshot (perhaps a hostile one)
			// must not become a way into this machine.
			Options:       []string{"ro", "nodev", "nosuid"},
			DisableXAttrs: true,
			MaxReadAhead:  1 << 20,
		},
	})
}

func (f *FS) report(msg string) {
	if f.log == nil {
		return
	}
	switch n := f.logged.Add(1); {
	case n < maxLogged:
		f.log(msg)
	case n == maxLogged:
		f.log(msg)
		f.log(fmt.Sprintf("further errors are not shown (after %d)", maxLogged))
	}
}

// snap is one snapshot's state: its repository, opened on first use, and
// the count of its entries the kernel holds.
type snap struct {
	rec    vault.SnapshotRecord
	max    uint64
	open   func(context.Context, vault.SnapshotRecord) (Repo, error)
	fs     *FS
	chunks *lru[cacheKey, []byte]
	trees  *lru[cacheKey, *format.Tree]

	mu   sync.Mutex
	repo Repo
}

type cacheKey struct {
	domain string
	id     vault.ID
}

func (s *snap) key(id vault.ID) cacheKey { return cacheKey{s.rec.Domain, id} }

func (s *snap) getRepo(ctx context.Context) (Repo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repo != nil {
		return s.repo, nil
	}
	r, err := s.open(ctx, s.rec)
	if err != nil {
		return nil, err
	}
	s.repo = r
	return r, nil
}

// budget counts the entries of one of a snapshot's directories
// (snapshots/<time>, hosts/<host>/<time>, …) alive in the kernel: each
// place a snapshot appears has its own, so that find over the whole mount
// sees every snapshot in full at each place.
type budget struct {
	max  uint64
	live atomic.Uint64
}

// take counts one more entry alive in the kernel; false past the bound.
func (b *budget) take() bool {
	if b.live.Add(1) > b.max && b.max > 0 {
		b.live.Add(^uint64(0))
		return false
	}
	return true
}

func (b *budget) release() { b.live.Add(^uint64(0)) }

// fail reports err on path p of the snapshot and returns the errno the
// kernel gets.
func (s *snap) fail(p string, err error) syscall.Errno {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return syscall.EINTR
	}
	s.fs.report(fmt.Sprintf("snapshot %s: %s: %v", s.rec.ID.Short(), short(p), err))
	if s.fs.denied != nil && s.fs.denied(err) {
		return syscall.EACCES
	}
	if errors.Is(err, agent.ErrPathTooLong) {
		return syscall.ENAMETOOLONG
	}
	return syscall.EIO
}

// tree loads tree id, from the cache when it is there, and checks that it
// may be shown: every name valid, no more entries than the snapshot holds.
func (s *snap) tree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	if t, ok := s.cached(id); ok {
		return t, nil
	}
	k := s.key(id)
	r, err := s.getRepo(ctx)
	if err != nil {
		return nil, err
	}
	t, err := r.LoadTree(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.check(id, t); err != nil {
		return nil, err
	}
	if treeWeight(t) > s.trees.max {
		s.fs.bigTree.Store(&bigTree{key: k, tree: t})
	} else {
		s.trees.put(k, t)
	}
	return t, nil
}

// cached is tree id if a cache holds it.
func (s *snap) cached(id vault.ID) (*format.Tree, bool) {
	k := s.key(id)
	if t, ok := s.trees.get(k); ok {
		return t, true
	}
	if b := s.fs.bigTree.Load(); b != nil && b.key == k {
		return b.tree, true
	}
	return nil, false
}

// check is what a tree must be to be shown: every name valid, sorted and
// once, no more entries than the snapshot holds.
func (s *snap) check(id vault.ID, t *format.Tree) error {
	if s.max > 0 && uint64(len(t.Nodes)) > s.max {
		return fmt.Errorf("%w: one directory lists %d entries, the snapshot's record %d", agent.ErrTooManyEntries, len(t.Nodes), s.max)
	}
	for i := range t.Nodes {
		// A name with '/' or NUL, ".", ".." or "" would make the kernel
		// resolve paths the snapshot does not hold (restore refuses them
		// too, as ErrUnsafePath).
		if !format.ValidName(t.Nodes[i].Name) {
			return fmt.Errorf("%w: %q", agent.ErrUnsafePath, t.Nodes[i].Name)
		}
		if i > 0 && string(t.Nodes[i-1].Name) >= string(t.Nodes[i].Name) {
			return fmt.Errorf("tree %s is not sorted by name or names an entry twice", id.Short())
		}
	}
	return nil
}

// treesAhead: through a vault server, the trees of directory t's
// subdirectories that no cache holds are loaded in one request (at most
// treesAheadMax), checked as when loaded alone, and cached, so that a
// walk of the mount (find, ls -R, cp -r) costs a request a directory
// rather than one for each of its subdirectories. A tree this fails to
// load or check, or that is too large to cache, is loaded alone when it
// is looked into, and that load reports what is wrong.
func (s *snap) treesAhead(ctx context.Context, t *format.Tree) {
	r, err := s.getRepo(ctx)
	if err != nil {
		return
	}
	bl, ok := r.(batchLoader)
	if !ok {
		return
	}
	var ids []vault.ID
	seen := map[vault.ID]bool{}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if n.Kind != format.KindDir || seen[n.Subtree] {
			continue
		}
		seen[n.Subtree] = true
		if _, ok := s.cached(n.Subtree); !ok {
			ids = append(ids, n.Subtree)
		}
		if len(ids) == treesAheadMax {
			break
		}
	}
	if len(ids) < 2 {
		return // one tree costs the same request when it is looked into
	}
	bl.LoadBlobs(ctx, vault.TreeBlob, ids, func(i int, data []byte) error {
		sub, err := format.DecodeTree(data)
		if err != nil || s.check(ids[i], sub) != nil {
			return nil // left for its own load to report
		}
		s.trees.put(s.key(ids[i]), sub) // one too large for the cache is not kept
		return nil
	})
}

// treesAheadMax bounds the trees treesAhead asks for at once.
const treesAheadMax = 256

func short(p string) string {
	if len(p) > 256 {
		return p[:256] + "…"
	}
	return p
}

// rootDir is the file system's root: its layout is fixed at mount.
type rootDir struct {
	fs.Inode
	layout *dirSpec
}

var _ fs.NodeOnAdder = (*rootDir)(nil)

// OnAdd builds the fixed part of the tree: the listing directories and the
// snapshots' root directories in them.
func (r *rootDir) OnAdd(ctx context.Context) {
	r.layout.build(ctx, &r.Inode)
}

func (r *rootDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFDIR | 0o555
	return 0
}

// dirSpec is one directory of the fixed layout.
type dirSpec struct {
	mtime   time.Time
	entries []specEntry // sorted by name
}

type specEntry struct {
	name string
	dir  *dirSpec // a listing directory, or
	snap *snap    // a snapshot's root directory, or
	link string   // a symlink's target ("latest")
}

func (d *dirSpec) build(ctx context.Context, parent *fs.Inode) {
	for _, e := range d.entries {
		var ch *fs.Inode
		switch {
		case e.dir != nil:
			ch = parent.NewPersistentInode(ctx, &staticDir{mtime: e.dir.mtime}, fs.StableAttr{Mode: fuse.S_IFDIR})
			e.dir.build(ctx, ch)
		case e.snap != nil:
			ch = parent.NewPersistentInode(ctx, &dirNode{snap: e.snap, budget: &budget{max: e.snap.max}, tree: e.snap.rec.Tree, root: true}, fs.StableAttr{Mode: fuse.S_IFDIR})
		default:
			ch = parent.NewPersistentInode(ctx, &linkNode{target: []byte(e.link), mtime: d.mtime}, fs.StableAttr{Mode: fuse.S_IFLNK})
		}
		parent.AddChild(e.name, ch, false)
	}
}

// staticDir is a directory of the fixed layout (snapshots, hosts/web01…).
type staticDir struct {
	fs.Inode
	mtime time.Time
}

func (d *staticDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFDIR | 0o555
	out.Nlink = 2
	out.SetTimes(nil, &d.mtime, &d.mtime)
	return 0
}

func (d *staticDir) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

// linkNode is a "latest" link of the layout.
type linkNode struct {
	fs.Inode
	target []byte
	mtime  time.Time
}

func (l *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) { return l.target, 0 }

func (l *linkNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFLNK | 0o777
	out.Size = uint64(len(l.target))
	out.SetTimes(nil, &l.mtime, &l.mtime)
	return 0
}

// timeName is a snapshot's directory name: its time in UTC, to the second.
func timeName(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// escapeName makes a host or tag (text a snapshot's writer chose) a valid
// file name, one to one: '%', '/' and NUL become %25, %2F and %00, and the
// names "", "." and ".." become "%", "%2E" and "%2E%2E" (none of which
// escaping makes otherwise), so no two hosts or tags share a directory
// and none is a path.
func escapeName(s string) string {
	switch s {
	case "":
		return "%"
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	if !strings.ContainsAny(s, "%/\x00") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%', '/', 0:
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// newLayout arranges snaps in the four listing directories.
func newLayout(snaps []*snap) *dirSpec {
	slices.SortStableFunc(snaps, func(a, b *snap) int {
		if c := a.rec.Time.Compare(b.rec.Time); c != 0 {
			return c
		}
		return strings.Compare(a.rec.ID.String(), b.rec.ID.String())
	})
	// Each snapshot's name: its time, and its short ID with it when
	// another snapshot has the same time.
	names := make(map[*snap]string, len(snaps))
	byTime := map[string]int{}
	for _, s := range snaps {
		byTime[timeName(s.rec.Time)]++
	}
	taken := map[string]bool{}
	for _, s := range snaps {
		n := timeName(s.rec.Time)
		if byTime[n] > 1 {
			n += "-" + s.rec.ID.Short()
		}
		// Short IDs can collide (and a hostile server can list one ID
		// twice): every snapshot still gets a name of its own.
		if taken[n] {
			n = timeName(s.rec.Time) + "-" + s.rec.ID.String()
		}
		for i := 2; taken[n]; i++ {
			n = fmt.Sprintf("%s-%s-%d", timeName(s.rec.Time), s.rec.ID.String(), i)
		}
		taken[n] = true
		names[s] = n
	}
	// A listing of snapshots by name, with "latest" for the newest.
	listing := func(ss []*snap) *dirSpec {
		d := &dirSpec{}
		for _, s := range ss {
			d.entries = append(d.entries, specEntry{name: names[s], snap: s})
		}
		if len(ss) > 0 {
			newest := ss[len(ss)-1]
			d.mtime = newest.rec.Time
			d.entries = append(d.entries, specEntry{name: "latest", link: names[newest]})
		}
		sortEntries(d)
		return d
	}
	hostSnaps := map[string][]*snap{}
	tagSnaps := map[string][]*snap{}
	byShort := map[string]int{}
	for _, s := range snaps {
		h := escapeName(s.rec.Host)
		hostSnaps[h] = append(hostSnaps[h], s)
		seen := map[string]bool{}
		for _, t := range s.rec.Tags {
			t = escapeName(t)
			if !seen[t] {
				seen[t] = true
				tagSnaps[t] = append(tagSnaps[t], s)
			}
		}
		byShort[s.rec.ID.Short()]++
	}
	group := func(m map[string][]*snap) *dirSpec {
		d := &dirSpec{}
		for name, ss := range m {
			sub := listing(ss)
			d.entries = append(d.entries, specEntry{name: name, dir: sub})
			if sub.mtime.After(d.mtime) {
				d.mtime = sub.mtime
			}
		}
		sortEntries(d)
		return d
	}
	ids := &dirSpec{}
	takenID := map[string]bool{}
	for _, s := range snaps {
		id := s.rec.ID.Short()
		if byShort[id] > 1 {
			id = s.rec.ID.String()
		}
		for i := 2; takenID[id]; i++ {
			id = fmt.Sprintf("%s-%d", s.rec.ID.String(), i)
		}
		takenID[id] = true
		ids.entries = append(ids.entries, specEntry{name: id, snap: s})
		ids.mtime = s.rec.Time
	}
	sortEntries(ids)
	all := listing(snaps)
	root := &dirSpec{mtime: all.mtime, entries: []specEntry{
		{name: "hosts", dir: group(hostSnaps)},
		{name: "ids", dir: ids},
		{name: "snapshots", dir: all},
		{name: "tags", dir: group(tagSnaps)},
	}}
	return root
}

func sortEntries(d *dirSpec) {
	slices.SortFunc(d.entries, func(a, b specEntry) int { return strings.Compare(a.name, b.name) })
}
