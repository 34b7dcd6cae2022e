package client

// Attacks by a hostile or hijacked server on the client: whatever it
// answers, the client must not send its token anywhere else (or in
// plaintext), must not allocate without bound, and must fail with an
// error rather than crash.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// hostile starts a TLS server on loopback answering with h, and a client
// of it holding token "secret-token".
func hostile(t *testing.T, h http.HandlerFunc) (*httptest.Server, *Client) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c, err := New(Options{Server: srv.URL, Token: "secret-token", TLS: &tls.Config{RootCAs: pool},
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return srv, c
}

// TestAttackRedirectRefused: a server answering with a redirect, to a
// plaintext listener or elsewhere, gets an error naming the target; no
// request (and so no token) reaches the target.
func TestAttackRedirectRefused(t *testing.T) {
	var reached, withAuth atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		if r.Header.Get("Authorization") != "" {
			withAuth.Add(1)
		}
		w.Write([]byte(`[]`))
	}))
	defer plain.Close()
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			target := plain.URL + "/v1/vaults/a/snapshots"
			_, c := hostile(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target, code)
			})
			ctx := context.Background()
			_, err := c.Vault("a").Snapshots(ctx)
			if err == nil || !strings.Contains(err.Error(), "redirect") || !strings.Contains(err.Error(), target) {
				t.Errorf("GET answered with %d: %v, want an error naming the redirect to %s", code, err, target)
			}
			_, err = c.CreateVault(ctx, "b")
			if err == nil || !strings.Contains(err.Error(), "redirect") {
				t.Errorf("POST answered with %d: %v, want a redirect error", code, err)
			}
		})
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("%d requests reached the redirect target (%d with an Authorization header)", n, withAuth.Load())
	}
}
