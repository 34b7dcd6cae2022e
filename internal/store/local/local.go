// Package local is a vault.Store in a local directory.
//
// Layout:
//
//	DIR/config
//	DIR/keys/<name>
//	DIR/snapshots/<name>
//	DIR/packs/<first two characters of name>/<name>
//
// Put writes a ".tmp-" file in the object's final directory, syncs and
// closes it, publishes it under its final name without ever replacing an
// existing file (renameat2 with RENAME_NOREPLACE on Linux, link and unlink
// where that is unsupported) and syncs the directory. A crash at any point
// leaves either the complete object or at most a ".tmp-" file, which List
// ignores and RemoveStaleTemp deletes. Files are created 0600, directories
// 0700.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/store"
	"github.com/coffer-backup/coffer/internal/vault"
)

var _ vault.Store = (*Store)(nil)

// tempPrefix starts the name of every file Put has not published yet.
// store.CheckHandle rejects names starting with a dot, so no object can
// collide with a temp file.
const tempPrefix = ".tmp-"

// Store is a vault.Store in a directory, safe for concurrent use by several
// goroutines and several processes.
type Store struct {
	dir string

	// dirs holds the directories this Store has created or found, and
	// whose entry in their parent it has synced: string → struct{}.
	dirs sync.Map

	// noRenameat2 is set once renameat2(RENAME_NOREPLACE) proved
	// unsupported, and by tests to exercise the link fallback.
	noRenameat2 atomic.Bool

	// dropReads: see DropReadCache.
	dropReads atomic.Bool

	// beforePublish, when set (by tests), runs after the temp file is
	// written and closed and before it is published; an error fails Put.
	beforePublish func(tmp, final string) error
}

// Open opens the store in dir, creating dir (mode 0700) if it is missing.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open store: empty path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		if err := fsutil.SyncDir(filepath.Dir(abs)); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("open store: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("open store %s: not a directory", abs)
	}
	s := &Store{dir: abs}
	s.dirs.Store(abs, struct{}{})
	return s, nil
}

// Path returns the store's directory as an absolute path.
func (s *Store) Path() string { return s.dir }

// paths returns the directory holding h and h's file.
func (s *Store) paths(h vault.Handle) (dir, file string, err error) {
	if err := store.CheckHandle(h); err != nil {
		return "", "", err
	}
	switch h.Type {
	case vault.ConfigObject:
		dir = s.dir
	case vault.PackObject:
		dir = filepath.Join(s.dir, string(vault.PackObject), h.Name[:2])
	default:
		dir = filepath.Join(s.dir, string(h.Type))
	}
	return dir, filepath.Join(dir, h.Name), nil
}

// Put stores size bytes read from rd under h, durably; see the package
// documentation. If h exists Put fails with vault.ErrExists, usually
// without reading rd.
func (s *Store) Put(ctx context.Context, h vault.Handle, rd io.Reader, size int64) error {
	if err := s.put(ctx, h, rd, size); err != nil {
		return fmt.Errorf("put %s: %w", h, err)
	}
	return nil
}

func (s *Store) put(ctx context.Context, h vault.Handle, rd io.Reader, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, final, err := s.paths(h)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	// Fail early rather than write a large pack in vain; publish is what
	// guarantees write-once.
	if _, err := os.Lstat(final); err == nil {
		return vault.ErrExists
	}
	if err := s.ensureDir(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tempPrefix+"*") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	published := false
	defer func() {
		if !published {
			_ = f.Close() // harmless if already closed
			_ = os.Remove(tmp)
		}
	}()

	if _, err := store.CopyExact(ctx, f, rd, size); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if s.beforePublish != nil {
		if err := s.beforePublish(tmp, final); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.publish(tmp, final); err != nil {
		return err
	}
	published = true
	// Once published the object is visible, so a failure here leaves it in
	// place: it is complete, only its directory entry may not be durable.
	return fsutil.SyncDir(dir)
}

// linkPublish publishes tmp as final with a hard link, which fails if final
// exists, and removes tmp. A tmp left behind by a failed removal is a
// harmless extra link to the published object.
func linkPublish(tmp, final string) error {
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return vault.ErrExists
		}
		return err
	}
	_ = os.Remove(tmp)
	return nil
}

