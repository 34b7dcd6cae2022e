//go:build !nocloudkms

package keys

import (
	"errors"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/keys/cloudkms"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Open hands the four cloud KMS schemes to cloudkms.
func TestOpenCloudKMS(t *testing.T) {
	// Opening builds the client without calling Vault, so an address
	// where nothing listens is enough.
	t.Setenv("VAULT_SERVER_URL", "http://127.0.0.1:1")
	t.Setenv("VAULT_SERVER_TOKEN", "coffer-test-token")
	p, err := Open("hashivault://coffer")
	if err != nil {
		t.Fatal(err)
	}
	if want := (vault.KeyRef{Provider: "hashivault", KeyID: "coffer"}); p.Current() != want {
		t.Errorf("Current() = %v, want %v", p.Current(), want)
	}
	if _, ok := p.(*cloudkms.Provider); !ok {
		t.Errorf("Open returned a %T", p)
	}
	_, err = p.Wrap(t.Context(), make([]byte, 32), nil)
	if !errors.Is(err, vault.ErrKeyUnavailable) || !strings.Contains(err.Error(), "hashivault:coffer") {
		t.Errorf("Wrap with Vault unreachable: %v, want ErrKeyUnavailable naming the key", err)
	}

	for uri, says := range map[string]string{
		"awskms://":                          "no key named",
		"azurekeyvault://v.example/keys/k/1": "not a key vault",
		"gcpkms://projects/p":                "not a key's resource name",
		"hashivault://a/b":                   "one path segment",
	} {
		p, err := Open(uri)
		if err == nil || p != nil || !strings.Contains(err.Error(), says) {
			t.Errorf("Open(%q) = %v, %v; want an error saying %q", uri, p, err, says)
		}
	}
}
