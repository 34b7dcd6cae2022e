package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

// migrationKeyAnchors adds the keyring anchors: one row per vault naming
// the keyring generation the vault's key holders last stored, and the
// generations they are about to store (docs/format.md §7.2, §7.3).
var migrationKeyAnchors = []string{
	`CREATE TABLE key_anchors (
		vault        BLOB    NOT NULL PRIMARY KEY REFERENCES vaults (id),
		generation   INTEGER NOT NULL CHECK (generation > 0),
		mac          BLOB    NOT NULL CHECK (length(mac) = 32),
		root_commit  BLOB    NOT NULL CHECK (length(root_commit) = 32),
		kek_provider TEXT    NOT NULL,
		kek_id       TEXT    NOT NULL,
		kek_version  TEXT    NOT NULL,
		alg          TEXT    NOT NULL,
		time         INTEGER NOT NULL
	) STRICT`,
	`CREATE TABLE key_proposals (
		vault      BLOB    NOT NULL REFERENCES vaults (id),
		generation INTEGER NOT NULL CHECK (generation > 0),
		mac        BLOB    NOT NULL CHECK (length(mac) = 32),
		time       INTEGER NOT NULL,
		PRIMARY KEY (vault, generation, mac)
	) STRICT, WITHOUT ROWID`,
}

// KeyAnchor returns vault's keyring anchor and proposals; ErrNotFound
// when it has no anchor.
func (c *Catalog) KeyAnchor(ctx context.Context, vaultID vault.ID) (vault.KeyAnchor, []vault.KeyProposal, error) {
	var props []vault.KeyProposal
	rows, err := c.db.QueryContext(ctx, `SELECT generation, mac, time FROM key_proposals WHERE vault = ? ORDER BY generation, mac`, vaultID[:])
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
	a, err := catalog.ScanAnchor(c.db.QueryRowContext(ctx, `SELECT `+catalog.AnchorColumns+` FROM key_anchors WHERE vault = ?`, vaultID[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return vault.KeyAnchor{}, props, fmt.Errorf("key anchor: %w", vault.ErrNotFound)
	}
	if err != nil {
		return vault.KeyAnchor{}, nil, fmt.Errorf("key anchor: %w", err)
	}
	return a, props, nil
}

// ProposeKeyring records proposal p for vault.
func (c *Catalog) ProposeKeyring(ctx context.Context, vaultID vault.ID, p vault.KeyProposal) error {
	t, err := catalog.Proposal(p)
	if err != nil {
		return err
	}
	err = c.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO key_proposals (vault, generation, mac, time) VALUES (?, ?, ?, ?)
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
	err = c.write(ctx, func(tx *sql.Tx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, `SELECT generation FROM key_anchors WHERE vault = ?`, vaultID[:]).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			cur = 0
		} else if err != nil {
			return err
		}
		if err := catalog.AnchorAt(cur, prev); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO key_anchors (vault, generation, mac, root_commit, kek_provider, kek_id, kek_version, alg, time)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (vault) DO UPDATE SET generation = excluded.generation, mac = excluded.mac, root_commit = excluded.root_commit,
				kek_provider = excluded.kek_provider, kek_id = excluded.kek_id, kek_version = excluded.kek_version, alg = excluded.alg, time = excluded.time`,
			vaultID[:], int64(a.Generation), a.MAC[:], a.RootCommit[:], a.KEK.Provider, a.KEK.KeyID, a.KEK.Version, a.Alg, t); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM key_proposals WHERE vault = ? AND generation <= ?`, vaultID[:], int64(a.Generation))
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
