package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/vault"
)

var principalNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// grantsOf returns what a token may do: its own role, or its principal's
// role assignments; who names it for messages and trails.
func (s *Server) grantsOf(ctx context.Context, tok vault.TokenRecord) (grants []authn.Grant, who string, err error) {
	if authn.Role(tok.Role) != authn.RolePrincipal {
		who = "token:" + tok.ID
		if tok.Name != "" {
			who += " (" + tok.Name + ")"
		}
		return []authn.Grant{{Role: authn.Role(tok.Role), Vault: tok.Vault}}, who, nil
	}
	p, err := s.cat.Principal(ctx, tok.Principal)
	if err != nil {
		return nil, "", fmt.Errorf("principal of token %s: %w", tok.ID, err)
	}
	as, err := s.cat.RoleAssignments(ctx, p.ID)
	if err != nil {
		return nil, "", err
	}
	for _, a := range as {
		grants = append(grants, authn.Grant{Role: authn.Role(a.Role), Vault: a.Vault})
	}
	return grants, p.Kind + ":" + p.Name, nil
}

func newPrincipalID(kind string) string {
	var b [8]byte
	rand.Read(b[:])
	prefix := "usr_"
	if kind == "agent" {
		prefix = "agt_"
	}
	return prefix + hex.EncodeToString(b[:])
}

