//go:build !nocloudkms

package cloudkms

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"gocloud.dev/gcerrors"
	"gocloud.dev/secrets"
	"gocloud.dev/secrets/localsecrets"

	"github.com/coffer-backup/coffer/internal/vault"
)

// localScheme is the provider name of keys made by localKey: gocloud's
// localsecrets driver (NaCl secretbox under a key in memory) standing in
// for a KMS. Its advice is the generic one.
const localScheme = "localsecrets"

// codedErr is an error a test driver returns with a gocloud code.
type codedErr struct {
	code gcerrors.ErrorCode
	msg  string
}

func (e *codedErr) Error() string { return e.msg }

// testDriver is a gocloud driver.Keeper over another Keeper (localsecrets)
// that can be made to fail every call: revoked (PermissionDenied, as a KMS
// answers once a grant is gone) or with any error and code.
type testDriver struct {
	inner   *secrets.Keeper
	revoked *atomic.Bool
	failEnc atomic.Pointer[codedErr] // when set, Encrypt fails with it
	failDec atomic.Pointer[codedErr] // when set, Decrypt fails with it
}

func (d *testDriver) Encrypt(ctx context.Context, pt []byte) ([]byte, error) {
	if d.revoked != nil && d.revoked.Load() {
		return nil, &codedErr{gcerrors.PermissionDenied, "fake: the grant on this key was revoked"}
	}
	if e := d.failEnc.Load(); e != nil {
		return nil, e
	}
	return d.inner.Encrypt(ctx, pt)
}

func (d *testDriver) Decrypt(ctx context.Context, ct []byte) ([]byte, error) {
	if d.revoked != nil && d.revoked.Load() {
		return nil, &codedErr{gcerrors.PermissionDenied, "fake: the grant on this key was revoked"}
	}
	if e := d.failDec.Load(); e != nil {
		return nil, e
	}
	return d.inner.Decrypt(ctx, ct)
}

func (d *testDriver) Close() error            { return d.inner.Close() }
func (d *testDriver) ErrorAs(error, any) bool { return false }
func (d *testDriver) ErrorCode(err error) gcerrors.ErrorCode {
	var ce *codedErr
	if errors.As(err, &ce) {
		return ce.code
	}
	return gcerrors.Code(err) // localsecrets: Unknown
}

// localKey is a test KMS key: a localsecrets key, a KeyRef naming it, and
// a switch that revokes it.
type localKey struct {
	material [32]byte
	ref      vault.KeyRef
	revoked  *atomic.Bool
}

func newLocalKey(t testing.TB, id string) *localKey {
	t.Helper()
	k, err := localsecrets.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	return &localKey{material: k, ref: vault.KeyRef{Provider: localScheme, KeyID: id}, revoked: new(atomic.Bool)}
}

// provider opens a Provider on k, as Open would on a KMS key: the keeper
// is opened once, and the KMS (the test driver) checks access per call.
func (k *localKey) provider(t testing.TB) (*Provider, *testDriver) {
	t.Helper()
	d := &testDriver{inner: localsecrets.NewKeeper(k.material), revoked: k.revoked}
	p, err := newProvider(k.ref, localScheme, secrets.NewKeeper(d))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, d
}

func mustWrap(t testing.TB, p vault.KeyProvider, secret, aad []byte) vault.WrappedKey {
	t.Helper()
	w, err := p.Wrap(context.Background(), secret, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return w
}

// wantErr fails t unless err wraps want and its message contains every
// string in has.
func wantErr(t testing.TB, what string, err, want error, has ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %v", what, want)
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: %v\nwant %v", what, err, want)
	}
	for _, h := range has {
		if !strings.Contains(err.Error(), h) {
			t.Errorf("%s: error does not say %q: %v", what, h, err)
		}
	}
}
