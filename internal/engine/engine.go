// Package engine provides the vault engine: it creates and opens vaults,
// holds their unwrapped keys in memory, deduplicates, compresses and seals
// blobs into packs, records snapshots, and reads everything back. The CLI
// uses it in-process; the server exposes it over HTTPS.
//
// It lives beside package vault rather than in it because it needs the
// encodings of package format, which itself depends on vault's types.
package engine

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Options wire a vault's dependencies.
type Options struct {
	Store   vault.Store
	Catalog vault.Catalog
	Keys    vault.KeyProvider
	Name    string           // the vault's name in the catalog
	Now     func() time.Time // the clock; time.Now when nil
	Logger  *slog.Logger     // discards when nil
	// KeyTTL bounds how long unwrapped keys stay in memory: once they are
	// older, the next operation that needs them unwraps them again with
	// the key provider (which is when a revoked customer key takes
	// effect), and ExpireKeys drops them from an idle vault. 0 keeps them
	// until Close, as a one-command CLI process does.
	KeyTTL time.Duration
	// Session, when set, registers the vault's user as a writer (a
	// backup) in the catalog before the index is loaded, keeps it alive
	// while open and ends it on Close: prune does not delete a pack that
	// such a writer may still reference (docs/retention.md).
	Session *vault.Session
	// OnKeyRefresh, when set, is told the outcome of every unwrap after
	// the first (nil: the keys were unwrapped again), for the audit trail.
	OnKeyRefresh func(err error)
	// OnFilter, when set, is told the size in bytes of the dedup filter
	// each time a backup's first dedup probe builds it, or a full one is
	// built again larger (blobindex.go): the one part of a backup's memory
	// that grows with the vault, about 1.9 bytes a stored blob.
	OnFilter func(bytes int)
	// Uploads is how many finished packs may be in flight to the store at
	// once (default 1); it bounds memory at about (Uploads+1) × 16 MiB.
	Uploads int
	// Pin, when set, remembers the newest snapshot-chain entry this
	// verifier has seen, so that a rolled-back snapshot list is detected
	// (docs/format.md §8.2).
	Pin ChainPin
	// KeyPin, when set, remembers the newest keyring generation this
	// verifier has seen, so that a keyring rolled back together with the
	// catalog's anchor is detected (docs/format.md §7.3).
	KeyPin KeyringPin
	// AcceptKeyringRollback opens a vault whose keyring is older than
	// KeyPin's (same root secret) instead of refusing it, for
	// AcceptKeyringRollback (coffer vault accept-rollback).
	AcceptKeyringRollback bool
	// Dedup, when set, identifies blobs with these parameters instead of
	// those the vault's root secret derives: an agent's local-copy cache
	// (internal/localcopy) holds another vault's blobs under their IDs
	// there, so that its trees are that vault's, byte for byte. Reads
	// still verify every blob against its ID, with this key.
	Dedup *vault.DedupParams
}

// DefaultChunker is the chunking a new vault gets (docs/performance.md).
func DefaultChunker() vault.ChunkerParams {
	return vault.ChunkerParams{Min: 512 << 10, Avg: 1 << 20, Max: 8 << 20}
}

type blobKey struct {
	id vault.ID
	t  vault.BlobType
}

// Vault is an open vault.
type Vault struct {
	opt Options
	rec vault.VaultRecord
	cfg format.Config
	// keys is the unwrapped key state. A key change (DEK rotation, rewrap
	// under another KEK) swaps in a new one; readers load it once per use.
	keys       atomic.Pointer[keyState]
	keyMu      sync.Mutex // serialises key changes
	dedup      vault.DedupParams
	codec      *format.Codec
	hasher     *format.IDHasher
	hashMu     sync.Mutex
	hashers    sync.Pool // *format.IDHasher for concurrent readers
	sealedBufs sync.Pool // *[]byte for sealed blobs being read
	log        *slog.Logger

	// idxBlock is the index key (blobindex.go's lookupKey).
	idxBlock cipher.Block

	mu sync.Mutex
	// index holds the whole index once full is set (loadIndex, for
	// prune, check and repair); until then blobs are found through the
	// catalog's lookup keys, filter and cache (blobindex.go).
	index map[blobKey]vault.BlobRecord
	full  bool
	// filter answers "not stored" without a query once built;
	// filterFresh collects the keys stored while it is (re)built.
	filter      *blobFilter
	filterFresh []uint64
	filterMu    sync.Mutex // serialises filter builds
	cache       recordCache
	// condemned holds the blobs of packs prune found unused: readable
	// (a snapshot saved meanwhile may name them, and prune then reprieves
	// the pack), but never deduplicated against, so that nothing new
	// comes to depend on a pack about to be deleted.
	condemned map[blobKey]vault.BlobRecord
	pending   map[blobKey]struct{}

	packers   [3]*packer    // indexed by blob type
	uploadSem chan struct{} // packs not yet read by the store
	syncSem   chan struct{} // Puts in flight
	uploads   inflight
	errMu     sync.Mutex
	err       error // first upload error; sticky
	added     atomic.Uint64
	// packBufs keeps data pack buffers for reuse; unlike a sync.Pool it
	// survives garbage collections, so 16 MiB buffers are not zeroed anew.
	packBufs chan []byte

	openerMu sync.Mutex
	openers  map[vault.ID]*format.PackOpener

	sess *session // the writer session, when Options.Session is set

	settingsMu sync.Mutex // serialises settings changes through this vault

	// domainBase derives the keys of dedup domains other than the
	// vault-wide one (domain.go); domains caches them.
	domMu      sync.Mutex
	domainBase seal.Key
	domains    map[string]*domainKeys

	chainMu  sync.Mutex
	lastHead ChainHead // the chain's head after this vault's last append

	// settingsSeen is what the last verification of the settings found
	// (prune.go): the chain's head then and its newest settings entry.
	// Later reads verify only the entries after it, and a chain that no
	// longer holds that head was rolled back.
	seenMu       sync.Mutex
	settingsSeen *settingsSeen

	// keyRollback is the keyring rollback let through at open by
	// Options.AcceptKeyringRollback, until AcceptKeyringRollback pins it.
	keyRollback *KeyringRollback
}

type packer struct {
	mu sync.Mutex
	w  *format.PackWriter
}

func (o *Options) defaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Uploads <= 0 {
		o.Uploads = 1
	}
}

func rootAAD(id vault.ID) []byte          { return seal.KeyAAD(id, "root", 0) }
func dekAAD(id vault.ID, v uint32) []byte { return seal.KeyAAD(id, "dek", v) }
func configHandle() vault.Handle          { return vault.Handle{Type: vault.ConfigObject, Name: "config"} }
func packHandle(id vault.ID) vault.Handle {
	return vault.Handle{Type: vault.PackObject, Name: id.String()}
}
func snapHandle(id vault.ID) vault.Handle {
	return vault.Handle{Type: vault.SnapshotObject, Name: id.String()}
}
func keyringHandle(g uint64) vault.Handle {
	return vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(g)}
}

