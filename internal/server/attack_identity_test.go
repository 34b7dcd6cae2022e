package server_test

// The attacker's cases on identity and issued credentials: every path that
// makes a token (POST /v1/tokens with a role or a principal, source add,
// login, approvals that change roles), played by each role, against the
// promises of docs/security.md: no token carries a role or scope its
// issuer lacks, no API path issues a token that approves requests, no
// owner approves their own critical change by any path, names cannot
// impersonate IDs, and a request outlives neither its requester's token
// nor their permission.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/vault"
)

const attackPassword = "correct-horse-battery-staple"

// mint sends a token-making request as issuer and returns its status and,
// on 201, the token made.
func (a *arena) mint(issuer, method, path string, body any) (int, api.Token) {
	a.t.Helper()
	st, out := a.call(method, path, issuer, body)
	var tok api.Token
	if st == http.StatusCreated {
		if err := json.Unmarshal(out, &tok); err != nil || tok.Secret == "" || tok.ID == "" {
			a.t.Fatalf("%s %s: 201 without a token: %s", method, path, out)
		}
	}
	return st, tok
}

// login logs name in with password and returns the token.
func (a *arena) login(name, password string) api.Token {
	a.t.Helper()
	st, tok := a.mint("", "POST", "/v1/login", api.Login{Name: name, Password: password})
	if st != http.StatusCreated {
		a.t.Fatalf("login %s: status %d", name, st)
	}
	return tok
}

// principalID returns the ID of the principal named name.
func (a *arena) principalID(name string) string {
	a.t.Helper()
	ps, err := a.owner.Principals(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	for _, p := range ps {
		if p.Name == name {
			return p.ID
		}
	}
	a.t.Fatalf("no principal %s", name)
	return ""
}

// makeApprover makes name a security approver as the server machine does.
func (a *arena) makeApprover(name string) {
	a.t.Helper()
	if err := server.AssignApprover(context.Background(), a.env.DataDir, name, time.Now()); err != nil && !errors.Is(err, vault.ErrExists) {
		a.t.Fatal(err)
	}
}

// machinePassword sets name's password on the server machine, as an
// approver's must be for its logins to approve.
func (a *arena) machinePassword(name, password string) {
	a.t.Helper()
	if err := server.SetPassword(context.Background(), a.env.DataDir, name, password, time.Now()); err != nil {
		a.t.Fatal(err)
	}
}

// requestDelete asks, as tok, to delete vault v and returns the request.
func (a *arena) requestDelete(tok, v string) string {
	a.t.Helper()
	out := a.mustStatus(http.StatusAccepted, "DELETE", "/v1/vaults/"+v, tok, nil)
	var r struct{ Request api.Request }
	if err := json.Unmarshal(out, &r); err != nil || r.Request.ID == "" {
		a.t.Fatalf("vault delete: no request in %s", out)
	}
	return r.Request.ID
}

// requestState returns the state of request id as the approver sees it.
func (a *arena) requestState(approver, id string) string {
	a.t.Helper()
	out := a.mustStatus(http.StatusOK, "GET", "/v1/requests?all=true", approver, nil)
	var rs []api.Request
	if err := json.Unmarshal(out, &rs); err != nil {
		a.t.Fatal(err)
	}
	for _, r := range rs {
		if r.ID == id {
			return r.State
		}
	}
	a.t.Fatalf("request %s not listed", id)
	return ""
}

// mustNotApprove checks that tok cannot approve a critical request the
// initial owner makes (deleting vault a), and that the vault survives.
func (a *arena) mustNotApprove(what, tok string) {
	a.t.Helper()
	id := a.requestDelete(a.env.OwnerToken, "a")
	if st, out := a.call("POST", "/v1/requests/"+id+"/approve", tok, nil); st != http.StatusForbidden {
		a.t.Errorf("%s approved the owner's request to delete the vault: status %d: %s", what, st, out)
	}
	a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a", a.env.OwnerToken, nil)
	a.call("POST", "/v1/requests/"+id+"/reject", a.roleToken(authn.RoleSecurityApprover, ""), nil)
}

// TestAttackOwnerMintsApprover: an owner alone must not approve its own
// critical change through a token the API issued for an approver, or for
// a principal that became one later, or through a source's agent, a
// password-less login, a case variant or an ID.
func TestAttackOwnerMintsApprover(t *testing.T) {
	a := newArena(t)
	owner := a.env.OwnerToken

	// carol approves; the owner asks the API for a token of hers.
	a.principal("carol", "user", attackPassword, authn.RoleSecurityApprover, "")
	for _, ref := range []string{"carol", "CAROL", "Carol", a.principalID("carol")} {
		st, tok := a.mint(owner, "POST", "/v1/tokens", api.CreateToken{Name: "c", Principal: ref})
		if st == http.StatusCreated {
			t.Errorf("POST /v1/tokens for approver %q: issued", ref)
			a.mustNotApprove("a token minted for "+ref, tok.Secret)
		}
	}

	// dave gets a token while he holds nothing, then becomes an approver on
	// the server machine: the minted token must not approve.
	a.principal("dave", "user", "", "", "")
	st, dave := a.mint(owner, "POST", "/v1/tokens", api.CreateToken{Name: "d", Principal: "dave"})
	if st != http.StatusCreated {
		t.Fatalf("token for dave: %d", st)
	}
	a.makeApprover("dave")
	a.mustNotApprove("dave's token minted before he became an approver", dave.Secret)

	// erin likewise, made an approver through an approved request.
	a.principal("erin", "user", "", "", "")
	_, erin := a.mint(owner, "POST", "/v1/tokens", api.CreateToken{Name: "e", Principal: "erin"})
	out := a.mustStatus(http.StatusAccepted, "POST", "/v1/roles", owner, api.RoleAssignment{Principal: "erin", Role: "security-approver"})
	var rr api.RoleResult
	json.Unmarshal(out, &rr)
	a.machinePassword("carol", attackPassword)
	carol := a.login("carol", attackPassword)
	a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+rr.Request.ID+"/approve", carol.Secret, nil)
	a.mustNotApprove("erin's token minted before an approved request made her an approver", erin.Secret)

	// A source's agent token, its agent later made an approver.
	st, src := a.mint(owner, "POST", "/v1/vaults/a/sources", api.AddSource{Name: "web1"})
	if st != http.StatusCreated {
		t.Fatalf("source add: %d", st)
	}
	a.makeApprover("web1")
	a.mustNotApprove("a source token whose agent became an approver", src.Secret)

	// A password-less approver cannot be logged in.
	a.principal("frank", "user", "", authn.RoleSecurityApprover, "")
	for _, pw := range []string{"", " ", "null"} {
		if st, _ := a.mint("", "POST", "/v1/login", api.Login{Name: "frank", Password: pw}); st == http.StatusCreated {
			t.Errorf("login of password-less frank with %q succeeded", pw)
		}
	}

	// A role token cannot be minted as approver whatever the spelling.
	for _, role := range []string{"security-approver", "Security-Approver", "security-approver "} {
		if st, _ := a.mint(owner, "POST", "/v1/tokens", api.CreateToken{Name: "x", Role: role}); st == http.StatusCreated {
			t.Errorf("role token %q issued", role)
		}
	}
}