func (s *Server) createPrincipal(q *request) error {
	var body api.CreatePrincipal
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	if !principalNameRE.MatchString(body.Name) {
		return fmt.Errorf("%w: principal name %q: use 1-64 letters, digits, '.', '_', '@' or '-'", api.ErrBadRequest, body.Name)
	}
	if body.Kind == "" {
		body.Kind = "user"
	}
	q.note("name", body.Name)
	q.note("kind", body.Kind)
	q.note("has_password", fmt.Sprint(body.Password != ""))
	if body.Kind != "user" && body.Kind != "agent" {
		return fmt.Errorf("%w: kind %q: want user or agent", api.ErrBadRequest, body.Kind)
	}
	p := vault.Principal{ID: newPrincipalID(body.Kind), Name: body.Name, Kind: body.Kind, Created: s.opt.Now().UTC(), CreatedBy: q.principal()}
	if body.Password != "" {
		release, err := s.passwordSlot(q)
		if err != nil {
			return err
		}
		h, err := authn.HashPassword(body.Password)
		release()
		if err != nil {
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		p.Password = h
	}
	if err := s.cat.AddPrincipal(q.ctx, p); err != nil {
		return err
	}
	q.log.Info("principal created", "principal", p.Name, "kind", p.Kind, "by", q.principal())
	writeJSON(q.w, http.StatusCreated, principalInfo(p, nil))
	return nil
}

func principalInfo(p vault.Principal, as []vault.RoleAssignment) api.PrincipalInfo {
	out := api.PrincipalInfo{ID: p.ID, Name: p.Name, Kind: p.Kind, HasPassword: p.Password != "", Created: p.Created, CreatedBy: p.CreatedBy, Roles: []api.RoleAssignment{}}
	for _, a := range as {
		out.Roles = append(out.Roles, api.RoleAssignment{Principal: p.Name, Role: a.Role, Vault: a.Vault, Created: a.Created, CreatedBy: a.CreatedBy})
	}
	return out
}

func (s *Server) listPrincipals(q *request) error {
	ps, err := s.cat.Principals(q.ctx)
	if err != nil {
		return err
	}
	as, err := s.cat.RoleAssignments(q.ctx, "")
	if err != nil {
		return err
	}
	byP := map[string][]vault.RoleAssignment{}
	for _, a := range as {
		byP[a.Principal] = append(byP[a.Principal], a)
	}
	out := []api.PrincipalInfo{}
	for _, p := range ps {
		out = append(out, principalInfo(p, byP[p.ID]))
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

// listRoles lists role assignments, of one principal or on one vault
// (query principal= and vault=).
func (s *Server) listRoles(q *request) error {
	ps, err := s.cat.Principals(q.ctx)
	if err != nil {
		return err
	}
	names := map[string]string{}
	for _, p := range ps {
		names[p.ID] = p.Name
	}
	var only string
	if name := q.r.URL.Query().Get("principal"); name != "" {
		p, err := s.cat.Principal(q.ctx, name)
		if err != nil {
			return err
		}
		only = p.ID
	}
	as, err := s.cat.RoleAssignments(q.ctx, only)
	if err != nil {
		return err
	}
	want := q.r.URL.Query().Get("vault")
	out := []api.RoleAssignment{}
	for _, a := range as {
		if want != "" && a.Vault != want && a.Vault != "" {
			continue
		}
		out = append(out, api.RoleAssignment{Principal: names[a.Principal], Role: a.Role, Vault: a.Vault, Created: a.Created, CreatedBy: a.CreatedBy})
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

// assignRole assigns a role. Making someone a security approver is
// critical (a request an existing approver decides); the first approver
// is assigned on the server machine, never through the API, so that an
// owner cannot make one and approve their own requests.
func (s *Server) assignRole(q *request) error {
	var body api.RoleAssignment
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("principal", body.Principal)
	q.note("role", body.Role)
	q.note("vault", body.Vault)
	role, err := authn.ParseRole(body.Role)
	if err == nil {
		err = authn.CheckAssignment(role, body.Vault)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	p, err := s.cat.Principal(q.ctx, body.Principal)
	if err != nil {
		return err
	}
	if role == authn.RoleSecurityApprover {
		approvers, err := s.approvers(q.ctx)
		if err != nil {
			return err
		}
		if approvers == 0 {
			return fmt.Errorf("%w: the first security approver is assigned on the server machine (coffer server assign-approver --data DIR --principal %s), never through the API", api.ErrForbidden, p.Name)
		}
		req, err := s.newRequest(q, "role-assign", "making "+p.Name+" a security approver", requestParams{Principal: p.ID, Role: string(role)})
		if err != nil {
			return err
		}
		writeJSON(q.w, http.StatusAccepted, api.RoleResult{Request: &req})
		return nil
	}
	a := vault.RoleAssignment{Principal: p.ID, Role: string(role), Vault: body.Vault, Created: s.opt.Now().UTC(), CreatedBy: q.principal()}
	if err := s.cat.AssignRole(q.ctx, a); err != nil {
		return err
	}
	q.log.Info("role assigned", "principal", p.Name, "role", role, "vault", body.Vault, "by", q.principal())
	writeJSON(q.w, http.StatusOK, api.RoleResult{Done: true})
	return nil
}

// revokeRole revokes a role. Revoking the last owner is critical.
func (s *Server) revokeRole(q *request) error {
	var body api.RoleAssignment
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("principal", body.Principal)
	q.note("role", body.Role)
	q.note("vault", body.Vault)
	p, err := s.cat.Principal(q.ctx, body.Principal)
	if err != nil {
		return err
	}
	if body.Role == string(authn.RoleOwner) {
		owners, err := s.activeOwners(q.ctx)
		if err != nil {
			return err
		}
		if owners <= 1 {
			req, err := s.newRequest(q, "role-revoke", "removing the last owner ("+p.Name+")", requestParams{Principal: p.ID, Role: body.Role})
			if err != nil {
				return err
			}
			writeJSON(q.w, http.StatusAccepted, api.RoleResult{Request: &req})
			return nil
		}
	}
	if err := s.cat.RevokeRole(q.ctx, p.ID, body.Role, body.Vault); err != nil {
		return err
	}
	q.log.Info("role revoked", "principal", p.Name, "role", body.Role, "vault", body.Vault, "by", q.principal())
	writeJSON(q.w, http.StatusOK, api.RoleResult{Done: true})
	return nil
}

// approvers counts the principals and tokens that hold the
// security-approver role.
func (s *Server) approvers(ctx context.Context) (int, error) {
	return s.countRole(ctx, authn.RoleSecurityApprover)
}

// activeOwners counts active owner tokens and principals holding the
// owner role.
func (s *Server) activeOwners(ctx context.Context) (int, error) {
	return s.countRole(ctx, authn.RoleOwner)
}

func (s *Server) countRole(ctx context.Context, role authn.Role) (int, error) {
	toks, err := s.cat.Tokens(ctx)
	if err != nil {
		return 0, err
	}
	now := s.opt.Now()
	n := 0
	for _, t := range toks {
		if t.Role == string(role) && t.Revoked.IsZero() && (t.Expires.IsZero() || now.Before(t.Expires)) {
			n++
		}
	}
	as, err := s.cat.RoleAssignments(ctx, "")
	if err != nil {
		return 0, err
	}
	for _, a := range as {
		if a.Role == string(role) && a.Vault == "" {
			n++
		}
	}
	return n, nil
}

// AssignApprover makes principal a security approver straight in the
// catalog under dataDir, as only someone on the server machine can.
func AssignApprover(ctx context.Context, dataDir, principal string, now time.Time) error {
	cat, err := openCatalogOnly(dataDir)
	if err != nil {
		return err
	}
	defer cat.Close()
	p, err := cat.Principal(ctx, principal)
	if err != nil {
		return err
	}
	return cat.AssignRole(ctx, vault.RoleAssignment{Principal: p.ID, Role: string(authn.RoleSecurityApprover), Created: now.UTC(), CreatedBy: "server-machine"})
}

// defaultLoginTTL and maxLoginTTL bound the tokens login issues.
const (
	defaultLoginTTL = 12 * time.Hour
	maxLoginTTL     = 7 * 24 * time.Hour
)

// login issues a principal a token for its password. Every attempt
// counts against the client's address (and, once it reaches a hash,
// against the principal) before the hash is computed, and a success
// refunds only itself; at most passwordSlots hashes run at once.
func (s *Server) login(q *request) error {
	src := sourceKey(q.r)
	if wait := s.limiter.blocked(src, s.opt.Now()); wait > 0 {
		return s.tooMany(q, &s.limiter, wait)
	}
	var body api.Login
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("name", body.Name)
	// Counted before the hash: parallel attempts cannot all slip past a
	// check made before the failures of the others are counted.
	if wait := s.limiter.attempt(src, s.opt.Now()); wait > 0 {
		return s.tooMany(q, &s.limiter, wait)
	}
	p, err := s.cat.Principal(q.ctx, body.Name)
	known := err == nil
	if err != nil && !errors.Is(err, vault.ErrNotFound) {
		return err
	}
	// Every path spends one full-cost hash, so that timing does not tell
	// unknown names, agents and users without a password from users.
	phc := p.Password
	if !known || phc == "" {
		phc, known = authn.TimingHash(), false
	}
	release, err := s.passwordSlot(q)
	if err != nil {
		return err
	}
	defer release()
	// The principal's own limit, against guesses spread over many
	// addresses; keyed by the name when there is no such principal, so
	// that refusals do not tell which names exist.
	pkey := "name:" + strings.ToLower(body.Name)
	if p.ID != "" {
		pkey = "id:" + p.ID
	}
	exempt := p.ID != "" && s.known.has(p.ID, src, s.opt.Now())
	if !exempt {
		if wait := s.plimiter.attempt(pkey, s.opt.Now()); wait > 0 {
			return s.tooMany(q, &s.plimiter, wait, pkey)
		}
	}
	if err := s.checkPassword(phc, body.Password); err != nil || !known {
		return classed{fmt.Errorf("%w: unknown principal or wrong password", authn.ErrUnauthenticated), api.ErrUnauthenticated}
	}
	release()
	s.limiter.refund(src)
	if !exempt {
		s.plimiter.refund(pkey)
	}
	s.known.add(p.ID, src, s.opt.Now())
	ttl := body.TTL
	if ttl <= 0 {
		ttl = defaultLoginTTL
	}
	ttl = min(ttl, maxLoginTTL)
	q.log.Info("login", "principal", p.Name)
	return s.issueToken(q, vault.TokenRecord{Name: "login", Role: string(authn.RolePrincipal), Principal: p.ID,
		Expires: s.opt.Now().Add(ttl), CreatedBy: "login:" + p.Name})
}

func (s *Server) checkPassword(phc, password string) error {
	if s.opt.CheckPassword != nil {
		return s.opt.CheckPassword(phc, password)
	}
	return authn.CheckPassword(phc, password)
}

// addSource adds a source to the vault: the agent principal NAME (made
// when new), the backup-operator role on this vault, and a token for it.
// A backup-contributor manages sources without being able to make
// anything more powerful than an operator.
func (s *Server) addSource(q *request) error {
	var body api.AddSource
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("name", body.Name)
	if !principalNameRE.MatchString(body.Name) {
		return fmt.Errorf("%w: source name %q: use 1-64 letters, digits, '.', '_', '@' or '-'", api.ErrBadRequest, body.Name)
	}
	if err := s.checkExpiry(body.Expires); err != nil {
		return err
	}
	now := s.opt.Now().UTC()
	p, err := s.cat.Principal(q.ctx, body.Name)
	switch {
	case errors.Is(err, vault.ErrNotFound):
		p = vault.Principal{ID: newPrincipalID("agent"), Name: body.Name, Kind: "agent", Created: now, CreatedBy: q.principal()}
		if err := s.cat.AddPrincipal(q.ctx, p); err != nil {
			return err
		}
	case err != nil:
		return err
	case p.Kind != "agent":
		return fmt.Errorf("%w: %s is a user, not an agent: a source is an agent", api.ErrBadRequest, p.Name)
	}
	err = s.cat.AssignRole(q.ctx, vault.RoleAssignment{Principal: p.ID, Role: string(authn.RoleBackupOperator), Vault: q.name, Created: now, CreatedBy: q.principal()})
	if err != nil && !errors.Is(err, vault.ErrExists) {
		return err
	}
	q.log.Info("source added", "vault", q.name, "agent", p.Name, "by", q.principal())
	return s.issueToken(q, vault.TokenRecord{Name: body.Name, Role: string(authn.RolePrincipal), Principal: p.ID, Expires: body.Expires, CreatedBy: q.tok.ID})
}
