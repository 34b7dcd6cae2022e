package platform_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/keys/keytest"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestConformance runs the key provider suite on the platform keystore.
//
// The keystore reads its key file once, at Open, and keeps the KEKs in
// memory, so revocation (moving the key file away) takes effect at the
// next Open: keytest.RevokeAtOpen. It wraps 32-byte secrets only.
func TestConformance(t *testing.T) {
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	keytest.Run(t, keytest.Harness{
		Revocation:  keytest.RevokeAtOpen,
		SecretSizes: []int{32},
		New: func(t *testing.T) *keytest.Fixture {
			path := filepath.Join(t.TempDir(), "platform.key")
			ks, err := platform.Create(path, created)
			if err != nil {
				t.Fatal(err)
			}
			away := filepath.Join(t.TempDir(), "platform.key.moved")
			return &keytest.Fixture{
				Provider: ks,
				Reopen: func(*testing.T) (vault.KeyProvider, error) {
					ks, err := platform.Open(path)
					if err != nil {
						return nil, err // a nil interface, not a nil *Keystore
					}
					return ks, nil
				},
				Revoke:   func(t *testing.T) { rename(t, path, away) },
				Restore:  func(t *testing.T) { rename(t, away, path) },
				Names:    []string{path},
				Material: keyMaterial(t, path),
			}
		},
	})
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// keyMaterial reads the KEKs out of a key file, as documented in
// platform.go (a JSON object whose keys[].key are base64).
func keyMaterial(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kf struct {
		Keys []struct {
			Key []byte `json:"key"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		t.Fatal(err)
	}
	var m [][]byte
	for _, k := range kf.Keys {
		m = append(m, k.Key)
	}
	if len(m) == 0 {
		t.Fatalf("no key in %s", path)
	}
	return m
}