// TestAttackApproverOwnerSelfApproval: a person who is both an owner and
// an approver must not approve a request they made through another of
// their tokens (a minted role token, a token minted for themselves, a
// second login).
func TestAttackApproverOwnerSelfApproval(t *testing.T) {
	a := newArena(t)
	a.principal("alice", "user", attackPassword, authn.RoleOwner, "")
	a.makeApprover("alice")
	a.machinePassword("alice", attackPassword)
	alice := a.login("alice", attackPassword)

	// alice's login may approve others' requests: the test means something.
	id := a.requestDelete(a.env.OwnerToken, "a")
	a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+id+"/reject", alice.Secret, nil)

	st, ownerTok := a.mint(alice.Secret, "POST", "/v1/tokens", api.CreateToken{Name: "alice-script", Role: "owner"})
	if st != http.StatusCreated {
		t.Fatalf("alice minting an owner token: %d", st)
	}
	st, selfTok := a.mint(alice.Secret, "POST", "/v1/tokens", api.CreateToken{Name: "alice-self", Principal: "alice"})
	if st == http.StatusCreated {
		// Her own principal's token minted through the API: it must not
		// approve, and what it asks, alice may not approve.
		a.mustNotApprove("alice's minted token for herself", selfTok.Secret)
	}
	second := a.login("alice", attackPassword)
	for _, requester := range []struct{ what, tok string }{{"a minted owner token", ownerTok.Secret}, {"a second login", second.Secret}} {
		id := a.requestDelete(requester.tok, "a")
		if st, out := a.call("POST", "/v1/requests/"+id+"/approve", alice.Secret, nil); st == http.StatusOK {
			t.Errorf("alice approved her own request made through %s: %s", requester.what, out)
		}
		a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a", a.env.OwnerToken, nil)
	}
}

// probe is one request whose status tells whether a token holds perm (403:
// it does not; anything else: it does). None changes state.
type probe struct {
	method, path string
	body         any
}

