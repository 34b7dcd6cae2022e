package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/catalog/catalogtest"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openTemp opens a catalog in a new schema of the test server.
func openTemp(t testing.TB) (*Catalog, string) {
	t.Helper()
	url := pgtest.URL(t)
	c, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, url
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
	err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&n)
	return n, err
}

// Exec numbers the ? placeholders of query ($1, $2, …).
func (s storage) Exec(query string, args ...any) error {
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	_, err := s.pool.Exec(context.Background(), b.String(), args...)
	return err
}

func (s storage) RefuseDeletes(table string) (func() error, error) {
	ctx := context.Background()
	name := pgx.Identifier{table}.Sanitize()
	if _, err := s.pool.Exec(ctx, `CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$;
		CREATE TRIGGER refuse BEFORE DELETE ON `+name+` FOR EACH ROW EXECUTE FUNCTION refuse()`); err != nil {
		return nil, err
	}
	return func() error {
		_, err := s.pool.Exec(ctx, `DROP TRIGGER refuse ON `+name)
		return err
	}, nil
}

func TestJobLock(t *testing.T) {
	catalogtest.RunJobLock(t, func(t *testing.T) (vault.JobLocker, vault.JobLocker) {
		a, url := openTemp(t)
		b, err := Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return a, b
	})
}

// TestJobLockHolderDies: when the replica holding a job lock dies (its
// connection is cut), the database releases the lock and another replica
// takes the job.
func TestJobLockHolderDies(t *testing.T) {
	ctx := context.Background()
	a, url := openTemp(t)
	b, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, ok, err := a.TryJobLock(ctx, "prune"); err != nil || !ok {
		t.Fatalf("TryJobLock = %v, %v", ok, err)
	}
	if _, ok, _ := b.TryJobLock(ctx, "prune"); ok {
		t.Fatal("the lock was taken twice")
	}
	// Cut the holder's connection, as a killed process would.
	var n int
	err = b.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
		AND objid = (`+lockKey+` & x'ffffffff'::bigint)`, "job prune").Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("terminate the holder: %d backends, %v", n, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		unlock, ok, err := b.TryJobLock(ctx, "prune")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			unlock()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dead holder's lock was not released")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKeyGeneration: the generation alone is the anchor's, ErrNotFound
// before there is one, and follows a newer anchor.
func TestKeyGeneration(t *testing.T) {
	c, _ := openTemp(t)
	ctx := context.Background()
	v := vault.VaultRecord{ID: vault.ID{7}, Name: "v", Created: time.Unix(1, 0)}
	if err := c.CreateVault(ctx, v); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KeyGeneration(ctx, v.ID); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("KeyGeneration without an anchor = %v, want ErrNotFound", err)
	}
	a := vault.KeyAnchor{Generation: 1, KEK: vault.KeyRef{Provider: "platform", KeyID: "k", Version: "1"}, Alg: "hkdf-sha256-aes-256-gcm", Time: time.Unix(2, 0)}
	for prev, gen := range []uint64{1, 2, 5} {
		p := uint64(0)
		if prev > 0 {
			p = []uint64{1, 2, 5}[prev-1]
		}
		a.Generation = gen
		if err := c.SetKeyAnchor(ctx, v.ID, a, p); err != nil {
			t.Fatal(err)
		}
		got, err := c.KeyGeneration(ctx, v.ID)
		full, _, ferr := c.KeyAnchor(ctx, v.ID)
		if err != nil || ferr != nil || got != gen || full.Generation != gen {
			t.Fatalf("after anchoring %d: KeyGeneration %d, %v; KeyAnchor %d, %v", gen, got, err, full.Generation, ferr)
		}
	}
}

func TestDeployment(t *testing.T) {
	catalogtest.RunDeployment(t, func(t *testing.T) (catalogtest.Shared, catalogtest.Shared) {
		a, url := openTemp(t)
		b, err := Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return a, b
	})
}
