package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file holds the packs' lookup keys (docs/format.md §4.2): for each
// keyed pack a row of pack_keys numbering it and holding its keys, and
// one row of blob_keys per key, clustered by key, so that finding the
// packs that may hold a blob is one index probe and building a vault's
// filter is one scan of pack_keys.
//
// Packs are referred to by an explicit INTEGER PRIMARY KEY, which VACUUM
// (SetPackHeader compacts the file) keeps, unlike an implicit rowid.
var migrationPackKeys = []string{
	`CREATE TABLE pack_keys (
		num   INTEGER PRIMARY KEY,
		vault BLOB    NOT NULL,
		pack  BLOB    NOT NULL,
		keys  BLOB    NOT NULL CHECK (length(keys) % 8 = 0),
		UNIQUE (vault, pack),
		FOREIGN KEY (vault, pack) REFERENCES packs (vault, id)
	) STRICT`,
	`CREATE TABLE blob_keys (
		key INTEGER NOT NULL,
		num INTEGER NOT NULL,
		PRIMARY KEY (key, num)
	) STRICT, WITHOUT ROWID`,
}

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
func insertKeys(ctx context.Context, tx *sql.Tx, vaultID, id vault.ID, keys []uint64) error {
	var num int64
	err := tx.QueryRowContext(ctx, `INSERT INTO pack_keys (vault, pack, keys) VALUES (?, ?, ?) RETURNING num`,
		vaultID[:], id[:], encodeKeys(keys)).Scan(&num)
	if err != nil {
		return err
	}
	// In key order, many rows a statement: a pack's keys go into a
	// B-tree clustered by key, so sorted they meet its pages in order,
	// and a statement per key cost more than the insert (a pack of small
	// files has thousands of keys; at a million files this was a tenth of
	// a first backup's CPU).
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	full, err := tx.PrepareContext(ctx, insertKeysSQL(keysPerInsert))
	if err != nil {
		return err
	}
	defer full.Close()
	args := make([]any, 0, 2*keysPerInsert)
	for len(sorted) > 0 {
		n := min(len(sorted), keysPerInsert)
		args = args[:0]
		for _, k := range sorted[:n] {
			args = append(args, int64(k), num)
		}
		st := full
		if n < keysPerInsert {
			if st, err = tx.PrepareContext(ctx, insertKeysSQL(n)); err != nil {
				return err
			}
		}
		_, err := st.ExecContext(ctx, args...)
		if st != full {
			st.Close()
		}
		if err != nil {
			return err
		}
		sorted = sorted[n:]
	}
	return nil
}

// keysPerInsert is how many blob_keys rows one INSERT writes (two
// parameters each, far below SQLite's limit of 32,766).
const keysPerInsert = 256

func insertKeysSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT OR IGNORE INTO blob_keys (key, num) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?, ?)")
	}
	return b.String()
}

