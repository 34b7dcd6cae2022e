package engine

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// pruneIndex is what Prune must know of the whole vault, kept in a
// scratch SQLite database (scratchDB) instead of the Go heap, so that
// prune's memory does not grow with the vault (docs/performance.md,
// "Memory"): every catalogued pack with a sealed header copy (its
// creation order, size and condemnation time), every blob each of those
// headers lists, and the set of blobs the snapshots use, each with the
// pack it is homed in. Prune decides one pack at a time from it, paging
// through the packs; nothing it holds in memory is larger than one pack's
// blob list. The file grows with the vault (about 150 bytes a blob) and
// is removed when prune ends (a prune killed first leaves it to the next
// prune or check, which removes it).
type pruneIndex struct {
	*scratchDB
	lastPack, lastBlob int64 // the last seq of packs and rowid of pblobs
	args               []any
	blobRows, useRows  string // piBlob and piUse of pruneRows rows
}

// pruneDirPrefix begins the name of a prune's scratch directory,
// followed by the process ID.
const pruneDirPrefix = "coffer-prune-"

// pruneState bits, for packs: what this run decided for them.
const (
	pruneRepack       = 1 << iota // its needed blobs are to be copied, then it is condemned
	pruneCondemnedNow             // condemned by this run
	pruneDeletable                // condemned, and no live writer may still reference it
)

// prunePageSize is how many packs a page of pruneIndex.eachPack holds.
const prunePageSize = 1_000

// pruneRows is how many rows one multi-row insert writes.
const pruneRows = 100

