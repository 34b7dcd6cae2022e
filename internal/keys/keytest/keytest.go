// Package keytest is the conformance suite every vault.KeyProvider
// implementation runs from its own tests: the platform keystore, rsa-file,
// PKCS#11 and whatever comes next.
//
// A provider's test describes how to make a fresh key, and how to revoke,
// restore and reopen it:
//
//	func TestConformance(t *testing.T) {
//		keytest.Run(t, keytest.Harness{
//			New: func(t *testing.T) *keytest.Fixture {
//				path := filepath.Join(t.TempDir(), "kek.pem")
//				writeKey(t, path)
//				p, err := rsafile.Open(path)
//				if err != nil {
//					t.Fatal(err)
//				}
//				return &keytest.Fixture{
//					Provider: p,
//					Reopen:   func(t *testing.T) (vault.KeyProvider, error) { return rsafile.Open(path) },
//					Revoke:   func(t *testing.T) { rename(t, path, path+".away") },
//					Restore:  func(t *testing.T) { rename(t, path+".away", path) },
//					Names:    []string{path},
//				}
//			},
//		})
//	}
//
// # What the suite requires
//
// The contract is vault.KeyProvider's: Unwrap fails with
// vault.ErrKeyUnavailable when the KEK cannot be reached or used, and with
// vault.ErrWrongKey when it can but does not open the wrapped key. The
// suite pins down the cases the contract leaves open:
//
//   - A WrappedKey whose KEK names another provider (or none), or another
//     version of the provider's key, fails with ErrKeyUnavailable: that
//     KEK is not reachable through this provider. One that names another
//     key of the same provider (another KeyID) fails with ErrKeyUnavailable
//     or ErrWrongKey: the provider reached a key, just not the one named,
//     and the platform keystore reports that as the wrong key file. An
//     empty version, which no key has, may also fail with vault.ErrCorrupt
//     (the keyring that recorded it is damaged).
//   - Data that does not open under the named KEK (another AAD, a flipped
//     bit, garbage, another key's ciphertext) fails with ErrWrongKey or
//     vault.ErrCorrupt, never with ErrKeyUnavailable: a caller must be able
//     to tell "the key is gone" from "these bytes are bad".
//   - Revocation fails closed with ErrKeyUnavailable, and the error names
//     the key (Current().KeyID or one of Fixture.Names) so that an operator
//     knows what to bring back; restoration needs no repair step. When a
//     revoked key stops working depends on the provider: see Revocation.
//   - No error, for any input, contains a secret that was wrapped or the
//     key's own material (raw, hex or base64), and no failed Unwrap
//     returns data. No input makes a provider panic.
//   - Wrap and Unwrap are safe for concurrent use.
//
// Subtests do not share keys and do not run in parallel, so a Fixture's
// functions may use the file system or a token freely.
package keytest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Harness describes a provider to the suite.
type Harness struct {
	// New makes a fresh key of the provider's kind (a new key file, a new
	// key object on the token, …) and returns a working provider whose
	// Current KEK is that key, with the means to reopen, revoke and restore
	// it. Each call makes a different key; the suite calls New once or
	// twice per subtest. New reports its own failures with t.Fatal.
	New func(t *testing.T) *Fixture

	// Revocation says when a revoked key stops working for the provider.
	// The zero value, RevokeLive, is the stricter behaviour.
	Revocation Revocation

	// SecretSizes are the secret lengths Wrap must accept and Unwrap must
	// return intact. nil means 32 and 64. Coffer wraps 32-byte secrets
	// only, so a provider may accept just 32; for every other length the
	// suite tries, Wrap must either fail or round-trip exactly (never
	// truncate or pad).
	SecretSizes []int

	// DeterministicWrap says that wrapping the same secret with the same
	// AAD may give the same bytes twice (AES key wrap, RFC 3394, is
	// deterministic). When false the suite requires two wraps to differ.
	// Either way the wrapped bytes must not contain the secret.
	DeterministicWrap bool
}

// Revocation says when a provider notices that its key was revoked.
type Revocation int

