package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file holds format 2's part of the catalog (docs/format.md §4.1,
// §8.1): the snapshot chain and the packs' sealed headers.

var migrationChain = []string{
	// One row per chain entry; rows are only ever added (and removed with
	// their vault). The engine makes and checks mac; the catalog only
	// keeps entries numbered without gaps.
	`CREATE TABLE snapshot_chain (
		vault     BLOB    NOT NULL REFERENCES vaults (id),
		seq       INTEGER NOT NULL CHECK (seq >= 1),
		kind      INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 6),
		snapshot  BLOB    NOT NULL CHECK (length(snapshot) = 32),
		time      INTEGER NOT NULL,
		principal TEXT    NOT NULL,
		digest    BLOB    NOT NULL CHECK (length(digest) = 32),
		mac       BLOB    NOT NULL CHECK (length(mac) = 32),
		PRIMARY KEY (vault, seq)
	) STRICT, WITHOUT ROWID`,
	// The pack's sealed header: its blob list, sealed; NULL for a pack
	// recorded by format 1, whose blobs have rows in blobs until the
	// vault is upgraded.
	`ALTER TABLE packs ADD COLUMN header BLOB`,
}

var migrationChainSettings = []string{
	`CREATE TABLE snapshot_chain_new (
		vault     BLOB    NOT NULL REFERENCES vaults (id),
		seq       INTEGER NOT NULL CHECK (seq >= 1),
		kind      INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 7),
		snapshot  BLOB    NOT NULL CHECK (length(snapshot) = 32),
		time      INTEGER NOT NULL,
		principal TEXT    NOT NULL,
		digest    BLOB    NOT NULL CHECK (length(digest) = 32),
		mac       BLOB    NOT NULL CHECK (length(mac) = 32),
		PRIMARY KEY (vault, seq)
	) STRICT, WITHOUT ROWID`,
	`INSERT INTO snapshot_chain_new (vault, seq, kind, snapshot, time, principal, digest, mac)
		SELECT vault, seq, kind, snapshot, time, principal, digest, mac FROM snapshot_chain`,
	`DROP TABLE snapshot_chain`,
	`ALTER TABLE snapshot_chain_new RENAME TO snapshot_chain`,
}

var migrationChainRecover = []string{
	`CREATE TABLE snapshot_chain_new (
		vault     BLOB    NOT NULL REFERENCES vaults (id),
		seq       INTEGER NOT NULL CHECK (seq >= 1),
		kind      INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 8),
		snapshot  BLOB    NOT NULL CHECK (length(snapshot) = 32),
		time      INTEGER NOT NULL,
		principal TEXT    NOT NULL,
		digest    BLOB    NOT NULL CHECK (length(digest) = 32),
		mac       BLOB    NOT NULL CHECK (length(mac) = 32),
		PRIMARY KEY (vault, seq)
	) STRICT, WITHOUT ROWID`,
	`INSERT INTO snapshot_chain_new (vault, seq, kind, snapshot, time, principal, digest, mac)
		SELECT vault, seq, kind, snapshot, time, principal, digest, mac FROM snapshot_chain`,
	`DROP TABLE snapshot_chain`,
	`ALTER TABLE snapshot_chain_new RENAME TO snapshot_chain`,
}

