package passphrase

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Passphrase is a secret typed or read from a file. It never prints.
type Passphrase struct{ b []byte }

// New returns a Passphrase holding a copy of b.
func NewPassphrase(b []byte) Passphrase { return Passphrase{b: bytes.Clone(b)} }

func (Passphrase) String() string                 { return "[redacted]" }
func (Passphrase) GoString() string               { return "[redacted]" }
func (Passphrase) Format(f fmt.State, _ rune)     { f.Write([]byte("[redacted]")) }
func (p Passphrase) Empty() bool                  { return len(p.b) == 0 }
func (p Passphrase) Equal(q Passphrase) bool      { return bytes.Equal(p.b, q.b) }
func (p *Passphrase) Wipe()                       { clear(p.b) }
func (p Passphrase) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// MinLength is the shortest passphrase a new slot accepts, in bytes.
const MinLength = 8

// Options configure a provider.
type Options struct {
	// Source says where the passphrase came from ("the terminal",
	// "COFFER_PASSWORD_FILE /etc/coffer/pw"), for messages. Never the
	// passphrase.
	Source string

	// params are the parameters of new slots and floor the least a slot
	// read must have: DefaultParams and MinParams outside this package's
	// tests (export_test.go), which use cheap ones.
	params, floor Params
}

func (o Options) withDefaults() Options {
	if o.params == (Params{}) {
		o.params = DefaultParams()
	}
	if o.floor == (Params{}) {
		o.floor = MinParams()
	}
	if o.Source == "" {
		o.Source = "the passphrase given"
	}
	return o
}

// Provider is a vault.KeyProvider on a slot set, unlocked by one of its
// passphrases. It is immutable and safe for concurrent use.
type Provider struct {
	slots Slots
	ref   vault.KeyRef
	opt   Options
	// unlocked is the index of the slot the passphrase opened, key its
	// private key. Wrap needs neither (it wraps to every slot's public
	// key); Unwrap uses them.
	unlocked int
	key      *ecdh.PrivateKey
}

var _ vault.KeyProvider = (*Provider)(nil)

// Create makes a slot set with one slot for pw. pw must have at least
// MinLength bytes.
func Create(pw Passphrase, opt Options) (*Provider, error) {
	opt = opt.withDefaults()
	if len(pw.b) < MinLength {
		return nil, fmt.Errorf("the passphrase is too short: use at least %d characters (a few words are easier to type and harder to guess)", MinLength)
	}
	s, key, err := newSlot(pw.b, opt.params)
	if err != nil {
		return nil, err
	}
	return newProvider(newSlots([]slot{s}), opt, 0, key), nil
}

func newProvider(s Slots, opt Options, unlocked int, key *ecdh.PrivateKey) *Provider {
	return &Provider{slots: s, ref: s.ref(), opt: opt, unlocked: unlocked, key: key}
}

// Open unlocks the slot set set (from SlotsOf) with pw: it derives the key
// of each slot in turn until one opens. It fails with vault.ErrWrongKey
// when none does, with vault.ErrKeyUnavailable when pw is empty (no
// passphrase was given), and with vault.ErrCorrupt when the set does not
// parse or a slot's parameters are out of bounds.
func Open(set []byte, pw Passphrase, opt Options) (*Provider, error) {
	opt = opt.withDefaults()
	if pw.Empty() {
		return nil, fmt.Errorf("%w: no passphrase from %s", vault.ErrKeyUnavailable, opt.Source)
	}
	s, rest, err := parseSlots(set, opt.floor, MaxParams())
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the passphrase slot set", vault.ErrCorrupt, len(rest))
	}
	for i := range s.list {
		if key, ok := s.list[i].open(pw.b); ok {
			return newProvider(s, opt, i, key), nil
		}
	}
	// SECURITY: one error whichever slot was tried last; it names neither
	// the passphrase nor anything derived from it.
	return nil, fmt.Errorf("%w: the passphrase from %s opens none of this vault's %d passphrase slots (%s)", vault.ErrWrongKey, opt.Source, len(s.list), s.ref().KeyID)
}

