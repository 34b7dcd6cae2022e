package platform

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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Servers on different hosts that share a catalog (PostgreSQL) share the
// platform key through it: each version is a row of the catalog, sealed
// under the deployment key, a secret every server is given in a file
// (as it is given its TLS key). The catalog's writer sees only sealed
// rows. See docs/format.md §1.1e.

// LabelCatalogSeal is the HKDF label of the key that seals platform key
// versions in a catalog, derived from the deployment key; it is also the
// start of each sealed version's AAD.
const LabelCatalogSeal = "coffer/v1/platform-kek-seal"

const deploymentKind = "coffer-deployment-key"

// Rows is where a shared catalog keeps the sealed versions
// (vault.Deployment provides it).
type Rows interface {
	PlatformKeys(ctx context.Context) ([]vault.SealedKEK, error)
	AddPlatformKey(ctx context.Context, k vault.SealedKEK) error
	DeletePlatformKeys(ctx context.Context, keyID string, versions []int) error
}

// catalogTimeout bounds one exchange with the catalog.
const catalogTimeout = 30 * time.Second

// deploymentFile is the on-disk form of the deployment key.
type deploymentFile struct {
	Kind   string `json:"kind"`
	Format int    `json:"format"`
	Key    []byte `json:"key"`
}

// LoadDeploymentKey reads the deployment key file at path. With create, a
// missing file is made (mode 0600, never overwritten: a second process
// creating it at once reads the first one's); created reports whether
// this call made it.
func LoadDeploymentKey(path string, create bool) (k seal.Key, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		var f deploymentFile
		nk := seal.NewRandomKey()
		f = deploymentFile{Kind: deploymentKind, Format: 1, Key: nk[:]}
		out, _ := json.MarshalIndent(f, "", "  ")
		nk.Wipe()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return k, false, fmt.Errorf("create deployment key: %w", err)
		}
		werr := writeNew(path, append(out, '\n'))
		clear(out)
		if werr != nil && !errors.Is(werr, vault.ErrExists) {
			return k, false, werr
		}
		k, _, err = LoadDeploymentKey(path, false)
		return k, werr == nil && err == nil, err
	}
	if errors.Is(err, fs.ErrNotExist) {
		return k, false, fmt.Errorf("%w: deployment key file %s does not exist", vault.ErrKeyUnavailable, path)
	}
	if err != nil {
		return k, false, fmt.Errorf("%w: read deployment key file: %v", vault.ErrKeyUnavailable, err)
	}
	var f deploymentFile
	err = json.Unmarshal(b, &f)
	clear(b)
	if err != nil || f.Kind != deploymentKind || f.Format != 1 || len(f.Key) != seal.KeySize {
		return k, false, fmt.Errorf("%w: %s is not a coffer deployment key file", vault.ErrKeyUnavailable, path)
	}
	copy(k[:], f.Key)
	clear(f.Key)
	return k, false, nil
}

// catalogBackend keeps the versions in a shared catalog's rows.
type catalogBackend struct {
	rows Rows
	seal seal.Key // derived from the deployment key: seals the versions
	// seenFile records, on this host, the newest version this server has
	// read ("" for none).
	seenFile string

	mu   sync.Mutex
	seen int    // the newest version read or added so far; the catalog never goes below it
	id   string // the key ID last read
}

// sealAAD binds a sealed version to its key ID, version and creation
// time: a row moved to another version, another key, or given another
// time does not open.
func sealAAD(id string, v int, created time.Time) []byte {
	b := append([]byte(LabelCatalogSeal), 0)
	b = append(b, id...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(v))
	return binary.BigEndian.AppendUint64(b, uint64(created.UnixNano()))
}

func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), catalogTimeout)
}

// read implements backend.
func (c *catalogBackend) read() (*Keystore, error) {
	ctx, cancel := ctxTimeout()
	defer cancel()
	rows, err := c.rows.PlatformKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: read the platform key from the catalog: %v", vault.ErrKeyUnavailable, err)
	}
	if len(rows) == 0 {
		c.mu.Lock()
		id := c.id
		c.mu.Unlock()
		if id != "" {
			return nil, fmt.Errorf("%w: the catalog no longer holds platform key %s", vault.ErrKeyUnavailable, id)
		}
		return nil, fmt.Errorf("%w: the catalog holds no platform key", vault.ErrKeyUnavailable)
	}
	ks := &Keystore{path: "the catalog", b: c, id: rows[0].KeyID, keys: map[int]seal.Key{}, info: map[int]time.Time{}}
	wipe := func() {
		for v := range ks.keys {
			wipeVersion(ks.keys, v)
		}
	}
	for _, r := range rows {
		// SECURITY: every row must open under the deployment key with its
		// own ID, version and time as AAD. A row a catalog writer made,
		// moved or edited fails here, and the server refuses to use any
		// version rather than pick among the rest.
		if r.KeyID != ks.id {
			wipe()
			return nil, fmt.Errorf("%w: the catalog holds versions of two platform keys (%s and %s): someone other than a server of this deployment wrote them", vault.ErrWrongKey, ks.id, r.KeyID)
		}
		k, err := seal.Unwrap(c.seal, r.Sealed, sealAAD(r.KeyID, r.Version, r.Created))
		if err != nil {
			wipe()
			return nil, fmt.Errorf("%w: platform key %s v%d in the catalog does not open under this server's deployment key: give it the deployment key of the servers that share this catalog, or, if they do not open it either, the row was changed by someone without the key", vault.ErrWrongKey, r.KeyID, r.Version)
		}
		ks.keys[r.Version] = k
		ks.info[r.Version] = r.Created.UTC()
		ks.cur = max(ks.cur, r.Version)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ks.cur < c.seen {
		// SECURITY: retirement never deletes the current version, so the
		// newest version only ever grows. A catalog whose newest version
		// is older than one this server has read was rolled back (a row
		// deleted, or an old copy of the database restored): new keyrings
		// must not be wrapped under a version the deployment had left.
		wipe()
		return nil, fmt.Errorf("%w: the catalog's newest platform key version is v%d, but this server has read v%d: the catalog was rolled back or the version deleted; if an old copy of the database was restored on purpose, remove %s and start again", vault.ErrKeyUnavailable, ks.cur, c.seen, c.seenFile)
	}
	c.id = ks.id
	if err := c.see(ks.cur); err != nil {
		wipe()
		return nil, err
	}
	return ks, nil
}

