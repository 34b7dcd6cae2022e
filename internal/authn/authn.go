package authn

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Sentinel errors; the server maps them to HTTP status codes.
var (
	// ErrUnauthenticated (401): the request carries no usable token:
	// none, a malformed one, or one that is unknown, expired or revoked.
	// The error says which of these three, never whether the token exists.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden (403): the token is valid but does not allow the
	// request.
	ErrForbidden = errors.New("forbidden")
)

// TokenLookup is the part of vault.Catalog authentication needs.
type TokenLookup interface {
	TokenByHash(ctx context.Context, hash [32]byte) (vault.TokenRecord, error)
}

// Authenticator checks bearer tokens against the catalog. It keeps no
// cache: every request looks its token up, so a revocation takes effect
// with the next request.
type Authenticator struct {
	Catalog TokenLookup
	Now     func() time.Time // the clock expiry is judged by; must be set
}

const bearerScheme = "Bearer "

// Authenticate returns the token record of the Authorization header value
// header ("Bearer cft_…"). It fails with ErrUnauthenticated when the
// header is empty, is not a well-formed bearer token, or the token is
// unknown, revoked (at any recorded time) or expired (Now at or after
// Expires). A catalog failure is returned as is, not as ErrUnauthenticated:
// the request fails without blaming its token.
func (a *Authenticator) Authenticate(ctx context.Context, header string) (vault.TokenRecord, error) {
	if a.Now == nil {
		panic("authn: Authenticator.Now is nil")
	}
	if header == "" {
		return vault.TokenRecord{}, fmt.Errorf("%w: no bearer token: send the header Authorization: Bearer <token>", ErrUnauthenticated)
	}
	// The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
	if len(header) < len(bearerScheme) || !strings.EqualFold(header[:len(bearerScheme)], bearerScheme) {
		return vault.TokenRecord{}, fmt.Errorf("%w: the Authorization header is not a bearer token", ErrUnauthenticated)
	}
	hash, err := ParseToken(header[len(bearerScheme):])
	if err != nil {
		return vault.TokenRecord{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	// One message for unknown, revoked and expired: a client learns
	// nothing about tokens it does not hold.
	rejected := fmt.Errorf("%w: bearer token unknown, expired or revoked: ask the server owner for a new one", ErrUnauthenticated)
	tok, err := a.Catalog.TokenByHash(ctx, hash)
	if errors.Is(err, vault.ErrNotFound) {
		return vault.TokenRecord{}, rejected
	}
	if err != nil {
		return vault.TokenRecord{}, fmt.Errorf("look up bearer token: %w", err)
	}
	// The catalog found the row by this hash already; compare again, in
	// constant time, so that a catalog that matched loosely (a prefix, a
	// collation) or returned the wrong row cannot let another token in,
	// and no comparison here leaks how much of a hash matched.
	if subtle.ConstantTimeCompare(tok.Hash[:], hash[:]) != 1 {
		return vault.TokenRecord{}, rejected
	}
	// Any recorded revocation counts, even one with a time ahead of this
	// clock (another host's clock may run ahead): revocation is immediate.
	if !tok.Revoked.IsZero() {
		return vault.TokenRecord{}, rejected
	}
	if !tok.Expires.IsZero() && !a.Now().Before(tok.Expires) {
		return vault.TokenRecord{}, rejected
	}
	return tok, nil
}

// Authorize reports whether tok, already authenticated, grants p on the
// vault named vaultName, and fails with ErrForbidden if not:
//
//   - A server-wide permission (vault creation, token management,
//     metrics) needs a server-wide token whose role has it; vaultName is
//     ignored.
//   - Any other permission needs a vaultName and a role that has it: a
//     server-wide token (owner) may use it on every vault, a vault token
//     only on its own (vaultName equal to tok.Vault, exactly).
//   - A token whose role is unknown, or whose scope does not fit its role
//     (an owner token naming a vault, a backup-reader token naming none),
//     authorizes nothing.
//
// A token issued to a principal (role "principal") is authorized by
// AuthorizeGrants with the principal's role assignments instead.
// Callers authorize before looking the vault up, so that a 403 or 404
// tells a token nothing about vaults it may not use.
func Authorize(tok vault.TokenRecord, p Permission, vaultName string) error {
	if allowed(tok, p, vaultName) {
		return nil
	}
	scope := "server-wide"
	if tok.Vault != "" {
		scope = fmt.Sprintf("vault %q", tok.Vault)
	}
	return fmt.Errorf("%w: token %s (role %q, %s) lacks permission %s on %s; ask the server owner for a token whose role grants it",
		ErrForbidden, tok.ID, tok.Role, scope, p, target(p, vaultName))
}

func target(p Permission, vaultName string) string {
	if serverWidePerm(p) {
		return "the server"
	}
	return fmt.Sprintf("vault %q", vaultName)
}

func allowed(tok vault.TokenRecord, p Permission, vaultName string) bool {
	role := Role(tok.Role)
	if role == RolePrincipal || CheckScope(role, tok.Vault) != nil {
		return false
	}
	return grantAllows(Grant{Role: role, Vault: tok.Vault}, p, vaultName)
}

// AuthorizeGrants reports whether any of grants (a principal's role
// assignments) allows p on vaultName; who names the principal in the
// error. Deny by default: no grant, no access.
func AuthorizeGrants(who string, grants []Grant, p Permission, vaultName string) error {
	for _, g := range grants {
		if CheckAssignment(g.Role, g.Vault) == nil && grantAllows(g, p, vaultName) {
			return nil
		}
	}
	roles := make([]string, len(grants))
	for i, g := range grants {
		roles[i] = string(g.Role)
		if g.Vault != "" {
			roles[i] += " on " + g.Vault
		}
	}
	held := "no roles"
	if len(roles) > 0 {
		held = "roles " + strings.Join(roles, ", ")
	}
	return fmt.Errorf("%w: %s (%s) lacks permission %s on %s; ask an owner to assign a role that grants it",
		ErrForbidden, who, held, p, target(p, vaultName))
}

// Access is what a token may do now: the grants it carries, narrowed by
// the grants of each token up the chain that issued it (its issuer, the
// issuer's issuer, …). A token can never do more than every token before
// it can do now: a permission is allowed only when Grants allows it and so
// does each of Limits. The server builds it for every request; a token
// made on the server machine or by a principal's own login has no Limits.
type Access struct {
	Grants []Grant
	Limits [][]Grant
}

// RoleGrants returns the grant of a token carrying role on vaultName
// itself, or none when the pair does not fit (CheckScope): such a token
// authorizes nothing.
func RoleGrants(role Role, vaultName string) []Grant {
	if role == RolePrincipal || CheckScope(role, vaultName) != nil {
		return nil
	}
	return []Grant{{Role: role, Vault: vaultName}}
}

// Allows reports whether a allows p on vaultName.
func (a Access) Allows(p Permission, vaultName string) bool {
	if !grantsAllow(a.Grants, p, vaultName) {
		return false
	}
	for _, l := range a.Limits {
		if !grantsAllow(l, p, vaultName) {
			return false
		}
	}
	return true
}

func grantsAllow(grants []Grant, p Permission, vaultName string) bool {
	for _, g := range grants {
		if CheckAssignment(g.Role, g.Vault) == nil && grantAllows(g, p, vaultName) {
			return true
		}
	}
	return false
}

// Covers reports whether a allows everything g grants: each permission of
// g's role on g's whole scope, every vault when g.Vault is "". Whoever
// issues a token checks that the issuing token's Access covers each grant
// the new token would carry.
func (a Access) Covers(g Grant) bool {
	if CheckAssignment(g.Role, g.Vault) != nil {
		return false
	}
	for _, layer := range append([][]Grant{a.Grants}, a.Limits...) {
		for _, p := range rolePerms[g.Role] {
			if !layerCovers(layer, p, g.Vault) {
				return false
			}
		}
	}
	return true
}

// layerCovers reports whether grants allow p on vaultName, or on every
// vault when vaultName is "" and p is a vault permission.
func layerCovers(grants []Grant, p Permission, vaultName string) bool {
	if serverWidePerm(p) || vaultName != "" {
		return grantsAllow(grants, p, vaultName)
	}
	for _, g := range grants {
		if g.Vault == "" && CheckAssignment(g.Role, "") == nil && Allows(g.Role, p) {
			return true
		}
	}
	return false
}

// AuthorizeAccess reports whether a allows p on vaultName, and fails with
// ErrForbidden if not; who names the token in the error.
func AuthorizeAccess(who string, a Access, p Permission, vaultName string) error {
	if err := AuthorizeGrants(who, a.Grants, p, vaultName); err != nil {
		return err
	}
	if a.Allows(p, vaultName) {
		return nil
	}
	return fmt.Errorf("%w: %s holds permission %s on %s, but the token that issued this one (or one before it) does not any more, and a token never does more than its issuer; ask someone who holds it for a new token",
		ErrForbidden, who, p, target(p, vaultName))
}