const (
	// RevokeLive: the provider reaches its key on every Wrap and Unwrap
	// (it reads the key file, asks the token or the KMS), so an open
	// provider fails with vault.ErrKeyUnavailable as soon as the key is
	// revoked, Wrap included (no new secret is wrapped under a key that is
	// gone), and works again as soon as it is restored. A provider opened
	// while the key is revoked either fails to open with
	// ErrKeyUnavailable or fails every Unwrap with it.
	RevokeLive Revocation = iota

	// RevokeAtOpen: the provider loads its key when opened and keeps it in
	// memory, so revocation takes effect at the next open (the next
	// process): opening while the key is revoked must fail with
	// vault.ErrKeyUnavailable naming the key, and opening after the key is
	// restored must work. An already open provider keeps working; the
	// suite does not check it while the key is revoked.
	RevokeAtOpen
)

func (r Revocation) String() string {
	switch r {
	case RevokeLive:
		return "live"
	case RevokeAtOpen:
		return "at open"
	}
	return fmt.Sprintf("Revocation(%d)", int(r))
}

// Fixture is one key made by Harness.New.
type Fixture struct {
	// Provider is a working provider on the key.
	Provider vault.KeyProvider

	// Reopen opens a new provider instance on the same key, as a restarted
	// process would, and returns what the provider's own constructor
	// returns, error included: after Revoke the suite expects that error
	// to be vault.ErrKeyUnavailable. Required.
	Reopen func(t *testing.T) (vault.KeyProvider, error)

	// Revoke makes the key unreachable the way its owner would: move the
	// key file away, remove the key object, revoke the KMS grant. Restore
	// undoes exactly that, so the same key material is reachable again
	// under the same name. Both nil when the provider's key cannot be
	// revoked from a test; the revocation subtest is then skipped.
	Revoke  func(t *testing.T)
	Restore func(t *testing.T)

	// Names are strings that name the key to an operator: the key file's
	// path, the token object's label. An ErrKeyUnavailable error caused by
	// Revoke must contain one of them or Provider.Current().KeyID.
	Names []string

	// Material is the key's secret material (the KEK bytes, an RSA
	// private exponent and primes, a private key's DER). No error may
	// contain any of it, raw, hex or base64. Optional: secrets the suite
	// wraps are always checked.
	Material [][]byte
}

// Run runs the suite on the provider h describes.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("keytest: Harness.New is nil")
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"Current", testCurrent},
		{"RoundTrip", testRoundTrip},
		{"OtherSecretSizes", testOtherSecretSizes},
		{"NotInTheClear", testNotInTheClear},
		{"AADBound", testAADBound},
		{"FlippedBit", testFlippedBit},
		{"Garbage", testGarbage},
		{"ForeignRef", testForeignRef},
		{"OtherKey", testOtherKey},
		{"Reopen", testReopen},
		{"RevokeRestore", testRevokeRestore},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// kit is one subtest's fixture plus everything that must not leak.
type kit struct {
	*Fixture
	h       Harness
	mu      sync.Mutex
	secrets [][]byte // every secret wrapped so far, checked against every error
}

func newKit(t *testing.T, h Harness) *kit {
	t.Helper()
	fx := h.New(t)
	if fx == nil || fx.Provider == nil {
		t.Fatal("keytest: Harness.New returned no provider")
	}
	if fx.Reopen == nil {
		t.Fatal("keytest: Fixture.Reopen is nil")
	}
	if (fx.Revoke == nil) != (fx.Restore == nil) {
		t.Fatal("keytest: Fixture.Revoke and Fixture.Restore must both be set or both be nil")
	}
	return &kit{Fixture: fx, h: h}
}

func (k *kit) sizes() []int {
	if k.h.SecretSizes == nil {
		return []int{32, 64}
	}
	return k.h.SecretSizes
}

// secret returns n random bytes and remembers them as a secret.
func (k *kit) secret(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	k.mu.Lock()
	k.secrets = append(k.secrets, bytes.Clone(b))
	k.mu.Unlock()
	return b
}

// aad returns an AAD shaped like seal.KeyAAD's: vault ID, purpose, version.
func aad(purpose string, version uint32) []byte {
	b := make([]byte, 32, 32+len(purpose)+4)
	rand.Read(b)
	b = append(b, purpose...)
	return append(b, byte(version), byte(version>>8), byte(version>>16), byte(version>>24))
}

