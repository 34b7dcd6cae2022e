//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// minRSABits is the smallest RSA modulus accepted as a KEK.
const minRSABits = 2048

// maxPINFile bounds what is read from a pin-source file.
const maxPINFile = 4096

// Provider is a KEK in a PKCS#11 token. It implements vault.KeyProvider;
// its methods are safe for concurrent use.
type Provider struct {
	cfg    Config
	module string  // the module's path
	kind   KeyType // PrivateKey (RSA) or SecretKey (AES), found by Open
	pub    *rsa.PublicKey
	ref    vault.KeyRef

	mu        sync.Mutex  // serialises token calls; guards what follows
	hash      crypto.Hash // the OAEP hash new RSA wraps use; 0 until the first wrap finds it
	badPIN    [32]byte    // SHA-256 of the PIN the token rejected
	badPINErr error       // non-nil while badPIN is set
}

var _ vault.KeyProvider = (*Provider)(nil)

// Open parses uri (see ParseURI), finds the key object in the token and
// returns a provider for it. It fails with vault.ErrKeyUnavailable when the
// module, the token or the key cannot be reached, or the PIN is rejected;
// the error names the token and the key and never contains the PIN.
func Open(uri string) (*Provider, error) {
	cfg, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	p := &Provider{cfg: cfg}
	if p.module, err = findModule(cfg); err != nil {
		return nil, err
	}
	err = p.withToken(context.Background(), func(c *crypto11.Context) error {
		kind, err := p.detect(c)
		if err != nil {
			return err
		}
		p.kind = kind
		if kind == PrivateKey {
			_, pub, ref, err := p.findRSA(c)
			p.pub, p.ref = pub, ref
			return err
		}
		_, ref, err := p.findAES(c)
		p.ref = ref
		return err
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Config is the parsed URI the provider was opened with.
func (p *Provider) Config() Config { return p.cfg }

// Current implements vault.KeyProvider.
func (p *Provider) Current() vault.KeyRef { return p.ref }

// Wrap implements vault.KeyProvider. secret must be 32 bytes.
func (p *Provider) Wrap(ctx context.Context, secret, aad []byte) (vault.WrappedKey, error) {
	if len(secret) != seal.KeySize {
		return vault.WrappedKey{}, fmt.Errorf("wrap: secret must be %d bytes", seal.KeySize)
	}
	var w vault.WrappedKey
	err := p.withToken(ctx, func(c *crypto11.Context) error {
		if p.kind == SecretKey {
			key, ref, err := p.findAES(c)
			if err != nil {
				return err
			}
			if err := p.sameKey(ref); err != nil {
				return err
			}
			aead, err := key.NewGCM()
			if err != nil {
				return p.unavailable("the token cannot do AES-GCM with it: %v", err)
			}
			data, err := wrapAES(aead, secret, aad)
			if err != nil {
				return p.unavailable("AES-GCM in the token failed: %v", err)
			}
			w = vault.WrappedKey{KEK: ref, Alg: AlgAESGCM, Data: data}
			return nil
		}
		key, pub, ref, err := p.findRSA(c)
		if err != nil {
			return err
		}
		if err := p.sameKey(ref); err != nil {
			return err
		}
		data, h, err := wrapRSAAuto(pub, key, p.hash, secret, aad)
		if err != nil {
			return p.unavailable("RSA-OAEP (%s) decryption in the token failed: %v", hashName(h), err)
		}
		p.hash = h // the token's OAEP support does not change: later wraps skip the probing
		w = vault.WrappedKey{KEK: ref, Alg: rsaAlg(h), Data: data}
		return nil
	})
	return w, err
}

// Unwrap implements vault.KeyProvider.
func (p *Provider) Unwrap(ctx context.Context, w vault.WrappedKey, aad []byte) ([]byte, error) {
	if w.KEK.Provider != Name {
		return nil, fmt.Errorf("%w: key was wrapped by %s, not a PKCS#11 key", vault.ErrKeyUnavailable, w.KEK)
	}
	if w.KEK.KeyID != p.ref.KeyID {
		return nil, p.wrongKey("it was wrapped by another key, %s: open that key instead", w.KEK)
	}
	_, isRSA := rsaHash(w.Alg)
	switch {
	case isRSA && p.kind == PrivateKey, w.Alg == AlgAESGCM && p.kind == SecretKey:
	case isRSA, w.Alg == AlgAESGCM:
		return nil, p.wrongKey("it was wrapped with %s by %s, which an %s cannot open", w.Alg, w.KEK, kindName(p.kind))
	default:
		return nil, p.wrongKey("unknown wrapping algorithm %q", w.Alg)
	}
	var secret []byte
	err := p.withToken(ctx, func(c *crypto11.Context) error {
		if p.kind == SecretKey {
			key, ref, err := p.findAES(c)
			if err != nil {
				return err
			}
			if err := p.sameVersion(w, ref); err != nil {
				return err
			}
			aead, err := key.NewGCM()
			if err != nil {
				return p.unavailable("the token cannot do AES-GCM with it: %v", err)
			}
			secret, err = unwrapAES(aead, w.Alg, w.Data, aad)
			if err != nil {
				return p.openFailed(err, func() error { return probeAES(aead) })
			}
			return nil
		}
		key, pub, ref, err := p.findRSA(c)
		if err != nil {
			return err
		}
		if err := p.sameVersion(w, ref); err != nil {
			return err
		}
		h, _ := rsaHash(w.Alg)
		secret, err = unwrapRSA(key, pub.Size(), w.Alg, w.Data, aad)
		if err != nil {
			if mechanismUnsupported(err) {
				return p.unavailable("the token does not support RSA-OAEP with %s, which this wrapped key (%s) needs (%v): unwrap it with an HSM that supports it and holds the same key", hashName(h), w.Alg, err)
			}
			return p.openFailed(err, func() error { return probeRSA(pub, key, h) })
		}
		return nil
	})
	return secret, err
}

// sameVersion fails when w names another version of the key than the
// object holds now: that version is not reachable here.
func (p *Provider) sameVersion(w vault.WrappedKey, ref vault.KeyRef) error {
	if w.KEK.Version == ref.Version {
		return nil
	}
	return p.unavailable("the wrapped key needs version %q of the key, but the object holds version %s (the key object was replaced?): restore that version of the key to the token, then retry", w.KEK.Version, ref.Version)
}

// openFailed turns a failed unwrap into ErrWrongKey or ErrKeyUnavailable.
// A failure inside the token is ambiguous (see the package comment), so the
// key is probed first.
func (p *Provider) openFailed(err error, probe func() error) error {
	var te tokenError
	if errors.As(err, &te) {
		if perr := probe(); perr != nil {
			return p.unavailable("it no longer works in the token: %v", perr)
		}
	}
	return p.wrongKey("the wrapped key was altered, or is bound to other data than it was wrapped with")
}

func (p *Provider) wrongKey(format string, args ...any) error {
	return fmt.Errorf("%w: pkcs11 %s (v%s) does not open this wrapped key: %s",
		vault.ErrWrongKey, p.cfg.keyName(), p.ref.Version, fmt.Sprintf(format, args...))
}

// unavailable is the error for a key that cannot be reached or used.
func (p *Provider) unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: pkcs11 %s: %s", vault.ErrKeyUnavailable, p.cfg.keyName(), fmt.Sprintf(format, args...))
}

// sameKey fails when the object no longer holds the key of Current: new
// wraps must be made by the key the vault's keyring names.
func (p *Provider) sameKey(ref vault.KeyRef) error {
	if ref == p.ref {
		return nil
	}
	return p.unavailable("the object now holds another key (%s v%s, opened as v%s): restore the original key to the token, or reopen to use the new one (rewrapping the vault's keys under it)", ref.KeyID, ref.Version, p.ref.Version)
}

// withToken runs fn with a fresh crypto11 context, logged in, and closes it
// afterwards (see "Sessions, revocation and recovery").
func (p *Provider) withToken(ctx context.Context, fn func(*crypto11.Context) error) error {
	// PKCS#11 calls cannot be interrupted: ctx is checked before the call
	// only.
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pin, err := p.pin()
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(pin))
	if p.badPINErr != nil && sum == p.badPIN {
		return p.badPINErr // never retry a rejected PIN: it would count towards the token's lockout
	}
	c, err := crypto11.Configure(&crypto11.Config{
		Path:        p.module,
		TokenLabel:  p.cfg.Token,
		Pin:         pin,
		MaxSessions: 2, // one login session plus one for the operation: calls are serialised
		GCMIVLength: gcmNonceSize,
	})
	if err != nil {
		return p.configureFailed(err, sum)
	}
	p.badPINErr = nil
	defer c.Close()
	return fn(c)
}

// configureFailed explains why crypto11.Configure failed. Its messages
// never contain the PIN (crypto11's do not either).
func (p *Provider) configureFailed(err error, pinSum [32]byte) error {
	src := "the pin-value in the key URI"
	fix := "open the key with a URI carrying the current user PIN"
	if p.cfg.PINSource != "" {
		src = "pin-source file " + p.cfg.PINSource
		fix = "put the current user PIN into " + p.cfg.PINSource + " (it is read at every use)"
	}
	var code pkcs11.Error
	if errors.As(err, &code) {
		switch code {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
			e := fmt.Errorf("%w: pkcs11 token %q rejected the user PIN from %s (%v): the PIN is wrong or was changed; %s, then retry (this PIN will not be tried again, so the token does not lock it)",
				vault.ErrKeyUnavailable, p.cfg.Token, src, code, fix)
			p.badPIN, p.badPINErr = pinSum, e
			return e
		case pkcs11.CKR_PIN_LOCKED:
			return fmt.Errorf("%w: the user PIN of pkcs11 token %q is locked: have the token's security officer unlock it, then retry", vault.ErrKeyUnavailable, p.cfg.Token)
		case pkcs11.CKR_PIN_EXPIRED:
			return fmt.Errorf("%w: the user PIN of pkcs11 token %q has expired: set a new one, %s, then retry", vault.ErrKeyUnavailable, p.cfg.Token, fix)
		}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return p.unavailable("module %s shows no token labelled %q: check that the HSM is reachable and the token present (SoftHSM2: SOFTHSM2_CONF and its token directory), then retry", p.module, p.cfg.Token)
	case strings.Contains(msg, "failed to create module context"):
		return p.unavailable("cannot load or initialise PKCS#11 module %s (%v): check that the module is installed and its configuration and the HSM are reachable (SoftHSM2: SOFTHSM2_CONF and its token directory), then retry", p.module, err)
	}
	return p.unavailable("cannot log in to the token: %v; check that the HSM is reachable, then retry", err)
}

// pin returns the PIN, reading pin-source afresh.
func (p *Provider) pin() (string, error) {
	if p.cfg.PINSource == "" {
		return p.cfg.PIN.reveal(), nil
	}
	f, err := os.Open(p.cfg.PINSource)
	if err != nil {
		return "", p.unavailable("cannot read the PIN: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPINFile+1))
	defer clear(b)
	if err != nil {
		return "", p.unavailable("cannot read the PIN: %v", err)
	}
	if len(b) > maxPINFile {
		return "", p.unavailable("PIN file %s is longer than %d bytes", p.cfg.PINSource, maxPINFile)
	}
	s := strings.TrimRight(string(b), "\r\n") // a PIN file may end in a newline; other whitespace is part of the PIN
	if s == "" {
		return "", p.unavailable("PIN file %s is empty: put the token's user PIN into it", p.cfg.PINSource)
	}
	return s, nil
}

// selector is the search template of the URI's object and id.
func (p *Provider) selector() crypto11.AttributeSet {
	a := crypto11.NewAttributeSet()
	if p.cfg.Object != "" {
		a.Set(crypto11.CkaLabel, []byte(p.cfg.Object))
	}
	if p.cfg.ID != nil {
		a.Set(crypto11.CkaId, p.cfg.ID)
	}
	return a
}

// notFound is the error for a missing key object.
func (p *Provider) notFound(what string) error {
	return p.unavailable("no %s matches it on the token: the key object was deleted, or the token's objects cannot be read; restore the key to the token (from the HSM's backup), then retry", what)
}

// detect finds which kind of key the URI names.
func (p *Provider) detect(c *crypto11.Context) (KeyType, error) {
	if p.cfg.Type != AnyType {
		return p.cfg.Type, nil
	}
	rsaKeys, err := c.FindRSAPrivateKeysWithAttributes(p.selector())
	if err != nil {
		return "", p.unavailable("cannot search the token for private keys: %v", err)
	}
	secretKeys, err := c.FindKeysWithAttributes(p.selector())
	if err != nil {
		return "", p.unavailable("cannot search the token for secret keys: %v", err)
	}
	switch {
	case len(rsaKeys) > 0 && len(secretKeys) > 0:
		return "", p.unavailable("both a private key and a secret key match: add type=private or type=secret-key to the key URI")
	case len(rsaKeys) > 0:
		return PrivateKey, nil
	case len(secretKeys) > 0:
		return SecretKey, nil
	}
	return "", p.notFound("RSA private key or AES secret key")
}

// findRSA finds the RSA private key and reads its public key.
func (p *Provider) findRSA(c *crypto11.Context) (crypto11.RSAPrivateKey, *rsa.PublicKey, vault.KeyRef, error) {
	keys, err := c.FindRSAPrivateKeysWithAttributes(p.selector())
	if err != nil {
		return nil, nil, vault.KeyRef{}, p.unavailable("cannot search the token: %v", err)
	}
	switch len(keys) {
	case 0:
		return nil, nil, vault.KeyRef{}, p.notFound("RSA private key")
	case 1:
	default:
		return nil, nil, vault.KeyRef{}, p.unavailable("%d RSA private keys match: add id= to the key URI to pick one", len(keys))
	}
	a, err := c.GetAttributes(keys[0], []crypto11.AttributeType{crypto11.CkaModulus, crypto11.CkaPublicExponent, crypto11.CkaLabel, crypto11.CkaId})
	if err != nil {
		return nil, nil, vault.KeyRef{}, p.unavailable("cannot read the key's public half: %v", err)
	}
	n := new(big.Int).SetBytes(value(a, crypto11.CkaModulus))
	e := new(big.Int).SetBytes(value(a, crypto11.CkaPublicExponent))
	if n.BitLen() < minRSABits || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
		return nil, nil, vault.KeyRef{}, p.unavailable("the key is not a usable RSA key of %d bits or more (%d bits)", minRSABits, n.BitLen())
	}
	pub := &rsa.PublicKey{N: n, E: int(e.Int64())}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, vault.KeyRef{}, p.unavailable("cannot encode its public key: %v", err)
	}
	sum := sha256.Sum256(der)
	ref := vault.KeyRef{Provider: Name, KeyID: p.keyID(value(a, crypto11.CkaLabel), value(a, crypto11.CkaId)),
		Version: hex.EncodeToString(sum[:8])}
	return keys[0], pub, ref, nil
}

// findAES finds the AES-256 secret key.
func (p *Provider) findAES(c *crypto11.Context) (*crypto11.SecretKey, vault.KeyRef, error) {
	keys, err := c.FindKeysWithAttributes(p.selector())
	if err != nil {
		return nil, vault.KeyRef{}, p.unavailable("cannot search the token: %v", err)
	}
	switch len(keys) {
	case 0:
		return nil, vault.KeyRef{}, p.notFound("AES secret key")
	case 1:
	default:
		return nil, vault.KeyRef{}, p.unavailable("%d secret keys match: add id= to the key URI to pick one", len(keys))
	}
	k := keys[0]
	a, err := c.GetAttributes(k, []crypto11.AttributeType{crypto11.CkaValueLen, crypto11.CkaLabel, crypto11.CkaId})
	if err != nil {
		return nil, vault.KeyRef{}, p.unavailable("cannot read the key's attributes: %v", err)
	}
	if k.Cipher != crypto11.CipherAES || ulong(value(a, crypto11.CkaValueLen)) != 32 {
		return nil, vault.KeyRef{}, p.unavailable("the secret key is not an AES-256 key")
	}
	id := value(a, crypto11.CkaId)
	version := "id-" + hex.EncodeToString(id)
	// CKA_CHECK_VALUE is read on its own: a token that does not know the
	// attribute fails the whole C_GetAttributeValue call.
	if cv, err := c.GetAttribute(k, crypto11.CkaCheckValue); err == nil && cv != nil && len(cv.Value) > 0 {
		version = hex.EncodeToString(cv.Value)
	}
	return k, vault.KeyRef{Provider: Name, KeyID: p.keyID(value(a, crypto11.CkaLabel), id), Version: version}, nil
}

// keyID is "token=<label>;object=<label>", or ";id=<id>" for an unlabelled
// object, from what the token reports.
func (p *Provider) keyID(label, id []byte) string {
	s := "token=" + escape(p.cfg.Token, false)
	if len(label) > 0 {
		return s + ";object=" + escape(string(label), false)
	}
	return s + ";id=" + escape(string(id), false)
}

// probeRSA checks that the token still decrypts with the key: OAEP-encrypt
// a random value with the public key and have the token decrypt it.
func probeRSA(pub *rsa.PublicKey, key decrypter, h crypto.Hash) error {
	x := seal.NewRandomKey()
	defer x.Wipe()
	e, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, x[:], nil)
	if err != nil {
		return err
	}
	got, err := key.Decrypt(rand.Reader, e, &rsa.OAEPOptions{Hash: h})
	if err != nil {
		return err
	}
	defer clear(got)
	if string(got) != string(x[:]) {
		return errors.New("the token decrypted a test value wrongly")
	}
	return nil
}

