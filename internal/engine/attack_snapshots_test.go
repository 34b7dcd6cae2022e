package engine_test

// Attacks on the snapshot list and the catalog's blob index (issue 12):
// an attacker who can write the catalog (catalog.db) and/or the store,
// but holds no key, edits them the way a person with sqlite3 and a shell
// would, and the vault must notice and say what is wrong.

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// attackerSQL opens the catalog file of e as an attacker would.
func attackerSQL(t *testing.T, e *env) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(e.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func execSQL(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	res, err := db.Exec(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		t.Fatalf("%s: changed nothing", q)
	}
}

// reopen opens the vault of e afresh, as the next command would.
func reopen(t *testing.T, e *env, pin engine.ChainPin) *engine.Vault {
	t.Helper()
	opt := e.opts()
	opt.Pin = pin
	v, err := engine.Open(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// wantDetected asserts that resolving latest, listing and check all
// refuse the vault with a message holding every one of words.
func wantDetected(t *testing.T, v *engine.Vault, words ...string) {
	t.Helper()
	has := func(msg string) bool {
		for _, w := range words {
			if !strings.Contains(msg, w) {
				return false
			}
		}
		return true
	}
	if s, err := v.FindSnapshot(ctx, "latest"); err == nil || !has(err.Error()) {
		t.Errorf("FindSnapshot(latest) = %s, %v; want an error naming %q", s.ID.Short(), err, words)
	}
	if _, err := v.Snapshots(ctx); err == nil || !has(err.Error()) || !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("Snapshots: %v; want ErrCorrupt naming %q", err, words)
	} else {
		t.Logf("detected: %v", err)
	}
	rep, err := v.Check(ctx, engine.CheckOptions{})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	found := false
	for _, m := range rep.Errors {
		found = found || has(m)
	}
	if rep.OK() || !found {
		t.Errorf("check errors %q; want one naming %q", rep.Errors, words)
	}
}

// twoSnapshots makes a vault holding an old and a new snapshot, the new
// one with the old one as parent.
func twoSnapshots(t *testing.T) (*env, vault.SnapshotRecord, vault.SnapshotRecord) {
	t.Helper()
	e := newEnv(t, nil)
	v := create(t, e)
	old := snapshotOf(t, v, "h", []byte("old data"))
	newer := snapshotOfAt(t, v, "h", testStart.Add(time.Hour), old.ID, []byte("new data"))
	v.Close()
	return e, old, newer
}

// snapshotOfAt is snapshotOf at time at with parent parent.
func snapshotOfAt(t *testing.T, v *engine.Vault, host string, at time.Time, parent vault.ID, data []byte) vault.SnapshotRecord {
	t.Helper()
	id, _ := save(t, v, data)
	root := &formatTree{name: "file", content: id, size: uint64(len(data))}
	rootID := root.save(t, v)
	flush(t, v)
	s, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: at, Host: host, Paths: []string{"/file"}, Tags: []string{"daily"}, Tree: rootID, Parent: parent, Files: 1, Bytes: uint64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The catalog's snapshot fields are what "latest", listings and
// retention go by; editing any of them is detected and named.
func TestAttackSnapshotFieldEdits(t *testing.T) {
	far := testStart.Add(1000 * time.Hour).UnixNano()
	cases := []struct {
		name, field string
		edit        func(old, newer vault.SnapshotRecord) (string, []any, vault.ID)
	}{
		{"time makes the old snapshot latest", "time", func(o, n vault.SnapshotRecord) (string, []any, vault.ID) {
			return `UPDATE snapshots SET time = ? WHERE id = ?`, []any{far, o.ID[:]}, o.ID
		}},
		{"host", "host", func(o, n vault.SnapshotRecord) (string, []any, vault.ID) {
			return `UPDATE snapshots SET host = 'other' WHERE id = ?`, []any{n.ID[:]}, n.ID
		}},
		{"paths", "paths", func(o, n vault.SnapshotRecord) (string, []any, vault.ID) {
			return `UPDATE snapshots SET paths = '["/etc"]' WHERE id = ?`, []any{n.ID[:]}, n.ID
		}},
		{"tags", "tags", func(o, n vault.SnapshotRecord) (string, []any, vault.ID) {
			return `UPDATE snapshots SET tags = '["keep-forever"]' WHERE id = ?`, []any{n.ID[:]}, n.ID
		}},
		{"root tree swapped for the old one", "root tree", func(o, n vault.SnapshotRecord) (string, []any, vault.ID) {
			return `UPDATE snapshots SET tree = ? WHERE id = ?`, []any{o.Tree[:], n.ID[:]}, n.ID
		}},
		{"parent dropped", "parent", func(o, n vault.SnapshotRecord) (string, []any, vault.ID) {
			return `UPDATE snapshots SET parent = NULL WHERE id = ?`, []any{n.ID[:]}, n.ID
		}},
		{"statistics", "statistics", func(o, n vault.SnapshotRecord) (string, []any, vault.ID) {
			return `UPDATE snapshots SET files = 99 WHERE id = ?`, []any{n.ID[:]}, n.ID
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, old, newer := twoSnapshots(t)
			q, args, victim := tc.edit(old, newer)
			execSQL(t, attackerSQL(t, e), q, args...)
			v := reopen(t, e, nil)
			wantDetected(t, v, victim.Short(), tc.field)
		})
	}
}

// Deleting the newest snapshot's row from the catalog (so that latest
// falls back to older data) is detected.
func TestAttackSnapshotRowDeleted(t *testing.T) {
	e, _, newer := twoSnapshots(t)
	execSQL(t, attackerSQL(t, e), `DELETE FROM snapshots WHERE id = ?`, newer.ID[:])
	wantDetected(t, reopen(t, e, nil), newer.ID.Short(), "missing from the catalog")
}

// A row the vault never recorded (copied from another with a new ID and
// a newer time) is refused.
func TestAttackSnapshotRowInjected(t *testing.T) {
	e, old, _ := twoSnapshots(t)
	fake := vault.ID{0xfa, 0xce}
	execSQL(t, attackerSQL(t, e), `INSERT INTO snapshots (vault, id, time, host, paths, tags, tree, parent, files, dirs, bytes, bytes_added, duration_ns)
		SELECT vault, ?, time + 1000000000000000, host, paths, tags, tree, parent, files, dirs, bytes, bytes_added, duration_ns FROM snapshots WHERE id = ?`, fake[:], old.ID[:])
	wantDetected(t, reopen(t, e, nil), fake.Short(), "never recorded")
}

// Undoing a forget, or forgetting (hiding) a live snapshot, by editing
// the soft-delete columns is detected; so is an earlier soft-delete time
// (which would let prune remove it early).
func TestAttackSoftDeleteEdits(t *testing.T) {
	t.Run("forget undone", func(t *testing.T) {
		e, old, _ := twoSnapshots(t)
		v := reopen(t, e, nil)
		if _, err := v.Forget(ctx, []vault.ID{old.ID}, "ann"); err != nil {
			t.Fatal(err)
		}
		v.Close()
		execSQL(t, attackerSQL(t, e), `UPDATE snapshots SET deleted = NULL, deleted_by = NULL WHERE id = ?`, old.ID[:])
		wantDetected(t, reopen(t, e, nil), old.ID.Short(), "undone")
	})
	t.Run("live snapshot hidden", func(t *testing.T) {
		e, _, newer := twoSnapshots(t)
		execSQL(t, attackerSQL(t, e), `UPDATE snapshots SET deleted = ?, deleted_by = 'ann' WHERE id = ?`, testStart.UnixNano(), newer.ID[:])
		wantDetected(t, reopen(t, e, nil), newer.ID.Short(), "hidden")
	})
	t.Run("soft-delete time moved back", func(t *testing.T) {
		e, old, _ := twoSnapshots(t)
		v := reopen(t, e, nil)
		if _, err := v.Forget(ctx, []vault.ID{old.ID}, "ann"); err != nil {
			t.Fatal(err)
		}
		v.Close()
		execSQL(t, attackerSQL(t, e), `UPDATE snapshots SET deleted = deleted - 86400000000000 * 400 WHERE id = ?`, old.ID[:])
		wantDetected(t, reopen(t, e, nil), old.ID.Short(), "soft-delete time")
	})
}

// An attacker who edits a record and the chain entry's digest to match
// cannot make the entry's MAC without the chain key.
func TestAttackChainEntryForged(t *testing.T) {
	e, old, _ := twoSnapshots(t)
	db := attackerSQL(t, e)
	execSQL(t, db, `UPDATE snapshots SET time = ? WHERE id = ?`, testStart.Add(1000*time.Hour).UnixNano(), old.ID[:])
	execSQL(t, db, `UPDATE snapshot_chain SET digest = zeroblob(32), time = time + 1 WHERE snapshot = ?`, old.ID[:])
	wantDetected(t, reopen(t, e, nil), "entry 2", "does not verify") // entry 1 binds the settings
}

// Removing the newest snapshots from the catalog, chain entries
// included: the store still holds their objects, sealed with their
// place in the chain, and check proves the rollback; the CLI's pin
// catches it even when the store objects are deleted too.
func TestAttackChainRolledBack(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	pin := &memPin{}
	var ss []vault.SnapshotRecord
	for i := range 4 {
		ss = append(ss, snapshotOfAt(t, v, "h", testStart.Add(time.Duration(i)*time.Hour), vault.ID{}, fmt.Appendf(nil, "data %d", i)))
	}
	v.Close()
	v = reopen(t, e, pin)
	if _, err := v.Snapshots(ctx); err != nil { // pins the head
		t.Fatal(err)
	}
	v.Close()
	db := attackerSQL(t, e)
	execSQL(t, db, `DELETE FROM snapshots WHERE id IN (?, ?)`, ss[2].ID[:], ss[3].ID[:])
	execSQL(t, db, `DELETE FROM snapshot_chain WHERE seq > 3`) // entry 1 binds the settings

	// Without a pin, check finds the store's objects sealed beyond the
	// chain's end.
	rep, err := reopen(t, e, nil).Check(ctx, engine.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !containsAll(rep.Errors, ss[3].ID.Short(), "rolled back") {
		t.Errorf("check without a pin: errors %q, want the rollback named", rep.Errors)
	}

	// With the store objects gone too, only the pin can tell.
	for _, s := range ss[2:] {
		if err := e.store.Delete(ctx, vault.Handle{Type: vault.SnapshotObject, Name: s.ID.String()}); err != nil {
			t.Fatal(err)
		}
	}
	wantDetected(t, reopen(t, e, pin), "saw 5 entries", "rolled back")
}

func containsAll(msgs []string, words ...string) bool {
	for _, m := range msgs {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(m, w)
		}
		if ok {
			return true
		}
	}
	return false
}

// memPin is an in-memory engine.ChainPin.
type memPin struct {
	mu  sync.Mutex
	seq uint64
	mac [32]byte
}

func (p *memPin) Load(vault.ID) (uint64, [32]byte, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seq, p.mac, p.seq > 0, nil
}

func (p *memPin) Save(_ vault.ID, seq uint64, mac [32]byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq, p.mac = seq, mac
	return nil
}

// The plaintext catalog holds no blob's raw length, sealed length or
// offset: an observer of catalog.db cannot read file sizes from it.
func TestAttackCatalogLeaksNoSizes(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	sizes := []int{12_345, 23_456, 34_567}
	var secret []int64
	for i, n := range sizes {
		save(t, v, randBytes(uint64(100+i), n))
		secret = append(secret, int64(n), int64(n+17)) // raw and sealed (encoding byte + tag)
	}
	secret = append(secret, 44+12_345+17) // the second blob's offset
	flush(t, v)
	v.Close()
	v = reopen(t, e, nil)
	for i, n := range sizes { // still readable: the index opened the sealed copies
		if got := load(t, v, v.BlobID(randBytes(uint64(100+i), n))); len(got) != n {
			t.Fatalf("blob %d: %d bytes", i, len(got))
		}
	}
	for _, hit := range integerCells(t, attackerSQL(t, e)) {
		for _, s := range secret {
			if hit.value == s {
				t.Errorf("catalog %s holds %d, a blob's size or offset", hit.where, s)
			}
		}
	}
}

type cell struct {
	where string
	value int64
}

// integerCells returns every integer value in every table of db.
func integerCells(t *testing.T, db *sql.DB) []cell {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM sqlite_schema WHERE type = 'table'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	var out []cell
	for _, tb := range tables {
		rows, err := db.Query(`SELECT * FROM "` + tb + `"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				if n, ok := v.(int64); ok {
					out = append(out, cell{tb + "." + cols[i], n})
				}
			}
		}
		rows.Close()
	}
	return out
}

// The catalog's sealed copies of pack headers cannot be swapped between
// packs or edited: the index refuses to load, naming the pack.
func TestAttackPackHeaderCopy(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	data := [][]byte{randBytes(1, 1000), randBytes(2, 2000)}
	var blobs []vault.ID
	for _, d := range data {
		id, _ := save(t, v, d)
		blobs = append(blobs, id)
		flush(t, v)
	}
	v.Close()
	db := attackerSQL(t, e)
	var ids [][]byte
	rows, err := db.Query(`SELECT id FROM packs ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id []byte
		rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) != 2 {
		t.Fatalf("%d packs", len(ids))
	}
	execSQL(t, db, `UPDATE packs SET header = (SELECT header FROM packs WHERE id = ?) WHERE id = ?`, ids[1], ids[0])
	// The index is not loaded at open (it is queried): the swapped copy
	// is found out by whatever reads the blobs it lists, which fails
	// naming the pack, and by check; the other pack's blob still reads.
	w, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer w.Close()
	want := fmt.Sprintf("pack %x", ids[0])
	failed := 0
	for i, id := range blobs {
		got, err := w.LoadBlob(ctx, vault.DataBlob, id, nil)
		switch {
		case err == nil && bytes.Equal(got, data[i]):
		case err != nil && strings.Contains(err.Error(), want) && errors.Is(err, vault.ErrCorrupt):
			failed++
		default:
			t.Errorf("LoadBlob(%s) with a swapped header copy: %v; want its bytes or ErrCorrupt naming %s", id.Short(), err, want)
		}
	}
	if failed != 1 {
		t.Errorf("%d blobs failed to load, want the one of pack %x", failed, ids[0])
	}
	if _, err := w.Check(ctx, engine.CheckOptions{}); err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("Check with a swapped header copy: %v; want ErrCorrupt naming %s", err, want)
	}
}

// Several processes (vault handles on their own catalog connections)
// saving and forgetting snapshots at once append one chain, in order,
// that verifies.
func TestSnapshotChainConcurrent(t *testing.T) {
	e := newEnv(t, nil)
	create(t, e).Close()
	const writers, each = 4, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cat, err := sqliteOpen(filepath.Join(e.dir, "catalog.db"))
			if err != nil {
				errs <- err
				return
			}
			defer cat.Close()
			opt := e.opts()
			opt.Catalog = cat
			v, err := engine.Open(ctx, opt)
			if err != nil {
				errs <- err
				return
			}
			defer v.Close()
			for i := range each {
				s, err := saveSnapshotErr(v, fmt.Appendf(nil, "writer %d snapshot %d", w, i))
				if err != nil {
					errs <- err
					return
				}
				if i%2 == 0 {
					if _, err := v.Forget(ctx, []vault.ID{s.ID}, "w"); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	v := reopen(t, e, nil)
	head, err := v.VerifyChain(ctx)
	if want := uint64(writers*(each+(each+1)/2)) + 1; err != nil || head.Seq != want {
		t.Errorf("VerifyChain = %d, %v; want %d entries", head.Seq, err, want)
	}
	if rep := checkClean(t, v); rep.Snapshots != writers*each {
		t.Errorf("check saw %d snapshots", rep.Snapshots)
	}
}

// formatTree is a root tree holding one file.
type formatTree struct {
	name    string
	content vault.ID
	size    uint64
}

func (f *formatTree) save(t *testing.T, v *engine.Vault) vault.ID {
	t.Helper()
	id, err := v.SaveTree(ctx, &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte(f.name), Perm: 0o644, Size: f.size, Content: []vault.ID{f.content}}}})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func sqliteOpen(path string) (*sqlite.Catalog, error) { return sqlite.Open(path) }

// saveSnapshotErr stores data and a snapshot of it, for goroutines.
func saveSnapshotErr(v *engine.Vault, data []byte) (vault.SnapshotRecord, error) {
	id := v.BlobID(data)
	if _, err := v.SaveBlob(ctx, vault.DataBlob, id, v.Codec().Encode(nil, data), len(data)); err != nil {
		return vault.SnapshotRecord{}, err
	}
	root, err := v.SaveTree(ctx, &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("f"), Perm: 0o644, Size: uint64(len(data)), Content: []vault.ID{id}}}})
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	if err := v.Flush(ctx); err != nil {
		return vault.SnapshotRecord{}, err
	}
	return v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart, Host: "h", Paths: []string{"/f"}, Tree: root, Files: 1})
}

