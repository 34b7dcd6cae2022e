// Package rsafile provides a customer-managed key provider whose key
// encryption key (KEK) is an RSA private key in a PEM file that the
// customer owns: moving the file away revokes the vault's access to its
// keys, putting it back restores it.
//
// Secrets are wrapped with RSA-OAEP (SHA-256 for the hash and MGF1) with
// the wrap AAD as the OAEP label, so a wrapped key opens only with the AAD
// it was wrapped with.
//
// A key reference names the file and the key in it: Provider "rsa-file",
// KeyID the file's absolute path, Version the first 16 hex digits of the
// SHA-256 of the public key's SubjectPublicKeyInfo (DER), so another key
// put in the same file is another version, whatever its PEM encoding.
//
// The provider reads the key file on every Wrap and Unwrap (a few
// kilobytes; it re-parses only when the bytes change), so revocation
// fails closed at once, in running processes too, and restoration needs
// no repair step.
package rsafile

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Name is the provider name recorded in key references.
const Name = "rsa-file"

// Alg names the wrapping construction: RSAES-OAEP (RFC 8017) with SHA-256
// as hash and MGF1 hash, label = the wrap AAD.
const Alg = "rsa-oaep-sha256"

// scheme is the URI scheme of URI and ParseURI.
const scheme = "rsa-file"

// maxFileSize bounds what is read from the key file: a 3072-bit PKCS#8
// PEM key is under 2.5 KB.
const maxFileSize = 64 << 10

// Provider is an RSA key file. It implements vault.KeyProvider and is safe
// for concurrent use.
type Provider struct {
	path string
	ref  vault.KeyRef // fixed at Open: Current never changes

	mu  sync.Mutex
	raw []byte // the key file's bytes when key was parsed from them
	key *loaded
}

var _ vault.KeyProvider = (*Provider)(nil)

// loaded is a parsed key file.
type loaded struct {
	key     *rsa.PrivateKey
	version string
}

// Open reads the RSA private key in the PEM file at path, which must be
// absolute: cleaned (filepath.Clean), it becomes the KeyID of every key
// the provider wraps, so it must not depend on the working directory. The file holds one PKCS#1
// ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY") block with an RSA key of
// 2048 or 3072 bits. Every failure wraps vault.ErrKeyUnavailable.
func Open(path string) (*Provider, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%w: rsa-file key path %q is not absolute", vault.ErrKeyUnavailable, path)
	}
	path = filepath.Clean(path)
	p := &Provider{path: path}
	k, err := p.load()
	if err != nil {
		return nil, err
	}
	p.ref = vault.KeyRef{Provider: Name, KeyID: path, Version: k.version}
	return p, nil
}

// Path is the key file's location, the KeyID of Current.
func (p *Provider) Path() string { return p.path }

// Current implements vault.KeyProvider. It is the key the file held at
// Open.
func (p *Provider) Current() vault.KeyRef { return p.ref }

// Wrap implements vault.KeyProvider. It fails with vault.ErrKeyUnavailable
// when the key file is gone or no longer holds the key it held at Open: a
// secret is never wrapped under a key other than Current, nor under one
// its owner has taken away.
func (p *Provider) Wrap(_ context.Context, secret, aad []byte) (vault.WrappedKey, error) {
	k, err := p.load()
	if err != nil {
		return vault.WrappedKey{}, fmt.Errorf("wrap: %w", err)
	}
	if k.version != p.ref.Version {
		return vault.WrappedKey{}, fmt.Errorf("wrap: %w: rsa-file key %s now holds a different key (version %s) than when it was opened (version %s): put the original key file back, or restart to use the new key", vault.ErrKeyUnavailable, p.path, k.version, p.ref.Version)
	}
	// OAEP with SHA-256 carries at most k - 2*32 - 2 bytes (190 for
	// 2048-bit keys); Coffer's secrets are 32.
	if max := k.key.Size() - 2*sha256.Size - 2; len(secret) == 0 || len(secret) > max {
		return vault.WrappedKey{}, fmt.Errorf("wrap: secret of %d bytes: rsa-file key %s wraps 1 to %d bytes", len(secret), p.path, max)
	}
	// The AAD is the OAEP label: decryption recomputes its hash and fails
	// unless it matches, which binds the wrapped key to its vault, purpose
	// and version. OAEP is randomized, so equal secrets wrap differently.
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.key.PublicKey, secret, aad)
	if err != nil {
		return vault.WrappedKey{}, fmt.Errorf("wrap with rsa-file key %s: %w", p.path, err)
	}
	return vault.WrappedKey{KEK: p.ref, Alg: Alg, Data: ct}, nil
}

