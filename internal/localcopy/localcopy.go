// Package localcopy provides the agent's encrypted local fast-restore
// cache (coffer backup --local-copies N, coffer restore --from local;
// docs/operations.md, "Local copies").
//
// The cache is a vault of its own (the engine, on a directory store with
// its own SQLite catalog) whose key encryption key is a 256-bit cache key
// that the backed-up vault wraps: a server's key provider for the agent's
// own source identity, or a local vault's key provider. Its blobs keep the
// backed-up vault's IDs (the engine identifies them with that vault's
// dedup parameters), so a snapshot's trees are the vault's byte for byte,
// and a backup fills the cache with what it reads (Tee) without asking the
// vault for any data. Nothing is written in plaintext: packs, trees and
// snapshot objects are sealed by the engine (AES-256-GCM); the list of the
// snapshots held (host, paths, tags, times) and the dedup parameters are
// in a manifest sealed under the cache key; the engine's own snapshot
// records carry no name ("/" and host "local-copy").
//
// The key is held between backups as a lease: the key and its expiry,
// sealed under a key derived from a machine-local secret kept outside the
// cache directory. The agent refuses a lease whose time has passed, and
// deletes its lease when the vault refuses to renew it (token or key
// revoked). So a copy of the cache directory alone is useless; an attacker
// with root on the live agent during the lease can read the cache, as he
// can read the source; and once the lease has expired and cannot be
// renewed, an honest agent cannot read the cache.
package localcopy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Cipher is what seals the cache (LocalCopyStatus.Cipher).
const Cipher = "AES-256-GCM"

// DefaultLease is how long an unwrapped cache key may be used without
// the vault; MaxLease bounds what may be asked for.
const (
	DefaultLease = 7 * 24 * time.Hour
	MaxLease     = 90 * 24 * time.Hour
	MinLease     = time.Minute
)

// Labels of the keys derived here (one purpose each).
const (
	labelLease    = "coffer/v1/local-copy-lease"
	labelManifest = "coffer/v1/local-copy-manifest"
)

// Files in a cache directory.
const (
	keyFile      = "key.json"
	leaseFile    = "lease"
	manifestFile = "manifest"
	storeDir     = "store"
	catalogFile  = "catalog.db"
	catalogName  = "local-copy"
	snapHost     = "local-copy"
)

var (
	// ErrLeaseExpired: the lease's time has passed (or there is none);
	// the vault must renew it.
	ErrLeaseExpired = errors.New("local-copy key lease expired")
	// ErrNoCache: no local copies are kept for this vault.
	ErrNoCache = errors.New("no local copies")
	// ErrReset: the vault no longer opens this cache's key (another
	// identity, or a key encryption key it no longer has): a backup
	// starts a new cache.
	ErrReset = errors.New("local-copy key no longer opens")
	// ErrRefused: the vault answered that it will not unwrap the key
	// (token revoked or without the right, key encryption key revoked or
	// unreachable). Unlike a vault that cannot be reached, a refusal
	// deletes the lease at once.
	ErrRefused = errors.New("the vault refused the local-copy key")
)

// KeySource is the vault's side of the key: it makes a new wrapped key
// and unwraps one it made. Unwrap fails with an error wrapping ErrReset
// when the wrapped key is not (any more) one it opens for this caller
// (another identity's, or wrapped under a key encryption key the vault
// no longer uses), and with one wrapping ErrRefused when the vault
// refuses to unwrap it.
type KeySource interface {
	NewKey(ctx context.Context) (seal.Key, []byte, error)
	Unwrap(ctx context.Context, wrapped []byte) (seal.Key, error)
}

// Options locate a cache.
type Options struct {
	// Dir is this vault's cache directory ($COFFER_HOME/local-copies/…).
	Dir string
	// Secret is the machine-local secret file the lease is sealed with;
	// it must not be inside Dir.
	Secret string
	// Vault names the backed-up vault (a server URL and vault name, or a
	// local vault's directory), recorded so a cache is never used for
	// another one.
	Vault string
	Now   func() time.Time
	// Lease is how long the key may be used without the vault
	// (DefaultLease when 0).
	Lease time.Duration
}

