// Package sqlite implements vault.Catalog on a single SQLite file, using the
// pure-Go driver modernc.org/sqlite (no cgo).
//
// The file is opened in WAL mode with a busy timeout, and every write
// transaction starts with BEGIN IMMEDIATE, so several processes (two
// backups at once) can write to the same catalog: writers queue for the
// write lock instead of failing with SQLITE_BUSY, and readers never block.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

var _ vault.Catalog = (*Catalog)(nil)

// BusyTimeout is how long a write waits for another process's write
// transaction to finish before it fails with SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// dsnParams are the connection parameters of every connection. The
// _pragma values run, busy_timeout first, each time the pool opens a
// connection; _txlock makes database/sql's BeginTx issue BEGIN IMMEDIATE,
// which takes the write lock at the start of the transaction (waiting
// under busy_timeout) instead of upgrading a read lock later, which fails
// at once with SQLITE_BUSY when another connection wrote in between.
var dsnParams = url.Values{
	"_pragma": {
		fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()),
		"journal_mode(WAL)",
		"synchronous(NORMAL)",
		"foreign_keys(1)",
	},
	"_txlock": {"immediate"},
}

// Catalog is a vault.Catalog stored in a SQLite file. It is safe for
// concurrent use, also by other processes opening the same file.
type Catalog struct {
	db   *sql.DB
	path string // the file's absolute path (joblock.go)

	// writeLock serializes this process's write transactions, so that
	// they queue here (honouring their contexts) rather than in SQLite's
	// busy handler, which polls. Other processes are held off by SQLite's
	// own lock.
	writeLock chan struct{}

	insertPack  *sql.Stmt
	insertBlob  *sql.Stmt
	tokenByHash *sql.Stmt // every server request looks its token up

	// stmts holds the prepared statements of the other reads a server
	// request makes (a token's issuer, a principal and its roles, a vault
	// by name): SQL text → *sql.Stmt. In modernc's SQLite, preparing a
	// query costs more than running it, and database/sql prepares a query
	// given as text anew on every call. Only fixed texts go in, so the
	// map holds one entry per call site.
	stmts sync.Map

	closeOnce sync.Once
	closeErr  error
}

// Open opens the catalog in the SQLite file at path, creating the file
// (mode 0600) and its schema if needed. It fails with ErrNewerSchema if
// the file was written by a newer version of Coffer.
func Open(path string) (*Catalog, error) {
	c, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	return c, nil
}

func open(path string) (*Catalog, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	// SQLite would create the file with mode 0644 (less umask); create it
	// first so that it is private. SQLite gives the -wal and -shm files
	// the mode of the database file.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}

	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, err
	}
	// Writes are serialized (writeLock), so more connections only serve
	// concurrent reads; keep a few around rather than reopening them.
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(time.Minute)

	c := &Catalog{db: db, path: abs, writeLock: make(chan struct{}, 1)}
	if err := c.init(); err != nil {
		db.Close()
		return nil, err
	}
	return c, nil
}

// dsn returns the data source name of the file at the absolute path abs: a
// file: URI, so that any byte of the path survives (escaped), and the
// parameters in dsnParams.
func dsn(abs string) string {
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows: C:/x becomes /C:/x
	}
	u := url.URL{Scheme: "file", OmitHost: true, Path: p, RawQuery: dsnParams.Encode()}
	return u.String()
}

