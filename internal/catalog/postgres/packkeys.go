package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file holds the packs' lookup keys (docs/format.md §4.2): for each
// keyed pack a row of pack_keys numbering it and holding its keys, and
// one row of blob_keys per distinct key, so that finding the packs that
// may hold a blob is one index probe and building a vault's filter is
// one scan of pack_keys.

func encodeKeys(keys []uint64) []byte {
	b := make([]byte, 8*len(keys))
	for i, k := range keys {
		binary.LittleEndian.PutUint64(b[8*i:], k)
	}
	return b
}

func decodeKeys(b []byte) ([]uint64, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("stored keys have %d bytes, not a multiple of 8", len(b))
	}
	keys := make([]uint64, len(b)/8)
	for i := range keys {
		keys[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return keys, nil
}

// insertKeys records keys for pack id in tx (which has none).
func insertKeys(ctx context.Context, tx pgx.Tx, vaultID, id vault.ID, keys []uint64) error {
	var num int64
	err := tx.QueryRow(ctx, `INSERT INTO pack_keys (vault, pack, keys) VALUES ($1, $2, $3) RETURNING num`,
		vaultID[:], id[:], encodeKeys(keys)).Scan(&num)
	if err != nil {
		return err
	}
	seen := make(map[uint64]struct{}, len(keys))
	rows := make([][]any, 0, len(keys))
	for _, k := range keys {
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		rows = append(rows, []any{int64(k), num})
	}
	if len(rows) == 0 {
		return nil
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"blob_keys"}, []string{"key", "num"}, pgx.CopyFromRows(rows))
	return err
}

// deleteKeys removes pack id's keys in tx, if it has any.
func deleteKeys(ctx context.Context, tx pgx.Tx, vaultID, id vault.ID) error {
	var num int64
	err := tx.QueryRow(ctx, `DELETE FROM pack_keys WHERE vault = $1 AND pack = $2 RETURNING num`, vaultID[:], id[:]).Scan(&num)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `DELETE FROM blob_keys WHERE num = $1`, num)
	return err
}

// Pack implements vault.Catalog.
func (c *Catalog) Pack(ctx context.Context, vaultID, id vault.ID) (vault.PackRecord, error) {
	var (
		size, dek, nblob, create int64
		condemned                *int64
		header                   []byte
		keyed                    bool
	)
	err := c.pool.QueryRow(ctx, `SELECT p.size, p.dek_version, p.blobs, p.created, p.condemned, p.header, k.num IS NOT NULL
		FROM packs p LEFT JOIN pack_keys k ON k.vault = p.vault AND k.pack = p.id
		WHERE p.vault = $1 AND p.id = $2`, vaultID[:], id[:]).Scan(&size, &dek, &nblob, &create, &condemned, &header, &keyed)
	if errors.Is(err, pgx.ErrNoRows) {
		return vault.PackRecord{}, fmt.Errorf("pack %s: %w", id, vault.ErrNotFound)
	}
	if err != nil {
		return vault.PackRecord{}, fmt.Errorf("read pack %s: %w", id, err)
	}
	return vault.PackRecord{ID: id, Size: size, DEKVersion: uint32(dek), Blobs: int(nblob), Created: catalog.FromUnixNano(create),
		Condemned: catalog.FromNullUnixNano(condemned), Header: header, Keyed: keyed}, nil
}

// maxKeysPerQuery bounds the array of one PacksByKey query.
const maxKeysPerQuery = 5000

// PacksByKey implements vault.Catalog.
func (c *Catalog) PacksByKey(ctx context.Context, vaultID vault.ID, keys []uint64, fn func(uint64, vault.ID) error) error {
	seen := make(map[uint64]struct{}, len(keys))
	uniq := make([]int64, 0, len(keys))
	for _, k := range keys {
		if _, ok := seen[k]; !ok {
			seen[k] = struct{}{}
			uniq = append(uniq, int64(k))
		}
	}
	for len(uniq) > 0 {
		batch := uniq[:min(len(uniq), maxKeysPerQuery)]
		uniq = uniq[len(batch):]
		if err := c.packsByKey(ctx, vaultID, batch, fn); err != nil {
			return err
		}
	}
	return nil
}