// v1Env copies the golden format 1 vault (testdata/vault-v1) and returns
// an env on the copy.
func v1Env(t *testing.T) *env {
	t.Helper()
	home := t.TempDir()
	if err := os.CopyFS(home, os.DirFS("testdata/vault-v1")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(home, "vaults", "default")
	st, err := local.Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := sqlite.Open(filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	ks, err := platform.Open(filepath.Join(home, "keys", "platform.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{dir: dir, store: st, cat: cat, keys: ks, clock: &clock{t: time.Now()}}
}

func (e *env) v1Opts() engine.Options {
	o := e.opts()
	o.Name = "local" // the CLI's name for its vault in its own catalog
	return o
}

// A format 1 vault upgrades in place on its first open by a key holder:
// its snapshots enter the chain from their sealed objects, its packs'
// blob rows give way to sealed header copies, and nothing of the old
// sizes is left in the catalog.
func TestUpgradeFormat1(t *testing.T) {
	e := v1Env(t)
	db := attackerSQL(t, e)
	var rows int
	if err := db.QueryRow(`SELECT count(*) FROM blobs`).Scan(&rows); err != nil || rows == 0 {
		t.Fatalf("the golden vault has %d blob rows (%v): not a format 1 catalog", rows, err)
	}
	v, err := engine.Open(ctx, e.v1Opts())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	head, err := v.VerifyChain(ctx)
	if err != nil || head.Seq != 4 { // 3 imported snapshots, then the settings' entry
		t.Fatalf("VerifyChain after the upgrade = %d, %v; want 4 entries", head.Seq, err)
	}
	live, err := v.Snapshots(ctx)
	if err != nil || len(live) != 2 || live[0].Tags[0] != "first" || live[1].Tags[0] != "second" {
		t.Fatalf("Snapshots after the upgrade = %+v, %v", live, err)
	}
	latest, err := v.FindSnapshot(ctx, "latest")
	if err != nil || latest.ID != live[1].ID {
		t.Errorf("latest = %s, %v; want %s", latest.ID.Short(), err, live[1].ID.Short())
	}
	all, _ := v.AllSnapshots(ctx)
	if len(all) != 3 || all[2].Deleted.IsZero() || all[2].Tags[0] != "third" {
		t.Errorf("AllSnapshots = %+v", all)
	}
	if rep := checkClean(t, v); rep.Snapshots != 3 || rep.Blobs != 14 {
		t.Errorf("check after the upgrade saw %d snapshots, %d blobs", rep.Snapshots, rep.Blobs)
	}
	rep, err := v.Check(ctx, engine.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Errorf("check --read-data after the upgrade: %v %+v", err, rep)
	}
	db.QueryRow(`SELECT count(*) FROM blobs`).Scan(&rows)
	var legacy int
	db.QueryRow(`SELECT count(*) FROM packs WHERE header IS NULL`).Scan(&legacy)
	var free int
	db.QueryRow(`PRAGMA freelist_count`).Scan(&free)
	if rows != 0 || legacy != 0 || free != 0 {
		t.Errorf("after the upgrade: %d blob rows, %d packs without a header copy, %d free pages (may hold the old rows)", rows, legacy, free)
	}
	// New snapshots go on the imported chain; the next open upgrades
	// nothing and verifies all.
	s := snapshotOf(t, v, "h", []byte("after the upgrade"))
	v.Close()
	w, err := engine.Open(ctx, e.v1Opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.FindSnapshot(ctx, s.ID.String()); err != nil {
		t.Error(err)
	}
	if head, err := w.VerifyChain(ctx); err != nil || head.Seq != 5 { // 3 imports, the settings' entry, the new one
		t.Errorf("VerifyChain = %d, %v; want 5", head.Seq, err)
	}
}

// The upgrade takes the snapshots' fields from their sealed objects: a
// catalog edited before the upgrade is caught right after it.
func TestUpgradeFormat1EditedBefore(t *testing.T) {
	e := v1Env(t)
	execSQL(t, attackerSQL(t, e), `UPDATE snapshots SET time = time + 1000000000000000 WHERE id = (SELECT id FROM snapshots ORDER BY time LIMIT 1)`)
	v, err := engine.Open(ctx, e.v1Opts())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	wantDetected(t, v, "time", "sealed")
}

// Deleting the chain to make the vault look like format 1 (and so have
// its edited records imported as they are) is refused: a vault whose
// keyring is format 2 never imports its list again
// (TestAttackReimportUpgradedVault has one without version 2 objects).
func TestAttackChainDeletedForReimport(t *testing.T) {
	e, old, _ := twoSnapshots(t)
	db := attackerSQL(t, e)
	execSQL(t, db, `UPDATE snapshots SET time = ? WHERE id = ?`, testStart.Add(1000*time.Hour).UnixNano(), old.ID[:])
	execSQL(t, db, `DELETE FROM snapshot_chain`)
	wantDetected(t, reopen(t, e, nil), "chain was deleted")
}
