//go:build !nocloudkms

// Package cloudkms provides a vault.KeyProvider whose key encryption key
// (KEK) is a cloud KMS key reached through gocloud.dev/secrets: AWS KMS
// (awskms://), Azure Key Vault (azurekeyvault://), Google Cloud KMS
// (gcpkms://) and the transit engine of HashiCorp Vault or OpenBao
// (hashivault://). The URI syntax is gocloud's (see ParseURI); the key
// never leaves the KMS, and every encryption and decryption with it is a
// call to gocloud's *secrets.Keeper.
//
// # Wrapped-key records
//
// gocloud's Keeper has no additional authenticated data, so the AAD is
// bound by a layer of Coffer's own (docs/format.md §1.1c, Alg
// "gocloud-kms+aes-256-gcm"): a fresh random 32-byte key K is encrypted by
// the KMS, and K seals the secret with AES-256-GCM under additional data
// that holds the AAD and the key reference. A wrap succeeds only after the
// KMS has decrypted its ciphertext of K back to K, so a key Coffer may
// encrypt with but not decrypt with never wraps anything.
//
// # Credentials
//
// Credentials never appear in a URI. Each SDK takes them from its standard
// environment, as gocloud's openers do: AWS from AWS_* variables, ~/.aws
// and instance roles; Azure from DefaultAzureCredential (AZURE_*
// variables, workload and managed identity, the Azure CLI); Google from
// Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, the
// attached service account); Vault from VAULT_SERVER_URL (or VAULT_ADDR)
// and VAULT_SERVER_TOKEN (or VAULT_TOKEN). Unlike gocloud's default
// openers for gcpkms and hashivault, which look credentials up once per
// process and keep a failure for good, Open looks them up every time, so
// fixing the environment and opening again is enough.
//
// # Errors
//
// Open opens the client and the Keeper once; the KMS checks access on
// every call, so revoking the key's grant takes effect at the next Wrap or
// Unwrap, and restoring it needs no repair. Every failure to reach or use
// the key is vault.ErrKeyUnavailable, naming the key (its KeyRef, never a
// credential) and saying what to do; a record the KMS refuses as not its
// ciphertext, or that does not authenticate, is vault.ErrWrongKey; a
// malformed record is vault.ErrCorrupt. When the KMS's answer does not
// say which of key or record is at fault (gocloud classifies no Vault
// error), the provider encrypts and decrypts a random value with the key:
// if that works, the record is at fault.
package cloudkms

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"

	"gocloud.dev/secrets"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Provider is a cloud KMS key. It implements vault.KeyProvider and is safe
// for concurrent use.
type Provider struct {
	ref    vault.KeyRef
	scheme string // whose advice errors give: ref.Provider (tests: localScheme)
	engine string // hashivault: the transit mount, for advice
	name   string // hashivault: the key name, for advice
	keeper *secrets.Keeper
	scrub  []string // strings never to show in an error (a Vault token)

	closeOnce sync.Once
	closers   []func() error
	closeErr  error
}

var _ vault.KeyProvider = (*Provider)(nil)

// Open opens the KMS key uri names (see ParseURI): it builds the SDK
// client with the credentials of the SDK's standard environment and
// gocloud's Keeper on it. It does not call the KMS (except what the SDK
// does to find credentials, such as asking a cloud metadata server), so a
// key that is unreachable or revoked fails at the first Wrap or Unwrap.
// Every failure wraps vault.ErrKeyUnavailable, except a malformed URI.
func Open(ctx context.Context, uri string) (*Provider, error) {
	return open(ctx, uri, deps{})
}

// newProvider returns a provider wrapping with keeper under ref. scheme
// chooses the advice errors give.
func newProvider(ref vault.KeyRef, scheme string, keeper *secrets.Keeper) (*Provider, error) {
	for _, f := range []string{ref.Provider, ref.KeyID, ref.Version} {
		if hasControl(f) {
			return nil, fmt.Errorf("cloudkms: key reference %q holds a control character", ref) // programmer error
		}
	}
	if ref.Provider == "" || ref.KeyID == "" || keeper == nil {
		return nil, errors.New("cloudkms: incomplete key reference or no keeper") // programmer error
	}
	return &Provider{ref: ref, scheme: scheme, keeper: keeper, closers: []func() error{keeper.Close}}, nil
}

// Current implements vault.KeyProvider.
func (p *Provider) Current() vault.KeyRef { return p.ref }

