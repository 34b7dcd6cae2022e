package server_test

// The attacker's harness: a real server over loopback TLS, an identity of
// every role (as a role-carrying token and as a principal holding the
// role), and raw HTTP calls that send whatever an attacker would. The
// attack_*_test.go files use it; each of their tests plays one position
// of docs/security.md's threat model and asserts the promise it attacks.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// arena is a running server with one vault ("a") and identities for the
// attacker to use.
type arena struct {
	t     testing.TB
	env   *servertest.Env
	owner *client.Client
	hc    *http.Client
}

// newArena starts a server with vault "a".
func newArena(t testing.TB) *arena {
	t.Helper()
	return newArenaWith(t, servertest.Options{})
}

// newArenaWith starts a server configured by opt, with vault "a".
func newArenaWith(t testing.TB, opt servertest.Options) *arena {
	t.Helper()
	env := servertest.StartWith(t, opt)
	a := &arena{t: t, env: env, owner: env.Client(t, env.OwnerToken),
		hc: &http.Client{Transport: &http.Transport{TLSClientConfig: env.TLS},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	t.Cleanup(a.hc.CloseIdleConnections)
	if _, err := a.owner.CreateVault(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	return a
}

// roleToken returns the secret of a new token carrying role (scoped to
// vault when given). A security-approver token is issued as the server
// machine issues it, since the API refuses to.
func (a *arena) roleToken(role authn.Role, vault string) string {
	a.t.Helper()
	ctx := context.Background()
	if role == authn.RoleSecurityApprover {
		tok, _, err := server.IssueApproverToken(ctx, a.env.DataDir, "approver-"+time.Now().Format("150405.000000000"), time.Time{}, time.Now())
		if err != nil {
			a.t.Fatal(err)
		}
		return tok
	}
	tok, err := a.owner.CreateToken(ctx, api.CreateToken{Name: "t-" + string(role), Role: string(role), Vault: vault})
	if err != nil {
		a.t.Fatalf("token for %s: %v", role, err)
	}
	return tok.Secret
}

// principal creates a principal (kind "user" or "agent", password may be
// empty) holding role (on vault when given; no role when role is empty).
// A security-approver role is assigned as the server machine does.
func (a *arena) principal(name, kind, password string, role authn.Role, vault string) {
	a.t.Helper()
	ctx := context.Background()
	if _, err := a.owner.CreatePrincipal(ctx, api.CreatePrincipal{Name: name, Kind: kind, Password: password}); err != nil {
		a.t.Fatalf("principal %s: %v", name, err)
	}
	switch role {
	case "":
	case authn.RoleSecurityApprover:
		if err := server.AssignApprover(ctx, a.env.DataDir, name, time.Now()); err != nil {
			a.t.Fatal(err)
		}
	default:
		if _, err := a.owner.AssignRole(ctx, api.RoleAssignment{Principal: name, Role: string(role), Vault: vault}); err != nil {
			a.t.Fatalf("assign %s to %s: %v", role, name, err)
		}
	}
}

// client returns an API client authenticating with token.
func (a *arena) client(token string) *client.Client {
	a.t.Helper()
	return a.env.Client(a.t, token)
}

// call sends one raw request (body marshalled as JSON unless it is a
// []byte or nil) with token ("" for none) and returns the status and the
// answer's body.
func (a *arena) call(method, path, token string, body any) (int, []byte) {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		p, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(p)
	}
	req, err := http.NewRequest(method, a.env.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// mustStatus fails the test unless the call answered want.
func (a *arena) mustStatus(want int, method, path, token string, body any) []byte {
	a.t.Helper()
	got, out := a.call(method, path, token, body)
	if got != want {
		a.t.Fatalf("%s %s: status %d, want %d: %s", method, path, got, want, out)
	}
	return out
}

// TestArena checks the harness itself: every role gets a token that the
// server accepts, and a request without one is refused.
func TestArena(t *testing.T) {
	a := newArena(t)
	for _, role := range authn.Roles() {
		scope := ""
		if role == authn.RoleBackupOperator || role == authn.RoleBackupReader {
			scope = "a"
		}
		tok := a.roleToken(role, scope)
		if got, out := a.call("GET", "/v1/requests", tok, nil); got == http.StatusUnauthorized {
			t.Fatalf("%s token refused as unauthenticated: %s", role, out)
		}
	}
	a.mustStatus(http.StatusUnauthorized, "GET", "/v1/vaults/a", "", nil)
}
