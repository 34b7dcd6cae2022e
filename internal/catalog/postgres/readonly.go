package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// OpenReadOnly connects to the catalog at url for reading only, as an
// auditor's tool does (coffer audit verify --catalog): it never migrates
// the schema, and every transaction of its connections is read-only
// (default_transaction_read_only), so it writes nothing even when the
// URL's user could, and a user granted only SELECT on the tables it
// reads is enough. It fails if the database holds no Coffer catalog in
// the connection's schema, and with ErrNewerSchema if a newer version of
// Coffer migrated it. Errors never repeat the URL's password.
func OpenReadOnly(ctx context.Context, url string) (*Catalog, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: invalid connection URL", Redact(url))
	}
	// SECURITY: the database refuses every write of these connections,
	// whatever the code above them does.
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	if cfg.MaxConns > 4 {
		cfg.MaxConns = 4
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", Redact(url), err)
	}
	c := &Catalog{pool: pool, jobs: map[*pgxpool.Conn]struct{}{}}
	if err := c.checkSchema(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open catalog %s: %w", Redact(url), err)
	}
	return c, nil
}

// ErrNoCatalog is returned by OpenReadOnly for a database (or schema)
// that holds no Coffer catalog.
var ErrNoCatalog = errors.New("no coffer catalog")

// checkSchema checks that the schema is one this code reads.
func (c *Catalog) checkSchema(ctx context.Context) error {
	var v int
	err := c.pool.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
	switch {
	case pgCode(err) == "42P01" || errors.Is(err, pgx.ErrNoRows): // undefined_table
		return fmt.Errorf("%w in the connection's schema (search_path): a coffer server creates it at its first start", ErrNoCatalog)
	case err != nil:
		return fmt.Errorf("read schema version: %w", err)
	case v > SchemaVersion():
		return fmt.Errorf("%w: version %d, this coffer supports up to %d; upgrade coffer", ErrNewerSchema, v, SchemaVersion())
	}
	return nil
}

// Location names the catalog at url without its user or password: host,
// port, database and schema (search_path). Two URLs with the same
// location name one catalog, whoever connects.
func Location(u string) (string, error) {
	cfg, err := pgconn.ParseConfig(u)
	if err != nil {
		return "", fmt.Errorf("catalog %s: invalid connection URL", Redact(u))
	}
	s := cfg.Host + ":" + strconv.Itoa(int(cfg.Port)) + "/" + cfg.Database
	if sp := cfg.RuntimeParams["search_path"]; sp != "" {
		s += "?search_path=" + url.QueryEscape(sp)
	}
	return s, nil
}