// Current implements vault.KeyProvider.
func (p *Provider) Current() vault.KeyRef { return p.ref }

// SlotInfo describes one slot.
type SlotInfo struct {
	ID     string
	Params Params
	// Unlocked: the passphrase this provider was opened with opens it.
	Unlocked bool
}

// Slots lists the provider's slots in order.
func (p *Provider) Slots() []SlotInfo {
	out := make([]SlotInfo, len(p.slots.list))
	for i := range p.slots.list {
		out[i] = SlotInfo{ID: p.slots.list[i].ID(), Params: p.slots.list[i].params, Unlocked: i == p.unlocked}
	}
	return out
}

// WithSlot returns a provider on p's slots and a new one for pw: a new
// KEK version, to rewrap the vault to (coffer key add --passphrase).
func (p *Provider) WithSlot(pw Passphrase) (*Provider, error) {
	if len(pw.b) < MinLength {
		return nil, fmt.Errorf("the new passphrase is too short: use at least %d characters", MinLength)
	}
	if len(p.slots.list) >= MaxSlots {
		return nil, fmt.Errorf("this vault has %d passphrases, the most it can have: remove one first (coffer key remove SLOT)", MaxSlots)
	}
	for i := range p.slots.list {
		if _, ok := p.slots.list[i].open(pw.b); ok {
			return nil, fmt.Errorf("that passphrase opens slot %s already: choose another", p.slots.list[i].ID())
		}
	}
	s, _, err := newSlot(pw.b, p.opt.params)
	if err != nil {
		return nil, err
	}
	list := append(slices.Clone(p.slots.list), s)
	return newProvider(newSlots(list), p.opt, p.unlocked, p.key), nil
}

// WithoutSlot returns a provider on p's slots but id (a slot ID or an
// unambiguous prefix of one): a new KEK version, to rewrap the vault to
// (coffer key remove SLOT). The slot p was unlocked with cannot be
// removed by its own passphrase, nor the last slot.
func (p *Provider) WithoutSlot(id string) (*Provider, error) {
	idx := -1
	for i := range p.slots.list {
		if len(id) >= 4 && len(id) <= 2*idSize && p.slots.list[i].ID()[:len(id)] == id {
			if idx >= 0 {
				return nil, fmt.Errorf("slot %q is ambiguous: give more of its ID (coffer key slots)", id)
			}
			idx = i
		}
	}
	switch {
	case idx < 0:
		return nil, fmt.Errorf("%w %q: coffer key slots lists them (give at least 4 hex digits)", errNoSlot, id)
	case len(p.slots.list) == 1:
		return nil, fmt.Errorf("slot %s is the vault's only passphrase: add another first (coffer key add --passphrase), or switch keys (coffer key use-pmk)", p.slots.list[idx].ID())
	case idx == p.unlocked:
		return nil, fmt.Errorf("slot %s is the one this passphrase opens: run the removal with another of the vault's passphrases", p.slots.list[idx].ID())
	}
	list := slices.Delete(slices.Clone(p.slots.list), idx, idx+1)
	unlocked := p.unlocked
	if idx < unlocked {
		unlocked--
	}
	return newProvider(newSlots(list), p.opt, unlocked, p.key), nil
}

// wrapKey is the key sealing a secret for one slot: HKDF of the X25519
// agreement, salted with both public keys.
func wrapKey(shared, epk, pub []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, shared, append(bytes.Clone(epk), pub...), labelWrap, 32)
}

func (p *Provider) wrapAD(aad []byte) []byte {
	d := p.slots.digest()
	ad := append([]byte(labelWrap+"\x00"), d[:]...)
	return append(ad, aad...)
}