// ensureDir creates dir (and its parents up to the store's directory) if
// needed, and syncs its parent so that its entry is durable. It syncs
// even when dir exists: another goroutine or process may have created it
// and not yet synced. This happens once per directory per Store.
func (s *Store) ensureDir(dir string) error {
	if _, ok := s.dirs.Load(dir); ok {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := s.ensureDir(parent); err != nil { // stops at s.dir, stored by Open
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := fsutil.SyncDir(parent); err != nil {
		return err
	}
	s.dirs.Store(dir, struct{}{})
	return nil
}

// Get returns length bytes of h starting at offset; length < 0 means to the
// end. A range past the end yields fewer bytes. The returned reader holds
// the file open until it is closed.
func (s *Store) Get(ctx context.Context, h vault.Handle, offset, length int64) (io.ReadCloser, error) {
	rc, err := s.get(ctx, h, offset, length)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", h, err)
	}
	return rc, nil
}

func (s *Store) get(ctx context.Context, h vault.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	_, file, err := s.paths(h)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("negative offset %d", offset)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, notFound(err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", file)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	size := fi.Size()
	n := size - offset
	switch {
	case offset >= size:
		n = 0
	case length >= 0 && length < n:
		n = length
	}
	r := &sectionReadCloser{SectionReader: io.NewSectionReader(f, offset, n), f: f}
	if s.dropReads.Load() {
		r.drop, r.off, r.n = true, offset, n
	}
	return r, nil
}

// DropReadCache sets whether the pages a Get read are dropped from the
// kernel's page cache when its reader is closed. Commands that read most
// of the store once (restore, check --read-data) set it: the pack data
// would otherwise push the user's working set out of memory, and the
// pages freed are reused at once for the files being restored.
func (s *Store) DropReadCache(on bool) { s.dropReads.Store(on) }

type sectionReadCloser struct {
	*io.SectionReader
	f      *os.File
	drop   bool
	off, n int64
}

func (r *sectionReadCloser) Close() error {
	if r.drop && r.n > 0 {
		dropPages(r.f, r.off, r.n)
	}
	return r.f.Close()
}

// notFound maps a missing file to vault.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return vault.ErrNotFound
	}
	return err
}

// Stat returns the size of h.
func (s *Store) Stat(ctx context.Context, h vault.Handle) (vault.ObjectInfo, error) {
	oi, err := s.stat(ctx, h)
	if err != nil {
		return vault.ObjectInfo{}, fmt.Errorf("stat %s: %w", h, err)
	}
	return oi, nil
}

func (s *Store) stat(ctx context.Context, h vault.Handle) (vault.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return vault.ObjectInfo{}, err
	}
	_, file, err := s.paths(h)
	if err != nil {
		return vault.ObjectInfo{}, err
	}
	fi, err := os.Lstat(file)
	if err != nil {
		return vault.ObjectInfo{}, notFound(err)
	}
	if !fi.Mode().IsRegular() {
		return vault.ObjectInfo{}, fmt.Errorf("%s: not a regular file", file)
	}
	return vault.ObjectInfo{Handle: h, Size: fi.Size()}, nil
}

// List calls fn for every object of type t, in no set order. It skips temp
// files and anything else that is not a regular file under a valid name in
// its proper place. fn may call the store; objects added or removed during
// List may or may not be reported. An error from fn is returned unchanged.
func (s *Store) List(ctx context.Context, t vault.ObjectType, fn func(vault.ObjectInfo) error) error {
	return store.List(ctx, t, fn, s.list)
}

