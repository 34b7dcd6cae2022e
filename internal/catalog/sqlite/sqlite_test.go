package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/catalogtest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func openTemp(t testing.TB) (*Catalog, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func TestConformance(t *testing.T) {
	catalogtest.Run(t, func(t *testing.T) vault.Catalog {
		c, _ := openTemp(t)
		return c
	})
}

func TestStorage(t *testing.T) {
	catalogtest.RunStorage(t, func(t *testing.T) catalogtest.Storage {
		c, _ := openTemp(t)
		return storage{c}
	})
}

// storage is the catalog seen from below (catalogtest.Storage).
type storage struct{ *Catalog }

func (s storage) Rows(table string) (int, error) {
	var n int
	err := s.db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n)
	return n, err
}

func (s storage) Exec(query string, args ...any) error {
	_, err := s.db.Exec(query, args...)
	return err
}

func (s storage) RefuseDeletes(table string) (func() error, error) {
	if _, err := s.db.Exec(`CREATE TRIGGER refuse BEFORE DELETE ON ` + table + ` BEGIN SELECT RAISE(ABORT, 'refused by test'); END`); err != nil {
		return nil, err
	}
	return func() error {
		_, err := s.db.Exec(`DROP TRIGGER refuse`)
		return err
	}, nil
}

func newID() vault.ID {
	var id vault.ID
	rand.Read(id[:])
	return id
}

