package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

// KeyAnchor returns vault's keyring anchor and proposals; ErrNotFound
// when it has no anchor.
func (c *Catalog) KeyAnchor(ctx context.Context, vaultID vault.ID) (vault.KeyAnchor, []vault.KeyProposal, error) {
	var props []vault.KeyProposal
	rows, err := c.pool.Query(ctx, `SELECT generation, mac, time FROM key_proposals WHERE vault = $1 ORDER BY generation, mac`, vaultID[:])
	if err != nil {
		return vault.KeyAnchor{}, nil, fmt.Errorf("key proposals: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		p, err := catalog.ScanProposal(rows)
		if err != nil {
			return vault.KeyAnchor{}, nil, fmt.Errorf("key proposals: %w", err)
		}
		props = append(props, p)
	}
	if err := rows.Err(); err != nil {
		return vault.KeyAnchor{}, nil, fmt.Errorf("key proposals: %w", err)
	}
	a, err := catalog.ScanAnchor(c.pool.QueryRow(ctx, `SELECT `+catalog.AnchorColumns+` FROM key_anchors WHERE vault = $1`, vaultID[:]))
	if errors.Is(err, pgx.ErrNoRows) {
		return vault.KeyAnchor{}, props, fmt.Errorf("key anchor: %w", vault.ErrNotFound)
	}
	if err != nil {
		return vault.KeyAnchor{}, nil, fmt.Errorf("key anchor: %w", err)
	}
	return a, props, nil
}

// KeyGeneration returns the generation of vault's keyring anchor, in one
// query: what a server asks at every request to an open vault (has
// another server installed a newer generation?). ErrNotFound when it has
// no anchor.
func (c *Catalog) KeyGeneration(ctx context.Context, vaultID vault.ID) (uint64, error) {
	var gen int64
	err := c.pool.QueryRow(ctx, `SELECT generation FROM key_anchors WHERE vault = $1`, vaultID[:]).Scan(&gen)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("key anchor: %w", vault.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("key anchor: %w", err)
	}
	return uint64(gen), nil
}

// ProposeKeyring records proposal p for vault.
func (c *Catalog) ProposeKeyring(ctx context.Context, vaultID vault.ID, p vault.KeyProposal) error {
	t, err := catalog.Proposal(p)
	if err != nil {
		return err
	}
	err = c.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO key_proposals (vault, generation, mac, time) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, vaultID[:], int64(p.Generation), p.MAC[:], t)
		return err
	})
	if isMissingVault(err) {
		return fmt.Errorf("propose keyring generation %d: vault %s: %w", p.Generation, vaultID, vault.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("propose keyring generation %d: %w", p.Generation, err)
	}
	return nil
}

// SetKeyAnchor makes a vault's anchor if its current generation is prev.
func (c *Catalog) SetKeyAnchor(ctx context.Context, vaultID vault.ID, a vault.KeyAnchor, prev uint64) error {
	t, err := catalog.Anchor(a, prev)
	if err != nil {
		return err
	}
	err = c.write(ctx, func(tx pgx.Tx) error {
		// The vault's row lock makes the check and the change one step
		// for every replica, also when the vault has no anchor yet.
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM vaults WHERE id = $1 FOR NO KEY UPDATE`, vaultID[:]).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("vault %s: %w", vaultID, vault.ErrNotFound)
		}
		if err != nil {
			return err
		}
		var cur int64
		err = tx.QueryRow(ctx, `SELECT generation FROM key_anchors WHERE vault = $1`, vaultID[:]).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			cur = 0
		} else if err != nil {
			return err
		}
		if err := catalog.AnchorAt(cur, prev); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO key_anchors (vault, generation, mac, root_commit, kek_provider, kek_id, kek_version, alg, time)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (vault) DO UPDATE SET generation = excluded.generation, mac = excluded.mac, root_commit = excluded.root_commit,
				kek_provider = excluded.kek_provider, kek_id = excluded.kek_id, kek_version = excluded.kek_version, alg = excluded.alg, time = excluded.time`,
			vaultID[:], int64(a.Generation), a.MAC[:], a.RootCommit[:], a.KEK.Provider, a.KEK.KeyID, a.KEK.Version, a.Alg, t); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM key_proposals WHERE vault = $1 AND generation <= $2`, vaultID[:], int64(a.Generation))
		return err
	})
	if isMissingVault(err) {
		return fmt.Errorf("set key anchor: vault %s: %w", vaultID, vault.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("set key anchor at generation %d: %w", a.Generation, err)
	}
	return nil
}