// ErrIncomplete reports a vault whose creation was interrupted before its
// keys were written; Create completes it.
var ErrIncomplete = errors.New("vault creation was interrupted")

// Create makes a new vault, or completes one whose creation was
// interrupted, and opens it. The steps are each write-once and each may be
// found done already (a crash, or another process creating the same vault
// at the same moment): the config object claims the store; the first
// keyring generation holds a fresh root secret and DEK v1 wrapped by the
// KEK (whichever process stores it first wins, the others use it); the
// catalog record comes last and is re-created from the config when
// missing. Nothing is written with the keys before the keyring is stored,
// so a vault is never left with data nobody can read.
func Create(ctx context.Context, opt Options, chunking vault.ChunkerParams) (*Vault, error) {
	opt.defaults()
	now := opt.Now().UTC()
	var id vault.ID
	rand.Read(id[:])
	cfg := format.Config{Format: format.Format, ID: id.String(), Created: now, Chunker: chunking, PackSize: format.PackTargetSize}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("create vault: %w", err)
	}
	cb, _ := json.MarshalIndent(cfg, "", "  ")
	err := opt.Store.Put(ctx, configHandle(), bytes.NewReader(cb), int64(len(cb)))
	if errors.Is(err, vault.ErrExists) {
		// Someone else claimed the store first: complete their vault.
		if cfg, err = readConfig(ctx, opt.Store); err != nil {
			return nil, fmt.Errorf("create vault: %w", err)
		}
		if id, err = vault.ParseID(cfg.ID); err != nil {
			return nil, fmt.Errorf("create vault: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("create vault: write config: %w", err)
	}
	anchor, err := ensureKeyring(ctx, opt, id, cfg)
	if err != nil {
		return nil, err
	}
	if err := ensureRecord(ctx, opt, id, cfg.Created); err != nil {
		return nil, err
	}
	if anchor != nil {
		// The first generation is this process's: anchor it (unless
		// another creator's Open did).
		if err := opt.Catalog.SetKeyAnchor(ctx, id, *anchor, 0); err != nil && !errors.Is(err, vault.ErrConflict) {
			return nil, fmt.Errorf("create vault: %w", err)
		}
	}
	return Open(ctx, opt)
}

// ensureKeyring stores keyring generation 1 unless one exists, and
// returns its anchor when it did.
func ensureKeyring(ctx context.Context, opt Options, id vault.ID, cfg format.Config) (*vault.KeyAnchor, error) {
	found := false
	if err := opt.Store.List(ctx, vault.KeyObject, func(vault.ObjectInfo) error {
		found = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("create vault: list keyrings: %w", err)
	}
	if found {
		return nil, nil
	}
	root := seal.NewRandomKey()
	defer root.Wipe()
	dek := seal.NewRandomKey()
	defer dek.Wipe()
	wroot, err := opt.Keys.Wrap(ctx, root[:], rootAAD(id))
	if err != nil {
		return nil, fmt.Errorf("create vault: wrap root secret: %w", err)
	}
	wdek, err := opt.Keys.Wrap(ctx, dek[:], dekAAD(id, 1))
	if err != nil {
		return nil, fmt.Errorf("create vault: wrap DEK: %w", err)
	}
	if wdek.KEK != wroot.KEK || wdek.Alg != wroot.Alg {
		// The keyring names one KEK for all it wraps (the platform key
		// file was rotated between the two wraps).
		return nil, fmt.Errorf("create vault: the key provider changed keys while wrapping (%s, then %s): run the command again", wroot.KEK, wdek.KEK)
	}
	kc := cfg
	kr := format.Keyring{Format: format.Format, Vault: id.String(), Generation: 1, Created: cfg.Created, Config: &kc,
		KEK:  format.KeyringKEK{Provider: wroot.KEK.Provider, KeyID: wroot.KEK.KeyID, Version: wroot.KEK.Version, Alg: wroot.Alg},
		Root: wroot.Data, DEKs: []format.KeyringDEK{{Version: 1, Created: cfg.Created, Wrapped: wdek.Data}}, CurrentDEK: 1}
	kr.MAC = kr.ComputeMAC(root, id)
	kb := kr.Encode()
	err = opt.Store.Put(ctx, keyringHandle(1), bytes.NewReader(kb), int64(len(kb)))
	if errors.Is(err, vault.ErrExists) {
		return nil, nil // another creator won; its keys count, and it anchors them
	}
	if err != nil {
		return nil, fmt.Errorf("create vault: write keyring: %w", err)
	}
	a := vault.KeyAnchor{Generation: 1, RootCommit: format.RootCommit(root, id), KEK: wroot.KEK, Alg: wroot.Alg, Time: opt.Now()}
	copy(a.MAC[:], kr.MAC)
	return &a, nil
}

// ensureRecord records the vault in the catalog unless it is there.
func ensureRecord(ctx context.Context, opt Options, id vault.ID, created time.Time) error {
	err := opt.Catalog.CreateVault(ctx, vault.VaultRecord{ID: id, Name: opt.Name, Created: created})
	if err == nil {
		return nil
	}
	if !errors.Is(err, vault.ErrExists) {
		return fmt.Errorf("create vault: %w", err)
	}
	rec, rerr := opt.Catalog.Vault(ctx, opt.Name)
	if rerr != nil {
		return fmt.Errorf("create vault: %w", err)
	}
	if rec.ID != id {
		return fmt.Errorf("create vault %q: %w: the catalog describes vault %s but the store holds vault %s", opt.Name, vault.ErrCorrupt, rec.ID, id)
	}
	return nil
}

func readConfig(ctx context.Context, s vault.Store) (format.Config, error) {
	cb, err := readAll(ctx, s, configHandle(), 1<<20)
	if err != nil {
		return format.Config{}, fmt.Errorf("read config: %w", err)
	}
	return format.ParseConfig(cb)
}

// readConfigOrKeyring reads the config, or, when it is missing, the copy
// in the latest keyring generation (an upgrade cut short between deleting
// the format-1 config and writing its successor, docs/format.md §10). The
// copy is not trusted yet: unwrapKeys verifies it with the keyring. It
// reports whether the config object must be (re)written.
func readConfigOrKeyring(ctx context.Context, s vault.Store) (format.Config, bool, error) {
	cfg, err := readConfig(ctx, s)
	if err == nil || !errors.Is(err, vault.ErrNotFound) {
		return cfg, err == nil && cfg.Format == 1, err
	}
	// The newest generation that parses (one a store writer planted
	// above it does not parse, or fails its MAC at the unwrap).
	gens, _, lerr := listGenerations(ctx, s)
	if lerr != nil {
		return cfg, false, err
	}
	for i := len(gens) - 1; i >= 0; i-- {
		kb, rerr := readAll(ctx, s, keyringHandle(gens[i]), 1<<20)
		var head struct{ Vault string }
		if rerr != nil || json.Unmarshal(kb, &head) != nil {
			continue
		}
		id, perr := vault.ParseID(head.Vault)
		if perr != nil {
			continue
		}
		kr, kerr := format.ParseKeyring(format.KeyringName(gens[i]), kb, id)
		if kerr != nil || kr.Format != format.Format {
			continue
		}
		return *kr.Config, true, nil
	}
	return cfg, false, err
}

// Open opens an existing vault: it reads the config, unwraps the newest
// keyring generation and loads the blob index from the catalog. A vault
// the catalog does not know yet (its creator died before recording it) is
// recorded from the store's config, since the store is the source of
// truth; one without keys fails with ErrIncomplete.
func Open(ctx context.Context, opt Options) (*Vault, error) {
	opt.defaults()
	cfg, rewriteConfig, err := readConfigOrKeyring(ctx, opt.Store)
	if err != nil {
		return nil, fmt.Errorf("open vault: %w", err)
	}
	id, err := vault.ParseID(cfg.ID)
	if err != nil {
		return nil, fmt.Errorf("open vault: %w", err)
	}
	rec, err := opt.Catalog.Vault(ctx, opt.Name)
	if errors.Is(err, vault.ErrNotFound) {
		hasKeys := false
		if lerr := opt.Store.List(ctx, vault.KeyObject, func(vault.ObjectInfo) error { hasKeys = true; return nil }); lerr != nil {
			return nil, fmt.Errorf("open vault: list keyrings: %w", lerr)
		}
		if !hasKeys {
			return nil, fmt.Errorf("open vault %q: %w before its keys were written (a backup completes it)", opt.Name, ErrIncomplete)
		}
		if err = ensureRecord(ctx, opt, id, cfg.Created); err == nil {
			rec, err = opt.Catalog.Vault(ctx, opt.Name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open vault %q: catalog: %w", opt.Name, err)
	}
	if rec.ID != id {
		return nil, fmt.Errorf("open vault %q: %w: catalog describes vault %s but the store holds vault %s", opt.Name, vault.ErrCorrupt, rec.ID, cfg.ID)
	}
	v := &Vault{opt: opt, rec: rec, cfg: cfg, codec: format.NewCodec(), log: opt.Logger,
		index: map[blobKey]vault.BlobRecord{}, condemned: map[blobKey]vault.BlobRecord{}, pending: map[blobKey]struct{}{},
		packBufs: make(chan []byte, 1), uploadSem: make(chan struct{}, opt.Uploads), syncSem: make(chan struct{}, maxSyncing), openers: map[vault.ID]*format.PackOpener{}}
	for t := range v.packers {
		v.packers[t] = &packer{}
	}
	if err := v.loadKeys(ctx); err != nil {
		return nil, err
	}
	if err := v.beginSession(ctx); err != nil {
		v.Close()
		return nil, err
	}
	// SECURITY: the catalog's part of the upgrade (the snapshot chain
	// imported from format 1 objects, the packs' header copies) runs
	// only while the keyring is format 1, and before the format 2
	// keyring is written: so a vault whose keyring is format 2 has its
	// chain, and a chain deleted from its catalog is never imported
	// again from records a catalog writer chose (docs/format.md §10).
	if v.keys.Load().keyring.Format == 1 {
		if err := v.upgradeChain(ctx); err != nil {
			v.Close()
			return nil, err
		}
	}
	if err := v.upgradePacks(ctx); err != nil {
		v.Close()
		return nil, err
	}
	if err := v.upgradeSettings(ctx); err != nil {
		v.Close()
		return nil, err
	}
	if err := v.upgrade(ctx, rewriteConfig); err != nil {
		v.Close()
		return nil, err
	}
	// SECURITY: a key change cut short after it anchored its new
	// generation (its process killed before it deleted the older ones)
	// leaves generations wrapped under the previous KEK in the store:
	// that key would still open the vault, and revoking a customer key
	// switched to would shred nothing. Every open removes them, once the
	// current generation has been unwrapped and verified above; one that
	// cannot be deleted yet (a bucket's retention) is tried at the next.
	if n, err := v.RemoveStaleKeyrings(ctx); err != nil {
		v.log.Warn("older keyring generations under another key could not be removed yet; that key may still open them", "vault", opt.Name, "err", err)
	} else if n > 0 {
		v.log.Info("older keyring generations under another key removed", "vault", opt.Name, "generations", n)
	}
	// The blob index is not loaded: lookups query the catalog
	// (blobindex.go), so that listing snapshots or a tree costs memory
	// bounded by the work, not by the vault (docs/performance.md).
	return v, nil
}

// latestKeyring reads the newest keyring generation of vault id that
// parses, from the store alone: an object that does not parse (one a
// store writer planted, docs/format.md §7.3) is passed over. Nothing is
// authenticated; with a catalog, unwrapKeys and InspectWith pick the
// generation the anchor accepts.
func latestKeyring(ctx context.Context, st vault.Store, id vault.ID) (*format.Keyring, error) {
	gens, _, err := listGenerations(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("open vault: %w", err)
	}
	if len(gens) == 0 {
		return nil, fmt.Errorf("open vault: %w: the store holds no keyring (keys/)", vault.ErrNotFound)
	}
	var first error
	for i := len(gens) - 1; i >= 0; i-- {
		kr, perr, err := readParsed(ctx, st, id, gens[i])
		if err != nil {
			return nil, fmt.Errorf("open vault: %w", err)
		}
		if perr == nil {
			return kr, nil
		}
		if first == nil {
			first = perr
		}
	}
	return nil, fmt.Errorf("open vault: %w", first)
}

// Inspect describes a vault's keys from its store without unwrapping them,
// for `vault show` when the key encryption key cannot be reached. The
// returned KeyInfo has no DEK material, only what the keyring names.
func Inspect(ctx context.Context, st vault.Store) (format.Config, KeyInfo, error) {
	return InspectWith(ctx, st, nil)
}

// InspectWith is Inspect with the vault's catalog (nil for none): when the
// catalog anchors the vault's keys, the generation described is the one a
// reader would use (docs/format.md §7.3), the highest proposed generation
// newer than the anchor or else the anchored one, so that an object a store
// writer planted above it does not choose the key provider.
func InspectWith(ctx context.Context, st vault.Store, cat vault.Catalog) (format.Config, KeyInfo, error) {
	cfg, _, err := readConfigOrKeyring(ctx, st)
	if err != nil {
		return cfg, KeyInfo{}, fmt.Errorf("inspect vault: %w", err)
	}
	id, err := vault.ParseID(cfg.ID)
	if err != nil {
		return cfg, KeyInfo{}, fmt.Errorf("inspect vault: %w", err)
	}
	kr, err := inspectKeyring(ctx, st, cat, id)
	if err != nil {
		return cfg, KeyInfo{}, err
	}
	return cfg, keyInfo(cfg, kr, kr.CurrentDEK), nil
}

// inspectKeyring is the generation InspectWith describes.
func inspectKeyring(ctx context.Context, st vault.Store, cat vault.Catalog, id vault.ID) (*format.Keyring, error) {
	if cat != nil {
		anchor, props, err := cat.KeyAnchor(ctx, id)
		if err == nil {
			gens, _, err := listGenerations(ctx, st)
			if err != nil {
				return nil, err
			}
			kr, _, _, err := anchoredKeyring(ctx, st, id, gens, anchor, props)
			if err == nil {
				return kr, nil
			}
			if !errors.Is(err, errAnchoredMissing) && !errors.Is(err, vault.ErrCorrupt) {
				return nil, err
			}
			// The anchored generation is missing or damaged: opening
			// refuses the vault and says why; describe the store as it is.
		} else if !errors.Is(err, vault.ErrNotFound) {
			return nil, fmt.Errorf("read the keyring anchor: %w", err)
		}
	}
	return latestKeyring(ctx, st, id)
}

func (v *Vault) loadKeys(ctx context.Context) error {
	ks, root, err := v.unwrapKeys(ctx, v.opt.Keys)
	if err != nil {
		return fmt.Errorf("open vault %q: %w", v.opt.Name, err)
	}
	defer root.Wipe()
	v.keys.Store(ks)
	v.dedup = vault.DedupParams{
		ChunkIDKey: seal.Derive(root, v.rec.ID[:], seal.LabelChunkID),
		GearSeed:   seal.Derive(root, v.rec.ID[:], seal.LabelGearSeed),
		Chunker:    v.cfg.Chunker,
	}
	if v.opt.Dedup != nil {
		v.dedup.ChunkIDKey.Wipe()
		v.dedup.GearSeed.Wipe()
		v.dedup = *v.opt.Dedup // a copy: Close wipes this one, not the caller's
	}
	v.hasher = format.NewIDHasher(v.dedup.ChunkIDKey)
	v.idxBlock = newIndexBlock(root, v.rec.ID)
	v.keepDomainBase(root)
	return nil
}

// Close flushes nothing: call Flush first. It wipes the keys and ends
// the writer's session.
func (v *Vault) Close() error {
	v.endSession()
	if ks := v.keys.Load(); ks != nil && ks.deks != nil {
		ks.wipe()
	}
	v.dedup.ChunkIDKey.Wipe()
	v.dedup.GearSeed.Wipe()
	v.wipeDomains()
	return nil
}

// Record is the vault's catalog record.
func (v *Vault) Record() vault.VaultRecord { return v.rec }

// Config is the vault's config object.
func (v *Vault) Config() format.Config { return v.cfg }

// Dedup returns what an agent needs to chunk and identify data.
func (v *Vault) Dedup() vault.DedupParams { return v.dedup }

// Codec is the vault's blob codec.
func (v *Vault) Codec() *format.Codec { return v.codec }

// BlobID computes the ID of data.
func (v *Vault) BlobID(data []byte) vault.ID {
	v.hashMu.Lock()
	defer v.hashMu.Unlock()
	return v.hasher.ID(data)
}

// dekFor returns a lookup of DEKs by version over the vault's live keys
// (unwrapping them again when their time to live has passed).
func (v *Vault) dekFor(ctx context.Context) (func(uint32) (seal.Key, error), error) {
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return nil, err
	}
	return ks.dek, nil
}

// Has reports whether the vault holds (or is storing) blob t/id in a
// pack that is not condemned: whether a backup may deduplicate against
// it. A catalog that cannot be read, or a header copy that does not
// open, makes it report false and fails the vault's next write (the
// error is sticky): a blob stored again is a duplicate, never a loss.
func (v *Vault) Has(t vault.BlobType, id vault.ID) bool {
	k := blobKey{id, t}
	v.mu.Lock()
	if _, ok := v.pending[k]; ok {
		v.mu.Unlock()
		return true
	}
	if v.full {
		_, ok := v.index[k]
		v.mu.Unlock()
		return ok
	}
	// A record in the cache came from a pack's sealed header: the answer
	// lookupIndex would give, without the filter or the catalog.
	_, condemned, cached := v.cache.get(k)
	v.mu.Unlock()
	if cached && !condemned {
		return v.firstErr() == nil
	}
	if v.firstErr() != nil {
		// The vault's next write fails with it: no lookup is worth
		// making, and a filter that failed to build would otherwise be
		// built again, a scan of every key, for every blob.
		return false
	}
	ctx := context.Background()
	if err := v.ensureFilter(ctx); err != nil {
		v.setErr(err)
		return false
	}
	_, condemned, ok, err := v.lookupUncached(ctx, t, id, true)
	if err != nil {
		v.setErr(err)
		return false
	}
	return ok && !condemned
}

// SaveBlob stores a blob given its plaintext p as made by Codec.Encode
// (encoding byte and payload) and its raw length. It reports whether the
// blob was new. p may be reused once SaveBlob returns.
func (v *Vault) SaveBlob(ctx context.Context, t vault.BlobType, id vault.ID, p []byte, rawLen int) (bool, error) {
	return v.saveBlob(ctx, t, id, p, rawLen, false)
}

// saveBlob is SaveBlob; with again it stores the blob even when the index
// holds it already (prune moving it out of a partly used pack).
func (v *Vault) saveBlob(ctx context.Context, t vault.BlobType, id vault.ID, p []byte, rawLen int, again bool) (bool, error) {
	if err := v.firstErr(); err != nil {
		return false, err
	}
	if t != vault.DataBlob && t != vault.TreeBlob {
		return false, fmt.Errorf("save blob: unknown type %d", t)
	}
	if rawLen > format.MaxBlobRawSize || len(p) > format.MaxBlobRawSize+1 {
		return false, fmt.Errorf("save blob: %d bytes exceeds the %d-byte blob limit", rawLen, format.MaxBlobRawSize)
	}
	k := blobKey{id, t}
	if !again && v.Has(t, id) {
		return false, nil
	}
	v.mu.Lock()
	if _, ok := v.pending[k]; ok {
		v.mu.Unlock()
		return false, nil
	}
	v.pending[k] = struct{}{}
	v.mu.Unlock()

	pk := v.packers[t]
	pk.mu.Lock()
	defer pk.mu.Unlock()
	need := len(p) + seal.Overhead
	// A pack is closed before a blob would take the finished pack (with
	// its header) past the pack size, so data pack buffers are allocated
	// once at that size and reused.
	if pk.w != nil && pk.w.Count() > 0 && pk.w.SizeWith(need) > v.cfg.PackSize {
		w := pk.w
		pk.w = nil
		if err := v.upload(ctx, w); err != nil {
			v.mu.Lock()
			delete(v.pending, k)
			v.mu.Unlock()
			return false, err
		}
	}
	if pk.w == nil {
		ks, err := v.liveKeys(ctx)
		if err != nil {
			v.mu.Lock()
			delete(v.pending, k)
			v.mu.Unlock()
			return false, err
		}
		pk.w = format.NewPackWriter(ks.deks[ks.cur], ks.cur, v.getBuf(t, need))
	}
	pk.w.Grow(need, v.cfg.PackSize)
	pk.w.Add(t, id, p, rawLen)
	return true, nil
}

// getBuf returns a buffer for a new pack. Data packs get a pooled buffer
// of the full pack size (a pack is closed before it would outgrow it);
// tree packs, which are usually small, start at 1 MiB and grow
// (PackWriter.Grow, before each blob).
func (v *Vault) getBuf(t vault.BlobType, need int) []byte {
	if t == vault.DataBlob {
		select {
		case b := <-v.packBufs:
			return b[:0]
		default:
		}
		return make([]byte, 0, max(v.cfg.PackSize, need+format.PackPrefixSize))
	}
	return make([]byte, 0, max(1<<20, need+format.PackPrefixSize+(1<<20)))
}

// upload finishes w and stores it in the background, waiting while
// Options.Uploads packs are already in flight.
//
// Two limits apply. Options.Uploads bounds the packs whose bytes the store
// has not read yet, and so the memory held. maxSyncing bounds the Puts
// still running after that: a local store's fsync, or an S3 upload's
// completion. A pack's buffer goes back to the pool as soon as the store has
// read it, so a slow fsync (ext4 may flush unrelated dirty data with it)
// holds no memory and does not stall the packers.
func (v *Vault) upload(ctx context.Context, w *format.PackWriter) error {
	return v.uploadCounted(ctx, w, v.uploads.add())
}

// uploadCounted is upload for a pack already counted in v.uploads as
// ticket.
func (v *Vault) uploadCounted(ctx context.Context, w *format.PackWriter, ticket uint64) error {
	select {
	case v.uploadSem <- struct{}{}:
	case <-ctx.Done():
		v.dropPending(w)
		v.uploads.done(ticket)
		return ctx.Err()
	}
	select {
	case v.syncSem <- struct{}{}:
	case <-ctx.Done():
		<-v.uploadSem
		v.dropPending(w)
		v.uploads.done(ticket)
		return ctx.Err()
	}
	go func() {
		defer v.uploads.done(ticket)
		defer func() { <-v.syncSem }()
		if err := v.storePack(ctx, w, func() { <-v.uploadSem }); err != nil {
			v.setErr(err)
		}
	}()
	return nil
}

// maxSyncing is how many pack Puts may be in flight once their bytes are
// read (see upload).
const maxSyncing = 4

// consumedReader calls done once, when its bytes have all been read, or
// when the Put returns without reading them all.
type consumedReader struct {
	r    *bytes.Reader
	once sync.Once
	done func()
}

func (c *consumedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.r.Len() == 0 {
		c.once.Do(c.done)
	}
	return n, err
}

func (v *Vault) dropPending(w *format.PackWriter) {
	_, entries := w.Finish()
	v.mu.Lock()
	for _, e := range entries {
		delete(v.pending, blobKey{e.ID, e.Type})
	}
	v.mu.Unlock()
}

// storePack stores a finished pack and records it in the catalog. released
// is called once the store has read the pack's bytes (the buffer is then
// reused).
func (v *Vault) storePack(ctx context.Context, w *format.PackWriter, released func()) error {
	buf, entries := w.Finish()
	size := len(buf)
	id := w.ID()
	// Copied now: buf goes back to the pool, to be refilled, as soon as
	// the store has read it.
	header := bytes.Clone(format.PackHeader(buf))
	rd := &consumedReader{r: bytes.NewReader(buf), done: func() {
		if len(entries) > 0 && entries[0].Type == vault.DataBlob && cap(buf) >= v.cfg.PackSize {
			select {
			case v.packBufs <- buf:
			default:
			}
		}
		released()
	}}
	defer func() {
		rd.once.Do(rd.done) // a Put that failed before reading everything
		v.mu.Lock()
		for _, e := range entries {
			delete(v.pending, blobKey{e.ID, e.Type})
		}
		v.mu.Unlock()
	}()
	// The pack is durable in the store before the catalog knows it, so the
	// index never points at a pack that a crash lost.
	if err := v.opt.Store.Put(ctx, packHandle(id), rd, int64(size)); err != nil {
		return fmt.Errorf("store pack %s: %w", id, err)
	}
	// The catalog lists the pack's blobs only in a copy of its sealed
	// header, never their sizes in plaintext (docs/format.md §4.1).
	recs := make([]vault.BlobRecord, len(entries))
	for i, e := range entries {
		recs[i] = vault.BlobRecord{ID: e.ID, Type: e.Type, Pack: id, Offset: e.Offset, Length: e.Length, RawLen: e.RawLen}
	}
	// With its blobs' lookup keys (docs/format.md §4.2), in the same
	// transaction: readers find the blobs by them.
	keys := v.keysOf(recs)
	pr := vault.PackRecord{ID: id, Size: int64(size), DEKVersion: w.DEKVersion(), Blobs: len(entries), Created: v.opt.Now().UTC(),
		Header: header, Keys: keys}
	if err := v.opt.Catalog.AddPack(ctx, v.rec.ID, pr, nil); err != nil {
		return fmt.Errorf("catalog pack %s: %w", id, err)
	}
	v.mu.Lock()
	v.noteStored(recs, keys)
	v.mu.Unlock()
	v.added.Add(uint64(size))
	return nil
}

func (v *Vault) setErr(err error) {
	v.errMu.Lock()
	if v.err == nil {
		v.err = err
	}
	v.errMu.Unlock()
}

func (v *Vault) firstErr() error {
	v.errMu.Lock()
	defer v.errMu.Unlock()
	return v.err
}

// Flush stores the packs being filled and waits for every upload. It
// returns the first storage error of any upload since the vault opened.
func (v *Vault) Flush(ctx context.Context) error {
	// Flush waits for the packs it takes from the packers and for every
	// upload that started before (another Flush may have taken a pack
	// holding blobs this caller relies on): so it marks after taking them.
	for _, pk := range v.packers {
		pk.mu.Lock()
		w := pk.w
		pk.w = nil
		full := w != nil && w.Count() > 0
		var ticket uint64
		if full {
			// Counted before the packer is unlocked: a concurrent
			// Flush that finds the packer empty still waits for it.
			ticket = v.uploads.add()
		}
		pk.mu.Unlock()
		if full {
			if err := v.uploadCounted(ctx, w, ticket); err != nil {
				v.setErr(err)
			}
		}
	}
	v.uploads.wait(v.uploads.mark())
	// Give the spare pack buffer back: a vault server keeps many vaults
	// open, and an idle one should not hold 16 MiB.
	select {
	case <-v.packBufs:
	default:
	}
	return v.firstErr()
}

// inflight tracks pack uploads in progress. Unlike a sync.WaitGroup it
// may be waited on by several Flushes while others add to it, and a Flush
// waits only for the uploads that started before it, so one agent's flush
// is not held up by other agents' packs that keep coming.
type inflight struct {
	mu   sync.Mutex
	cond *sync.Cond
	next uint64              // the next ticket
	open map[uint64]struct{} // tickets of uploads in progress
}

func (f *inflight) lock() {
	f.mu.Lock()
	if f.cond == nil {
		f.cond = sync.NewCond(&f.mu)
		f.open = map[uint64]struct{}{}
	}
}

// add records an upload and returns its ticket.
func (f *inflight) add() uint64 {
	f.lock()
	defer f.mu.Unlock()
	t := f.next
	f.next++
	f.open[t] = struct{}{}
	return t
}

// done records that upload t has ended.
func (f *inflight) done(t uint64) {
	f.lock()
	defer f.mu.Unlock()
	delete(f.open, t)
	f.cond.Broadcast()
}

// mark returns a ticket bound: wait(mark()) waits for every upload
// started so far.
func (f *inflight) mark() uint64 {
	f.lock()
	defer f.mu.Unlock()
	return f.next
}

// wait returns once no upload with a ticket below limit is in progress.
func (f *inflight) wait(limit uint64) {
	f.lock()
	defer f.mu.Unlock()
	for {
		busy := false
		for t := range f.open {
			if t < limit {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
		f.cond.Wait()
	}
}

// BytesAdded is the number of pack bytes this handle has stored.
func (v *Vault) BytesAdded() uint64 { return v.added.Load() }

// SaveTree encodes, identifies and stores t, returning its ID.
func (v *Vault) SaveTree(ctx context.Context, t *format.Tree) (vault.ID, error) {
	return saveTree(ctx, v, v.BlobID, t)
}

// saveTree encodes t, identifies it with idOf (the dedup domain's key)
// and stores it in v unless it is there already.
func saveTree(ctx context.Context, v *Vault, idOf func([]byte) vault.ID, t *format.Tree) (vault.ID, error) {
	enc, err := format.EncodeTree(nil, t)
	if err != nil {
		return vault.ID{}, err
	}
	id := idOf(enc)
	if v.Has(vault.TreeBlob, id) {
		return id, nil
	}
	_, err = v.SaveBlob(ctx, vault.TreeBlob, id, v.codec.Encode(nil, enc), len(enc))
	return id, err
}

// EachBlob calls fn for every indexed blob until fn returns false,
// loading the whole index first (its memory grows with the vault). The
// index lock is held meanwhile: fn must not call the vault.
func (v *Vault) EachBlob(ctx context.Context, fn func(t vault.BlobType, id vault.ID, rawLen uint32) bool) error {
	if err := v.ensureFull(ctx); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, r := range v.index {
		if !fn(k.t, k.id, r.RawLen) {
			return nil
		}
	}
	return nil
}

// Lookup returns where blob t/id is stored (in a live pack if it is in
// one, else in a condemned one). A lookup that fails (the catalog cannot
// be read, a header copy does not open) reports it absent; lookup says
// why.
func (v *Vault) Lookup(t vault.BlobType, id vault.ID) (vault.BlobRecord, bool) {
	r, ok, _ := v.lookup(context.Background(), t, id)
	return r, ok
}

// lookup is Lookup with the error that made it fail.
func (v *Vault) lookup(ctx context.Context, t vault.BlobType, id vault.ID) (vault.BlobRecord, bool, error) {
	v.mu.Lock()
	if v.full {
		defer v.mu.Unlock()
		r, ok := v.index[blobKey{id, t}]
		if !ok {
			r, ok = v.condemned[blobKey{id, t}]
		}
		return r, ok, nil
	}
	v.mu.Unlock()
	r, _, ok, err := v.lookupIndex(ctx, t, id, false)
	return r, ok, err
}

// mustLookup is lookup that reports a blob it does not find as an error.
func (v *Vault) mustLookup(ctx context.Context, t vault.BlobType, id vault.ID) (vault.BlobRecord, error) {
	r, ok, err := v.lookup(ctx, t, id)
	if err != nil {
		return r, err
	}
	if !ok {
		return r, fmt.Errorf("%s blob %s: %w in the index", t, id, vault.ErrNotFound)
	}
	return r, nil
}

// BlobSize returns the raw length of blob t/id.
func (v *Vault) BlobSize(t vault.BlobType, id vault.ID) (uint32, error) {
	r, err := v.mustLookup(context.Background(), t, id)
	if err != nil {
		return 0, err
	}
	return r.RawLen, nil
}

// opener returns pack's opener (its per-pack subkey), cached. The cache
// is emptied whenever the keys are unwrapped again or dropped, so that a
// cached opener never outlives the keys it came from.
func (v *Vault) opener(ctx context.Context, pack vault.ID) (*format.PackOpener, error) {
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return nil, err
	}
	v.openerMu.Lock()
	o := v.openers[pack]
	v.openerMu.Unlock()
	if o != nil {
		return o, nil
	}
	prefix, err := readRange(ctx, v.opt.Store, packHandle(pack), 0, format.PackPrefixSize)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", pack, err)
	}
	o, err = format.NewPackOpener(pack, prefix, ks.dek)
	if err != nil {
		return nil, err
	}
	v.openerMu.Lock()
	if v.keys.Load() == ks { // not if the keys were refreshed or dropped meanwhile
		v.openers[pack] = o
	}
	v.openerMu.Unlock()
	return o, nil
}

// LoadBlob reads, authenticates, decodes and verifies blob t/id, appending
// its data to dst[:0].
func (v *Vault) LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	return v.loadBlob(ctx, t, id, dst, v.id)
}

// loadBlob is LoadBlob checking the ID with idOf.
func (v *Vault) loadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte, idOf func([]byte) vault.ID) ([]byte, error) {
	r, err := v.mustLookup(ctx, t, id)
	if err != nil {
		return nil, err
	}
	return v.loadBlobAt(ctx, r, dst, idOf)
}

// loadBlobAt is loadBlob of the blob at r.
func (v *Vault) loadBlobAt(ctx context.Context, r vault.BlobRecord, dst []byte, idOf func([]byte) vault.ID) ([]byte, error) {
	t, id := r.Type, r.ID
	o, err := v.opener(ctx, r.Pack)
	if err != nil {
		return nil, err
	}
	bp, _ := v.sealedBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer v.sealedBufs.Put(bp)
	sealed, err := readRangeInto(ctx, v.opt.Store, packHandle(r.Pack), int64(r.Offset), int64(r.Length), *bp)
	if err != nil {
		return nil, fmt.Errorf("pack %s: blob %s: %w", r.Pack, id, err)
	}
	*bp = sealed
	p, err := o.Open(sealed[:0], t, id, r.Offset, sealed)
	if err != nil {
		return nil, err
	}
	return v.decodeVerify(r, id, p, dst, idOf)
}

// LoadEncoded returns blob t/id unsealed but still encoded (the encoding
// byte and the possibly compressed payload, as SaveBlob took it), appended
// to dst[:0], and its raw length. The GCM tag is checked. With h set, a
// tree's ID is checked with h (the hasher of the dedup domain the reader
// names); a data blob's is not (whoever decodes it, a remote agent,
// verifies it) unless LoadEncodedVerified asks for it.
func (v *Vault) LoadEncoded(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte, h *format.IDHasher) ([]byte, uint32, error) {
	return v.LoadEncodedVerified(ctx, t, id, dst, h, nil)
}

// LoadEncodedVerified is LoadEncoded that, with scratch set, checks a
// data blob's ID with h too, decoding it into *scratch (grown as needed):
// the one way to prove that a blob belongs to h's dedup domain, whose
// key alone makes its content hash to its ID (docs/format.md §1.3).
func (v *Vault) LoadEncodedVerified(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte, h *format.IDHasher, scratch *[]byte) ([]byte, uint32, error) {
	r, err := v.mustLookup(ctx, t, id)
	if err != nil {
		return nil, 0, err
	}
	return v.loadEncodedAt(ctx, r, dst, h, scratch)
}

// loadEncodedAt is LoadEncodedVerified of the blob at r.
func (v *Vault) loadEncodedAt(ctx context.Context, r vault.BlobRecord, dst []byte, h *format.IDHasher, scratch *[]byte) ([]byte, uint32, error) {
	t, id := r.Type, r.ID
	o, err := v.opener(ctx, r.Pack)
	if err != nil {
		return nil, 0, err
	}
	sealed, err := readRangeInto(ctx, v.opt.Store, packHandle(r.Pack), int64(r.Offset), int64(r.Length), dst)
	if err != nil {
		return nil, 0, fmt.Errorf("pack %s: blob %s: %w", r.Pack, id, err)
	}
	p, err := o.Open(sealed[:0], t, id, r.Offset, sealed)
	if err != nil {
		return nil, 0, err
	}
	switch {
	case h == nil:
	case t == vault.TreeBlob || scratch != nil:
		// A tree's ID is checked here too (docs/format.md §5): a reader
		// without the chunk-ID key (ls, diff, restore through a server)
		// cannot check it, and trees are small. A data blob's only when
		// asked (a source's reader, whose domain must be proven).
		var buf []byte
		if scratch != nil {
			buf = (*scratch)[:0]
		}
		out, err := v.decodeVerify(r, id, p, buf, h.ID)
		if scratch != nil && out != nil {
			*scratch = out
		}
		if err != nil {
			return nil, 0, err
		}
	}
	return p, r.RawLen, nil
}

// id computes a blob ID in the vault-wide domain, for any goroutine.
func (v *Vault) id(data []byte) vault.ID {
	h, _ := v.hashers.Get().(*format.IDHasher)
	if h == nil {
		h = v.hasher.Clone()
	}
	got := h.ID(data)
	v.hashers.Put(h)
	return got
}

// decodeVerify decodes the unsealed blob p into dst and checks its ID
// with idOf.
func (v *Vault) decodeVerify(r vault.BlobRecord, id vault.ID, p, dst []byte, idOf func([]byte) vault.ID) ([]byte, error) {
	out, err := v.codec.Decode(dst, p, r.RawLen)
	if err != nil {
		return nil, fmt.Errorf("pack %s: blob %s: %w", r.Pack, id, err)
	}
	if idOf(out) != id {
		return out, fmt.Errorf("pack %s: blob %s: %w: content does not match its ID", r.Pack, id, vault.ErrCorrupt)
	}
	return out, nil
}

// NewHasher returns an ID hasher for one goroutine.
func (v *Vault) NewHasher() *format.IDHasher { return v.hasher.Clone() }

// LoadTree loads and decodes tree id.
func (v *Vault) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	return loadTree(ctx, v, id)
}

