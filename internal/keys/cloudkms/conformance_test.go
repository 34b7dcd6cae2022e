//go:build !nocloudkms

package cloudkms

import (
	"fmt"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/keys/keytest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestConformance runs the KeyProvider suite on a provider over gocloud's
// localsecrets driver: each key the suite asks for is a fresh localsecrets
// key, and revoking it makes the driver fail every call with
// PermissionDenied, as a KMS does once the grant is gone. The provider
// keeps its Keeper from open, so revocation is live: it takes effect at
// the next call.
func TestConformance(t *testing.T) {
	n := 0
	keytest.Run(t, keytest.Harness{
		Revocation:  keytest.RevokeLive,
		SecretSizes: []int{32}, // Coffer's secrets; other sizes are refused
		New: func(t *testing.T) *keytest.Fixture {
			n++
			k := newLocalKey(t, fmt.Sprintf("coffer-test-%d", n))
			p, _ := k.provider(t)
			return &keytest.Fixture{
				Provider: p,
				Reopen: func(t *testing.T) (vault.KeyProvider, error) {
					q, _ := k.provider(t)
					return q, nil
				},
				Revoke:   func(*testing.T) { k.revoked.Store(true) },
				Restore:  func(*testing.T) { k.revoked.Store(false) },
				Material: [][]byte{k.material[:]},
			}
		},
	})
}

// The same suite through Open, the real SDKs and gocloud's real drivers,
// against local fakes of each service's wire protocol (fakes_test.go).
// Revoking a key makes the fake answer as the service does when the grant
// is gone.

func TestConformanceAWSFake(t *testing.T) {
	awsEnv(t)
	f := newFakeAWS(t)
	n := 0
	keytest.Run(t, keytest.Harness{
		SecretSizes: []int{32},
		New: func(t *testing.T) *keytest.Fixture {
			n++
			name := fmt.Sprintf("alias/coffer-%d", n)
			f.add(name)
			return fakeFixture(t, f.uri(name), deps{}, func(fl fault) { f.set(name, fl) })
		},
	})
}

func TestConformanceVaultFake(t *testing.T) {
	f := newFakeVault(t)
	f.env(t)
	n := 0
	keytest.Run(t, keytest.Harness{
		SecretSizes: []int{32},
		New: func(t *testing.T) *keytest.Fixture {
			n++
			name := fmt.Sprintf("coffer-%d", n)
			f.add(name)
			return fakeFixture(t, "hashivault://"+name, deps{}, func(fl fault) { f.set(name, fl) })
		},
	})
}

func TestConformanceGCPFake(t *testing.T) {
	f := newFakeGCP(t)
	n := 0
	keytest.Run(t, keytest.Harness{
		SecretSizes: []int{32},
		New: func(t *testing.T) *keytest.Fixture {
			n++
			uri := gcpURI(fmt.Sprintf("coffer-%d", n))
			name := strings.TrimPrefix(uri, "gcpkms://")
			f.add(name)
			return fakeFixture(t, uri, deps{gcpClient: f.client}, func(fl fault) { f.set(name, fl) })
		},
	})
}

func TestConformanceAzureFake(t *testing.T) {
	f := newFakeAzure(t)
	n := 0
	keytest.Run(t, keytest.Harness{
		SecretSizes: []int{32},
		New: func(t *testing.T) *keytest.Fixture {
			n++
			key := fmt.Sprintf("coffer-%d", n)
			f.add(azureKeyName(key))
			return fakeFixture(t, azureURI(key), deps{azureClient: f.clientMaker(t, staticToken{})}, func(fl fault) { f.set(azureKeyName(key), fl) })
		},
	})
}

func fakeFixture(t *testing.T, uri string, d deps, set func(fault)) *keytest.Fixture {
	t.Helper()
	openIt := func(t *testing.T) (*Provider, error) {
		p, err := open(t.Context(), uri, d)
		if err == nil {
			t.Cleanup(func() { p.Close() })
		}
		return p, err
	}
	p, err := openIt(t)
	if err != nil {
		t.Fatalf("open %s: %v", uri, err)
	}
	return &keytest.Fixture{
		Provider: p,
		Reopen: func(t *testing.T) (vault.KeyProvider, error) {
			q, err := openIt(t)
			if err != nil {
				return nil, err
			}
			return q, nil
		},
		Revoke:  func(*testing.T) { set(denied) },
		Restore: func(*testing.T) { set(noFault) },
	}
}
