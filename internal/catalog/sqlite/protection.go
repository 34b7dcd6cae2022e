package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file holds the deletion-protection part of the catalog
// (docs/retention.md): soft-deleted snapshots, condemned packs, vault
// settings, the vault event trail, writer sessions and multi-user
// authorization requests.

// isCheck reports whether err is a CHECK constraint violation: a value
// outside what the schema stores.
func isCheck(err error) bool {
	return constraint(err) == sqlite3.SQLITE_CONSTRAINT_CHECK
}

// update runs one statement in a write transaction and returns the number
// of rows it changed.
func (c *Catalog) update(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := c.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// RemoveSnapshot deletes snapshot id of vault; ErrNotFound if there is
// none.
func (c *Catalog) RemoveSnapshot(ctx context.Context, vaultID, id vault.ID) error {
	n, err := c.update(ctx, `DELETE FROM snapshots WHERE vault = ? AND id = ?`, vaultID[:], id[:])
	if err != nil {
		return fmt.Errorf("remove snapshot %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("remove snapshot %s: %w", id, vault.ErrNotFound)
	}
	return nil
}

// SetSnapshotDeleted records that snapshot id of vault was soft-deleted
// at at by by, replacing an earlier soft deletion, or, for a zero at,
// clears both (undelete); ErrNotFound if there is no such snapshot.
func (c *Catalog) SetSnapshotDeleted(ctx context.Context, vaultID, id vault.ID, at time.Time, by string) error {
	what := "soft-delete"
	if at.IsZero() {
		what, by = "undelete", ""
	}
	deleted, err := catalog.NullUnixNano(at)
	if err != nil {
		return fmt.Errorf("%s snapshot %s: %w", what, id, err)
	}
	n, err := c.update(ctx, `UPDATE snapshots SET deleted = ?, deleted_by = ? WHERE vault = ? AND id = ?`,
		deleted, catalog.NullString(by), vaultID[:], id[:])
	if err != nil {
		return fmt.Errorf("%s snapshot %s: %w", what, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%s snapshot %s: %w", what, id, vault.ErrNotFound)
	}
	return nil
}

// CondemnPack records that pack id of vault is unused since at,
// replacing an earlier time, or, for a zero at, that it is in use again;
// ErrNotFound if there is no such pack.
func (c *Catalog) CondemnPack(ctx context.Context, vaultID, id vault.ID, at time.Time) error {
	what := "condemn"
	if at.IsZero() {
		what = "uncondemn"
	}
	condemned, err := catalog.NullUnixNano(at)
	if err != nil {
		return fmt.Errorf("%s pack %s: %w", what, id, err)
	}
	n, err := c.update(ctx, `UPDATE packs SET condemned = ? WHERE vault = ? AND id = ?`, condemned, vaultID[:], id[:])
	if err != nil {
		return fmt.Errorf("%s pack %s: %w", what, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%s pack %s: %w", what, id, vault.ErrNotFound)
	}
	return nil
}

// RemovePack deletes pack id of vault and its blobs in one transaction;
// ErrNotFound if there is no such pack.
func (c *Catalog) RemovePack(ctx context.Context, vaultID, id vault.ID) error {
	err := c.write(ctx, func(tx *sql.Tx) error {
		// Blobs and keys first: they reference the pack.
		if err := deleteKeys(ctx, tx, vaultID, id, false); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM blobs WHERE vault = ? AND pack = ?`, vaultID[:], id[:]); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM unindexed_packs WHERE vault = ? AND pack = ?`, vaultID[:], id[:]); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM packs WHERE vault = ? AND id = ?`, vaultID[:], id[:])
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return vault.ErrNotFound // rolls back; there were no blobs either
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove pack %s: %w", id, err)
	}
	return nil
}

// Settings returns vault's deletion-protection settings, the defaults
// (with a zero Updated) if it never set any; ErrNotFound if there is no
// such vault.
func (c *Catalog) Settings(ctx context.Context, vaultID vault.ID) (vault.VaultSettings, error) {
	return readSettings(ctx, c.db, vaultID)
}

// readSettings is Settings through q (a connection inside a read
// transaction, for SettingsChain).
func readSettings(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, vaultID vault.ID) (vault.VaultSettings, error) {
	// One query, so that the vault's existence and its settings are read
	// from the same snapshot of the catalog.
	s, err := catalog.ScanSettings(q.QueryRowContext(ctx, `SELECT `+catalog.SettingsColumns+`
		FROM vaults v LEFT JOIN vault_settings s ON s.vault = v.id WHERE v.id = ?`, vaultID[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return vault.VaultSettings{}, fmt.Errorf("settings of vault %s: %w", vaultID, vault.ErrNotFound)
	}
	if err != nil {
		return vault.VaultSettings{}, fmt.Errorf("settings of vault %s: %w", vaultID, err)
	}
	return s, nil
}

// SetSettings replaces vault's settings; ErrNotFound if there is no such
// vault. It judges nothing but what the schema can store (known
// soft-delete and immutability values, a soft-delete period of 14 to 180
// days, a minimum retention of zero or more); whether a change is allowed
// is the caller's business. s.Updated must be set.
func (c *Catalog) SetSettings(ctx context.Context, vaultID vault.ID, s vault.VaultSettings) error {
	return c.write(ctx, func(tx *sql.Tx) error { return setSettings(ctx, tx, vaultID, s) })
}

// setSettings is SetSettings inside tx (AppendChain writes the settings
// of a settings entry in its own transaction).
func setSettings(ctx context.Context, tx *sql.Tx, vaultID vault.ID, s vault.VaultSettings) error {
	args, err := catalog.SettingsArgs(vaultID, s)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO vault_settings (`+catalog.SettingsInsertColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (vault) DO UPDATE SET
			soft_delete = excluded.soft_delete, soft_delete_days = excluded.soft_delete_days,
			immutability = excluded.immutability, min_retention_ns = excluded.min_retention_ns,
			single_user = excluded.single_user, policy = excluded.policy, updated = excluded.updated,
			dedup_scope = excluded.dedup_scope`, args...)
	switch {
	case err == nil:
		return nil
	case isMissingVault(err):
		return fmt.Errorf("set settings of vault %s: %w", vaultID, vault.ErrNotFound)
	case isCheck(err):
		return catalog.InvalidSettings(vaultID, s, err)
	}
	return fmt.Errorf("set settings of vault %s: %w", vaultID, err)
}

// AddEvent appends e to the event trail of its vault; ErrNotFound if the
// vault is not recorded.
func (c *Catalog) AddEvent(ctx context.Context, e vault.VaultEvent) error {
	args, err := catalog.VaultEventArgs(e)
	if err != nil {
		return err
	}
	_, err = c.update(ctx, `INSERT INTO vault_events (`+catalog.VaultEventInsertColumns+`) VALUES (?, ?, ?, ?, ?, ?)`, args...)
	switch {
	case err == nil:
		return nil
	case isMissingVault(err):
		return fmt.Errorf("add vault event %s: vault %s: %w", e.Event, e.Vault, vault.ErrNotFound)
	}
	return fmt.Errorf("add vault event %s: %w", e.Event, err)
}

const vaultEventColumns = catalog.VaultEventColumns

// Events returns the event trail of vault, oldest first (by time, then in
// the order the events were added); none for an unknown vault.
func (c *Catalog) Events(ctx context.Context, vaultID vault.ID) ([]vault.VaultEvent, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+vaultEventColumns+` FROM vault_events WHERE vault = ? ORDER BY time, id`, vaultID[:])
	if err != nil {
		return nil, fmt.Errorf("list vault events: %w", err)
	}
	defer rows.Close()
	es, err := catalog.Collect(rows, func(r catalog.Scanner) (vault.VaultEvent, error) { return catalog.ScanVaultEvent(r, vaultID) })
	if err != nil {
		return nil, fmt.Errorf("list vault events: %w", err)
	}
	return es, nil
}

// BeginSession records session s of a writer working on vault; ErrExists
// if s.ID is taken, ErrNotFound if the vault is not recorded. A zero
// s.Touched is recorded as s.Started.
func (c *Catalog) BeginSession(ctx context.Context, vaultID vault.ID, s vault.Session) error {
	args, err := catalog.SessionArgs(vaultID, s)
	if err != nil {
		return err
	}
	_, err = c.update(ctx, `INSERT INTO sessions (`+catalog.SessionInsertColumns+`) VALUES (?, ?, ?, ?, ?, ?)`, args...)
	switch {
	case err == nil:
		return nil
	case isMissingVault(err):
		return fmt.Errorf("begin session %s: vault %s: %w", s.ID, vaultID, vault.ErrNotFound)
	case isDuplicate(err):
		return fmt.Errorf("begin session %s: %w", s.ID, vault.ErrExists)
	}
	return fmt.Errorf("begin session %s: %w", s.ID, err)
}

// TouchSession records that session id was alive at at; ErrNotFound if
// there is no such session (it ended, or was cleared as dead).
func (c *Catalog) TouchSession(ctx context.Context, id string, at time.Time) error {
	touched, err := catalog.UnixNano(at)
	if err != nil {
		return fmt.Errorf("touch session %s: %w", id, err)
	}
	n, err := c.update(ctx, `UPDATE sessions SET touched = ? WHERE id = ?`, touched, id)
	if err != nil {
		return fmt.Errorf("touch session %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("touch session %s: %w", id, vault.ErrNotFound)
	}
	return nil
}

// EndSession removes session id; ending an unknown session succeeds.
func (c *Catalog) EndSession(ctx context.Context, id string) error {
	if _, err := c.update(ctx, `DELETE FROM sessions WHERE id = ?`, id); err != nil {
		return fmt.Errorf("end session %s: %w", id, err)
	}
	return nil
}

const sessionColumns = catalog.SessionColumns

// Sessions returns vault's sessions, oldest first (by start, then ID);
// none for an unknown vault.
func (c *Catalog) Sessions(ctx context.Context, vaultID vault.ID) ([]vault.Session, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE vault = ? ORDER BY started, id`, vaultID[:])
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	ss, err := catalog.Collect(rows, catalog.ScanSession)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return ss, nil
}

// AddRequest records request r; ErrExists if its ID is taken, ErrNotFound
// if r.Vault is not zero and names no vault. ID, Op, Created, Expires and
// State must be set; Params is JSON or "". Decided must be set exactly
// when State is not pending.
func (c *Catalog) AddRequest(ctx context.Context, r vault.Request) error {
	args, err := catalog.RequestArgs(r)
	if err != nil {
		return err
	}
	_, err = c.update(ctx, `INSERT INTO requests (`+catalog.RequestInsertColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
	switch {
	case err == nil:
		return nil
	case isMissingVault(err):
		return fmt.Errorf("add request %s: vault %s: %w", r.ID, r.Vault, vault.ErrNotFound)
	case isDuplicate(err):
		return fmt.Errorf("add request %s: %w", r.ID, vault.ErrExists)
	case isCheck(err):
		return catalog.InvalidRequest(r, err)
	}
	return fmt.Errorf("add request %s: %w", r.ID, err)
}

const requestColumns = catalog.RequestColumns

// Request returns request id, or ErrNotFound.
func (c *Catalog) Request(ctx context.Context, id string) (vault.Request, error) {
	r, err := catalog.ScanRequest(c.db.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return vault.Request{}, fmt.Errorf("request %s: %w", id, vault.ErrNotFound)
	}
	if err != nil {
		return vault.Request{}, fmt.Errorf("request %s: %w", id, err)
	}
	return r, nil
}

// Requests returns every request, oldest first (by creation, then ID).
func (c *Catalog) Requests(ctx context.Context) ([]vault.Request, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+requestColumns+` FROM requests ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	defer rows.Close()
	rs, err := catalog.Collect(rows, catalog.ScanRequest)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	return rs, nil
}

// DecideRequest moves request id from pending to state (approved,
// rejected or expired), recording by and at; ErrNotFound if there is no
// such request, ErrConflict if it is not pending. The check and the
// change are one write transaction, and write transactions of all
// processes are serialized (BEGIN IMMEDIATE), so of two deciders exactly
// one succeeds.
func (c *Catalog) DecideRequest(ctx context.Context, id string, state vault.RequestState, by string, at time.Time) error {
	decided, err := catalog.Decision(id, state, at)
	if err != nil {
		return err
	}
	err = c.write(ctx, func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, `SELECT state FROM requests WHERE id = ?`, id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return vault.ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := catalog.Pending(cur); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE requests SET state = ?, decider = ?, decided = ? WHERE id = ?`,
			string(state), catalog.NullString(by), decided, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("decide request %s: %w", id, err)
	}
	return nil
}
