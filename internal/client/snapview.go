package client

import (
	"context"
	"fmt"
	"net/url"
	"sync"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// SnapshotView reads one snapshot of the vault in the snapshot's dedup
// domain (docs/format.md §1.3): trees and data are requested in that
// domain and, when the token may have its keys, verified against their
// IDs with them; blob sizes come from the index of that snapshot alone.
type SnapshotView struct {
	v    *Vault
	snap vault.SnapshotRecord

	hashMu sync.Mutex
	hasher *format.IDHasher // nil: the server's checks only

	indexOnce sync.Once
	index     map[blobKey]uint32
	indexErr  error
}

// ForSnapshot returns the view that reads snapshot s. A token that may
// back up fetches the domain's chunk-ID key to verify downloads.
func (v *Vault) ForSnapshot(ctx context.Context, s vault.SnapshotRecord) (*SnapshotView, error) {
	if err := format.CheckDomain(s.Domain); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w: %v", s.ID.Short(), vault.ErrCorrupt, err)
	}
	h, err := v.domainHasher(ctx, s.Domain)
	if err != nil {
		return nil, err
	}
	return &SnapshotView{v: v, snap: s, hasher: h}, nil
}

func (w *SnapshotView) newHasher() *format.IDHasher {
	w.hashMu.Lock()
	defer w.hashMu.Unlock()
	if w.hasher == nil {
		return nil
	}
	return w.hasher.Clone()
}

// LoadBlob downloads and verifies blob t/id of the snapshot's domain.
func (w *SnapshotView) LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	return w.v.loadBlob(ctx, t, id, dst, w.snap.Domain, w.newHasher())
}

// LoadBlobs downloads blobs of the snapshot's domain in one request.
func (w *SnapshotView) LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	return w.v.loadBlobs(ctx, t, ids, fn, w.snap.Domain, w.newHasher())
}

// LoadTree downloads and decodes tree id of the snapshot's domain.
func (w *SnapshotView) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	return loadTree(ctx, w, id)
}

// BlobSize returns a blob's raw length. A snapshot of a source's domain
// reads the index of that snapshot only (a source's token may read no
// other); one of the vault-wide domain, the vault's index.
func (w *SnapshotView) BlobSize(t vault.BlobType, id vault.ID) (uint32, error) {
	if w.snap.Domain == "" {
		return w.v.BlobSize(t, id)
	}
	w.indexOnce.Do(func() {
		w.index, w.indexErr = w.v.loadIndexOf(context.Background(), w.v.path+"/index?snapshot="+url.QueryEscape(w.snap.ID.String()))
	})
	if w.indexErr != nil {
		return 0, w.indexErr
	}
	n, ok := w.index[blobKey{t, id}]
	if !ok {
		return 0, fmt.Errorf("%s blob %s: %w in the index of snapshot %s", t, id, vault.ErrNotFound, w.snap.ID.Short())
	}
	return n, nil
}

// ChunkID is data's chunk ID in the snapshot's domain; false when the
// token may not have the domain's chunk-ID key.
func (w *SnapshotView) ChunkID(data []byte) (vault.ID, bool) {
	h := w.newHasher()
	if h == nil {
		return vault.ID{}, false
	}
	return h.ID(data), true
}
