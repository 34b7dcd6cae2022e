// Package agent provides the backup agent: it walks files, chunks and
// identifies them, hands new chunks to a vault, builds trees and
// snapshots, restores snapshots safely, and compares them.
package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/chunker"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// BackupRepo is what a backup needs from a vault: the engine in-process,
// or the HTTPS client. It never exposes a data key.
type BackupRepo interface {
	Dedup() vault.DedupParams
	Has(t vault.BlobType, id vault.ID) bool
	SaveBlob(ctx context.Context, t vault.BlobType, id vault.ID, p []byte, rawLen int) (bool, error)
	Flush(ctx context.Context) error
	LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error)
	SaveSnapshot(ctx context.Context, s vault.SnapshotRecord) (vault.SnapshotRecord, error)
	Snapshots(ctx context.Context) ([]vault.SnapshotRecord, error)
	BytesAdded() uint64
}

// storedProber is the optional capability of a BackupRepo whose Has knows
// only the blobs of this backup (the HTTPS client): it asks the vault
// about many blobs at once, and each blob it reports stored stays stored
// until the snapshot is saved. A backup asks it about the chunks of the
// parent's unchanged files in batches, so that a re-run reuses them
// without reading them and without a request per file.
type storedProber interface {
	Stored(ctx context.Context, t vault.BlobType, ids []vault.ID) ([]bool, error)
}

// BackupOptions configure one backup.
type BackupOptions struct {
	Paths []string
	Tags  []string
	Host  string
	// Exclude chooses what is left out (exclude.go).
	Exclude ExcludeRules
	// SkipDirs are absolute directories never descended into (the vault's
	// own directory, so that a backup of $HOME does not read its vault).
	SkipDirs []string
	Now      func() time.Time
	// Progress is called with a snapshot of the counters about 4 times a
	// second while the backup runs, and once at the end.
	Progress func(Progress)
	// OnChunking, when set, is called once, when the first file large
	// enough to be chunked is read: from then on the backup holds chunk
	// windows and chunks in flight, which a backup of small files never
	// allocates (the command gives its heap limit room for them).
	OnChunking func()
	// Warn receives each problem that did not stop the backup.
	Warn func(Warning)
	// FileWorkers and ChunkWorkers size the pipeline (default 8 and
	// GOMAXPROCS). File workers mostly wait for the disk: many of them
	// keep reads of small files overlapping.
	FileWorkers, ChunkWorkers int
	// Scan, when set, walks the paths once more in parallel to learn the
	// totals that progress needs for an ETA.
	Scan bool
	// ParentSince: a snapshot older than this is never the parent. An
	// agent's host name is reserved from its creation on; older
	// snapshots of that host were made by other writers, and a parent's
	// unchanged files are reused without being read.
	ParentSince time.Time
	// Parent, when set, is the parent snapshot instead of the one
	// findParent picks (coffer backup --parent). It must be of Host, of
	// the repository's dedup domain and not older than ParentSince, or
	// the backup fails before it reads a file; its paths may differ.
	Parent *vault.SnapshotRecord
	// Force: no parent, so every file is read (coffer backup --force).
	Force bool
	// Stdin, when set, is backed up instead of Paths: its bytes, read to
	// the end, are one file at StdinPath (an absolute path from
	// StdinPath, which is the snapshot's one path and selects its parent).
	// A read error (such as a command that failed, coffer backup
	// --stdin-from-command) fails the backup.
	Stdin     io.Reader
	StdinPath string
	// Source, when set, reports this machine's facts about the backed-up
	// paths (the encryption of each path's volume: srcvol), sealed with
	// the snapshot (docs/format.md §8.7). It is called with the
	// snapshot's paths before the walk; a backup from stdin reports none.
	// A report that the vault's rules refuse (format.CheckSource) is
	// dropped with a warning rather than failing the backup.
	Source func(ctx context.Context, paths []string) *vault.SourceFacts
}

// Warning is a problem that did not stop a backup or restore.
type Warning struct {
	Path string
	Err  error
	// Unreadable is set when data was not saved (exit code 3).
	Unreadable bool
}

func (w Warning) String() string { return fmt.Sprintf("%s: %v", w.Path, w.Err) }

// Progress is a snapshot of a running backup, restore or check.
type Progress struct {
	Files, Dirs uint64
	Bytes       uint64 // processed
	TotalFiles  uint64 // 0 until the scan is done
	TotalBytes  uint64
	ScanDone    bool
	Current     string
	Elapsed     time.Duration
	BytesAdded  uint64
	Errors      uint64
}

// BackupResult describes a finished backup.
type BackupResult struct {
	Snapshot vault.SnapshotRecord
	Warnings []Warning
	// Unreadable counts files or directories that could not be read.
	Unreadable int
	// Reused counts files taken unchanged from the parent snapshot.
	Reused uint64
}

// Pipeline sizes: how many files are chunked at once (each chunker holds a
// window of the maximum chunk size), and how many bytes of chunks may wait
// between readers and chunk workers.
const (
	chunkers    = 2
	chunkBudget = 16 << 20
	// chunkWindow is the buffer a chunk is read into: room for nearly all
	// chunks (few exceed three times the 1 MiB average), so few are moved
	// to a larger one.
	chunkWindow = 3<<20 + 256<<10
	// maxWindows is how many idle windows are kept: as many as can be in
	// use at once (one filling in each chunker, the rest holding chunks
	// within the budget), so that a steady backup allocates none. Keeping
	// only one per chunker made the backup allocate, and the runtime zero,
	// a fresh 3.25 MiB window for most chunks.
	maxWindows = chunkers + chunkBudget/chunkWindow + 1
)

// windowAlloc gives the chunkers their buffers from the backup's pool.
type windowAlloc struct{ b *backup }

func (w windowAlloc) Alloc(n int) []byte {
	if f := w.b.opt.OnChunking; f != nil {
		w.b.chunking.Do(f)
	}
	for {
		select {
		case buf := <-w.b.windows:
			if cap(buf) >= n {
				return buf[:n]
			}
			// Too small for a chunk that outgrew its window: drop it.
		default:
			return make([]byte, n, max(n, chunkWindow))
		}
	}
}

func (w windowAlloc) Free(buf []byte) {
	select {
	case w.b.windows <- buf:
	default: // enough kept
	}
}

