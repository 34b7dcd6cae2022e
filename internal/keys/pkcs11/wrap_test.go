//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
)

// softRSA is a software RSA key standing in for a token. noSHA256 makes it
// answer OAEP-SHA-256 the way SoftHSM2 2.6 does.
type softRSA struct {
	key      *rsa.PrivateKey
	noSHA256 bool
	calls    int
}

func (s *softRSA) Decrypt(r io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	s.calls++
	if o, ok := opts.(*rsa.OAEPOptions); ok && o.Hash == crypto.SHA256 && s.noSHA256 {
		return nil, pkcs11.Error(pkcs11.CKR_ARGUMENTS_BAD)
	}
	pt, err := s.key.Decrypt(r, msg, opts)
	if err != nil {
		return nil, pkcs11.Error(pkcs11.CKR_GENERAL_ERROR) // what SoftHSM2 says for bad padding
	}
	return pt, nil
}

var testRSA = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048) // size does not matter here; keeps the test fast
	if err != nil {
		panic(err)
	}
	return k
})

// specRSARecord builds an RSA record from the package comment's
// description, independently of wrapRSA.
func specRSARecord(t testing.TB, pub *rsa.PublicKey, h crypto.Hash, alg string, secret, aad []byte) []byte {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	e, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(k)
	gcm, _ := cipher.NewGCM(block)
	ad := append([]byte("coffer/v1/"+alg+"\x00"), aad...)
	out := []byte{0x01}
	out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
	out = append(out, e...)
	return gcm.Seal(out, make([]byte, 12), secret, ad)
}

func TestRSAConstruction(t *testing.T) {
	key := testRSA()
	secret := bytes.Repeat([]byte{0x5a}, 32)
	aad := []byte("vault-id|root|0")
	for _, tc := range []struct {
		name     string
		noSHA256 bool
		wantAlg  string
	}{
		{"token with SHA-256", false, AlgRSAOAEPSHA256},
		{"token with SHA-1 only", true, AlgRSAOAEPSHA1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := &softRSA{key: key, noSHA256: tc.noSHA256}
			data, h, err := wrapRSAAuto(&key.PublicKey, tok, 0, secret, aad)
			if err != nil {
				t.Fatal(err)
			}
			if rsaAlg(h) != tc.wantAlg {
				t.Fatalf("wrapped with %s, want %s", rsaAlg(h), tc.wantAlg)
			}
			if len(data) != 3+key.Size()+48 {
				t.Fatalf("record is %d bytes", len(data))
			}
			got, err := unwrapRSA(tok, key.Size(), tc.wantAlg, data, aad)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("unwrap: %v", err)
			}
			// The hash found is reused without probing again.
			tok.calls = 0
			if _, h2, err := wrapRSAAuto(&key.PublicKey, tok, h, secret, aad); err != nil || h2 != h || tok.calls != 1 {
				t.Fatalf("second wrap: hash %v, %d token calls, %v", h2, tok.calls, err)
			}
			// A record built from the spec opens.
			spec := specRSARecord(t, &key.PublicKey, h, tc.wantAlg, secret, aad)
			if got, err := unwrapRSA(tok, key.Size(), tc.wantAlg, spec, aad); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("unwrap spec record: %v", err)
			}
		})
	}

	tok := &softRSA{key: key}
	data, _, err := wrapRSAAuto(&key.PublicKey, tok, crypto.SHA256, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	// The recorded algorithm is what Unwrap uses: claiming SHA-1 for a
	// SHA-256 record fails, and the AAD covers the algorithm too.
	if _, err := unwrapRSA(tok, key.Size(), AlgRSAOAEPSHA1, data, aad); err == nil {
		t.Fatal("SHA-256 record opened as SHA-1")
	}
	if _, err := unwrapRSA(tok, key.Size(), AlgRSAOAEPSHA256, data, []byte("other")); !errors.Is(err, errWrongKey) {
		t.Fatalf("other aad: %v, want errWrongKey", err)
	}
	if _, err := unwrapRSA(tok, key.Size(), "rsa-oaep", data, aad); !errors.Is(err, errWrongKey) {
		t.Fatalf("unknown alg: %v", err)
	}
	// Every flipped bit is refused: outside the OAEP block by parsing or
	// GCM (errWrongKey), inside it by the token (tokenError).
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x10
		_, err := unwrapRSA(tok, key.Size(), AlgRSAOAEPSHA256, bad, aad)
		var te tokenError
		if !errors.Is(err, errWrongKey) && !errors.As(err, &te) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
	for _, bad := range [][]byte{nil, data[:1], data[:3], data[:len(data)-1], append(bytes.Clone(data), 0)} {
		if _, err := unwrapRSA(tok, key.Size(), AlgRSAOAEPSHA256, bad, aad); !errors.Is(err, errWrongKey) {
			t.Fatalf("%d-byte record: %v", len(bad), err)
		}
	}
}