// AppendChain appends entries to vault's snapshot chain and applies the
// changes they describe, in one write transaction (see vault.Catalog).
// Write transactions of all processes are serialized (BEGIN IMMEDIATE),
// so the head fn sees is the head the entries follow.
func (c *Catalog) AppendChain(ctx context.Context, vaultID vault.ID, fn func(head vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error)) error {
	err := c.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM vaults WHERE id = ? AND deleted IS NULL`, vaultID[:]).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("vault %s: %w", vaultID, vault.ErrNotFound)
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

// chainTx is catalog.ChainTx in a write transaction, which holds every
// row it reads until it ends.
type chainTx struct {
	ctx   context.Context
	tx    *sql.Tx
	vault vault.ID
}

func (t chainTx) InsertSnapshot(s vault.SnapshotRecord) error {
	return insertSnapshot(t.ctx, t.tx, t.vault, s)
}

func (t chainTx) SetSettings(s vault.VaultSettings) error {
	return setSettings(t.ctx, t.tx, t.vault, s)
}

func (t chainTx) SnapshotDeleted(id vault.ID) (bool, error) {
	var deleted *int64
	err := t.tx.QueryRowContext(t.ctx, `SELECT deleted FROM snapshots WHERE vault = ? AND id = ?`, t.vault[:], id[:]).Scan(&deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return false, vault.ErrNotFound
	}
	return deleted != nil, err
}

func (t chainTx) ForgetSnapshot(id vault.ID, at int64, by *string) error {
	_, err := t.tx.ExecContext(t.ctx, `UPDATE snapshots SET deleted = ?, deleted_by = ? WHERE vault = ? AND id = ?`, at, by, t.vault[:], id[:])
	return err
}

func (t chainTx) UndeleteSnapshot(id vault.ID) error {
	_, err := t.tx.ExecContext(t.ctx, `UPDATE snapshots SET deleted = NULL, deleted_by = NULL WHERE vault = ? AND id = ?`, t.vault[:], id[:])
	return err
}

func (t chainTx) RemoveSnapshot(id vault.ID) error {
	_, err := t.tx.ExecContext(t.ctx, `DELETE FROM snapshots WHERE vault = ? AND id = ?`, t.vault[:], id[:])
	return err
}

func (t chainTx) InsertEntry(e vault.ChainEntry, tm int64) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO snapshot_chain (vault, seq, kind, snapshot, time, principal, digest, mac)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, t.vault[:], int64(e.Seq), int64(e.Kind), e.Snapshot[:], tm, e.Principal, e.Digest[:], e.MAC[:])
	return err
}

func chainHead(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, vaultID vault.ID) (vault.ChainEntry, error) {
	es, err := chainEntries(ctx, q, vaultID, `ORDER BY seq DESC LIMIT 1`)
	if err != nil || len(es) == 0 {
		return vault.ChainEntry{}, err
	}
	return es[0], nil
}

func chainEntries(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, vaultID vault.ID, order string, args ...any) ([]vault.ChainEntry, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+catalog.ChainColumns+` FROM snapshot_chain WHERE vault = ? `+order, append([]any{vaultID[:]}, args...)...)
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
// moment: both are read in one read transaction (BEGIN DEFERRED on a
// connection of its own), which in WAL mode sees one snapshot of the
// file and does not hold off writers.
func (c *Catalog) SnapshotChain(ctx context.Context, vaultID vault.ID) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("read the snapshot chain: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN DEFERRED`); err != nil {
		return nil, nil, fmt.Errorf("read the snapshot chain: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
	es, err := chainEntries(ctx, conn, vaultID, `ORDER BY seq`)
	if err != nil {
		return nil, nil, err
	}
	ss, err := snapshotRows(ctx, conn, vaultID)
	if err != nil {
		return nil, nil, err
	}
	return es, ss, nil
}

// SettingsChain returns vault's settings and its chain entries read in
// one read transaction, without the snapshot records: what the engine
// needs to verify the settings (docs/format.md §8.4) on every decision.
func (c *Catalog) SettingsChain(ctx context.Context, vaultID vault.ID) (vault.VaultSettings, []vault.ChainEntry, error) {
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return vault.VaultSettings{}, nil, fmt.Errorf("read the settings: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN DEFERRED`); err != nil {
		return vault.VaultSettings{}, nil, fmt.Errorf("read the settings: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
	s, err := readSettings(ctx, conn, vaultID)
	if err != nil {
		return s, nil, err
	}
	es, err := chainEntries(ctx, conn, vaultID, `ORDER BY seq`)
	if err != nil {
		return s, nil, err
	}
	return s, es, nil
}

// SettingsChainSince is SettingsChain with only the chain entries from
// number from on: a reader that verified the entries before from (the
// engine's cache of its last verification) reads only what is new.
func (c *Catalog) SettingsChainSince(ctx context.Context, vaultID vault.ID, from uint64) (vault.VaultSettings, []vault.ChainEntry, error) {
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return vault.VaultSettings{}, nil, fmt.Errorf("read the settings: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN DEFERRED`); err != nil {
		return vault.VaultSettings{}, nil, fmt.Errorf("read the settings: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
	s, err := readSettings(ctx, conn, vaultID)
	if err != nil {
		return s, nil, err
	}
	es, err := chainEntries(ctx, conn, vaultID, `AND seq >= ? ORDER BY seq`, int64(min(from, math.MaxInt64)))
	if err != nil {
		return s, nil, err
	}
	return s, es, nil
}

// SetPackHeader stores pack id's sealed header and deletes its per-blob
// rows (the upgrade from format 1); with a nil header it only deletes the
// rows (a pack missing from the store). Once no blob rows remain, it
// compacts the file so that their contents do not linger in free pages
// or the write-ahead log.
func (c *Catalog) SetPackHeader(ctx context.Context, vaultID, id vault.ID, header []byte) error {
	if header != nil && len(header) == 0 {
		return fmt.Errorf("set header of pack %s: empty header", id)
	}
	var left bool
	var deleted int64
	err := c.write(ctx, func(tx *sql.Tx) error {
		q, args := `UPDATE packs SET header = ? WHERE vault = ? AND id = ?`, []any{header, vaultID[:], id[:]}
		if header == nil {
			q, args = `UPDATE packs SET header = header WHERE vault = ? AND id = ?`, []any{vaultID[:], id[:]}
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return vault.ErrNotFound
		}
		res, err = tx.ExecContext(ctx, `DELETE FROM blobs WHERE vault = ? AND pack = ?`, vaultID[:], id[:])
		if err != nil {
			return err
		}
		if deleted, err = res.RowsAffected(); err != nil {
			return err
		}
		if err := noteIndexed(ctx, tx, vaultID, id); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM blobs)`).Scan(&left)
	})
	if err != nil {
		return fmt.Errorf("set header of pack %s: %w", id, err)
	}
	if !left && deleted > 0 {
		if err := c.compact(ctx); err != nil {
			return fmt.Errorf("compact the catalog after removing blob sizes: %w", err)
		}
	}
	return nil
}

// compact rewrites the file without free pages and truncates the
// write-ahead log.
func (c *Catalog) compact(ctx context.Context) error {
	select {
	case c.writeLock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.writeLock }()
	if _, err := c.db.ExecContext(ctx, `VACUUM`); err != nil {
		return err
	}
	_, err := c.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}
