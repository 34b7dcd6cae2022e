package engine

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	// macKey is K_mac of docs/format.md §7.1, which authenticates the
	// next generation a key change writes; commit is the root
	// commitment (§7.3). Both go with the DEKs.
	macKey seal.Key
	commit [format.MACSize]byte
	chain  seal.Key // the snapshot-chain key (format 2, chain.go); zero once dropped
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

// unwrapKeys unwraps the root secret and every DEK of the keyring
// generation the catalog's anchor accepts with p, after checking it
// against the anchor and its MAC (docs/format.md §7.3): a generation a
// store writer put back or left out is refused before any DEK it names is
// used, and an object it planted above the anchored generation (which
// does not authenticate) is skipped with a warning. A newer generation a
// key holder proposed is anchored; a vault without an anchor is anchored
// at its verified latest generation. The caller wipes the root secret.
func (v *Vault) unwrapKeys(ctx context.Context, p vault.KeyProvider) (*keyState, seal.Key, error) {
	var root seal.Key
	id := v.rec.ID
	// The store is listed before the catalog is read, as a key change
	// writes them in the other order (§7.2): a generation stored and
	// anchored meanwhile is then seen as proposed, never as unknown.
	gens, _, err := listGenerations(ctx, v.opt.Store)
	if err != nil {
		return nil, root, fmt.Errorf("open vault: %w", err)
	}
	if len(gens) == 0 {
		return nil, root, fmt.Errorf("open vault: %w: the store holds no keyring (keys/)", vault.ErrNotFound)
	}
	anchor, props, aerr := v.opt.Catalog.KeyAnchor(ctx, id)
	anchored := aerr == nil
	if aerr != nil && !errors.Is(aerr, vault.ErrNotFound) {
		return nil, root, fmt.Errorf("read the keyring anchor: %w", aerr)
	}
	var kr *format.Keyring
	// SECURITY: with an anchor, the generations newer than it that no key
	// holder proposed are never unwrapped (their KEK reference is a store
	// writer's choice): they do not parse, are format 1, or are checked
	// below against K_mac of the root secret the anchor commits to, once
	// that is unwrapped from the anchored (or a proposed) generation.
	// Those that do not authenticate are objects a store writer can make
	// and are skipped (docs/format.md §7.3), so that one planted at
	// keys/<N+1> (and kept there by a bucket's retention) cannot keep the
	// vault from opening; one that authenticates is refused.
	var skipped []string
	var unproposed []*format.Keyring
	if anchored {
		kr, skipped, unproposed, err = anchoredKeyring(ctx, v.opt.Store, id, gens, anchor, props)
		if errors.Is(err, errAnchoredMissing) {
			older := gens[0]
			for _, g := range gens {
				if g < anchor.Generation {
					older = g
				}
			}
			if older < anchor.Generation {
				return nil, root, refusedKeyring{fmt.Errorf("%w: keyring generation %s: it is older than generation %d, which the catalog recorded as current: a newer generation was deleted or an old one put back; the store's keys/ (or the catalog) was changed by someone who does not hold the vault's keys: run coffer check, and restore keys/ or the catalog from a copy you trust", vault.ErrCorrupt, format.KeyringName(older), anchor.Generation)}
			}
			return nil, root, refusedKeyring{fmt.Errorf("%w: keyring generation %s, which the catalog recorded as current, is not in the store, and no newer generation authenticates (%s): restore keys/ from a copy you trust", vault.ErrCorrupt, format.KeyringName(anchor.Generation), strings.Join(skipped, "; "))}
		}
		if err != nil {
			return nil, root, err
		}
	} else if kr, err = latestKeyring(ctx, v.opt.Store, id); err != nil {
		return nil, root, err
	}
	name := format.KeyringName(kr.Generation)
	refuse := func(format string, args ...any) error {
		return refusedKeyring{fmt.Errorf("%w: keyring generation %s: %s; the store's keys/ (or the catalog) was changed by someone who does not hold the vault's keys: run coffer check, and restore keys/ or the catalog from a copy you trust", vault.ErrCorrupt, name, fmt.Sprintf(format, args...))}
	}
	var proposed bool
	switch {
	case !anchored && kr.Format == 1 && v.cfg.Format == 2:
		return nil, root, refuse("a format-1 keyring in a format-2 vault")
	case anchored && kr.Format != format.Format:
		return nil, root, refuse("a format-%d keyring, but the catalog anchors format-2 generation %d", kr.Format, anchor.Generation)
	case anchored && kr.Generation < anchor.Generation:
		return nil, root, refuse("it is older than generation %d, which the catalog recorded as current: a newer generation was deleted or an old one put back", anchor.Generation)
	case anchored && kr.Generation == anchor.Generation:
		if keyRefOf(kr) != anchor.KEK || kr.KEK.Alg != anchor.Alg {
			// Checked before the KEK is asked to unwrap anything.
			return nil, root, refuse("it names key %s (%s), but the catalog recorded %s (%s) for it", keyRefOf(kr), kr.KEK.Alg, anchor.KEK, anchor.Alg)
		}
	case anchored:
		// anchoredKeyring picks a newer generation only when a key holder
		// proposed it: its MAC, over its KEK reference, is the one the
		// proposal recorded.
		proposed = isProposal(props, kr)
		if !proposed {
			return nil, root, refuse("it is newer than generation %d, which the catalog recorded as current, and no key holder proposed it", anchor.Generation)
		}
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
	if root, err = unwrap(kr.Root, rootAAD(id), "root secret"); err != nil {
		return nil, root, err
	}
	fail := func(err error) (*keyState, seal.Key, error) {
		root.Wipe()
		return nil, root, err
	}
	macKey := format.KeyringMACKey(root, id)
	commit := format.RootCommit(root, id)
	ks := &keyState{keyring: kr, cur: kr.CurrentDEK, provider: p, loaded: v.opt.Now(), macKey: macKey, commit: commit}
	if kr.Format == format.Format {
		if anchored && !hmac.Equal(commit[:], anchor.RootCommit[:]) {
			return fail(refuse("its root secret is not this vault's (the catalog's root commitment differs): someone wrapped a root secret of their own"))
		}
		if err := kr.VerifyWith(macKey, id); err != nil {
			return fail(refusedKeyring{fmt.Errorf("%w; refused: run coffer check, and restore keys/ from a copy you trust", err)})
		}
		if anchored && kr.Generation == anchor.Generation && !hmac.Equal(kr.MAC, anchor.MAC[:]) {
			return fail(refuse("it is not the generation the catalog recorded (another MAC)"))
		}
		for _, u := range unproposed {
			if authenticates(u, macKey, id) {
				// A key holder wrote it and the catalog does not know it:
				// the catalog was rolled back (an old anchor restored).
				return fail(refusedKeyring{fmt.Errorf("%w: keyring generation %s: it is newer than generation %d, which the catalog recorded as current, and no key holder proposed it; the catalog was changed (an older copy restored?) by someone who does not hold the vault's keys: run coffer check, and restore the catalog from a copy you trust", vault.ErrCorrupt, format.KeyringName(u.Generation), anchor.Generation)})
			}
			skipped = append(skipped, fmt.Sprintf("keys/%s: its MAC does not verify under the vault's root secret", format.KeyringName(u.Generation)))
		}
		for _, s := range skipped {
			v.log.Warn("a keyring object newer than the anchored generation does not authenticate and is ignored: someone who can write the store put it there (coffer check lists it)", "vault", v.opt.Name, "object", s, "using", name)
		}
		// The config is authenticated through the keyring's copy.
		c := *kr.Config
		c.Format = v.cfg.Format // a format-1 config: an upgrade cut short (§10)
		if !c.Equal(v.cfg) {
			return fail(fmt.Errorf("%w: the vault config was changed: it says chunk sizes %d/%d/%d and pack size %d, the authenticated keyring %d/%d/%d and %d; restore the config object from a copy you trust", vault.ErrCorrupt,
				v.cfg.Chunker.Min, v.cfg.Chunker.Avg, v.cfg.Chunker.Max, v.cfg.PackSize, kr.Config.Chunker.Min, kr.Config.Chunker.Avg, kr.Config.Chunker.Max, kr.Config.PackSize))
		}
	}
	// The catalog's anchor cannot see a rollback of store and catalog
	// together (a local vault's directory), a format-1 copy made before
	// the upgrade included: this machine's pin can.
	if err := v.checkKeyPin(kr, commit); err != nil {
		return fail(err)
	}
	deks := map[uint32]seal.Key{}
	for _, d := range kr.DEKs {
		k, err := unwrap(d.Wrapped, dekAAD(id, d.Version), fmt.Sprintf("DEK v%d", d.Version))
		if err != nil {
			return fail(err)
		}
		deks[d.Version] = k
	}
	ks.deks = deks
	ks.chain = format.ChainKey(root, v.rec.ID)
	if kr.Format == format.Format && (!anchored || proposed) {
		a := v.anchorOf(kr, commit)
		prev := uint64(0)
		if anchored {
			prev = anchor.Generation
		}
		if err := v.setAnchor(ctx, a, prev); err != nil {
			return fail(err)
		}
		if !anchored {
			v.log.Warn("the catalog had no keyring anchor for this vault: anchored at the store's verified latest generation", "vault", v.opt.Name, "generation", kr.Generation)
			if err := v.opt.Catalog.AddKeyEvent(ctx, vault.KeyEvent{Vault: id, Time: v.opt.Now(), Principal: "system", Event: vault.KeyEventAnchor, KEK: kek.String(),
				Detail: fmt.Sprintf("the catalog had no keyring anchor: anchored at generation %d from the store (a rebuilt catalog, or the anchor was deleted)", kr.Generation), OK: true}); err != nil {
				// The anchor is written; only its record in key log is lost.
				v.log.Error("could not record the re-anchored keyring in the key log", "vault", v.opt.Name, "generation", kr.Generation, "err", err)
			}
		}
	}
	v.advanceKeyPin(kr, commit)
	return ks, root, nil
}

func (v *Vault) anchorOf(kr *format.Keyring, commit [format.MACSize]byte) vault.KeyAnchor {
	a := vault.KeyAnchor{Generation: kr.Generation, RootCommit: commit, KEK: keyRefOf(kr), Alg: kr.KEK.Alg, Time: v.opt.Now()}
	copy(a.MAC[:], kr.MAC)
	return a
}

// setAnchor makes a the anchor if the catalog's is at prev; it succeeds
// too when another process anchored the same generation first.
func (v *Vault) setAnchor(ctx context.Context, a vault.KeyAnchor, prev uint64) error {
	err := v.opt.Catalog.SetKeyAnchor(ctx, v.rec.ID, a, prev)
	if errors.Is(err, vault.ErrConflict) {
		if cur, _, rerr := v.opt.Catalog.KeyAnchor(ctx, v.rec.ID); rerr == nil && cur.Generation == a.Generation && cur.MAC == a.MAC {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("anchor keyring generation %d in the catalog: %w", a.Generation, err)
	}
	return nil
}

// commitKeyring authenticates kr (a generation after prev) under macKey
// and stores it as docs/format.md §7.2 says: proposal in the catalog,
// write-once store, anchor.
func (v *Vault) commitKeyring(ctx context.Context, kr *format.Keyring, macKey seal.Key, commit [format.MACSize]byte, prev uint64) error {
	kr.Format = format.Format
	kr.MAC = kr.MACWith(macKey, v.rec.ID)
	pr := vault.KeyProposal{Generation: kr.Generation, Time: v.opt.Now()}
	copy(pr.MAC[:], kr.MAC)
	if err := v.opt.Catalog.ProposeKeyring(ctx, v.rec.ID, pr); err != nil {
		return fmt.Errorf("propose keyring generation %d: %w", kr.Generation, err)
	}
	if err := v.storeKeyring(ctx, kr); err != nil {
		if errors.Is(err, ErrKeyChanged) {
			// The store holds a generation this process has not read: a
			// key change by another process, anchored or not yet (one
			// killed between its store write and its anchor). The keys
			// in memory are stale: the next use unwraps the newest
			// generation again, which anchors a proposed one (§7.2), and
			// a retried operation builds on it.
			v.dropKeys(v.keys.Load())
		}
		return err
	}
	if err := v.setAnchor(ctx, v.anchorOf(kr, commit), prev); err != nil {
		return fmt.Errorf("keyring generation %d is stored, but %w (the next open completes it)", kr.Generation, err)
	}
	v.advanceKeyPin(kr, commit)
	return nil
}

// dropKeys replaces old with a state that holds no DEK, and empties the
// pack-opener cache. The old DEKs are not wiped in place, since requests
// in flight may still be reading them; they are no longer referenced once
// those end, and go with the garbage collector.
func (v *Vault) dropKeys(old *keyState) {
	v.keys.Store(&keyState{keyring: old.keyring, cur: old.cur, provider: old.provider})
	v.clearOpeners()
	// What the key provider keeps in memory goes too (a parsed RSA key,
	// the platform key file's versions): it is read again at the next
	// unwrap.
	if f, ok := old.provider.(vault.SecretDropper); ok {
		f.DropSecrets()
	}
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

// keyGenerationReader is a catalog that reads the generation of a vault's
// keyring anchor alone, in one query (internal/catalog/postgres):
// RefreshKeys asks at every request to an open vault, where the whole
// anchor and its proposals are two queries.
type keyGenerationReader interface {
	KeyGeneration(ctx context.Context, vaultID vault.ID) (uint64, error)
}

// RefreshKeys catches up with a key change made by another process
// sharing the catalog (a replica's DEK rotation, switch of key or platform
// key rotation): when the catalog anchors a newer keyring generation than
// the one in use, it unwraps the newest generation, verified as at open,
// with the provider provider returns (the key the newest keyring names)
// and uses it from now on. Packs being filled keep the DEK they started
// with, which stays in the keyring. It reports whether it changed the
// keys; on an error the keys in use stay as they were.
func (v *Vault) RefreshKeys(ctx context.Context, provider func(context.Context) (vault.KeyProvider, error)) (bool, error) {
	newer := func() (bool, error) {
		var gen uint64
		var err error
		if kg, ok := v.opt.Catalog.(keyGenerationReader); ok {
			gen, err = kg.KeyGeneration(ctx, v.rec.ID)
		} else {
			var a vault.KeyAnchor
			a, _, err = v.opt.Catalog.KeyAnchor(ctx, v.rec.ID)
			gen = a.Generation
		}
		if errors.Is(err, vault.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("vault %q: read the keyring anchor: %w", v.opt.Name, err)
		}
		return gen > v.keys.Load().keyring.Generation, nil
	}
	if ok, err := newer(); !ok || err != nil {
		return false, err
	}
	v.keyMu.Lock()
	defer v.keyMu.Unlock()
	if ok, err := newer(); !ok || err != nil { // another request caught up meanwhile
		return false, err
	}
	p, err := provider(ctx)
	if err != nil {
		return false, fmt.Errorf("vault %q: the key of its newer keyring generation: %w", v.opt.Name, err)
	}
	ks, root, err := v.unwrapKeys(ctx, p)
	root.Wipe() // the root secret does not change with a key change
	if err != nil {
		return false, fmt.Errorf("vault %q: unwrap its newer keyring generation: %w", v.opt.Name, err)
	}
	v.keys.Store(ks)
	v.clearOpeners()
	return true, nil
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
	ks.macKey.Wipe()
	ks.chain.Wipe()
}

// ErrKeyringRefused reports a keyring generation that failed its MAC, its
// anchor or its root commitment: the store or the catalog was changed by
// someone who does not hold the vault's keys.
var ErrKeyringRefused = errors.New("keyring refused")

// refusedKeyring is the error of a keyring generation that does not
// verify (docs/format.md §7.1, §7.3): corruption, and ErrKeyringRefused,
// so that callers record it as a key event.
type refusedKeyring struct{ error }

func (e refusedKeyring) Unwrap() error        { return e.error }
func (e refusedKeyring) Is(target error) bool { return target == ErrKeyringRefused }

// ErrKeyChanged reports that another process changed the vault's keys
// (wrote the next keyring generation) at the same moment: run the
// operation again. It is a vault.ErrConflict too, so that a server
// answers it with 409 Conflict and its message, not as an internal
// error.
var ErrKeyChanged error = keyChanged{}

type keyChanged struct{}

func (keyChanged) Error() string {
	return "the vault's keys were changed at the same moment by another process; run the command again"
}
func (keyChanged) Is(target error) bool { return target == vault.ErrConflict }

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
	if w.KEK != keyRefOf(old.keyring) || w.Alg != old.keyring.KEK.Alg {
		// The provider wraps under its current key, which another process
		// may have changed since the check above (a platform key file
		// rotated meanwhile): the generation would name one KEK and hold a
		// DEK wrapped by another, and not open again.
		dek.Wipe()
		return 0, fmt.Errorf("rotate DEK: the key provider's current key became %s while the keyring is wrapped by %s: rewrap first (a backup does), then rotate", w.KEK, keyRefOf(old.keyring))
	}
	gen, err := v.nextGeneration(ctx, old.keyring.Generation, old.macKey)
	if err != nil {
		dek.Wipe()
		if errors.Is(err, ErrKeyChanged) {
			v.dropKeys(old)
		}
		return 0, fmt.Errorf("rotate DEK: %w", err)
	}
	kr := *old.keyring
	kr.Generation = gen
	kr.Created = v.opt.Now().UTC()
	kr.DEKs = append(append([]format.KeyringDEK{}, old.keyring.DEKs...), format.KeyringDEK{Version: next, Created: kr.Created, Wrapped: w.Data})
	kr.CurrentDEK = next
	deks := make(map[uint32]seal.Key, len(old.deks)+1)
	for ver, k := range old.deks {
		deks[ver] = k
	}
	deks[next] = dek
	if err := v.commitKeyring(ctx, &kr, old.macKey, old.commit, old.keyring.Generation); err != nil {
		dek.Wipe()
		return 0, fmt.Errorf("rotate DEK: %w", err)
	}
	v.keys.Store(&keyState{keyring: &kr, deks: deks, cur: next, provider: old.provider, loaded: old.loaded, macKey: old.macKey, commit: old.commit, chain: old.chain})
	return next, nil
}

// Rewrap stores the next keyring generation with the root secret and
// every DEK wrapped by to's current KEK, plus a fresh DEK that new packs
// and snapshots use from now on, and uses to from now on. Packs, trees
// and snapshots stay byte for byte as they are (docs/keys.md: rewrap,
// never re-encrypt). The old KEK is needed once, to unwrap the root
// secret. The fresh DEK means that a copy of an older generation, which
// the previous KEK still opens, opens nothing written after the switch
// (docs/format.md §7.2).
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
	gen, err := v.nextGeneration(ctx, old.keyring.Generation, old.macKey)
	if err != nil {
		if errors.Is(err, ErrKeyChanged) {
			v.dropKeys(old)
		}
		return fmt.Errorf("rewrap: %w", err)
	}
	kr := *old.keyring
	kr.Generation = gen
	kr.Created = v.opt.Now().UTC()
	kr.KEK = format.KeyringKEK{Provider: wroot.KEK.Provider, KeyID: wroot.KEK.KeyID, Version: wroot.KEK.Version, Alg: wroot.Alg}
	kr.Root = wroot.Data
	kr.DEKs = make([]format.KeyringDEK, len(old.keyring.DEKs), len(old.keyring.DEKs)+1)
	wrap := func(k seal.Key, ver uint32) ([]byte, error) {
		w, err := to.Wrap(ctx, k[:], dekAAD(v.rec.ID, ver))
		if err != nil {
			return nil, fmt.Errorf("rewrap: wrap DEK v%d with %s: %w", ver, to.Current(), err)
		}
		if w.KEK != wroot.KEK || w.Alg != wroot.Alg {
			return nil, fmt.Errorf("rewrap: the key provider changed keys while wrapping (%s, then %s)", wroot.KEK, w.KEK)
		}
		return w.Data, nil
	}
	next := uint32(0)
	for i, d := range old.keyring.DEKs {
		k, ok := old.deks[d.Version]
		if !ok {
			return fmt.Errorf("rewrap: %w: DEK v%d is not loaded", vault.ErrKeyUnavailable, d.Version)
		}
		w, err := wrap(k, d.Version)
		if err != nil {
			return err
		}
		kr.DEKs[i] = format.KeyringDEK{Version: d.Version, Created: d.Created, Wrapped: w}
		next = max(next, d.Version)
	}
	next++
	dek := seal.NewRandomKey()
	w, err := wrap(dek, next)
	if err != nil {
		dek.Wipe()
		return err
	}
	kr.DEKs = append(kr.DEKs, format.KeyringDEK{Version: next, Created: kr.Created, Wrapped: w})
	kr.CurrentDEK = next
	// Prove the new generation opens before it is stored.
	back, err := to.Unwrap(ctx, wroot, rootAAD(v.rec.ID))
	if err != nil || !bytes.Equal(back, rootB) {
		dek.Wipe()
		return fmt.Errorf("rewrap: the new key does not give the root secret back (%v); nothing was changed", err)
	}
	clear(back)
	if err := v.commitKeyring(ctx, &kr, old.macKey, old.commit, old.keyring.Generation); err != nil {
		dek.Wipe()
		return fmt.Errorf("rewrap: %w", err)
	}
	deks := make(map[uint32]seal.Key, len(old.deks)+1)
	for ver, k := range old.deks {
		deks[ver] = k
	}
	deks[next] = dek
	v.keys.Store(&keyState{keyring: &kr, deks: deks, cur: next, provider: to, loaded: old.loaded, macKey: old.macKey, commit: old.commit, chain: old.chain})
	// The older generations wrap the same DEKs under the previous KEK:
	// left in the store, that key would still open the vault, and a
	// revoked customer key would not shred anything while the platform
	// key file that wrapped the vault before still exists. The new
	// generation is durable and anchored, so they go now.
	if err := v.removeKeyringsBefore(ctx, kr.Generation, old.macKey); err != nil {
		v.log.Warn("older keyring generations could not all be removed; the previous key may still open them", "err", err)
		return fmt.Errorf("rewrap: the vault's keys are rewrapped, but %w", err)
	}
	return nil
}

// removeKeyringsBefore deletes every keyring generation older than gen.
// An object there that the vault's keys did not write (macKey tells) and
// that cannot be deleted (a bucket's retention) is left: no key opens
// anything through it, and check lists it.
func (v *Vault) removeKeyringsBefore(ctx context.Context, gen uint64, macKey seal.Key) error {
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
			if bad, why := isGarbage(ctx, v.opt.Store, v.rec.ID, h.Name, macKey); bad {
				v.log.Warn("a keyring object that does not authenticate could not be removed and stays (coffer check lists it)", "vault", v.opt.Name, "object", "keys/"+h.Name, "why", why, "err", err)
				continue
			}
			return fmt.Errorf("remove keyring generation %s: %w", h.Name, err)
		}
	}
	return nil
}

