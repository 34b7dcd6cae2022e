package client

// Attacks by a hostile or hijacked server on the client: whatever it
// answers, the client must not send its token anywhere else (or in
// plaintext), must not allocate without bound, and must fail with an
// error rather than crash.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/vault"
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

// TestAttackMissingAnswerBounded: the answer to "which of these blobs are
// missing" may only name blobs of the batch; a server streaming others
// (an endless list would grow the client's memory without bound) is an
// error.
func TestAttackMissingAnswerBounded(t *testing.T) {
	var written atomic.Int64
	_, c := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/missing"):
			var id vault.ID
			buf := make([]byte, 0, 64<<10)
			for i := 0; i < 200_000; i++ {
				binary.BigEndian.PutUint64(id[:], uint64(i)+1)
				buf = api.AppendRef(buf, api.Ref{Type: vault.DataBlob, ID: id})
				if len(buf) > 60<<10 {
					if _, err := w.Write(buf); err != nil {
						return
					}
					written.Add(int64(len(buf)))
					buf = buf[:0]
				}
			}
			w.Write(buf)
		case strings.HasSuffix(r.URL.Path, "/blobs"):
			w.Write([]byte(`{"stored":1,"bytes_added":1}`))
		default:
			w.Write([]byte(`{}`))
		}
	})
	ctx := context.Background()
	v := c.Vault("a")
	var id vault.ID
	id[0] = 0xee
	if _, err := v.SaveBlob(ctx, vault.DataBlob, id, []byte{0, 'x'}, 1); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err == nil || !strings.Contains(err.Error(), "did not ask") {
		t.Fatalf("a missing-list naming 200000 blobs never asked about: %v", err)
	}
}

// TestAttackFindSnapshotSubstituted: asked for snapshot ab12…, a server
// answering with another snapshot is caught.
func TestAttackFindSnapshotSubstituted(t *testing.T) {
	other := strings.Repeat("cd", 32)
	_, c := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.Snapshot{ID: other, Host: "h", Tree: strings.Repeat("ef", 32)})
	})
	if s, err := c.Vault("a").FindSnapshot(context.Background(), "AB12"); err == nil {
		t.Fatalf("asked for ab12, accepted snapshot %s", s.ID)
	}
	if _, err := c.Vault("a").FindSnapshot(context.Background(), "cd"); err != nil {
		t.Fatalf("a matching answer refused: %v", err)
	}
}

// TestAttackCheckEventBounded: one event of a check's progress stream is
// at most 1 MiB; a server sending a larger one gets an error, not a
// buffer that grows to a gigabyte.
func TestAttackCheckEventBounded(t *testing.T) {
	_, c := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"progress":{"phase":"` + strings.Repeat("x", 8<<20) + `"}}` + "\n"))
		w.Write([]byte(`{"report":{"packs":1}}` + "\n"))
	})
	_, err := c.Vault("a").Check(context.Background(), false, func(api.CheckProgress) {})
	if err == nil {
		t.Fatal("an 8 MiB progress event was accepted")
	}
}

// TestAttackJSONAmplification: a JSON answer that would decode into
// millions of empty records ("[{},{},…]": three bytes each, hundreds of
// bytes decoded) is refused before decoding.
func TestAttackJSONAmplification(t *testing.T) {
	body := []byte("[" + strings.Repeat("{},", 1_500_000) + "{}]")
	_, c := hostile(t, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	if toks, err := c.Tokens(context.Background()); err == nil {
		t.Fatalf("%d empty tokens from a %d MiB answer accepted", len(toks), len(body)>>20)
	}
	if o, v := countJSON([]byte(`[{"a":"{,[\"}"},{"b":[1,2]}]`)); o != 2 || v != 6 {
		t.Errorf("countJSON: %d objects, %d values", o, v)
	}
}
