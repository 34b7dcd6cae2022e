package engine

import (
	"context"
	"sync"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Dedup domains (docs/format.md §1.3). The vault-wide domain "" has the
// chunk-ID key and gear seed of §1; any other domain (a source's principal
// ID, in a vault whose dedup scope is "source") has keys derived from the
// domain base key, which the vault keeps instead of the root secret.

// maxCachedDomains bounds the domains whose keys a vault keeps derived:
// a server reads with many sources' domains, and a caller naming
// arbitrary domains must not grow the cache without end.
const maxCachedDomains = 4096

// domainKeys are one domain's dedup parameters and ID hasher.
type domainKeys struct {
	dedup  vault.DedupParams
	hasher *format.IDHasher
}

// domain returns the keys of domain d, derived once and cached.
func (v *Vault) domain(d string) (*domainKeys, error) {
	if err := format.CheckDomain(d); err != nil {
		return nil, err
	}
	if d == "" {
		return &domainKeys{dedup: v.dedup, hasher: v.hasher}, nil
	}
	v.domMu.Lock()
	defer v.domMu.Unlock()
	if k, ok := v.domains[d]; ok {
		return k, nil
	}
	cid, gear, err := format.DomainKeys(v.domainBase, v.rec.ID, d)
	if err != nil {
		return nil, err
	}
	k := &domainKeys{dedup: vault.DedupParams{ChunkIDKey: cid, GearSeed: gear, Chunker: v.cfg.Chunker}, hasher: format.NewIDHasher(cid)}
	if len(v.domains) < maxCachedDomains {
		v.domains[d] = k
	}
	return k, nil
}

// wipeDomains forgets every derived domain key and the base key.
func (v *Vault) wipeDomains() {
	v.domMu.Lock()
	defer v.domMu.Unlock()
	for d, k := range v.domains {
		k.dedup.ChunkIDKey.Wipe()
		k.dedup.GearSeed.Wipe()
		delete(v.domains, d)
	}
	v.domainBase.Wipe()
}

// DomainDedup returns what an agent of dedup domain d needs to chunk and
// identify data ("" for the vault-wide domain: Dedup).
func (v *Vault) DomainDedup(d string) (vault.DedupParams, error) {
	k, err := v.domain(d)
	if err != nil {
		return vault.DedupParams{}, err
	}
	return k.dedup, nil
}

// DomainHasher returns an ID hasher of dedup domain d for one goroutine.
func (v *Vault) DomainHasher(d string) (*format.IDHasher, error) {
	k, err := v.domain(d)
	if err != nil {
		return nil, err
	}
	return k.hasher.Clone(), nil
}

// View is the vault as one dedup domain sees it: blobs are identified,
// and read back verified, with that domain's chunk-ID key, and snapshots
// it saves carry the domain. Everything else is the vault's.
type View struct {
	*Vault
	name    string
	keys    *domainKeys
	hashMu  sync.Mutex
	hashers sync.Pool
}

// InDomain returns the view of dedup domain d ("" is the vault-wide
// domain, which the Vault's own methods use).
func (v *Vault) InDomain(d string) (*View, error) {
	k, err := v.domain(d)
	if err != nil {
		return nil, err
	}
	return &View{Vault: v, name: d, keys: k}, nil
}

// Domain is the dedup domain the Vault's own methods identify blobs in:
// the vault-wide one.
func (v *Vault) Domain() string { return "" }

// Domain is the view's dedup domain.
func (w *View) Domain() string { return w.name }

// Dedup returns the domain's chunking and ID keys.
func (w *View) Dedup() vault.DedupParams { return w.keys.dedup }

// NewHasher returns an ID hasher of the domain for one goroutine.
func (w *View) NewHasher() *format.IDHasher { return w.keys.hasher.Clone() }

// BlobID computes the ID of data in the domain.
func (w *View) BlobID(data []byte) vault.ID {
	w.hashMu.Lock()
	defer w.hashMu.Unlock()
	return w.keys.hasher.ID(data)
}

func (w *View) id(data []byte) vault.ID {
	h, _ := w.hashers.Get().(*format.IDHasher)
	if h == nil {
		h = w.keys.hasher.Clone()
	}
	id := h.ID(data)
	w.hashers.Put(h)
	return id
}

// LoadBlob reads blob t/id and checks that it hashes to id in the domain.
func (w *View) LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	return w.loadBlob(ctx, t, id, dst, w.id)
}

// LoadTree loads and decodes tree id of the domain.
func (w *View) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	return loadTree(ctx, w, id)
}

// SaveTree encodes, identifies (in the domain) and stores t.
func (w *View) SaveTree(ctx context.Context, t *format.Tree) (vault.ID, error) {
	return saveTree(ctx, w.Vault, w.BlobID, t)
}

// SaveSnapshot saves s as a snapshot of the domain.
func (w *View) SaveSnapshot(ctx context.Context, s vault.SnapshotRecord) (vault.SnapshotRecord, error) {
	s.Domain = w.name
	return w.Vault.SaveSnapshot(ctx, s)
}

// treeLoader returns what loads the trees of snapshots of domain d.
func (v *Vault) treeLoader(d string) (domainReader, error) {
	if d == "" {
		return v, nil
	}
	return v.InDomain(d)
}

// domainReader reads the blobs of one dedup domain, checking their IDs
// with its key: the vault itself (the vault-wide domain), or a View.
type domainReader interface {
	LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error)
	LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error)
}

// keepDomainBase derives the domain base key from the root secret at
// open (the root secret itself is wiped).
func (v *Vault) keepDomainBase(root seal.Key) {
	v.domMu.Lock()
	defer v.domMu.Unlock()
	v.domainBase = format.DomainBaseKey(root, v.rec.ID)
	v.domains = map[string]*domainKeys{}
}