type backup struct {
	repo   BackupRepo
	opt    BackupOptions
	params chunker.Params
	gear   *[256]uint64
	codec  *format.Codec
	hasher *format.IDHasher
	hashMu sync.Mutex
	// trees loads the parent's trees ahead of the walk when the
	// repository reads many blobs a request (nil otherwise).
	trees *treePrefetch

	chunking  sync.Once // OnChunking
	fileJobs  chan *fileJob
	chunkJobs chan *chunkJob
	budget    *budget             // bounds chunk buffers in flight
	chunkers  chan *chunker.Owned // for files of at least the minimum chunk size
	smallBufs sync.Pool
	bigBufs   sync.Pool
	// windows keeps chunker buffers for reuse. A sync.Pool would lose
	// them at every collection, and the soft heap limit makes those
	// frequent: zeroing fresh 3 MiB buffers then cost more than the copy
	// they save.
	windows chan []byte

	err      firstError // the first fatal error (vault or context)
	warnMu   sync.Mutex
	warnings []Warning
	unread   int

	hardMu sync.Mutex
	hard   map[[2]uint64]*fileJob

	files, dirs, bytes, reused, errs atomic.Uint64
	filesDone                        atomic.Uint64 // files read (or reused) completely, for progress
	totalFiles, totalBytes           atomic.Uint64
	scanDone                         atomic.Bool
	current                          atomic.Pointer[string]
	skip                             map[string]bool
	addedBefore                      uint64
	// reuse batches the checks of unchanged files when the repository's
	// Has does not know what the vault holds (nil for a local vault).
	reuse   *reuseBatch
	exclude *excluder

	// ahead holds the listings of directories the walk enters next, read
	// by other goroutines (listAhead); aheadSlots bounds them.
	aheadMu    sync.Mutex
	ahead      map[string]*dirList
	aheadSlots chan struct{}
	aheadWG    sync.WaitGroup
}

type fileJob struct {
	path    string
	node    *format.Node
	st      *unix.Stat_t
	mu      sync.Mutex
	content []vault.ID
	pending atomic.Int64
	done    chan struct{}
	failed  atomic.Bool
	size    uint64 // bytes read, set before done closes
	// f is the file, opened by the walk when it queued the job (nil if
	// that failed: the reader opens it again and reports why).
	f *os.File
}

func (j *fileJob) closeFile() {
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
}

// prefetchMax is how much of a file the walk asks the kernel to read ahead
// when it queues the file: all of a small file, the first chunk's worth of
// a large one (sequential readahead takes over from there).
const prefetchMax = 1 << 20

// prefetch opens j's file and asks the kernel to start reading it, so that
// by the time a reader gets to it the data is (mostly) in the page cache.
//
// This matters more than it looks: a read(2) of cold data blocks in the
// kernel while holding one of the Go scheduler's Ps until the runtime's
// monitor hands that P to another thread, so with one P per core, readers
// waiting on the disk keep the chunk workers off the CPU. Measured on the
// tree set with cold data, 2 cores: 1.85 s without, 1.2–1.3 s with.
func (b *backup) prefetch(j *fileJob) {
	if j.node.Size == 0 {
		return
	}
	if j.f == nil {
		f, err := openFile(j.path)
		if err != nil {
			return
		}
		j.f = f
	}
	unix.Fadvise(int(j.f.Fd()), 0, int64(min(j.node.Size, prefetchMax)), unix.FADV_WILLNEED)
}

// openAt opens a file to back up, name being path's last element, relative
// to the open directory dfd (by path when dfd is -1), as openFile does; nil
// when it cannot be opened (the reader opens it again and says why).
func (b *backup) openAt(dfd int, path string) *os.File {
	if dfd < 0 {
		f, err := openFile(path)
		if err != nil {
			return nil
		}
		return f
	}
	name := filepath.Base(path)
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	for _, noatime := range []int{unix.O_NOATIME, 0} { // O_NOATIME needs ownership
		fd, err := unix.Openat(dfd, name, flags|noatime, 0)
		for errors.Is(err, unix.EINTR) {
			fd, err = unix.Openat(dfd, name, flags|noatime, 0)
		}
		if err == nil {
			return os.NewFile(uintptr(fd), path)
		}
		if !errors.Is(err, unix.EPERM) {
			return nil
		}
	}
	return nil
}

// openDir opens directory path to read its entries and look at them.
func openDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY, 0)
}

// openFile opens a file to back up without following a symlink and, where
// the caller owns it, without updating its access time.
func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0) // O_NOATIME needs ownership
	}
	return f, err
}

type chunkJob struct {
	file *fileJob
	idx  int
	data *[]byte
	cost int // bytes held of the budget
}

type treeFuture struct {
	done chan struct{}
	id   vault.ID
	err  error
}

