package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file holds format 2's part of the catalog (docs/format.md §4.1,
// §8.1): the snapshot chain and the packs' sealed headers.

// lockVault locks vault's row in tx against other chain appends and
// deletions of the vault (FOR NO KEY UPDATE: inserts that only reference
// the vault are not held up); ErrNotFound if there is no such live vault.
func lockVault(ctx context.Context, tx pgx.Tx, vaultID vault.ID) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM vaults WHERE id = $1 AND deleted IS NULL FOR NO KEY UPDATE`, vaultID[:]).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("vault %s: %w", vaultID, vault.ErrNotFound)
	}
	return err
}

// AppendChain appends entries to vault's snapshot chain and applies the
// changes they describe, in one transaction that holds the vault's row
// lock: appends of all replicas to one vault take turns, so the head fn
// sees is the head the entries follow.
func (c *Catalog) AppendChain(ctx context.Context, vaultID vault.ID, fn func(head vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error)) error {
	err := c.writeOnce(ctx, func(tx pgx.Tx) error {
		if err := lockVault(ctx, tx, vaultID); err != nil {
			return err
		}
		head, err := chainHead(ctx, tx, vaultID)
		if err != nil {
			return err
		}
		entries, rows, err := fn(head)
		if err != nil {
			return err
		}
		return catalog.AppendChain(chainTx{ctx, tx, vaultID}, head, entries, rows)
	})
	if err != nil {
		return fmt.Errorf("append to the snapshot chain: %w", err)
	}
	return nil
}

// chainTx is catalog.ChainTx in a transaction that holds the vault's
// row lock.
type chainTx struct {
	ctx   context.Context
	tx    pgx.Tx
	vault vault.ID
}

func (t chainTx) InsertSnapshot(s vault.SnapshotRecord) error {
	return insertSnapshot(t.ctx, t.tx, t.vault, s)
}

func (t chainTx) SetSettings(s vault.VaultSettings) error {
	return setSettings(t.ctx, t.tx, t.vault, s)
}

// SnapshotDeleted locks the snapshot's row (FOR UPDATE): racing writers
// on other replicas wait for this transaction, then find the row as it
// left it.
func (t chainTx) SnapshotDeleted(id vault.ID) (bool, error) {
	var deleted *int64
	err := t.tx.QueryRow(t.ctx, `SELECT deleted FROM snapshots WHERE vault = $1 AND id = $2 FOR UPDATE`, t.vault[:], id[:]).Scan(&deleted)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, vault.ErrNotFound
	}
	return deleted != nil, err
}

func (t chainTx) ForgetSnapshot(id vault.ID, at int64, by *string) error {
	_, err := t.tx.Exec(t.ctx, `UPDATE snapshots SET deleted = $1, deleted_by = $2 WHERE vault = $3 AND id = $4`, at, by, t.vault[:], id[:])
	return err
}

func (t chainTx) UndeleteSnapshot(id vault.ID) error {
	_, err := t.tx.Exec(t.ctx, `UPDATE snapshots SET deleted = NULL, deleted_by = NULL WHERE vault = $1 AND id = $2`, t.vault[:], id[:])
	return err
}

func (t chainTx) RemoveSnapshot(id vault.ID) error {
	_, err := t.tx.Exec(t.ctx, `DELETE FROM snapshots WHERE vault = $1 AND id = $2`, t.vault[:], id[:])
	return err
}

func (t chainTx) InsertEntry(e vault.ChainEntry, tm int64) error {
	_, err := t.tx.Exec(t.ctx, `INSERT INTO snapshot_chain (vault, seq, kind, snapshot, time, principal, digest, mac)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, t.vault[:], int64(e.Seq), int64(e.Kind), e.Snapshot[:], tm, e.Principal, e.Digest[:], e.MAC[:])
	return err
}

func chainHead(ctx context.Context, q querier, vaultID vault.ID) (vault.ChainEntry, error) {
	es, err := chainEntries(ctx, q, vaultID, `ORDER BY seq DESC LIMIT 1`)
	if err != nil || len(es) == 0 {
		return vault.ChainEntry{}, err
	}
	return es[0], nil
}

