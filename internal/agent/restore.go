package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// RestoreRepo is what a restore needs from a vault.
type RestoreRepo interface {
	LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error)
	LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error)
	// BlobSize is the raw length of a stored blob, so a file's chunks can
	// be written at their offsets in parallel.
	BlobSize(t vault.BlobType, id vault.ID) (uint32, error)
}

// RestoreOptions configure a restore.
type RestoreOptions struct {
	Target    string
	Include   []string // paths inside the snapshot; empty means everything
	Overwrite bool
	Workers   int  // default 4 per core: reads of packs overlap on disk
	Owners    bool // restore uid/gid (needs root)
	Progress  func(Progress)
	Warn      func(Warning)
	// MaxEntries bounds the entries the restore visits (MaxEntries of the
	// snapshot's record; 0: no bound): past it, the restore stops with
	// ErrTooManyEntries before it writes anything. What the restore keeps
	// per entry (directory times applied at the end, hard-link names,
	// loaded trees) is then bounded by the record too.
	MaxEntries uint64
	// DeleteDamaged removes files that lost data to damage (with their
	// hard links) instead of leaving them with holes (damaged.go).
	DeleteDamaged bool
	// Exclude leaves out what its Patterns match, by the entry's path in
	// the snapshot, as backup does (restore_select.go); its other rules
	// are about a file system being read and are refused.
	Exclude ExcludeRules
	// DryRun reads the trees and counts what would be restored, writing
	// nothing (the target is not even created); Entry, when set, is
	// called with each entry that would be.
	DryRun bool
	Entry  func(path string, n *format.Node)
	// Verify reads every file the restore wrote back from the target and
	// checks its content against the snapshot's chunks (restore_verify.go).
	// With DryRun it reads and authenticates every chunk the restore
	// would write, writing nothing, and reports damage as a restore does
	// (restore_dryverify.go).
	Verify bool
}

// RestoreResult describes a finished restore.
type RestoreResult struct {
	Files, Dirs, Bytes uint64
	Warnings           []Warning
	// Skipped counts existing files left alone without --overwrite.
	Skipped int
	// Damaged lists the files that lost data to damaged blobs, and
	// LostDirs the directories whose listing could not be read, by path.
	Damaged  []DamagedFile
	LostDirs []LostDir
	// Verified counts the files Verify read back, and Mismatched lists
	// those whose content differs from the snapshot's.
	Verified   uint64
	Mismatched []Mismatch
}

// ErrUnsafePath reports a snapshot entry that would be written outside the
// target or through a symlink; the restore stops.
var ErrUnsafePath = errors.New("unsafe path in snapshot")

type restorer struct {
	repo      RestoreRepo
	opt       RestoreOptions
	root      *os.Root
	target    string
	trees     map[vault.ID]*format.Tree // kept by pass 1 for pass 2 (loadTree)
	keptBytes int
	pre       *treePrefetch // loads trees ahead of pass 1 (treeprefetch.go), or nil
	excl      *excluder     // nil: nothing excluded

	jobs  chan chunkTask
	files chan struct{} // bounds open files
	// walkers bounds the goroutines that walk directories besides the
	// first (walkDir); walking waits for them all.
	walkers chan struct{}
	walking sync.WaitGroup

	err      firstError
	mu       sync.Mutex
	warnings []Warning
	skipped  int
	hardMu   sync.Mutex
	hard     map[[2]uint64]*firstLink // under hardMu
	links    map[string][]string      // a hard-linked file's first name: its other names; under hardMu
	dirMeta  []dirMeta                // under mu
	damaged  []DamagedFile            // under mu
	lostMu   sync.Mutex
	lostDirs []LostDir          // under lostMu once pass 2's walkers run
	badTrees map[vault.ID]error // under lostMu once pass 2's walkers run
	written  []writtenFile      // under mu, with Verify

	nFiles, nDirs, nBytes atomic.Uint64
	totFiles, totBytes    uint64
	current               atomic.Pointer[string]
}

type dirMeta struct {
	rel  string
	node *format.Node
}

