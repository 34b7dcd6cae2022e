package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrationFiles are the schema's versions: migrations/NNNN_name.sql
// takes the schema from version NNNN-1 to NNNN. Append only: a released
// migration never changes.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one step of the schema.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order; their versions
// must run from 1 without gaps.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, n := range names {
		base := path.Base(n)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name does not start with a version number", base)
		}
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	for i, m := range ms { // fs.Glob returns names sorted
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d", m.name, i+1)
		}
	}
	return ms, nil
}

// ErrNewerSchema is returned by Open for a catalog migrated by a newer
// version of Coffer.
var ErrNewerSchema = errors.New("catalog schema too new")

// lockKey is the SQL for the advisory lock key named by the text
// parameter $1, within the connection's current schema: two catalogs in
// different schemas of one database do not share locks.
const lockKey = `hashtextextended('coffer ' || current_schema() || ' ' || $1::text, 0)`

// SchemaVersion returns the schema version this code reads and writes.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate brings the schema up to the newest embedded migration, in one
// transaction under an advisory lock: replicas starting at once wait for
// each other and migrate once, and a failed migration leaves nothing
// behind (PostgreSQL's DDL is transactional).
func (c *Catalog) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return c.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+lockKey+`)`, "migrate"); err != nil {
			return fmt.Errorf("lock the schema: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			one     integer NOT NULL PRIMARY KEY CHECK (one = 1),
			version integer NOT NULL
		)`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var v int
		err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read schema version: %w", err)
		}
		if v > len(ms) {
			return fmt.Errorf("%w: version %d, this coffer supports up to %d; upgrade coffer", ErrNewerSchema, v, len(ms))
		}
		if v == len(ms) {
			return nil
		}
		for _, m := range ms[v:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migrate schema to version %d (%s): %w", m.version, m.name, err)
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO schema_version (one, version) VALUES (1, $1)
			ON CONFLICT (one) DO UPDATE SET version = excluded.version`, len(ms))
		if err != nil {
			return fmt.Errorf("record schema version: %w", err)
		}
		return nil
	})
}
