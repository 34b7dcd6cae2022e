package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/vault"
)

var principalNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// principalIDRE is the form of a principal's ID (newPrincipalID): a
// reference in this form is looked up by ID only, never by name.
var principalIDRE = regexp.MustCompile(`^(usr|agt)_[0-9a-f]{16}$`)

// checkName refuses a principal's (or token's) name that is not 1-64
// letters, digits, '.', '_', '@' or '-', or that starts like a principal's
// ID (usr_, agt_, in any case): a name must never be mistaken for an ID.
func checkName(what, name string) error {
	if !principalNameRE.MatchString(name) {
		return fmt.Errorf("%w: %s %q: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", api.ErrBadRequest, what, name)
	}
	if l := strings.ToLower(name); strings.HasPrefix(l, "usr_") || strings.HasPrefix(l, "agt_") {
		return fmt.Errorf("%w: %s %q: names starting usr_ or agt_ are reserved for principal IDs; choose another", api.ErrBadRequest, what, name)
	}
	return nil
}

// resolvePrincipal finds the principal ref names: by ID when ref has the
// form of an ID, else by name (without regard to case). The two never
// cross, so a principal named like another's ID (refused since, but an
// older catalog may hold one) cannot stand in for it.
func (s *Server) resolvePrincipal(ctx context.Context, ref string) (vault.Principal, error) {
	return lookupPrincipal(ctx, s.cat, ref)
}

// lookupPrincipal finds the principal ref names in cat: by ID when ref
// has an ID's form, else by name.
func lookupPrincipal(ctx context.Context, cat interface {
	Principal(context.Context, string) (vault.Principal, error)
	PrincipalByID(context.Context, string) (vault.Principal, error)
}, ref string) (vault.Principal, error) {
	if principalIDRE.MatchString(ref) {
		return cat.PrincipalByID(ctx, ref)
	}
	return cat.Principal(ctx, ref)
}

// How a token was issued, read from its CreatedBy.
type origin int

const (
	// originMachine: on the server machine (the initial owner token, "" in
	// CreatedBy, and approver tokens, createdByMachine).
	originMachine origin = iota
	// originLogin: a principal's own login with its password.
	originLogin
	// originAPI: minted through the API by the token whose ID is CreatedBy.
	originAPI
)

const (
	createdByMachine = "server-machine"
	createdByLogin   = "login:"
)

func originOf(t vault.TokenRecord) origin {
	switch {
	case t.CreatedBy == "" || t.CreatedBy == createdByMachine:
		return originMachine
	case strings.HasPrefix(t.CreatedBy, createdByLogin):
		return originLogin
	}
	return originAPI
}

// maxIssuers bounds the walk up a token's issuers (a chain is never
// longer than the tokens that made each other; this is a safety net).
const maxIssuers = 32

// ownGrants returns the grants tok carries by itself, filtered by how it
// was issued: security-approver only on a token made on the server
// machine or a principal's own login, and on a login only when the
// principal's password was set on the server machine (an owner who
// created the principal through the API chose its password, and may know
// it). So no token the API issues ever decides a request, whatever its
// principal holds now or later.
func (s *Server) ownGrants(ctx context.Context, tok vault.TokenRecord, r *removal) ([]authn.Grant, *vault.Principal, error) {
	o := originOf(tok)
	if authn.Role(tok.Role) != authn.RolePrincipal {
		if authn.Role(tok.Role) == authn.RoleSecurityApprover && o != originMachine {
			return nil, nil, nil
		}
		return authn.RoleGrants(authn.Role(tok.Role), tok.Vault), nil, nil
	}
	p, err := s.cat.PrincipalByID(ctx, tok.Principal)
	if err != nil {
		return nil, nil, fmt.Errorf("principal of token %s: %w", tok.ID, err)
	}
	as, err := s.cat.RoleAssignments(ctx, p.ID)
	if err != nil {
		return nil, nil, err
	}
	var grants []authn.Grant
	for _, a := range as {
		if authn.Role(a.Role) == authn.RoleSecurityApprover && (o == originAPI || o == originLogin && p.PasswordBy != createdByMachine) {
			continue
		}
		if r != nil && r.principal == p.ID && authn.Role(a.Role) == authn.RoleOwner {
			continue
		}
		grants = append(grants, authn.Grant{Role: authn.Role(a.Role), Vault: a.Vault})
	}
	return grants, &p, nil
}