type restoreFile struct {
	rel     string
	f       *os.File
	node    *format.Node
	pending atomic.Int64
	failed  atomic.Bool
	damage  fileDamage // ranges lost to damaged blobs (damaged.go)
	// writeMu serialises writes to the file: the kernel does anyway (the
	// inode lock), and parked goroutines are cheaper than writers spinning
	// on that lock, which cost seconds of system time on large files.
	writeMu sync.Mutex
	// holeBlock is the size of the blocks of zeros left as holes
	// (writeSparse).
	holeBlock int
	// sized: the file's last byte is written, so it has its full size
	// without an ftruncate.
	sized atomic.Bool
}

type chunkTask struct {
	file *restoreFile
	off  int64
	id   vault.ID
	size uint64
}

// Restore writes the snapshot tree rootID into opt.Target. It never writes
// outside the target: names are validated, the target is opened as an
// os.Root, and a directory that turns out to be a symlink stops the restore.
func Restore(ctx context.Context, repo RestoreRepo, rootID vault.ID, opt RestoreOptions) (*RestoreResult, error) {
	if opt.Target == "" {
		return nil, errors.New("restore: give a --target directory")
	}
	if opt.Workers <= 0 {
		opt.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	excl, err := restoreExcluder(opt.Exclude)
	if err != nil {
		return nil, err
	}
	if opt.DryRun {
		return dryRun(ctx, repo, rootID, opt, excl)
	}
	if err := os.MkdirAll(opt.Target, 0o700); err != nil {
		return nil, fmt.Errorf("restore: create target: %w", err)
	}
	root, err := os.OpenRoot(opt.Target)
	if err != nil {
		return nil, fmt.Errorf("restore: open target: %w", err)
	}
	defer root.Close()
	target, _ := filepath.Abs(opt.Target)
	r := &restorer{repo: repo, opt: opt, root: root, target: target, trees: map[vault.ID]*format.Tree{}, excl: excl,
		jobs: make(chan chunkTask, 64), files: make(chan struct{}, 256), walkers: make(chan struct{}, dirWalkers()),
		hard: map[[2]uint64]*firstLink{}, links: map[string][]string{}}
	incl := cleanIncludes(opt.Include)

	// Pass 1: load every tree once, validate it, and count for progress
	// and against the record: pass 2 walks the same trees the same way,
	// so it visits no more entries than pass 1 counted.
	matched := map[string]bool{}
	pctx, stopPrefetch := context.WithCancel(ctx)
	if bl, ok := repo.(BatchLoader); ok && len(incl) == 0 {
		// Only for a whole snapshot: with --include, pass 1 loads only
		// the trees on the way, and loading the others would waste.
		r.pre = newTreePrefetch(pctx, bl, repo)
	}
	err = r.scan(ctx, rootID, "", incl, matched, &entryBudget{max: opt.MaxEntries})
	stopPrefetch()
	if r.pre != nil {
		r.pre.wait()
		r.pre = nil
	}
	if err != nil {
		return nil, err
	}
	if err := r.checkIncludes(incl, matched); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	stop := r.startProgress(start)
	var wg sync.WaitGroup
	for range opt.Workers {
		wg.Add(1)
		go func() { defer wg.Done(); r.worker(ctx) }()
	}
	walkErr := r.walk(ctx, rootID, "", root, incl)
	r.walking.Wait()
	close(r.jobs)
	wg.Wait()
	stop()
	if walkErr != nil {
		r.fail(walkErr)
	}
	if err := r.firstErr(); err != nil {
		return nil, err
	}
	r.finishDamaged()
	// Directories last, deepest first, so their times stick and a
	// directory's mode never keeps the restore out of those below it.
	slices.SortStableFunc(r.dirMeta, func(a, b dirMeta) int { return strings.Count(b.rel, "/") - strings.Count(a.rel, "/") })
	for _, d := range r.dirMeta {
		// Through a descriptor: one lookup of the path instead of one
		// per call (os.Root resolves each path a component at a time).
		f, err := r.root.OpenFile(d.rel, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			r.applyMeta(d.rel, d.node, nil) // warns about what fails
			continue
		}
		r.applyMeta(d.rel, d.node, f)
		f.Close()
	}
	res := &RestoreResult{Files: r.nFiles.Load(), Dirs: r.nDirs.Load(), Bytes: r.nBytes.Load(), Warnings: r.warnings, Skipped: r.skipped,
		Damaged: r.damaged, LostDirs: r.lostDirs}
	if opt.Verify {
		if err := r.verify(ctx, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// included reports whether rel is selected, and whether it is only on the
// way to a selected path (so its siblings are not).
func included(rel string, incl []string) (ok bool) {
	if len(incl) == 0 {
		return true
	}
	for _, p := range incl {
		if p == "" || rel == p || strings.HasPrefix(rel, p+"/") || strings.HasPrefix(p, rel+"/") {
			return true
		}
	}
	return false
}

// RestoreTreeBudget bounds the trees pass 1 keeps for pass 2 (by
// treeSize): the first ones loaded, which pass 2 walks first. Pass 2
// loads the others again. Keeping them all cost about 340 bytes a file,
// 340 MB for a snapshot of a million files (docs/performance.md).
const RestoreTreeBudget = 16 << 20

// treeSize estimates what tree t holds in memory.
func treeSize(t *format.Tree) int {
	n := int(unsafe.Sizeof(*t)) + cap(t.Nodes)*int(unsafe.Sizeof(format.Node{}))
	for i := range t.Nodes {
		nd := &t.Nodes[i]
		n += len(nd.Name) + len(nd.Target) + len(nd.Content)*len(vault.ID{})
		for _, x := range nd.Xattrs {
			n += int(unsafe.Sizeof(x)) + len(x.Name) + len(x.Value)
		}
	}
	return n
}

// loadTree loads tree id for pass 1 (scan) and keeps it for pass 2 while
// the kept trees stay within RestoreTreeBudget.
func (r *restorer) loadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	if t, ok := r.trees[id]; ok {
		return t, nil
	}
	load := r.repo.LoadTree
	if r.pre != nil {
		load = r.pre.load
	}
	t, err := load(ctx, id)
	if err != nil {
		return nil, err
	}
	if sz := treeSize(t); r.keptBytes+sz <= RestoreTreeBudget {
		r.trees[id] = t
		r.keptBytes += sz
	}
	return t, nil
}

// passTwoTree returns tree id for pass 2: kept by pass 1, or loaded
// again. Pass 1 loaded it and checked its names; a tree is found by its
// ID, so the same one comes back or none: a load that fails now (damage
// found between the passes) loses the directory as a load in pass 1
// would have, or stops the restore.
func (r *restorer) passTwoTree(ctx context.Context, id vault.ID, rel string) (*format.Tree, bool, error) {
	if t, ok := r.trees[id]; ok {
		return t, true, nil
	}
	t, err := r.repo.LoadTree(ctx, id)
	if err == nil {
		return t, true, nil
	}
	if rel != "" && IsDamage(ctx, err) {
		r.loseTree(id, rel, err)
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("restore: %s: %w", displayRel(rel), err)
}

func (r *restorer) scan(ctx context.Context, id vault.ID, rel string, incl []string, matched map[string]bool, b *entryBudget) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err, bad := r.badTrees[id]; bad {
		r.loseTree(id, rel, err)
		return nil
	}
	t, err := r.loadTree(ctx, id)
	if err != nil {
		// A damaged directory below the root is lost, and the rest goes
		// on; without the root tree there is nothing to restore.
		if rel != "" && IsDamage(ctx, err) {
			r.loseTree(id, rel, err)
			return nil
		}
		return fmt.Errorf("restore: %s: %w", displayRel(rel), err)
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if !format.ValidName(n.Name) {
			return fmt.Errorf("restore: %w: %q in %s", ErrUnsafePath, n.Name, displayRel(rel))
		}
		p := joinRel(rel, string(n.Name))
		if err := b.take("/" + p); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if !included(p, incl) {
			continue
		}
		for _, in := range incl {
			if p == in {
				matched[in] = true
			}
		}
		if r.excluded(p, n) {
			continue
		}
		switch n.Kind {
		case format.KindDir:
			if err := r.scan(ctx, n.Subtree, p, incl, matched, b); err != nil {
				return err
			}
		case format.KindFile:
			r.totFiles++
			r.totBytes += n.Size
		}
	}
	return nil
}

func joinRel(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

func displayRel(rel string) string { return "/" + rel }

func (r *restorer) fail(err error) { r.err.set(err) }

func (r *restorer) firstErr() error { return r.err.get() }

func (r *restorer) warn(w Warning) {
	r.mu.Lock()
	r.warnings = append(r.warnings, w)
	r.mu.Unlock()
	if r.opt.Warn != nil {
		r.opt.Warn(w)
	}
}

// ensureDir makes name in dir (at rel) a real directory, never a symlink,
// and opens it.
func (r *restorer) ensureDir(dir *os.Root, name, rel string) (*os.Root, error) {
	if err := r.mkdir(dir, name, rel); err != nil {
		return nil, err
	}
	sub, err := dir.OpenRoot(name)
	if err != nil {
		return nil, fmt.Errorf("open directory: %w", unwrapPath(err))
	}
	return sub, nil
}

// mkdir's errors other than ErrUnsafePath are about this one directory:
// the caller warns and goes on without it.
func (r *restorer) mkdir(dir *os.Root, name, rel string) error {
	err := dir.Mkdir(name, 0o700)
	if err == nil {
		return nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create directory: %w", unwrapPath(err))
	}
	fi, lerr := dir.Lstat(name)
	if lerr != nil {
		return unwrapPath(lerr)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("restore: %w: %s is a symlink in the target; refusing to restore below it", ErrUnsafePath, displayRel(rel))
	}
	if !fi.IsDir() {
		if !r.opt.Overwrite {
			r.mu.Lock()
			r.skipped++
			r.mu.Unlock()
			return errors.New("exists and is not a directory, left untouched (use --overwrite)")
		}
		if err := dir.Remove(name); err != nil {
			return fmt.Errorf("replace: %w", unwrapPath(err))
		}
		if err := dir.Mkdir(name, 0o700); err != nil {
			return fmt.Errorf("create directory: %w", unwrapPath(err))
		}
	}
	return nil
}

// unwrapPath drops an *fs.PathError's path: warnings name the entry by its
// path in the snapshot, once.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// walk restores tree id, which belongs at rel, into dir. Every entry is
// created relative to its own directory's handle: one path component per
// call, and never through a symlink.
func (r *restorer) walk(ctx context.Context, id vault.ID, rel string, dir *os.Root, incl []string) error {
	t, ok, err := r.passTwoTree(ctx, id, rel)
	if !ok {
		return err
	}
	dirfd := -2 // the directory's descriptor, opened with its first file; -1: none
	for i := range t.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.firstErr(); err != nil {
			return err
		}
		n := &t.Nodes[i]
		if !format.ValidName(n.Name) { // checked in pass 1; a tree loaded again is checked again
			return fmt.Errorf("restore: %w: %q in %s", ErrUnsafePath, n.Name, displayRel(rel))
		}
		name := string(n.Name)
		p := joinRel(rel, name)
		if !included(p, incl) || r.excluded(p, n) {
			continue
		}
		switch n.Kind {
		case format.KindDir:
			if r.badTree(n.Subtree) {
				continue // reported as lost, not created
			}
			sub, err := r.ensureDir(dir, name, p)
			if errors.Is(err, ErrUnsafePath) {
				return err // never written through: the restore stops
			}
			if err != nil {
				// A problem with one directory is a warning (exit 3), like
				// one with a file: the rest is restored.
				r.warn(Warning{Path: displayRel(p), Err: fmt.Errorf("%w; nothing below it was restored", err)})
				continue
			}
			r.nDirs.Add(1)
			// A copy without the tree's other nodes: held to the end,
			// it must not keep the tree.
			meta := *n
			meta.Content = nil
			r.mu.Lock()
			r.dirMeta = append(r.dirMeta, dirMeta{p, &meta})
			r.mu.Unlock()
			if err := r.walkDir(ctx, n.Subtree, p, sub, incl); err != nil {
				return err
			}
		case format.KindFile:
			if dirfd == -2 {
				// The directory's descriptor, for openat(2) of its files;
				// O_PATH, so a directory the restore may write to but not
				// list (an existing one of mode 0300) still has one.
				dirfd = -1
				if d, err := dir.OpenFile(".", unix.O_PATH|unix.O_DIRECTORY, 0); err == nil {
					defer d.Close()
					dirfd = int(d.Fd())
				}
			}
			if err := r.file(ctx, dir, dirfd, name, p, n); err != nil {
				return err
			}
		case format.KindSymlink:
			if !r.prepare(dir, name, p) {
				continue
			}
			if err := dir.Symlink(string(n.Target), name); err != nil {
				r.warn(Warning{Path: displayRel(p), Err: err})
				continue
			}
			r.applyMeta(p, n, nil)
		case format.KindFIFO, format.KindCharDev, format.KindBlockDev:
			if !r.prepare(dir, name, p) {
				continue
			}
			if err := r.mknod(dir, name, n); err != nil {
				r.warn(Warning{Path: displayRel(p), Err: err})
				continue
			}
			r.applyMeta(p, n, nil)
		case format.KindSocket:
		default:
			return fmt.Errorf("restore: %s: %w: unknown kind %d", displayRel(p), vault.ErrCorrupt, n.Kind)
		}
	}
	return nil
}

// dirWalkers is how many goroutines besides the first walk directories:
// creating files is the file system's work (system time), and files of
// different directories are created side by side. On ext4 without a
// journal, each new inode is found by scanning past those deleted in
// the last 30 seconds, and a restore after an rm -rf of the last one
// spent seconds there.
func dirWalkers() int { return max(2, runtime.GOMAXPROCS(0)) - 1 }

// walkDir walks the subdirectory sub (tree id, at rel) on a goroutine of
// its own when one of r.walkers is free, else on this one; it closes sub.
func (r *restorer) walkDir(ctx context.Context, id vault.ID, rel string, sub *os.Root, incl []string) error {
	select {
	case r.walkers <- struct{}{}:
		r.walking.Add(1)
		go func() {
			defer r.walking.Done()
			defer func() { <-r.walkers }()
			defer sub.Close()
			if err := r.walk(ctx, id, rel, sub, incl); err != nil {
				r.fail(err)
			}
		}()
		return nil
	default:
		defer sub.Close()
		return r.walk(ctx, id, rel, sub, incl)
	}
}

// prepare clears the way for a new non-directory entry name in dir (at
// rel). It returns false when it exists and must be left alone.
func (r *restorer) prepare(dir *os.Root, name, rel string) bool {
	fi, err := dir.Lstat(name)
	if err != nil {
		return true
	}
	if !r.opt.Overwrite {
		r.mu.Lock()
		r.skipped++
		r.mu.Unlock()
		r.warn(Warning{Path: displayRel(rel), Err: errors.New("exists, left untouched (use --overwrite)")})
		return false
	}
	if fi.IsDir() {
		err = dir.RemoveAll(name)
	} else {
		err = dir.Remove(name)
	}
	if err != nil {
		r.warn(Warning{Path: displayRel(rel), Err: err})
		return false
	}
	return true
}

func (r *restorer) mknod(dir *os.Root, name string, n *format.Node) error {
	d, err := dir.OpenFile(".", os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	mode := n.Perm & 0o777
	switch n.Kind {
	case format.KindFIFO:
		return unix.Mkfifoat(int(d.Fd()), name, mode)
	case format.KindCharDev:
		return unix.Mknodat(int(d.Fd()), name, mode|unix.S_IFCHR, int(n.RDev))
	default:
		return unix.Mknodat(int(d.Fd()), name, mode|unix.S_IFBLK, int(n.RDev))
	}
}

// firstLink is the first name restored of a hard-linked inode; its other
// names are linked to it once it is created (ready closed, ok set).
type firstLink struct {
	rel   string
	ready chan struct{}
	ok    bool
}

func (r *restorer) file(ctx context.Context, dir *os.Root, dirfd int, name, rel string, n *format.Node) error {
	r.current.Store(&rel)
	var claim *firstLink // this name is the inode's first: others wait for it
	if n.NLink > 1 {
		key := [2]uint64{n.Device, n.Inode}
		for claim == nil {
			r.hardMu.Lock()
			first := r.hard[key]
			if first == nil {
				claim = &firstLink{rel: rel, ready: make(chan struct{})}
				r.hard[key] = claim
			}
			r.hardMu.Unlock()
			if claim != nil {
				break
			}
			select {
			case <-first.ready:
			case <-ctx.Done():
				return ctx.Err()
			}
			if !first.ok {
				// The first name was not created (left alone or failed):
				// this one takes its place, as the first to be created.
				r.hardMu.Lock()
				if r.hard[key] == first {
					delete(r.hard, key)
				}
				r.hardMu.Unlock()
				continue
			}
			if !r.prepare(dir, name, rel) {
				return nil
			}
			if err := r.root.Link(first.rel, rel); err != nil {
				r.warn(Warning{Path: displayRel(rel), Err: err})
			} else {
				r.hardMu.Lock()
				r.links[first.rel] = append(r.links[first.rel], rel)
				r.hardMu.Unlock()
			}
			r.nFiles.Add(1)
			return nil
		}
		// Later links to this inode link to the file created here; never to
		// one that was there before and left untouched.
		defer close(claim.ready)
	}
	select {
	case r.files <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	f, err := r.create(dir, dirfd, name, rel)
	if f == nil {
		<-r.files
		if err != nil {
			r.warn(Warning{Path: displayRel(rel), Err: err})
		}
		return nil
	}
	if claim != nil {
		claim.ok = true
	}
	rf := &restoreFile{rel: rel, f: f, node: n, holeBlock: holeBlock(f, n.Size)}
	rf.pending.Store(1) // the walker's token
	// The chunks' sizes first: they place each chunk in the file. One
	// whose size is unknown (not in the index: damage) is placed by
	// placeRest; sizes that do not add up to the file's leave no layout.
	var sum int64
	end, sizeErr := len(n.Content), error(nil)
	for i, id := range n.Content {
		size, err := r.repo.BlobSize(vault.DataBlob, id)
		if err != nil {
			if !IsDamage(ctx, err) {
				rf.failed.Store(true)
				r.done(rf)
				return fmt.Errorf("restore %s: %w", displayRel(rel), err)
			}
			end, sizeErr = i, err
			break
		}
		sum += int64(size)
	}
	if sizeErr == nil && uint64(sum) != n.Size {
		sizeMismatch(rf, n, sum)
		r.done(rf)
		return nil
	}
	var off int64
	for _, id := range n.Content[:end] {
		size, _ := r.repo.BlobSize(vault.DataBlob, id)
		rf.pending.Add(1)
		select {
		case r.jobs <- chunkTask{file: rf, off: off, id: id, size: uint64(size)}:
		case <-ctx.Done():
			rf.failed.Store(true)
			r.done(rf)
			r.done(rf)
			return ctx.Err()
		}
		off += int64(size)
	}
	if sizeErr != nil {
		if err := r.placeRest(ctx, rf, n, end, off, sizeErr); err != nil {
			rf.failed.Store(true)
			r.done(rf)
			return err
		}
	}
	r.done(rf)
	return nil
}

// create makes the new file name in dir (whose descriptor is dirfd, or -1
// when it has none; at rel), ready to be written: nil without an error when an existing entry
// is left alone (prepare). openat(2) with O_CREAT|O_EXCL|O_NOFOLLOW on one
// validated name never follows a symlink, nor opens what was there.
// Creating first and looking only when the name exists saves an lstat
// per file, and a file made with os.NewFile is not offered to the
// runtime's poller (four fcntl calls and an epoll_ctl per file).
func (r *restorer) create(dir *os.Root, dirfd int, name, rel string) (*os.File, error) {
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if dirfd < 0 { // the directory could not be opened: through its os.Root
		if !r.prepare(dir, name, rel) {
			return nil, nil
		}
		f, err := dir.OpenFile(name, flags, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create: %w", unwrapPath(err))
		}
		return f, nil
	}
	for tries := 0; tries < 2; tries++ {
		fd, err := unix.Openat(dirfd, name, flags, 0o600)
		for err == unix.EINTR {
			fd, err = unix.Openat(dirfd, name, flags, 0o600)
		}
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), name), nil
		case err != unix.EEXIST || tries > 0:
			return nil, fmt.Errorf("create: %w", err)
		}
		if !r.prepare(dir, name, rel) {
			return nil, nil
		}
	}
	return nil, nil // not reached
}

func (r *restorer) done(rf *restoreFile) {
	if rf.pending.Add(-1) != 0 {
		return
	}
	defer func() { <-r.files }()
	switch {
	case rf.failed.Load():
	case rf.damage.any():
		r.damagedDone(rf)
	default:
		var err error
		if !rf.sized.Load() && rf.node.Size > 0 { // a trailing hole sets the size
			err = rf.f.Truncate(int64(rf.node.Size))
		}
		if err != nil {
			r.warn(Warning{Path: displayRel(rf.rel), Err: err})
		} else if r.opt.Verify {
			r.mu.Lock()
			r.written = append(r.written, writtenFile{rf.rel, rf.node})
			r.mu.Unlock()
		}
		r.applyMeta(rf.rel, rf.node, rf.f)
	}
	if err := rf.f.Close(); err != nil {
		r.warn(Warning{Path: displayRel(rf.rel), Err: err})
	}
	r.nFiles.Add(1)
}

// BatchLoader is implemented by repositories where a request per blob is
// expensive (the HTTPS client): the restorer then fetches small chunks
// many at a time.
type BatchLoader interface {
	LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error
}

// Batches of small chunks: at most this many, this many bytes, and only
// chunks up to batchBlobMax (larger ones are worth a request each).
const (
	batchCount   = 256
	batchBytes   = 8 << 20
	batchBlobMax = 256 << 10
)

func (r *restorer) worker(ctx context.Context) {
	bl, batching := r.repo.(BatchLoader)
	var buf []byte
	var batch []chunkTask
	for t := range r.jobs {
		if !batching || t.size > batchBlobMax {
			buf = r.one(ctx, t, buf)
			continue
		}
		// Take the small chunks that are ready now, without waiting.
		batch = append(batch[:0], t)
		total := t.size
		var big *chunkTask
	collect:
		for len(batch) < batchCount && total < batchBytes {
			select {
			case t2, ok := <-r.jobs:
				if !ok {
					break collect
				}
				if t2.size > batchBlobMax {
					big = &t2
					break collect
				}
				batch = append(batch, t2)
				total += t2.size
			default:
				break collect
			}
		}
		r.many(ctx, bl, batch)
		if big != nil {
			buf = r.one(ctx, *big, buf)
		}
	}
}

// one restores one chunk with its own request; it returns the buffer to
// reuse.
func (r *restorer) one(ctx context.Context, t chunkTask, buf []byte) []byte {
	if t.file.failed.Load() || ctx.Err() != nil {
		r.done(t.file)
		return buf
	}
	data, err := r.repo.LoadBlob(ctx, vault.DataBlob, t.id, buf)
	if err != nil {
		r.chunkFailed(ctx, t, err)
		r.done(t.file)
		return buf
	}
	r.put(t, data)
	if cap(data) > keepBuf {
		return nil // a rare large chunk: do not hold its buffer per worker
	}
	return data
}

// keepBuf is the largest chunk buffer a restore worker keeps for the next
// chunk: twice the average chunk, so most are reused, while the few large
// chunks (up to 8 MiB) do not leave every worker holding one.
const keepBuf = 2 << 20

// many restores a batch of small chunks with one request.
func (r *restorer) many(ctx context.Context, bl BatchLoader, batch []chunkTask) {
	todo := batch[:0:0]
	for _, t := range batch {
		if t.file.failed.Load() || ctx.Err() != nil {
			r.done(t.file)
			continue
		}
		todo = append(todo, t)
	}
	if len(todo) == 0 {
		return
	}
	ids := make([]vault.ID, len(todo))
	for i, t := range todo {
		ids[i] = t.id
	}
	next := 0
	err := bl.LoadBlobs(ctx, vault.DataBlob, ids, func(i int, data []byte) error {
		r.put(todo[i], data)
		next = i + 1
		return nil
	})
	if err == nil && next < len(todo) {
		err = fmt.Errorf("%w: %d of %d chunks came back", vault.ErrTruncated, next, len(todo))
	}
	if err != nil {
		r.batchFailed(ctx, bl, todo[next:], err)
	}
}

// put writes a loaded chunk into its file and releases the file's token.
func (r *restorer) put(t chunkTask, data []byte) {
	if uint64(len(data)) != t.size {
		r.chunkFailed(context.Background(), t, fmt.Errorf("%w: %d bytes, the index says %d", vault.ErrCorrupt, len(data), t.size))
		r.done(t.file)
		return
	}
	// Zeros stay holes, so sparse files restore sparse (sparse.go); a chunk
	// of nothing but zeros does not even take the file's lock.
	if !allZero(data) {
		t.file.writeMu.Lock()
		err := writeSparse(t.file.f, data, t.off, t.file.holeBlock)
		t.file.writeMu.Unlock()
		if err != nil {
			t.file.failed.Store(true)
			r.fail(fmt.Errorf("restore %s: %w", displayRel(t.file.rel), err))
		} else if data[len(data)-1] != 0 && uint64(t.off)+t.size == t.file.node.Size {
			// The block holding the file's last byte is not a hole: written.
			t.file.sized.Store(true)
		}
	}
	r.nBytes.Add(uint64(len(data)))
	r.done(t.file)
}

// applyMeta restores ownership, permissions, xattrs and times. f, when
// set, is the entry opened by the restore (a regular file it created, a
// directory opened without following a symlink): fd-based calls cannot
// be redirected.
func (r *restorer) applyMeta(rel string, n *format.Node, f *os.File) {
	full := filepath.Join(r.target, rel)
	if r.opt.Owners {
		var err error
		if f != nil {
			err = f.Chown(int(n.UID), int(n.GID))
		} else {
			err = r.root.Lchown(rel, int(n.UID), int(n.GID))
		}
		if err != nil {
			r.warn(Warning{Path: displayRel(rel), Err: err})
		}
	}
	if n.Kind != format.KindSymlink {
		for _, x := range n.Xattrs {
			var err error
			if f != nil {
				err = unix.Fsetxattr(int(f.Fd()), string(x.Name), x.Value, 0)
			} else {
				err = unix.Lsetxattr(full, string(x.Name), x.Value, 0)
			}
			if err != nil && !errors.Is(err, unix.ENOTSUP) {
				r.warn(Warning{Path: displayRel(rel), Err: fmt.Errorf("xattr %s: %w", x.Name, err)})
			}
		}
		mode := fs.FileMode(n.Perm & 0o777)
		if n.Perm&0o4000 != 0 {
			mode |= fs.ModeSetuid
		}
		if n.Perm&0o2000 != 0 {
			mode |= fs.ModeSetgid
		}
		if n.Perm&0o1000 != 0 {
			mode |= fs.ModeSticky
		}
		var err error
		if f != nil {
			err = f.Chmod(mode)
		} else {
			err = r.root.Chmod(rel, mode)
		}
		if err != nil {
			r.warn(Warning{Path: displayRel(rel), Err: err})
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(n.MTime), unix.NsecToTimespec(n.MTime)}
	var err error
	if f != nil {
		err = futimens(int(f.Fd()), ts)
	} else {
		err = unix.UtimesNanoAt(unix.AT_FDCWD, full, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		r.warn(Warning{Path: displayRel(rel), Err: err})
	}
}

// futimens sets an open file's times: utimensat(2) with a null path, where
// a path would be looked up again from the root, a component at a time.
func futimens(fd int, ts []unix.Timespec) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

func (r *restorer) startProgress(start time.Time) func() {
	if r.opt.Progress == nil {
		return func() {}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	snap := func() Progress {
		p := Progress{Files: r.nFiles.Load(), Dirs: r.nDirs.Load(), Bytes: r.nBytes.Load(),
			TotalFiles: r.totFiles, TotalBytes: r.totBytes, ScanDone: true, Elapsed: time.Since(start)}
		if c := r.current.Load(); c != nil {
			p.Current = "/" + *c
		}
		return p
	}
	go func() {
		defer close(done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				r.opt.Progress(snap())
			case <-stop:
				r.opt.Progress(snap())
				return
			}
		}
	}()
	return func() { close(stop); <-done }
}

// writePiece is the most a restore writes with one write(2). The kernel
// sizes page-cache folios by the write: a 1 MiB write asks for large
// folios, which must come from large free blocks of memory. On a VM that
// hands free memory back to its host those blocks are often cold, and
// filling them cost 1.2–1.5 s of system time per 746 MB on this project's
// machine, against 0.2 s in 64 KiB writes (dd, cold memory). In the
// compare.sh sequence restores of the mixed set took 0.64–1.44 s with
// 64 KiB writes and 0.61–2.05 s with one write per chunk.
const writePiece = 64 << 10

// writePieces writes data at off in pieces of at most writePiece bytes.
func writePieces(f *os.File, data []byte, off int64) error {
	for len(data) > 0 {
		n := min(len(data), writePiece)
		if _, err := f.WriteAt(data[:n], off); err != nil {
			return err
		}
		data, off = data[n:], off+int64(n)
	}
	return nil
}
