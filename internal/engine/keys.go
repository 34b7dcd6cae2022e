package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// keyState is the vault's unwrapped keys and the keyring generation they
// came from. It is never changed once published: a key change builds a new
// one and swaps it in (docs/keys.md).
type keyState struct {
	keyring  *format.Keyring
	deks     map[uint32]seal.Key // nil once dropped (Options.KeyTTL)
	cur      uint32              // the DEK new packs and snapshots use
	provider vault.KeyProvider   // whose KEK wraps keyring
	loaded   time.Time           // when deks were unwrapped
	chain    seal.Key            // the snapshot-chain key (format 2, chain.go); zero once dropped
}

// dek returns DEK version ver.
func (ks *keyState) dek(ver uint32) (seal.Key, error) {
	k, ok := ks.deks[ver]
	if !ok {
		return k, fmt.Errorf("%w: the keyring has no DEK version %d (either the object naming it is damaged, or a newer keyring generation is missing from the store: run coffer check --read-data)", vault.ErrKeyUnavailable, ver)
	}
	return k, nil
}

func (v *Vault) expired(ks *keyState) bool {
	return ks.deks == nil || (v.opt.KeyTTL > 0 && v.opt.Now().Sub(ks.loaded) >= v.opt.KeyTTL)
}

// liveKeys returns the vault's unwrapped keys, unwrapping them again with
// the key provider when they were dropped or have outlived
// Options.KeyTTL. When the provider fails (a revoked customer key), the
// keys are dropped and every operation that needs them fails with the
// provider's error (vault.ErrKeyUnavailable) until it works again.
func (v *Vault) liveKeys(ctx context.Context) (*keyState, error) {
	if ks := v.keys.Load(); !v.expired(ks) {
		return ks, nil
	}
	v.keyMu.Lock()
	defer v.keyMu.Unlock()
	return v.liveKeysLocked(ctx)
}

func (v *Vault) liveKeysLocked(ctx context.Context) (*keyState, error) {
	old := v.keys.Load()
	if !v.expired(old) {
		return old, nil // another request unwrapped them meanwhile
	}
	ks, root, err := v.unwrapKeys(ctx, old.provider)
	root.Wipe() // the dedup keys derived from it at open stay as they are
	if err != nil {
		if old.deks != nil {
			v.dropKeys(old)
		}
		err = fmt.Errorf("vault %q: the keys' time to live (%s) ended and unwrapping them again failed: %w", v.opt.Name, v.opt.KeyTTL, err)
	} else {
		v.keys.Store(ks)
		v.clearOpeners()
	}
	if v.opt.OnKeyRefresh != nil {
		v.opt.OnKeyRefresh(err)
	}
	return ks, err
}

// unwrapKeys unwraps the root secret and every DEK of the newest keyring
// generation with p. The caller wipes the root secret.
func (v *Vault) unwrapKeys(ctx context.Context, p vault.KeyProvider) (*keyState, seal.Key, error) {
	var root seal.Key
	kr, err := latestKeyring(ctx, v.opt.Store, v.rec.ID)
	if err != nil {
		return nil, root, err
	}
	kek := keyRefOf(kr)
	unwrap := func(data, aad []byte, what string) (seal.Key, error) {
		var k seal.Key
		b, err := p.Unwrap(ctx, vault.WrappedKey{KEK: kek, Alg: kr.KEK.Alg, Data: data}, aad)
		if err != nil {
			return k, fmt.Errorf("unwrap %s: %w", what, err)
		}
		if len(b) != seal.KeySize {
			clear(b)
			return k, fmt.Errorf("%s: %w: unwrapped %d bytes", what, vault.ErrCorrupt, len(b))
		}
		copy(k[:], b)
		clear(b)
		return k, nil
	}
	if root, err = unwrap(kr.Root, rootAAD(v.rec.ID), "root secret"); err != nil {
		return nil, root, err
	}
	deks := map[uint32]seal.Key{}
	for _, d := range kr.DEKs {
		k, err := unwrap(d.Wrapped, dekAAD(v.rec.ID, d.Version), fmt.Sprintf("DEK v%d", d.Version))
		if err != nil {
			root.Wipe()
			return nil, root, err
		}
		deks[d.Version] = k
	}
	ks := &keyState{keyring: kr, deks: deks, cur: kr.CurrentDEK, provider: p, loaded: v.opt.Now()}
	ks.chain = format.ChainKey(root, v.rec.ID)
	return ks, root, nil
}