func (o *Options) defaults() error {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Lease == 0 {
		o.Lease = DefaultLease
	}
	if o.Lease < MinLease || o.Lease > MaxLease {
		return fmt.Errorf("local-copy lease %s: want %s to %s", o.Lease, MinLease, MaxLease)
	}
	if rel, err := filepath.Rel(o.Dir, o.Secret); err == nil && !strings.HasPrefix(rel, "..") {
		return fmt.Errorf("local-copy secret %s is inside the cache directory %s", o.Secret, o.Dir)
	}
	return nil
}

// keyRecord is key.json: which cache this is, for which vault, and the
// cache key as the vault wrapped it.
type keyRecord struct {
	Format  int    `json:"format"`
	Cache   string `json:"cache"` // 32 random bytes, hex: binds the lease and the manifest
	Vault   string `json:"vault"`
	Wrapped []byte `json:"wrapped"`
}

// Entry is one snapshot held: the vault's record of it and the ID of the
// cache's own record.
type Entry struct {
	Snapshot vault.SnapshotRecord `json:"snapshot"`
	Local    vault.ID             `json:"local"`
}

// manifest is what the cache holds, sealed under the cache key.
type manifest struct {
	ChunkIDKey []byte              `json:"chunk_id_key"`
	GearSeed   []byte              `json:"gear_seed"`
	Chunker    vault.ChunkerParams `json:"chunker"`
	Entries    []Entry             `json:"entries"`
}

// Cache is an open cache.
type Cache struct {
	opt    Options
	rec    keyRecord
	key    seal.Key
	man    manifest
	dedup  vault.DedupParams
	v      *engine.Vault
	st     *local.Store
	cat    *sqlite.Catalog
	unlock func()
	// Expires is when the lease written or read ends.
	Expires time.Time
}

// Close closes the cache's vault and wipes its key.
func (c *Cache) Close() error {
	if c.v != nil {
		c.v.Close()
	}
	if c.cat != nil {
		c.cat.Close()
	}
	if c.st != nil {
		c.st.Close()
	}
	c.key.Wipe()
	c.dedup.ChunkIDKey.Wipe()
	c.dedup.GearSeed.Wipe()
	if c.unlock != nil {
		c.unlock()
		c.unlock = nil
	}
	return nil
}

// Entries lists the snapshots held, oldest first.
func (c *Cache) Entries() []Entry { return slices.Clone(c.man.Entries) }

// Vault is the cache's vault, to restore from (it verifies every blob
// against its ID).
func (c *Cache) Vault() *engine.Vault { return c.v }

func (c *Cache) cacheID() []byte {
	b, _ := hex.DecodeString(c.rec.Cache)
	return b
}

// OpenForBackup opens (or creates) the cache of opt.Vault for a backup
// whose vault has dedup parameters dp, renewing the lease through ks. A
// cache the vault no longer opens, or kept with other dedup parameters,
// is started again: reset then says why. An error from ks wrapping
// ErrRefused deletes the lease (the vault refused to renew it); any other
// (the vault cannot be reached) leaves it to run out; both are returned.
func OpenForBackup(ctx context.Context, opt Options, ks KeySource, dp vault.DedupParams) (c *Cache, reset string, err error) {
	if err := opt.defaults(); err != nil {
		return nil, "", err
	}
	unlock, err := lock(opt.Dir, true, nil)
	if err != nil {
		return nil, "", err
	}
	c, reset, err = openForBackup(ctx, opt, ks, dp)
	if err != nil {
		unlock()
		return nil, reset, err
	}
	c.unlock = unlock
	return c, reset, nil
}

