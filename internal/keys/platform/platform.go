// Package platform provides the platform keystore: the embedded default
// key provider, whose key encryption key (KEK) lives in a key file
// (mode 0600) generated on first use.
package platform

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Provider is the name recorded in key references.
const Provider = "platform"

// Alg names the wrapping construction (docs/format.md §1.1).
const Alg = "hkdf-sha256-aes-256-gcm"

const fileKind = "coffer-platform-kek"

// keyFile is the on-disk form of the keystore.
type keyFile struct {
	Kind    string    `json:"kind"`
	Format  int       `json:"format"`
	ID      string    `json:"id"`
	Current int       `json:"current"`
	Keys    []fileKey `json:"keys"`
}

type fileKey struct {
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	Key     []byte    `json:"key"` // base64 in JSON
}

// Keystore is a KEK file. It implements vault.KeyProvider.
type Keystore struct {
	path string  // where the versions live, for messages: a key file's path, or "the catalog"
	b    backend // reads and writes them
	id   string

	mu   sync.RWMutex // Rotate changes cur, keys and info
	cur  int
	keys map[int]seal.Key
	info map[int]time.Time
}

var _ vault.KeyProvider = (*Keystore)(nil)

// Create writes a new key file at path with one fresh KEK. It fails with
// vault.ErrExists if the file exists: a key file is never overwritten.
func Create(path string, now time.Time) (*Keystore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create key file: %w", err)
	}
	var idb [8]byte
	rand.Read(idb[:])
	k := seal.NewRandomKey()
	kf := keyFile{Kind: fileKind, Format: 1, ID: hex.EncodeToString(idb[:]), Current: 1,
		Keys: []fileKey{{Version: 1, Created: now.UTC(), Key: k[:]}}}
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	if err := writeNew(path, b); err != nil {
		return nil, err
	}
	return &Keystore{path: path, b: fileBackend{path}, id: kf.ID, cur: 1,
		keys: map[int]seal.Key{1: k}, info: map[int]time.Time{1: now.UTC()}}, nil
}

// writeNew writes b to path durably and atomically, failing if path
// exists: the bytes go to a temporary file that is synced and then linked
// into place, so no reader ever sees a partial key file.
func writeNew(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-key-")
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("create key file: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create key file %s: %w", path, vault.ErrExists)
		}
		return fmt.Errorf("create key file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Open reads the key file at path. A missing file fails with
// vault.ErrKeyUnavailable and says what to do.
func Open(path string) (*Keystore, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: platform key file %s does not exist: restore it from your copy of the key file, or point --key-file (COFFER_KEY_FILE) at it", vault.ErrKeyUnavailable, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read platform key file: %v", vault.ErrKeyUnavailable, err)
	}
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil || kf.Kind != fileKind {
		return nil, fmt.Errorf("%w: %s is not a coffer platform key file", vault.ErrKeyUnavailable, path)
	}
	if kf.Format != 1 {
		return nil, fmt.Errorf("%w: key file %s has unknown format %d", vault.ErrKeyUnavailable, path, kf.Format)
	}
	ks := &Keystore{path: path, b: fileBackend{path}, id: kf.ID, cur: kf.Current, keys: map[int]seal.Key{}, info: map[int]time.Time{}}
	for _, k := range kf.Keys {
		if len(k.Key) != seal.KeySize {
			return nil, fmt.Errorf("%w: key file %s: key version %d has %d bytes", vault.ErrKeyUnavailable, path, k.Version, len(k.Key))
		}
		var key seal.Key
		copy(key[:], k.Key)
		ks.keys[k.Version] = key
		ks.info[k.Version] = k.Created
	}
	if _, ok := ks.keys[ks.cur]; !ok {
		return nil, fmt.Errorf("%w: key file %s: current version %d missing", vault.ErrKeyUnavailable, path, ks.cur)
	}
	return ks, nil
}

// Path is the key file's location.
func (ks *Keystore) Path() string { return ks.path }

// Created is when the current KEK was generated.
func (ks *Keystore) Created() time.Time {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.info[ks.cur]
}