func (c *Catalog) init() error {
	ctx := context.Background()
	if err := c.connect(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if err := c.migrate(ctx); err != nil {
		return err
	}
	var err error
	c.insertPack, err = c.db.PrepareContext(ctx, `INSERT INTO packs (vault, id, size, dek_version, blobs, created, condemned, header) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	c.insertBlob, err = c.db.PrepareContext(ctx, `INSERT INTO blobs (vault, id, type, pack, "offset", length, raw_length) VALUES (?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	c.tokenByHash, err = c.db.PrepareContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = ?`)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	return nil
}

// Close closes the database. Calling it again returns the first result.
func (c *Catalog) Close() error {
	c.closeOnce.Do(func() {
		for _, s := range []*sql.Stmt{c.insertPack, c.insertBlob, c.tokenByHash} {
			if s != nil {
				s.Close()
			}
		}
		c.stmts.Range(func(_, s any) bool {
			s.(*sql.Stmt).Close()
			return true
		})
		c.closeErr = c.db.Close()
	})
	return c.closeErr
}

// prepared returns the prepared statement of the fixed query text q,
// preparing it on first use; nil when it cannot be prepared (the caller
// then runs q unprepared, which reports the error).
func (c *Catalog) prepared(ctx context.Context, q string) *sql.Stmt {
	if s, ok := c.stmts.Load(q); ok {
		return s.(*sql.Stmt)
	}
	s, err := c.db.PrepareContext(ctx, q)
	if err != nil {
		return nil
	}
	if old, loaded := c.stmts.LoadOrStore(q, s); loaded {
		s.Close()
		return old.(*sql.Stmt)
	}
	return s
}

// queryRow is db.QueryRowContext through a prepared statement.
func (c *Catalog) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if s := c.prepared(ctx, q); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return c.db.QueryRowContext(ctx, q, args...)
}

// query is db.QueryContext through a prepared statement.
func (c *Catalog) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if s := c.prepared(ctx, q); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return c.db.QueryContext(ctx, q, args...)
}

// connect opens the first connection. Its journal_mode(WAL) pragma fails
// at once with SQLITE_BUSY, without waiting in the busy handler, when
// another process is switching the same new file to WAL at that moment
// (SQLite's deadlock avoidance), so connect retries for up to
// BusyTimeout. Once the file is in WAL mode, which persists, the pragma is
// a no-op and later connections do not meet this.
func (c *Catalog) connect(ctx context.Context) error {
	deadline := time.Now().Add(BusyTimeout)
	for {
		err := c.db.PingContext(ctx)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond)
	}
}

// write runs fn in a write transaction (BEGIN IMMEDIATE) and commits it
// if fn returns nil.
func (c *Catalog) write(ctx context.Context, fn func(*sql.Tx) error) error {
	select {
	case c.writeLock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.writeLock }()

	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// constraint returns the extended SQLite result code of a constraint
// violation, 0 if err is none.
func constraint(err error) int {
	var se *msqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT {
		return se.Code()
	}
	return 0
}

// isBusy reports whether err is SQLITE_BUSY.
func isBusy(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// isDuplicate reports whether err is a primary key or unique violation.
func isDuplicate(err error) bool {
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return true
	}
	return false
}

// isMissingVault reports whether err is a foreign key violation; the only
// foreign keys an insert can miss name the vault.
func isMissingVault(err error) bool {
	return constraint(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// CreateVault records a new vault; ErrExists if its name or ID is taken.
func (c *Catalog) CreateVault(ctx context.Context, v vault.VaultRecord) error {
	created, err := catalog.UnixNano(v.Created)
	if err != nil {
		return fmt.Errorf("create vault %q: %w", v.Name, err)
	}
	err = c.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO vaults (id, name, created) VALUES (?, ?, ?)`, v.ID[:], v.Name, created)
		return err
	})
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
	err := c.queryRow(ctx, `SELECT id, created FROM vaults WHERE name = ? AND deleted IS NULL`, name).Scan(&id, &created)
	if errors.Is(err, sql.ErrNoRows) {
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
	var failed *vault.BlobRecord
	err = c.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, c.insertPack).ExecContext(ctx, vid, pid, p.Size, int64(p.DEKVersion), int64(p.Blobs), created, condemned, catalog.NullBytes(p.Header))
		if err != nil {
			return err
		}
		ins := tx.StmtContext(ctx, c.insertBlob)
		for i := range blobs {
			b := &blobs[i]
			_, err := ins.ExecContext(ctx, vid, b.ID[:], int64(b.Type), pid, int64(b.Offset), int64(b.Length), int64(b.RawLen))
			if err != nil {
				failed = b
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
		_, err = tx.ExecContext(ctx, `INSERT INTO unindexed_packs (vault, pack) VALUES (?, ?)`, vid, pid)
		return err
	})
	switch {
	case err == nil:
		return nil
	case isMissingVault(err):
		return fmt.Errorf("add pack %s: vault %s: %w", p.ID, vaultID, vault.ErrNotFound)
	case isDuplicate(err) && failed != nil:
		return fmt.Errorf("add pack %s: blob %s at offset %d: %w", p.ID, failed.ID, failed.Offset, vault.ErrExists)
	case isDuplicate(err):
		return fmt.Errorf("add pack %s: %w", p.ID, vault.ErrExists)
	case failed != nil:
		return fmt.Errorf("add pack %s: blob %s: %w", p.ID, failed.ID, err)
	}
	return fmt.Errorf("add pack %s: %w", p.ID, err)
}

// Packs calls fn for every pack of vault, ordered by ID, condemned ones
// included. An error from fn stops the iteration and is returned as is.
func (c *Catalog) Packs(ctx context.Context, vaultID vault.ID, fn func(vault.PackRecord) error) error {
	rows, err := c.db.QueryContext(ctx, `SELECT p.id, p.size, p.dek_version, p.blobs, p.created, p.condemned, p.header, k.num IS NOT NULL
		FROM packs p LEFT JOIN pack_keys k ON k.vault = p.vault AND k.pack = p.id WHERE p.vault = ? ORDER BY p.id`, vaultID[:])
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	return scanPacks(rows, fn)
}

