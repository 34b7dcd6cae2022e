package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/catalog"
	"github.com/coffer-backup/coffer/internal/vault"
)

// AddPrincipal implements vault.Catalog. Names are unique without regard
// to ASCII case (a unique index on the folded name), and no name equals
// another's ID: that check runs in the write transaction under an
// advisory lock, so two concurrent adds, on any replicas, cannot both
// pass it.
func (c *Catalog) AddPrincipal(ctx context.Context, p vault.Principal) error {
	created, err := catalog.UnixNano(p.Created)
	if err != nil {
		return fmt.Errorf("add principal %q: %w", p.Name, err)
	}
	err = c.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+lockKey+`)`, "principals"); err != nil {
			return err
		}
		var n int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM principals
			WHERE coffer_ascii_lower(name) = coffer_ascii_lower($1) OR coffer_ascii_lower(id) = coffer_ascii_lower($1)
				OR coffer_ascii_lower(name) = coffer_ascii_lower($2) OR id = $2`, p.Name, p.ID).Scan(&n)
		if err != nil {
			return err
		}
		if n > 0 {
			return vault.ErrExists
		}
		_, err = tx.Exec(ctx, `INSERT INTO principals (id, name, kind, password, created, created_by, password_by) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
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
	rows, err := c.pool.Query(ctx, `SELECT `+principalColumns+` FROM principals WHERE coffer_ascii_lower(name) = coffer_ascii_lower($1) ORDER BY name`, name)
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
	p, err := catalog.ScanPrincipal(c.pool.QueryRow(ctx, `SELECT `+principalColumns+` FROM principals WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return p, fmt.Errorf("principal %s: %w", id, vault.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("principal %s: %w", id, err)
	}
	return p, nil
}

// SetPassword implements vault.Catalog.
func (c *Catalog) SetPassword(ctx context.Context, id, hash, by string) error {
	err := c.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE principals SET password = $1, password_by = $2 WHERE id = $3`, hash, by, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
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
	rows, err := c.pool.Query(ctx, `SELECT `+principalColumns+` FROM principals ORDER BY name`)
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
	err = c.write(ctx, func(tx pgx.Tx) error {
		if a.Vault != "" {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM vaults WHERE name = $1 AND deleted IS NULL`, a.Vault).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("vault %q: %w", a.Vault, vault.ErrNotFound)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO role_assignments (principal, role, vault, created, created_by) VALUES ($1, $2, $3, $4, $5)`,
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
	err := c.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM role_assignments WHERE principal = $1 AND role = $2 AND vault = $3`, principal, role, vaultName)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
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
		q += ` WHERE principal = $1`
		args = append(args, principal)
	}
	rows, err := c.pool.Query(ctx, q+` ORDER BY principal, role, vault`, args...)
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