func openForBackup(ctx context.Context, opt Options, ks KeySource, dp vault.DedupParams) (c *Cache, reset string, err error) {
	c = &Cache{opt: opt}
	rec, err := readKeyRecord(opt.Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A first local copy.
	case err != nil:
		reset = err.Error()
	case rec.Vault != opt.Vault:
		reset = fmt.Sprintf("the cache was kept for %s", rec.Vault)
	default:
		k, uerr := ks.Unwrap(ctx, rec.Wrapped)
		if errors.Is(uerr, ErrReset) {
			reset = uerr.Error()
			break
		}
		if uerr != nil {
			if errors.Is(uerr, ErrRefused) {
				// SECURITY: renewal refused (token revoked, key revoked or
				// unreachable for the vault): the key is no longer kept on
				// this disk. A vault that cannot be reached at all leaves
				// the lease to run out: that is when the copies are needed.
				os.Remove(filepath.Join(opt.Dir, leaseFile))
			}
			return nil, "", fmt.Errorf("renew the local-copy key lease: %w", uerr)
		}
		c.rec, c.key = rec, k
	}
	if c.rec.Cache == "" {
		if err := c.create(ctx, ks); err != nil {
			return nil, reset, err
		}
	}
	if err := c.writeLease(); err != nil {
		c.Close()
		return nil, reset, err
	}
	if err := c.readManifest(); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.Close()
		return nil, reset, err
	}
	if c.man.ChunkIDKey != nil && (string(c.man.ChunkIDKey) != string(dp.ChunkIDKey[:]) || string(c.man.GearSeed) != string(dp.GearSeed[:])) {
		// Blobs were identified with other keys (the vault's dedup scope
		// changed): start again rather than mix two ID spaces.
		c.Close()
		c2, _, err := openForBackup(ctx, opt, resetSource{ks}, dp)
		return c2, "the vault's dedup parameters changed", err
	}
	if c.man.ChunkIDKey == nil {
		c.man.ChunkIDKey, c.man.GearSeed, c.man.Chunker = slices.Clone(dp.ChunkIDKey[:]), slices.Clone(dp.GearSeed[:]), dp.Chunker
	}
	c.dedup = dp
	if err := c.openVault(ctx, true); err != nil {
		c.Close()
		return nil, reset, err
	}
	return c, reset, nil
}

// resetSource makes OpenForBackup start a new cache.
type resetSource struct{ KeySource }

func (r resetSource) Unwrap(context.Context, []byte) (seal.Key, error) {
	return seal.Key{}, ErrReset
}

