package engine

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // the "sqlite" driver of the scratch index

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// checkIndex is what Check needs to know of the whole vault while it
// walks the snapshots, kept in a scratch SQLite database in a temporary
// directory instead of the Go heap, so that check's memory does not grow
// with the vault (docs/performance.md, "Memory"): the packs in the store
// and their sizes, every blob of every catalogued pack as its sealed
// header lists it, and the trees walked already. It is exact: every
// answer is a B-tree lookup, no filter guesses. Its page cache is
// bounded (checkIndexCacheKiB); the file grows with the vault (about 150
// bytes a blob) and is removed when the check ends.
type checkIndex struct {
	*scratchDB
}

// scratchDB is a scratch SQLite database in a temporary directory of its
// own, written in batched transactions through one connection: check's
// and prune's on-disk indexes.
type scratchDB struct {
	mu      sync.Mutex
	dir     string
	db      *sql.DB
	tx      *sql.Tx
	pending int // writes in tx
	stmts   map[string]*sql.Stmt
	txStmts map[string]*sql.Stmt // stmts, in tx
}

// checkIndexCacheKiB is SQLite's page cache of the scratch index.
const checkIndexCacheKiB = 8 << 10

// checkIndexBatch is how many writes go into one transaction.
const checkIndexBatch = 20_000

const (
	ciStored = `INSERT OR REPLACE INTO stored (id, size, cat) VALUES (?, ?, 0)`
	ciSize   = `SELECT size FROM stored WHERE id = ?`
	ciCat    = `UPDATE stored SET cat = 1 WHERE id = ?`
	ciBlob   = `INSERT INTO blobs (k, pack, off, len, rawlen, live) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (k) DO UPDATE SET pack = excluded.pack, off = excluded.off, len = excluded.len, rawlen = excluded.rawlen, live = excluded.live
		WHERE excluded.live >= blobs.live`
	ciLookup = `SELECT b.pack, b.off, b.len, b.rawlen, s.id IS NOT NULL FROM blobs b LEFT JOIN stored s ON s.id = b.pack WHERE b.k = ?`
	ciTree   = `INSERT OR IGNORE INTO trees (id) VALUES (?)`
	ciKeys   = `INSERT OR REPLACE INTO keys (id, keys) VALUES (?, ?)`
	ciGetKey = `SELECT keys FROM keys WHERE id = ?`
	ciPackID = `INSERT INTO cpacks (id) VALUES (?)`
)

func newCheckIndex(ctx context.Context) (*checkIndex, error) {
	db, err := newScratchDB(ctx, checkDirPrefix, []string{
		`CREATE TABLE stored (id BLOB PRIMARY KEY, size INTEGER NOT NULL, cat INTEGER NOT NULL) WITHOUT ROWID`,
		`CREATE TABLE blobs (k BLOB PRIMARY KEY, pack BLOB NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL, rawlen INTEGER NOT NULL, live INTEGER NOT NULL) WITHOUT ROWID`,
		`CREATE TABLE trees (id BLOB PRIMARY KEY) WITHOUT ROWID`,
		`CREATE TABLE keys (id BLOB PRIMARY KEY, keys BLOB NOT NULL) WITHOUT ROWID`,
		`CREATE TABLE cpacks (seq INTEGER PRIMARY KEY, id BLOB NOT NULL)`,
	}, []string{ciStored, ciSize, ciCat, ciBlob, ciLookup, ciTree, ciKeys, ciGetKey, ciPackID})
	if err != nil {
		return nil, err
	}
	return &checkIndex{db}, nil
}

// newScratchDB creates a scratch database in a new directory named with
// prefix and this process's ID (so that a later check or prune removes it
// if this process dies first), with the tables of schema and the statements
// queries prepared.
func newScratchDB(ctx context.Context, prefix string, schema, queries []string) (_ *scratchDB, err error) {
	removeStaleScratchDirs(checkDirPrefix)
	removeStaleScratchDirs(pruneDirPrefix)
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", prefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("scratch index: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	db, err := sql.Open("sqlite", filepath.Join(dir, "index.db"))
	if err != nil {
		return nil, fmt.Errorf("scratch index: %w", err)
	}
	db.SetMaxOpenConns(1)
	c := &scratchDB{dir: dir, db: db, stmts: map[string]*sql.Stmt{}}
	pragmas := []string{
		`PRAGMA journal_mode = OFF`,
		`PRAGMA synchronous = OFF`,
		`PRAGMA temp_store = FILE`,
		fmt.Sprintf(`PRAGMA cache_size = -%d`, checkIndexCacheKiB),
	}
	for _, q := range append(pragmas, schema...) {
		if _, err := db.ExecContext(ctx, q); err != nil {
			db.Close()
			return nil, fmt.Errorf("scratch index: %w", err)
		}
	}
	for _, q := range queries {
		s, err := db.PrepareContext(ctx, q)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("scratch index: %w", err)
		}
		c.stmts[q] = s
	}
	return c, nil
}

