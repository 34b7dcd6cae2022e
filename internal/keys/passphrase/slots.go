// Package passphrase provides a key provider whose key encryption key is
// derived from passphrases: each passphrase opens one key slot, and any
// slot opens the vault (docs/format.md §1.1d).
//
// A slot holds an X25519 key pair whose private half is sealed under a key
// that Argon2id derives from the slot's passphrase and random salt. A
// secret is wrapped to the public key of every slot (an ephemeral X25519
// agreement per slot), so wrapping needs no passphrase and one passphrase
// is enough to unwrap. The slot set travels in every wrapped record, so a
// vault's store and one passphrase open it anywhere; the keyring MAC and
// the catalog anchor (docs/format.md §7) authenticate it like any other
// record byte.
//
// Adding or removing a passphrase is a new slot set, that is a new KEK
// version, and so a rewrap: the vault's next keyring generation wraps its
// keys, and a fresh DEK, to the new set only. A removed passphrase
// therefore opens no data written after its removal, even together with a
// saved copy of the older generation that its slot was part of.
package passphrase

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Constants of docs/format.md §1.1d.
const (
	// Name is the provider name recorded in key references.
	Name = "passphrase"
	// Alg names the wrapping construction.
	Alg = "argon2id-x25519-aes-256-gcm"

	labelSlot = "coffer/v1/passphrase-slot"
	labelWrap = "coffer/v1/passphrase-wrap"
	labelSet  = "coffer/v1/passphrase-slots"

	setVersion = 0x01
	// MaxSlots bounds the slots of one set (one byte counts them; 16 keep
	// an unlock with a wrong passphrase, which tries every slot, bounded).
	MaxSlots = 16
	idSize   = 8
	slotSize = idSize + 4 + 4 + 1 + 32 + 32 + 48 // id, t, m, p, salt, public key, sealed private key
	// entrySize is one slot's share of a wrapped 32-byte secret: the
	// ephemeral public key and the sealed secret.
	entrySize  = 32 + 32 + 16
	secretSize = 32
)

// Params are Argon2id's cost parameters (RFC 9106): passes, memory in KiB
// and lanes.
type Params struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

func (p Params) String() string {
	return fmt.Sprintf("argon2id t=%d m=%d MiB p=%d", p.Time, p.MemoryKiB>>10, p.Threads)
}

// DefaultParams are what new slots get: RFC 9106's second recommended
// setting (t=3, 64 MiB, 4 lanes), about 0.2 s and 64 MiB on one core of a
// 2024 server, more memory than restic's scrypt (N=2^15, r=8, p=1: 32 MiB,
// calibrated to 0.5 s at most). docs/format.md §1.1d.
func DefaultParams() Params { return Params{Time: 3, MemoryKiB: 64 << 10, Threads: 4} }

// MinParams is the floor a reader enforces on every slot: a slot whose
// parameters are cheaper is refused as corrupt, so that whoever can write
// the store cannot lower the cost of guessing a passphrase for slots made
// later by copying cheap parameters in (the parameters are authenticated
// too: an edited slot does not open).
func MinParams() Params { return Params{Time: 3, MemoryKiB: 64 << 10, Threads: 1} }

// MaxParams is the ceiling a reader enforces, so that an edited slot
// cannot make an unlock take gigabytes or minutes.
func MaxParams() Params { return Params{Time: 16, MemoryKiB: 1 << 20, Threads: 16} }

// within reports whether p is within [lo, hi] in every parameter.
func (p Params) within(lo, hi Params) bool {
	return p.Time >= lo.Time && p.Time <= hi.Time &&
		p.MemoryKiB >= lo.MemoryKiB && p.MemoryKiB <= hi.MemoryKiB &&
		p.Threads >= lo.Threads && p.Threads <= hi.Threads &&
		p.MemoryKiB >= 8*uint32(p.Threads) // Argon2's own minimum
}

// slot is one passphrase's key slot.
type slot struct {
	id      [idSize]byte
	params  Params
	salt    [32]byte
	pub     [32]byte
	sealed  [48]byte // the X25519 private key, sealed under the passphrase's key
	encoded [slotSize]byte
}

// ID is the slot's name: 16 hex digits.
func (s *slot) ID() string { return hex.EncodeToString(s.id[:]) }

// header is the slot without its sealed key: the AAD of the seal.
func (s *slot) header() []byte { return s.encoded[:slotSize-48] }

func (s *slot) encode() {
	b := s.encoded[:0]
	b = append(b, s.id[:]...)
	b = binary.LittleEndian.AppendUint32(b, s.params.Time)
	b = binary.LittleEndian.AppendUint32(b, s.params.MemoryKiB)
	b = append(b, s.params.Threads)
	b = append(b, s.salt[:]...)
	b = append(b, s.pub[:]...)
	b = append(b, s.sealed[:]...)
	_ = b
}

func decodeSlot(b []byte) slot {
	var s slot
	copy(s.encoded[:], b)
	copy(s.id[:], b)
	b = b[idSize:]
	s.params.Time = binary.LittleEndian.Uint32(b)
	s.params.MemoryKiB = binary.LittleEndian.Uint32(b[4:])
	s.params.Threads = b[8]
	b = b[9:]
	copy(s.salt[:], b)
	copy(s.pub[:], b[32:])
	copy(s.sealed[:], b[64:])
	return s
}

// slotKey is Argon2id of the passphrase under the slot's salt and
// parameters.
func (s *slot) slotKey(pw []byte) []byte {
	return argon2.IDKey(pw, s.salt[:], s.params.Time, s.params.MemoryKiB, s.params.Threads, 32)
}