// Wrap implements vault.KeyProvider: the slot set, then for each slot a
// fresh ephemeral public key and the secret sealed under the agreement
// with the slot's key. It accepts 32-byte secrets only.
func (p *Provider) Wrap(ctx context.Context, secret, aad []byte) (vault.WrappedKey, error) {
	if len(secret) != secretSize {
		return vault.WrappedKey{}, fmt.Errorf("passphrase wrap: a %d-byte secret; only %d-byte keys are wrapped", len(secret), secretSize)
	}
	out := bytes.Clone(p.slots.raw)
	ad := p.wrapAD(aad)
	for i := range p.slots.list {
		s := &p.slots.list[i]
		pub, err := ecdh.X25519().NewPublicKey(s.pub[:])
		if err != nil {
			return vault.WrappedKey{}, fmt.Errorf("passphrase wrap: slot %s: %w", s.ID(), err)
		}
		eph, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return vault.WrappedKey{}, err
		}
		shared, err := eph.ECDH(pub)
		if err != nil {
			return vault.WrappedKey{}, fmt.Errorf("%w: passphrase slot %s has an unusable public key", vault.ErrCorrupt, s.ID())
		}
		epk := eph.PublicKey().Bytes()
		k, err := wrapKey(shared, epk, s.pub[:])
		clear(shared)
		if err != nil {
			return vault.WrappedKey{}, err
		}
		// SECURITY: k is fresh for every wrap (a new ephemeral key), so
		// the zero nonce is used once per key.
		out = append(out, epk...)
		out = gcm(k).Seal(out, make([]byte, 12), secret, ad)
		clear(k)
	}
	return vault.WrappedKey{KEK: p.ref, Alg: Alg, Data: out}, nil
}

// Unwrap implements vault.KeyProvider. It fails with ErrKeyUnavailable
// when w names another provider, set or version, with ErrCorrupt when w
// does not parse, and with ErrWrongKey when it carries another slot set
// than its name says or does not open.
func (p *Provider) Unwrap(ctx context.Context, w vault.WrappedKey, aad []byte) ([]byte, error) {
	if w.KEK != p.ref {
		return nil, fmt.Errorf("unwrap: %w: the key was wrapped by %s, and the passphrase opens %s: the vault's passphrases changed since (run the command again to read them anew)", vault.ErrKeyUnavailable, w.KEK, p.ref)
	}
	if w.Alg != Alg {
		return nil, fmt.Errorf("unwrap: %w: algorithm %q, want %q", vault.ErrCorrupt, w.Alg, Alg)
	}
	n := len(p.slots.list)
	if len(w.Data) != len(p.slots.raw)+n*entrySize {
		return nil, fmt.Errorf("unwrap: %w: a passphrase-wrapped key of %d bytes, want %d", vault.ErrCorrupt, len(w.Data), len(p.slots.raw)+n*entrySize)
	}
	// SECURITY: the record's slot set must be the one this provider was
	// opened on and its name says; the seal binds the set's digest too.
	if !bytes.Equal(w.Data[:len(p.slots.raw)], p.slots.raw) {
		return nil, fmt.Errorf("unwrap: %w: the record carries another passphrase slot set than %s", vault.ErrWrongKey, p.ref)
	}
	e := w.Data[len(p.slots.raw)+p.unlocked*entrySize:][:entrySize]
	epk, err := ecdh.X25519().NewPublicKey(e[:32])
	if err != nil {
		return nil, fmt.Errorf("unwrap: %w: bad ephemeral key", vault.ErrWrongKey)
	}
	shared, err := p.key.ECDH(epk)
	if err != nil {
		return nil, fmt.Errorf("unwrap: %w: bad ephemeral key", vault.ErrWrongKey)
	}
	k, err := wrapKey(shared, e[:32], p.slots.list[p.unlocked].pub[:])
	clear(shared)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	secret, err := gcm(k).Open(nil, make([]byte, 12), e[32:], p.wrapAD(aad))
	if err != nil {
		return nil, fmt.Errorf("unwrap: %w: the passphrase-wrapped key does not open under slot %s", vault.ErrWrongKey, p.slots.list[p.unlocked].ID())
	}
	return secret, nil
}
