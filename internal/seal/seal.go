// Package seal provides Coffer's symmetric primitives: HKDF-SHA256 subkeys
// with one purpose label each, AES-256-GCM construction, counter nonces,
// and wrapping of 32-byte secrets under a key encryption key
// (docs/format.md §1).
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Purpose labels (docs/format.md §1). Each derived key has exactly one.
const (
	LabelChunkID  = "coffer/v1/chunk-id"
	LabelGearSeed = "coffer/v1/gear-seed"
	LabelPack     = "coffer/v1/pack"
	LabelSnapshot = "coffer/v1/snapshot"
	LabelWrap     = "coffer/v1/wrap"
	// Format 2 (docs/format.md §7.1, §7.3).
	LabelKeyringMAC = "coffer/v2/keyring-mac"
	LabelRootCommit = "coffer/v2/root-commit"
	// The key of the blobs' lookup keys in the catalog (§4.2).
	LabelIndexKey = "coffer/v2/index-key"
)

// KeySize is the size of every key and secret.
const KeySize = 32

// Overhead is the GCM tag size.
const Overhead = 16

// NonceSize is the GCM nonce size.
const NonceSize = 12

// Key is a 256-bit secret. Its String method never prints the bytes, so a
// Key that reaches a log or an error message leaks nothing.
type Key [KeySize]byte

func (Key) String() string   { return "[redacted]" }
func (Key) GoString() string { return "[redacted]" }

// Format redacts every fmt verb: without it %d, %o, %b, %c and %U (which
// do not use String) print the key bytes.
func (Key) Format(f fmt.State, _ rune) { f.Write([]byte("[redacted]")) }

// Wipe zeroes k.
func (k *Key) Wipe() { clear(k[:]) }

// NewRandomKey returns a fresh key from crypto/rand.
func NewRandomKey() Key {
	var k Key
	rand.Read(k[:]) // crypto/rand.Read never returns an error (Go 1.24+)
	return k
}

// Derive returns HKDF-SHA256(secret, salt, label) of 32 bytes.
func Derive(secret Key, salt []byte, label string) Key {
	b, err := hkdf.Key(sha256.New, secret[:], salt, label, KeySize)
	if err != nil {
		// Only possible for an output length above 255*32: programmer error.
		panic("seal: hkdf: " + err.Error())
	}
	var k Key
	copy(k[:], b)
	clear(b)
	return k
}

// NewAEAD returns AES-256-GCM under k.
func NewAEAD(k Key) cipher.AEAD {
	block, err := aes.NewCipher(k[:])
	if err != nil {
		panic("seal: aes: " + err.Error()) // unreachable: the key is 32 bytes
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("seal: gcm: " + err.Error())
	}
	return aead
}

// CounterNonce returns n as a 96-bit big-endian nonce. Callers use it only
// under keys derived from a fresh random salt, with each n used once.
func CounterNonce(n uint64) [NonceSize]byte {
	var nonce [NonceSize]byte
	binary.BigEndian.PutUint64(nonce[4:], n)
	return nonce
}

// ErrWrongKey reports that a wrapped secret did not open under the KEK.
var ErrWrongKey = errors.New("wrapped key does not open with this key")

const wrapVersion = 0x01

// WrappedSize is the size of a wrapped 32-byte secret.
const WrappedSize = 1 + 32 + KeySize + Overhead

// Wrap seals secret under kek: a fresh random salt derives a one-message
// wrap key, so the all-zero nonce is never reused (docs/format.md §1.1).
func Wrap(kek, secret Key, aad []byte) []byte {
	out := make([]byte, 1+32, WrappedSize)
	out[0] = wrapVersion
	rand.Read(out[1:33])
	k := Derive(kek, out[1:33], LabelWrap)
	defer k.Wipe()
	var nonce [NonceSize]byte
	return NewAEAD(k).Seal(out, nonce[:], secret[:], wrapAAD(aad))
}

// Unwrap opens a value made by Wrap. Any malformed or unauthentic input
// returns ErrWrongKey.
func Unwrap(kek Key, wrapped, aad []byte) (Key, error) {
	var secret Key
	if len(wrapped) != WrappedSize || wrapped[0] != wrapVersion {
		return secret, fmt.Errorf("%w: malformed wrapped key (%d bytes)", ErrWrongKey, len(wrapped))
	}
	k := Derive(kek, wrapped[1:33], LabelWrap)
	defer k.Wipe()
	var nonce [NonceSize]byte
	pt, err := NewAEAD(k).Open(nil, nonce[:], wrapped[33:], wrapAAD(aad))
	if err != nil {
		return secret, ErrWrongKey
	}
	copy(secret[:], pt)
	clear(pt)
	return secret, nil
}

func wrapAAD(aad []byte) []byte {
	b := make([]byte, 0, len(LabelWrap)+len(aad))
	return append(append(b, LabelWrap...), aad...)
}

// KeyAAD is the AAD binding a wrapped key to its vault, purpose ("root" or
// "dek") and version (docs/format.md §1.1).
func KeyAAD(vaultID [32]byte, purpose string, version uint32) []byte {
	b := make([]byte, 0, 32+len(purpose)+4)
	b = append(b, vaultID[:]...)
	b = append(b, purpose...)
	return binary.LittleEndian.AppendUint32(b, version)
}