// dropKeys replaces old with a state that holds no DEK, and empties the
// pack-opener cache. The old DEKs are not wiped in place, since requests
// in flight may still be reading them; they are no longer referenced once
// those end, and go with the garbage collector.
func (v *Vault) dropKeys(old *keyState) {
	v.keys.Store(&keyState{keyring: old.keyring, cur: old.cur, provider: old.provider})
	v.clearOpeners()
}

func (v *Vault) clearOpeners() {
	v.openerMu.Lock()
	clear(v.openers)
	v.openerMu.Unlock()
}

// EnsureKeys makes sure the vault's keys are unwrapped and usable,
// unwrapping them again when they have outlived Options.KeyTTL; it fails
// as every data operation would (vault.ErrKeyUnavailable for a revoked
// key).
func (v *Vault) EnsureKeys(ctx context.Context) error {
	_, err := v.liveKeys(ctx)
	return err
}

// KeyProvider is the provider whose KEK currently wraps the vault's keys.
func (v *Vault) KeyProvider() vault.KeyProvider { return v.keys.Load().provider }

// KeysExpired reports whether the vault's unwrapped keys have outlived
// Options.KeyTTL (or were dropped already).
func (v *Vault) KeysExpired() bool { return v.opt.KeyTTL > 0 && v.expired(v.keys.Load()) }

// ExpireKeys drops the unwrapped keys when they have outlived
// Options.KeyTTL, and reports whether it did. A server calls it for idle
// vaults (after Flush, so that no half-filled pack keeps a DEK); the next
// operation that needs the keys unwraps them again.
func (v *Vault) ExpireKeys() bool {
	v.keyMu.Lock()
	defer v.keyMu.Unlock()
	ks := v.keys.Load()
	if ks.deks == nil || !v.KeysExpired() {
		return false
	}
	v.dropKeys(ks)
	return true
}

func (ks *keyState) wipe() {
	for k, d := range ks.deks {
		d.Wipe()
		ks.deks[k] = d
	}
	ks.chain.Wipe()
}

// ErrKeyChanged reports that another process changed the vault's keys
// (wrote the next keyring generation) at the same moment: run the
// operation again.
var ErrKeyChanged = errors.New("the vault's keys were changed at the same moment by another process; run the command again")