// loadTree loads tree id through r (which checks its ID in r's dedup
// domain) and decodes it.
func loadTree(ctx context.Context, r interface {
	LoadBlob(context.Context, vault.BlobType, vault.ID, []byte) ([]byte, error)
}, id vault.ID) (*format.Tree, error) {
	b, err := r.LoadBlob(ctx, vault.TreeBlob, id, nil)
	if err != nil {
		return nil, err
	}
	t, err := format.DecodeTree(b)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id, err)
	}
	return t, nil
}

// SaveSnapshot seals s into the store and records it in the catalog. The
// caller must have flushed the blobs it references. s.ID is assigned.
// s is checked first (format.CheckSnapshot), so that a record that may
// not be stored leaves nothing behind; s.Time is taken as given (the
// vault server sets it to its own clock before calling).
func (v *Vault) SaveSnapshot(ctx context.Context, s vault.SnapshotRecord) (vault.SnapshotRecord, error) {
	var principal string
	if v.opt.Session != nil {
		principal = v.opt.Session.Principal
	}
	return v.SaveSnapshotBy(ctx, s, principal)
}

// SaveSnapshotBy is SaveSnapshot for a writer other than the vault's
// session (a server saving a client's snapshot): principal is recorded
// in the snapshot's chain entry (SnapshotWriters).
func (v *Vault) SaveSnapshotBy(ctx context.Context, s vault.SnapshotRecord, principal string) (vault.SnapshotRecord, error) {
	if err := format.CheckSnapshot(s); err != nil {
		return s, err
	}
	if err := v.checkSession(); err != nil {
		return s, err
	}
	rand.Read(s.ID[:])
	if err := v.recordSnapshot(ctx, s, principal); err != nil {
		return s, err
	}
	return s, nil
}