// storeKeyring writes keyring generation kr.Generation, write-once.
func (v *Vault) storeKeyring(ctx context.Context, kr *format.Keyring) error {
	kb := kr.Encode()
	err := v.opt.Store.Put(ctx, keyringHandle(kr.Generation), bytes.NewReader(kb), int64(len(kb)))
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

// upgrade brings a format-1 vault to format 2 (docs/format.md §10): it
// writes the next keyring generation in format 2 (same KEK, root and
// wrapped DEKs, with the config's copy and the MAC), anchors it, and
// replaces the config object. With rewriteConfig, a format-2 keyring was
// found beside a format-1 or missing config (an upgrade cut short), and
// only the config is written.
func (v *Vault) upgrade(ctx context.Context, rewriteConfig bool) error {
	v.keyMu.Lock()
	defer v.keyMu.Unlock()
	ks := v.keys.Load()
	if ks.keyring.Format == 1 {
		kr := *ks.keyring
		cfg := v.cfg
		cfg.Format = format.Format
		kr.Config = &cfg
		gen, err := v.nextGeneration(ctx, ks.keyring.Generation, ks.macKey)
		if err == nil {
			kr.Generation = gen
			kr.Created = v.opt.Now().UTC()
			err = v.commitKeyring(ctx, &kr, ks.macKey, ks.commit, 0)
		}
		if errors.Is(err, ErrKeyChanged) {
			// Another process upgraded it at the same moment: use theirs.
			nks, root, uerr := v.unwrapKeys(ctx, ks.provider)
			root.Wipe()
			if uerr != nil {
				return fmt.Errorf("upgrade vault %q to format %d: %w", v.opt.Name, format.Format, uerr)
			}
			v.keys.Store(nks)
			ks = nks
		} else if err != nil {
			return fmt.Errorf("upgrade vault %q to format %d: %w", v.opt.Name, format.Format, err)
		} else {
			v.keys.Store(&keyState{keyring: &kr, deks: ks.deks, cur: ks.cur, provider: ks.provider, loaded: ks.loaded, macKey: ks.macKey, commit: ks.commit, chain: ks.chain})
			v.log.Info("vault upgraded to storage format 2", "vault", v.opt.Name, "generation", kr.Generation)
		}
		rewriteConfig = true
	}
	if !rewriteConfig {
		return nil
	}
	// The keyring now holds the authenticated config; the object is
	// replaced (it is write-once: delete, then write). A crash in between
	// leaves no config, which the next open restores from the keyring.
	cfg := *v.keys.Load().keyring.Config
	cb, _ := json.MarshalIndent(cfg, "", "  ")
	if err := v.opt.Store.Delete(ctx, configHandle()); err != nil && !errors.Is(err, vault.ErrNotFound) {
		return fmt.Errorf("upgrade vault %q: replace the config: %w", v.opt.Name, err)
	}
	if err := v.opt.Store.Put(ctx, configHandle(), bytes.NewReader(cb), int64(len(cb))); err != nil && !errors.Is(err, vault.ErrExists) {
		return fmt.Errorf("upgrade vault %q: write the format-%d config: %w", v.opt.Name, format.Format, err)
	}
	v.cfg = cfg
	return nil
}
