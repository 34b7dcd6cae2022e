package keytest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/keys/keytest"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// token is an in-memory key store: one KEK that can be revoked.
type token struct {
	mu      sync.Mutex
	id      string
	kek     seal.Key
	revoked bool
}

// memProvider wraps with the token's KEK, reaching the token on every
// call (keytest.RevokeLive). flaw, when set, breaks one rule the suite
// checks; see flaws.
type memProvider struct {
	tok  *token
	flaw string
}

const memAlg = "keytest-hkdf-aes-256-gcm"

func (p *memProvider) Current() vault.KeyRef {
	return vault.KeyRef{Provider: "mem", KeyID: p.tok.id, Version: "1"}
}

func (p *memProvider) kek() (seal.Key, error) {
	p.tok.mu.Lock()
	defer p.tok.mu.Unlock()
	if p.tok.revoked {
		if p.flaw == "revokedIsWrongKey" {
			return seal.Key{}, fmt.Errorf("%w: mem key %s", vault.ErrWrongKey, p.tok.id)
		}
		if p.flaw == "revokedUnnamed" {
			return seal.Key{}, vault.ErrKeyUnavailable
		}
		return seal.Key{}, fmt.Errorf("%w: mem key %s was revoked: restore it", vault.ErrKeyUnavailable, p.tok.id)
	}
	return p.tok.kek, nil
}

func (p *memProvider) Wrap(_ context.Context, secret, aad []byte) (vault.WrappedKey, error) {
	kek, err := p.kek()
	if err != nil {
		return vault.WrappedKey{}, err
	}
	if p.flaw == "truncates" && len(secret) > 32 {
		secret = secret[:32]
	}
	salt := make([]byte, 32)
	if p.flaw != "deterministic" {
		rand.Read(salt)
	}
	if p.flaw == "ignoresAAD" {
		aad = nil
	}
	k := seal.Derive(kek, salt, "keytest/mem")
	var nonce [seal.NonceSize]byte // one message per derived key
	return vault.WrappedKey{KEK: p.Current(), Alg: memAlg, Data: seal.NewAEAD(k).Seal(salt, nonce[:], secret, aad)}, nil
}

func (p *memProvider) Unwrap(_ context.Context, w vault.WrappedKey, aad []byte) ([]byte, error) {
	if p.flaw != "ignoresRef" {
		if w.KEK.Provider != "mem" || w.KEK.Version != "1" {
			return nil, fmt.Errorf("%w: wrapped by %s", vault.ErrKeyUnavailable, w.KEK)
		}
		if w.KEK.KeyID != p.tok.id {
			return nil, fmt.Errorf("%w: wrapped by %s, this is mem key %s", vault.ErrWrongKey, w.KEK, p.tok.id)
		}
	}
	kek, err := p.kek()
	if err != nil {
		return nil, err
	}
	if p.flaw == "ignoresAAD" {
		aad = nil
	}
	if p.flaw == "panics" && len(w.Data) < 32 {
		_ = w.Data[31]
	}
	if len(w.Data) < 32+seal.Overhead {
		return nil, fmt.Errorf("%w: mem key %s: wrapped key too short", vault.ErrWrongKey, p.tok.id)
	}
	k := seal.Derive(kek, w.Data[:32], "keytest/mem")
	var nonce [seal.NonceSize]byte
	pt, err := seal.NewAEAD(k).Open(nil, nonce[:], w.Data[32:], aad)
	if err != nil {
		if p.flaw == "leaksKey" {
			return nil, fmt.Errorf("%w: mem key %x does not open it", vault.ErrWrongKey, kek[:])
		}
		return nil, fmt.Errorf("%w: mem key %s does not open it", vault.ErrWrongKey, p.tok.id)
	}
	return pt, nil
}

func memHarness(flaw string) keytest.Harness {
	return keytest.Harness{New: func(t *testing.T) *keytest.Fixture {
		var id [8]byte
		rand.Read(id[:])
		tok := &token{id: hex.EncodeToString(id[:]), kek: seal.NewRandomKey()}
		set := func(revoked bool) func(*testing.T) {
			return func(*testing.T) {
				tok.mu.Lock()
				defer tok.mu.Unlock()
				if flaw == "stickyRevoke" && !revoked {
					return
				}
				tok.revoked = revoked
			}
		}
		return &keytest.Fixture{
			Provider: &memProvider{tok: tok, flaw: flaw},
			Reopen:   func(*testing.T) (vault.KeyProvider, error) { return &memProvider{tok: tok, flaw: flaw}, nil },
			Revoke:   set(true),
			Restore:  set(false),
			Names:    []string{tok.id},
			Material: [][]byte{tok.kek[:]},
		}
	}}
}

// TestMem: an in-memory provider that keeps every rule passes the suite.
func TestMem(t *testing.T) {
	keytest.Run(t, memHarness(""))
}

// flaws maps each way memProvider can be broken to the subtest of the
// suite that must catch it.
var flaws = map[string]string{
	"ignoresAAD":        "AADBound",
	"deterministic":     "NotInTheClear",
	"truncates":         "OtherSecretSizes",
	"ignoresRef":        "ForeignRef",
	"panics":            "Garbage",
	"leaksKey":          "FlippedBit",
	"revokedIsWrongKey": "RevokeRestore",
	"revokedUnnamed":    "RevokeRestore",
	"stickyRevoke":      "RevokeRestore",
}

// TestSuiteCatches runs the suite on each broken provider in a child
// process and checks that the suite fails, in the subtest that should
// catch the flaw.
func TestSuiteCatches(t *testing.T) {
	if flaw := os.Getenv("KEYTEST_FLAW"); flaw != "" {
		keytest.Run(t, memHarness(flaw))
		return
	}
	if testing.Short() {
		t.Skip("runs a child test process per flaw")
	}
	for flaw, subtest := range flaws {
		t.Run(flaw, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSuiteCatches$", "-test.v")
			cmd.Env = append(os.Environ(), "KEYTEST_FLAW="+flaw)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("the suite passed a provider with flaw %s (err %v):\n%s", flaw, err, out)
			}
			if want := "--- FAIL: TestSuiteCatches/" + subtest + " "; !bytes.Contains(out, []byte(want)) {
				t.Errorf("flaw %s: no %q in the output:\n%s", flaw, want, tail(out))
			}
		})
	}
}

func tail(b []byte) string {
	lines := strings.Split(string(b), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