// access returns what tok may do now: its own grants (ownGrants), limited
// by those of every token up the chain that issued it, so that a token
// never does more than its issuers can do now (a role taken from an
// issuer is taken from what it issued). Revoking a token revokes what it
// issued, down the chain: access fails with authn.ErrUnauthenticated when
// an issuer is revoked. An issuer's expiry does not count: the end of a
// login session must not stop the agents set up during it. who names tok
// for messages and trails; people lists the principals and tokens behind
// it (its own, then each issuer's), whom the no-self-approval rule keeps
// from deciding what it asks.
func (s *Server) access(ctx context.Context, tok vault.TokenRecord) (acc authn.Access, who string, people []string, err error) {
	return s.accessAfter(ctx, tok, nil)
}

// removal is a revocation whose effect is weighed before it is made: of
// the token with ID token, or of the owner role of the principal with ID
// principal.
type removal struct{ token, principal string }

// errIssuerRevoked: a token up the chain that issued this one is revoked.
var errIssuerRevoked = fmt.Errorf("%w: bearer token unknown, expired or revoked: a token that issued it was revoked, which revokes what it issued; ask the server owner for a new one", authn.ErrUnauthenticated)

// accessAfter is access as it would be after r (nil: as it is).
func (s *Server) accessAfter(ctx context.Context, tok vault.TokenRecord, r *removal) (acc authn.Access, who string, people []string, err error) {
	grants, p, err := s.ownGrants(ctx, tok, r)
	if err != nil {
		return acc, "", nil, err
	}
	acc.Grants = grants
	if p != nil {
		who = p.Kind + ":" + p.Name
	} else {
		who = "token:" + tok.ID
		if tok.Name != "" {
			who += " (" + tok.Name + ")"
		}
	}
	people = appendPeople(people, tok, p)
	for cur, n := tok, 0; originOf(cur) == originAPI; n++ {
		issuer, err := s.cat.Token(ctx, cur.CreatedBy)
		if errors.Is(err, vault.ErrNotFound) || n == maxIssuers {
			acc.Limits = append(acc.Limits, nil) // an issuer that cannot be found allows nothing
			break
		}
		if err != nil {
			return acc, "", nil, err
		}
		if !issuer.Revoked.IsZero() || r != nil && r.token == issuer.ID {
			return acc, "", nil, errIssuerRevoked
		}
		g, ip, err := s.ownGrants(ctx, issuer, r)
		if err != nil {
			return acc, "", nil, err
		}
		acc.Limits = append(acc.Limits, g)
		people = appendPeople(people, issuer, ip)
		cur = issuer
	}
	return acc, who, people, nil
}

func appendPeople(people []string, tok vault.TokenRecord, p *vault.Principal) []string {
	people = append(people, "token:"+tok.ID)
	if p != nil {
		people = append(people, "principal:"+p.ID)
	}
	return people
}

// approverHint adds to err, a refusal of perm to tok, why tok does not
// approve when its principal holds security-approver.
func (s *Server) approverHint(ctx context.Context, tok vault.TokenRecord, perm authn.Permission, err error) error {
	if perm != authn.PermRequestDecide && perm != authn.PermRequestRead || authn.Role(tok.Role) != authn.RolePrincipal {
		return err
	}
	grants, gerr := s.principalGrants(ctx, tok.Principal)
	if gerr != nil || !slices.Contains(grants, authn.Grant{Role: authn.RoleSecurityApprover}) {
		return err
	}
	how := "a token issued through the API never carries it; log in"
	if originOf(tok) == originLogin {
		how = "a login carries it only with a password set on the server machine (coffer server assign-approver --principal NAME --password-stdin there)"
	}
	return fmt.Errorf("%w; the principal holds security-approver, but this token does not carry it: %s", err, how)
}