// Close releases the Keeper and the SDK client (a gRPC connection for
// gcpkms). The provider must not be used afterwards.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		for _, c := range p.closers {
			errs = append(errs, c())
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// Wrap implements vault.KeyProvider for 32-byte secrets (docs/format.md
// §1.1c). It fails with vault.ErrKeyUnavailable when the KMS does not
// encrypt with the key, or does not decrypt what it encrypted.
func (p *Provider) Wrap(ctx context.Context, secret, aad []byte) (vault.WrappedKey, error) {
	if len(secret) != seal.KeySize {
		return vault.WrappedKey{}, fmt.Errorf("wrap: secret of %d bytes: KMS key %s wraps %d-byte secrets", len(secret), p.ref, seal.KeySize)
	}
	k := seal.NewRandomKey() // fresh per wrap: it seals this one secret, so the zero nonce below is used once
	defer k.Wipe()
	e, err := p.encrypt(ctx, k[:])
	if err != nil {
		return vault.WrappedKey{}, p.failed("wrap", "encrypt", classify(err), err)
	}
	if len(e) == 0 || len(e) > maxKMSCiphertext {
		return vault.WrappedKey{}, fmt.Errorf("wrap: %w: KMS key %s: the KMS returned a ciphertext of %d bytes (want 1 to %d)", vault.ErrKeyUnavailable, p.ref, len(e), maxKMSCiphertext)
	}
	// Decrypt once before the record is used: a wrap must never produce a
	// record the key cannot open (an identity allowed to encrypt but not to
	// decrypt, a KMS that answers with something else).
	got, err := p.decrypt(ctx, e)
	if err != nil {
		return vault.WrappedKey{}, p.failed("wrap", "decrypt what it had just encrypted", classify(err), err)
	}
	ok := subtle.ConstantTimeCompare(got, k[:]) == 1
	clear(got)
	if !ok {
		return vault.WrappedKey{}, fmt.Errorf("wrap: %w: KMS key %s decrypted its own ciphertext to another value", vault.ErrKeyUnavailable, p.ref)
	}
	var nonce [seal.NonceSize]byte // all zero: k seals this one message only
	sealed := seal.NewAEAD(k).Seal(nil, nonce[:], secret, additionalData(p.ref, aad))
	return vault.WrappedKey{KEK: p.ref, Alg: Alg, Data: record{kmsCiphertext: e, sealed: sealed}.marshal()}, nil
}

// Unwrap implements vault.KeyProvider. It fails with vault.ErrKeyUnavailable
// when w names another key (or version) or the KMS cannot be reached or
// used, with vault.ErrCorrupt when w is not a record of Alg, and with
// vault.ErrWrongKey when the KMS refuses the record's ciphertext or the
// record does not authenticate (another AAD, altered bytes).
func (p *Provider) Unwrap(ctx context.Context, w vault.WrappedKey, aad []byte) ([]byte, error) {
	if err := p.sameKey(w.KEK); err != nil {
		return nil, err
	}
	if w.Alg != Alg {
		return nil, fmt.Errorf("unwrap: %w: wrapping algorithm %q, KMS key %s uses %q", vault.ErrCorrupt, w.Alg, p.ref, Alg)
	}
	r, err := parseRecord(w.Data)
	if err != nil {
		return nil, fmt.Errorf("unwrap with KMS key %s: %w: %v", p.ref, vault.ErrCorrupt, err)
	}
	kb, err := p.decryptKey(ctx, r.kmsCiphertext)
	if err != nil {
		return nil, err
	}
	if len(kb) != seal.KeySize {
		clear(kb)
		return nil, p.wrongKey("the KMS ciphertext holds a value of the wrong size", nil)
	}
	var k seal.Key
	copy(k[:], kb)
	clear(kb)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	secret, err := seal.NewAEAD(k).Open(nil, nonce[:], r.sealed, additionalData(p.ref, aad))
	if err != nil {
		return nil, p.wrongKey("authentication failed", nil)
	}
	return secret, nil
}