func (c *Catalog) packsByKey(ctx context.Context, vaultID vault.ID, keys []int64, fn func(uint64, vault.ID) error) error {
	rows, err := c.pool.Query(ctx, `SELECT b.key, k.pack FROM blob_keys b JOIN pack_keys k ON k.num = b.num
		WHERE k.vault = $1 AND b.key = ANY($2)`, vaultID[:], keys)
	if err != nil {
		return fmt.Errorf("look up blob keys: %w", err)
	}
	defer rows.Close()
	var (
		key  int64
		pack []byte
	)
	for rows.Next() {
		if err := rows.Scan(&key, &pack); err != nil {
			return fmt.Errorf("look up blob keys: %w", err)
		}
		var id vault.ID
		if err := catalog.ScanID(&id, pack); err != nil {
			return fmt.Errorf("look up blob keys: %w", err)
		}
		if err := fn(uint64(key), id); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("look up blob keys: %w", err)
	}
	return nil
}

// PackKeys implements vault.Catalog.
func (c *Catalog) PackKeys(ctx context.Context, vaultID vault.ID, fn func(vault.ID, []uint64) error) error {
	rows, err := c.pool.Query(ctx, `SELECT pack, keys FROM pack_keys WHERE vault = $1`, vaultID[:])
	if err != nil {
		return fmt.Errorf("list pack keys: %w", err)
	}
	defer rows.Close()
	var pack, kb []byte
	for rows.Next() {
		if err := rows.Scan(&pack, &kb); err != nil {
			return fmt.Errorf("list pack keys: %w", err)
		}
		var id vault.ID
		if err := catalog.ScanID(&id, pack); err != nil {
			return fmt.Errorf("list pack keys: %w", err)
		}
		keys, err := decodeKeys(kb)
		if err != nil {
			return fmt.Errorf("list pack keys: pack %s: %w", id, err)
		}
		if err := fn(id, keys); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list pack keys: %w", err)
	}
	return nil
}

// SetPackKeys implements vault.Catalog. The pack's row is locked first,
// so that two replicas setting one pack's keys at once take turns.
func (c *Catalog) SetPackKeys(ctx context.Context, vaultID, id vault.ID, keys []uint64) error {
	err := c.write(ctx, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM packs WHERE vault = $1 AND id = $2 FOR UPDATE`, vaultID[:], id[:]).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return vault.ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := deleteKeys(ctx, tx, vaultID, id); err != nil {
			return err
		}
		if err := insertKeys(ctx, tx, vaultID, id, keys); err != nil {
			return err
		}
		return noteIndexed(ctx, tx, vaultID, id)
	})
	if err != nil {
		return fmt.Errorf("set keys of pack %s: %w", id, err)
	}
	return nil
}

// noteIndexed drops pack id from unindexed_packs in tx once it has both
// a sealed header copy and lookup keys.
func noteIndexed(ctx context.Context, tx pgx.Tx, vaultID, id vault.ID) error {
	_, err := tx.Exec(ctx, `DELETE FROM unindexed_packs WHERE vault = $1 AND pack = $2
		AND EXISTS (SELECT 1 FROM packs WHERE vault = $1 AND id = $2 AND header IS NOT NULL)
		AND EXISTS (SELECT 1 FROM pack_keys WHERE vault = $1 AND pack = $2)`, vaultID[:], id[:])
	return err
}

// UnindexedPacks implements vault.Catalog. Packs without a header are
// found by the header itself (through packs_headerless), not by the
// list, so a header copy removed behind the catalog's back is found too.
func (c *Catalog) UnindexedPacks(ctx context.Context, vaultID vault.ID, fn func(vault.PackRecord) error) error {
	rows, err := c.pool.Query(ctx, `SELECT p.id, p.size, p.dek_version, p.blobs, p.created, p.condemned, p.header, k.num IS NOT NULL
		FROM packs p LEFT JOIN pack_keys k ON k.vault = p.vault AND k.pack = p.id
		WHERE p.vault = $1 AND p.header IS NULL
		UNION ALL
		SELECT p.id, p.size, p.dek_version, p.blobs, p.created, p.condemned, p.header, false
		FROM unindexed_packs u JOIN packs p ON p.vault = u.vault AND p.id = u.pack
		WHERE u.vault = $1 AND p.header IS NOT NULL
			AND NOT EXISTS (SELECT 1 FROM pack_keys k WHERE k.vault = p.vault AND k.pack = p.id)`, vaultID[:])
	if err != nil {
		return fmt.Errorf("list unindexed packs: %w", err)
	}
	return scanPacks(rows, fn)
}

// PackTotals implements vault.Catalog.
func (c *Catalog) PackTotals(ctx context.Context, vaultID vault.ID) (int, int64, error) {
	var n, size int64
	if err := c.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(size), 0)::bigint FROM packs WHERE vault = $1`, vaultID[:]).Scan(&n, &size); err != nil {
		return 0, 0, fmt.Errorf("count packs: %w", err)
	}
	return int(n), size, nil
}