// checkErr fails t if err, in any format, contains a secret the suite
// wrapped or the fixture's key material.
func (k *kit) checkErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if err.Error() == "" {
		t.Errorf("%s: error with an empty message", what)
	}
	k.mu.Lock()
	secrets := slices.Concat(k.secrets, k.Material)
	k.mu.Unlock()
	texts := []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
	for _, s := range secrets {
		if len(s) < 16 { // shorter values would match by chance
			continue
		}
		forms := []string{string(s), hex.EncodeToString(s), strings.ToUpper(hex.EncodeToString(s))}
		// Inside a longer base64 text the value may start at any of three
		// alignments, and its last group depends on what follows it.
		for off := range 3 {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
				e := enc.EncodeToString(s[off:])
				forms = append(forms, e[:len(e)-4])
			}
		}
		for _, txt := range texts {
			for _, f := range forms {
				if strings.Contains(txt, f) {
					t.Errorf("%s: the error contains key material or a wrapped secret: %q", what, strings.ReplaceAll(txt, f, "[LEAKED]"))
					return
				}
			}
		}
	}
}

// names is what an error about k's key may mention to name it.
func (k *kit) names() []string {
	var ns []string
	if id := k.Provider.Current().KeyID; id != "" {
		ns = append(ns, id)
	}
	for _, n := range k.Names {
		if n != "" {
			ns = append(ns, n)
		}
	}
	return ns
}

func (k *kit) checkNamesKey(t *testing.T, what string, err error) {
	t.Helper()
	for _, n := range k.names() {
		if strings.Contains(err.Error(), n) {
			return
		}
	}
	t.Errorf("%s: the error does not name the key (any of %q): %v", what, k.names(), err)
}

// call runs f, turning a panic into a test failure.
func call[T any](t *testing.T, what string, f func() (T, error)) (v T, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s panicked: %v", what, r)
			err = fmt.Errorf("keytest: %s panicked", what)
		}
	}()
	return f()
}

func (k *kit) wrap(t *testing.T, p vault.KeyProvider, secret, aad []byte) (vault.WrappedKey, error) {
	t.Helper()
	w, err := call(t, "Wrap", func() (vault.WrappedKey, error) { return p.Wrap(t.Context(), secret, aad) })
	k.checkErr(t, "Wrap", err)
	return w, err
}

func (k *kit) mustWrap(t *testing.T, p vault.KeyProvider, secret, aad []byte) vault.WrappedKey {
	t.Helper()
	w, err := k.wrap(t, p, secret, aad)
	if err != nil {
		t.Fatalf("Wrap of a %d-byte secret: %v", len(secret), err)
	}
	return w
}

func (k *kit) unwrap(t *testing.T, p vault.KeyProvider, w vault.WrappedKey, aad []byte) ([]byte, error) {
	t.Helper()
	b, err := call(t, "Unwrap", func() ([]byte, error) { return p.Unwrap(t.Context(), w, aad) })
	k.checkErr(t, "Unwrap", err)
	return b, err
}

func (k *kit) mustUnwrap(t *testing.T, p vault.KeyProvider, w vault.WrappedKey, aad, want []byte) {
	t.Helper()
	got, err := k.unwrap(t, p, w, aad)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Unwrap returned %d bytes that differ from the %d-byte secret wrapped", len(got), len(want))
	}
}

// mustFail checks that Unwrap fails with one of the sentinels in want and
// returns no data.
func (k *kit) mustFail(t *testing.T, what string, p vault.KeyProvider, w vault.WrappedKey, aad []byte, want ...error) error {
	t.Helper()
	got, err := k.unwrap(t, p, w, aad)
	if err == nil {
		t.Errorf("%s: Unwrap succeeded (%d bytes), want an error", what, len(got))
		return nil
	}
	if len(got) != 0 {
		t.Errorf("%s: Unwrap failed but returned %d bytes", what, len(got))
	}
	for _, s := range want {
		if errors.Is(err, s) {
			return err
		}
	}
	t.Errorf("%s: Unwrap error %q is none of %v", what, err, want)
	return err
}

var badData = []error{vault.ErrWrongKey, vault.ErrCorrupt}