// Backup runs one backup and records a snapshot.
func Backup(ctx context.Context, repo BackupRepo, opt BackupOptions) (*BackupResult, error) {
	if len(opt.Paths) == 0 && opt.Stdin == nil {
		return nil, errors.New("nothing to back up: give at least one path")
	}
	if opt.Stdin != nil {
		if len(opt.Paths) > 0 {
			return nil, errors.New("backup: standard input and paths exclude each other: back them up in two snapshots")
		}
		opt.Scan = false // nothing to walk
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.FileWorkers <= 0 {
		opt.FileWorkers = 8
	}
	if opt.ChunkWorkers <= 0 {
		opt.ChunkWorkers = runtime.GOMAXPROCS(0)
	}
	start := opt.Now()
	addedBefore := repo.BytesAdded()
	dp := repo.Dedup()
	params := chunker.Params{Min: dp.Chunker.Min, Avg: dp.Chunker.Avg, Max: dp.Chunker.Max}
	if err := params.Validate(); err != nil {
		return nil, fmt.Errorf("vault chunker parameters: %w", err)
	}
	var paths []string
	var err error
	if opt.Stdin != nil {
		// A virtual path: nothing on this machine's disk is looked at.
		p, perr := StdinPath(strings.TrimPrefix(opt.StdinPath, "/"))
		if perr != nil {
			return nil, perr
		}
		paths = []string{p}
	} else if paths, err = absPaths(opt.Paths); err != nil {
		return nil, err
	}
	ex, err := compileExcludes(opt.Exclude, opt.Paths)
	if err != nil {
		return nil, err
	}
	// The source report, before the walk: the volumes as they are while
	// the backup reads them.
	var source *vault.SourceFacts
	var sourceErr error
	if opt.Source != nil && opt.Stdin == nil {
		source = opt.Source(ctx, paths)
		if sourceErr = format.CheckSource(source, paths); sourceErr != nil {
			source = nil
		}
	}
	// What the snapshot will say is checked now, not after the upload.
	if err := format.CheckSnapshot(vault.SnapshotRecord{Time: start.UTC(), Host: opt.Host, Paths: paths, Tags: opt.Tags, Tree: vault.ID{1}}); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	b := &backup{
		repo: repo, opt: opt, params: params, gear: chunker.Gear(dp.GearSeed),
		codec: format.NewCodec(), hasher: format.NewIDHasher(dp.ChunkIDKey),
		fileJobs:    make(chan *fileJob, 64),
		chunkJobs:   make(chan *chunkJob, opt.ChunkWorkers),
		budget:      newBudget(chunkBudget),
		chunkers:    make(chan *chunker.Owned, chunkers),
		windows:     make(chan []byte, maxWindows),
		hard:        map[[2]uint64]*fileJob{},
		skip:        map[string]bool{},
		ahead:       map[string]*dirList{},
		aheadSlots:  make(chan struct{}, listAheadMax),
		addedBefore: addedBefore,
		exclude:     ex,
	}
	if sourceErr != nil {
		b.warn(Warning{Path: "(source report)", Err: fmt.Errorf("not sent: %w", sourceErr)})
	}
	for range chunkers {
		c, err := chunker.NewOwned(nil, b.gear, params, windowAlloc{b}, chunkWindow)
		if err != nil {
			return nil, err
		}
		b.chunkers <- c
	}
	for _, d := range opt.SkipDirs {
		if a, err := filepath.Abs(d); err == nil {
			b.skip[a] = true
		}
	}
	if p, ok := repo.(storedProber); ok {
		b.reuse = &reuseBatch{b: b, repo: p}
	}
	parent, err := b.chooseParent(ctx, paths)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var workers sync.WaitGroup
	for range opt.ChunkWorkers {
		workers.Add(1)
		go func() { defer workers.Done(); b.chunkWorker(ctx) }()
	}
	var readers sync.WaitGroup
	for range opt.FileWorkers {
		readers.Add(1)
		go func() { defer readers.Done(); b.fileWorker(ctx) }()
	}
	stopProgress := b.startProgress(ctx, start, paths)

	var parentRoot *format.Tree
	pctx, stopPrefetch := context.WithCancel(ctx)
	defer stopPrefetch()
	// A stream is read whole: its parent's tree is of no use.
	useParent := parent != nil && opt.Stdin == nil
	if bl, ok := repo.(BatchLoader); ok && useParent {
		b.trees = newTreePrefetch(pctx, bl, repo)
	}
	if useParent {
		if t, err := b.loadTree(ctx, parent.Tree); err == nil {
			parentRoot = t
		} else {
			b.warn(Warning{Path: "(parent snapshot " + parent.ID.Short() + ")", Err: fmt.Errorf("not used: %w", err)})
			parent = nil
		}
	}
	var rootFut *treeFuture
	if opt.Stdin != nil {
		rootFut = b.stdinTree(ctx, paths[0], start)
	} else {
		rootFut = b.virtualDir(ctx, buildVirtualRoot(paths), parentRoot)
	}
	if b.reuse != nil {
		b.reuse.flush(ctx)
	}
	<-rootFut.done
	b.aheadWG.Wait()
	if b.trees != nil {
		stopPrefetch() // what is still loading, the walk does not need
		b.trees.wait()
	}
	if b.reuse != nil {
		b.reuse.wg.Wait() // they may still queue files to read
	}
	close(b.fileJobs)
	readers.Wait()
	close(b.chunkJobs)
	workers.Wait()
	stopProgress()

	if err := b.fatal(); err != nil {
		return nil, err
	}
	if rootFut.err != nil {
		return nil, rootFut.err
	}
	b.exclude.warnUnmatched(b.warn)
	if err := repo.Flush(ctx); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	rec := vault.SnapshotRecord{
		Time: start.UTC(), Host: opt.Host, Paths: paths, Tags: opt.Tags, Tree: rootFut.id,
		Files: b.files.Load(), Dirs: b.dirs.Load(), Bytes: b.bytes.Load(),
		BytesAdded: repo.BytesAdded() - addedBefore, Duration: opt.Now().Sub(start),
		Source: source,
	}
	if parent != nil {
		rec.Parent = parent.ID
	}
	saved, err := repo.SaveSnapshot(ctx, rec)
	if err != nil && parent != nil && errors.Is(err, vault.ErrNotFound) && b.parentGone(ctx, parent.ID) {
		// The parent was forgotten and pruned while this backup ran. What
		// it reused of it is stored all the same (the vault said so, and
		// keeps it for this backup), so the snapshot stands without it;
		// a refused save recorded nothing, so saving again is safe.
		b.warn(Warning{Path: "(parent snapshot " + parent.ID.Short() + ")", Err: errors.New("deleted while this backup ran: the snapshot is saved without a parent")})
		rec.Parent = vault.ID{}
		saved, err = repo.SaveSnapshot(ctx, rec)
	}
	rec = saved
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return &BackupResult{Snapshot: rec, Warnings: b.warnings, Unreadable: b.unread, Reused: b.reused.Load()}, nil
}

func absPaths(in []string) ([]string, error) {
	var out []string
	for _, p := range in {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("path %q: %w", p, err)
		}
		if _, err := lstat(a); err != nil {
			return nil, fmt.Errorf("cannot back up %s: %w", p, err)
		}
		out = append(out, a)
	}
	sort.Strings(out)
	out = slices.Compact(out)
	// Drop paths inside other given paths: they are backed up already.
	var kept []string
	for _, p := range out {
		inside := false
		for _, k := range kept {
			if k == "/" || strings.HasPrefix(p, k+"/") {
				inside = true
				break
			}
		}
		if !inside {
			kept = append(kept, p)
		}
	}
	return kept, nil
}