// SnapshotWriters returns, once the snapshot chain proves the list, every
// snapshot (soft-deleted ones included, oldest first) and who recorded
// each (its chain entry's principal; "" when not recorded, as for an
// imported, a recovered or a local snapshot).
func (v *Vault) SnapshotWriters(ctx context.Context) ([]vault.SnapshotRecord, map[vault.ID]string, error) {
	all, r, err := v.verifiedList(ctx)
	if err != nil {
		return nil, nil, err
	}
	by := make(map[vault.ID]string, len(r.states))
	for id, st := range r.states {
		if st.first.Kind == vault.ChainRecover {
			// The entry names who recovered it; who wrote it was lost
			// with the catalog.
			by[id] = ""
			continue
		}
		by[id] = st.first.Principal
	}
	return all, by, nil
}

// LoadSnapshot reads and authenticates the snapshot object id.
func (v *Vault) LoadSnapshot(ctx context.Context, id vault.ID) (vault.SnapshotRecord, error) {
	s, _, err := v.loadSnapshotLinked(ctx, id)
	return s, err
}

// loadSnapshotLinked is LoadSnapshot that also returns the object's chain
// link.
func (v *Vault) loadSnapshotLinked(ctx context.Context, id vault.ID) (vault.SnapshotRecord, format.SnapshotLink, error) {
	b, err := readAll(ctx, v.opt.Store, snapHandle(id), format.MaxSnapshotSize)
	if err != nil {
		return vault.SnapshotRecord{}, format.SnapshotLink{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	deks, err := v.dekFor(ctx)
	if err != nil {
		return vault.SnapshotRecord{}, format.SnapshotLink{}, err
	}
	return format.OpenSnapshotLinked(id, b, deks)
}

// Snapshots lists the vault's live snapshots (not soft-deleted), oldest
// first, once the snapshot chain proves the catalog's list
// (docs/format.md §8.2).
func (v *Vault) Snapshots(ctx context.Context) ([]vault.SnapshotRecord, error) {
	all, err := v.AllSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	live := all[:0]
	for _, s := range all {
		if s.Deleted.IsZero() {
			live = append(live, s)
		}
	}
	return live, nil
}

// AllSnapshots lists every snapshot, soft-deleted ones included (with
// Deleted set), oldest first, once the snapshot chain proves the list.
func (v *Vault) AllSnapshots(ctx context.Context) ([]vault.SnapshotRecord, error) {
	all, _, err := v.verifiedList(ctx)
	return all, err
}

// FindSnapshot resolves "latest", a full ID or a unique hex prefix, and
// authenticates the snapshot object: the catalog is only an index, so a
// damaged, missing or altered snapshot object fails here, naming it.
func (v *Vault) FindSnapshot(ctx context.Context, ref string) (vault.SnapshotRecord, error) {
	return v.FindSnapshotWhere(ctx, ref, nil)
}

// FindSnapshotWhere is FindSnapshot among the snapshots keep accepts (all
// when keep is nil): "latest" is the newest of them, and a snapshot it
// refuses is not found, as if it did not exist.
func (v *Vault) FindSnapshotWhere(ctx context.Context, ref string, keep func(vault.SnapshotRecord) bool) (vault.SnapshotRecord, error) {
	all, chain, err := v.verifiedList(ctx)
	// "latest" needs the whole list proven; a snapshot named by its ID
	// only its own entries (so that an intact snapshot stays restorable
	// from a vault whose list was tampered with).
	if err != nil && (ref == "latest" || chain == nil) {
		return vault.SnapshotRecord{}, err
	}
	var snaps []vault.SnapshotRecord
	for _, s := range all {
		if s.Deleted.IsZero() && (keep == nil || keep(s)) {
			snaps = append(snaps, s)
		}
	}
	s, ferr := FindSnapshot(snaps, ref)
	if ferr != nil {
		return s, errors.Join(ferr, err)
	}
	if err != nil {
		if d := chain.liveRecordOK(s); d != "" {
			return vault.SnapshotRecord{}, fmt.Errorf("snapshot %s: %w: %s", s.ID.Short(), vault.ErrCorrupt, d)
		}
	}
	stored, link, err := v.loadSnapshotLinked(ctx, s.ID)
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	if d := chain.checkObject(s, stored, link); d != "" {
		return vault.SnapshotRecord{}, fmt.Errorf("snapshot %s: %w: %s", s.ID.Short(), vault.ErrCorrupt, d)
	}
	// The source report is in the sealed object only (docs/format.md §8.7).
	s.Source = stored.Source
	return s, nil
}

// FindSnapshot resolves ref among snaps (oldest first).
func FindSnapshot(snaps []vault.SnapshotRecord, ref string) (vault.SnapshotRecord, error) {
	if ref == "latest" {
		if len(snaps) == 0 {
			return vault.SnapshotRecord{}, fmt.Errorf("no snapshots yet: %w", vault.ErrNotFound)
		}
		return slices.MaxFunc(snaps, func(a, b vault.SnapshotRecord) int { return a.Time.Compare(b.Time) }), nil
	}
	ref = strings.ToLower(ref)
	if _, err := hex.DecodeString(ref + strings.Repeat("0", len(ref)%2)); err != nil || ref == "" || len(ref) > 64 {
		return vault.SnapshotRecord{}, fmt.Errorf("snapshot %q: not \"latest\" nor a hex ID or prefix", ref)
	}
	var found []vault.SnapshotRecord
	for _, s := range snaps {
		if strings.HasPrefix(s.ID.String(), ref) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return vault.SnapshotRecord{}, fmt.Errorf("snapshot %q: %w", ref, vault.ErrNotFound)
	case 1:
		return found[0], nil
	}
	return vault.SnapshotRecord{}, fmt.Errorf("snapshot %q matches %d snapshots, give more digits: %w", ref, len(found), vault.ErrAmbiguous)
}

// KeyInfo describes what protects the vault, for `vault show`.
type KeyInfo struct {
	Algorithm   string
	KeySource   string // "platform-managed"
	KEK         vault.KeyRef
	WrapAlg     string
	DEKVersion  uint32
	DEKCount    int
	Created     time.Time // vault creation
	LastRotated time.Time // when the current DEK was created
	KeyringGen  uint64
}

// KeyInfo reports the vault's encryption settings.
func (v *Vault) KeyInfo() KeyInfo {
	ks := v.keys.Load()
	return keyInfo(v.cfg, ks.keyring, ks.cur)
}

func keyInfo(cfg format.Config, kr *format.Keyring, cur uint32) KeyInfo {
	ki := KeyInfo{Algorithm: "AES-256-GCM", KEK: vault.KeyRef{Provider: kr.KEK.Provider, KeyID: kr.KEK.KeyID, Version: kr.KEK.Version},
		WrapAlg: kr.KEK.Alg, DEKVersion: cur, DEKCount: len(kr.DEKs), Created: cfg.Created, KeyringGen: kr.Generation}
	if ki.KEK.Provider == "platform" {
		ki.KeySource = "platform-managed"
	} else {
		ki.KeySource = "customer-managed"
	}
	for _, d := range kr.DEKs {
		if d.Version == cur {
			ki.LastRotated = d.Created
		}
	}
	return ki
}

func readAll(ctx context.Context, s vault.Store, h vault.Handle, max int64) ([]byte, error) {
	rc, err := s.Get(ctx, h, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", h, vault.ErrCorrupt, max)
	}
	return b, nil
}

func readRange(ctx context.Context, s vault.Store, h vault.Handle, off, n int64) ([]byte, error) {
	return readRangeInto(ctx, s, h, off, n, nil)
}

// readRangeInto reads n bytes of h at off into buf (grown if needed).
func readRangeInto(ctx context.Context, s vault.Store, h vault.Handle, off, n int64, buf []byte) ([]byte, error) {
	rc, err := s.Get(ctx, h, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := buf[:0]
	if int64(cap(b)) < n {
		b = make([]byte, n)
	}
	b = b[:n]
	if _, err := io.ReadFull(rc, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s is shorter than expected", vault.ErrTruncated, h)
		}
		return nil, err
	}
	return b, nil
}