func testCurrent(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	ref := p.Current()
	if ref.Provider == "" {
		t.Errorf("Current() = %+v: empty Provider", ref)
	}
	if ref.KeyID == "" {
		t.Errorf("Current() = %+v: empty KeyID", ref)
	}
	a := aad("root", 0)
	w := k.mustWrap(t, p, k.secret(t, 32), a)
	if w.KEK != ref {
		t.Errorf("Wrap recorded KEK %v, Current() is %v", w.KEK, ref)
	}
	if w.Alg == "" {
		t.Error("Wrap recorded no Alg")
	}
	if again := p.Current(); again != ref {
		t.Errorf("Current() changed from %v to %v", ref, again)
	}
	w2 := k.mustWrap(t, p, k.secret(t, 32), a)
	if w2.KEK != ref || w2.Alg != w.Alg {
		t.Errorf("second Wrap recorded %v %q, first %v %q", w2.KEK, w2.Alg, ref, w.Alg)
	}
}

func testRoundTrip(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	aads := map[string][]byte{
		"root":     aad("root", 0),
		"dek":      aad("dek", 7),
		"emptyAAD": {},
		"nilAAD":   nil,
		"longAAD":  bytes.Repeat([]byte("aad"), 1000),
	}
	for _, n := range k.sizes() {
		for name, a := range aads {
			t.Run(fmt.Sprintf("%dbytes/%s", n, name), func(t *testing.T) {
				secret := k.secret(t, n)
				keep := bytes.Clone(secret)
				keepAAD := bytes.Clone(a)
				w := k.mustWrap(t, p, secret, a)
				if !bytes.Equal(secret, keep) || !bytes.Equal(a, keepAAD) {
					t.Fatal("Wrap modified its arguments")
				}
				clear(secret) // Wrap must not keep a reference to the caller's secret
				data := bytes.Clone(w.Data)
				got, err := k.unwrap(t, p, w, a)
				if err != nil {
					t.Fatalf("Unwrap: %v", err)
				}
				if !bytes.Equal(got, keep) {
					t.Fatalf("Unwrap returned %d bytes that differ from the %d-byte secret wrapped", len(got), n)
				}
				if !bytes.Equal(w.Data, data) || !bytes.Equal(a, keepAAD) {
					t.Fatal("Unwrap modified its arguments")
				}
				clear(got) // the caller owns what Unwrap returns
				k.mustUnwrap(t, p, w, a, keep)
			})
		}
	}
}

func testOtherSecretSizes(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	a := aad("dek", 1)
	for _, n := range []int{0, 1, 16, 31, 33, 48, 63, 65, 128, 1024, 1 << 16} {
		if slices.Contains(k.sizes(), n) {
			continue
		}
		secret := k.secret(t, n)
		w, err := k.wrap(t, p, secret, a)
		if err != nil {
			continue // refusing a size is fine
		}
		got, err := k.unwrap(t, p, w, a)
		if err != nil {
			t.Errorf("Wrap accepted a %d-byte secret, Unwrap then failed: %v", n, err)
		} else if !bytes.Equal(got, secret) {
			t.Errorf("Wrap accepted a %d-byte secret, Unwrap returned %d different bytes", n, len(got))
		}
	}
}

func testNotInTheClear(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	a := aad("root", 0)
	for _, n := range k.sizes() {
		secret := k.secret(t, n)
		w1 := k.mustWrap(t, p, secret, a)
		w2 := k.mustWrap(t, p, secret, a)
		for _, w := range []vault.WrappedKey{w1, w2} {
			txt := string(w.Data) + w.Alg + w.KEK.String()
			for _, half := range [][]byte{secret[:n/2], secret[n/2:]} {
				if len(half) >= 8 && strings.Contains(txt, string(half)) {
					t.Errorf("the wrapped form of a %d-byte secret contains half of it in the clear", n)
				}
			}
			if strings.Contains(txt, hex.EncodeToString(secret)) || strings.Contains(txt, base64.StdEncoding.EncodeToString(secret)) {
				t.Errorf("the wrapped form of a %d-byte secret contains it in hex or base64", n)
			}
		}
		if !h.DeterministicWrap && bytes.Equal(w1.Data, w2.Data) {
			t.Errorf("two wraps of the same %d-byte secret and AAD are identical: Wrap is not randomized (set Harness.DeterministicWrap if that is by design)", n)
		}
		k.mustUnwrap(t, p, w1, a, secret)
		k.mustUnwrap(t, p, w2, a, secret)
	}
}

