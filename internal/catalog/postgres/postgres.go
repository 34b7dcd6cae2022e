// Package postgres implements vault.Catalog on PostgreSQL, using
// github.com/jackc/pgx/v5, so that several coffer server replicas can
// share one catalog (docs/postgres.md).
//
// It mirrors the SQLite catalog (internal/catalog/sqlite) in everything
// a caller can see: the same error values, orders and checks. Both
// encode their rows, check records and apply the snapshot chain's rules
// through internal/catalog, and both pass the suites in
// internal/catalog/catalogtest. Where SQLite relies on its single
// writer, this package takes row locks (SELECT … FOR UPDATE) or
// transaction-scoped advisory locks, so that a check and the write it
// guards are one step for every process sharing the database.
//
// The schema lives in the embedded migrations directory; Open applies
// the missing ones under an advisory lock, so replicas starting at once
// migrate once. Everything lives in the connection's current schema (set
// it with search_path in the URL to share a database with other data).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

var _ vault.Catalog = (*Catalog)(nil)

// Catalog is a vault.Catalog stored in a PostgreSQL database. It is safe
// for concurrent use, also by other processes using the same database.
type Catalog struct {
	pool *pgxpool.Pool

	// jobs are the connections holding job locks (joblock.go), which
	// Close closes: the pool's Close waits for every connection taken
	// out of it.
	jobMu sync.Mutex
	jobs  map[*pgxpool.Conn]struct{}

	closeOnce sync.Once
}

// IsURL reports whether s names a PostgreSQL catalog (a postgres:// or
// postgresql:// URL) rather than a file.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Redact returns url without its password, for messages and logs.
func Redact(url string) string {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return "postgres://…"
	}
	s := "postgres://"
	if cfg.User != "" {
		s += cfg.User + "@"
	}
	return fmt.Sprintf("%s%s:%d/%s", s, cfg.Host, cfg.Port, cfg.Database)
}

// Open connects to the database at url (a postgres:// URL, or any
// connection string pgx accepts) and brings its schema up to date. It
// fails with ErrNewerSchema if the database was migrated by a newer
// version of Coffer. Errors never repeat the URL's password.
func Open(ctx context.Context, url string) (*Catalog, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors may quote the string; do not repeat it.
		return nil, fmt.Errorf("open catalog %s: invalid connection URL", Redact(url))
	}
	if cfg.MaxConns < 8 {
		cfg.MaxConns = 8
	}
	cfg.MaxConnIdleTime = time.Minute
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", Redact(url), err)
	}
	c := &Catalog{pool: pool, jobs: map[*pgxpool.Conn]struct{}{}}
	if err := c.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open catalog %s: %w", Redact(url), err)
	}
	return c, nil
}

// Close releases the job locks still held and closes the connection
// pool. Calling it again does nothing.
func (c *Catalog) Close() error {
	c.closeOnce.Do(func() {
		c.jobMu.Lock()
		jobs := c.jobs
		c.jobs = nil
		c.jobMu.Unlock()
		for conn := range jobs {
			conn.Hijack().Close(context.Background())
		}
		c.pool.Close()
	})
	return nil
}

// querier is a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// write runs fn in a read-committed transaction and commits it if fn
// returns nil. Checks that need to see other writers' work take locks.
// A transaction PostgreSQL aborted to break a deadlock (or a
// serialization failure) is run again, a few times: fn must only use the
// database.
func (c *Catalog) write(ctx context.Context, fn func(pgx.Tx) error) error {
	for i := 0; ; i++ {
		err := c.writeOnce(ctx, fn)
		if code := pgCode(err); (code != "40P01" && code != "40001") || i == 3 {
			return err
		}
	}
}