// chooseParent is the backup's parent: none with Force, the one the
// options name when they do (if it may be one), else findParent's.
func (b *backup) chooseParent(ctx context.Context, paths []string) (*vault.SnapshotRecord, error) {
	p := b.opt.Parent
	switch {
	case b.opt.Force && p != nil:
		return nil, errors.New("backup: a parent and force exclude each other: force reads every file, a parent's unchanged files are not read")
	case b.opt.Force:
		return nil, nil
	case p == nil:
		return b.findParent(ctx, paths), nil
	}
	domain := ""
	if d, ok := b.repo.(interface{ Domain() string }); ok {
		domain = d.Domain()
	}
	// SECURITY: a parent's unchanged files are reused without being read,
	// so a chosen parent passes the rules findParent (and a server) apply.
	switch {
	case p.Host != b.opt.Host:
		return nil, fmt.Errorf("backup: parent snapshot %s is of host %q, not of this backup's host %q: a snapshot's parent is one of its own host", p.ID.Short(), p.Host, b.opt.Host)
	case p.Domain != domain:
		return nil, fmt.Errorf("backup: parent snapshot %s is of another source's dedup domain: a snapshot's parent is one of its own source", p.ID.Short())
	case p.Time.Before(b.opt.ParentSince):
		return nil, fmt.Errorf("backup: parent snapshot %s predates agent %s (created %s): another writer made it, so its files must not be reused", p.ID.Short(), b.opt.Host, b.opt.ParentSince.UTC().Format(time.RFC3339))
	}
	return p, nil
}

// findParent picks the newest snapshot of the same host and paths.
func (b *backup) findParent(ctx context.Context, paths []string) *vault.SnapshotRecord {
	snaps, err := b.repo.Snapshots(ctx)
	if err != nil {
		return nil
	}
	// A parent's trees are read in the repository's dedup domain, so it
	// must be a snapshot of that domain (docs/format.md §1.3).
	domain := ""
	if d, ok := b.repo.(interface{ Domain() string }); ok {
		domain = d.Domain()
	}
	var best *vault.SnapshotRecord
	for i := range snaps {
		s := &snaps[i]
		if s.Host == b.opt.Host && s.Domain == domain && slices.Equal(s.Paths, paths) && !s.Time.Before(b.opt.ParentSince) && (best == nil || s.Time.After(best.Time)) {
			best = s
		}
	}
	return best
}

// parentGone reports whether snapshot id is no longer listed (false when
// the list cannot be read).
func (b *backup) parentGone(ctx context.Context, id vault.ID) bool {
	snaps, err := b.repo.Snapshots(ctx)
	if err != nil {
		return false
	}
	return !slices.ContainsFunc(snaps, func(s vault.SnapshotRecord) bool { return s.ID == id })
}

// firstError keeps the first of the errors set on it; safe for concurrent
// use.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (b *backup) fail(err error) { b.err.set(err) }

func (b *backup) fatal() error { return b.err.get() }

func (b *backup) warn(w Warning) {
	b.warnMu.Lock()
	b.warnings = append(b.warnings, w)
	if w.Unreadable {
		b.unread++
		b.errs.Add(1)
	}
	b.warnMu.Unlock()
	if b.opt.Warn != nil {
		b.opt.Warn(w)
	}
}

// vnode is a directory on the way to a backed-up path: only the chosen
// children are listed.
type vnode struct {
	path     string
	children map[string]*vnode
	leaf     bool // a path given to backup: walk it fully
}

func buildVirtualRoot(paths []string) *vnode {
	root := &vnode{path: "/", children: map[string]*vnode{}}
	for _, p := range paths {
		if p == "/" {
			root.leaf = true
			continue
		}
		cur := root
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		for i, part := range parts {
			next := cur.children[part]
			if next == nil {
				next = &vnode{path: filepath.Join(cur.path, part), children: map[string]*vnode{}}
				cur.children[part] = next
			}
			if i == len(parts)-1 {
				next.leaf = true
			}
			cur = next
		}
	}
	return root
}

// virtualDir builds the tree of a directory on the way to the given paths.
func (b *backup) virtualDir(ctx context.Context, v *vnode, parent *format.Tree) *treeFuture {
	if v.leaf {
		return b.dir(ctx, v.path, parent, nil)
	}
	names := make([]string, 0, len(v.children))
	for n := range v.children {
		names = append(names, n)
	}
	sort.Strings(names)
	nodes := make([]format.Node, 0, len(names))
	sts := make([]*unix.Stat_t, 0, len(names))
	kept := names[:0]
	for _, name := range names {
		c := v.children[name]
		st, err := lstat(c.path)
		if err != nil {
			b.fail(err)
			f := &treeFuture{done: make(chan struct{}), err: err}
			close(f.done)
			return f
		}
		n := statNode(name, st)
		if b.exclude.excluded(c.path, &n) {
			continue // a given path (or a directory above one) excluded
		}
		kept = append(kept, name)
		nodes = append(nodes, n)
		sts = append(sts, st)
	}
	names = kept
	// nodes no longer grows: pointers into it are stable from here.
	subs := make([]*treeFuture, 0, len(names))
	for i, name := range names {
		c, n := v.children[name], &nodes[i]
		if c.leaf {
			// A path given to backup: a directory is walked fully, a file
			// or symlink saved as it is.
			subs = append(subs, b.entry(ctx, -1, c.path, n, sts[i], findNode(parent, n.Name)))
			continue
		}
		if n.Kind != format.KindDir {
			err := fmt.Errorf("%s is not a directory", c.path)
			b.fail(err)
			f := &treeFuture{done: make(chan struct{}), err: err}
			close(f.done)
			return f
		}
		if x, err := readXattrs(c.path); err == nil {
			n.Xattrs = x
		}
		var pt *format.Tree
		if pn := findNode(parent, n.Name); pn != nil && pn.Kind == format.KindDir {
			pt, _ = b.loadTree(ctx, pn.Subtree)
		}
		subs = append(subs, chainSubtree(b.virtualDir(ctx, c, pt), n))
	}
	return b.finishDir(ctx, "/", nodes, subs)
}

func findNode(t *format.Tree, name []byte) *format.Node {
	if t == nil {
		return nil
	}
	return t.Find(name)
}

// parentCursor finds the parent tree's nodes for names given in
// ascending order (a directory's sorted listing) in one pass over the
// tree, instead of a binary search for each name.
type parentCursor struct {
	nodes []format.Node
	i     int
}

func (c *parentCursor) find(name []byte) *format.Node {
	for c.i < len(c.nodes) && bytes.Compare(c.nodes[c.i].Name, name) < 0 {
		c.i++
	}
	if c.i < len(c.nodes) && bytes.Equal(c.nodes[c.i].Name, name) {
		return &c.nodes[c.i]
	}
	return nil
}

