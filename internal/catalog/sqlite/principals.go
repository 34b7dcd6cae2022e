package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

// migrationPrincipals is the schema step that adds principals and role
// assignments (docs/security.md): tokens may then be issued to a
// principal and act with its roles.
var migrationPrincipals = []string{
	`CREATE TABLE principals (
		id         TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
		name       TEXT    NOT NULL UNIQUE CHECK (name <> ''),
		kind       TEXT    NOT NULL CHECK (kind IN ('user', 'agent')),
		password   TEXT    NOT NULL,   -- '' when none
		created    INTEGER NOT NULL,
		created_by TEXT    NOT NULL
	) STRICT`,
	`CREATE TABLE role_assignments (
		principal  TEXT    NOT NULL REFERENCES principals (id),
		role       TEXT    NOT NULL CHECK (role <> ''),
		vault      TEXT    NOT NULL,   -- '' for server-wide
		created    INTEGER NOT NULL,
		created_by TEXT    NOT NULL,
		PRIMARY KEY (principal, role, vault)
	) STRICT, WITHOUT ROWID`,
	`ALTER TABLE tokens ADD COLUMN principal TEXT REFERENCES principals (id)`,
}

// migrationPasswordBy is the schema step that records who set a
// principal's password: ” through the API (or not known), or
// 'server-machine'. An approver's login approves only with the latter.
var migrationPasswordBy = []string{
	`ALTER TABLE principals ADD COLUMN password_by TEXT NOT NULL DEFAULT ''`,
}

// AddPrincipal implements vault.Catalog. Names are unique without regard
// to ASCII case (SQLite's NOCASE), and no name equals another's ID: the
// check runs in the write transaction, so two concurrent adds cannot both
// pass it. It is not a UNIQUE index, because a catalog written before
// this rule may already hold names that differ only in case, and opening
// it must not fail.
func (c *Catalog) AddPrincipal(ctx context.Context, p vault.Principal) error {
	created, err := catalog.UnixNano(p.Created)
	if err != nil {
		return fmt.Errorf("add principal %q: %w", p.Name, err)
	}
	err = c.write(ctx, func(tx *sql.Tx) error {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM principals
			WHERE name = ?1 COLLATE NOCASE OR id = ?1 COLLATE NOCASE OR name = ?2 COLLATE NOCASE OR id = ?2`, p.Name, p.ID).Scan(&n)
		if err != nil {
			return err
		}
		if n > 0 {
			return vault.ErrExists
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO principals (id, name, kind, password, created, created_by, password_by) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			p.ID, p.Name, p.Kind, p.Password, created, p.CreatedBy, p.PasswordBy)
		return err
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vault.ErrExists) || isDuplicate(err):
		return fmt.Errorf("add principal %q: the name (in any case) or the ID is taken: %w", p.Name, vault.ErrExists)
	}
	return fmt.Errorf("add principal %q: %w", p.Name, err)
}

const principalColumns = catalog.PrincipalColumns

// Principal implements vault.Catalog: by name only, without regard to
// ASCII case; an exact spelling wins over case variants an older catalog
// may hold.
func (c *Catalog) Principal(ctx context.Context, name string) (vault.Principal, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+principalColumns+` FROM principals WHERE name = ? COLLATE NOCASE ORDER BY name`, name)
	if err != nil {
		return vault.Principal{}, fmt.Errorf("principal %q: %w", name, err)
	}
	defer rows.Close()
	var found []vault.Principal
	for rows.Next() {
		p, err := catalog.ScanPrincipal(rows)
		if err != nil {
			return vault.Principal{}, fmt.Errorf("principal %q: %w", name, err)
		}
		found = append(found, p)
	}
	if err := rows.Err(); err != nil {
		return vault.Principal{}, fmt.Errorf("principal %q: %w", name, err)
	}
	return catalog.PickPrincipal(name, found)
}

// PrincipalByID implements vault.Catalog.
func (c *Catalog) PrincipalByID(ctx context.Context, id string) (vault.Principal, error) {
	p, err := catalog.ScanPrincipal(c.queryRow(ctx, `SELECT `+principalColumns+` FROM principals WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("principal %s: %w", id, vault.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("principal %s: %w", id, err)
	}
	return p, nil
}

// SetPassword implements vault.Catalog.
func (c *Catalog) SetPassword(ctx context.Context, id, hash, by string) error {
	err := c.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE principals SET password = ?, password_by = ? WHERE id = ?`, hash, by, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return vault.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set password of principal %s: %w", id, err)
	}
	return nil
}

// Principals implements vault.Catalog.
func (c *Catalog) Principals(ctx context.Context) ([]vault.Principal, error) {
	rows, err := c.query(ctx, `SELECT `+principalColumns+` FROM principals ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list principals: %w", err)
	}
	defer rows.Close()
	var out []vault.Principal
	for rows.Next() {
		p, err := catalog.ScanPrincipal(rows)
		if err != nil {
			return nil, fmt.Errorf("list principals: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// AssignRole implements vault.Catalog.
func (c *Catalog) AssignRole(ctx context.Context, a vault.RoleAssignment) error {
	created, err := catalog.UnixNano(a.Created)
	if err != nil {
		return fmt.Errorf("assign role %s: %w", a.Role, err)
	}
	err = c.write(ctx, func(tx *sql.Tx) error {
		if a.Vault != "" {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM vaults WHERE name = ? AND deleted IS NULL`, a.Vault).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("vault %q: %w", a.Vault, vault.ErrNotFound)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO role_assignments (principal, role, vault, created, created_by) VALUES (?, ?, ?, ?, ?)`,
			a.Principal, a.Role, a.Vault, created, a.CreatedBy)
		return err
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vault.ErrNotFound):
		return fmt.Errorf("assign role %s: %w", a.Role, err)
	case isMissingVault(err):
		return fmt.Errorf("assign role %s: principal %s: %w", a.Role, a.Principal, vault.ErrNotFound)
	case isDuplicate(err):
		return fmt.Errorf("assign role %s: %w", a.Role, vault.ErrExists)
	}
	return fmt.Errorf("assign role %s: %w", a.Role, err)
}

// RevokeRole implements vault.Catalog.
func (c *Catalog) RevokeRole(ctx context.Context, principal, role, vaultName string) error {
	err := c.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM role_assignments WHERE principal = ? AND role = ? AND vault = ?`, principal, role, vaultName)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return vault.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke role %s of %s: %w", role, principal, err)
	}
	return nil
}

// RoleAssignments implements vault.Catalog.
func (c *Catalog) RoleAssignments(ctx context.Context, principal string) ([]vault.RoleAssignment, error) {
	q := `SELECT principal, role, vault, created, created_by FROM role_assignments`
	var args []any
	if principal != "" {
		q += ` WHERE principal = ?`
		args = append(args, principal)
	}
	rows, err := c.query(ctx, q+` ORDER BY principal, role, vault`, args...)
	if err != nil {
		return nil, fmt.Errorf("list role assignments: %w", err)
	}
	defer rows.Close()
	var out []vault.RoleAssignment
	for rows.Next() {
		var a vault.RoleAssignment
		var created int64
		if err := rows.Scan(&a.Principal, &a.Role, &a.Vault, &created, &a.CreatedBy); err != nil {
			return nil, fmt.Errorf("list role assignments: %w", err)
		}
		a.Created = catalog.FromUnixNano(created)
		out = append(out, a)
	}
	return out, rows.Err()
}
