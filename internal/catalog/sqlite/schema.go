package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// migrations[i] takes the schema from version i to version i+1. Append
// only: a released migration never changes.
//
// Conventions: IDs are 32-byte BLOBs; times are INTEGER Unix nanoseconds
// (UTC), NULL for a zero time where one is allowed; uint64 counters are
// stored bit for bit as INTEGER (SQLite's INTEGER is a signed 64-bit
// value).
var migrations = [][]string{
	// 1: initial schema.
	{
		`CREATE TABLE vaults (
			id      BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 32),
			name    TEXT    NOT NULL UNIQUE CHECK (name <> ''),
			created INTEGER NOT NULL
		) STRICT`,

		`CREATE TABLE packs (
			vault       BLOB    NOT NULL REFERENCES vaults (id),
			id          BLOB    NOT NULL CHECK (length(id) = 32),
			size        INTEGER NOT NULL,
			dek_version INTEGER NOT NULL,
			blobs       INTEGER NOT NULL,
			created     INTEGER NOT NULL,
			PRIMARY KEY (vault, id)
		) STRICT, WITHOUT ROWID`,

		// Clustered by (vault, pack, offset): iterating a vault's blobs is
		// a sequential range scan, the blobs of one pack are adjacent
		// (prune), and two blobs cannot claim the same bytes of a pack.
		// The primary key doubles as the (vault, pack) index.
		`CREATE TABLE blobs (
			vault      BLOB    NOT NULL,
			id         BLOB    NOT NULL CHECK (length(id) = 32),
			type       INTEGER NOT NULL,
			pack       BLOB    NOT NULL,
			"offset"   INTEGER NOT NULL,
			length     INTEGER NOT NULL,
			raw_length INTEGER NOT NULL,
			PRIMARY KEY (vault, pack, "offset"),
			FOREIGN KEY (vault, pack) REFERENCES packs (vault, id)
		) STRICT, WITHOUT ROWID`,
		// No index by blob ID: the engine loads a vault's whole index into
		// memory and never looks a blob up in SQL, and with random IDs such
		// an index made AddPack five times slower (a page write per blob).

		`CREATE TABLE snapshots (
			vault       BLOB    NOT NULL REFERENCES vaults (id),
			id          BLOB    NOT NULL CHECK (length(id) = 32),
			time        INTEGER NOT NULL,
			host        TEXT    NOT NULL,
			paths       TEXT    NOT NULL CHECK (json_valid(paths)),
			tags        TEXT    NOT NULL CHECK (json_valid(tags)),
			tree        BLOB    NOT NULL CHECK (length(tree) = 32),
			parent      BLOB             CHECK (length(parent) = 32), -- NULL when none
			files       INTEGER NOT NULL,
			dirs        INTEGER NOT NULL,
			bytes       INTEGER NOT NULL,
			bytes_added INTEGER NOT NULL,
			duration_ns INTEGER NOT NULL,
			PRIMARY KEY (vault, id)
		) STRICT`,
		`CREATE INDEX snapshots_by_time ON snapshots (vault, time, id)`,
	},

	// 2: bearer tokens of the vault server.
	{
		// Only the token's hash is kept. A vault-scoped token names its
		// vault by name (NULL for a server-wide token); the foreign key
		// refuses tokens for a vault that does not exist yet, which would
		// otherwise start to work when someone creates a vault of that
		// name, and refuses to delete a vault that tokens still name.
		// Rows are never deleted: revocation sets revoked.
		`CREATE TABLE tokens (
			id         TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
			hash       BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
			name       TEXT    NOT NULL,
			role       TEXT    NOT NULL CHECK (role <> ''),
			vault      TEXT             REFERENCES vaults (name) CHECK (vault <> ''), -- NULL: server-wide
			created    INTEGER NOT NULL,
			expires    INTEGER,          -- NULL: never
			revoked    INTEGER,          -- NULL: active
			created_by TEXT              -- NULL: the initial owner token
		) STRICT`,
		`CREATE INDEX tokens_by_created ON tokens (created, id)`,
	},

	// 3: the key audit trail.
	{
		// Rows are only ever added. id numbers them in the order they
		// were added (AUTOINCREMENT: never reused), which orders events
		// of the same time. ok is 1 for a success, 0 for a failure.
		`CREATE TABLE key_events (
			id        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
			vault     BLOB    NOT NULL REFERENCES vaults (id),
			time      INTEGER NOT NULL,
			principal TEXT    NOT NULL,
			event     TEXT    NOT NULL CHECK (event <> ''),
			kek       TEXT    NOT NULL,
			detail    TEXT    NOT NULL,
			ok        INTEGER NOT NULL CHECK (ok IN (0, 1))
		) STRICT`,
		`CREATE INDEX key_events_by_time ON key_events (vault, time, id)`,
	},

	// 4: deletion protection (docs/retention.md): soft-deleted snapshots,
	// condemned packs, vault settings, the vault event trail, writer
	// sessions and multi-user authorization requests.
	{
		// deleted: when the snapshot was soft-deleted, NULL while live;
		// deleted_by: who did it, NULL while live (or when not known).
		`ALTER TABLE snapshots ADD COLUMN deleted INTEGER`,
		`ALTER TABLE snapshots ADD COLUMN deleted_by TEXT CHECK (deleted IS NOT NULL OR deleted_by IS NULL)`,
		// condemned: since when prune found no snapshot needing the pack,
		// NULL while in use.
		`ALTER TABLE packs ADD COLUMN condemned INTEGER`,

		// At most one row per vault; a vault without one has the default
		// settings (vault.DefaultSettings). The CHECKs are the storable
		// range, not the rules for changing settings, which live with
		// the engine.
		`CREATE TABLE vault_settings (
			vault            BLOB    NOT NULL PRIMARY KEY REFERENCES vaults (id),
			soft_delete      TEXT    NOT NULL CHECK (soft_delete IN ('on', 'off', 'always-on')),
			soft_delete_days INTEGER NOT NULL CHECK (soft_delete_days BETWEEN 14 AND 180),
			immutability     TEXT    NOT NULL CHECK (immutability IN ('disabled', 'enabled', 'locked')),
			min_retention_ns INTEGER NOT NULL CHECK (min_retention_ns >= 0),
			single_user      INTEGER NOT NULL CHECK (single_user IN (0, 1)),
			policy           TEXT    NOT NULL, -- '' when none
			updated          INTEGER NOT NULL
		) STRICT`,

		// Like key_events: rows are only ever added, id orders events of
		// the same time.
		`CREATE TABLE vault_events (
			id        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
			vault     BLOB    NOT NULL REFERENCES vaults (id),
			time      INTEGER NOT NULL,
			principal TEXT    NOT NULL,
			event     TEXT    NOT NULL CHECK (event <> ''),
			detail    TEXT    NOT NULL,
			ok        INTEGER NOT NULL CHECK (ok IN (0, 1))
		) STRICT`,
		`CREATE INDEX vault_events_by_time ON vault_events (vault, time, id)`,

		// Writers working on a vault; a row lives from the start of a
		// backup to its end (or until a dead writer's row is cleared).
		`CREATE TABLE sessions (
			id        TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
			vault     BLOB    NOT NULL REFERENCES vaults (id),
			kind      TEXT    NOT NULL,
			principal TEXT    NOT NULL,
			started   INTEGER NOT NULL,
			touched   INTEGER NOT NULL
		) STRICT`,
		`CREATE INDEX sessions_by_vault ON sessions (vault, started, id)`,

		// Multi-user authorization requests. vault is NULL for a
		// server-wide change, params NULL when there are none. decided is
		// set exactly when the request has left pending; decider may stay
		// NULL (a request that expired by itself).
		`CREATE TABLE requests (
			id        TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
			vault     BLOB             REFERENCES vaults (id),
			op        TEXT    NOT NULL CHECK (op <> ''),
			params    TEXT             CHECK (json_valid(params)),
			summary   TEXT    NOT NULL,
			requester TEXT    NOT NULL,
			created   INTEGER NOT NULL,
			expires   INTEGER NOT NULL,
			state     TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'expired')),
			decider   TEXT,
			decided   INTEGER,
			CHECK ((state = 'pending') = (decided IS NULL)),
			CHECK (decided IS NOT NULL OR decider IS NULL)
		) STRICT`,
		`CREATE INDEX requests_by_created ON requests (created, id)`,
	},
	// 5: deleted vaults. A vault's row stays when it is deleted, so that
	// its event trails keep their vault; its name stays taken.
	{
		`ALTER TABLE vaults ADD COLUMN deleted INTEGER`, // NULL: not deleted
	},
	// 6: principals (users and agents) and their role assignments; tokens
	// issued to a principal (principals.go).
	migrationPrincipals,
	// 7: the tamper-evident audit log: entries, their tree hashes and
	// signed checkpoints (audit.go, docs/audit.md).
	migrationAudit,
	// 8: keyring anchors (keyring.go, docs/format.md §7.3).
	migrationKeyAnchors,
	// 9: format 2's snapshot chain and sealed pack headers (chain.go,
	// docs/format.md §4.1, §8.1).
	migrationChain,
	// 10: who set a principal's password (principals.go).
	migrationPasswordBy,
	// 11: dedup domains (docs/format.md §1.3): each snapshot's domain
	// ('' for the vault-wide one) and each vault's dedup scope.
	{
		`ALTER TABLE snapshots ADD COLUMN domain TEXT NOT NULL DEFAULT '' CHECK (length(domain) <= 64)`,
		`ALTER TABLE vault_settings ADD COLUMN dedup_scope TEXT NOT NULL DEFAULT 'vault' CHECK (dedup_scope IN ('vault', 'source'))`,
	},
	// 12: settings entries in the snapshot chain (kind 7, docs/format.md
	// §8.4); SQLite cannot alter a CHECK, so the table is rebuilt.
	migrationChainSettings,
	// 13: copied snapshots (docs/format.md §8.6): source vault ID (32),
	// original snapshot ID (32) and original time (i64, little-endian).
	{
		`ALTER TABLE snapshots ADD COLUMN copy BLOB CHECK (copy IS NULL OR length(copy) = 72)`,
	},
	// 14: the packs' lookup keys, by which a reader finds a blob without
	// loading the index (packkeys.go, docs/format.md §4.2).
	migrationPackKeys,
	// 15: recover entries in the snapshot chain (kind 8, docs/format.md
	// §8.8); the table is rebuilt again for its CHECK.
	migrationChainRecover,
	// 16: the packs that lack a sealed header copy or lookup keys, so
	// that opening a vault finds them without reading every pack
	// (packkeys.go).
	migrationUnindexed,
}