func TestAESConstruction(t *testing.T) {
	block, _ := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	gcm, _ := cipher.NewGCM(block)
	secret := bytes.Repeat([]byte{0xa5}, 32)
	aad := []byte("vault-id|dek|3")
	data, err := wrapAES(gcm, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 61 || data[0] != 1 {
		t.Fatalf("record %x", data)
	}
	// The spec: GCM over secret with nonce data[1:13] and the AAD below.
	want, err := gcm.Open(nil, data[1:13], data[13:], append([]byte("coffer/v1/pkcs11-aes-gcm\x00"), aad...))
	if err != nil || !bytes.Equal(want, secret) {
		t.Fatalf("record does not follow the spec: %v", err)
	}
	if got, err := unwrapAES(gcm, AlgAESGCM, data, aad); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := unwrapAES(gcm, AlgAESGCM, data, []byte("other")); err == nil {
		t.Fatal("other aad opened")
	}
	if _, err := unwrapAES(gcm, AlgRSAOAEPSHA1, data, aad); !errors.Is(err, errWrongKey) {
		t.Fatalf("wrong alg: %v", err)
	}
	if _, err := unwrapAES(gcm, AlgAESGCM, data[:60], aad); !errors.Is(err, errWrongKey) {
		t.Fatalf("truncated: %v", err)
	}
	// Nonces differ between wraps of the same secret.
	again, _ := wrapAES(gcm, secret, aad)
	if bytes.Equal(again[1:13], data[1:13]) {
		t.Fatal("nonce repeated")
	}
	// A token failure inside crypto11's Seal (a panic) becomes an error.
	if _, err := wrapAES(panicAEAD{gcm}, secret, aad); err == nil {
		t.Fatal("panic not turned into an error")
	}
}

type panicAEAD struct{ cipher.AEAD }

func (panicAEAD) Seal(_, _, _, _ []byte) []byte { panic("C_EncryptInit: CKR_OBJECT_HANDLE_INVALID") }

// FuzzUnwrapRecord: no input panics, and only the frozen records open.
func FuzzUnwrapRecord(f *testing.F) {
	rsaKey, aesKey := vectorRSAKey(f), vectorAESKey(f)
	tok, gcm := &softRSA{key: rsaKey}, softGCM(aesKey)
	valid := map[string]bool{}
	for _, v := range readVectors(f) {
		w, _ := v.wrapped(f)
		f.Add(w.Data)
		if v.Expect == "ok" {
			valid[string(w.Data)] = true
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, alg := range []string{AlgRSAOAEPSHA1, AlgRSAOAEPSHA256} {
			if _, err := unwrapRSA(tok, rsaKey.Size(), alg, data, nil); err == nil && !valid[string(data)] {
				t.Fatalf("forged %s record opened", alg)
			}
		}
		if _, err := unwrapAES(gcm, AlgAESGCM, data, nil); err == nil && !valid[string(data)] {
			t.Fatal("forged AES record opened")
		}
	})
}
