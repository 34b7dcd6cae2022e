package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/catalog"
)

// This file stores the tamper-evident audit log (internal/audit,
// docs/audit.md). Nothing here changes or removes an audit row, and the
// schema's triggers refuse statements that would.

var _ audit.Store = (*Catalog)(nil)

// migrationAudit is the schema step that adds the audit log's tables.
var migrationAudit = []string{
	// idx is the record's index in the log, from 0 without gaps; record
	// is the entry's canonical JSON, exactly the bytes that are hashed.
	`CREATE TABLE audit_entries (
		idx    INTEGER NOT NULL PRIMARY KEY CHECK (idx >= 0),
		record BLOB    NOT NULL
	) STRICT`,
	// idx is the tlog storage index (tlog.StoredHashIndex).
	`CREATE TABLE audit_hashes (
		idx  INTEGER NOT NULL PRIMARY KEY CHECK (idx >= 0),
		hash BLOB    NOT NULL CHECK (length(hash) = 32)
	) STRICT`,
	// size: how many entries the signed note covers (the note says so
	// too; verification checks that they agree). time is not signed.
	`CREATE TABLE audit_checkpoints (
		size INTEGER NOT NULL PRIMARY KEY CHECK (size > 0),
		note TEXT    NOT NULL,
		time INTEGER NOT NULL
	) STRICT`,
	// Append only, also against a later bug: no statement may change or
	// remove audit rows. (Whoever can write the file can drop these
	// triggers; the signed checkpoints are what reveal that.) The
	// INSERT triggers stop INSERT OR REPLACE, whose deletions fire no
	// DELETE trigger while recursive_triggers is off.
	`CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
	`CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
	`CREATE TRIGGER audit_hashes_no_update BEFORE UPDATE ON audit_hashes BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
	`CREATE TRIGGER audit_hashes_no_delete BEFORE DELETE ON audit_hashes BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
	`CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
	`CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
	`CREATE TRIGGER audit_entries_no_replace BEFORE INSERT ON audit_entries
		WHEN EXISTS (SELECT 1 FROM audit_entries WHERE idx = NEW.idx)
		BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
	`CREATE TRIGGER audit_hashes_no_replace BEFORE INSERT ON audit_hashes
		WHEN EXISTS (SELECT 1 FROM audit_hashes WHERE idx = NEW.idx)
		BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
	`CREATE TRIGGER audit_checkpoints_no_replace BEFORE INSERT ON audit_checkpoints
		WHEN EXISTS (SELECT 1 FROM audit_checkpoints WHERE size = NEW.size)
		BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
}

// AuditSize implements audit.Store.
func (c *Catalog) AuditSize(ctx context.Context) (int64, error) {
	n, err := auditSize(ctx, c.db)
	if err != nil {
		return 0, fmt.Errorf("audit log size: %w", err)
	}
	return n, nil
}

type queryRower interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// auditSize returns one more than the highest entry index.
func auditSize(ctx context.Context, q queryRower) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT coalesce(max(idx) + 1, 0) FROM audit_entries`).Scan(&n)
	return n, err
}