// currentVersion is the catalog schema version this code reads and writes.
var currentVersion = len(migrations)

// ErrNewerSchema is returned by Open for a catalog written by a newer
// version of Coffer.
var ErrNewerSchema = errors.New("catalog schema too new")

// schemaVersion returns the version recorded in the catalog, 0 for a new
// file.
func schemaVersion(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'`).Scan(&n)
	if err != nil || n == 0 {
		return 0, err
	}
	var v int
	err = q.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

func checkVersion(v int) error {
	if v > currentVersion {
		return fmt.Errorf("%w: version %d, this coffer supports up to %d; upgrade coffer", ErrNewerSchema, v, currentVersion)
	}
	return nil
}

// migrate brings the schema up to currentVersion in one write transaction,
// so that concurrent Opens of a new file agree and a failed migration
// leaves nothing behind.
func (c *Catalog) migrate(ctx context.Context) error {
	// Fast path: no write lock when the schema is current.
	v, err := schemaVersion(ctx, c.db)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if err := checkVersion(v); err != nil {
		return err
	}
	if v == currentVersion {
		return nil
	}
	return c.write(ctx, func(tx *sql.Tx) error {
		// Again, under the write lock: another process may have migrated.
		v, err := schemaVersion(ctx, tx)
		if err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if err := checkVersion(v); err != nil {
			return err
		}
		if v == 0 {
			_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
				one     INTEGER NOT NULL PRIMARY KEY CHECK (one = 1),
				version INTEGER NOT NULL
			) STRICT`)
			if err != nil {
				return fmt.Errorf("create schema_version: %w", err)
			}
		}
		for i := v; i < currentVersion; i++ {
			for _, stmt := range migrations[i] {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
				}
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO schema_version (one, version) VALUES (1, ?)
			ON CONFLICT (one) DO UPDATE SET version = excluded.version`, currentVersion)
		if err != nil {
			return fmt.Errorf("record schema version: %w", err)
		}
		return nil
	})
}
