package server_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// BenchmarkAuthenticatedRequest is the cost of one small authenticated
// request (GET /v1/vaults/{vault}/dedup, which hands out the
// deduplication keys and reads nothing else), client and server in one process, for
// each kind of token: the owner token made on the server machine (one
// catalog lookup), a token issued through the API (its issuer is looked up
// too) and a principal's login token (the principal and its role
// assignments too). Every request reads the catalog afresh, so that a
// revocation applies to the very next one.
func BenchmarkAuthenticatedRequest(b *testing.B) {
	ctx := context.Background()
	env := servertest.Start(b)
	owner := env.Client(b, env.OwnerToken)
	if _, err := owner.CreateVault(ctx, "a"); err != nil {
		b.Fatal(err)
	}
	issued, err := owner.CreateToken(ctx, api.CreateToken{Name: "op", Role: "backup-operator", Vault: "a"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := owner.CreatePrincipal(ctx, api.CreatePrincipal{Name: "web01", Kind: "agent", Password: "correct horse battery staple"}); err != nil {
		b.Fatal(err)
	}
	if _, err := owner.AssignRole(ctx, api.RoleAssignment{Principal: "web01", Role: "backup-operator", Vault: "a"}); err != nil {
		b.Fatal(err)
	}
	login, err := env.Client(b, "").Login(ctx, api.Login{Name: "web01", Password: "correct horse battery staple"})
	if err != nil {
		b.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: env.TLS,
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }}}
	defer hc.CloseIdleConnections()
	for _, tc := range []struct{ name, secret string }{
		{"owner", env.OwnerToken},
		{"issued", issued.Secret},
		{"login", login.Secret},
	} {
		b.Run(tc.name, func(b *testing.B) {
			get := func() {
				req, err := http.NewRequestWithContext(ctx, "GET", env.URL+"/v1/vaults/a/dedup", nil)
				if err != nil {
					b.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+tc.secret)
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			get()
			b.ReportAllocs()
			for b.Loop() {
				get()
			}
		})
	}
}
