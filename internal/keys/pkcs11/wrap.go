//go:build cgo

package pkcs11

import (
	"crypto"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/coffer-backup/coffer/internal/seal"
)

const (
	recordVersion = 0x01
	// adPrefix domain-separates this package's GCM additional data from
	// every other use of AES-GCM in Coffer (platform wraps use
	// "coffer/v1/wrap", packs their own labels).
	adPrefix = "coffer/v1/"
	// gcmNonceSize is the token GCM nonce: 96 bits, the size GCM is
	// defined for without GHASH-ing the nonce (crypto11 defaults to 16).
	gcmNonceSize = 12
)

// Record sizes: a wrapped 32-byte secret under an RSA key of k bytes is
// 1 + 2 + k + 32 + 16; under an AES key 1 + 12 + 32 + 16.
const (
	aesRecordSize = 1 + gcmNonceSize + seal.KeySize + seal.Overhead
	rsaTailSize   = seal.KeySize + seal.Overhead
)

// errWrongKey marks failures that prove the record does not open under the
// key: malformed bytes, or a GCM tag computed in software that does not
// verify. Failures inside the token are tokenError instead, because a
// token reports a bad OAEP padding or GCM tag with the same code
// (SoftHSM2: CKR_GENERAL_ERROR) as a real fault; the provider then probes
// the key to tell the two apart.
var errWrongKey = errors.New("does not open")

// tokenError is an error from a token operation on a record.
type tokenError struct{ err error }

func (e tokenError) Error() string { return e.err.Error() }
func (e tokenError) Unwrap() error { return e.err }

// decrypter is the token's RSA private-key operation:
// crypto11.RSAPrivateKey, or *rsa.PrivateKey in tests.
type decrypter interface {
	Decrypt(rand io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error)
}

// additionalData binds the algorithm and the caller's AAD. alg is one of
// the constants above, none of which contains a NUL, so the encoding is
// unambiguous.
func additionalData(alg string, aad []byte) []byte {
	b := make([]byte, 0, len(adPrefix)+len(alg)+1+len(aad))
	b = append(b, adPrefix...)
	b = append(b, alg...)
	b = append(b, 0)
	return append(b, aad...)
}

func rsaAlg(h crypto.Hash) string {
	if h == crypto.SHA1 {
		return AlgRSAOAEPSHA1
	}
	return AlgRSAOAEPSHA256
}

func rsaHash(alg string) (crypto.Hash, bool) {
	switch alg {
	case AlgRSAOAEPSHA256:
		return crypto.SHA256, true
	case AlgRSAOAEPSHA1:
		return crypto.SHA1, true
	}
	return 0, false
}

// wrapRSA seals secret under a fresh intermediate key K, and K under pub
// with RSA-OAEP(h). Before returning it has the token decrypt the OAEP
// block and compares the result with K: a wrap succeeds only if the key is
// present, usable and able to unwrap it again (and that is how the
// token's OAEP hash support is discovered).
func wrapRSA(pub *rsa.PublicKey, dec decrypter, h crypto.Hash, secret, aad []byte) ([]byte, error) {
	k := seal.NewRandomKey() // fresh per wrap: it seals one message, so the zero nonce below is safe
	defer k.Wipe()
	// The OAEP label stays empty: tokens rarely support one (SoftHSM2 2.6
	// fails any label with CKR_GENERAL_ERROR), so the AAD is bound by the
	// GCM step instead.
	e, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, k[:], nil)
	if err != nil {
		return nil, fmt.Errorf("rsa-oaep: %w", err) // only for a key too small for the hash
	}
	got, err := dec.Decrypt(rand.Reader, e, &rsa.OAEPOptions{Hash: h})
	if err != nil {
		return nil, tokenError{err}
	}
	ok := subtle.ConstantTimeCompare(got, k[:]) == 1
	clear(got)
	if !ok {
		return nil, errors.New("the token's RSA-OAEP decryption returned something other than what was encrypted with its public key")
	}
	out := make([]byte, 0, 3+len(e)+rsaTailSize)
	out = append(out, recordVersion)
	out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
	out = append(out, e...)
	var nonce [seal.NonceSize]byte // all zero: k seals this one message only
	return seal.NewAEAD(k).Seal(out, nonce[:], secret, additionalData(rsaAlg(h), aad)), nil
}

