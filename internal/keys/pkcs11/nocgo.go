//go:build !cgo

package pkcs11

import (
	"context"
	"fmt"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Provider is a KEK in a PKCS#11 token. This build has no cgo, so no
// Provider can be opened.
type Provider struct{ cfg Config }

var _ vault.KeyProvider = (*Provider)(nil)

// Open parses uri and fails: PKCS#11 needs a build with cgo.
func Open(uri string) (*Provider, error) {
	cfg, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: pkcs11 %s: this coffer was built without cgo, and PKCS#11 modules are C libraries: use a build with cgo (CGO_ENABLED=1)", vault.ErrKeyUnavailable, cfg.keyName())
}

// Config is the parsed URI the provider was opened with.
func (p *Provider) Config() Config { return p.cfg }

// Current implements vault.KeyProvider.
func (p *Provider) Current() vault.KeyRef { return vault.KeyRef{Provider: Name} }

// Wrap implements vault.KeyProvider; it always fails.
func (p *Provider) Wrap(context.Context, []byte, []byte) (vault.WrappedKey, error) {
	return vault.WrappedKey{}, fmt.Errorf("%w: pkcs11: built without cgo", vault.ErrKeyUnavailable)
}

// Unwrap implements vault.KeyProvider; it always fails.
func (p *Provider) Unwrap(context.Context, vault.WrappedKey, []byte) ([]byte, error) {
	return nil, fmt.Errorf("%w: pkcs11: built without cgo", vault.ErrKeyUnavailable)
}