// Current implements vault.KeyProvider.
func (ks *Keystore) Current() vault.KeyRef {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return vault.KeyRef{Provider: Provider, KeyID: ks.id, Version: strconv.Itoa(ks.cur)}
}

// Rotate adds a fresh KEK version to the key file and makes it current;
// older versions stay, so what they wrapped still opens (a vault's keys
// are rewrapped under the new version by engine.Vault.Rewrap). Processes
// sharing the key file are serialised by a lock file beside it: one that
// finds the file already rotated since it read it adopts that version
// instead of adding another, so two never write different keys under the
// same version.
func (ks *Keystore) Rotate(now time.Time) (vault.KeyRef, error) {
	unlock, err := ks.b.lock()
	if err != nil {
		return vault.KeyRef{}, fmt.Errorf("rotate platform key: %w", err)
	}
	defer unlock()
	disk, err := ks.b.read()
	if err != nil {
		return vault.KeyRef{}, fmt.Errorf("rotate platform key: %w", err)
	}
	if disk.id != ks.id {
		return vault.KeyRef{}, fmt.Errorf("rotate platform key: %w: %s now holds key %s, not %s", vault.ErrWrongKey, ks.path, disk.id, ks.id)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if disk.cur > ks.cur { // another process rotated meanwhile: adopt it
		ks.cur, ks.keys, ks.info = disk.cur, disk.keys, disk.info
		return vault.KeyRef{Provider: Provider, KeyID: ks.id, Version: strconv.Itoa(ks.cur)}, nil
	}
	if disk.cur < ks.cur {
		// SECURITY: the current version is never retired, so it going away
		// means the versions were rolled back (an older copy, or a
		// catalog writer's deletion): adding a version now would put a
		// second key under a number that already wrapped keyrings.
		return vault.KeyRef{}, fmt.Errorf("rotate platform key: %w: %s's newest version is v%d, but v%d was current: the versions were rolled back", vault.ErrKeyUnavailable, ks.path, disk.cur, ks.cur)
	}
	next := 0
	for v := range disk.keys {
		next = max(next, v)
	}
	next++
	k := seal.NewRandomKey()
	if err := ks.b.add(disk, next, now.UTC(), k); err != nil {
		if errors.Is(err, vault.ErrExists) {
			// Another server added this version first (a shared catalog,
			// whose rows are the lock): adopt the versions as they are now.
			if again, rerr := ks.b.read(); rerr == nil && again.id == ks.id && again.cur > ks.cur {
				ks.cur, ks.keys, ks.info = again.cur, again.keys, again.info
				return vault.KeyRef{Provider: Provider, KeyID: ks.id, Version: strconv.Itoa(ks.cur)}, nil
			}
		}
		return vault.KeyRef{}, fmt.Errorf("rotate platform key: %w", err)
	}
	ks.keys, ks.info = disk.keys, disk.info
	ks.keys[next] = k
	ks.info[next] = now.UTC()
	ks.cur = next
	return vault.KeyRef{Provider: Provider, KeyID: ks.id, Version: strconv.Itoa(ks.cur)}, nil
}

// Version describes one KEK version in the key file.
type Version struct {
	Version int
	Created time.Time
}

// Versions lists the KEK versions in the key file as this keystore last
// read it, oldest first.
func (ks *Keystore) Versions() []Version {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	out := make([]Version, 0, len(ks.info))
	for v, c := range ks.info {
		out = append(out, Version{Version: v, Created: c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out
}

// Lock takes the lock that serialises changes to the key file at path
// (Rotate and Retire take it) and returns its release: a caller keeping
// state beside the key file that retirement depends on (the CLI's list
// of vaults) changes it under the same lock.
func Lock(path string) (func(), error) { return lockFile(path + ".lock") }

// backend is where a keystore's versions live: a key file, or a shared
// catalog's rows sealed under a deployment key (catalog.go).
type backend interface {
	// read returns the versions as they are now, in a keystore of their own.
	read() (*Keystore, error)
	// lock serialises changes among the processes sharing the versions.
	lock() (func(), error)
	// add stores version v (key k, made at created) beside disk's, as
	// read under the lock; vault.ErrExists when another process added v.
	add(disk *Keystore, v int, created time.Time, k seal.Key) error
	// remove deletes versions gone (never disk's current one).
	remove(disk *Keystore, gone []int) error
}

// fileBackend keeps the versions in a key file.
type fileBackend struct{ path string }

func (f fileBackend) read() (*Keystore, error) { return Open(f.path) }
func (f fileBackend) lock() (func(), error)    { return lockFile(f.path + ".lock") }
func (f fileBackend) add(disk *Keystore, v int, created time.Time, k seal.Key) error {
	kf := keyFile{Kind: fileKind, Format: 1, ID: disk.id, Current: v}
	for dv, dk := range disk.keys {
		kf.Keys = append(kf.Keys, fileKey{Version: dv, Created: disk.info[dv], Key: append([]byte(nil), dk[:]...)})
	}
	kf.Keys = append(kf.Keys, fileKey{Version: v, Created: created, Key: append([]byte(nil), k[:]...)})
	return f.write(kf)
}

func (f fileBackend) remove(disk *Keystore, gone []int) error {
	kf := keyFile{Kind: fileKind, Format: 1, ID: disk.id, Current: disk.cur}
	for v, k := range disk.keys {
		if !slices.Contains(gone, v) {
			kf.Keys = append(kf.Keys, fileKey{Version: v, Created: disk.info[v], Key: append([]byte(nil), k[:]...)})
		}
	}
	return f.write(kf)
}

// write replaces the key file with kf atomically, wiping the copies of
// the keys it made.
func (f fileBackend) write(kf keyFile) error {
	sort.Slice(kf.Keys, func(i, j int) bool { return kf.Keys[i].Version < kf.Keys[j].Version })
	b, err := json.MarshalIndent(kf, "", "  ")
	for i := range kf.Keys {
		clear(kf.Keys[i].Key)
	}
	if err != nil {
		return err
	}
	err = fsutil.WriteFileSync(f.path, append(b, '\n'), 0o600)
	clear(b)
	return err
}

// ID is the platform key's identifier, the KeyID of its key references.
func (ks *Keystore) ID() string { return ks.id }

// Retire deletes the KEK versions in drop from the key file and from
// memory, and returns those it deleted, in order. The current version is
// never deleted (it is skipped, as is a version the file no longer
// holds). It is the caller's duty to know that nothing needs a version
// any more: whatever a deleted version wrapped can never be unwrapped
// again (docs/keys.md, "Retiring platform key versions").
//
// The file is rewritten atomically (a synced temporary file renamed over
// it, then the directory synced) under the lock that Rotate takes, from
// the file as it is on disk then: a crash leaves either the old file or
// the new one, and a version another process added meanwhile is kept.
func (ks *Keystore) Retire(drop []int) ([]int, error) { return ks.RetireChecked(drop, nil) }

// RetireChecked is Retire, but calls check (when not nil) under the key
// file's lock before deleting anything, and deletes nothing when it
// fails: the caller re-reads there the state beside the key file it
// decided on (the CLI's list of vaults), which its writers change under
// the same lock (Lock), so that nothing it did not see is listed
// between its decision and the deletion.
func (ks *Keystore) RetireChecked(drop []int, check func() error) ([]int, error) {
	if len(drop) == 0 {
		return nil, nil
	}
	unlock, err := ks.b.lock()
	if err != nil {
		return nil, fmt.Errorf("retire platform key versions: %w", err)
	}
	defer unlock()
	if check != nil {
		if err := check(); err != nil {
			return nil, fmt.Errorf("retire platform key versions: %w", err)
		}
	}
	disk, err := ks.b.read()
	if err != nil {
		return nil, fmt.Errorf("retire platform key versions: %w", err)
	}
	if disk.id != ks.id {
		return nil, fmt.Errorf("retire platform key versions: %w: %s now holds key %s, not %s", vault.ErrWrongKey, ks.path, disk.id, ks.id)
	}
	gone := map[int]bool{}
	for _, v := range drop {
		// SECURITY: the current version wraps every keyring written from
		// now on; it is never deleted, whatever the caller asks.
		if _, ok := disk.keys[v]; ok && v != disk.cur {
			gone[v] = true
		}
	}
	var deleted []int
	for v := range gone {
		deleted = append(deleted, v)
	}
	sort.Ints(deleted)
	if len(deleted) > 0 {
		if err := ks.b.remove(disk, deleted); err != nil {
			return nil, fmt.Errorf("retire platform key versions: %w", err)
		}
	}
	for v := range gone {
		wipeVersion(disk.keys, v)
		delete(disk.info, v)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.keys != nil { // loaded: hold what the file holds now
		for v := range ks.keys {
			wipeVersion(ks.keys, v)
		}
		ks.keys = disk.keys
	} else { // dropped (key TTL): stay dropped
		for v := range disk.keys {
			wipeVersion(disk.keys, v)
		}
	}
	ks.info = disk.info
	ks.cur = max(ks.cur, disk.cur)
	return deleted, nil
}

// DropSecrets wipes every KEK version held in memory; the next Wrap or
// Unwrap reads the key file again (and fails if it is gone). A vault
// calls it when its unwrapped keys outlive their time to live.
func (ks *Keystore) DropSecrets() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	for v, k := range ks.keys {
		k.Wipe()
		ks.keys[v] = k
	}
	ks.keys = nil
}

var _ vault.SecretDropper = (*Keystore)(nil)

// wipeVersion overwrites version v's key in m and removes it.
func wipeVersion(m map[int]seal.Key, v int) {
	k := m[v]
	k.Wipe()
	m[v] = k
	delete(m, v)
}

// take makes what disk holds this keystore's, wiping the keys it
// replaces (or disk's, when this keystore holds none: DropSecrets). The
// caller holds ks.mu for writing.
func (ks *Keystore) take(disk *Keystore) {
	if ks.keys != nil {
		for v := range ks.keys {
			wipeVersion(ks.keys, v)
		}
		ks.keys = disk.keys
	} else {
		for v := range disk.keys {
			wipeVersion(disk.keys, v)
		}
	}
	ks.info, ks.cur = disk.info, disk.cur
}

// adoptNewer reads the key file and, when another process rotated it
// since this keystore read it, makes its newer current version this
// keystore's: a long-lived process then never wraps anything under a
// version that stopped being current (and that coffer key retire may
// delete once nothing it knows of needs it). A file that cannot be read
// changes nothing here; Wrap then fails or works as before.
func (ks *Keystore) adoptNewer() {
	disk, err := ks.b.read()
	if err != nil || disk.id != ks.id {
		return
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if disk.cur <= ks.cur {
		for v := range disk.keys {
			wipeVersion(disk.keys, v)
		}
		return
	}
	ks.take(disk)
}

// Refresh reads the key file again and makes what it holds now this
// keystore's: a newer current version another process rotated to, and
// the version list without those another process retired. A long-lived
// process sharing the key file with others (the replicas of a vault
// server) calls it before it decides anything from Versions or Current.
// The file's current version never goes back: a file whose current
// version is older than the one read before is refused.
func (ks *Keystore) Refresh() error {
	disk, err := ks.b.read()
	if err != nil {
		return err
	}
	if disk.id != ks.id {
		for v := range disk.keys {
			wipeVersion(disk.keys, v)
		}
		return fmt.Errorf("%w: %s now holds platform key %s, not %s", vault.ErrWrongKey, ks.path, disk.id, ks.id)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if disk.cur < ks.cur {
		for v := range disk.keys {
			wipeVersion(disk.keys, v)
		}
		return fmt.Errorf("%w: %s: its current version v%d is older than v%d, read before: the versions were rolled back", vault.ErrKeyUnavailable, ks.path, disk.cur, ks.cur)
	}
	ks.take(disk)
	return nil
}

// reload reads the key file again after DropSecrets. The caller holds
// ks.mu for writing.
func (ks *Keystore) reload() error {
	if ks.keys != nil {
		return nil
	}
	disk, err := ks.b.read()
	if err != nil {
		return err
	}
	if disk.id != ks.id {
		return fmt.Errorf("%w: %s now holds platform key %s, not %s", vault.ErrWrongKey, ks.path, disk.id, ks.id)
	}
	ks.keys, ks.info = disk.keys, disk.info
	ks.cur = max(ks.cur, disk.cur)
	return nil
}

// kek returns KEK version v (the current one when v is 0), reading the
// key file again if the versions were dropped.
func (ks *Keystore) kek(v int) (seal.Key, int, bool, error) {
	ks.mu.RLock()
	if ks.keys != nil {
		if v == 0 {
			v = ks.cur
		}
		k, ok := ks.keys[v]
		ks.mu.RUnlock()
		return k, v, ok, nil
	}
	ks.mu.RUnlock()
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if err := ks.reload(); err != nil {
		return seal.Key{}, v, false, err
	}
	if v == 0 {
		v = ks.cur
	}
	k, ok := ks.keys[v]
	return k, v, ok, nil
}

// Wrap implements vault.KeyProvider.
func (ks *Keystore) Wrap(_ context.Context, secret, aad []byte) (vault.WrappedKey, error) {
	if len(secret) != seal.KeySize {
		return vault.WrappedKey{}, fmt.Errorf("wrap: secret must be %d bytes", seal.KeySize)
	}
	var s seal.Key
	copy(s[:], secret)
	defer s.Wipe()
	ks.adoptNewer()
	kek, cur, ok, err := ks.kek(0)
	if err != nil {
		return vault.WrappedKey{}, fmt.Errorf("wrap: %w", err)
	}
	defer kek.Wipe()
	if !ok {
		return vault.WrappedKey{}, fmt.Errorf("wrap: %w: key file %s lacks its current version %d", vault.ErrKeyUnavailable, ks.path, cur)
	}
	ref := vault.KeyRef{Provider: Provider, KeyID: ks.id, Version: strconv.Itoa(cur)}
	return vault.WrappedKey{KEK: ref, Alg: Alg, Data: seal.Wrap(kek, s, aad)}, nil
}

// Unwrap implements vault.KeyProvider.
func (ks *Keystore) Unwrap(_ context.Context, w vault.WrappedKey, aad []byte) ([]byte, error) {
	if w.KEK.Provider != Provider {
		return nil, fmt.Errorf("%w: key was wrapped by %s, not the platform keystore", vault.ErrKeyUnavailable, w.KEK)
	}
	if w.KEK.KeyID != ks.id {
		return nil, fmt.Errorf("%w: the vault's keys are wrapped by platform key %s, but key file %s holds key %s: use the key file this vault was created with (--key-file)", vault.ErrWrongKey, w.KEK.KeyID, ks.path, ks.id)
	}
	v, err := strconv.Atoi(w.KEK.Version)
	if err != nil {
		return nil, fmt.Errorf("%w: bad KEK version %q", vault.ErrCorrupt, w.KEK.Version)
	}
	kek, _, ok, err := ks.kek(v)
	if err != nil {
		return nil, fmt.Errorf("unwrap: %w", err)
	}
	if !ok {
		// A version newer than any this keystore read: another process
		// sharing the key file rotated it (a replica).
		ks.adoptNewer()
		if kek, _, ok, err = ks.kek(v); err != nil {
			return nil, fmt.Errorf("unwrap: %w", err)
		}
	}
	defer kek.Wipe()
	if !ok {
		return nil, fmt.Errorf("%w: key file %s lacks version %d of platform key %s: the version was retired once no vault needed it (this keyring is from a copy of the vault made before its keys were rewrapped: use the copy of the key file from the same time), or the key file is an older copy", vault.ErrKeyUnavailable, ks.path, v, ks.id)
	}
	s, err := seal.Unwrap(kek, w.Data, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: platform key %s v%d in key file %s does not open the vault's keys (the key file was changed, or the keyring tampered with)", vault.ErrWrongKey, ks.id, v, ks.path)
	}
	out := make([]byte, seal.KeySize)
	copy(out, s[:])
	s.Wipe()
	return out, nil
}