// deleteKeys removes pack id's keys in tx, if it has any: the rows of
// the keys it lists, or with every, every row that names it (a scan of
// all keys, for SetPackKeys, which repairs rows a catalog writer moved).
func deleteKeys(ctx context.Context, tx *sql.Tx, vaultID, id vault.ID, every bool) error {
	var (
		num int64
		kb  []byte
	)
	err := tx.QueryRowContext(ctx, `SELECT num, keys FROM pack_keys WHERE vault = ? AND pack = ?`, vaultID[:], id[:]).Scan(&num, &kb)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if every {
		if _, err := tx.ExecContext(ctx, `DELETE FROM blob_keys WHERE num = ?`, num); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM pack_keys WHERE num = ?`, num)
		return err
	}
	keys, err := decodeKeys(kb)
	if err != nil {
		return err
	}
	del, err := tx.PrepareContext(ctx, `DELETE FROM blob_keys WHERE key = ? AND num = ?`)
	if err != nil {
		return err
	}
	defer del.Close()
	for _, k := range keys {
		if _, err := del.ExecContext(ctx, int64(k), num); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM pack_keys WHERE num = ?`, num)
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
	err := c.db.QueryRowContext(ctx, `SELECT p.size, p.dek_version, p.blobs, p.created, p.condemned, p.header, k.num IS NOT NULL
		FROM packs p LEFT JOIN pack_keys k ON k.vault = p.vault AND k.pack = p.id
		WHERE p.vault = ? AND p.id = ?`, vaultID[:], id[:]).Scan(&size, &dek, &nblob, &create, &condemned, &header, &keyed)
	if errors.Is(err, sql.ErrNoRows) {
		return vault.PackRecord{}, fmt.Errorf("pack %s: %w", id, vault.ErrNotFound)
	}
	if err != nil {
		return vault.PackRecord{}, fmt.Errorf("read pack %s: %w", id, err)
	}
	return vault.PackRecord{ID: id, Size: size, DEKVersion: uint32(dek), Blobs: int(nblob), Created: catalog.FromUnixNano(create),
		Condemned: catalog.FromNullUnixNano(condemned), Header: header, Keyed: keyed}, nil
}

// maxKeysPerQuery bounds the parameters of one PacksByKey query (SQLite
// allows 32,766).
const maxKeysPerQuery = 500

// PacksByKey implements vault.Catalog.
func (c *Catalog) PacksByKey(ctx context.Context, vaultID vault.ID, keys []uint64, fn func(uint64, vault.ID) error) error {
	seen := make(map[uint64]struct{}, len(keys))
	uniq := make([]uint64, 0, len(keys))
	for _, k := range keys {
		if _, ok := seen[k]; !ok {
			seen[k] = struct{}{}
			uniq = append(uniq, k)
		}
	}
	for len(uniq) > 0 {
		batch := uniq[:min(len(uniq), maxKeysPerQuery)]
		uniq = uniq[len(batch):]
		var q string
		args := make([]any, 0, len(batch)+1)
		args = append(args, vaultID[:])
		if len(batch) == 1 {
			q = `SELECT b.key, k.pack FROM blob_keys b JOIN pack_keys k ON k.num = b.num WHERE k.vault = ? AND b.key = ?`
		} else {
			// CROSS JOIN: blob_keys first, by key. Left to itself the
			// planner ranges over the vault's packs and probes each key
			// in each of them, which grows with the packs times the keys.
			q = `SELECT b.key, k.pack FROM blob_keys b CROSS JOIN pack_keys k ON k.num = b.num WHERE k.vault = ? AND b.key IN (?` +
				strings.Repeat(",?", len(batch)-1) + `)`
		}
		for _, k := range batch {
			args = append(args, int64(k))
		}
		if err := c.packsByKey(ctx, q, args, fn); err != nil {
			return err
		}
	}
	return nil
}

