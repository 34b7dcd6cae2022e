package authn

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/vault"
)

// fakeTokens is a TokenLookup over a map. lie, when set, is returned for
// every lookup, as a broken catalog might.
type fakeTokens struct {
	byHash map[[32]byte]vault.TokenRecord
	lie    *vault.TokenRecord
	err    error
	calls  int
}

func (f *fakeTokens) TokenByHash(ctx context.Context, hash [32]byte) (vault.TokenRecord, error) {
	f.calls++
	if f.err != nil {
		return vault.TokenRecord{}, f.err
	}
	if f.lie != nil {
		return *f.lie, nil
	}
	t, ok := f.byHash[hash]
	if !ok {
		return vault.TokenRecord{}, vault.ErrNotFound
	}
	return t, nil
}

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func newToken(t *testing.T, f *fakeTokens, rec vault.TokenRecord) string {
	t.Helper()
	tok, hash, id, err := Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rec.ID, rec.Hash = id, hash
	if rec.Created.IsZero() {
		rec.Created = now.Add(-time.Hour)
	}
	f.byHash[hash] = rec
	return string(tok)
}

func TestAuthenticate(t *testing.T) {
	f := &fakeTokens{byHash: map[[32]byte]vault.TokenRecord{}}
	a := &Authenticator{Catalog: f, Now: func() time.Time { return now }}

	good := newToken(t, f, vault.TokenRecord{Role: "backup-operator", Vault: "a"})
	forever := newToken(t, f, vault.TokenRecord{Role: "owner"})
	later := newToken(t, f, vault.TokenRecord{Role: "owner", Expires: now.Add(time.Nanosecond)})
	expired := newToken(t, f, vault.TokenRecord{Role: "owner", Expires: now})
	longExpired := newToken(t, f, vault.TokenRecord{Role: "owner", Expires: now.Add(-24 * time.Hour)})
	revoked := newToken(t, f, vault.TokenRecord{Role: "owner", Revoked: now.Add(-time.Minute)})
	revokedAhead := newToken(t, f, vault.TokenRecord{Role: "owner", Revoked: now.Add(time.Hour)})
	unknown, _, _, _ := Generate(rand.Reader)

	for _, tt := range []struct {
		name, header string
		ok           bool
		msg          string // in the error
	}{
		{"valid", "Bearer " + good, true, ""},
		{"scheme in lower case", "bearer " + good, true, ""},
		{"scheme in upper case", "BEARER " + forever, true, ""},
		{"expires a nanosecond later", "Bearer " + later, true, ""},

		{"missing", "", false, "no bearer token"},
		{"basic auth", "Basic dXNlcjpwYXNz", false, "not a bearer token"},
		{"no scheme", good, false, "not a bearer token"},
		{"scheme only", "Bearer ", false, "malformed"},
		{"scheme without space", "Bearer" + good, false, "not a bearer token"},
		{"two spaces", "Bearer  " + good, false, "malformed"},
		{"trailing space", "Bearer " + good + " ", false, "malformed"},
		{"trailing newline", "Bearer " + good + "\n", false, "malformed"},
		{"truncated", "Bearer " + good[:46], false, "malformed"},
		{"altered", "Bearer " + good[:10] + flip(good[10]) + good[11:], false, "unknown, expired or revoked"},
		{"unknown", "Bearer " + string(unknown), false, "unknown, expired or revoked"},
		{"expired now", "Bearer " + expired, false, "unknown, expired or revoked"},
		{"expired long ago", "Bearer " + longExpired, false, "unknown, expired or revoked"},
		{"revoked", "Bearer " + revoked, false, "unknown, expired or revoked"},
		{"revoked at a time ahead of the clock", "Bearer " + revokedAhead, false, "unknown, expired or revoked"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := a.Authenticate(t.Context(), tt.header)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				if rec.Hash != mustHash(t, tt.header[len("Bearer "):]) {
					t.Errorf("returned token %s, not the one presented", rec.ID)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("got %+v, %v; want ErrUnauthenticated", rec, err)
			}
			if rec != (vault.TokenRecord{}) {
				t.Errorf("returned a record with the error: %+v", rec)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			if len(tt.header) > 7 {
				checkNoEcho(t, err, tt.header[7:])
			}
		})
	}

	// Every request looks its token up: no cache.
	f.calls = 0
	for range 3 {
		if _, err := a.Authenticate(t.Context(), "Bearer "+good); err != nil {
			t.Fatal(err)
		}
	}
	if f.calls != 3 {
		t.Errorf("3 requests, %d lookups", f.calls)
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// TestAuthenticateWrongRow gives Authenticate a catalog that answers every
// lookup with another token's row: the constant-time comparison of the
// hashes must refuse it.
func TestAuthenticateWrongRow(t *testing.T) {
	f := &fakeTokens{byHash: map[[32]byte]vault.TokenRecord{}}
	a := &Authenticator{Catalog: f, Now: func() time.Time { return now }}
	owner := newToken(t, f, vault.TokenRecord{Role: "owner"})
	ownerRec := f.byHash[mustHash(t, owner)]

	// The owner's own token still works through the lying catalog.
	f.lie = &ownerRec
	if _, err := a.Authenticate(t.Context(), "Bearer "+owner); err != nil {
		t.Fatal(err)
	}
	// Another token is refused, and so is the owner's token when the row
	// returned has a hash one bit off.
	other, _, _, _ := Generate(rand.Reader)
	if rec, err := a.Authenticate(t.Context(), "Bearer "+string(other)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("catalog returned the owner's row for another token: got %+v, %v", rec, err)
	}
	near := ownerRec
	near.Hash[31] ^= 1
	f.lie = &near
	if rec, err := a.Authenticate(t.Context(), "Bearer "+owner); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("row with a hash one bit off: got %+v, %v", rec, err)
	}
}

func mustHash(t *testing.T, tok string) [32]byte {
	t.Helper()
	h, err := ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestAuthenticateCatalogError checks that a failing catalog fails the
// request without calling the token bad.
func TestAuthenticateCatalogError(t *testing.T) {
	boom := errors.New("disk on fire")
	f := &fakeTokens{err: boom}
	a := &Authenticator{Catalog: f, Now: func() time.Time { return now }}
	tok, _, _, _ := Generate(rand.Reader)
	_, err := a.Authenticate(t.Context(), "Bearer "+string(tok))
	if !errors.Is(err, boom) || errors.Is(err, ErrUnauthenticated) {
		t.Errorf("got %v, want %v and not ErrUnauthenticated", err, boom)
	}
	checkNoEcho(t, err, string(tok))
}

// TestRevocationImmediate uses the SQLite catalog: a token revoked through
// one handle fails at once through another, as when `coffer token revoke`
// runs beside the server.
func TestRevocationImmediate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	server, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	admin, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx := t.Context()
	if err := admin.CreateVault(ctx, vault.VaultRecord{ID: vault.ID{1}, Name: "a", Created: now}); err != nil {
		t.Fatal(err)
	}
	tok, hash, id, err := Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rec := vault.TokenRecord{ID: id, Name: "nas", Role: string(RoleBackupOperator), Vault: "a", Hash: hash, Created: now, Expires: now.Add(time.Hour)}
	if err := admin.AddToken(ctx, rec); err != nil {
		t.Fatal(err)
	}

	clock := now
	a := &Authenticator{Catalog: server, Now: func() time.Time { return clock }}
	got, err := a.Authenticate(ctx, "Bearer "+string(tok))
	if err != nil {
		t.Fatal(err)
	}
	if err := Authorize(got, PermBackupWrite, "a"); err != nil {
		t.Errorf("operator token on its vault: %v", err)
	}
	if err := Authorize(got, PermBackupWrite, "b"); !errors.Is(err, ErrForbidden) {
		t.Errorf("operator token on another vault: %v, want ErrForbidden", err)
	}

	clock = now.Add(time.Hour)
	if _, err := a.Authenticate(ctx, "Bearer "+string(tok)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("at its expiry: %v, want ErrUnauthenticated", err)
	}
	clock = now.Add(time.Minute)
	if _, err := a.Authenticate(ctx, "Bearer "+string(tok)); err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeToken(ctx, id, clock); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, "Bearer "+string(tok)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("after revocation: %v, want ErrUnauthenticated", err)
	}
}

func TestAuthenticateNilClock(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Authenticate with a nil Now did not panic")
		}
	}()
	a := &Authenticator{Catalog: &fakeTokens{}}
	a.Authenticate(context.Background(), "Bearer x")
}