// sameKey checks that a record names this provider's key.
func (p *Provider) sameKey(ref vault.KeyRef) error {
	switch {
	case ref.Provider != p.ref.Provider:
		return fmt.Errorf("unwrap: %w: the key was wrapped by %s, not by %s key %s", vault.ErrKeyUnavailable, ref, p.ref.Provider, p.ref.KeyID)
	case ref.KeyID != p.ref.KeyID:
		return fmt.Errorf("unwrap: %w: the key was wrapped by KMS key %s, but this provider opens %s: open the first key's URI", vault.ErrKeyUnavailable, ref, p.ref)
	case ref.Version != p.ref.Version:
		return fmt.Errorf("unwrap: %w: the key was wrapped by version %q of KMS key %s, but this provider opens version %q: open a URI that names version %q", vault.ErrKeyUnavailable, ref.Version, p.ref.KeyID, p.ref.Version, ref.Version)
	}
	return nil
}

// decryptKey has the KMS decrypt a record's ciphertext of K.
func (p *Provider) decryptKey(ctx context.Context, e []byte) ([]byte, error) {
	k, err := p.decrypt(ctx, e)
	if err == nil {
		return k, nil
	}
	r := classify(err)
	switch decryptOutcome(r) {
	case outWrongKey:
		return nil, p.wrongKey("the KMS refused the record's ciphertext", err)
	case outUnavailable, outCanceled:
		return nil, p.failed("unwrap", "decrypt", r, err)
	}
	// The answer does not say whether the key or the record is at fault:
	// try the key on a value of our own.
	if perr := p.probe(ctx); perr != nil {
		if pr := classify(perr); pr != reasonUnknown {
			return nil, p.failed("unwrap", "decrypt (and a test encryption)", pr, perr)
		}
		return nil, p.failed("unwrap", "decrypt (and a test encryption)", r, err)
	}
	// The key works; ask once more in case the failure was transient.
	if k, err2 := p.decrypt(ctx, e); err2 == nil {
		return k, nil
	}
	return nil, p.wrongKey("the key encrypts and decrypts a test value but does not decrypt the record's ciphertext", err)
}

// probe encrypts and decrypts a random value with the key.
func (p *Provider) probe(ctx context.Context) error {
	var v [seal.KeySize]byte
	rand.Read(v[:])
	e, err := p.encrypt(ctx, v[:])
	if err != nil {
		return err
	}
	got, err := p.decrypt(ctx, e)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, v[:]) {
		return errors.New("the KMS decrypted a test value to another value")
	}
	return nil
}

// encrypt and decrypt call the Keeper. A driver that panics on a response
// it did not expect (gocloud's hashivault driver on a Vault answer without
// the field it reads) fails the call instead of the process.
func (p *Provider) encrypt(ctx context.Context, plaintext []byte) (ct []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			ct, err = nil, fmt.Errorf("the %s driver failed on the KMS's answer: %v", p.scheme, r)
		}
	}()
	return p.keeper.Encrypt(ctx, plaintext)
}

func (p *Provider) decrypt(ctx context.Context, ciphertext []byte) (pt []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			pt, err = nil, fmt.Errorf("the %s driver failed on the KMS's answer: %v", p.scheme, r)
		}
	}()
	return p.keeper.Decrypt(ctx, ciphertext)
}

// failed reports a failed KMS call of operation op ("wrap", "unwrap") at
// stage ("encrypt", "decrypt", …) for reason r: vault.ErrKeyUnavailable
// naming the key and what to do, or context.Canceled.
func (p *Provider) failed(op, stage string, r reason, err error) error {
	if r == reasonCanceled {
		return fmt.Errorf("%s with KMS key %s: %s: %w", op, p.ref, stage, context.Canceled)
	}
	return fmt.Errorf("%s: %w: KMS key %s, %s: %s: %s (%s)", op, vault.ErrKeyUnavailable, p.ref, stage, r, advice(p.scheme, p.engine, p.name, r), p.text(err))
}

// wrongKey reports a record that the key does not open.
func (p *Provider) wrongKey(why string, err error) error {
	detail := ""
	if err != nil {
		detail = " (" + p.text(err) + ")"
	}
	return fmt.Errorf("unwrap: %w: KMS key %s does not open this wrapped key: %s%s; it was wrapped for another vault or purpose or by another key, or it was altered", vault.ErrWrongKey, p.ref, why, detail)
}

// text is an SDK error's message, shown to operators: with any string
// the provider holds as a secret removed, on one line, bounded. The
// error itself is not wrapped: an SDK error chain holds requests and
// responses, which %#v would print.
func (p *Provider) text(err error) string {
	s := err.Error()
	for _, sec := range p.scrub {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	s = strings.Join(strings.Fields(s), " ")
	const max = 600
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