func grantProbes() []probe {
	bad := []byte("x") // refused after authorization, with 400
	ps := []probe{
		{"GET", "/metrics", nil},
		{"GET", "/v1/tokens", nil},
		{"GET", "/v1/principals", nil},
		{"GET", "/v1/audit?limit=1", nil},
		{"GET", "/v1/requests", nil},
		{"POST", "/v1/requests/req_0000000000000000/approve", nil},
		{"POST", "/v1/vaults", bad},
		{"DELETE", "/v1/vaults/zz", nil}, // 404 when allowed
	}
	for _, v := range []string{"a", "b"} {
		p := "/v1/vaults/" + v
		ps = append(ps,
			probe{"GET", p, nil},
			probe{"GET", p + "/index", nil},
			probe{"POST", p + "/missing", bad},
			probe{"POST", p + "/check", bad},
			probe{"GET", p + "/key", nil},
			probe{"POST", p + "/key/use-cmk", bad},
			probe{"POST", p + "/forget", bad},
			probe{"POST", p + "/settings", bad},
			probe{"POST", p + "/sources", bad},
		)
	}
	return ps
}

// allowedSet returns, for each probe, whether tok passed authorization.
func (a *arena) allowedSet(tok string, ps []probe) []bool {
	a.t.Helper()
	out := make([]bool, len(ps))
	for i, p := range ps {
		st, body := a.call(p.method, p.path, tok, p.body)
		if st == http.StatusUnauthorized {
			a.t.Fatalf("%s %s: token refused as unauthenticated: %s", p.method, p.path, body)
		}
		out[i] = st != http.StatusForbidden
	}
	return out
}

