package passphrase_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-backup/coffer/internal/keys/keytest"
	"github.com/coffer-backup/coffer/internal/keys/passphrase"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestConformance runs the key provider suite: the key is a passphrase in
// a password file (COFFER_PASSWORD_FILE); moving the file away revokes a
// machine's access at its next start, putting it back restores it.
func TestConformance(t *testing.T) {
	n := 0
	keytest.Run(t, keytest.Harness{
		Revocation:  keytest.RevokeAtOpen,
		SecretSizes: []int{32},
		New: func(t *testing.T) *keytest.Fixture {
			n++
			path := filepath.Join(t.TempDir(), "password")
			pw := []byte("correct horse battery staple " + string(rune('a'+n)))
			if err := os.WriteFile(path, append(pw, '\n'), 0o600); err != nil {
				t.Fatal(err)
			}
			opt := passphrase.TestingOptions("COFFER_PASSWORD_FILE " + path)
			p, err := passphrase.Create(passphrase.NewPassphrase(pw), opt)
			if err != nil {
				t.Fatal(err)
			}
			w, err := p.Wrap(t.Context(), make([]byte, 32), nil)
			if err != nil {
				t.Fatal(err)
			}
			set, err := passphrase.SlotsOf(w)
			if err != nil {
				t.Fatal(err)
			}
			return &keytest.Fixture{
				Provider: p,
				Reopen: func(t *testing.T) (vault.KeyProvider, error) {
					pw, err := passphrase.FromFile(path)
					if err != nil {
						return nil, err
					}
					q, err := passphrase.Open(set, pw, opt)
					if err != nil {
						return nil, err
					}
					return q, nil
				},
				Revoke:   func(t *testing.T) { rename(t, path, path+".away") },
				Restore:  func(t *testing.T) { rename(t, path+".away", path) },
				Names:    []string{path},
				Material: [][]byte{pw},
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