func chainEntries(ctx context.Context, q querier, vaultID vault.ID, order string, args ...any) ([]vault.ChainEntry, error) {
	rows, err := q.Query(ctx, `SELECT `+catalog.ChainColumns+` FROM snapshot_chain WHERE vault = $1 `+order, append([]any{vaultID[:]}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read the snapshot chain: %w", err)
	}
	defer rows.Close()
	es, err := catalog.Collect(rows, catalog.ScanChainEntry)
	if err != nil {
		return nil, fmt.Errorf("read the snapshot chain: %w", err)
	}
	return es, nil
}

// SnapshotChain returns vault's chain and snapshot records as of one
// moment: both are read in one repeatable-read transaction.
func (c *Catalog) SnapshotChain(ctx context.Context, vaultID vault.ID) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
	var (
		es []vault.ChainEntry
		ss []vault.SnapshotRecord
	)
	err := c.read(ctx, func(tx pgx.Tx) error {
		var err error
		if es, err = chainEntries(ctx, tx, vaultID, `ORDER BY seq`); err != nil {
			return err
		}
		ss, err = snapshotRows(ctx, tx, vaultID)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return es, ss, nil
}

// SettingsChain returns vault's settings and its chain entries read in
// one transaction, without the snapshot records: what the engine needs
// to verify the settings (docs/format.md §8.4) on every decision.
func (c *Catalog) SettingsChain(ctx context.Context, vaultID vault.ID) (vault.VaultSettings, []vault.ChainEntry, error) {
	return c.SettingsChainSince(ctx, vaultID, 0)
}

// SettingsChainSince is SettingsChain with only the chain entries from
// number from on.
func (c *Catalog) SettingsChainSince(ctx context.Context, vaultID vault.ID, from uint64) (vault.VaultSettings, []vault.ChainEntry, error) {
	var (
		s  vault.VaultSettings
		es []vault.ChainEntry
	)
	err := c.read(ctx, func(tx pgx.Tx) error {
		var err error
		if s, err = readSettings(ctx, tx, vaultID); err != nil {
			return err
		}
		es, err = chainEntries(ctx, tx, vaultID, `AND seq >= $2 ORDER BY seq`, int64(min(from, math.MaxInt64)))
		return err
	})
	if err != nil {
		return s, nil, err
	}
	return s, es, nil
}

// SetPackHeader stores pack id's sealed header and deletes its per-blob
// rows (the upgrade from format 1); with a nil header it only deletes the
// rows (a pack missing from the store). Once no blob rows remain, it
// rewrites the blobs table (VACUUM FULL) so that the deleted rows do not
// linger in its pages.
func (c *Catalog) SetPackHeader(ctx context.Context, vaultID, id vault.ID, header []byte) error {
	if header != nil && len(header) == 0 {
		return fmt.Errorf("set header of pack %s: empty header", id)
	}
	var left bool
	var deleted int64
	err := c.write(ctx, func(tx pgx.Tx) error {
		q, args := `UPDATE packs SET header = $1 WHERE vault = $2 AND id = $3`, []any{header, vaultID[:], id[:]}
		if header == nil {
			q, args = `UPDATE packs SET header = header WHERE vault = $1 AND id = $2`, []any{vaultID[:], id[:]}
		}
		tag, err := tx.Exec(ctx, q, args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return vault.ErrNotFound
		}
		tag, err = tx.Exec(ctx, `DELETE FROM blobs WHERE vault = $1 AND pack = $2`, vaultID[:], id[:])
		if err != nil {
			return err
		}
		deleted = tag.RowsAffected()
		if err := noteIndexed(ctx, tx, vaultID, id); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM blobs)`).Scan(&left)
	})
	if err != nil {
		return fmt.Errorf("set header of pack %s: %w", id, err)
	}
	if !left && deleted > 0 {
		if _, err := c.pool.Exec(ctx, `VACUUM FULL blobs`); err != nil {
			return fmt.Errorf("compact the catalog after removing blob sizes: %w", err)
		}
	}
	return nil
}