// AppendAudit implements audit.Store: in one write transaction (BEGIN
// IMMEDIATE, so other processes wait), it checks that the log holds
// exactly start entries and their hashes, then inserts.
func (c *Catalog) AppendAudit(ctx context.Context, start int64, records [][]byte, hashes []tlog.Hash) error {
	if start < 0 {
		return fmt.Errorf("append audit entries at %d: negative index", start)
	}
	end := start + int64(len(records))
	if want := tlog.StoredHashCount(end) - tlog.StoredHashCount(start); int64(len(hashes)) != want {
		return fmt.Errorf("append audit entries %d..%d: %d hashes, want %d", start, end-1, len(hashes), want)
	}
	if len(records) == 0 {
		return nil
	}
	err := c.write(ctx, func(tx *sql.Tx) error {
		n, err := auditSize(ctx, tx)
		if err != nil {
			return err
		}
		if n != start {
			return fmt.Errorf("%w: the log holds %d entries, not %d", audit.ErrConflict, n, start)
		}
		var h int64
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(idx) + 1, 0) FROM audit_hashes`).Scan(&h); err != nil {
			return err
		}
		if want := tlog.StoredHashCount(start); h != want {
			return fmt.Errorf("the log's %d entries have hashes up to storage index %d, want %d: the audit tables were altered; run coffer audit verify", start, h, want)
		}
		ins, err := tx.PrepareContext(ctx, `INSERT INTO audit_entries (idx, record) VALUES (?, ?)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		for i, r := range records {
			if _, err := ins.ExecContext(ctx, start+int64(i), r); err != nil {
				return err
			}
		}
		insH, err := tx.PrepareContext(ctx, `INSERT INTO audit_hashes (idx, hash) VALUES (?, ?)`)
		if err != nil {
			return err
		}
		defer insH.Close()
		x := tlog.StoredHashCount(start)
		for i := range hashes {
			if _, err := insH.ExecContext(ctx, x+int64(i), hashes[i][:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append audit entries %d..%d: %w", start, end-1, err)
	}
	return nil
}

// AuditRecords implements audit.Store.
func (c *Catalog) AuditRecords(ctx context.Context, from int64, n int) ([]audit.Record, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT idx, record FROM audit_entries WHERE idx >= ? ORDER BY idx LIMIT ?`, from, n)
	if err != nil {
		return nil, fmt.Errorf("read audit entries: %w", err)
	}
	defer rows.Close()
	var rs []audit.Record
	for rows.Next() {
		var r audit.Record
		if err := rows.Scan(&r.Index, &r.Data); err != nil {
			return nil, fmt.Errorf("read audit entries: %w", err)
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit entries: %w", err)
	}
	return rs, nil
}

// scanHash copies a stored hash.
func scanHash(idx int64, b []byte) (tlog.Hash, error) {
	var h tlog.Hash
	if len(b) != len(h) {
		return h, fmt.Errorf("stored audit hash %d has %d bytes, want %d", idx, len(b), len(h))
	}
	copy(h[:], b)
	return h, nil
}

// AuditHashes implements audit.Store.
func (c *Catalog) AuditHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	found := make(map[int64]tlog.Hash, len(indexes))
	const chunk = 500 // well below SQLite's limit on parameters
	for lo := 0; lo < len(indexes); lo += chunk {
		part := indexes[lo:min(lo+chunk, len(indexes))]
		args := make([]any, len(part))
		for i, x := range part {
			args[i] = x
		}
		q := `SELECT idx, hash FROM audit_hashes WHERE idx IN (?` + strings.Repeat(`, ?`, len(part)-1) + `)`
		rows, err := c.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("read audit hashes: %w", err)
		}
		for rows.Next() {
			var (
				idx int64
				b   []byte
			)
			if err := rows.Scan(&idx, &b); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read audit hashes: %w", err)
			}
			h, err := scanHash(idx, b)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("read audit hashes: %w", err)
			}
			found[idx] = h
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read audit hashes: %w", err)
		}
	}
	hs := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := found[x]
		if !ok {
			return nil, fmt.Errorf("read audit hashes: storage index %d: %w", x, audit.ErrNotFound)
		}
		hs[i] = h
	}
	return hs, nil
}

// AuditHashRange implements audit.Store.
func (c *Catalog) AuditHashRange(ctx context.Context, from int64, n int) ([]audit.StoredHash, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT idx, hash FROM audit_hashes WHERE idx >= ? ORDER BY idx LIMIT ?`, from, n)
	if err != nil {
		return nil, fmt.Errorf("read audit hashes: %w", err)
	}
	defer rows.Close()
	var hs []audit.StoredHash
	for rows.Next() {
		var (
			s audit.StoredHash
			b sql.RawBytes
		)
		if err := rows.Scan(&s.Index, &b); err != nil {
			return nil, fmt.Errorf("read audit hashes: %w", err)
		}
		if s.Hash, err = scanHash(s.Index, b); err != nil {
			return nil, fmt.Errorf("read audit hashes: %w", err)
		}
		hs = append(hs, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit hashes: %w", err)
	}
	return hs, nil
}

// AddAuditCheckpoint implements audit.Store.
func (c *Catalog) AddAuditCheckpoint(ctx context.Context, cp audit.Checkpoint) error {
	if cp.Size <= 0 {
		return fmt.Errorf("add audit checkpoint of %d entries: size must be positive", cp.Size)
	}
	tm, err := catalog.UnixNano(cp.Time)
	if err != nil {
		return fmt.Errorf("add audit checkpoint of %d entries: %w", cp.Size, err)
	}
	err = c.write(ctx, func(tx *sql.Tx) error {
		// Asked first: the append-only trigger refuses a duplicate
		// before the primary key would.
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM audit_checkpoints WHERE size = ?`, cp.Size).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return audit.ErrExists
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO audit_checkpoints (size, note, time) VALUES (?, ?, ?)`, cp.Size, cp.Note, tm)
		return err
	})
	if err != nil {
		return fmt.Errorf("add audit checkpoint of %d entries: %w", cp.Size, err)
	}
	return nil
}

// AuditCheckpoints implements audit.Store.
func (c *Catalog) AuditCheckpoints(ctx context.Context, from int64, n int) ([]audit.Checkpoint, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT size, note, time FROM audit_checkpoints WHERE size >= ? ORDER BY size LIMIT ?`, from, n)
	if err != nil {
		return nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	defer rows.Close()
	var cs []audit.Checkpoint
	for rows.Next() {
		var (
			cp audit.Checkpoint
			tm int64
		)
		if err := rows.Scan(&cp.Size, &cp.Note, &tm); err != nil {
			return nil, fmt.Errorf("read audit checkpoints: %w", err)
		}
		cp.Time = catalog.FromUnixNano(tm)
		cs = append(cs, cp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	return cs, nil
}

// LatestAuditCheckpoint implements audit.Store.
func (c *Catalog) LatestAuditCheckpoint(ctx context.Context) (audit.Checkpoint, error) {
	var (
		cp audit.Checkpoint
		tm int64
	)
	err := c.db.QueryRowContext(ctx, `SELECT size, note, time FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&cp.Size, &cp.Note, &tm)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Checkpoint{}, fmt.Errorf("latest audit checkpoint: %w", audit.ErrNotFound)
	}
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("latest audit checkpoint: %w", err)
	}
	cp.Time = catalog.FromUnixNano(tm)
	return cp, nil
}