// Close drops the scratch index.
func (c *scratchDB) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tx != nil {
		c.tx.Rollback()
		c.tx, c.txStmts = nil, nil
	}
	err := c.db.Close()
	if rerr := os.RemoveAll(c.dir); err == nil {
		err = rerr
	}
	return err
}

// stmt returns statement q in the current transaction, beginning one if
// needed; c.mu is held.
func (c *scratchDB) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if c.tx == nil {
		// Not ended by ctx: a cancelled check is reported as such by
		// the statement that sees it, not as a transaction gone.
		tx, err := c.db.BeginTx(context.WithoutCancel(ctx), nil)
		if err != nil {
			return nil, fmt.Errorf("scratch index: %w", err)
		}
		c.tx = tx
		c.txStmts = map[string]*sql.Stmt{}
	}
	s := c.txStmts[q]
	if s == nil {
		s = c.tx.StmtContext(ctx, c.stmts[q])
		c.txStmts[q] = s
	}
	return s, nil
}

// wrote counts n writes, committing once a batch is full; c.mu is held.
func (c *scratchDB) wrote(n int) error {
	c.pending += n
	if c.pending < checkIndexBatch {
		return nil
	}
	return c.commit()
}

func (c *scratchDB) commit() error {
	c.pending = 0
	if c.tx == nil {
		return nil
	}
	err := c.tx.Commit()
	c.tx, c.txStmts = nil, nil
	if err != nil {
		return fmt.Errorf("scratch index: %w", err)
	}
	return nil
}

func (c *scratchDB) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	s, err := c.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	r, err := s.ExecContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("scratch index: %w", err)
	}
	return r, nil
}

// addStored records that the store holds pack id of size bytes.
func (c *checkIndex) addStored(ctx context.Context, id vault.ID, size int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.exec(ctx, ciStored, id[:], size); err != nil {
		return err
	}
	return c.wrote(1)
}

// catalogued returns the store's size of pack id, whether the store
// holds it, and marks it catalogued.
func (c *checkIndex) catalogued(ctx context.Context, id vault.ID) (int64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.stmt(ctx, ciSize)
	if err != nil {
		return 0, false, err
	}
	var size int64
	switch err := s.QueryRowContext(ctx, id[:]).Scan(&size); {
	case err == sql.ErrNoRows:
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("scratch index: %w", err)
	}
	if _, err := c.exec(ctx, ciCat, id[:]); err != nil {
		return 0, false, err
	}
	return size, true, c.wrote(1)
}

// uncatalogued calls fn for every pack of the store not marked
// catalogued.
func (c *checkIndex) uncatalogued(ctx context.Context, fn func(vault.ID)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.commit(); err != nil {
		return err
	}
	rows, err := c.db.QueryContext(ctx, `SELECT id FROM stored WHERE cat = 0 ORDER BY id`)
	if err != nil {
		return fmt.Errorf("scratch index: %w", err)
	}
	defer rows.Close()
	var ids []vault.ID // fn may not query while rows are open (one connection)
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return fmt.Errorf("scratch index: %w", err)
		}
		var id vault.ID
		copy(id[:], b)
		ids = append(ids, id)
		if len(ids) == 10_000 {
			for _, id := range ids {
				fn(id)
			}
			ids = ids[:0]
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scratch index: %w", err)
	}
	for _, id := range ids {
		fn(id)
	}
	return nil
}

func ciKey(t vault.BlobType, id vault.ID) []byte {
	k := make([]byte, 0, len(id)+1)
	return append(append(k, id[:]...), byte(t))
}

// addBlobs records the blobs of a catalogued pack. A blob in several
// packs is found in a live one rather than a condemned one, as the
// loaded index did.
func (c *checkIndex) addBlobs(ctx context.Context, recs []vault.BlobRecord, live bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := 0
	if live {
		l = 1
	}
	for _, b := range recs {
		if _, err := c.exec(ctx, ciBlob, ciKey(b.Type, b.ID), b.Pack[:], b.Offset, b.Length, b.RawLen, l); err != nil {
			return err
		}
	}
	return c.wrote(len(recs))
}

// lookup finds blob t/id, and reports whether its pack is in the store.
func (c *checkIndex) lookup(ctx context.Context, t vault.BlobType, id vault.ID) (r vault.BlobRecord, stored, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.stmt(ctx, ciLookup)
	if err != nil {
		return r, false, false, err
	}
	var pack []byte
	switch err := s.QueryRowContext(ctx, ciKey(t, id)).Scan(&pack, &r.Offset, &r.Length, &r.RawLen, &stored); {
	case err == sql.ErrNoRows:
		return r, false, false, nil
	case err != nil:
		return r, false, false, fmt.Errorf("scratch index: %w", err)
	}
	r.ID, r.Type = id, t
	copy(r.Pack[:], pack)
	return r, stored, true, nil
}