func (s *Store) list(ctx context.Context, t vault.ObjectType, fn func(vault.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch t {
	case vault.ConfigObject:
		h := vault.Handle{Type: t, Name: "config"}
		fi, err := os.Lstat(filepath.Join(s.dir, h.Name))
		if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.Mode().IsRegular()) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(vault.ObjectInfo{Handle: h, Size: fi.Size()})
	case vault.SnapshotObject, vault.KeyObject:
		return s.listDir(ctx, t, filepath.Join(s.dir, string(t)), "", fn)
	case vault.PackObject:
		root := filepath.Join(s.dir, string(t))
		subs, err := readDir(root)
		if err != nil {
			return err
		}
		for _, sub := range subs {
			if !sub.IsDir() || len(sub.Name()) != 2 || strings.HasPrefix(sub.Name(), ".") {
				continue
			}
			if err := s.listDir(ctx, t, filepath.Join(root, sub.Name()), sub.Name(), fn); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%w: unknown object type %q", store.ErrInvalidHandle, t)
}

// listDir reports the objects of type t in dir whose names start with
// prefix.
func (s *Store) listDir(ctx context.Context, t vault.ObjectType, dir, prefix string, fn func(vault.ObjectInfo) error) error {
	entries, err := readDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		h := vault.Handle{Type: t, Name: e.Name()}
		if !e.Type().IsRegular() || !strings.HasPrefix(h.Name, prefix) || store.CheckHandle(h) != nil {
			continue // temp files start with a dot and fail CheckHandle
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since readDir
		}
		if err != nil {
			return err
		}
		if err := fn(vault.ObjectInfo{Handle: h, Size: fi.Size()}); err != nil {
			return err
		}
	}
	return nil
}

// readDir is os.ReadDir with a missing directory read as empty.
func readDir(dir string) ([]os.DirEntry, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return entries, err
}

// Delete removes h and syncs its directory.
func (s *Store) Delete(ctx context.Context, h vault.Handle) error {
	if err := s.delete(ctx, h); err != nil {
		return fmt.Errorf("delete %s: %w", h, err)
	}
	return nil
}

func (s *Store) delete(ctx context.Context, h vault.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, file, err := s.paths(h)
	if err != nil {
		return err
	}
	if err := os.Remove(file); err != nil {
		return notFound(err)
	}
	return fsutil.SyncDir(dir)
}

// Close does nothing: a Store holds no resources between calls.
func (s *Store) Close() error { return nil }

// RemoveStaleTemp deletes the temp files, left by crashed or killed Puts,
// last modified more than olderThan ago, and returns how many it deleted.
// A Put still writing its temp file keeps it fresh, but one stalled for
// longer than olderThan loses it and fails, without harm to the store; so
// choose olderThan well above the longest stall, say an hour.
func (s *Store) RemoveStaleTemp(olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	dirs := []string{
		s.dir,
		filepath.Join(s.dir, string(vault.SnapshotObject)),
		filepath.Join(s.dir, string(vault.KeyObject)),
	}
	packs := filepath.Join(s.dir, string(vault.PackObject))
	subs, err := readDir(packs)
	if err != nil {
		return 0, fmt.Errorf("remove stale temp files: %w", err)
	}
	for _, sub := range subs {
		if sub.IsDir() {
			dirs = append(dirs, filepath.Join(packs, sub.Name()))
		}
	}

	removed := 0
	var errs []error
	for _, dir := range dirs {
		entries, err := readDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n := 0
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), tempPrefix) || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if err != nil || !fi.ModTime().Before(cutoff) {
				continue // gone already, or fresh
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
				continue
			}
			n++
		}
		if n > 0 {
			if err := fsutil.SyncDir(dir); err != nil {
				errs = append(errs, err)
			}
		}
		removed += n
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("remove stale temp files: %w", errors.Join(errs...))
	}
	return removed, nil
}