// scanPacks calls fn for each pack of rows (id, size, dek_version,
// blobs, created, condemned, header, keyed) and closes rows.
func scanPacks(rows *sql.Rows, fn func(vault.PackRecord) error) error {
	defer rows.Close()
	var (
		id                       sql.RawBytes
		size, dek, nblob, create int64
		condemned                *int64
		header                   []byte
		keyed                    bool
	)
	for rows.Next() {
		if err := rows.Scan(&id, &size, &dek, &nblob, &create, &condemned, &header, &keyed); err != nil {
			return fmt.Errorf("list packs: %w", err)
		}
		p := vault.PackRecord{Size: size, DEKVersion: uint32(dek), Blobs: int(nblob), Created: catalog.FromUnixNano(create), Condemned: catalog.FromNullUnixNano(condemned), Header: header, Keyed: keyed}
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
	rows, err := c.db.QueryContext(ctx, `SELECT id, type, pack, "offset", length, raw_length FROM blobs WHERE vault = ? ORDER BY pack, "offset"`, vaultID[:])
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	defer rows.Close()
	var (
		id, pack                 sql.RawBytes
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
// vault, ErrNotFound if the vault is not. s.Deleted and s.DeletedBy are
// recorded as given (DeletedBy only with Deleted).
func (c *Catalog) AddSnapshot(ctx context.Context, vaultID vault.ID, s vault.SnapshotRecord) error {
	err := c.write(ctx, func(tx *sql.Tx) error {
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
// vault, ErrNotFound if the vault is not.
func insertSnapshot(ctx context.Context, tx *sql.Tx, vaultID vault.ID, s vault.SnapshotRecord) error {
	args, err := catalog.SnapshotArgs(vaultID, s)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO snapshots (`+catalog.SnapshotInsertColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
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
	return snapshotRows(ctx, c.db, vaultID)
}

func snapshotRows(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, vaultID vault.ID) ([]vault.SnapshotRecord, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+catalog.SnapshotColumns+` FROM snapshots WHERE vault = ? ORDER BY time, id`, vaultID[:])
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
	err = c.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens (`+catalog.TokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
		return err
	})
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
// ones included, or ErrNotFound. It always reads the file: there is no
// cache, so a revocation by any process takes effect at once.
func (c *Catalog) TokenByHash(ctx context.Context, hash [32]byte) (vault.TokenRecord, error) {
	t, err := catalog.ScanToken(c.tokenByHash.QueryRowContext(ctx, hash[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return vault.TokenRecord{}, fmt.Errorf("look up token: %w", vault.ErrNotFound)
	}
	if err != nil {
		return vault.TokenRecord{}, fmt.Errorf("look up token: %w", err)
	}
	return t, nil
}

// Token implements vault.Catalog.
func (c *Catalog) Token(ctx context.Context, id string) (vault.TokenRecord, error) {
	t, err := catalog.ScanToken(c.queryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
	rows, err := c.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY created, id`)
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
	var n int64
	err = c.write(ctx, func(tx *sql.Tx) error {
		// coalesce keeps the first revocation time; the row still counts
		// as changed, so n tells whether the token exists.
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked = coalesce(revoked, ?) WHERE id = ?`, ns, id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
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
	err = c.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO key_events (`+catalog.KeyEventInsertColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`, args...)
		return err
	})
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
	rows, err := c.db.QueryContext(ctx, `SELECT `+keyEventColumns+` FROM key_events WHERE vault = ? ORDER BY time, id`, vaultID[:])
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
	row := c.db.QueryRowContext(ctx, `SELECT `+keyEventColumns+` FROM key_events WHERE vault = ? ORDER BY time DESC, id DESC LIMIT 1`, vaultID[:])
	e, err := catalog.ScanKeyEvent(row, vaultID)
	if errors.Is(err, sql.ErrNoRows) {
		return vault.KeyEvent{}, fmt.Errorf("last key event of vault %s: %w", vaultID, vault.ErrNotFound)
	}
	if err != nil {
		return vault.KeyEvent{}, fmt.Errorf("last key event of vault %s: %w", vaultID, err)
	}
	return e, nil
}

// DeleteVault implements vault.Catalog.
func (c *Catalog) DeleteVault(ctx context.Context, vaultID vault.ID, at time.Time) error {
	ns, err := catalog.UnixNano(at)
	if err != nil {
		return fmt.Errorf("delete vault %s: %w", vaultID, err)
	}
	err = c.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vaults SET deleted = ? WHERE id = ? AND deleted IS NULL`, ns, vaultID[:])
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return vault.ErrNotFound
		}
		for _, q := range []string{
			`DELETE FROM blob_keys WHERE num IN (SELECT num FROM pack_keys WHERE vault = ?)`,
			`DELETE FROM pack_keys WHERE vault = ?`,
			`DELETE FROM unindexed_packs WHERE vault = ?`,
			`DELETE FROM blobs WHERE vault = ?`,
			`DELETE FROM packs WHERE vault = ?`,
			`DELETE FROM snapshots WHERE vault = ?`,
			`DELETE FROM snapshot_chain WHERE vault = ?`,
			`DELETE FROM sessions WHERE vault = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, vaultID[:]); err != nil {
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
