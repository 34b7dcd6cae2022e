package engine

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"slices"
	"sort"

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
// refuses them whatever key wraps them. cat may be nil (a vault whose
// catalog is gone): every generation then counts.
//
// A platform key version that no vault's KEKsInUse names can be deleted
// (coffer key retire). Any error means that the answer is unknown, and
// the caller must then keep every version.
func KEKsInUse(ctx context.Context, st vault.Store, cat vault.Catalog, id vault.ID) ([]vault.KeyRef, error) {
	var gens []string
	if err := st.List(ctx, vault.KeyObject, func(oi vault.ObjectInfo) error {
		gens = append(gens, oi.Handle.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list keyring generations: %w", err)
	}
	sort.Strings(gens) // zero-padded: lexical order is numeric order
	seen := map[vault.KeyRef]bool{}
	var refs []vault.KeyRef
	add := func(r vault.KeyRef) {
		if !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	}
	from := ""
	var props []vault.KeyProposal
	if cat != nil {
		anchor, ps, err := cat.KeyAnchor(ctx, id)
		props = ps
		switch {
		case err == nil:
			add(anchor.KEK)
			from = format.KeyringName(anchor.Generation)
		case !errors.Is(err, vault.ErrNotFound):
			return nil, fmt.Errorf("read the keyring anchor: %w", err)
		}
	}
	for _, name := range gens {
		if from != "" && name <= from {
			continue // refused on open: older than the anchor (or the anchored one, counted above)
		}
		kb, err := readAll(ctx, st, vault.Handle{Type: vault.KeyObject, Name: name}, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("read keyring generation %s: %w", name, err)
		}
		kr, err := format.ParseKeyring(name, kb, id)
		if err != nil {
			return nil, err
		}
		if from != "" && !slices.ContainsFunc(props, func(p vault.KeyProposal) bool {
			return p.Generation == kr.Generation && hmac.Equal(p.MAC[:], kr.MAC)
		}) {
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