// dir walks directory path and returns a future of its tree ID. With n
// set (the directory's node in its parent's tree) it fills n's extended
// attributes from the open directory.
//
// The entries are looked at relative to the open directory (fstatat,
// openat, readlinkat): by name, one lookup each, where a path is walked
// from the root component by component. At a million files the lookups
// by absolute path were most of an unchanged re-run's CPU.
func (b *backup) dir(ctx context.Context, path string, parent *format.Tree, n *format.Node) *treeFuture {
	b.dirs.Add(1)
	l := b.takeAhead(ctx, path)
	d, err := openDir(path)
	var names []string
	var stats []statted
	if err == nil && l != nil {
		names, stats = l.names, l.stats
	} else if err == nil {
		names, err = d.Readdirnames(-1)
	}
	if err != nil {
		b.warn(Warning{Path: path, Err: err, Unreadable: true})
	}
	dfd := -1
	if d != nil {
		dfd = int(d.Fd())
	}
	if n != nil {
		var x []format.Xattr
		var xerr error
		if dfd >= 0 {
			x, xerr = readXattrsFD(dfd, path)
		} else {
			x, xerr = readXattrs(path)
		}
		if xerr != nil {
			b.warn(Warning{Path: path, Err: xerr})
		}
		n.Xattrs = x
	}
	if stats == nil {
		sort.Strings(names)
		names = b.exclude.contents(path, names)
		stats = statAll(dfd, path, names)
	}
	nodes := make([]format.Node, 0, len(names))
	type pend struct {
		idx   int
		path  string
		st    *unix.Stat_t
		mount bool         // another file system's mount point, with OneFileSystem
		prev  *format.Node // the parent snapshot's node of the same name
	}
	todo := make([]pend, 0, len(names))
	var prev parentCursor
	if parent != nil {
		prev.nodes = parent.Nodes
	}
	for i, name := range names {
		if ctx.Err() != nil {
			break
		}
		p := filepath.Join(path, name)
		if !format.ValidName([]byte(name)) {
			b.warn(Warning{Path: p, Err: errors.New("name cannot be stored, skipped"), Unreadable: true})
			continue
		}
		st, err := stats[i].st, stats[i].err
		if st == nil && err == nil {
			st, err = fstatat(dfd, name, p)
		}
		if err != nil {
			// Gone already: no warning if it was excluded anyway.
			if !b.exclude.match(p, false) && !b.exclude.match(p, true) {
				b.warn(Warning{Path: p, Err: err, Unreadable: true})
			}
			continue
		}
		n := statNode(name, st)
		if b.exclude.excluded(p, &n) {
			continue
		}
		mount := b.exclude.foreign(st)
		if mount && n.Kind != format.KindDir {
			continue // a file mounted over another: not this file system's
		}
		if n.Kind == format.KindSocket {
			b.warn(Warning{Path: p, Err: errors.New("socket skipped")})
			continue
		}
		if n.Kind == format.KindDir && b.skip[p] {
			continue
		}
		nodes = append(nodes, n)
		todo = append(todo, pend{len(nodes) - 1, p, st, mount, prev.find(n.Name)})
	}
	// Which entries are directories, read once now: once a file's entry
	// is handed to the workers, they may change its node (a file that
	// fails is dropped) while this goroutine goes on.
	isDir := make([]bool, len(todo))
	for i, t := range todo {
		isDir[i] = nodes[t.idx].Kind == format.KindDir
	}
	// The first subdirectory is listed while the other entries are
	// looked at, each next one while the one before is walked.
	nextDir := func(from int) {
		for i := from; i < len(todo); i++ {
			if isDir[i] && !todo[i].mount {
				b.listAhead(ctx, todo[i].path)
				return
			}
		}
	}
	nextDir(0)
	// nodes no longer grows: pointers into it are stable from here.
	// Everything but subdirectories first, through the open directory;
	// then it is closed, so that a deep tree holds no descriptor per
	// level while its subdirectories are walked.
	subs := make([]*treeFuture, len(todo))
	for i, t := range todo {
		if isDir[i] {
			continue
		}
		subs[i] = b.entry(ctx, dfd, t.path, &nodes[t.idx], t.st, t.prev)
	}
	if d != nil {
		d.Close()
		d = nil
	}
	for i, t := range todo {
		if !isDir[i] {
			continue
		}
		if t.mount {
			subs[i] = b.mountPoint(ctx, t.path, &nodes[t.idx])
			continue
		}
		nextDir(i + 1)
		subs[i] = b.entry(ctx, -1, t.path, &nodes[t.idx], t.st, t.prev)
	}
	return b.finishDir(ctx, path, nodes, subs)
}

// statted is the lstat of one directory entry, taken ahead (both nil:
// not taken, the walk takes it itself).
type statted struct {
	st  *unix.Stat_t
	err error
}

// parallelStatMin is the fewest entries of a directory whose lstat calls
// are shared with a second goroutine: below it, starting one costs more
// than it saves.
const parallelStatMin = 64

// listAheadMax bounds the directory listings read ahead of the walk and
// not yet taken by it.
const listAheadMax = 2

// dirList is a directory's listing read ahead of the walk: its names,
// sorted and as the excluder keeps them, and their lstat results.
type dirList struct {
	listed chan struct{} // closed once names (and ok) are set
	done   chan struct{} // closed once every lstat is taken
	names  []string
	stats  []statted
	ok     bool // false: the walk lists the directory itself
	d      *os.File
	next   atomic.Int64 // the next entry to claim, in blocks of statBlock
	refs   atomic.Int32 // goroutines taking lstat results; the last closes d
}

// listAhead starts reading the listing of directory path, which the walk
// enters soon, in another goroutine, unless listAheadMax listings are
// read or held already. So an unchanged re-run, whose walk is mostly
// these system calls and the comparison with the parent's trees, uses a
// second core. Nothing is reported from here: on any error the walk lists
// the directory itself and reports what it finds, in its order.
func (b *backup) listAhead(ctx context.Context, path string) {
	select {
	case b.aheadSlots <- struct{}{}:
	default:
		return
	}
	l := &dirList{listed: make(chan struct{}), done: make(chan struct{})}
	b.aheadMu.Lock()
	if _, ok := b.ahead[path]; ok {
		b.aheadMu.Unlock()
		<-b.aheadSlots
		return
	}
	b.ahead[path] = l
	b.aheadMu.Unlock()
	l.refs.Store(1)
	b.aheadWG.Add(1)
	go func() {
		defer b.aheadWG.Done()
		fail := func() {
			l.refs.Store(0)
			close(l.listed)
			close(l.done)
		}
		if ctx.Err() != nil {
			fail()
			return
		}
		d, err := openDir(path)
		if err != nil {
			fail()
			return
		}
		names, err := d.Readdirnames(-1)
		if err != nil {
			d.Close()
			fail()
			return
		}
		sort.Strings(names)
		l.names = b.exclude.contents(path, names)
		l.stats = make([]statted, len(l.names))
		l.d, l.ok = d, true
		close(l.listed)
		l.work(ctx, path)
		l.leave()
	}()
}