// Unwrap implements vault.KeyProvider. It fails with vault.ErrKeyUnavailable
// when w names another key, the key file is gone, or the file holds
// another key than the one that wrapped w, and with vault.ErrWrongKey when
// the key does not open w (another AAD, altered data).
func (p *Provider) Unwrap(_ context.Context, w vault.WrappedKey, aad []byte) ([]byte, error) {
	if w.KEK.Provider != Name {
		return nil, fmt.Errorf("unwrap: %w: the key was wrapped by %s, not by an rsa-file key", vault.ErrKeyUnavailable, w.KEK)
	}
	if w.KEK.KeyID != p.path {
		return nil, fmt.Errorf("unwrap: %w: the key was wrapped by rsa-file key %s, but this provider uses key file %s: open %s", vault.ErrKeyUnavailable, w.KEK.KeyID, p.path, URI(w.KEK.KeyID))
	}
	if w.Alg != Alg {
		return nil, fmt.Errorf("unwrap: %w: wrapping algorithm %q, rsa-file keys use %q", vault.ErrCorrupt, w.Alg, Alg)
	}
	k, err := p.load()
	if err != nil {
		return nil, fmt.Errorf("unwrap: %w", err)
	}
	if k.version != w.KEK.Version {
		return nil, fmt.Errorf("unwrap: %w: rsa-file key %s holds a different key (version %s) than the one that wrapped this vault's keys (version %s): put back the key file that holds version %s", vault.ErrKeyUnavailable, p.path, k.version, w.KEK.Version, w.KEK.Version)
	}
	// One error for every failure past this point, whatever its cause (a
	// wrong length, bad padding, another label): distinguishable OAEP
	// failures are a decryption oracle (Manger's attack).
	if len(w.Data) == k.key.Size() {
		if pt, err := rsa.DecryptOAEP(sha256.New(), nil, k.key, w.Data, aad); err == nil {
			return pt, nil
		}
	}
	return nil, fmt.Errorf("unwrap: %w: rsa-file key %s (version %s) does not open this wrapped key: it was wrapped for another vault or purpose, or altered", vault.ErrWrongKey, p.path, k.version)
}

// DropSecrets forgets the parsed private key and the file's bytes; the
// next Wrap or Unwrap reads the file again. A vault calls it when its
// unwrapped keys outlive their time to live, so that a key file removed
// meanwhile leaves nothing of the key in this process (beyond what the
// garbage collector has yet to reclaim: operations in flight may still
// hold it, so it is released, not overwritten).
func (p *Provider) DropSecrets() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.raw)
	p.raw, p.key = nil, nil
}

var _ vault.SecretDropper = (*Provider)(nil)

// load reads the key file, parsing it only when its bytes changed since
// the last call. Every error wraps vault.ErrKeyUnavailable and names the
// file; none contains its bytes.
func (p *Provider) load() (*loaded, error) {
	b, err := readFile(p.path)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.key != nil && subtle.ConstantTimeCompare(b, p.raw) == 1 {
		clear(b)
		return p.key, nil
	}
	k, err := parse(p.path, b)
	if err != nil {
		clear(b)
		return nil, err
	}
	clear(p.raw)
	p.raw, p.key = b, k
	return k, nil
}

func readFile(path string) ([]byte, error) {
	// Refuse a FIFO or device before opening it: opening a FIFO blocks.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, unreachable(path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: rsa-file key %s is not a regular file (%s)", vault.ErrKeyUnavailable, path, fi.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, unreachable(path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		clear(b)
		return nil, unreachable(path, err)
	}
	if len(b) > maxFileSize {
		clear(b)
		return nil, fmt.Errorf("%w: rsa-file key %s is larger than %d KiB: it is not a PEM private key", vault.ErrKeyUnavailable, path, maxFileSize>>10)
	}
	return b, nil
}

