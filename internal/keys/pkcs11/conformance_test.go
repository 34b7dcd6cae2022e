//go:build cgo

package pkcs11

import (
	"fmt"
	"testing"

	"github.com/coffer-backup/coffer/internal/keys/keytest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestConformance runs the KeyProvider conformance suite on an RSA and an
// AES key. Each key the suite asks for is a new object on one SoftHSM2
// token (one per configuration: SOFTHSM2_CONF is per process); revoking
// deletes the object, restoring puts back a copy of the token directory
// taken just before.
func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name string
		gen  []string // pkcs11-tool arguments that make a key
		typ  string   // its pkcs11-tool --type
	}{
		{"RSA", []string{"--keypairgen", "--key-type", "rsa:3072"}, "privkey"},
		{"AES", []string{"--keygen", "--key-type", "aes:32", "--sensitive"}, "secrkey"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tk := newToken(t)
			n := 0
			keytest.Run(t, keytest.Harness{
				Revocation:  keytest.RevokeLive, // the token is asked on every Wrap and Unwrap
				SecretSizes: []int{32},          // Coffer's secrets; other sizes are refused
				New: func(t *testing.T) *keytest.Fixture {
					n++
					label := fmt.Sprintf("kek-%d", n)
					tk.tool(t, append(c.gen, "--label", label, "--id", fmt.Sprintf("%02x", 0x40+n), "--usage-decrypt")...)
					uri := tk.uri(label)
					backup := "tokens.before-revoking-" + label
					return &keytest.Fixture{
						Provider: open(t, uri),
						Reopen: func(*testing.T) (vault.KeyProvider, error) {
							p, err := Open(uri)
							if err != nil {
								return nil, err
							}
							return p, nil
						},
						Revoke: func(t *testing.T) {
							tk.sh(t, "cp -a tokens "+backup)
							tk.tool(t, "--delete-object", "--type", c.typ, "--label", label)
						},
						Restore: func(t *testing.T) { tk.sh(t, "rm -rf tokens && mv "+backup+" tokens") },
						Names:   []string{label},
					}
				},
			})
		})
	}
}
