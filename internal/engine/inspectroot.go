package engine

import (
	"context"
	"fmt"

	"github.com/coffer-backup/coffer/internal/vault"
)

// InspectRoot returns the wrapped root secret of the store's latest
// keyring generation, for a key provider that opens from its own record
// (passphrase slots travel in it: docs/format.md §1.1d). Nothing is
// verified: the keyring's MAC and the catalog's anchor are checked when
// the vault is opened with the provider, before anything is wrapped.
func InspectRoot(ctx context.Context, st vault.Store) (vault.WrappedKey, error) {
	return InspectRootWith(ctx, st, nil)
}

// InspectRootWith is InspectRoot with the vault's catalog (nil for none):
// the generation read is the one the catalog's anchor accepts (as
// InspectWith), not an object a store writer planted above it.
func InspectRootWith(ctx context.Context, st vault.Store, cat vault.Catalog) (vault.WrappedKey, error) {
	cfg, _, err := readConfigOrKeyring(ctx, st)
	if err != nil {
		return vault.WrappedKey{}, fmt.Errorf("inspect vault: %w", err)
	}
	id, err := vault.ParseID(cfg.ID)
	if err != nil {
		return vault.WrappedKey{}, fmt.Errorf("inspect vault: %w", err)
	}
	kr, err := inspectKeyring(ctx, st, cat, id)
	if err != nil {
		return vault.WrappedKey{}, err
	}
	return vault.WrappedKey{KEK: keyRefOf(kr), Alg: kr.KEK.Alg, Data: kr.Root}, nil
}