// mayIssue refuses a token that would carry grants beyond the issuing
// request's own access: no token carries a role or scope its issuer
// lacks, and none issued through the API carries security-approver.
func (s *Server) mayIssue(q *request, what string, grants []authn.Grant) error {
	for _, g := range grants {
		scope := "server-wide"
		if g.Vault != "" {
			scope = "on vault " + g.Vault
		}
		if g.Role == authn.RoleSecurityApprover {
			return fmt.Errorf("%w: %s holds security-approver, which no token issued through the API carries: an approver logs in (coffer login), or gets a token on the server machine (coffer server approver-token)", api.ErrForbidden, what)
		}
		if !q.acc.Covers(g) {
			return fmt.Errorf("%w: %s would carry role %s %s, which the issuing token (%s) does not hold: a token never carries more than its issuer", api.ErrForbidden, what, g.Role, scope, q.principal())
		}
	}
	return nil
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
	if err := checkName("principal name", body.Name); err != nil {
		return err
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
		p, err := s.resolvePrincipal(q.ctx, name)
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
	p, err := s.resolvePrincipal(q.ctx, body.Principal)
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

// revokeRole revokes a role. Revoking the last owner, or a security
// approver, is critical.
func (s *Server) revokeRole(q *request) error {
	var body api.RoleAssignment
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("principal", body.Principal)
	q.note("role", body.Role)
	q.note("vault", body.Vault)
	p, err := s.resolvePrincipal(q.ctx, body.Principal)
	if err != nil {
		return err
	}
	// Critical: removing the last owner, and removing a security approver
	// (else an owner could take the second person away alone).
	grants, err := s.principalGrants(q.ctx, p.ID)
	if err != nil {
		return err
	}
	critical := ""
	switch g := (authn.Grant{Role: authn.Role(body.Role), Vault: body.Vault}); {
	case !slices.Contains(grants, g):
	case g == authn.Grant{Role: authn.RoleOwner}:
		owners, err := s.ownersLeft(q.ctx, removal{principal: p.ID})
		if err != nil {
			return err
		}
		if owners == 0 {
			critical = "removing the last owner (" + p.Name + ")"
		}
	case g == authn.Grant{Role: authn.RoleSecurityApprover}:
		critical = "removing security approver " + p.Name
	}
	if critical != "" {
		req, err := s.newRequest(q, "role-revoke", critical, requestParams{Principal: p.ID, Role: body.Role})
		if err != nil {
			return err
		}
		writeJSON(q.w, http.StatusAccepted, api.RoleResult{Request: &req})
		return nil
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

// ownersLeft counts who could still act as an owner after r: active
// tokens whose access would still cover the owner role (so an owner token
// living only through a role or a token being revoked does not count),
// and principals that would still hold the owner role and can log in
// (have a password).
func (s *Server) ownersLeft(ctx context.Context, r removal) (int, error) {
	as, err := s.cat.RoleAssignments(ctx, "")
	if err != nil {
		return 0, err
	}
	owners := map[string]bool{} // principal IDs holding owner after r
	for _, a := range as {
		if authn.Role(a.Role) == authn.RoleOwner && a.Vault == "" && a.Principal != r.principal {
			owners[a.Principal] = true
		}
	}
	n := 0
	for id := range owners {
		p, err := s.cat.PrincipalByID(ctx, id)
		if err != nil {
			return 0, err
		}
		if p.Password != "" {
			n++
		}
	}
	toks, err := s.cat.Tokens(ctx)
	if err != nil {
		return 0, err
	}
	now := s.opt.Now()
	owner := authn.Grant{Role: authn.RoleOwner}
	for _, t := range toks {
		if t.ID == r.token || !t.Revoked.IsZero() || !t.Expires.IsZero() && !now.Before(t.Expires) {
			continue
		}
		if authn.Role(t.Role) != authn.RoleOwner && (authn.Role(t.Role) != authn.RolePrincipal || !owners[t.Principal]) {
			continue
		}
		acc, _, _, err := s.accessAfter(ctx, t, &r)
		if errors.Is(err, authn.ErrUnauthenticated) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if acc.Covers(owner) {
			n++
		}
	}
	return n, nil
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
	p, err := lookupPrincipal(ctx, cat, principal)
	if err != nil {
		return err
	}
	return cat.AssignRole(ctx, vault.RoleAssignment{Principal: p.ID, Role: string(authn.RoleSecurityApprover), Created: now.UTC(), CreatedBy: createdByMachine})
}

// SetPassword sets the password of principal (a name or an ID) straight
// in the catalog under dataDir, as only someone on the server machine
// can. Only a password set this way makes a security approver's login
// approve: one set through the API was chosen by whoever created the
// principal, typically an owner.
func SetPassword(ctx context.Context, dataDir, principal, password string, now time.Time) error {
	h, err := authn.HashPassword(password)
	if err != nil {
		return err
	}
	cat, err := openCatalogOnly(dataDir)
	if err != nil {
		return err
	}
	defer cat.Close()
	p, err := lookupPrincipal(ctx, cat, principal)
	if err != nil {
		return err
	}
	return cat.SetPassword(ctx, p.ID, h, createdByMachine)
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
	p, err := s.resolvePrincipal(q.ctx, body.Name)
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
		Expires: s.opt.Now().Add(ttl), CreatedBy: createdByLogin + p.Name})
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
// anything more powerful than an operator: an existing agent is reused
// only when its one grant is backup-operator on this vault, so that
// source add never hands out a token for an agent that holds more (an
// owner, an approver, another vault).
func (s *Server) addSource(q *request) error {
	var body api.AddSource
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("name", body.Name)
	if err := checkName("source name", body.Name); err != nil {
		return err
	}
	if err := s.checkExpiry(body.Expires); err != nil {
		return err
	}
	now := s.opt.Now().UTC()
	operator := authn.Grant{Role: authn.RoleBackupOperator, Vault: q.name}
	p, err := s.cat.Principal(q.ctx, body.Name)
	switch {
	case errors.Is(err, vault.ErrNotFound):
		if err := s.mayIssue(q, "source "+body.Name, []authn.Grant{operator}); err != nil {
			return err
		}
		p = vault.Principal{ID: newPrincipalID("agent"), Name: body.Name, Kind: "agent", Created: now, CreatedBy: q.principal()}
		if err := s.cat.AddPrincipal(q.ctx, p); err != nil {
			return err
		}
		err = s.cat.AssignRole(q.ctx, vault.RoleAssignment{Principal: p.ID, Role: string(authn.RoleBackupOperator), Vault: q.name, Created: now, CreatedBy: q.principal()})
		if err != nil {
			return err
		}
	case err != nil:
		return err
	case p.Kind != "agent":
		return fmt.Errorf("%w: %s is a user, not an agent: a source is an agent", api.ErrBadRequest, p.Name)
	default:
		grants, err := s.principalGrants(q.ctx, p.ID)
		if err != nil {
			return err
		}
		if len(grants) != 1 || grants[0] != operator {
			return fmt.Errorf("%w: agent %s exists and holds other roles than backup-operator on vault %s: source add reuses only such an agent; choose a new name, or ask an owner to issue its token (coffer token create --principal %s)", api.ErrForbidden, p.Name, q.name, p.Name)
		}
		if err := s.mayIssue(q, "source "+p.Name, grants); err != nil {
			return err
		}
	}
	q.log.Info("source added", "vault", q.name, "agent", p.Name, "by", q.principal())
	return s.issueToken(q, vault.TokenRecord{Name: p.Name, Role: string(authn.RolePrincipal), Principal: p.ID, Expires: body.Expires, CreatedBy: q.tok.ID})
}