func testAADBound(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	a := aad("dek", 7)
	secret := k.secret(t, 32)
	w := k.mustWrap(t, p, secret, a)
	flip := func(i int) []byte { b := bytes.Clone(a); b[i] ^= 1; return b }
	others := map[string][]byte{
		"otherVault":    flip(0),
		"otherPurpose":  append(bytes.Clone(a[:32]), "root\x07\x00\x00\x00"...),
		"otherVersion":  flip(len(a) - 4),
		"lastByte":      flip(len(a) - 1),
		"truncated":     a[:len(a)-1],
		"extended":      append(bytes.Clone(a), 0),
		"empty":         {},
		"nil":           nil,
		"prefixOnly":    a[:32],
		"doubled":       slices.Concat(a, a),
		"shiftedByte":   slices.Concat([]byte{0}, a[:len(a)-1]),
		"sameLenZeroes": make([]byte, len(a)),
	}
	for name, other := range others {
		k.mustFail(t, "AAD "+name, p, w, other, badData...)
	}
	// A secret wrapped with an empty AAD opens only with an empty AAD.
	w0 := k.mustWrap(t, p, secret, nil)
	k.mustUnwrap(t, p, w0, []byte{}, secret)
	k.mustFail(t, "AAD given where none was bound", p, w0, []byte{0}, badData...)
	k.mustUnwrap(t, p, w, a, secret)
}

func testFlippedBit(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	a := aad("dek", 3)
	secret := k.secret(t, 32)
	w := k.mustWrap(t, p, secret, a)
	n := len(w.Data)
	if n == 0 {
		t.Fatal("Wrap returned no data")
	}
	// Every bit of small wrapped values; for large ones (an RSA
	// ciphertext) one bit of every byte, cycling through bit positions,
	// and every bit of the first and last 8 bytes.
	var bits []int
	for i := range n {
		if n <= 128 || i < 8 || i >= n-8 {
			for b := range 8 {
				bits = append(bits, 8*i+b)
			}
		} else {
			bits = append(bits, 8*i+i%8)
		}
	}
	for _, bit := range bits {
		bad := w
		bad.Data = bytes.Clone(w.Data)
		bad.Data[bit/8] ^= 1 << (bit % 8)
		if err := k.mustFail(t, fmt.Sprintf("bit %d of %d flipped", bit, 8*n), p, bad, a, badData...); err == nil && t.Failed() {
			return // one report is enough
		}
	}
	k.mustUnwrap(t, p, w, a, secret)
}

func testGarbage(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	a := aad("dek", 1)
	secret := k.secret(t, 32)
	w := k.mustWrap(t, p, secret, a)
	d := w.Data
	n := len(d)
	random := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }
	cases := map[string][]byte{
		"nil":           nil,
		"empty":         {},
		"oneByte":       d[:1],
		"truncatedBy1":  d[:n-1],
		"half":          d[:n/2],
		"withoutFirst":  d[1:],
		"extendedBy1":   append(bytes.Clone(d), 0),
		"prefixedBy1":   slices.Concat([]byte{d[0]}, d),
		"doubled":       slices.Concat(d, d),
		"zeroes":        make([]byte, n),
		"ones":          bytes.Repeat([]byte{0xff}, n),
		"randomSameLen": random(n),
		"random1KiB":    random(1 << 10),
		"huge1MiB":      random(1 << 20),
		"hugeZero16MiB": make([]byte, 16<<20),
	}
	for name, data := range cases {
		bad := w
		bad.Data = data
		k.mustFail(t, "data "+name, p, bad, a, badData...)
	}
	// Garbage in the other fields.
	for name, alg := range map[string]string{"emptyAlg": "", "unknownAlg": "coffer-test-no-such-alg"} {
		bad := w
		bad.Alg = alg
		if got, err := k.unwrap(t, p, bad, a); err == nil && !bytes.Equal(got, secret) {
			t.Errorf("%s: Unwrap returned a different secret", name)
		}
	}
	k.mustUnwrap(t, p, w, a, secret)
}