// visit records tree id as walked and reports whether it was not yet.
func (c *checkIndex) visit(ctx context.Context, id vault.ID) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res, err := c.exec(ctx, ciTree, id[:])
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("scratch index: %w", err)
	}
	return n == 1, c.wrote(int(n))
}

// addKeys records the catalog's lookup keys of pack id.
func (c *checkIndex) addKeys(ctx context.Context, id vault.ID, keys []uint64) error {
	b := make([]byte, 8*len(keys))
	for i, k := range keys {
		binary.LittleEndian.PutUint64(b[8*i:], k)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.exec(ctx, ciKeys, id[:], b); err != nil {
		return err
	}
	return c.wrote(1)
}

// packKeys returns the catalog's lookup keys of pack id (nil for none).
func (c *checkIndex) packKeys(ctx context.Context, id vault.ID) ([]uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.stmt(ctx, ciGetKey)
	if err != nil {
		return nil, err
	}
	var b []byte
	switch err := s.QueryRowContext(ctx, id[:]).Scan(&b); {
	case err == sql.ErrNoRows:
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("scratch index: %w", err)
	}
	keys := make([]uint64, len(b)/8)
	for i := range keys {
		keys[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return keys, nil
}

// trees counts the trees walked.
func (c *checkIndex) trees(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.commit(); err != nil {
		return 0, err
	}
	var n int
	if err := c.db.QueryRowContext(ctx, `SELECT count(*) FROM trees`).Scan(&n); err != nil {
		return 0, fmt.Errorf("scratch index: %w", err)
	}
	return n, nil
}

// checkReader reads the trees of one dedup domain for Check: it finds
// them in the scratch index (what the packs' sealed headers list), not
// through the catalog's lookup keys, which check verifies separately.
type checkReader struct {
	v    *Vault
	idx  *checkIndex
	idOf func([]byte) vault.ID
}

func (r *checkReader) LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	rec, _, ok, err := r.idx.lookup(ctx, t, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s blob %s: %w in the index", t, id, vault.ErrNotFound)
	}
	return r.v.loadBlobAt(ctx, rec, dst, r.idOf)
}

func (r *checkReader) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	return loadTree(ctx, r, id)
}

// checkTrees returns the reader of domain d's trees for Check.
func (v *Vault) checkTrees(d string, idx *checkIndex) (domainReader, error) {
	if d == "" {
		return &checkReader{v: v, idx: idx, idOf: v.id}, nil
	}
	w, err := v.InDomain(d)
	if err != nil {
		return nil, err
	}
	return &checkReader{v: v, idx: idx, idOf: w.id}, nil
}

// addPackID records a catalogued pack's ID, for eachPackID.
func (c *checkIndex) addPackID(ctx context.Context, id vault.ID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.exec(ctx, ciPackID, id[:]); err != nil {
		return err
	}
	return c.wrote(1)
}

// eachPackID calls fn for every ID addPackID recorded, in that order, a
// page at a time: fn may use the scratch index, and no query of it stays
// open while fn runs.
func (c *checkIndex) eachPackID(ctx context.Context, fn func(vault.ID) error) error {
	const page = 1_000
	ids := make([]vault.ID, 0, page)
	var last int64
	for {
		ids = ids[:0]
		c.mu.Lock()
		err := func() error {
			// One connection: the workers' open transaction is ended
			// first, as in uncatalogued.
			if err := c.commit(); err != nil {
				return err
			}
			rows, err := c.db.QueryContext(ctx, `SELECT seq, id FROM cpacks WHERE seq > ? ORDER BY seq LIMIT ?`, last, page)
			if err != nil {
				return fmt.Errorf("scratch index: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				var b []byte
				if err := rows.Scan(&last, &b); err != nil {
					return fmt.Errorf("scratch index: %w", err)
				}
				var id vault.ID
				if len(b) != len(id) {
					return fmt.Errorf("scratch index: pack ID of %d bytes", len(b))
				}
				copy(id[:], b)
				ids = append(ids, id)
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("scratch index: %w", err)
			}
			return nil
		}()
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		for _, id := range ids {
			if err := fn(id); err != nil {
				return err
			}
		}
	}
}

// checkDirPrefix begins the name of a scratch index's directory, followed
// by the checking process's ID.
const checkDirPrefix = "coffer-check-"

// removeStaleScratchDirs removes the scratch directories named with
// prefix (a check's or a prune's) whose process is gone (killed before it
// could remove its own). A directory whose process still runs, or whose
// name carries no process ID, is left alone.
func removeStaleScratchDirs(prefix string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), prefix)
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if processGone(pid) {
			os.RemoveAll(d)
		}
	}
}
