// Package mem is an in-memory vault.Store for tests and dry runs. It keeps
// the same rules as the other stores (handle validation, write-once Puts,
// exact sizes) but nothing survives the process.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/coffer-backup/coffer/internal/store"
	"github.com/coffer-backup/coffer/internal/vault"
)

var _ vault.Store = (*Store)(nil)

// Store is an in-memory vault.Store, safe for concurrent use. Stored
// slices are never modified, so readers share them without copying.
type Store struct {
	mu   sync.RWMutex
	objs map[vault.Handle][]byte
}

// New returns an empty Store.
func New() *Store {
	return &Store{objs: make(map[vault.Handle][]byte)}
}

// Put stores size bytes read from rd under h. The whole object is read
// before it becomes visible.
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
	if err := store.CheckHandle(h); err != nil {
		return err
	}
	if _, ok := s.lookup(h); ok {
		return vault.ErrExists // fail before reading a large object in vain
	}
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(min(size, 64<<20))) // do not trust size for a huge allocation
	}
	if _, err := store.CopyExact(ctx, &buf, rd, size); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objs[h]; ok {
		return vault.ErrExists
	}
	s.objs[h] = buf.Bytes()
	return nil
}

func (s *Store) lookup(h vault.Handle) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	data, ok := s.objs[h]
	return data, ok
}

// find returns the content of h, checking ctx and h first.
func (s *Store) find(ctx context.Context, h vault.Handle) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := store.CheckHandle(h); err != nil {
		return nil, err
	}
	data, ok := s.lookup(h)
	if !ok {
		return nil, vault.ErrNotFound
	}
	return data, nil
}

// Get returns length bytes of h starting at offset; length < 0 means to the
// end. A range past the end yields fewer bytes.
func (s *Store) Get(ctx context.Context, h vault.Handle, offset, length int64) (io.ReadCloser, error) {
	data, err := s.find(ctx, h)
	if err == nil && offset < 0 {
		err = fmt.Errorf("negative offset %d", offset)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", h, err)
	}
	n := int64(len(data))
	start, end := min(offset, n), n
	if length >= 0 && length < n-start {
		end = start + length
	}
	return io.NopCloser(bytes.NewReader(data[start:end])), nil
}

// Stat returns the size of h.
func (s *Store) Stat(ctx context.Context, h vault.Handle) (vault.ObjectInfo, error) {
	data, err := s.find(ctx, h)
	if err != nil {
		return vault.ObjectInfo{}, fmt.Errorf("stat %s: %w", h, err)
	}
	return vault.ObjectInfo{Handle: h, Size: int64(len(data))}, nil
}

// List calls fn for every object of type t, in no set order, without
// holding a lock: fn may call the store. Objects added or removed during
// List may or may not be reported. An error from fn is returned unchanged.
func (s *Store) List(ctx context.Context, t vault.ObjectType, fn func(vault.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	switch t {
	case vault.PackObject, vault.SnapshotObject, vault.KeyObject, vault.ConfigObject:
	default:
		return fmt.Errorf("list %s: %w: unknown object type", t, store.ErrInvalidHandle)
	}
	var infos []vault.ObjectInfo
	s.mu.RLock()
	for h, data := range s.objs {
		if h.Type == t {
			infos = append(infos, vault.ObjectInfo{Handle: h, Size: int64(len(data))})
		}
	}
	s.mu.RUnlock()
	for _, oi := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %s: %w", t, err)
		}
		if err := fn(oi); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes h.
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
	if err := store.CheckHandle(h); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objs[h]; !ok {
		return vault.ErrNotFound
	}
	delete(s.objs, h)
	return nil
}

// Close does nothing: the objects stay readable until the Store is garbage.
func (s *Store) Close() error { return nil }