// TestAttackTokenWithinIssuer plays every role, as a role token and as a
// principal, down every token-making path, and checks that each token
// made can do nothing its issuer cannot, both when made and after the
// principal it was made for gains every role (owner, approver).
func TestAttackTokenWithinIssuer(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	if _, err := a.owner.CreateVault(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	type scoped struct {
		role  authn.Role
		vault string
	}
	roles := []scoped{
		{authn.RoleOwner, ""}, {authn.RoleBackupContributor, ""}, {authn.RoleBackupContributor, "a"},
		{authn.RoleBackupOperator, "a"}, {authn.RoleBackupReader, "a"}, {authn.RoleKeyOfficer, "a"},
		{authn.RoleKeyOfficer, ""}, {authn.RoleSecurityApprover, ""},
	}
	name := func(prefix string, r scoped) string {
		n := prefix + "-" + string(r.role)
		if r.vault != "" {
			n += "-" + r.vault
		}
		return n
	}
	// Issuers: a token carrying each role, and a principal holding it.
	type issuer struct{ what, tok string }
	var issuers []issuer
	for _, r := range roles {
		issuers = append(issuers, issuer{"role token " + name("t", r), a.roleToken(r.role, r.vault)})
		n := name("i", r)
		a.principal(n, "user", "", r.role, r.vault)
		if r.role == authn.RoleSecurityApprover {
			continue // only its own login carries it; below
		}
		_, tok := a.mint(a.env.OwnerToken, "POST", "/v1/tokens", api.CreateToken{Name: n, Principal: n})
		issuers = append(issuers, issuer{"principal " + n, tok.Secret})
	}
	a.principal("i-approver-login", "user", attackPassword, authn.RoleSecurityApprover, "")
	a.machinePassword("i-approver-login", attackPassword)
	issuers = append(issuers, issuer{"approver's login", a.login("i-approver-login", attackPassword).Secret})

	// Targets: principals holding each role (and one on vault b, and one
	// holding nothing), and agents to reuse as sources.
	var targets []string
	for _, r := range append(roles, scoped{authn.RoleBackupOperator, "b"}, scoped{"", ""}) {
		n := name("p", r)
		a.principal(n, "user", "", r.role, r.vault)
		targets = append(targets, n)
	}
	agents := map[string]scoped{"ag-op-a": {authn.RoleBackupOperator, "a"}, "ag-owner": {authn.RoleOwner, ""},
		"ag-approver": {authn.RoleSecurityApprover, ""}, "ag-reader-b": {authn.RoleBackupReader, "b"}, "ag-none": {}}
	for n, r := range agents {
		a.principal(n, "agent", "", r.role, r.vault)
	}
	a.principal("ag-op-ab", "agent", "", authn.RoleBackupOperator, "a")
	if _, err := a.owner.AssignRole(ctx, api.RoleAssignment{Principal: "ag-op-ab", Role: "backup-operator", Vault: "b"}); err != nil {
		t.Fatal(err)
	}

	type made struct {
		what   string
		issuer issuer
		tok    string
	}
	var mades []made
	for i, is := range issuers {
		var tries []struct {
			what, method, path string
			body               any
		}
		add := func(what, method, path string, body any) {
			tries = append(tries, struct {
				what, method, path string
				body               any
			}{what, method, path, body})
		}
		for _, r := range roles {
			add("role "+name("", r), "POST", "/v1/tokens", api.CreateToken{Name: "m", Role: string(r.role), Vault: r.vault})
		}
		for _, p := range targets {
			add("principal "+p, "POST", "/v1/tokens", api.CreateToken{Name: "m", Principal: p})
			add("principal ID of "+p, "POST", "/v1/tokens", api.CreateToken{Name: "m", Principal: a.principalID(p)})
		}
		for _, v := range []string{"a", "b"} {
			add("new source on "+v, "POST", "/v1/vaults/"+v+"/sources", api.AddSource{Name: fmt.Sprintf("new-%d-%s", i, v)})
			for _, ag := range []string{"ag-op-a", "ag-owner", "ag-approver", "ag-reader-b", "ag-none", "ag-op-ab"} {
				add("source "+ag+" on "+v, "POST", "/v1/vaults/"+v+"/sources", api.AddSource{Name: ag})
				add("source ID of "+ag+" on "+v, "POST", "/v1/vaults/"+v+"/sources", api.AddSource{Name: a.principalID(ag)})
			}
		}
		for _, tr := range tries {
			if st, tok := a.mint(is.tok, tr.method, tr.path, tr.body); st == http.StatusCreated {
				mades = append(mades, made{tr.what, is, tok.Secret})
			}
		}
	}
	if len(mades) < 20 {
		t.Fatalf("only %d tokens issued: the test proves little", len(mades))
	}
	t.Logf("%d tokens issued by %d issuers", len(mades), len(issuers))
	ps := grantProbes()
	check := func(when string) {
		t.Helper()
		cache := map[string][]bool{}
		for _, m := range mades {
			have, ok := cache[m.issuer.tok]
			if !ok {
				have = a.allowedSet(m.issuer.tok, ps)
				cache[m.issuer.tok] = have
			}
			got := a.allowedSet(m.tok, ps)
			for i, p := range ps {
				if got[i] && !have[i] {
					t.Errorf("%s: %s made a token (%s) that passes %s %s, which the issuer cannot", when, m.issuer.what, m.what, p.method, p.path)
				}
			}
			if got[5] { // the approve probe
				t.Errorf("%s: %s made a token (%s) that may decide requests", when, m.issuer.what, m.what)
			}
		}
	}
	check("when made")

	// Every target and agent now gains everything: owner and approver.
	for _, p := range targets {
		a.owner.AssignRole(ctx, api.RoleAssignment{Principal: p, Role: "owner"})
		a.makeApprover(p)
	}
	ps2, _ := a.owner.Principals(ctx)
	for _, p := range ps2 {
		if p.Kind == "agent" {
			a.owner.AssignRole(ctx, api.RoleAssignment{Principal: p.Name, Role: "owner"})
			a.makeApprover(p.Name)
		}
	}
	check("after the principals gained owner and approver")
}

// TestAttackSourceAddBorrowsAgent: a backup-contributor (as a role token
// and as a principal holding the role on the vault only) must not get a
// token for an existing agent that holds more than backup-operator on
// this vault, by its name, a case variant or its ID.
func TestAttackSourceAddBorrowsAgent(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	if _, err := a.owner.CreateVault(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	a.principal("boss", "agent", "", authn.RoleOwner, "")
	a.principal("signer", "agent", "", authn.RoleSecurityApprover, "")
	a.principal("other", "agent", "", authn.RoleBackupOperator, "b")
	a.principal("both", "agent", "", authn.RoleBackupOperator, "a")
	if _, err := a.owner.AssignRole(ctx, api.RoleAssignment{Principal: "both", Role: "backup-reader", Vault: "b"}); err != nil {
		t.Fatal(err)
	}
	a.principal("keys", "agent", "", authn.RoleKeyOfficer, "a")
	a.principal("idle", "agent", "", "", "")
	a.principal("web1", "agent", "", authn.RoleBackupOperator, "a")
	a.principal("contrib", "user", "", authn.RoleBackupContributor, "a")
	_, ptok := a.mint(a.env.OwnerToken, "POST", "/v1/tokens", api.CreateToken{Name: "contrib", Principal: "contrib"})
	for _, c := range []struct{ what, tok string }{
		{"contributor token", a.roleToken(authn.RoleBackupContributor, "a")},
		{"contributor principal", ptok.Secret},
	} {
		for _, name := range []string{"boss", "BOSS", a.principalID("boss"), "signer", a.principalID("signer"), "other", "both", "keys", "idle", "contrib"} {
			if st, tok := a.mint(c.tok, "POST", "/v1/vaults/a/sources", api.AddSource{Name: name}); st == http.StatusCreated {
				t.Errorf("%s: source add %q issued a token for an agent holding more than operator on a", c.what, name)
				if st, _ := a.call("GET", "/v1/tokens", tok.Secret, nil); st != http.StatusForbidden {
					t.Errorf("%s: and it may list tokens (%d)", c.what, st)
				}
			}
		}
		// Reusing an agent whose one grant is operator on a, and adding a
		// new one, still work; the new token may back up a but not read b.
		for _, name := range []string{"web1", "Web1", "web2-" + strings.Fields(c.what)[1]} {
			st, tok := a.mint(c.tok, "POST", "/v1/vaults/a/sources", api.AddSource{Name: name})
			if st != http.StatusCreated {
				t.Fatalf("%s: source add %s: %d", c.what, name, st)
			}
			a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a/dedup", tok.Secret, nil)
			a.mustStatus(http.StatusForbidden, "GET", "/v1/vaults/b", tok.Secret, nil)
		}
	}
}

// TestAttackPrincipalNamesAndIDs: names that look like IDs are refused,
// names differ in more than case, and a reference resolves to exactly
// one principal: by ID in the ID form, by name otherwise.
func TestAttackPrincipalNamesAndIDs(t *testing.T) {
	a := newArena(t)
	owner := a.env.OwnerToken
	a.principal("alice", "user", attackPassword, authn.RoleBackupReader, "a")
	id := a.principalID("alice")
	for _, name := range []string{id, strings.ToUpper(id), "agt_" + id[4:], "usr_x", "Alice", "ALICE", "alice", "-x", "a b", "a\x1b[2Kb", "a\nb", strings.Repeat("a", 65), ""} {
		for _, kind := range []string{"user", "agent"} {
			if st, out := a.call("POST", "/v1/principals", owner, api.CreatePrincipal{Name: name, Kind: kind}); st == http.StatusCreated {
				t.Errorf("principal %q (%s) created: %s", name, kind, out)
			}
		}
		if st, out := a.call("POST", "/v1/vaults/a/sources", owner, api.AddSource{Name: name}); st == http.StatusCreated && name != "alice" {
			t.Errorf("source %q added: %s", name, out)
		}
	}
	// By ID and by any case of the name, the same principal.
	for _, ref := range []string{id, "alice", "ALICE"} {
		st, tok := a.mint(owner, "POST", "/v1/tokens", api.CreateToken{Name: "r", Principal: ref})
		if st != http.StatusCreated || tok.Principal != id {
			t.Errorf("token for %q: status %d, principal %q; want alice (%s)", ref, st, tok.Principal, id)
		}
	}
	if tok := a.login("ALICE", attackPassword); tok.Principal != id {
		t.Errorf("login as ALICE: principal %q, want %s", tok.Principal, id)
	}
	// An ID of nobody is nobody, whatever name it resembles.
	for _, ref := range []string{"usr_0000000000000000", strings.ToUpper(id)} {
		if st, _ := a.call("POST", "/v1/roles", owner, api.RoleAssignment{Principal: ref, Role: "owner"}); st != http.StatusNotFound && st != http.StatusBadRequest {
			t.Errorf("role for %q: status %d, want 404", ref, st)
		}
	}
	// A role on a vault that does not exist is refused.
	if st, _ := a.call("POST", "/v1/roles", owner, api.RoleAssignment{Principal: "alice", Role: "backup-operator", Vault: "nope"}); st != http.StatusNotFound {
		t.Errorf("role on a vault that does not exist: status %d, want 404", st)
	}
}

// TestAttackTokenNames: a token's name is shown to other users (token
// lists, approvers' request lists): it is restricted like a principal's.
func TestAttackTokenNames(t *testing.T) {
	a := newArena(t)
	for _, name := range []string{"x\x1b[2K\rdeleting nothing", "a\nb", "a b", "usr_0123456789abcdef", "\u202etxt", strings.Repeat("n", 65), "-x"} {
		if st, out := a.call("POST", "/v1/tokens", a.env.OwnerToken, api.CreateToken{Name: name, Role: "backup-reader", Vault: "a"}); st != http.StatusBadRequest {
			t.Errorf("token name %q: status %d, want 400: %s", name, st, out)
		}
	}
	if _, _, err := server.IssueApproverToken(context.Background(), a.env.DataDir, "evil\x1b[2K", time.Time{}, time.Now()); err == nil {
		t.Error("approver token with a control character in its name issued")
	}
	for _, name := range []string{"", "web01", "alice@example.com", "ci.job-7_x"} {
		a.mustStatus(http.StatusCreated, "POST", "/v1/tokens", a.env.OwnerToken, api.CreateToken{Name: name, Role: "backup-reader", Vault: "a"})
	}
}

// TestAttackAuditNamesToken: an entry names the token that acted, not only
// its principal, so that two tokens of one principal are told apart.
func TestAttackAuditNamesToken(t *testing.T) {
	a := newArena(t)
	a.principal("carl", "user", attackPassword, authn.RoleBackupContributor, "")
	one, two := a.login("carl", attackPassword), a.login("carl", attackPassword)
	a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a", one.Secret, nil)
	a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a/settings", two.Secret, nil)
	a.mustStatus(http.StatusForbidden, "GET", "/v1/tokens", two.Secret, nil)
	out := a.mustStatus(http.StatusOK, "GET", "/v1/audit", a.env.OwnerToken, nil)
	var es []api.AuditEntry
	if err := json.Unmarshal(out, &es); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"GET /v1/vaults/{vault}": one.ID, "GET /v1/vaults/{vault}/settings": two.ID, "GET /v1/tokens": two.ID}
	for _, e := range es {
		if tok, ok := want[e.Op]; ok && e.Principal == "user:carl" {
			if e.Token != tok {
				t.Errorf("%s by carl: entry names token %q, want %s", e.Op, e.Token, tok)
			}
			delete(want, e.Op)
		}
		if e.Op == "POST /v1/login" && e.Outcome == "ok" && e.Params["issued_token"] == "" {
			t.Errorf("login entry does not name the token it issued: %+v", e)
		}
	}
	if len(want) > 0 {
		t.Errorf("no entries for %v", want)
	}
	// And the log can be asked for one token's entries.
	out = a.mustStatus(http.StatusOK, "GET", "/v1/audit?token="+two.ID, a.env.OwnerToken, nil)
	es = nil
	json.Unmarshal(out, &es)
	if len(es) != 2 {
		t.Errorf("entries of token %s: %d, want 2: %s", two.ID, len(es), out)
	}
}

// TestAttackPendingRequestOutlivesRequester: a request whose requester's
// token was revoked or expired, or who no longer holds the permission, is
// void: approving it changes nothing.
func TestAttackPendingRequestOutlivesRequester(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	approver := a.roleToken(authn.RoleSecurityApprover, "")
	a.principal("olga", "user", attackPassword, authn.RoleOwner, "")
	cases := []struct {
		what   string
		setup  func() string // returns the requesting token
		before func(tokID string)
	}{
		{"revoked token", func() string {
			_, tok := a.mint(a.env.OwnerToken, "POST", "/v1/tokens", api.CreateToken{Name: "rev", Role: "owner"})
			return tok.Secret + " " + tok.ID
		}, func(id string) { a.mustStatus(http.StatusNoContent, "DELETE", "/v1/tokens/"+id, a.env.OwnerToken, nil) }},
		{"expired token", func() string {
			_, tok := a.mint(a.env.OwnerToken, "POST", "/v1/tokens", api.CreateToken{Name: "exp", Role: "owner", Expires: time.Now().Add(time.Hour)})
			return tok.Secret + " " + tok.ID
		}, func(string) { a.env.Clock.Add(int64(2 * time.Hour)) }},
		{"role revoked", func() string {
			tok := a.login("olga", attackPassword)
			return tok.Secret + " " + tok.ID
		}, func(string) {
			if _, err := a.owner.RevokeRole(ctx, api.RoleAssignment{Principal: "olga", Role: "owner"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"issuer's role revoked", func() string {
			a.owner.AssignRole(ctx, api.RoleAssignment{Principal: "olga", Role: "owner"})
			olga := a.login("olga", attackPassword)
			_, tok := a.mint(olga.Secret, "POST", "/v1/tokens", api.CreateToken{Name: "minted", Role: "owner"})
			return tok.Secret + " " + tok.ID
		}, func(string) {
			if _, err := a.owner.RevokeRole(ctx, api.RoleAssignment{Principal: "olga", Role: "owner"}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		secret, id, _ := strings.Cut(c.setup(), " ")
		req := a.requestDelete(secret, "a")
		c.before(id)
		if st := a.requestState(approver, req); st != "void" {
			t.Errorf("%s: request listed as %q, want void", c.what, st)
		}
		if st, out := a.call("POST", "/v1/requests/"+req+"/approve", approver, nil); st != http.StatusConflict {
			t.Errorf("%s: approving the request: status %d, want 409: %s", c.what, st, out)
		}
		a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a", a.env.OwnerToken, nil)
		if st := a.requestState(approver, req); st != "rejected" {
			t.Errorf("%s: after the attempt the request is %q, want rejected (void)", c.what, st)
		}
	}
	// A request whose requester is still entitled goes through.
	req := a.requestDelete(a.env.OwnerToken, "a")
	a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+req+"/approve", approver, nil)
	a.mustStatus(http.StatusNotFound, "GET", "/v1/vaults/a", a.env.OwnerToken, nil)
}

// TestAttackIssuerLosesPower: what a token issued stops with its issuer:
// a role taken from the issuer's principal is taken from the tokens it
// issued, and revoking a token revokes every token it issued (down the
// chain); its expiry does not (a login session's agents keep working).
func TestAttackIssuerLosesPower(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	a.principal("mallory", "user", attackPassword, authn.RoleOwner, "")
	m := a.login("mallory", attackPassword)
	_, roleTok := a.mint(m.Secret, "POST", "/v1/tokens", api.CreateToken{Name: "persist", Role: "owner"})
	_, srcTok := a.mint(m.Secret, "POST", "/v1/vaults/a/sources", api.AddSource{Name: "web1"})
	_, grandchild := a.mint(roleTok.Secret, "POST", "/v1/tokens", api.CreateToken{Name: "deeper", Role: "owner"})
	for _, tok := range []string{roleTok.Secret, grandchild.Secret} {
		a.mustStatus(http.StatusOK, "GET", "/v1/tokens", tok, nil)
	}
	if _, err := a.owner.RevokeRole(ctx, api.RoleAssignment{Principal: "mallory", Role: "owner"}); err != nil {
		t.Fatal(err)
	}
	for what, tok := range map[string]string{"minted owner token": roleTok.Secret, "its child": grandchild.Secret, "source token": srcTok.Secret} {
		if st, _ := a.call("GET", "/v1/tokens", tok, nil); st != http.StatusForbidden {
			t.Errorf("%s after its issuer lost owner: GET /v1/tokens %d, want 403", what, st)
		}
		if st, _ := a.call("GET", "/v1/vaults/a", tok, nil); st != http.StatusForbidden {
			t.Errorf("%s after its issuer lost owner: GET /v1/vaults/a %d, want 403", what, st)
		}
	}

	// Revocation: an owner token T mints T2, T2 mints T3; revoking T stops
	// T2 and T3.
	_, t1 := a.mint(a.env.OwnerToken, "POST", "/v1/tokens", api.CreateToken{Name: "t1", Role: "owner"})
	_, t2 := a.mint(t1.Secret, "POST", "/v1/tokens", api.CreateToken{Name: "t2", Role: "owner"})
	_, t3 := a.mint(t2.Secret, "POST", "/v1/vaults/a/sources", api.AddSource{Name: "web2"})
	a.mustStatus(http.StatusNoContent, "DELETE", "/v1/tokens/"+t1.ID, a.env.OwnerToken, nil)
	for what, tok := range map[string]string{"child of a revoked token": t2.Secret, "grandchild of a revoked token": t3.Secret} {
		if st, _ := a.call("GET", "/v1/vaults/a", tok, nil); st != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", what, st)
		}
	}

	// Expiry does not cascade: an agent set up during a login keeps working.
	a.principal("olive", "user", attackPassword, authn.RoleOwner, "")
	o := a.login("olive", attackPassword)
	_, agent := a.mint(o.Secret, "POST", "/v1/vaults/a/sources", api.AddSource{Name: "web3"})
	a.env.Clock.Add(int64(13 * time.Hour))
	a.mustStatus(http.StatusUnauthorized, "GET", "/v1/vaults/a", o.Secret, nil)
	a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a", agent.Secret, nil)
}

// TestAttackLastOwnerPaths: no revocation, of a token or of a role, leaves
// the server without anyone able to act as an owner without a second
// person's approval, however owner-looking tokens are counted.
func TestAttackLastOwnerPaths(t *testing.T) {
	t.Run("minted owner tokens do not keep a principal's owner role alive", func(t *testing.T) {
		a := newArena(t)
		ctx := context.Background()
		a.principal("alice", "user", attackPassword, authn.RoleOwner, "")
		at := a.login("alice", attackPassword)
		// alice's tokens: owner tokens that live only through her role.
		for i := 0; i < 3; i++ {
			a.mint(at.Secret, "POST", "/v1/tokens", api.CreateToken{Name: fmt.Sprintf("a%d", i), Role: "owner"})
		}
		// The initial owner's token is revoked by alice (other owners
		// seemingly left), then alice's role by alice herself.
		toks, _ := a.owner.Tokens(ctx)
		initial := toks[0].ID
		if st, out := a.call("DELETE", "/v1/tokens/"+initial, at.Secret, nil); st != http.StatusNoContent {
			t.Fatalf("revoking the initial token with alice an owner: %d %s", st, out)
		}
		st, out := a.call("DELETE", "/v1/roles", at.Secret, api.RoleAssignment{Principal: "alice", Role: "owner"})
		if st != http.StatusAccepted {
			t.Errorf("revoking the last owner's role: status %d, want 202 (a request): %s", st, out)
		}
		a.mustStatus(http.StatusOK, "GET", "/v1/tokens", at.Secret, nil)
	})
	t.Run("revoking the token every owner descends from", func(t *testing.T) {
		a := newArena(t)
		ctx := context.Background()
		_, second := a.mint(a.env.OwnerToken, "POST", "/v1/tokens", api.CreateToken{Name: "second", Role: "owner"})
		toks, _ := a.owner.Tokens(ctx)
		st, out := a.call("DELETE", "/v1/tokens/"+toks[0].ID, second.Secret, nil)
		if st != http.StatusAccepted {
			t.Errorf("revoking the initial token that the only other owner descends from: status %d, want 202: %s", st, out)
		}
		a.mustStatus(http.StatusOK, "GET", "/v1/tokens", second.Secret, nil)
	})
	t.Run("a principal that can log in is an owner left", func(t *testing.T) {
		a := newArena(t)
		ctx := context.Background()
		a.principal("bob", "user", attackPassword, authn.RoleOwner, "")
		toks, _ := a.owner.Tokens(ctx)
		a.mustStatus(http.StatusNoContent, "DELETE", "/v1/tokens/"+toks[0].ID, a.env.OwnerToken, nil)
	})
}

// TestAttackOwnerKnowsApproverPassword: an owner creates a user with a
// password it chose, and the server machine makes that user an approver
// (the documented flow). The owner logging in as the approver must not
// approve its own critical change: an approver's login approves only with
// a password set on the server machine.
func TestAttackOwnerKnowsApproverPassword(t *testing.T) {
	a := newArena(t)
	a.principal("carol", "user", attackPassword, authn.RoleSecurityApprover, "")
	st, tok := a.mint("", "POST", "/v1/login", api.Login{Name: "carol", Password: attackPassword})
	if st == http.StatusCreated {
		a.mustNotApprove("a login with the password the owner chose", tok.Secret)
	}
	// Once carol's password is set on the server machine, her login
	// approves (and the owner's old password no longer logs in).
	if err := server.SetPassword(context.Background(), a.env.DataDir, "carol", "carol's own passphrase", time.Now()); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.mint("", "POST", "/v1/login", api.Login{Name: "carol", Password: attackPassword}); st == http.StatusCreated {
		t.Error("the owner's password still logs carol in")
	}
	carol := a.login("carol", "carol's own passphrase")
	id := a.requestDelete(a.env.OwnerToken, "a")
	a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+id+"/reject", carol.Secret, nil)
}

// TestAttackOwnerRemovesApprovers: an owner must not take the second
// person away alone: revoking a principal's security-approver role, or an
// approver token, is a request an approver decides.
func TestAttackOwnerRemovesApprovers(t *testing.T) {
	a := newArena(t)
	a.principal("carol", "user", attackPassword, authn.RoleSecurityApprover, "")
	st, out := a.call("DELETE", "/v1/roles", a.env.OwnerToken, api.RoleAssignment{Principal: "carol", Role: "security-approver"})
	if st != http.StatusAccepted {
		t.Errorf("owner revoking carol's approver role: status %d, want 202: %s", st, out)
	}
	tok, id, err := server.IssueApproverToken(context.Background(), a.env.DataDir, "dan", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st, out := a.call("DELETE", "/v1/tokens/"+id, a.env.OwnerToken, nil); st != http.StatusAccepted {
		t.Errorf("owner revoking an approver token: status %d, want 202: %s", st, out)
	}
	a.mustStatus(http.StatusOK, "GET", "/v1/requests", tok, nil)
	// An approver may approve it; then it is done.
	var r struct{ Request api.Request }
	json.Unmarshal(out, &r)
	if r.Request.ID != "" {
		a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+r.Request.ID+"/approve", tok, nil)
		if rs, _ := a.owner.Roles(context.Background(), "carol", ""); len(rs) != 0 {
			t.Errorf("carol still holds %v after the approved revocation", rs)
		}
	}
}
