package keys

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// memURIRows is a catalog's key_uris table in memory.
type memURIRows map[vault.ID]map[string][]byte

func (m memURIRows) KeyURIs(_ context.Context, id vault.ID) (map[string][]byte, error) {
	out := map[string][]byte{}
	for k, v := range m[id] {
		out[k] = bytes.Clone(v)
	}
	return out, nil
}

func (m memURIRows) SetKeyURI(_ context.Context, id vault.ID, kek string, sealed []byte) error {
	if m[id] == nil {
		m[id] = map[string][]byte{}
	}
	m[id][kek] = bytes.Clone(sealed)
	return nil
}

func (m memURIRows) KeepKeyURI(_ context.Context, id vault.ID, kek string) error {
	for k := range m[id] {
		if k != kek {
			delete(m[id], k)
		}
	}
	return nil
}

// TestAttackCatalogKeyURIs: customer-key URIs kept in a shared catalog are
// sealed: the catalog holds no URI (nor PIN) in plaintext; another server
// given the deployment key reads them; a catalog writer can neither plant
// a URI of their own (pointing the server at a key, module or file of
// their choosing), nor move one vault's or key's URI to another, nor
// flip a byte, and a server with another deployment key reads none.
func TestAttackCatalogKeyURIs(t *testing.T) {
	rows := memURIRows{}
	dk := seal.NewRandomKey()
	a, b := NewCatalogURIs(rows, dk), NewCatalogURIs(rows, dk)
	v1, v2 := vault.ID{1}, vault.ID{2}
	k1 := vault.KeyRef{Provider: "pkcs11", KeyID: "hsm-key", Version: "1"}
	k2 := vault.KeyRef{Provider: "rsa-oaep-sha256", KeyID: "other", Version: "1"}
	const uri = "pkcs11:token=t;object=hsm-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=123456"
	if err := a.Set(v1, k1, uri); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(v2, k2, "rsa-file:///etc/coffer/keys/other.pem"); err != nil {
		t.Fatal(err)
	}
	if got, err := b.URI(v1, k1); err != nil || got != uri {
		t.Fatalf("URI through another server = %q, %v", got, err)
	}
	if bytes.Contains(rows[v1][refKey(k1)], []byte("123456")) || bytes.Contains(rows[v1][refKey(k1)], []byte("softhsm")) {
		t.Error("the catalog holds the URI in plaintext")
	}

	// Another vault's, or another key's, sealed URI moved here.
	rows[v1][refKey(k1)] = bytes.Clone(rows[v2][refKey(k2)])
	if _, err := b.URI(v1, k1); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("a URI moved from another vault and key: %v, want ErrWrongKey", err)
	}
	a.Set(v1, k1, uri)
	rows[v1][refKey(k2)] = bytes.Clone(rows[v1][refKey(k1)])
	if _, err := b.URI(v1, k2); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("a URI moved from another key of the vault: %v, want ErrWrongKey", err)
	}
	// One sealed under a deployment key of their own.
	mine := NewCatalogURIs(memURIRows{}, seal.NewRandomKey())
	rows[v1][refKey(k1)] = mine.seal(v1, refKey(k1), "pkcs11:object=x?module-path=/tmp/evil.so")
	if _, err := b.URI(v1, k1); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("a URI sealed under another deployment key: %v, want ErrWrongKey", err)
	}
	// A flipped byte, a truncated row.
	a.Set(v1, k1, uri)
	sealed := rows[v1][refKey(k1)]
	for _, i := range []int{0, 1, 40, len(sealed) - 1} {
		c := bytes.Clone(sealed)
		c[i] ^= 1
		rows[v1][refKey(k1)] = c
		if _, err := b.URI(v1, k1); !errors.Is(err, vault.ErrWrongKey) {
			t.Errorf("byte %d flipped: %v, want ErrWrongKey", i, err)
		}
	}
	rows[v1][refKey(k1)] = sealed[:20]
	if _, err := b.URI(v1, k1); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("truncated: %v, want ErrWrongKey", err)
	}
	rows[v1][refKey(k1)] = sealed
	if _, err := NewCatalogURIs(rows, seal.NewRandomKey()).URI(v1, k1); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("a server with another deployment key: %v, want ErrWrongKey", err)
	}
	// Keep forgets the others; a missing URI is "key unavailable".
	if err := a.Keep(v1, k1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.URI(v1, k2); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("a forgotten URI: %v, want ErrKeyUnavailable", err)
	}
	if got, err := b.URI(v1, k1); err != nil || got != uri {
		t.Errorf("the kept URI: %q, %v", got, err)
	}
}