func (c *Catalog) packsByKey(ctx context.Context, q string, args []any, fn func(uint64, vault.ID) error) error {
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("look up blob keys: %w", err)
	}
	defer rows.Close()
	var (
		key  int64
		pack sql.RawBytes
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
	// "+vault": a scan of the table in its own order, sequential reads,
	// rather than a range of the (vault, pack) index with a random read
	// of the table for each of its rows (2.6 s instead of 0.4 s for
	// 625,000 packs, at each of the two scans building a backup's
	// filter). A catalog holding other vaults' packs reads theirs too.
	rows, err := c.db.QueryContext(ctx, `SELECT pack, keys FROM pack_keys WHERE +vault = ?`, vaultID[:])
	if err != nil {
		return fmt.Errorf("list pack keys: %w", err)
	}
	defer rows.Close()
	var pack, kb sql.RawBytes
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

// SetPackKeys implements vault.Catalog.
func (c *Catalog) SetPackKeys(ctx context.Context, vaultID, id vault.ID, keys []uint64) error {
	err := c.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM packs WHERE vault = ? AND id = ?`, vaultID[:], id[:]).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return vault.ErrNotFound
		}
		if err := deleteKeys(ctx, tx, vaultID, id, true); err != nil {
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

// migrationUnindexed lets opening a vault find the packs it has to
// index without reading every pack with its header (a scan that took
// 15 s at 625,000 packs): those recorded without a sealed header copy
// (format 1, or a copy a catalog writer removed) by a partial index of
// packs whose header is NULL, and those without lookup keys by
// unindexed_packs, which AddPack, SetPackHeader and SetPackKeys keep in
// the same transaction as the pack's row and which starts with every
// pack that needs it now.
var migrationUnindexed = []string{
	`CREATE INDEX packs_headerless ON packs (vault) WHERE header IS NULL`,
	`CREATE TABLE unindexed_packs (
		vault BLOB NOT NULL,
		pack  BLOB NOT NULL,
		PRIMARY KEY (vault, pack),
		FOREIGN KEY (vault, pack) REFERENCES packs (vault, id)
	) STRICT, WITHOUT ROWID`,
	`INSERT INTO unindexed_packs (vault, pack)
		SELECT p.vault, p.id FROM packs p
		WHERE p.header IS NULL OR NOT EXISTS (SELECT 1 FROM pack_keys k WHERE k.vault = p.vault AND k.pack = p.id)`,
}

// noteIndexed drops pack id from unindexed_packs in tx once it has both
// a sealed header copy and lookup keys.
func noteIndexed(ctx context.Context, tx *sql.Tx, vaultID, id vault.ID) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM unindexed_packs WHERE vault = ?1 AND pack = ?2
		AND EXISTS (SELECT 1 FROM packs WHERE vault = ?1 AND id = ?2 AND header IS NOT NULL)
		AND EXISTS (SELECT 1 FROM pack_keys WHERE vault = ?1 AND pack = ?2)`, vaultID[:], id[:])
	return err
}

// unindexedQuery lists the packs UnindexedPacks returns. Packs without
// a header are found by the header itself, through packs_headerless, not
// by the list: a header copy removed behind the catalog's back is found
// too. Without statistics SQLite would rather range over the vault's
// packs by primary key (a scan of every pack with its header, 0.5 s at
// 625,000): "+p.vault" keeps it from using the primary key there, so it
// scans the partial index, and CROSS JOIN makes it start from the list
// (TestUnindexedPlan). A catalog without the index is read correctly,
// only slowly.
const unindexedQuery = `SELECT p.id, p.size, p.dek_version, p.blobs, p.created, p.condemned, p.header, k.num IS NOT NULL
	FROM packs p LEFT JOIN pack_keys k ON k.vault = p.vault AND k.pack = p.id
	WHERE +p.vault = ?1 AND p.header IS NULL
	UNION ALL
	SELECT p.id, p.size, p.dek_version, p.blobs, p.created, p.condemned, p.header, 0
	FROM unindexed_packs u CROSS JOIN packs p ON p.vault = u.vault AND p.id = u.pack
	WHERE u.vault = ?1 AND p.header IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM pack_keys k WHERE k.vault = p.vault AND k.pack = p.id)`

// UnindexedPacks implements vault.Catalog.
func (c *Catalog) UnindexedPacks(ctx context.Context, vaultID vault.ID, fn func(vault.PackRecord) error) error {
	rows, err := c.db.QueryContext(ctx, unindexedQuery, vaultID[:])
	if err != nil {
		return fmt.Errorf("list unindexed packs: %w", err)
	}
	return scanPacks(rows, fn)
}

// PackTotals implements vault.Catalog.
func (c *Catalog) PackTotals(ctx context.Context, vaultID vault.ID) (int, int64, error) {
	var n, size int64
	if err := c.db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(size), 0) FROM packs WHERE vault = ?`, vaultID[:]).Scan(&n, &size); err != nil {
		return 0, 0, fmt.Errorf("count packs: %w", err)
	}
	return int(n), size, nil
}
