package engine

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"slices"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// KEKsInUse names the key encryption keys that may still be needed to
// open vault id, read from its store and catalog without unwrapping
// anything: the KEK of the generation the catalog anchors as current
// (docs/format.md §7.3), and the KEK of every generation in the store
// newer than the anchor that a key holder proposed (one about to be
// anchored: the next open anchors it), or, for a vault without an anchor,
// of every generation in the store.
// Generations older than the anchor are not counted: opening the vault
// refuses them whatever key wraps them. The anchor counts only when the
// store holds the anchored generation with the anchor's MAC and KEK (an
// error otherwise: the vault does not open). cat may be nil (a vault
// whose catalog is gone): every generation then counts.
//
// A platform key version that no vault's KEKsInUse names can be deleted
// (coffer key retire). Any error means that the answer is unknown, and
// the caller must then keep every version.
func KEKsInUse(ctx context.Context, st vault.Store, cat vault.Catalog, id vault.ID) ([]vault.KeyRef, error) {
	gens, _, err := listGenerations(ctx, st)
	if err != nil {
		return nil, err
	}
	seen := map[vault.KeyRef]bool{}
	var refs []vault.KeyRef
	add := func(r vault.KeyRef) {
		if !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	}
	var from uint64 // the anchored generation, 0: none
	var props []vault.KeyProposal
	if cat != nil {
		anchor, ps, err := cat.KeyAnchor(ctx, id)
		props = ps
		switch {
		case err == nil:
			// SECURITY: the anchor is a plaintext catalog row that nothing
			// authenticates without the keys. Taken alone, whoever can
			// edit the catalog could name the current version in it and
			// have the version that really wraps the keyring deleted. So
			// the anchored generation must be in the store, with the MAC
			// and KEK the anchor records; otherwise the vault does not
			// open (keys.go), and the answer is unknown.
			kr, err := readGeneration(ctx, st, id, format.KeyringName(anchor.Generation))
			if err != nil {
				return nil, fmt.Errorf("the catalog anchors keyring generation %d: %w", anchor.Generation, err)
			}
			if kr.Format != format.Format || !hmac.Equal(kr.MAC, anchor.MAC[:]) || keyRefOf(kr) != anchor.KEK || kr.KEK.Alg != anchor.Alg {
				return nil, fmt.Errorf("%w: keyring generation %d in the store is not the one the catalog anchors (it names key %s, the anchor %s, or their MACs differ): the vault does not open until the store or the catalog is restored", vault.ErrCorrupt, anchor.Generation, keyRefOf(kr), anchor.KEK)
			}
			add(anchor.KEK)
			from = anchor.Generation
		case !errors.Is(err, vault.ErrNotFound):
			return nil, fmt.Errorf("read the keyring anchor: %w", err)
		}
	}
	for _, g := range gens { // names that are not a generation's: no reader unwraps them
		if from != 0 && g <= from {
			continue // refused on open: older than the anchor (or the anchored one, counted above)
		}
		kr, perr, err := readParsed(ctx, st, id, g)
		if err != nil {
			return nil, err
		}
		if perr != nil {
			if from != 0 {
				continue // newer than the anchor and garbage: opening skips it (keys.go)
			}
			return nil, perr
		}
		if from != 0 && !isProposal(props, kr) {
			// Newer than the anchor and proposed by no key holder: opening
			// refuses it (keys.go), so it needs nothing, and a store
			// writer cannot keep an old version alive by planting one.
			continue
		}
		add(keyRefOf(kr))
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%w: no keyring generation in the store and no anchor in the catalog", vault.ErrNotFound)
	}
	return refs, nil
}

// readGeneration reads and parses keyring generation name of vault id.
func readGeneration(ctx context.Context, st vault.Store, id vault.ID, name string) (*format.Keyring, error) {
	kb, err := readAll(ctx, st, vault.Handle{Type: vault.KeyObject, Name: name}, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("read keyring generation %s: %w", name, err)
	}
	return format.ParseKeyring(name, kb, id)
}

// StaleKEKs names the KEKs that wrap the keyring generations in the store
// older than the one the catalog anchors, read without unwrapping or
// verifying anything: a caller decides from it only whether to open the
// vault and call RemoveStaleKeyrings, which verifies what it deletes.
func StaleKEKs(ctx context.Context, st vault.Store, cat vault.Catalog, id vault.ID) ([]vault.KeyRef, error) {
	anchor, _, err := cat.KeyAnchor(ctx, id)
	if errors.Is(err, vault.ErrNotFound) {
		return nil, nil // no anchor: KEKsInUse counts every generation
	}
	if err != nil {
		return nil, fmt.Errorf("read the keyring anchor: %w", err)
	}
	gens, _, err := listGenerations(ctx, st)
	if err != nil {
		return nil, err
	}
	var refs []vault.KeyRef
	for _, g := range gens {
		if g >= anchor.Generation {
			break
		}
		kr, perr, err := readParsed(ctx, st, id, g)
		if err != nil {
			return nil, err
		}
		if perr != nil {
			continue // an object no key opens: nothing to remove it for
		}
		if r := keyRefOf(kr); r != anchor.KEK && !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	return refs, nil
}

// RemoveStaleKeyrings deletes from the store the keyring generations
// older than the one in use that another KEK wraps, and returns how many
// it deleted. Rewrap deletes them once its new generation is anchored;
// a rewrap cut short between the two (its process killed) leaves them,
// and with them a way in for the previous KEK (docs/format.md §7.2).
// Older generations under the KEK in use (left by DEK rotations) stay.
func (v *Vault) RemoveStaleKeyrings(ctx context.Context) (int, error) {
	v.keyMu.Lock()
	defer v.keyMu.Unlock()
	ks, err := v.liveKeysLocked(ctx)
	if err != nil {
		return 0, fmt.Errorf("remove stale keyring generations: %w", err)
	}
	cur := keyRefOf(ks.keyring)
	gens, _, err := listGenerations(ctx, v.opt.Store)
	if err != nil {
		return 0, fmt.Errorf("remove stale keyring generations: %w", err)
	}
	n := 0
	for _, g := range gens {
		if g >= ks.keyring.Generation {
			break
		}
		h := keyringHandle(g)
		kr, perr, err := readParsed(ctx, v.opt.Store, v.rec.ID, g)
		if err != nil {
			return n, fmt.Errorf("remove stale keyring generations: %w", err)
		}
		if perr != nil {
			continue // an object a store writer planted: no key opens it, and check lists it
		}
		if keyRefOf(kr) == cur {
			continue
		}
		if err := v.opt.Store.Delete(ctx, h); err != nil && !errors.Is(err, vault.ErrNotFound) {
			if bad, _ := isGarbage(ctx, v.opt.Store, v.rec.ID, h.Name, ks.macKey); bad {
				continue // planted, and kept by the bucket's retention: check lists it
			}
			return n, fmt.Errorf("remove stale keyring generation %s: %w", h.Name, err)
		}
		n++
	}
	return n, nil
}
