//go:build nocloudkms

package cloudkms

import (
	"context"
	"fmt"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Provider is absent from a build made with -tags nocloudkms, which
// leaves out the cloud SDKs (half of a default binary's size).
type Provider struct{ ref vault.KeyRef }

// Open fails: this build has no cloud KMS support.
func Open(ctx context.Context, uri string) (*Provider, error) {
	return nil, fmt.Errorf("key URI %s: this coffer was built without cloud KMS support (-tags nocloudkms); use a default build", Redact(uri))
}

// Current, Wrap and Unwrap are never reached: Open returns no Provider.
func (p *Provider) Current() vault.KeyRef { return p.ref }

func (p *Provider) Wrap(context.Context, []byte, []byte) (vault.WrappedKey, error) {
	return vault.WrappedKey{}, fmt.Errorf("%w: built without cloud KMS support", vault.ErrKeyUnavailable)
}

func (p *Provider) Unwrap(context.Context, vault.WrappedKey, []byte) ([]byte, error) {
	return nil, fmt.Errorf("%w: built without cloud KMS support", vault.ErrKeyUnavailable)
}
