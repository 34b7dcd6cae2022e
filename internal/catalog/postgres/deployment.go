package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

var _ vault.Deployment = (*Catalog)(nil)

// Vaults implements vault.Deployment.
func (c *Catalog) Vaults(ctx context.Context) ([]vault.VaultRecord, error) {
	rows, err := c.pool.Query(ctx, `SELECT id, name, created FROM vaults WHERE deleted IS NULL ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list vaults: %w", err)
	}
	defer rows.Close()
	var out []vault.VaultRecord
	for rows.Next() {
		var v vault.VaultRecord
		var id []byte
		var created int64
		if err := rows.Scan(&id, &v.Name, &created); err != nil {
			return nil, fmt.Errorf("list vaults: %w", err)
		}
		if err := catalog.ScanID(&v.ID, id); err != nil {
			return nil, fmt.Errorf("list vaults: vault %q: %w", v.Name, err)
		}
		v.Created = catalog.FromUnixNano(created)
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list vaults: %w", err)
	}
	return out, nil
}

// VaultStore implements vault.Deployment.
func (c *Catalog) VaultStore(ctx context.Context, name string) ([]byte, error) {
	var sealed []byte
	err := c.pool.QueryRow(ctx, `SELECT sealed FROM vault_stores WHERE name = $1`, name).Scan(&sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, c.unsealedStore(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("vault %q: its store's URL: %w", name, err)
	}
	if sealed == nil {
		sealed = []byte{} // a row, however empty, is not "none"
	}
	return sealed, nil
}

// unsealedStore fails if vault name's store URL is one a catalog of
// schema version 4 kept in plain text (0005_sealed_store_urls.sql): the
// vault has a store of its own, but no URL a server trusts, and opening
// it on the server's default store would find an empty vault.
func (c *Catalog) unsealedStore(ctx context.Context, name string) error {
	var url string
	err := c.pool.QueryRow(ctx, `SELECT url FROM vault_stores_unsealed WHERE name = $1`, name).Scan(&url)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table: dropped by the operator
		return nil
	}
	if err != nil {
		return fmt.Errorf("vault %q: its store's URL: %w", name, err)
	}
	return fmt.Errorf("vault %q: %w: its store URL was recorded by an older version of coffer in plain text (table vault_stores_unsealed), which servers no longer trust: check it and write it to vaults/%s/store.url in one server's data directory, which records it sealed (docs/postgres.md, \"Upgrading\")", name, vault.ErrUnsealedStoreURL, name)
}

// SetVaultStore implements vault.Deployment.
func (c *Catalog) SetVaultStore(ctx context.Context, name string, sealed []byte) error {
	var err error
	if sealed == nil {
		_, err = c.pool.Exec(ctx, `DELETE FROM vault_stores WHERE name = $1`, name)
	} else {
		_, err = c.pool.Exec(ctx, `INSERT INTO vault_stores (name, sealed) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed`, name, sealed)
	}
	if err != nil {
		return fmt.Errorf("vault %q: record its store's URL: %w", name, err)
	}
	return nil
}

// PlatformKeys implements vault.Deployment.
func (c *Catalog) PlatformKeys(ctx context.Context) ([]vault.SealedKEK, error) {
	rows, err := c.pool.Query(ctx, `SELECT key_id, version, created, sealed FROM platform_keys ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("platform keys: %w", err)
	}
	defer rows.Close()
	var out []vault.SealedKEK
	for rows.Next() {
		var k vault.SealedKEK
		var version, created int64
		if err := rows.Scan(&k.KeyID, &version, &created, &k.Sealed); err != nil {
			return nil, fmt.Errorf("platform keys: %w", err)
		}
		if version <= 0 || version > 1<<31-1 {
			return nil, fmt.Errorf("platform keys: %w: version %d", vault.ErrCorrupt, version)
		}
		k.Version, k.Created = int(version), catalog.FromUnixNano(created)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("platform keys: %w", err)
	}
	return out, nil
}

// AddPlatformKey implements vault.Deployment.
func (c *Catalog) AddPlatformKey(ctx context.Context, k vault.SealedKEK) error {
	created, err := catalog.UnixNano(k.Created)
	if err != nil {
		return fmt.Errorf("add platform key version %d: %w", k.Version, err)
	}
	_, err = c.pool.Exec(ctx, `INSERT INTO platform_keys (key_id, version, created, sealed) VALUES ($1, $2, $3, $4)`,
		k.KeyID, int64(k.Version), created, k.Sealed)
	if isDuplicate(err) {
		return fmt.Errorf("add platform key version %d: %w", k.Version, vault.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("add platform key version %d: %w", k.Version, err)
	}
	return nil
}

// DeletePlatformKeys implements vault.Deployment.
func (c *Catalog) DeletePlatformKeys(ctx context.Context, keyID string, versions []int) error {
	if len(versions) == 0 {
		return nil
	}
	vs := make([]int64, len(versions))
	for i, v := range versions {
		vs[i] = int64(v)
	}
	if _, err := c.pool.Exec(ctx, `DELETE FROM platform_keys WHERE key_id = $1 AND version = ANY($2)`, keyID, vs); err != nil {
		return fmt.Errorf("delete platform key versions: %w", err)
	}
	return nil
}

// KeyURIs implements vault.Deployment.
func (c *Catalog) KeyURIs(ctx context.Context, vaultID vault.ID) (map[string][]byte, error) {
	rows, err := c.pool.Query(ctx, `SELECT kek, sealed FROM key_uris WHERE vault = $1`, vaultID[:])
	if err != nil {
		return nil, fmt.Errorf("key URIs: %w", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var kek string
		var sealed []byte
		if err := rows.Scan(&kek, &sealed); err != nil {
			return nil, fmt.Errorf("key URIs: %w", err)
		}
		out[kek] = sealed
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("key URIs: %w", err)
	}
	return out, nil
}

// SetKeyURI implements vault.Deployment.
func (c *Catalog) SetKeyURI(ctx context.Context, vaultID vault.ID, kek string, sealed []byte) error {
	if _, err := c.pool.Exec(ctx, `INSERT INTO key_uris (vault, kek, sealed) VALUES ($1, $2, $3)
		ON CONFLICT (vault, kek) DO UPDATE SET sealed = EXCLUDED.sealed`, vaultID[:], kek, sealed); err != nil {
		return fmt.Errorf("record key URI: %w", err)
	}
	return nil
}

// KeepKeyURI implements vault.Deployment.
func (c *Catalog) KeepKeyURI(ctx context.Context, vaultID vault.ID, kek string) error {
	if _, err := c.pool.Exec(ctx, `DELETE FROM key_uris WHERE vault = $1 AND kek <> $2`, vaultID[:], kek); err != nil {
		return fmt.Errorf("forget key URIs: %w", err)
	}
	return nil
}