// RotateDEK stores the next keyring generation with a fresh DEK, which new
// packs and snapshots use from now on; packs already stored keep the DEK
// version they name, which stays in the keyring. It returns the new
// version. Packs being filled when it runs finish with the DEK they
// started with.
func (v *Vault) RotateDEK(ctx context.Context) (uint32, error) {
	v.keyMu.Lock()
	defer v.keyMu.Unlock()
	old, err := v.liveKeysLocked(ctx)
	if err != nil {
		return 0, fmt.Errorf("rotate DEK: %w", err)
	}
	kek := old.provider.Current()
	if kek.Provider != old.keyring.KEK.Provider || kek.KeyID != old.keyring.KEK.KeyID || kek.Version != old.keyring.KEK.Version {
		return 0, fmt.Errorf("rotate DEK: the keyring is wrapped by %s but the key provider's current key is %s: rewrap first", keyRefOf(old.keyring), kek)
	}
	next := old.cur
	for ver := range old.deks {
		next = max(next, ver)
	}
	next++
	dek := seal.NewRandomKey()
	w, err := old.provider.Wrap(ctx, dek[:], dekAAD(v.rec.ID, next))
	if err != nil {
		dek.Wipe()
		return 0, fmt.Errorf("rotate DEK: wrap DEK v%d: %w", next, err)
	}
	kr := *old.keyring
	kr.Generation++
	kr.Created = v.opt.Now().UTC()
	kr.DEKs = append(append([]format.KeyringDEK{}, old.keyring.DEKs...), format.KeyringDEK{Version: next, Created: kr.Created, Wrapped: w.Data})
	kr.CurrentDEK = next
	deks := make(map[uint32]seal.Key, len(old.deks)+1)
	for ver, k := range old.deks {
		deks[ver] = k
	}
	deks[next] = dek
	if err := v.storeKeyring(ctx, &kr); err != nil {
		dek.Wipe()
		return 0, fmt.Errorf("rotate DEK: %w", err)
	}
	v.keys.Store(&keyState{keyring: &kr, deks: deks, cur: next, provider: old.provider, loaded: old.loaded, chain: old.chain})
	return next, nil
}

// Rewrap stores the next keyring generation with the root secret and
// every DEK wrapped by to's current KEK, and uses to from now on. Nothing
// else changes: packs, trees and snapshots stay byte for byte as they are
// (docs/keys.md: rewrap, never re-encrypt). The old KEK is needed once,
// to unwrap the root secret.
func (v *Vault) Rewrap(ctx context.Context, to vault.KeyProvider) error {
	v.keyMu.Lock()
	defer v.keyMu.Unlock()
	old, err := v.liveKeysLocked(ctx)
	if err != nil {
		return fmt.Errorf("rewrap: %w", err)
	}
	rootB, err := old.provider.Unwrap(ctx, vault.WrappedKey{KEK: keyRefOf(old.keyring), Alg: old.keyring.KEK.Alg, Data: old.keyring.Root}, rootAAD(v.rec.ID))
	if err != nil {
		return fmt.Errorf("rewrap: unwrap the root secret with the current key %s: %w", keyRefOf(old.keyring), err)
	}
	defer clear(rootB)
	wroot, err := to.Wrap(ctx, rootB, rootAAD(v.rec.ID))
	if err != nil {
		return fmt.Errorf("rewrap: wrap the root secret with %s: %w", to.Current(), err)
	}
	kr := *old.keyring
	kr.Generation++
	kr.Created = v.opt.Now().UTC()
	kr.KEK = format.KeyringKEK{Provider: wroot.KEK.Provider, KeyID: wroot.KEK.KeyID, Version: wroot.KEK.Version, Alg: wroot.Alg}
	kr.Root = wroot.Data
	kr.DEKs = make([]format.KeyringDEK, len(old.keyring.DEKs))
	for i, d := range old.keyring.DEKs {
		k, ok := old.deks[d.Version]
		if !ok {
			return fmt.Errorf("rewrap: %w: DEK v%d is not loaded", vault.ErrKeyUnavailable, d.Version)
		}
		w, err := to.Wrap(ctx, k[:], dekAAD(v.rec.ID, d.Version))
		if err != nil {
			return fmt.Errorf("rewrap: wrap DEK v%d with %s: %w", d.Version, to.Current(), err)
		}
		if w.KEK != wroot.KEK || w.Alg != wroot.Alg {
			return fmt.Errorf("rewrap: the key provider changed keys while wrapping (%s, then %s)", wroot.KEK, w.KEK)
		}
		kr.DEKs[i] = format.KeyringDEK{Version: d.Version, Created: d.Created, Wrapped: w.Data}
	}
	// Prove the new generation opens before it is stored.
	back, err := to.Unwrap(ctx, wroot, rootAAD(v.rec.ID))
	if err != nil || !bytes.Equal(back, rootB) {
		return fmt.Errorf("rewrap: the new key does not give the root secret back (%v); nothing was changed", err)
	}
	clear(back)
	if err := v.storeKeyring(ctx, &kr); err != nil {
		return fmt.Errorf("rewrap: %w", err)
	}
	v.keys.Store(&keyState{keyring: &kr, deks: old.deks, cur: old.cur, provider: to, loaded: old.loaded, chain: old.chain})
	// The older generations wrap the same DEKs under the previous KEK:
	// left in the store, that key would still open the vault, and a
	// revoked customer key would not shred anything while the platform
	// key file that wrapped the vault before still exists. The new
	// generation is durable, so they go now.
	if err := v.removeKeyringsBefore(ctx, kr.Generation); err != nil {
		v.log.Warn("older keyring generations could not all be removed; the previous key may still open them", "err", err)
		return fmt.Errorf("rewrap: the vault's keys are rewrapped, but %w", err)
	}
	return nil
}