// probeAES checks that the token still seals and opens with the key.
func probeAES(aead interface {
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
}) (err error) {
	defer func() {
		if r := recover(); r != nil { // crypto11's Seal panics on token errors
			err = fmt.Errorf("%v", r)
		}
	}()
	nonce := make([]byte, gcmNonceSize)
	rand.Read(nonce)
	ad := []byte(adPrefix + "pkcs11-probe")
	ct := aead.Seal(nil, nonce, ad, ad)
	pt, err := aead.Open(nil, nonce, ct, ad)
	if err != nil {
		return err
	}
	if string(pt) != string(ad) {
		return errors.New("the token decrypted a test value wrongly")
	}
	return nil
}

// mechanismUnsupported reports whether err says the token does not
// support the mechanism or its parameters (how tokens reject an OAEP hash
// they lack; SoftHSM2 2.6 answers SHA-256 with CKR_ARGUMENTS_BAD).
func mechanismUnsupported(err error) bool {
	var code pkcs11.Error
	if !errors.As(err, &code) {
		return false
	}
	switch code {
	case pkcs11.CKR_ARGUMENTS_BAD, pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID:
		return true
	}
	return false
}

// findModule resolves the URI's module to a file.
func findModule(cfg Config) (string, error) {
	if cfg.ModulePath != "" {
		if _, err := os.Stat(cfg.ModulePath); err != nil {
			return "", fmt.Errorf("%w: pkcs11 %s: PKCS#11 module %s not found: install the HSM's PKCS#11 library (SoftHSM2: apt-get install softhsm2) or correct module-path", vault.ErrKeyUnavailable, cfg.keyName(), cfg.ModulePath)
		}
		return cfg.ModulePath, nil
	}
	dirs := moduleDirs()
	for _, d := range dirs {
		for _, f := range []string{cfg.ModuleName + ".so", "lib" + cfg.ModuleName + ".so"} {
			path := filepath.Join(d, f)
			if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
				return path, nil
			}
		}
	}
	return "", fmt.Errorf("%w: pkcs11 %s: no PKCS#11 module named %q (%s.so or lib%s.so) in %s: give its path with module-path=",
		vault.ErrKeyUnavailable, cfg.keyName(), cfg.ModuleName, cfg.ModuleName, cfg.ModuleName, strings.Join(dirs, ", "))
}

// moduleDirs are where module-name is looked for: the usual homes of
// PKCS#11 modules on Linux (Debian's multiarch directories included).
func moduleDirs() []string {
	var dirs []string
	for _, pattern := range []string{
		"/usr/lib/*-linux-gnu/pkcs11", "/usr/lib64/pkcs11", "/usr/lib/pkcs11", "/usr/local/lib/pkcs11",
		"/usr/lib/softhsm", "/usr/lib/*-linux-gnu/softhsm", "/usr/lib64/softhsm",
		"/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
	} {
		m, _ := filepath.Glob(pattern)
		dirs = append(dirs, m...)
	}
	return dirs
}

func value(a crypto11.AttributeSet, t crypto11.AttributeType) []byte {
	if v, ok := a[t]; ok && v != nil {
		return v.Value
	}
	return nil
}

// ulong decodes a CK_ULONG attribute (native byte order, as the module
// returns it).
func ulong(b []byte) uint64 {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b)
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return 0
}

func hashName(h crypto.Hash) string {
	if h == crypto.SHA1 {
		return "SHA-1"
	}
	return h.String()
}

func kindName(t KeyType) string {
	if t == SecretKey {
		return "AES key"
	}
	return "RSA key"
}