func newVault(t testing.TB, c *Catalog, name string) vault.ID {
	t.Helper()
	id := newID()
	if err := c.CreateVault(context.Background(), vault.VaultRecord{ID: id, Name: name, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return id
}

func newPack(n int) (vault.PackRecord, []vault.BlobRecord) {
	p := vault.PackRecord{ID: newID(), Size: 16 << 20, DEKVersion: 1, Blobs: n, Created: time.Now()}
	blobs := make([]vault.BlobRecord, n)
	for i := range blobs {
		blobs[i] = vault.BlobRecord{ID: newID(), Type: vault.DataBlob, Pack: p.ID, Offset: uint32(i * 4096), Length: 4096, RawLen: 8000}
	}
	return p, blobs
}

func count(t testing.TB, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFileMode(t *testing.T) {
	c, path := openTemp(t)
	v := newVault(t, c, "v")
	p, blobs := newPack(10)
	if err := c.AddPack(t.Context(), v, p, blobs); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", filepath.Base(name), fi.Mode().Perm())
		}
	}
}

// TestPragmas checks that every connection of the pool got the DSN's
// settings.
func TestPragmas(t *testing.T) {
	c, _ := openTemp(t)
	ctx := t.Context()
	// Hold several connections at once so that the pool opens new ones.
	var conns []*sql.Conn
	for range 3 {
		conn, err := c.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	for i, conn := range conns {
		for _, p := range []struct {
			pragma string
			want   string
		}{
			{"journal_mode", "wal"},
			{"busy_timeout", "10000"},
			{"synchronous", "1"}, // NORMAL
			{"foreign_keys", "1"},
		} {
			var got string
			if err := conn.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != p.want {
				t.Errorf("conn %d: PRAGMA %s = %s, want %s", i, p.pragma, got, p.want)
			}
		}
		conn.Close()
	}
}

// TestBeginImmediate checks that BeginTx takes the write lock at once: a
// second handle without a busy timeout cannot begin a write transaction
// while the first holds an empty one.
func TestBeginImmediate(t *testing.T) {
	c, path := openTemp(t)
	ctx := t.Context()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()

	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx2, err := other.BeginTx(ctx, nil)
	if err == nil {
		tx2.Rollback()
		t.Fatal("second BEGIN IMMEDIATE succeeded while the first transaction is open")
	}
	if !strings.Contains(err.Error(), "SQLITE_BUSY") {
		t.Errorf("second BEGIN IMMEDIATE: %v, want SQLITE_BUSY", err)
	}
	// Readers are not blocked.
	if n := count(t, other, "vaults"); n != 0 {
		t.Errorf("vaults: %d rows", n)
	}
}

// TestTwoHandles opens the same file twice, as two processes would, and
// writes from both at once.
func TestTwoHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	// Open both at once too: creating the schema must not race.
	var (
		cs [2]*Catalog
		wg sync.WaitGroup
	)
	for i := range cs {
		wg.Go(func() {
			c, err := Open(path)
			if err != nil {
				t.Errorf("Open %d: %v", i, err)
				return
			}
			cs[i] = c
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	defer cs[0].Close()
	defer cs[1].Close()

	ctx := t.Context()
	v := newVault(t, cs[0], "shared")
	if got, err := cs[1].Vault(ctx, "shared"); err != nil || got.ID != v {
		t.Fatalf("Vault from the second handle: %v, %v", got, err)
	}

	const (
		workers = 4 // per handle
		rounds  = 20
		blobsN  = 100
	)
	for _, c := range cs {
		for w := range workers {
			wg.Go(func() {
				for r := range rounds {
					p, blobs := newPack(blobsN)
					if err := c.AddPack(ctx, v, p, blobs); err != nil {
						t.Errorf("AddPack: %v", err)
						return
					}
					s := vault.SnapshotRecord{ID: newID(), Time: time.Now(), Host: fmt.Sprintf("w%d-r%d", w, r), Tree: newID()}
					if err := c.AddSnapshot(ctx, v, s); err != nil {
						t.Errorf("AddSnapshot: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()

	wantPacks := len(cs) * workers * rounds
	for i, c := range cs {
		if n := count(t, c.db, "packs"); n != wantPacks {
			t.Errorf("handle %d sees %d packs, want %d", i, n, wantPacks)
		}
		if n := count(t, c.db, "blobs"); n != wantPacks*blobsN {
			t.Errorf("handle %d sees %d blobs, want %d", i, n, wantPacks*blobsN)
		}
		ss, err := c.Snapshots(ctx, v)
		if err != nil || len(ss) != wantPacks {
			t.Errorf("handle %d: %d snapshots, %v; want %d", i, len(ss), err, wantPacks)
		}
	}
}

func TestReopen(t *testing.T) {
	c, path := openTemp(t)
	v := newVault(t, c, "v")
	c.Close()
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	c2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got, err := c2.Vault(t.Context(), "v")
	if err != nil || got.ID != v {
		t.Errorf("Vault after reopen: %v, %v", got, err)
	}
	var version int
	if err := c2.db.QueryRow(`SELECT version FROM schema_version`).Scan(&version); err != nil || version != currentVersion {
		t.Errorf("schema version %d, %v; want %d", version, err, currentVersion)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	c, path := openTemp(t)
	if _, err := c.db.Exec(`UPDATE schema_version SET version = ?`, currentVersion+1); err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, err := Open(path)
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open of a newer schema: %v, want ErrNewerSchema", err)
	}
	t.Logf("error: %v", err)
}

func TestNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a database\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Open(path); err == nil {
		c.Close()
		t.Fatal("Open of a text file succeeded")
	} else {
		t.Logf("error: %v", err)
	}
}

// TestAwkwardPath checks that the path is escaped in the file: URI.
func TestAwkwardPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%20chars&x=y")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cätalog.db")
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	newVault(t, c, "v")
	c.Close()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) == 0 || names[0] != "cätalog.db" {
		t.Errorf("files in dir: %q, want cätalog.db", names)
	}
}

// TestQueryPlans checks that the listing queries read in index order
// without sorting.
func TestQueryPlans(t *testing.T) {
	c, _ := openTemp(t)
	for _, q := range []string{
		`SELECT id, size, dek_version, blobs, created, condemned FROM packs WHERE vault = ? ORDER BY id`,
		`SELECT id, type, pack, "offset", length, raw_length FROM blobs WHERE vault = ? ORDER BY pack, "offset"`,
		`SELECT id FROM snapshots WHERE vault = ? ORDER BY time, id`,
		`SELECT ` + tokenColumns + ` FROM tokens WHERE hash = ?`,
		`SELECT ` + tokenColumns + ` FROM tokens ORDER BY created, id`,
		`SELECT ` + keyEventColumns + ` FROM key_events WHERE vault = ? ORDER BY time, id`,
		`SELECT ` + keyEventColumns + ` FROM key_events WHERE vault = ? ORDER BY time DESC, id DESC LIMIT 1`,
		`DELETE FROM blobs WHERE vault = ? AND pack = ?`,
		`DELETE FROM snapshots WHERE vault = ? AND id = ?`,
		`SELECT s.soft_delete FROM vaults v LEFT JOIN vault_settings s ON s.vault = v.id WHERE v.id = ?`,
		`SELECT ` + vaultEventColumns + ` FROM vault_events WHERE vault = ? ORDER BY time, id`,
		`SELECT ` + sessionColumns + ` FROM sessions WHERE vault = ? ORDER BY started, id`,
		`UPDATE sessions SET touched = ? WHERE id = ?`,
		`SELECT ` + requestColumns + ` FROM requests WHERE id = ?`,
		`SELECT ` + requestColumns + ` FROM requests ORDER BY created, id`,
	} {
		var args []any
		for range strings.Count(q, "?") {
			args = append(args, make([]byte, 32))
		}
		rows, err := c.db.Query(`EXPLAIN QUERY PLAN `+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		p := strings.Join(plan, "; ")
		// Listing every token or request reads the whole table, in index
		// order.
		fullScan := !strings.Contains(q, "WHERE")
		if strings.Contains(p, "TEMP B-TREE") || (strings.Contains(p, "SCAN") && !fullScan) {
			t.Errorf("%s:\n  plan %s", q, p)
		}
	}
}

func BenchmarkAddPack(b *testing.B) {
	for _, n := range []int{16, 1000, 5000} {
		b.Run(fmt.Sprintf("blobs=%d", n), func(b *testing.B) {
			c, _ := openTemp(b)
			v := newVault(b, c, "v")
			ctx := context.Background()
			packs := make([]vault.PackRecord, 0, 64)
			blobs := make([][]vault.BlobRecord, 0, 64)
			for range 64 {
				p, bs := newPack(n)
				packs = append(packs, p)
				blobs = append(blobs, bs)
			}
			i := 0
			for b.Loop() {
				if i == len(packs) {
					b.StopTimer()
					for j := range packs {
						packs[j].ID = newID()
						for k := range blobs[j] {
							blobs[j][k].Pack = packs[j].ID
						}
					}
					i = 0
					b.StartTimer()
				}
				if err := c.AddPack(ctx, v, packs[i], blobs[i]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/blob")
		})
	}
}

func BenchmarkBlobs(b *testing.B) {
	const (
		total   = 100_000
		perPack = 1000
	)
	c, _ := openTemp(b)
	v := newVault(b, c, "v")
	other := newVault(b, c, "other") // rows the query must skip
	ctx := context.Background()
	for i := range total / perPack {
		p, blobs := newPack(perPack)
		if err := c.AddPack(ctx, v, p, blobs); err != nil {
			b.Fatal(err)
		}
		if i%10 == 0 {
			if err := c.AddPack(ctx, other, p, blobs); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for b.Loop() {
		n := 0
		err := c.Blobs(ctx, v, func(vault.BlobRecord) error {
			n++
			return nil
		})
		if err != nil || n != total {
			b.Fatalf("Blobs: %d rows, %v", n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*total), "ns/blob")
}

// TestPrincipalLegacyNames: a catalog written before names were compared
// without regard to case (or before names like IDs were refused) may hold
// such names. It still opens, each such principal is reached by its exact
// name or its ID, a case-insensitive match of several is ambiguous, and
// no new name may join them.
func TestPrincipalLegacyNames(t *testing.T) {
	c, path := openTemp(t)
	ctx := t.Context()
	for _, row := range [][2]string{{"usr_00000000000000a1", "bob"}, {"usr_00000000000000a2", "Bob"}, {"usr_00000000000000a3", "usr_00000000000000a1"}} {
		if _, err := c.db.ExecContext(ctx, `INSERT INTO principals (id, name, kind, password, created, created_by) VALUES (?, ?, 'user', '', 1, 'test')`, row[0], row[1]); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	c, err := Open(path)
	if err != nil {
		t.Fatalf("a catalog holding legacy names does not open: %v", err)
	}
	defer c.Close()
	for name, id := range map[string]string{"bob": "usr_00000000000000a1", "Bob": "usr_00000000000000a2", "usr_00000000000000a1": "usr_00000000000000a3"} {
		if p, err := c.Principal(ctx, name); err != nil || p.ID != id {
			t.Errorf("Principal(%q) = %s, %v; want %s", name, p.ID, err, id)
		}
	}
	if _, err := c.Principal(ctx, "BOB"); !errors.Is(err, vault.ErrAmbiguous) {
		t.Errorf("Principal(BOB) = %v, want ErrAmbiguous", err)
	}
	// The ID lookup is never fooled by the principal named after an ID.
	if p, err := c.PrincipalByID(ctx, "usr_00000000000000a1"); err != nil || p.Name != "bob" {
		t.Errorf("PrincipalByID = %v, %v; want bob", p, err)
	}
	if err := c.AddPrincipal(ctx, vault.Principal{ID: "usr_00000000000000a4", Name: "BOB", Kind: "user", Created: time.Now()}); !errors.Is(err, vault.ErrExists) {
		t.Errorf("adding BOB beside bob and Bob: %v, want ErrExists", err)
	}
}
