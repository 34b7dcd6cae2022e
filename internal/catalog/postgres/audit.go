package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/catalog"
)

// This file stores the tamper-evident audit log (internal/audit,
// docs/audit.md). Nothing here changes or removes an audit row, and the
// schema's triggers refuse statements that would (UPDATE, DELETE and
// TRUNCATE of its tables).

var _ audit.Store = (*Catalog)(nil)

// AuditSize implements audit.Store.
func (c *Catalog) AuditSize(ctx context.Context) (int64, error) {
	n, err := auditSize(ctx, c.pool)
	if err != nil {
		return 0, fmt.Errorf("audit log size: %w", err)
	}
	return n, nil
}

// auditSize returns one more than the highest entry index.
func auditSize(ctx context.Context, q querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `SELECT coalesce(max(idx) + 1, 0) FROM audit_entries`).Scan(&n)
	return n, err
}

// AppendAudit implements audit.Store: in one transaction under an
// advisory lock (so other replicas wait), it checks that the log holds
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
	err := c.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+lockKey+`)`, "audit"); err != nil {
			return err
		}
		n, err := auditSize(ctx, tx)
		if err != nil {
			return err
		}
		if n != start {
			return fmt.Errorf("%w: the log holds %d entries, not %d", audit.ErrConflict, n, start)
		}
		var h int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(idx) + 1, 0) FROM audit_hashes`).Scan(&h); err != nil {
			return err
		}
		if want := tlog.StoredHashCount(start); h != want {
			return fmt.Errorf("the log's %d entries have hashes up to storage index %d, want %d: the audit tables were altered; run coffer audit verify", start, h, want)
		}
		var b pgx.Batch
		for i, r := range records {
			b.Queue(`INSERT INTO audit_entries (idx, record) VALUES ($1, $2)`, start+int64(i), r)
		}
		x := tlog.StoredHashCount(start)
		for i := range hashes {
			b.Queue(`INSERT INTO audit_hashes (idx, hash) VALUES ($1, $2)`, x+int64(i), hashes[i][:])
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return fmt.Errorf("append audit entries %d..%d: %w", start, end-1, err)
	}
	return nil
}

// AuditRecords implements audit.Store.
func (c *Catalog) AuditRecords(ctx context.Context, from int64, n int) ([]audit.Record, error) {
	rows, err := c.pool.Query(ctx, `SELECT idx, record FROM audit_entries WHERE idx >= $1 ORDER BY idx LIMIT $2`, from, n)
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
	rows, err := c.pool.Query(ctx, `SELECT idx, hash FROM audit_hashes WHERE idx = ANY($1)`, indexes)
	if err != nil {
		return nil, fmt.Errorf("read audit hashes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			idx int64
			b   []byte
		)
		if err := rows.Scan(&idx, &b); err != nil {
			return nil, fmt.Errorf("read audit hashes: %w", err)
		}
		h, err := scanHash(idx, b)
		if err != nil {
			return nil, fmt.Errorf("read audit hashes: %w", err)
		}
		found[idx] = h
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit hashes: %w", err)
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
	rows, err := c.pool.Query(ctx, `SELECT idx, hash FROM audit_hashes WHERE idx >= $1 ORDER BY idx LIMIT $2`, from, n)
	if err != nil {
		return nil, fmt.Errorf("read audit hashes: %w", err)
	}
	defer rows.Close()
	var hs []audit.StoredHash
	for rows.Next() {
		var (
			s audit.StoredHash
			b []byte
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
	// ON CONFLICT DO NOTHING inserts nothing for a taken size, also when
	// another replica adds the same checkpoint at the same moment.
	n, err := c.update(ctx, `INSERT INTO audit_checkpoints (size, note, time) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING`, cp.Size, cp.Note, tm)
	if err == nil && n == 0 {
		err = audit.ErrExists
	}
	if err != nil {
		return fmt.Errorf("add audit checkpoint of %d entries: %w", cp.Size, err)
	}
	return nil
}

// AuditCheckpoints implements audit.Store.
func (c *Catalog) AuditCheckpoints(ctx context.Context, from int64, n int) ([]audit.Checkpoint, error) {
	rows, err := c.pool.Query(ctx, `SELECT size, note, time FROM audit_checkpoints WHERE size >= $1 ORDER BY size LIMIT $2`, from, n)
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
	err := c.pool.QueryRow(ctx, `SELECT size, note, time FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&cp.Size, &cp.Note, &tm)
	if errors.Is(err, pgx.ErrNoRows) {
		return audit.Checkpoint{}, fmt.Errorf("latest audit checkpoint: %w", audit.ErrNotFound)
	}
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("latest audit checkpoint: %w", err)
	}
	cp.Time = catalog.FromUnixNano(tm)
	return cp, nil
}