// sealAD is the slot seal's additional data: the label, then the whole
// header, so that an edited ID, parameter, salt or public key opens
// nothing.
func (s *slot) sealAD() []byte {
	return append([]byte(labelSlot+"\x00"), s.header()...)
}

// open returns the slot's private key if pw is its passphrase.
func (s *slot) open(pw []byte) (*ecdh.PrivateKey, bool) {
	k := s.slotKey(pw)
	defer clear(k)
	// SECURITY: the slot key seals one message (this slot's private key;
	// a new slot has a new random salt), so the zero nonce is used once
	// per key.
	priv, err := gcm(k).Open(nil, make([]byte, 12), s.sealed[:], s.sealAD())
	if err != nil {
		return nil, false
	}
	defer clear(priv)
	key, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil || !bytes.Equal(key.PublicKey().Bytes(), s.pub[:]) {
		return nil, false // sealed under this passphrase, but not the slot's key: refuse
	}
	return key, true
}

// newSlot makes a slot for pw with parameters params.
func newSlot(pw []byte, params Params) (slot, *ecdh.PrivateKey, error) {
	var s slot
	rand.Read(s.id[:])
	rand.Read(s.salt[:])
	s.params = params
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return s, nil, err
	}
	copy(s.pub[:], key.PublicKey().Bytes())
	s.encode() // header first: it is the AAD
	k := s.slotKey(pw)
	defer clear(k)
	priv := key.Bytes()
	defer clear(priv)
	copy(s.sealed[:], gcm(k).Seal(nil, make([]byte, 12), priv, s.sealAD()))
	s.encode()
	return s, key, nil
}

// Slots is a slot set as every wrapped record carries it.
type Slots struct {
	list []slot
	raw  []byte // 0x01 || n || n × slot
}

func newSlots(list []slot) Slots {
	raw := []byte{setVersion, byte(len(list))}
	for i := range list {
		raw = append(raw, list[i].encoded[:]...)
	}
	return Slots{list: list, raw: raw}
}

// parseSlots reads a slot set from the start of b and returns it with the
// rest of b. Parameters outside [lo, hi] are refused.
func parseSlots(b []byte, lo, hi Params) (Slots, []byte, error) {
	if len(b) < 2 {
		return Slots{}, nil, fmt.Errorf("%w: passphrase slot set of %d bytes", vault.ErrCorrupt, len(b))
	}
	if b[0] != setVersion {
		return Slots{}, nil, fmt.Errorf("%w: passphrase slot set version %d, want %d", vault.ErrCorrupt, b[0], setVersion)
	}
	n := int(b[1])
	if n == 0 || n > MaxSlots {
		return Slots{}, nil, fmt.Errorf("%w: passphrase slot set of %d slots (1 to %d)", vault.ErrCorrupt, n, MaxSlots)
	}
	end := 2 + n*slotSize
	if len(b) < end {
		return Slots{}, nil, fmt.Errorf("%w: passphrase slot set truncated: %d bytes for %d slots", vault.ErrCorrupt, len(b), n)
	}
	list := make([]slot, n)
	for i := range list {
		list[i] = decodeSlot(b[2+i*slotSize:])
		s := &list[i]
		// SECURITY: bounded below so that a store writer cannot make a
		// guess cheaper, above so that it cannot exhaust memory or time.
		if !s.params.within(lo, hi) {
			return Slots{}, nil, fmt.Errorf("%w: passphrase slot %s has %s, outside the accepted %s … %s", vault.ErrCorrupt, s.ID(), s.params, lo, hi)
		}
		for j := range i {
			if list[j].id == s.id {
				return Slots{}, nil, fmt.Errorf("%w: passphrase slot %s is listed twice", vault.ErrCorrupt, s.ID())
			}
		}
	}
	return Slots{list: list, raw: bytes.Clone(b[:end])}, b[end:], nil
}

// digest is SHA-256 of the label and the encoded set: wrapped secrets
// bind it, and the KEK's version is its first 8 bytes in hex.
func (s Slots) digest() [32]byte {
	return sha256.Sum256(append([]byte(labelSet+"\x00"), s.raw...))
}

// ref is the KEK reference of the set: provider "passphrase", key ID the
// slot IDs joined by commas, version the first 16 hex digits of the
// digest, so any change of the set (a slot added, removed or edited) is
// another version.
func (s Slots) ref() vault.KeyRef {
	ids := make([]string, len(s.list))
	for i := range s.list {
		ids[i] = s.list[i].ID()
	}
	d := s.digest()
	return vault.KeyRef{Provider: Name, KeyID: strings.Join(ids, ","), Version: hex.EncodeToString(d[:8])}
}

// SlotsOf returns the slot set a wrapped record of this provider carries
// (the keyring's root), for Open. Nothing in it is secret; it is not
// authenticated until the vault that holds it has checked its keyring MAC.
func SlotsOf(w vault.WrappedKey) ([]byte, error) {
	if w.KEK.Provider != Name {
		return nil, fmt.Errorf("%w: the key was wrapped by %s, not by passphrases", vault.ErrKeyUnavailable, w.KEK)
	}
	s, _, err := parseSlots(w.Data, Params{Threads: 1}, MaxParams())
	if err != nil {
		return nil, err
	}
	return s.raw, nil
}

func gcm(k []byte) cipher.AEAD {
	block, err := aes.NewCipher(k)
	if err != nil {
		panic("passphrase: " + err.Error()) // only for a key of the wrong size: programmer error
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic("passphrase: " + err.Error())
	}
	return a
}

var errNoSlot = errors.New("no such passphrase slot")