// removeKeyringsBefore deletes every keyring generation older than gen.
func (v *Vault) removeKeyringsBefore(ctx context.Context, gen uint64) error {
	var old []vault.Handle
	err := v.opt.Store.List(ctx, vault.KeyObject, func(oi vault.ObjectInfo) error {
		if oi.Handle.Name < format.KeyringName(gen) {
			old = append(old, oi.Handle)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list older keyring generations: %w", err)
	}
	for _, h := range old {
		if err := v.opt.Store.Delete(ctx, h); err != nil && !errors.Is(err, vault.ErrNotFound) {
			return fmt.Errorf("remove keyring generation %s: %w", h.Name, err)
		}
	}
	return nil
}

// storeKeyring writes keyring generation kr.Generation, write-once.
func (v *Vault) storeKeyring(ctx context.Context, kr *format.Keyring) error {
	kb, err := json.MarshalIndent(kr, "", "  ")
	if err != nil {
		return err
	}
	err = v.opt.Store.Put(ctx, keyringHandle(kr.Generation), bytes.NewReader(kb), int64(len(kb)))
	if errors.Is(err, vault.ErrExists) {
		return ErrKeyChanged
	}
	if err != nil {
		return fmt.Errorf("write keyring generation %d: %w", kr.Generation, err)
	}
	return nil
}

func keyRefOf(kr *format.Keyring) vault.KeyRef {
	return vault.KeyRef{Provider: kr.KEK.Provider, KeyID: kr.KEK.KeyID, Version: kr.KEK.Version}
}

// ProbeKey checks that the vault's KEK is reachable and works: it unwraps
// the latest keyring generation's root secret with the vault's key
// provider, and wraps and unwraps a random secret with it.
func (v *Vault) ProbeKey(ctx context.Context) error {
	ks := v.keys.Load()
	b, err := ks.provider.Unwrap(ctx, vault.WrappedKey{KEK: keyRefOf(ks.keyring), Alg: ks.keyring.KEK.Alg, Data: ks.keyring.Root}, rootAAD(v.rec.ID))
	if err != nil {
		return fmt.Errorf("unwrap with %s: %w", keyRefOf(ks.keyring), err)
	}
	clear(b)
	probe := seal.NewRandomKey()
	defer probe.Wipe()
	aad := seal.KeyAAD(v.rec.ID, "probe", 0)
	w, err := ks.provider.Wrap(ctx, probe[:], aad)
	if err != nil {
		return fmt.Errorf("wrap with %s: %w", ks.provider.Current(), err)
	}
	back, err := ks.provider.Unwrap(ctx, w, aad)
	if err != nil {
		return fmt.Errorf("unwrap a fresh probe with %s: %w", w.KEK, err)
	}
	defer clear(back)
	if !bytes.Equal(back, probe[:]) {
		return fmt.Errorf("%w: the key provider %s gave back a different secret", vault.ErrWrongKey, w.KEK)
	}
	return nil
}