// writeOnce is write without the retries, for a fn that does more than
// use the database (AppendChain's callback stores objects).
func (c *Catalog) writeOnce(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// read runs fn in a read-only repeatable-read transaction: everything fn
// reads is one snapshot of the database.
func (c *Catalog) read(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := c.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return fn(tx)
}

// update runs one statement (a transaction of its own) and returns the number
// of rows it changed.
func (c *Catalog) update(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := c.pool.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// pgCode returns the SQLSTATE of err, "" if it has none.
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// isDuplicate reports whether err is a primary key or unique violation.
func isDuplicate(err error) bool { return pgCode(err) == "23505" }

// isMissingVault reports whether err is a foreign key violation; the only
// foreign keys an insert can miss name the vault (or a principal).
func isMissingVault(err error) bool { return pgCode(err) == "23503" }

// isCheck reports whether err is a CHECK constraint violation.
func isCheck(err error) bool { return pgCode(err) == "23514" }

// CreateVault records a new vault; ErrExists if its name or ID is taken.
func (c *Catalog) CreateVault(ctx context.Context, v vault.VaultRecord) error {
	created, err := catalog.UnixNano(v.Created)
	if err != nil {
		return fmt.Errorf("create vault %q: %w", v.Name, err)
	}
	_, err = c.pool.Exec(ctx, `INSERT INTO vaults (id, name, created) VALUES ($1, $2, $3)`, v.ID[:], v.Name, created)
	if isDuplicate(err) {
		return fmt.Errorf("create vault %q: %w (a deleted vault's name stays taken)", v.Name, vault.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create vault %q: %w", v.Name, err)
	}
	return nil
}

// Vault returns the vault named name, or ErrNotFound.
func (c *Catalog) Vault(ctx context.Context, name string) (vault.VaultRecord, error) {
	v := vault.VaultRecord{Name: name}
	var id []byte
	var created int64
	err := c.pool.QueryRow(ctx, `SELECT id, created FROM vaults WHERE name = $1 AND deleted IS NULL`, name).Scan(&id, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return vault.VaultRecord{}, fmt.Errorf("vault %q: %w", name, vault.ErrNotFound)
	}
	if err == nil {
		err = catalog.ScanID(&v.ID, id)
	}
	if err != nil {
		return vault.VaultRecord{}, fmt.Errorf("vault %q: %w", name, err)
	}
	v.Created = catalog.FromUnixNano(created)
	return v, nil
}

// DeleteVault implements vault.Catalog.
func (c *Catalog) DeleteVault(ctx context.Context, vaultID vault.ID, at time.Time) error {
	ns, err := catalog.UnixNano(at)
	if err != nil {
		return fmt.Errorf("delete vault %s: %w", vaultID, err)
	}
	err = c.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE vaults SET deleted = $1 WHERE id = $2 AND deleted IS NULL`, ns, vaultID[:])
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return vault.ErrNotFound
		}
		// The packs' rows first, as RemovePack, SetPackKeys and
		// SetPackHeader lock a pack's row before its other rows.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM packs WHERE vault = $1 ORDER BY id FOR UPDATE`, vaultID[:]); err != nil {
			return err
		}
		for _, q := range []string{
			`DELETE FROM blob_keys WHERE num IN (SELECT num FROM pack_keys WHERE vault = $1)`,
			`DELETE FROM pack_keys WHERE vault = $1`,
			`DELETE FROM unindexed_packs WHERE vault = $1`,
			`DELETE FROM blobs WHERE vault = $1`,
			`DELETE FROM packs WHERE vault = $1`,
			`DELETE FROM snapshots WHERE vault = $1`,
			`DELETE FROM snapshot_chain WHERE vault = $1`,
			`DELETE FROM sessions WHERE vault = $1`,
		} {
			if _, err := tx.Exec(ctx, q, vaultID[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete vault %s: %w", vaultID, err)
	}
	return nil
}

// AddPack records a pack and its blobs in one transaction. Every blob's
// Pack must be p.ID. It fails with ErrExists if the pack is recorded
// already (or two blobs share an offset), with ErrNotFound if the vault is
// not. p.Condemned is recorded as given.
func (c *Catalog) AddPack(ctx context.Context, vaultID vault.ID, p vault.PackRecord, blobs []vault.BlobRecord) error {
	created, condemned, err := catalog.PackTimes(p, blobs)
	if err != nil {
		return err
	}
	vid, pid := vaultID[:], p.ID[:]
	var blobErr bool
	err = c.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO packs (vault, id, size, dek_version, blobs, created, condemned, header) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			vid, pid, p.Size, int64(p.DEKVersion), int64(p.Blobs), created, condemned, catalog.NullBytes(p.Header))
		if err != nil {
			return err
		}
		if len(blobs) > 0 {
			rows := make([][]any, len(blobs))
			for i := range blobs {
				b := &blobs[i]
				rows[i] = []any{vid, b.ID[:], int64(b.Type), pid, int64(b.Offset), int64(b.Length), int64(b.RawLen)}
			}
			_, err := tx.CopyFrom(ctx, pgx.Identifier{"blobs"}, []string{"vault", "id", "type", "pack", "offset", "length", "raw_length"}, pgx.CopyFromRows(rows))
			if err != nil {
				blobErr = true
				return err
			}
		}
		if p.Keys != nil {
			if err := insertKeys(ctx, tx, vaultID, p.ID, p.Keys); err != nil {
				return err
			}
		}
		if p.Keys != nil && p.Header != nil {
			return nil
		}
		// Opening the vault indexes it (UnindexedPacks).
		_, err = tx.Exec(ctx, `INSERT INTO unindexed_packs (vault, pack) VALUES ($1, $2)`, vid, pid)
		return err
	})
	switch {
	case err == nil:
		return nil
	case isMissingVault(err):
		return fmt.Errorf("add pack %s: vault %s: %w", p.ID, vaultID, vault.ErrNotFound)
	case isDuplicate(err) && blobErr:
		return fmt.Errorf("add pack %s: two blobs at one offset: %w", p.ID, vault.ErrExists)
	case isDuplicate(err):
		return fmt.Errorf("add pack %s: %w", p.ID, vault.ErrExists)
	}
	return fmt.Errorf("add pack %s: %w", p.ID, err)
}

// Packs calls fn for every pack of vault, ordered by ID, condemned ones
// included. An error from fn stops the iteration and is returned as is.
func (c *Catalog) Packs(ctx context.Context, vaultID vault.ID, fn func(vault.PackRecord) error) error {
	rows, err := c.pool.Query(ctx, `SELECT p.id, p.size, p.dek_version, p.blobs, p.created, p.condemned, p.header, k.num IS NOT NULL
		FROM packs p LEFT JOIN pack_keys k ON k.vault = p.vault AND k.pack = p.id WHERE p.vault = $1 ORDER BY p.id`, vaultID[:])
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	return scanPacks(rows, fn)
}

// scanPacks calls fn for each pack of rows (id, size, dek_version,
// blobs, created, condemned, header, keyed) and closes rows.
func scanPacks(rows pgx.Rows, fn func(vault.PackRecord) error) error {
	defer rows.Close()
	var (
		id                       []byte
		size, dek, nblob, create int64
		condemned                *int64
		header                   []byte
		keyed                    bool
	)
	for rows.Next() {
		header = nil
		if err := rows.Scan(&id, &size, &dek, &nblob, &create, &condemned, &header, &keyed); err != nil {
			return fmt.Errorf("list packs: %w", err)
		}
		p := vault.PackRecord{Size: size, DEKVersion: uint32(dek), Blobs: int(nblob), Created: catalog.FromUnixNano(create), Condemned: catalog.FromNullUnixNano(condemned), Keyed: keyed}
		if header != nil {
			p.Header = append([]byte(nil), header...)
		}
		if err := catalog.ScanID(&p.ID, id); err != nil {
			return fmt.Errorf("list packs: %w", err)
		}
		if err := fn(p); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	return nil
}

// Blobs calls fn for every blob of vault, ordered by pack and offset. An
// error from fn stops the iteration and is returned as is.
func (c *Catalog) Blobs(ctx context.Context, vaultID vault.ID, fn func(vault.BlobRecord) error) error {
	rows, err := c.pool.Query(ctx, `SELECT id, type, pack, "offset", length, raw_length FROM blobs WHERE vault = $1 ORDER BY pack, "offset"`, vaultID[:])
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	defer rows.Close()
	var (
		id, pack                 []byte
		typ, off, length, rawLen int64
	)
	for rows.Next() {
		if err := rows.Scan(&id, &typ, &pack, &off, &length, &rawLen); err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		b := vault.BlobRecord{Type: vault.BlobType(typ), Offset: uint32(off), Length: uint32(length), RawLen: uint32(rawLen)}
		if err := catalog.ScanID(&b.ID, id); err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		if err := catalog.ScanID(&b.Pack, pack); err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		if err := fn(b); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	return nil
}

// AddSnapshot records a snapshot; ErrExists if its ID is present in the
// vault, ErrNotFound if the vault is not.
func (c *Catalog) AddSnapshot(ctx context.Context, vaultID vault.ID, s vault.SnapshotRecord) error {
	err := c.write(ctx, func(tx pgx.Tx) error {
		return insertSnapshot(ctx, tx, vaultID, s)
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vault.ErrNotFound), errors.Is(err, vault.ErrExists):
		return err
	}
	return fmt.Errorf("add snapshot %s: %w", s.ID, err)
}

// insertSnapshot inserts s in tx; ErrExists if its ID is present in the
// vault, ErrNotFound if the vault is not. A refused insert aborts tx,
// which its caller then rolls back.
func insertSnapshot(ctx context.Context, tx pgx.Tx, vaultID vault.ID, s vault.SnapshotRecord) error {
	args, err := catalog.SnapshotArgs(vaultID, s)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO snapshots (`+catalog.SnapshotInsertColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`, args...)
	switch {
	case err == nil:
		return nil
	case isMissingVault(err):
		return fmt.Errorf("add snapshot %s: vault %s: %w", s.ID, vaultID, vault.ErrNotFound)
	case isDuplicate(err):
		return fmt.Errorf("add snapshot %s: %w", s.ID, vault.ErrExists)
	}
	return err
}

// Snapshots returns every snapshot of vault, soft-deleted ones included,
// oldest first (by time, then ID). Empty Paths and Tags are nil.
func (c *Catalog) Snapshots(ctx context.Context, vaultID vault.ID) ([]vault.SnapshotRecord, error) {
	return snapshotRows(ctx, c.pool, vaultID)
}

func snapshotRows(ctx context.Context, q querier, vaultID vault.ID) ([]vault.SnapshotRecord, error) {
	rows, err := q.Query(ctx, `SELECT `+catalog.SnapshotColumns+` FROM snapshots WHERE vault = $1 ORDER BY time, id`, vaultID[:])
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	defer rows.Close()
	ss, err := catalog.Collect(rows, catalog.ScanSnapshot)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	return ss, nil
}

// AddToken records a bearer token; ErrExists if its ID or hash is taken,
// ErrNotFound if t.Vault is not "" and names no vault.
func (c *Catalog) AddToken(ctx context.Context, t vault.TokenRecord) error {
	args, err := catalog.TokenArgs(t)
	if err != nil {
		return err
	}
	_, err = c.pool.Exec(ctx, `INSERT INTO tokens (`+catalog.TokenColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, args...)
	switch {
	case err == nil:
		return nil
	case isMissingVault(err):
		return fmt.Errorf("add token %s: vault %q or principal %q: %w", t.ID, t.Vault, t.Principal, vault.ErrNotFound)
	case isDuplicate(err):
		return fmt.Errorf("add token %s: ID or hash: %w", t.ID, vault.ErrExists)
	}
	return fmt.Errorf("add token %s: %w", t.ID, err)
}

const tokenColumns = catalog.TokenColumns

// TokenByHash returns the token whose hash is hash, revoked and expired
// ones included, or ErrNotFound. It always reads the database: there is
// no cache, so a revocation by any replica takes effect at once.
func (c *Catalog) TokenByHash(ctx context.Context, hash [32]byte) (vault.TokenRecord, error) {
	t, err := catalog.ScanToken(c.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = $1`, hash[:]))
	if errors.Is(err, pgx.ErrNoRows) {
		return vault.TokenRecord{}, fmt.Errorf("look up token: %w", vault.ErrNotFound)
	}
	if err != nil {
		return vault.TokenRecord{}, fmt.Errorf("look up token: %w", err)
	}
	return t, nil
}

// Token implements vault.Catalog.
func (c *Catalog) Token(ctx context.Context, id string) (vault.TokenRecord, error) {
	t, err := catalog.ScanToken(c.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return vault.TokenRecord{}, fmt.Errorf("token %s: %w", id, vault.ErrNotFound)
	}
	if err != nil {
		return vault.TokenRecord{}, fmt.Errorf("token %s: %w", id, err)
	}
	return t, nil
}

// Tokens returns every token, revoked and expired ones included, ordered
// by creation time, then ID.
func (c *Catalog) Tokens(ctx context.Context) ([]vault.TokenRecord, error) {
	rows, err := c.pool.Query(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	ts, err := catalog.Collect(rows, catalog.ScanToken)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// RevokeToken records that token id was revoked at at; ErrNotFound if
// there is no such token. Revoking it again keeps the first time.
func (c *Catalog) RevokeToken(ctx context.Context, id string, at time.Time) error {
	ns, err := catalog.UnixNano(at)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	n, err := c.update(ctx, `UPDATE tokens SET revoked = coalesce(revoked, $1) WHERE id = $2`, ns, id)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("revoke token %s: %w", id, vault.ErrNotFound)
	}
	return nil
}

// AddKeyEvent appends e to the key audit trail of its vault; ErrNotFound
// if the vault is not recorded.
func (c *Catalog) AddKeyEvent(ctx context.Context, e vault.KeyEvent) error {
	args, err := catalog.KeyEventArgs(e)
	if err != nil {
		return err
	}
	_, err = c.pool.Exec(ctx, `INSERT INTO key_events (`+catalog.KeyEventInsertColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`, args...)
	switch {
	case err == nil:
		return nil
	case isMissingVault(err):
		return fmt.Errorf("add key event %s: vault %s: %w", e.Event, e.Vault, vault.ErrNotFound)
	}
	return fmt.Errorf("add key event %s: %w", e.Event, err)
}

const keyEventColumns = catalog.KeyEventColumns

// KeyEvents returns the key audit trail of vault, oldest first (by time,
// then in the order the events were added).
func (c *Catalog) KeyEvents(ctx context.Context, vaultID vault.ID) ([]vault.KeyEvent, error) {
	rows, err := c.pool.Query(ctx, `SELECT `+keyEventColumns+` FROM key_events WHERE vault = $1 ORDER BY time, id`, vaultID[:])
	if err != nil {
		return nil, fmt.Errorf("list key events: %w", err)
	}
	defer rows.Close()
	es, err := catalog.Collect(rows, func(r catalog.Scanner) (vault.KeyEvent, error) { return catalog.ScanKeyEvent(r, vaultID) })
	if err != nil {
		return nil, fmt.Errorf("list key events: %w", err)
	}
	return es, nil
}

// LastKeyEvent returns the last event of KeyEvents(vault), or ErrNotFound
// if there is none.
func (c *Catalog) LastKeyEvent(ctx context.Context, vaultID vault.ID) (vault.KeyEvent, error) {
	row := c.pool.QueryRow(ctx, `SELECT `+keyEventColumns+` FROM key_events WHERE vault = $1 ORDER BY time DESC, id DESC LIMIT 1`, vaultID[:])
	e, err := catalog.ScanKeyEvent(row, vaultID)
	if errors.Is(err, pgx.ErrNoRows) {
		return vault.KeyEvent{}, fmt.Errorf("last key event of vault %s: %w", vaultID, vault.ErrNotFound)
	}
	if err != nil {
		return vault.KeyEvent{}, fmt.Errorf("last key event of vault %s: %w", vaultID, err)
	}
	return e, nil
}