// create starts a new cache in opt.Dir: what was there is removed.
func (c *Cache) create(ctx context.Context, ks KeySource) error {
	for _, n := range []string{manifestFile, leaseFile, keyFile, catalogFile, catalogFile + "-wal", catalogFile + "-shm", catalogFile + "-journal"} {
		if err := os.Remove(filepath.Join(c.opt.Dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("start a new local-copy cache: %w", err)
		}
	}
	if err := os.RemoveAll(filepath.Join(c.opt.Dir, storeDir)); err != nil {
		return fmt.Errorf("start a new local-copy cache: %w", err)
	}
	if err := os.MkdirAll(c.opt.Dir, 0o700); err != nil {
		return fmt.Errorf("create local-copy cache: %w", err)
	}
	k, w, err := ks.NewKey(ctx)
	if err != nil {
		return fmt.Errorf("local-copy key: %w", err)
	}
	var id [32]byte
	rand.Read(id[:])
	c.key = k
	c.rec = keyRecord{Format: 1, Cache: hex.EncodeToString(id[:]), Vault: c.opt.Vault, Wrapped: w}
	b, _ := json.MarshalIndent(c.rec, "", "  ")
	// The key record is the cache's commit point: a cache directory
	// without one is started again.
	if err := c.initVault(ctx); err != nil {
		return err
	}
	return fsutil.WriteFileSync(filepath.Join(c.opt.Dir, keyFile), b, 0o600)
}

// initVault creates the cache's vault, with soft delete off (what is
// pruned from the cache goes at once).
func (c *Cache) initVault(ctx context.Context) error {
	st, err := local.Open(filepath.Join(c.opt.Dir, storeDir))
	if err != nil {
		return err
	}
	cat, err := sqlite.Open(filepath.Join(c.opt.Dir, catalogFile))
	if err != nil {
		st.Close()
		return err
	}
	v, err := engine.Create(ctx, engine.Options{Store: st, Catalog: cat, Keys: cacheKEK{c.key}, Name: catalogName, Now: c.opt.Now}, engine.DefaultChunker())
	if err == nil {
		_, _, _, err = v.ChangeSettings(ctx, func(s *vault.VaultSettings) { s.SoftDelete = vault.SoftDeleteOff }, "local-copy", true)
		v.Close()
	}
	cat.Close()
	st.Close()
	if err != nil {
		return fmt.Errorf("create local-copy cache: %w", err)
	}
	return nil
}

// openVault opens the cache's vault; withDedup identifies blobs with the
// manifest's dedup parameters (the backed-up vault's).
func (c *Cache) openVault(ctx context.Context, withDedup bool) error {
	st, err := local.Open(filepath.Join(c.opt.Dir, storeDir))
	if err != nil {
		return err
	}
	cat, err := sqlite.Open(filepath.Join(c.opt.Dir, catalogFile))
	if err != nil {
		st.Close()
		return err
	}
	opt := engine.Options{Store: st, Catalog: cat, Keys: cacheKEK{c.key}, Name: catalogName, Now: c.opt.Now}
	if withDedup {
		d := c.dedup
		opt.Dedup = &d
	}
	v, err := engine.Open(ctx, opt)
	if err != nil {
		cat.Close()
		st.Close()
		return fmt.Errorf("open local-copy cache %s: %w", c.opt.Dir, err)
	}
	c.v, c.st, c.cat = v, st, cat
	return nil
}

// OpenOffline opens the cache of opt.Vault with the key its lease holds,
// without the vault: ErrLeaseExpired when the lease's time has passed or
// it cannot be read, ErrNoCache when there is no cache.
func OpenOffline(ctx context.Context, opt Options, waiting func()) (*Cache, error) {
	if err := opt.defaults(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(opt.Dir, keyFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoCache
	}
	unlock, err := lock(opt.Dir, false, waiting)
	if err != nil {
		return nil, err
	}
	c, err := openOffline(ctx, opt)
	if err != nil {
		unlock()
		return nil, err
	}
	c.unlock = unlock
	return c, nil
}

func openOffline(ctx context.Context, opt Options) (*Cache, error) {
	rec, err := readKeyRecord(opt.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoCache
	}
	if err != nil {
		return nil, err
	}
	if rec.Vault != opt.Vault {
		return nil, fmt.Errorf("%w for %s (the cache at %s is %s's)", ErrNoCache, opt.Vault, opt.Dir, rec.Vault)
	}
	c := &Cache{opt: opt, rec: rec}
	if err := c.readLease(); err != nil {
		return nil, err
	}
	if err := c.readManifest(); err != nil {
		c.Close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: none saved yet", ErrNoCache)
		}
		return nil, err
	}
	copy(c.dedup.ChunkIDKey[:], c.man.ChunkIDKey)
	copy(c.dedup.GearSeed[:], c.man.GearSeed)
	c.dedup.Chunker = c.man.Chunker
	if err := c.openVault(ctx, true); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Renew unwraps the cache key through ks and writes a fresh lease. A
// refusal (ErrRefused) or a key the vault no longer opens (ErrReset)
// deletes the lease; a vault that cannot be reached leaves it to run out.
func Renew(ctx context.Context, opt Options, ks KeySource) (time.Time, error) {
	if err := opt.defaults(); err != nil {
		return time.Time{}, err
	}
	rec, err := readKeyRecord(opt.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, ErrNoCache
	}
	if err != nil {
		return time.Time{}, err
	}
	if rec.Vault != opt.Vault {
		return time.Time{}, fmt.Errorf("%w for %s (the cache at %s is %s's)", ErrNoCache, opt.Vault, opt.Dir, rec.Vault)
	}
	k, err := ks.Unwrap(ctx, rec.Wrapped)
	if err != nil {
		if errors.Is(err, ErrRefused) || errors.Is(err, ErrReset) {
			// SECURITY: as in OpenForBackup (where a reset starts a new
			// cache, lease and all): the vault will not give this key
			// back, so this disk no longer keeps it either.
			os.Remove(filepath.Join(opt.Dir, leaseFile))
		}
		return time.Time{}, fmt.Errorf("renew the local-copy key lease: %w", err)
	}
	c := &Cache{opt: opt, rec: rec, key: k}
	defer c.Close()
	if err := c.writeLease(); err != nil {
		return time.Time{}, err
	}
	return c.Expires, nil
}

func readKeyRecord(dir string) (keyRecord, error) {
	var rec keyRecord
	b, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return rec, err
	}
	if len(b) > 64<<10 {
		return rec, fmt.Errorf("local-copy key record %s: over 64 KiB", filepath.Join(dir, keyFile))
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("local-copy key record %s: %w", filepath.Join(dir, keyFile), err)
	}
	if id, err := hex.DecodeString(rec.Cache); err != nil || len(id) != 32 || rec.Format != 1 || len(rec.Wrapped) == 0 {
		return rec, fmt.Errorf("local-copy key record %s: %w: malformed", filepath.Join(dir, keyFile), vault.ErrCorrupt)
	}
	return rec, nil
}

// machineSecret reads (creating when create is set) the machine-local
// secret that seals leases.
func (c *Cache) machineSecret(create bool) (seal.Key, error) {
	var k seal.Key
	b, err := os.ReadFile(c.opt.Secret)
	if errors.Is(err, fs.ErrNotExist) && create {
		k = seal.NewRandomKey()
		if err := os.MkdirAll(filepath.Dir(c.opt.Secret), 0o700); err != nil {
			return k, err
		}
		var f *os.File
		f, err = os.OpenFile(c.opt.Secret, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, err = f.Write(k[:])
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				return k, fsutil.SyncDir(filepath.Dir(c.opt.Secret))
			}
			os.Remove(c.opt.Secret)
			return k, fmt.Errorf("write local-copy secret %s: %w", c.opt.Secret, err)
		}
		if !errors.Is(err, fs.ErrExist) {
			return k, fmt.Errorf("write local-copy secret %s: %w", c.opt.Secret, err)
		}
		b, err = os.ReadFile(c.opt.Secret) // another process made it first
	}
	if err != nil {
		return k, fmt.Errorf("local-copy secret: %w", err)
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("local-copy secret %s: %w: %d bytes", c.opt.Secret, vault.ErrCorrupt, len(b))
	}
	copy(k[:], b)
	clear(b)
	return k, nil
}