// wrapRSAAuto wraps with OAEP hash h, or, when h is 0, with SHA-256 and
// then SHA-1 if the token rejects SHA-256 as a mechanism or parameter it
// does not support. It returns the hash it used.
func wrapRSAAuto(pub *rsa.PublicKey, dec decrypter, h crypto.Hash, secret, aad []byte) ([]byte, crypto.Hash, error) {
	if h != 0 {
		data, err := wrapRSA(pub, dec, h, secret, aad)
		return data, h, err
	}
	data, err := wrapRSA(pub, dec, crypto.SHA256, secret, aad) // preferred
	if mechanismUnsupported(err) {
		data, err = wrapRSA(pub, dec, crypto.SHA1, secret, aad)
		return data, crypto.SHA1, err
	}
	return data, crypto.SHA256, err
}

// parseRSA splits an RSA record into the OAEP block and the GCM part. The
// OAEP block must be exactly modLen bytes, the size of the key's modulus.
func parseRSA(data []byte, modLen int) (e, ct []byte, err error) {
	if len(data) != 3+modLen+rsaTailSize || data[0] != recordVersion ||
		int(binary.BigEndian.Uint16(data[1:3])) != modLen {
		return nil, nil, fmt.Errorf("%w: malformed record (%d bytes) for a %d-bit RSA key", errWrongKey, len(data), modLen*8)
	}
	return data[3 : 3+modLen], data[3+modLen:], nil
}

// unwrapRSA opens a record made by wrapRSA with the algorithm it records.
func unwrapRSA(dec decrypter, modLen int, alg string, data, aad []byte) ([]byte, error) {
	h, ok := rsaHash(alg)
	if !ok {
		return nil, fmt.Errorf("%w: unknown algorithm %q", errWrongKey, alg)
	}
	e, ct, err := parseRSA(data, modLen)
	if err != nil {
		return nil, err
	}
	kb, err := dec.Decrypt(rand.Reader, e, &rsa.OAEPOptions{Hash: h})
	if err != nil {
		return nil, tokenError{err}
	}
	if len(kb) != seal.KeySize {
		clear(kb)
		return nil, fmt.Errorf("%w: intermediate key has %d bytes", errWrongKey, len(kb))
	}
	var k seal.Key
	copy(k[:], kb)
	clear(kb)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	secret, err := seal.NewAEAD(k).Open(nil, nonce[:], ct, additionalData(alg, aad))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", errWrongKey)
	}
	return secret, nil
}

// wrapAES seals secret with the token's AES-256-GCM under a random 96-bit
// nonce. crypto11's Seal panics when the token fails; that panic is turned
// back into an error here.
func wrapAES(aead cipher.AEAD, secret, aad []byte) (out []byte, err error) {
	out = make([]byte, 1+gcmNonceSize, aesRecordSize)
	out[0] = recordVersion
	// A random nonce under a long-lived key, the one exception to
	// docs/format.md §1's rule: the key is inside the token, which offers
	// no nonce-free AEAD through crypto11 and no key derivation, so there
	// is no per-wrap key to put a zero nonce under. The budget is large:
	// q wraps collide with probability below q²/2⁹⁷ (2⁻⁵⁷ after a million
	// wraps), and a KEK wraps only root secrets and DEKs.
	rand.Read(out[1 : 1+gcmNonceSize])
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, tokenError{fmt.Errorf("%v", r)}
		}
	}()
	return aead.Seal(out, out[1:1+gcmNonceSize], secret, additionalData(AlgAESGCM, aad)), nil
}

// unwrapAES opens a record made by wrapAES.
func unwrapAES(aead cipher.AEAD, alg string, data, aad []byte) ([]byte, error) {
	if alg != AlgAESGCM {
		return nil, fmt.Errorf("%w: unknown algorithm %q", errWrongKey, alg)
	}
	if len(data) != aesRecordSize || data[0] != recordVersion {
		return nil, fmt.Errorf("%w: malformed record (%d bytes)", errWrongKey, len(data))
	}
	secret, err := aead.Open(nil, data[1:1+gcmNonceSize], data[1+gcmNonceSize:], additionalData(alg, aad))
	if err != nil {
		return nil, tokenError{err}
	}
	if len(secret) != seal.KeySize {
		clear(secret)
		return nil, fmt.Errorf("%w: secret has %d bytes", errWrongKey, len(secret))
	}
	return secret, nil
}