// see records that version v exists (read, or added by this server).
// The caller holds c.mu.
func (c *catalogBackend) see(v int) error {
	if v > c.seen {
		c.seen = v
		if c.seenFile != "" {
			if err := fsutil.WriteFileSync(c.seenFile, []byte(strconv.Itoa(v)+"\n"), 0o600); err != nil {
				return fmt.Errorf("record the platform key version read: %w", err)
			}
		}
	}
	return nil
}

// lock implements backend: the rows are the lock (a version is added
// once, AddPlatformKey refusing the second), and the servers run the
// rotation and the retirement as jobs under the catalog's job locks.
func (c *catalogBackend) lock() (func(), error) { return func() {}, nil }

// add implements backend.
func (c *catalogBackend) add(disk *Keystore, v int, created time.Time, k seal.Key) error {
	ctx, cancel := ctxTimeout()
	defer cancel()
	created = created.UTC()
	if err := c.rows.AddPlatformKey(ctx, vault.SealedKEK{KeyID: disk.id, Version: v, Created: created,
		Sealed: seal.Wrap(c.seal, k, sealAAD(disk.id, v, created))}); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.see(v)
}

// remove implements backend.
func (c *catalogBackend) remove(disk *Keystore, gone []int) error {
	ctx, cancel := ctxTimeout()
	defer cancel()
	return c.rows.DeletePlatformKeys(ctx, disk.id, gone)
}

func newCatalogBackend(rows Rows, deploymentKey seal.Key, seenFile string) (*catalogBackend, error) {
	c := &catalogBackend{rows: rows, seal: seal.Derive(deploymentKey, nil, LabelCatalogSeal), seenFile: seenFile}
	if seenFile != "" {
		b, err := os.ReadFile(seenFile)
		switch {
		case err == nil:
			n, perr := strconv.Atoi(strings.TrimSpace(string(b)))
			if perr != nil || n < 0 {
				return nil, fmt.Errorf("%s: not a platform key version", seenFile)
			}
			c.seen = n
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
	}
	return c, nil
}

// OpenCatalog opens the platform key kept in a shared catalog's rows,
// sealed under deploymentKey. seenFile, when not "", records on this host
// the newest version read, so that a catalog rolled back below it is
// refused after a restart too. vault.ErrKeyUnavailable when the catalog
// holds no platform key.
func OpenCatalog(rows Rows, deploymentKey seal.Key, seenFile string) (*Keystore, error) {
	c, err := newCatalogBackend(rows, deploymentKey, seenFile)
	if err != nil {
		return nil, err
	}
	return c.read()
}

// CreateInCatalog makes the platform key in a shared catalog, with one
// fresh version, unless the catalog holds one already (another server
// made it first): then it opens that one. With from, the versions of
// that keystore (a key file the servers used before) are copied into the
// catalog instead, so that the vaults they wrap keep opening.
func CreateInCatalog(rows Rows, deploymentKey seal.Key, seenFile string, from *Keystore, now time.Time) (*Keystore, error) {
	c, err := newCatalogBackend(rows, deploymentKey, seenFile)
	if err != nil {
		return nil, err
	}
	src := from
	if src == nil {
		var idb [8]byte
		rand.Read(idb[:])
		src = &Keystore{id: hex.EncodeToString(idb[:]), cur: 1, keys: map[int]seal.Key{1: seal.NewRandomKey()}, info: map[int]time.Time{1: now.UTC()}}
		defer wipeVersion(src.keys, 1)
	}
	src.mu.RLock()
	vs := make([]int, 0, len(src.keys))
	for v := range src.keys {
		vs = append(vs, v)
	}
	src.mu.RUnlock()
	if len(vs) == 0 {
		return nil, fmt.Errorf("%w: platform key %s: no versions to copy into the catalog (its secrets were dropped)", vault.ErrKeyUnavailable, src.id)
	}
	slices.Sort(vs)
	for i, v := range vs {
		src.mu.RLock()
		k, created := src.keys[v], src.info[v]
		src.mu.RUnlock()
		err := c.add(src, v, created, k)
		if errors.Is(err, vault.ErrExists) && i == 0 {
			break // another server made or copied it first: use that one
		}
		if err != nil {
			return nil, fmt.Errorf("store the platform key in the catalog: %w", err)
		}
	}
	return c.read()
}