// work takes lstat results of l's entries, a block at a time, until none
// is left to claim (or ctx is done: the walk takes those left itself).
func (l *dirList) work(ctx context.Context, path string) {
	dfd := int(l.d.Fd())
	for ctx.Err() == nil {
		lo := int(l.next.Add(statBlock)) - statBlock
		if lo >= len(l.names) {
			return
		}
		for i := lo; i < min(lo+statBlock, len(l.names)); i++ {
			if format.ValidName([]byte(l.names[i])) {
				l.stats[i].st, l.stats[i].err = fstatatName(dfd, l.names[i], path)
			}
		}
	}
}

// join counts one more goroutine taking l's lstat results, unless the
// last one has left already (false).
func (l *dirList) join() bool {
	for {
		r := l.refs.Load()
		if r == 0 {
			return false
		}
		if l.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// leave ends a join (or the reading goroutine's own share); the last to
// leave closes the directory and l.done.
func (l *dirList) leave() {
	if l.refs.Add(-1) == 0 {
		l.d.Close()
		close(l.done)
	}
}

// takeAhead returns the listing of directory path read ahead, or nil when
// there is none (or it failed). When its entries are still being looked
// at, the walk takes its share of them.
func (b *backup) takeAhead(ctx context.Context, path string) *dirList {
	b.aheadMu.Lock()
	l := b.ahead[path]
	delete(b.ahead, path)
	b.aheadMu.Unlock()
	if l == nil {
		return nil
	}
	<-l.listed
	if l.ok && l.join() {
		l.work(ctx, path)
		l.leave()
	}
	<-l.done
	<-b.aheadSlots
	if !l.ok {
		return nil
	}
	return l
}

// statBlock is how many entries each goroutine of statAll claims at a time.
const statBlock = 16

// statAll takes the lstat of names in the open directory dfd (path), in
// two goroutines for a large directory: the caller's and another claim
// blocks of entries in turn, so that an unchanged re-run, whose time is
// mostly these calls and the comparison with the parent's trees, uses a
// second core. Nothing is reported here: the walk goes through the
// results in name order, reporting each error where it did before. Names
// that cannot be stored are not looked at. For a small directory, or one
// not open, every result is left empty (the walk takes each lstat
// itself).
func statAll(dfd int, path string, names []string) []statted {
	out := make([]statted, len(names))
	if dfd < 0 || len(names) < parallelStatMin {
		return out
	}
	var next atomic.Int64
	work := func() {
		for {
			lo := int(next.Add(statBlock)) - statBlock
			if lo >= len(names) {
				return
			}
			for i := lo; i < min(lo+statBlock, len(names)); i++ {
				if !format.ValidName([]byte(names[i])) {
					continue
				}
				out[i].st, out[i].err = fstatatName(dfd, names[i], path)
			}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		work()
	}()
	work()
	<-done
	return out
}

// entry starts the work for one directory entry; the future resolves when
// the node is complete (a dir's subtree saved, a file's chunks stored).
// dfd is the open directory holding it (-1: none, path is used); prev is
// the parent snapshot's node of the same name (nil: none).
func (b *backup) entry(ctx context.Context, dfd int, path string, n *format.Node, st *unix.Stat_t, prev *format.Node) *treeFuture {
	if n.Kind == format.KindDir {
		// Its attributes are read from the directory once open.
		var pt *format.Tree
		if pn := prev; pn != nil && pn.Kind == format.KindDir {
			if t, err := b.loadTree(ctx, pn.Subtree); err == nil {
				pt = t
			}
		}
		return chainSubtree(b.dir(ctx, path, pt, n), n)
	}
	var pn *format.Node
	if n.Kind == format.KindFile {
		pn = prev
		if pn != nil && !sameFile(pn, n) {
			pn = nil
		}
	}
	var f *os.File
	switch {
	case pn != nil:
		// Unchanged since the parent: same inode, size, modification and
		// change time. Setting or removing an extended attribute (an ACL
		// is one) changes the change time, so the parent's are these
		// file's, and are not listed again.
		n.Xattrs = pn.Xattrs
	case n.Kind == format.KindFile && n.Size > 0:
		// Read soon: opened now, and its attributes read through it.
		f = b.openAt(dfd, path)
		if f != nil {
			x, err := readXattrsFD(int(f.Fd()), path)
			if err != nil {
				b.warn(Warning{Path: path, Err: err})
			}
			n.Xattrs = x
			break
		}
		fallthrough
	default:
		x, err := readXattrs(path)
		if err != nil {
			b.warn(Warning{Path: path, Err: err})
		}
		n.Xattrs = x
	}
	switch n.Kind {
	case format.KindSymlink:
		// The record's Files counts every entry that is not a directory,
		// so that Files+Dirs bound what a restore of it walks (MaxEntries).
		b.files.Add(1)
		target, err := readlinkAt(dfd, n.Name, path)
		if err != nil {
			b.warn(Warning{Path: path, Err: err, Unreadable: true})
		}
		n.Target = []byte(target)
		return nil
	case format.KindFile:
		b.files.Add(1)
		if pn != nil {
			if b.reuse != nil && len(pn.Content) > 0 {
				return b.reuse.add(ctx, path, n, st, pn.Content)
			}
			if b.stored(pn.Content) {
				b.reuseFile(n, pn.Content)
				return nil
			}
		}
		return b.readLater(ctx, path, n, st, f, make(chan struct{}))
	default: // FIFOs and devices: entries a restore creates, counted as files
		b.files.Add(1)
		return nil
	}
}

// loadTree loads a tree of the parent snapshot.
func (b *backup) loadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	if b.trees != nil {
		return b.trees.load(ctx, id)
	}
	return b.repo.LoadTree(ctx, id)
}

// reuseFile takes file node n's content from its parent node, unread.
func (b *backup) reuseFile(n *format.Node, content []vault.ID) {
	n.Content = content
	b.bytes.Add(n.Size)
	b.reused.Add(1)
	b.filesDone.Add(1)
}

// readLater queues file n to be read; done closes when its node is
// complete (or dropped).
//
// f, when set, is the file opened already (readLater owns it).
func (b *backup) readLater(ctx context.Context, path string, n *format.Node, st *unix.Stat_t, f *os.File, done chan struct{}) *treeFuture {
	j := &fileJob{path: path, node: n, st: st, done: done, f: f}
	if n.NLink > 1 {
		key := [2]uint64{n.Device, n.Inode}
		b.hardMu.Lock()
		first := b.hard[key]
		if first == nil {
			b.hard[key] = j
		}
		b.hardMu.Unlock()
		if first != nil {
			j.closeFile() // the first link's job reads the content
			go func() {
				<-first.done
				// One inode, one content: link nodes share the first's.
				// Read from the job, not its node: the first's directory
				// may be building its tree from its nodes by now.
				if first.failed.Load() {
					j.node.Kind = 0
				} else {
					j.node.Content = first.content
					j.node.Size = first.size
					// The record's Bytes is the logical size of every
					// file in the tree, links included, as the server
					// counts it (engine.CheckCounts).
					b.bytes.Add(first.size)
				}
				b.filesDone.Add(1)
				close(j.done)
			}()
			return &treeFuture{done: j.done}
		}
	}
	b.prefetch(j)
	select {
	case b.fileJobs <- j:
	case <-ctx.Done():
		j.closeFile()
		j.node.Kind = 0
		close(j.done)
	}
	return &treeFuture{done: j.done}
}

// chainSubtree resolves when sub does, copying the subtree ID into n.
func chainSubtree(sub *treeFuture, n *format.Node) *treeFuture {
	out := &treeFuture{done: make(chan struct{})}
	go func() {
		<-sub.done
		n.Subtree = sub.id
		out.err = sub.err
		close(out.done)
	}()
	return out
}

// sameFile reports whether a file node equals its parent-snapshot node in
// everything that signals a change.
func sameFile(old, cur *format.Node) bool {
	return old.Kind == format.KindFile && old.Size == cur.Size && old.MTime == cur.MTime &&
		old.CTime == cur.CTime && old.Inode == cur.Inode
}

// stored reports whether the repository holds every chunk of content.
func (b *backup) stored(content []vault.ID) bool {
	for _, id := range content {
		if !b.repo.Has(vault.DataBlob, id) {
			return false
		}
	}
	return true
}

// finishDir waits for a directory's children and saves its tree.
func (b *backup) finishDir(ctx context.Context, path string, nodes []format.Node, subs []*treeFuture) *treeFuture {
	f := &treeFuture{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for _, s := range subs {
			if s == nil {
				continue
			}
			select {
			case <-s.done:
			case <-ctx.Done():
				f.err = ctx.Err()
				return
			}
			if s.err != nil && f.err == nil {
				f.err = s.err
			}
		}
		if f.err != nil {
			return
		}
		// Drop entries that could not be saved (marked with kind 0), in
		// place: every worker that could change a node has finished.
		kept := nodes[:0]
		for _, n := range nodes {
			if n.Kind != 0 {
				kept = append(kept, n)
			}
		}
		t := &format.Tree{Nodes: kept}
		id, err := b.saveTree(ctx, t)
		if err != nil {
			f.err = fmt.Errorf("save tree of %s: %w", path, err)
			b.fail(f.err)
			return
		}
		f.id = id
	}()
	return f
}

func (b *backup) saveTree(ctx context.Context, t *format.Tree) (vault.ID, error) {
	bp := treeBufs.Get().(*[]byte)
	defer treeBufs.Put(bp)
	enc, err := format.EncodeTree((*bp)[:0], t)
	if err != nil {
		return vault.ID{}, err
	}
	*bp = enc
	b.hashMu.Lock()
	id := b.hasher.ID(enc)
	b.hashMu.Unlock()
	if b.repo.Has(vault.TreeBlob, id) {
		return id, nil
	}
	_, err = b.repo.SaveBlob(ctx, vault.TreeBlob, id, b.codec.Encode(nil, enc), len(enc))
	return id, err
}

// treeBufs holds encoding buffers for saveTree: a tree is encoded to find
// its ID even when it is stored already (every directory of a re-run),
// and growing a new buffer each time was a sixth of what a re-run of a
// million unchanged files allocated.
var treeBufs = sync.Pool{New: func() any { return new([]byte) }}

// fileWorker reads files, handing their chunks to the chunk workers. Many
// run at once so that reads of small files overlap on disk; only files of
// at least the chunker's minimum size need one of the few chunkers.
func (b *backup) fileWorker(ctx context.Context) {
	for j := range b.fileJobs {
		if ctx.Err() != nil {
			j.closeFile()
			j.node.Kind = 0
			close(j.done)
			continue
		}
		b.readFile(ctx, j)
	}
}

func (b *backup) readFile(ctx context.Context, j *fileJob) {
	p := j.path
	b.current.Store(&p)
	j.pending.Store(1) // the reader's own token
	defer b.release(j)
	f, err := j.f, error(nil)
	j.f = nil
	if f == nil {
		f, err = openFile(j.path)
	}
	if err != nil {
		j.failed.Store(true)
		b.warn(Warning{Path: j.path, Err: err, Unreadable: true})
		return
	}
	defer f.Close()
	var size uint64
	if j.node.Size < uint64(b.params.Min) {
		size, err = b.readSmall(ctx, j, f)
	} else {
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
		size, err = b.readChunked(ctx, j, f, 0)
	}
	if err != nil {
		j.failed.Store(true)
		if ctx.Err() == nil {
			b.warn(Warning{Path: j.path, Err: err, Unreadable: true})
		}
		return
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err == nil {
		if uint64(st.Size) != size || st.Mtim.Nano() != j.node.MTime || st.Ctim.Nano() != j.node.CTime {
			b.warn(Warning{Path: j.path, Err: errors.New("file changed while it was read; the snapshot holds what was read")})
			j.node.MTime = st.Mtim.Nano()
			j.node.CTime = st.Ctim.Nano()
		}
	}
	j.node.Size = size
}

// readSmall reads a file smaller than the minimum chunk size in one go: it
// is one chunk, and needs no chunker. A file that has grown past its
// listed size meanwhile goes on through a chunker.
func (b *backup) readSmall(ctx context.Context, j *fileJob, f *os.File) (uint64, error) {
	want := int(j.node.Size) + 1 // one byte more, to notice growth
	if !b.budget.acquire(ctx, want+1) {
		return 0, ctx.Err()
	}
	buf := b.getBuf(want + 1)
	*buf = (*buf)[:want+1]
	n, err := io.ReadFull(f, (*buf)[1:])
	switch {
	case err == nil: // grew: chunk what was read and the rest
		prefix := bytes.Clone((*buf)[1:])
		b.putBuf(buf, want+1)
		return b.readChunked(ctx, j, io.MultiReader(bytes.NewReader(prefix), f), 0)
	case err != io.EOF && err != io.ErrUnexpectedEOF:
		b.putBuf(buf, want+1)
		return 0, err
	case n == 0:
		b.putBuf(buf, want+1)
		return 0, nil
	}
	*buf = (*buf)[:n+1]
	b.bytes.Add(uint64(n))
	b.dispatch(j, 0, buf, want+1)
	return uint64(n), nil
}

// readChunked splits r into chunks with one of the backup's chunkers.
func (b *backup) readChunked(ctx context.Context, j *fileJob, r io.Reader, first int) (uint64, error) {
	var c *chunker.Owned
	select {
	case c = <-b.chunkers:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { b.chunkers <- c }()
	c.Reset(r)
	var size uint64
	for idx := first; ; idx++ {
		// Each chunk comes in a buffer of its own, with a byte of headroom
		// for the blob's encoding byte: nothing is copied on its way to
		// the pack (a raw chunk is sealed where it lies).
		buf, err := c.Next()
		if err == io.EOF {
			return size, nil
		}
		if err != nil {
			return size, err
		}
		n := len(buf) - chunker.Headroom
		size += uint64(n)
		b.bytes.Add(uint64(n))
		if !b.budget.acquire(ctx, cap(buf)) {
			windowAlloc{b}.Free(buf)
			return size, ctx.Err()
		}
		b.dispatch(j, idx, &buf, cap(buf))
	}
}

// dispatch hands chunk idx of j (in buf, with a byte of headroom) to the
// chunk workers; cost is what it holds of the budget.
func (b *backup) dispatch(j *fileJob, idx int, buf *[]byte, cost int) {
	j.mu.Lock()
	j.content = append(j.content, vault.ID{})
	j.mu.Unlock()
	j.pending.Add(1)
	b.chunkJobs <- &chunkJob{file: j, idx: idx, data: buf, cost: cost}
}

// release drops one token of j; the last one completes the file.
func (b *backup) release(j *fileJob) {
	if j.pending.Add(-1) != 0 {
		return
	}
	if j.failed.Load() {
		j.node.Kind = 0 // not saved: finishDir drops it
	} else {
		j.node.Content = j.content
		j.size = j.node.Size
	}
	b.filesDone.Add(1)
	close(j.done)
}

// Chunk buffers come from two pools: small files need little, and a
// chunker's chunks are about the average chunk size.
const smallBuf = 64 << 10

func (b *backup) getBuf(n int) *[]byte {
	pool, size := &b.bigBufs, max(n, b.params.Avg+1)
	if n <= smallBuf {
		pool, size = &b.smallBufs, smallBuf
	}
	if p, ok := pool.Get().(*[]byte); ok && cap(*p) >= n {
		return p
	}
	s := make([]byte, 0, size)
	return &s
}

func (b *backup) putBuf(p *[]byte, cost int) {
	if cap(*p) >= chunkWindow {
		windowAlloc{b}.Free(*p)
	} else if cap(*p) <= smallBuf {
		b.smallBufs.Put(p)
	} else {
		b.bigBufs.Put(p)
	}
	b.budget.release(cost)
}

// budget bounds the bytes of chunk buffers in flight between the readers
// and the chunk workers.
type budget struct {
	mu   sync.Mutex
	cond sync.Cond
	used int
	max  int
}

func newBudget(max int) *budget {
	b := &budget{max: max}
	b.cond.L = &b.mu
	return b
}

// acquire waits until n bytes fit (always when nothing is held, so one
// oversized chunk still passes); false when ctx ends first.
func (b *budget) acquire(ctx context.Context, n int) bool {
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.used > 0 && b.used+n > b.max {
		if ctx.Err() != nil {
			return false
		}
		b.cond.Wait()
	}
	b.used += n
	return true
}

func (b *budget) release(n int) {
	b.mu.Lock()
	b.used -= n
	b.cond.Broadcast()
	b.mu.Unlock()
}

// chunkWorker identifies, compresses and stores chunks.
func (b *backup) chunkWorker(ctx context.Context) {
	h := b.hasher.Clone()
	var enc []byte
	for cj := range b.chunkJobs {
		data := (*cj.data)[1:]
		id := h.ID(data)
		if !b.repo.Has(vault.DataBlob, id) && b.fatal() == nil {
			p := b.codec.EncodeFramed(enc, *cj.data)
			if len(p) > 0 && &p[0] != &(*cj.data)[0] {
				enc = p // keep the grown compression buffer
			}
			if _, err := b.repo.SaveBlob(ctx, vault.DataBlob, id, p, len(data)); err != nil {
				b.fail(fmt.Errorf("store chunk of %s: %w", cj.file.path, err))
				cj.file.failed.Store(true)
			}
		}
		cj.file.mu.Lock()
		cj.file.content[cj.idx] = id
		cj.file.mu.Unlock()
		b.putBuf(cj.data, cj.cost)
		b.release(cj.file)
	}
}

func (b *backup) startProgress(ctx context.Context, start time.Time, paths []string) func() {
	if b.opt.Progress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	if b.opt.Scan {
		go b.scan(ctx, paths, stop)
	}
	snap := func() Progress {
		p := Progress{Files: b.filesDone.Load(), Dirs: b.dirs.Load(), Bytes: b.bytes.Load(),
			TotalFiles: b.totalFiles.Load(), TotalBytes: b.totalBytes.Load(), ScanDone: b.scanDone.Load(),
			Elapsed: time.Since(start), BytesAdded: b.repo.BytesAdded() - b.addedBefore, Errors: b.errs.Load()}
		if c := b.current.Load(); c != nil {
			p.Current = *c
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
				b.opt.Progress(snap())
			case <-stop:
				b.opt.Progress(snap())
				return
			}
		}
	}()
	return func() { close(stop); <-done }
}

// scan counts files and bytes for the ETA.
func (b *backup) scan(ctx context.Context, paths []string, stop chan struct{}) {
	for _, root := range paths {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			select {
			case <-stop:
				return filepath.SkipAll
			default:
			}
			if err != nil || ctx.Err() != nil {
				return nil
			}
			if b.exclude.match(p, d.IsDir()) || (d.IsDir() && b.skip[p]) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					b.totalFiles.Add(1)
					b.totalBytes.Add(uint64(fi.Size()))
				}
			}
			return nil
		})
	}
	b.scanDone.Store(true)
}