// The lease file: 8 bytes of expiry (Unix seconds, big-endian), a 32-byte
// salt, then the cache key sealed (AES-256-GCM, zero nonce under a key
// derived from the machine secret and that fresh salt, used once) with
// the label, the cache's ID and the expiry as AAD.
func leaseAAD(cache []byte, exp uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(labelLease+"\x00"), cache...), exp)
}

func (c *Cache) writeLease() error {
	ms, err := c.machineSecret(true)
	if err != nil {
		return err
	}
	defer ms.Wipe()
	exp := c.opt.Now().Add(c.opt.Lease).Unix()
	out := binary.BigEndian.AppendUint64(nil, uint64(exp))
	salt := make([]byte, 32)
	rand.Read(salt)
	out = append(out, salt...)
	k := seal.Derive(ms, salt, labelLease)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	out = seal.NewAEAD(k).Seal(out, nonce[:], c.key[:], leaseAAD(c.cacheID(), uint64(exp)))
	if err := fsutil.WriteFileSync(filepath.Join(c.opt.Dir, leaseFile), out, 0o600); err != nil {
		return fmt.Errorf("write local-copy lease: %w", err)
	}
	c.Expires = time.Unix(exp, 0).UTC()
	return nil
}

func (c *Cache) readLease() error {
	b, err := os.ReadFile(filepath.Join(c.opt.Dir, leaseFile))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: no lease is held (it expired, or the vault refused to renew it)", ErrLeaseExpired)
	}
	if err != nil {
		return err
	}
	if len(b) != 8+32+seal.KeySize+seal.Overhead {
		return fmt.Errorf("%w: the lease file is damaged (%d bytes)", ErrLeaseExpired, len(b))
	}
	exp := binary.BigEndian.Uint64(b[:8])
	ms, err := c.machineSecret(false)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLeaseExpired, err)
	}
	defer ms.Wipe()
	k := seal.Derive(ms, b[8:40], labelLease)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	pt, err := seal.NewAEAD(k).Open(nil, nonce[:], b[40:], leaseAAD(c.cacheID(), exp))
	if err != nil {
		return fmt.Errorf("%w: the lease does not open with this machine's secret (%s): it was altered, or made elsewhere", ErrLeaseExpired, c.opt.Secret)
	}
	defer clear(pt)
	c.Expires = time.Unix(int64(exp), 0).UTC()
	// SECURITY: the expiry is authenticated with the key (AAD): it cannot
	// be moved without the machine secret. An honest agent honours it.
	if !c.opt.Now().Before(c.Expires) {
		// Of no use to an honest agent any more, and of use only to
		// someone who also has the machine secret: gone.
		os.Remove(filepath.Join(c.opt.Dir, leaseFile))
		return fmt.Errorf("%w at %s", ErrLeaseExpired, c.Expires.Format(time.RFC3339))
	}
	copy(c.key[:], pt)
	return nil
}