// unreachable says that the key file cannot be read and what to do.
func unreachable(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the message names the path already
	}
	what := "cannot be read"
	if errors.Is(err, fs.ErrNotExist) {
		what = "is missing"
	}
	return fmt.Errorf("%w: rsa-file key %s %s (%w): the vault's keys cannot be opened without it; restore the key file", vault.ErrKeyUnavailable, path, what, err)
}

// parse returns the key in the PEM file b read from path.
func parse(path string, b []byte) (*loaded, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: rsa-file key %s: %s", vault.ErrKeyUnavailable, path, fmt.Sprintf(format, args...))
	}
	var block *pem.Block
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if !strings.Contains(blk.Type, "PRIVATE KEY") {
			continue // a certificate or public key next to the key
		}
		if block != nil {
			return nil, bad("the file holds more than one private key: keep only the key encryption key in it")
		}
		block = blk
	}
	if block == nil {
		return nil, bad(`no PEM "RSA PRIVATE KEY" or "PRIVATE KEY" block found`)
	}
	if _, ok := block.Headers["Proc-Type"]; ok || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, bad("the key is encrypted: store it unencrypted in a file only the vault's user can read (openssl pkey -in encrypted.pem -out key.pem)")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, bad("a %q block: Coffer needs an RSA key of 2048 or 3072 bits (PEM %q or %q)", block.Type, "RSA PRIVATE KEY", "PRIVATE KEY")
	}
	if err != nil {
		// The x509 and asn1 errors describe the structure, never the
		// key's bytes.
		return nil, bad("invalid %q block: %v", block.Type, err)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, bad("a %s key, not an RSA key: Coffer needs an RSA key of 2048 or 3072 bits", keyKind(key))
	}
	// 2048 bits is the NIST minimum through 2030, 3072 beyond; larger
	// keys only slow every unwrap, smaller ones are weak.
	if n := rk.N.BitLen(); n != 2048 && n != 3072 {
		return nil, bad("a %d-bit RSA key: Coffer accepts RSA keys of 2048 or 3072 bits (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072)", n)
	}
	spki, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		return nil, bad("encode public key: %v", err)
	}
	// The version identifies the key itself, whatever the file's encoding:
	// another key in the same file is another version.
	sum := sha256.Sum256(spki)
	return &loaded{key: rk, version: hex.EncodeToString(sum[:8])}, nil
}

func keyKind(key any) string {
	switch key.(type) {
	case *ecdsa.PrivateKey:
		return "ECDSA"
	case ed25519.PrivateKey:
		return "Ed25519"
	case *ecdh.PrivateKey:
		return "ECDH"
	}
	return fmt.Sprintf("%T", key)
}

// URI returns the rsa-file URI of the key file at path, an absolute,
// clean path: rsa-file:///etc/coffer/cmk.pem.
func URI(path string) string {
	// url.URL escapes what a path may hold but a URI may not (space, %,
	// ?, #). A relative path gives a URI that ParseURI rejects.
	return (&url.URL{Scheme: scheme, Path: path}).String()
}

// ParseURI returns the key file path of an rsa-file URI such as
// rsa-file:///etc/coffer/cmk.pem. The path must be absolute and clean;
// hosts, user info, query strings and fragments are rejected.
func ParseURI(s string) (string, error) {
	const prefix = scheme + "://"
	if !strings.HasPrefix(s, prefix) {
		return "", fmt.Errorf("rsa-file URI %q: want %s/absolute/path/to/key.pem", s, prefix)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("rsa-file URI %q: %w", s, err)
	}
	switch {
	case u.Host != "" || u.User != nil:
		return "", fmt.Errorf("rsa-file URI %q names a host: the key file must be local (%s/path)", s, prefix)
	case u.RawQuery != "" || u.ForceQuery:
		return "", fmt.Errorf("rsa-file URI %q has a query string: rsa-file takes none", s)
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "", fmt.Errorf("rsa-file URI %q has a fragment: rsa-file takes none", s)
	}
	path := u.Path
	if !filepath.IsAbs(path) || strings.ContainsRune(path, 0) {
		return "", fmt.Errorf("rsa-file URI %q: the key file path must be absolute", s)
	}
	if filepath.Clean(path) != path {
		return "", fmt.Errorf("rsa-file URI %q: path %q is not clean (want %q)", s, path, filepath.Clean(path))
	}
	return path, nil
}