func testForeignRef(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	a := aad("root", 0)
	secret := k.secret(t, 32)
	w := k.mustWrap(t, p, secret, a)
	ref := w.KEK
	cases := []struct {
		name string
		ref  vault.KeyRef
		want []error
	}{
		{"zeroRef", vault.KeyRef{}, []error{vault.ErrKeyUnavailable}},
		{"emptyProvider", vault.KeyRef{KeyID: ref.KeyID, Version: ref.Version}, []error{vault.ErrKeyUnavailable}},
		{"otherProvider", vault.KeyRef{Provider: ref.Provider + "-other", KeyID: ref.KeyID, Version: ref.Version}, []error{vault.ErrKeyUnavailable}},
		{"otherVersion", vault.KeyRef{Provider: ref.Provider, KeyID: ref.KeyID, Version: ref.Version + "0"}, []error{vault.ErrKeyUnavailable}},
		{"otherKeyID", vault.KeyRef{Provider: ref.Provider, KeyID: ref.KeyID + "-other", Version: ref.Version}, []error{vault.ErrKeyUnavailable, vault.ErrWrongKey}},
		{"emptyKeyID", vault.KeyRef{Provider: ref.Provider, Version: ref.Version}, []error{vault.ErrKeyUnavailable, vault.ErrWrongKey}},
	}
	if ref.Version != "" {
		cases = append(cases, struct {
			name string
			ref  vault.KeyRef
			want []error
		}{"emptyVersion", vault.KeyRef{Provider: ref.Provider, KeyID: ref.KeyID}, []error{vault.ErrKeyUnavailable, vault.ErrCorrupt}})
	}
	for _, c := range cases {
		bad := w
		bad.KEK = c.ref
		k.mustFail(t, "KEK "+c.name+" ("+c.ref.String()+")", p, bad, a, c.want...)
	}
	k.mustUnwrap(t, p, w, a, secret)
}

func testOtherKey(t *testing.T, h Harness) {
	k := newKit(t, h)
	other := newKit(t, h)
	p, q := k.Provider, other.Provider
	if p.Current() == q.Current() {
		t.Fatalf("two fresh keys have the same KeyRef %v: a keyring could not tell them apart", p.Current())
	}
	if p.Current().Provider != q.Current().Provider {
		t.Errorf("two keys of one provider name different providers: %q, %q", p.Current().Provider, q.Current().Provider)
	}
	a := aad("dek", 2)
	secret := k.secret(t, 32)
	w := k.mustWrap(t, p, secret, a)
	// The realistic case: the wrong key file, token object or KMS key.
	err := k.mustFail(t, "another key", q, w, a, vault.ErrKeyUnavailable, vault.ErrWrongKey)
	other.checkErr(t, "another key", err)
	// Another key's ciphertext presented under this key's name: the data
	// does not open.
	forged := w
	forged.KEK = q.Current()
	err = k.mustFail(t, "another key's ciphertext under this key's ref", q, forged, a, badData...)
	other.checkErr(t, "another key's ciphertext", err)
	k.mustUnwrap(t, p, w, a, secret)
}

func testReopen(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	a := aad("root", 0)
	secrets := make([][]byte, 0, 3)
	var ws []vault.WrappedKey
	for range 3 {
		s := k.secret(t, 32)
		secrets = append(secrets, s)
		ws = append(ws, k.mustWrap(t, p, s, a))
	}
	q, err := call(t, "Reopen", func() (vault.KeyProvider, error) { return k.Reopen(t) })
	k.checkErr(t, "Reopen", err)
	if err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	if q.Current() != p.Current() {
		t.Errorf("reopened provider's Current() = %v, first instance's %v", q.Current(), p.Current())
	}
	for i, w := range ws {
		k.mustUnwrap(t, q, w, a, secrets[i])
	}
	// And the other way round.
	s := k.secret(t, 32)
	k.mustUnwrap(t, p, k.mustWrap(t, q, s, a), a, s)
}