const (
	piPack = `INSERT INTO packs (seq, id, created, size, condemned, lo, hi, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	piBlob = `INSERT INTO pblobs (rowid, k, pack, off, len, rawlen) VALUES (?, ?, ?, ?, ?, ?)`
	piHas  = `SELECT count(*) FROM packs WHERE id = ?`
	piUse  = `INSERT INTO uses (k) VALUES (?)`
	piTree = `INSERT OR IGNORE INTO trees (k) VALUES (?)`
	piUsed = `SELECT count(*) FROM trees WHERE k = ?`
	// A tree is read from a pack in use rather than a condemned one.
	piLookup = `SELECT p.id, b.off, b.len, b.rawlen FROM pblobs b JOIN packs p ON p.seq = b.pack
		WHERE b.k = ? ORDER BY p.condemned != 0, p.seq LIMIT 1`
	piAccount = `SELECT p.bytes, coalesce((SELECT n.bytes FROM needs n WHERE n.rank = p.rank), 0) FROM packs p WHERE p.seq = ?`
	piCondemn = `UPDATE packs SET condemned = ?, state = state | ? WHERE seq = ?`
	piState   = `UPDATE packs SET state = state | ? WHERE seq = ?`
	piRemove  = `DELETE FROM packs WHERE seq = ?`
	// A condemned pack is needed if it holds a used blob that no pack in
	// use (with a dry run, none condemned only by this run either) holds.
	piNeeded = `SELECT EXISTS (SELECT 1 FROM pblobs b JOIN used u ON u.k = b.k
		WHERE b.rowid BETWEEN ? AND ? AND NOT EXISTS (SELECT 1 FROM pblobs o JOIN packs op ON op.seq = o.pack
			WHERE o.k = b.k AND o.pack != ? AND (op.condemned = 0 OR op.state & ? != 0)))`
	piSince = `SELECT EXISTS (SELECT 1 FROM packs WHERE condemned != 0 AND condemned >= ?)`
)

// rowsOf is the statement q (an INSERT of one row of VALUES) inserting n
// rows at once.
func rowsOf(q string, n int) string {
	i := strings.Index(q, "VALUES ")
	row := q[i+len("VALUES "):]
	return q[:i] + "VALUES " + strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
}

func newPruneIndex(ctx context.Context) (*pruneIndex, error) {
	blobRows, useRows := rowsOf(piBlob, pruneRows), rowsOf(piUse, pruneRows)
	db, err := newScratchDB(ctx, pruneDirPrefix, []string{
		// condemned: Unix nanoseconds, 0 for a pack in use; lo, hi: the
		// rowids of its first and last blob in pblobs (a pack's blobs are
		// written together); bytes: the sum of their lengths; rank: its
		// place in creation order (set by rank); state: pruneState.
		`CREATE TABLE packs (seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, created INTEGER NOT NULL, size INTEGER NOT NULL, condemned INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, bytes INTEGER NOT NULL, rank INTEGER, state INTEGER NOT NULL DEFAULT 0)`,
		// Appended to in rowid order; indexed by key once written
		// (indexBlobs), which sorts once instead of inserting at random.
		`CREATE TABLE pblobs (k BLOB NOT NULL, pack INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL, rawlen INTEGER NOT NULL)`,
		// The trees mark walked.
		`CREATE TABLE trees (k BLOB PRIMARY KEY) WITHOUT ROWID`,
		// The blobs mark found used, appended, until settle moves them
		// into used.
		`CREATE TABLE uses (k BLOB NOT NULL)`,
		// home: the rank of the pack a used blob is homed in times 2^32
		// plus the blob's length there; NULL if no pack in use holds it.
		`CREATE TABLE used (k BLOB PRIMARY KEY, home INTEGER) WITHOUT ROWID`,
		// The bytes of used blobs homed in each pack, by its rank (tally).
		`CREATE TABLE needs (rank INTEGER PRIMARY KEY, bytes INTEGER NOT NULL)`,
	}, []string{piPack, piBlob, blobRows, piHas, piUse, useRows, piTree, piUsed, piLookup, piAccount, piCondemn, piState, piRemove, piNeeded, piSince})
	if err != nil {
		return nil, err
	}
	return &pruneIndex{scratchDB: db, blobRows: blobRows, useRows: useRows}, nil
}

// nanos is t in Unix nanoseconds, 0 for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// prunePack is a pack as the prune index holds it.
type prunePack struct {
	seq, rank int64
	lo, hi    int64 // its blobs' rowids in pblobs
	id        vault.ID
	size      int64
	condemned time.Time
	state     int
}

// addPack records pack p and the blobs its sealed header lists.
func (x *pruneIndex) addPack(ctx context.Context, p vault.PackRecord, recs []vault.BlobRecord) error {
	ctx = context.WithoutCancel(ctx) // a statement watching ctx costs a goroutine
	x.mu.Lock()
	defer x.mu.Unlock()
	x.lastPack++
	seq, lo := x.lastPack, x.lastBlob+1
	var bytes int64
	err := x.insertRows(ctx, len(recs), piBlob, x.blobRows, func(i int) {
		b := recs[i]
		x.lastBlob++
		bytes += int64(b.Length)
		x.args = append(x.args, x.lastBlob, ciKey(b.Type, b.ID), seq, b.Offset, b.Length, b.RawLen)
	})
	if err != nil {
		return err
	}
	if _, err := x.exec(ctx, piPack, seq, p.ID[:], nanos(p.Created), p.Size, nanos(p.Condemned), lo, x.lastBlob, bytes); err != nil {
		return err
	}
	return x.wrote(1)
}

// indexBlobs indexes the blobs by key, once the packs are recorded.
func (x *pruneIndex) indexBlobs(ctx context.Context) error {
	return x.run(ctx, `CREATE INDEX pblobs_k ON pblobs (k)`)
}

// run runs statements outside a batch.
func (x *pruneIndex) run(ctx context.Context, qs ...string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, q := range qs {
		if err := x.commit(); err != nil {
			return err
		}
		if _, err := x.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("scratch index: %w", err)
		}
	}
	return nil
}

// hasPack reports whether pack id is recorded.
func (x *pruneIndex) hasPack(ctx context.Context, id vault.ID) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.count(ctx, piHas, id[:])
}

// count runs a query of one count (or truth value); x.mu is held.
func (x *pruneIndex) count(ctx context.Context, q string, args ...any) (bool, error) {
	s, err := x.stmt(ctx, q)
	if err != nil {
		return false, err
	}
	var n int64
	if err := s.QueryRowContext(ctx, args...).Scan(&n); err != nil {
		return false, fmt.Errorf("scratch index: %w", err)
	}
	return n > 0, nil
}

// visit records tree id as used and reports whether it was not yet.
func (x *pruneIndex) visit(ctx context.Context, id vault.ID) (bool, error) {
	ctx = context.WithoutCancel(ctx)
	x.mu.Lock()
	defer x.mu.Unlock()
	k := ciKey(vault.TreeBlob, id)
	res, err := x.exec(ctx, piTree, k)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("scratch index: %w", err)
	}
	if n == 1 {
		if _, err := x.exec(ctx, piUse, k); err != nil {
			return false, err
		}
	}
	return n == 1, x.wrote(2 * int(n))
}

// visited reports whether tree id was walked.
func (x *pruneIndex) visited(ctx context.Context, id vault.ID) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.count(ctx, piUsed, ciKey(vault.TreeBlob, id))
}

// use records data blobs ids as used; settle makes it count.
func (x *pruneIndex) use(ctx context.Context, ids []vault.ID) error {
	ctx = context.WithoutCancel(ctx)
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.insertRows(ctx, len(ids), piUse, x.useRows, func(i int) {
		x.args = append(x.args, ciKey(vault.DataBlob, ids[i]))
	})
}

// insertRows inserts n rows, pruneRows at a time with the statement many
// and the rest one at a time with one; row(i) appends row i's values to
// x.args. Called with x.mu held.
func (x *pruneIndex) insertRows(ctx context.Context, n int, one, many string, row func(i int)) error {
	for done := 0; done < n; {
		k, q := 1, one
		if n-done >= pruneRows {
			k, q = pruneRows, many
		}
		x.args = x.args[:0]
		for i := done; i < done+k; i++ {
			row(i)
		}
		if _, err := x.exec(ctx, q, x.args...); err != nil {
			return err
		}
		done += k
		if err := x.wrote(k); err != nil {
			return err
		}
	}
	return nil
}

// settle adds the blobs visit and use recorded to the used set, in key
// order, homing each in the first ranked pack in use that holds it: a
// needed blob stored twice (two backups at once) keeps only its home
// alive.
func (x *pruneIndex) settle(ctx context.Context) error {
	return x.run(ctx, `INSERT OR IGNORE INTO used (k, home)
		SELECT u.k, (SELECT min(p.rank * 4294967296 + b.len) FROM pblobs b JOIN packs p ON p.seq = b.pack WHERE b.k = u.k AND p.condemned = 0)
		FROM uses u ORDER BY u.k`,
		`DELETE FROM uses`)
}

// tally sums, for each pack, the bytes of the used blobs homed there, in
// one pass over the used set.
func (x *pruneIndex) tally(ctx context.Context) error {
	return x.run(ctx, `INSERT INTO needs (rank, bytes)
		SELECT home >> 32, sum(home & 4294967295) FROM used WHERE home IS NOT NULL GROUP BY home >> 32`)
}

// lookup finds blob t/id in a recorded pack, one in use rather than a
// condemned one.
func (x *pruneIndex) lookup(ctx context.Context, t vault.BlobType, id vault.ID) (r vault.BlobRecord, ok bool, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s, err := x.stmt(ctx, piLookup)
	if err != nil {
		return r, false, err
	}
	var pack []byte
	switch err := s.QueryRowContext(ctx, ciKey(t, id)).Scan(&pack, &r.Offset, &r.Length, &r.RawLen); {
	case err == sql.ErrNoRows:
		return r, false, nil
	case err != nil:
		return r, false, fmt.Errorf("scratch index: %w", err)
	}
	if len(pack) != len(r.Pack) {
		return r, false, fmt.Errorf("scratch index: pack ID of %d bytes", len(pack))
	}
	r.ID, r.Type = id, t
	copy(r.Pack[:], pack)
	return r, true, nil
}

// rank numbers the packs in creation order (the catalog's order among
// equals), before mark.
func (x *pruneIndex) rank(ctx context.Context) error {
	return x.run(ctx,
		`UPDATE packs SET rank = r.n FROM (SELECT seq, row_number() OVER (ORDER BY created, seq) AS n FROM packs) AS r WHERE r.seq = packs.seq`,
		`CREATE INDEX packs_rank ON packs (rank)`)
}

// account returns the bytes of pack p's blobs homed there (needed) and
// of the others (unused), once tally has run.
func (x *pruneIndex) account(ctx context.Context, p prunePack) (needed, unused int64, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s, err := x.stmt(ctx, piAccount)
	if err != nil {
		return 0, 0, err
	}
	var total int64
	if err := s.QueryRowContext(ctx, p.seq).Scan(&total, &needed); err != nil {
		return 0, 0, fmt.Errorf("scratch index: %w", err)
	}
	return needed, total - needed, nil
}

// condemned records pack seq condemned at (in use again for the zero
// time), adding state bits.
func (x *pruneIndex) condemned(ctx context.Context, seq int64, at time.Time, state int) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, err := x.exec(ctx, piCondemn, nanos(at), state, seq); err != nil {
		return err
	}
	return x.wrote(1)
}

// mark adds state bits to pack seq.
func (x *pruneIndex) mark(ctx context.Context, seq int64, state int) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, err := x.exec(ctx, piState, state, seq); err != nil {
		return err
	}
	return x.wrote(1)
}

// remove forgets pack seq (deleted): its blobs are no longer found in it.
func (x *pruneIndex) remove(ctx context.Context, seq int64) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, err := x.exec(ctx, piRemove, seq); err != nil {
		return err
	}
	return x.wrote(1)
}

// needed reports whether condemned pack p holds a used blob no pack in
// use holds; with dry, packs condemned only by this run count as in use
// (a dry run condemned them in the index alone).
func (x *pruneIndex) needed(ctx context.Context, p prunePack, dry bool) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	state := 0
	if dry {
		state = pruneCondemnedNow
	}
	return x.count(ctx, piNeeded, p.lo, p.hi, p.seq, state)
}

// condemnedSince reports whether a pack was condemned at or after t.
func (x *pruneIndex) condemnedSince(ctx context.Context, t time.Time) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.count(ctx, piSince, nanos(t))
}

// blobs returns the blobs of pack p; with homed, only those homed there,
// in the order they are stored.
func (x *pruneIndex) blobs(ctx context.Context, p prunePack, homed bool) ([]vault.BlobRecord, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.commit(); err != nil {
		return nil, err
	}
	q := `SELECT k, off, len, rawlen FROM pblobs WHERE rowid BETWEEN ? AND ? ORDER BY off`
	args := []any{p.lo, p.hi}
	if homed {
		q = `SELECT b.k, b.off, b.len, b.rawlen FROM pblobs b JOIN used u ON u.k = b.k
			WHERE b.rowid BETWEEN ? AND ? AND u.home >> 32 = ? ORDER BY b.off`
		args = append(args, p.rank)
	}
	rows, err := x.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("scratch index: %w", err)
	}
	defer rows.Close()
	var out []vault.BlobRecord
	for rows.Next() {
		var k []byte
		r := vault.BlobRecord{Pack: p.id}
		if err := rows.Scan(&k, &r.Offset, &r.Length, &r.RawLen); err != nil {
			return nil, fmt.Errorf("scratch index: %w", err)
		}
		if len(k) != len(r.ID)+1 {
			return nil, fmt.Errorf("scratch index: blob key of %d bytes", len(k))
		}
		copy(r.ID[:], k)
		r.Type = vault.BlobType(k[len(r.ID)])
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("scratch index: %w", err)
	}
	return out, nil
}

// eachPack calls fn for every ranked pack for which where (an SQL
// condition on packs) holds, in creation order, a page at a time: fn may
// use the index, and no query of it stays open while fn runs. Packs fn
// changes so that where no longer holds are not seen again.
func (x *pruneIndex) eachPack(ctx context.Context, where string, fn func(prunePack) error) error {
	page := make([]prunePack, 0, prunePageSize)
	var last int64
	q := `SELECT seq, rank, lo, hi, id, size, condemned, state FROM packs WHERE rank > ? AND (` + where + `) ORDER BY rank LIMIT ?`
	for {
		page = page[:0]
		x.mu.Lock()
		err := func() error {
			if err := x.commit(); err != nil {
				return err
			}
			rows, err := x.db.QueryContext(ctx, q, last, prunePageSize)
			if err != nil {
				return fmt.Errorf("scratch index: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				var p prunePack
				var id []byte
				var cond int64
				if err := rows.Scan(&p.seq, &p.rank, &p.lo, &p.hi, &id, &p.size, &cond, &p.state); err != nil {
					return fmt.Errorf("scratch index: %w", err)
				}
				if len(id) != len(p.id) {
					return fmt.Errorf("scratch index: pack ID of %d bytes", len(id))
				}
				copy(p.id[:], id)
				p.condemned = fromNanos(cond)
				last = p.rank
				page = append(page, p)
			}
			return rows.Err()
		}()
		x.mu.Unlock()
		if err != nil {
			return fmt.Errorf("scratch index: %w", err)
		}
		if len(page) == 0 {
			return nil
		}
		for _, p := range page {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(p); err != nil {
				return err
			}
		}
	}
}

// pruneReader reads the trees of one dedup domain for Prune: it finds
// them in the prune index (what the packs' sealed headers list), not
// through the catalog's lookup keys, which a catalog writer could remove
// to make a tree look missing.
type pruneReader struct {
	v    *Vault
	idx  *pruneIndex
	idOf func([]byte) vault.ID
}

func (r *pruneReader) LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	rec, ok, err := r.idx.lookup(ctx, t, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s blob %s: %w in the index", t, id, vault.ErrNotFound)
	}
	return r.v.loadBlobAt(ctx, rec, dst, r.idOf)
}

func (r *pruneReader) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	return loadTree(ctx, r, id)
}

// pruneTrees returns the reader of domain d's trees for Prune.
func (v *Vault) pruneTrees(d string, idx *pruneIndex) (domainReader, error) {
	if d == "" {
		return &pruneReader{v: v, idx: idx, idOf: v.id}, nil
	}
	w, err := v.InDomain(d)
	if err != nil {
		return nil, err
	}
	return &pruneReader{v: v, idx: idx, idOf: w.id}, nil
}

// indexPacks records in idx the catalog's packs that have a sealed
// header copy, with their blobs; with onlyNew, only those it does not
// hold yet (stored since by this prune's repacking or by other writers).
// A header copy that does not open stops prune, naming the pack.
func (v *Vault) indexPacks(ctx context.Context, idx *pruneIndex, onlyNew bool) error {
	deks, err := v.dekFor(ctx)
	if err != nil {
		return err
	}
	return v.opt.Catalog.Packs(ctx, v.rec.ID, func(p vault.PackRecord) error {
		// SECURITY: a pack without a sealed header copy lists no blob
		// (its plaintext rows are not trusted), so prune cannot know what
		// it holds: it is never condemned nor deleted (check reports it).
		if p.Header == nil {
			return nil
		}
		if onlyNew {
			have, err := idx.hasPack(ctx, p.ID)
			if err != nil || have {
				return err
			}
		}
		recs, err := packBlobs(p, deks)
		if err != nil {
			return fmt.Errorf("load the blob index: %w", err)
		}
		return idx.addPack(ctx, p, recs)
	})
}