// The manifest file: a 32-byte salt, then the manifest's JSON sealed
// (AES-256-GCM, zero nonce under a key derived from the cache key and
// that fresh salt, used once) with the label and the cache's ID as AAD.
func (c *Cache) manifestAAD() []byte { return append([]byte(labelManifest+"\x00"), c.cacheID()...) }

func (c *Cache) readManifest() error {
	b, err := os.ReadFile(filepath.Join(c.opt.Dir, manifestFile))
	if err != nil {
		return err
	}
	if len(b) < 32+seal.Overhead || len(b) > 64<<20 {
		return fmt.Errorf("local-copy manifest: %w: %d bytes", vault.ErrCorrupt, len(b))
	}
	k := seal.Derive(c.key, b[:32], labelManifest)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	pt, err := seal.NewAEAD(k).Open(nil, nonce[:], b[32:], c.manifestAAD())
	if err != nil {
		return fmt.Errorf("local-copy manifest %s: %w: it fails authentication (damaged or altered)", filepath.Join(c.opt.Dir, manifestFile), vault.ErrCorrupt)
	}
	defer clear(pt)
	var m manifest
	if err := json.Unmarshal(pt, &m); err != nil {
		return fmt.Errorf("local-copy manifest: %w: %v", vault.ErrCorrupt, err)
	}
	if len(m.ChunkIDKey) != seal.KeySize || len(m.GearSeed) != seal.KeySize {
		return fmt.Errorf("local-copy manifest: %w: key sizes", vault.ErrCorrupt)
	}
	c.man = m
	return nil
}

// writeManifest replaces the manifest durably: the commit point of every
// change to what the cache holds.
func (c *Cache) writeManifest() error {
	pt, err := json.Marshal(c.man)
	if err != nil {
		return err
	}
	defer clear(pt)
	salt := make([]byte, 32, 32+len(pt)+seal.Overhead)
	rand.Read(salt)
	k := seal.Derive(c.key, salt, labelManifest)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	out := seal.NewAEAD(k).Seal(salt, nonce[:], pt, c.manifestAAD())
	if err := fsutil.WriteFileSync(filepath.Join(c.opt.Dir, manifestFile), out, 0o600); err != nil {
		return fmt.Errorf("write local-copy manifest: %w", err)
	}
	return nil
}

// cacheKEK is the cache vault's key provider: the cache key itself.
type cacheKEK struct{ k seal.Key }

func (p cacheKEK) Current() vault.KeyRef {
	return vault.KeyRef{Provider: "local-copy", KeyID: "cache-key", Version: "1"}
}

func (p cacheKEK) Wrap(_ context.Context, secret, aad []byte) (vault.WrappedKey, error) {
	if len(secret) != seal.KeySize {
		return vault.WrappedKey{}, fmt.Errorf("local-copy key: wrap %d bytes: want %d", len(secret), seal.KeySize)
	}
	var s seal.Key
	copy(s[:], secret)
	defer s.Wipe()
	return vault.WrappedKey{KEK: p.Current(), Alg: "hkdf-aes-256-gcm", Data: seal.Wrap(p.k, s, aad)}, nil
}

func (p cacheKEK) Unwrap(_ context.Context, w vault.WrappedKey, aad []byte) ([]byte, error) {
	if w.KEK != p.Current() {
		return nil, fmt.Errorf("local-copy key: %w: wrapped under %s", vault.ErrKeyUnavailable, w.KEK)
	}
	k, err := seal.Unwrap(p.k, w.Data, aad)
	if err != nil {
		return nil, fmt.Errorf("local-copy key: %w", vault.ErrWrongKey)
	}
	out := slices.Clone(k[:])
	k.Wipe()
	return out, nil
}