func testRevokeRestore(t *testing.T, h Harness) {
	k := newKit(t, h)
	if k.Revoke == nil {
		t.Skip("the provider's key cannot be revoked from a test (Fixture.Revoke is nil)")
	}
	t.Logf("revocation takes effect %s", h.Revocation)
	p := k.Provider
	ref := p.Current()
	a := aad("dek", 5)
	secret := k.secret(t, 32)
	w := k.mustWrap(t, p, secret, a)

	k.Revoke(t)
	restored := false
	defer func() {
		if !restored {
			k.Restore(t)
		}
	}()

	// A new instance (a restarted process) cannot use the key.
	q, err := call(t, "Reopen", func() (vault.KeyProvider, error) { return k.Reopen(t) })
	k.checkErr(t, "Reopen after Revoke", err)
	switch {
	case err != nil:
		if !errors.Is(err, vault.ErrKeyUnavailable) {
			t.Errorf("Reopen after Revoke: %v, want ErrKeyUnavailable", err)
		}
		k.checkNamesKey(t, "Reopen after Revoke", err)
	case h.Revocation == RevokeAtOpen:
		t.Errorf("Reopen after Revoke succeeded; a provider that loads its key at open must fail to open a revoked key")
	default:
		err := k.mustFail(t, "Unwrap by a provider opened after Revoke", q, w, a, vault.ErrKeyUnavailable)
		if err != nil {
			k.checkNamesKey(t, "Unwrap by a provider opened after Revoke", err)
		}
	}

	// An open instance fails closed at once when it reaches its key on
	// every call.
	if h.Revocation == RevokeLive {
		err := k.mustFail(t, "Unwrap after Revoke", p, w, a, vault.ErrKeyUnavailable)
		if err != nil {
			k.checkNamesKey(t, "Unwrap after Revoke", err)
		}
		s2 := k.secret(t, 32)
		w2, err := k.wrap(t, p, s2, a)
		switch {
		case err == nil:
			t.Errorf("Wrap after Revoke succeeded (KEK %v): new secrets would be wrapped under a key that is gone", w2.KEK)
		case !errors.Is(err, vault.ErrKeyUnavailable):
			t.Errorf("Wrap after Revoke: %v, want ErrKeyUnavailable", err)
		default:
			k.checkNamesKey(t, "Wrap after Revoke", err)
		}
		if got := p.Current(); got != ref {
			t.Errorf("Current() changed from %v to %v on Revoke", ref, got)
		}
	}

	k.Restore(t)
	restored = true

	// No repair step: the open instance and a new one both work again.
	k.mustUnwrap(t, p, w, a, secret)
	s3 := k.secret(t, 32)
	w3 := k.mustWrap(t, p, s3, a)
	q, err = call(t, "Reopen", func() (vault.KeyProvider, error) { return k.Reopen(t) })
	k.checkErr(t, "Reopen after Restore", err)
	if err != nil {
		t.Fatalf("Reopen after Restore: %v", err)
	}
	k.mustUnwrap(t, q, w, a, secret)
	k.mustUnwrap(t, q, w3, a, s3)
	if got := p.Current(); got != ref {
		t.Errorf("Current() changed from %v to %v across Revoke and Restore", ref, got)
	}
}

func testConcurrent(t *testing.T, h Harness) {
	k := newKit(t, h)
	p := k.Provider
	shared := aad("root", 0)
	sharedSecret := k.secret(t, 32)
	sw := k.mustWrap(t, p, sharedSecret, shared)
	const workers, rounds = 8, 8
	secrets := make([][][]byte, workers)
	for g := range secrets {
		for range rounds {
			secrets[g] = append(secrets[g], k.secret(t, 32))
		}
	}
	errs := make(chan error, workers*rounds*3)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			a := aad("dek", uint32(g))
			for i := range rounds {
				w, err := p.Wrap(t.Context(), secrets[g][i], a)
				if err != nil {
					errs <- fmt.Errorf("worker %d: Wrap: %w", g, err)
					return
				}
				got, err := p.Unwrap(t.Context(), w, a)
				if err != nil {
					errs <- fmt.Errorf("worker %d: Unwrap: %w", g, err)
					return
				}
				if !bytes.Equal(got, secrets[g][i]) {
					errs <- fmt.Errorf("worker %d: Unwrap returned another worker's or a wrong secret", g)
				}
				got, err = p.Unwrap(t.Context(), sw, shared)
				if err != nil || !bytes.Equal(got, sharedSecret) {
					errs <- fmt.Errorf("worker %d: Unwrap of the shared key: %v", g, err)
				}
				if _, err := p.Unwrap(t.Context(), w, shared); err == nil {
					errs <- fmt.Errorf("worker %d: Unwrap with another worker's AAD succeeded", g)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		k.checkErr(t, "concurrent call", err)
		t.Error(err)
	}
}
