//go:build !nocloudkms

package cloudkms

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"gocloud.dev/secrets"
	"gocloud.dev/secrets/localsecrets"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Frozen records (docs/format.md §1.1c) under a fixed test key, each with
// its expected outcome, so that a change to the record format fails. The
// "KMS" is gocloud's localsecrets driver with the key in
// testdata/localsecrets-test-key.b64 (a test key, nothing else). Rewrite
// them (only for a deliberate format change) with
// COFFER_WRITE_CLOUDKMS_VECTORS=1 go test -run TestWriteVectors.

const vectorsFile = "testdata/vectors.json"

var vectorRef = vault.KeyRef{Provider: localScheme, KeyID: "coffer-vectors"}

type vector struct {
	Name string `json:"name"`
	KEK  struct {
		Provider string `json:"provider"`
		KeyID    string `json:"key_id"`
		Version  string `json:"version"`
	} `json:"kek"`
	Alg    string `json:"alg"`
	AAD    string `json:"aad"`    // hex
	Data   string `json:"data"`   // hex
	Secret string `json:"secret"` // hex, when Expect is "ok"
	Expect string `json:"expect"` // "ok", "wrong-key", "corrupt" or "unavailable"
}

func (v vector) wrapped(t testing.TB) (vault.WrappedKey, []byte) {
	t.Helper()
	data, err1 := hex.DecodeString(v.Data)
	aad, err2 := hex.DecodeString(v.AAD)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("%s: %v", v.Name, err)
	}
	return vault.WrappedKey{KEK: vault.KeyRef{Provider: v.KEK.Provider, KeyID: v.KEK.KeyID, Version: v.KEK.Version}, Alg: v.Alg, Data: data}, aad
}

func vectorKeeper(t testing.TB) *secrets.Keeper {
	t.Helper()
	b, err := os.ReadFile("testdata/localsecrets-test-key.b64")
	if err != nil {
		t.Fatal(err)
	}
	k, err := localsecrets.Base64Key(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return localsecrets.NewKeeper(k)
}

func vectorProvider(t testing.TB) *Provider {
	t.Helper()
	p, err := newProvider(vectorRef, localScheme, vectorKeeper(t))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readVectors(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

func TestWriteVectors(t *testing.T) {
	if os.Getenv("COFFER_WRITE_CLOUDKMS_VECTORS") == "" {
		t.Skip("set COFFER_WRITE_CLOUDKMS_VECTORS=1 to rewrite " + vectorsFile)
	}
	p := vectorProvider(t)
	ctx := context.Background()
	secret := bytes.Repeat([]byte{0xc0, 0xff, 0xee, 0x02}, 8)
	aad := []byte("vault-id-0123456789abcdef01234567dek\x03\x00\x00\x00")
	root := []byte("vault-id-0123456789abcdef01234567root\x00\x00\x00\x00")
	var vs []vector
	add := func(name string, ref vault.KeyRef, alg string, data, aad []byte, expect string) {
		v := vector{Name: name, Alg: alg, AAD: hex.EncodeToString(aad), Data: hex.EncodeToString(data), Expect: expect}
		v.KEK.Provider, v.KEK.KeyID, v.KEK.Version = ref.Provider, ref.KeyID, ref.Version
		if expect == "ok" {
			v.Secret = hex.EncodeToString(secret)
		}
		vs = append(vs, v)
	}
	wrap := func(aad []byte) []byte {
		w, err := p.Wrap(ctx, secret, aad)
		if err != nil {
			t.Fatal(err)
		}
		return w.Data
	}
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 0x01; return b }
	rec := wrap(aad)
	n := int(binary.BigEndian.Uint16(rec[1:3]))
	add("dek", vectorRef, Alg, rec, aad, "ok")
	add("root", vectorRef, Alg, wrap(root), root, "ok")
	add("empty aad", vectorRef, Alg, wrap(nil), nil, "ok")
	add("other aad", vectorRef, Alg, rec, root, "wrong-key")
	add("aad truncated", vectorRef, Alg, rec, aad[:len(aad)-1], "wrong-key")
	add("flipped version byte", vectorRef, Alg, flip(rec, 0), aad, "corrupt")
	add("flipped length", vectorRef, Alg, flip(rec, 2), aad, "corrupt")
	zero := bytes.Clone(rec)
	zero[1], zero[2] = 0, 0
	add("zero length", vectorRef, Alg, zero, aad, "corrupt")
	add("flipped kms ciphertext", vectorRef, Alg, flip(rec, 3+n/2), aad, "wrong-key")
	add("flipped sealed secret", vectorRef, Alg, flip(rec, 3+n+5), aad, "wrong-key")
	add("flipped tag", vectorRef, Alg, flip(rec, len(rec)-1), aad, "wrong-key")
	add("truncated", vectorRef, Alg, rec[:len(rec)-1], aad, "corrupt")
	add("extended", vectorRef, Alg, append(bytes.Clone(rec), 0), aad, "corrupt")
	add("empty", vectorRef, Alg, nil, aad, "corrupt")
	add("unknown alg", vectorRef, "gocloud-kms+aes-128-gcm", rec, aad, "corrupt")
	add("another key id", vault.KeyRef{Provider: localScheme, KeyID: "coffer-vectors-2"}, Alg, rec, aad, "unavailable")
	add("another provider", vault.KeyRef{Provider: "awskms", KeyID: "coffer-vectors"}, Alg, rec, aad, "unavailable")
	add("a version", vault.KeyRef{Provider: localScheme, KeyID: "coffer-vectors", Version: "2"}, Alg, rec, aad, "unavailable")
	// A well-formed KMS ciphertext of 16 bytes, not a 32-byte key.
	short, err := vectorKeeper(t).Encrypt(ctx, bytes.Repeat([]byte{7}, 16))
	if err != nil {
		t.Fatal(err)
	}
	add("kms ciphertext of a short key", vectorRef, Alg, record{kmsCiphertext: short, sealed: rec[3+n:]}.marshal(), aad, "wrong-key")
	b, err := json.MarshalIndent(vs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestVectors opens the frozen records through the provider.
func TestVectors(t *testing.T) {
	p := vectorProvider(t)
	for _, v := range readVectors(t) {
		w, aad := v.wrapped(t)
		got, err := p.Unwrap(t.Context(), w, aad)
		var want error
		switch v.Expect {
		case "ok":
			if err != nil || hex.EncodeToString(got) != v.Secret {
				t.Errorf("%s: %v", v.Name, err)
			}
			continue
		case "wrong-key":
			want = vault.ErrWrongKey
		case "corrupt":
			want = vault.ErrCorrupt
		case "unavailable":
			want = vault.ErrKeyUnavailable
		default:
			t.Fatalf("%s: unknown expectation %q", v.Name, v.Expect)
		}
		if !errors.Is(err, want) || got != nil {
			t.Errorf("%s: %v, want %v", v.Name, err, want)
		}
	}
}

// TestVectorsBySpec opens the "ok" records following docs/format.md §1.1c
// by hand, with the standard library and the KMS only: the code and the
// spec agree on the layout and the additional data.
func TestVectorsBySpec(t *testing.T) {
	keeper := vectorKeeper(t)
	n := 0
	for _, v := range readVectors(t) {
		if v.Expect != "ok" {
			continue
		}
		n++
		w, aad := v.wrapped(t)
		d := w.Data
		if d[0] != 0x01 {
			t.Fatalf("%s: version byte %#x", v.Name, d[0])
		}
		eLen := int(d[1])<<8 | int(d[2]) // uint16 big-endian
		if len(d) != 3+eLen+48 {
			t.Fatalf("%s: %d bytes for a %d-byte KMS ciphertext", v.Name, len(d), eLen)
		}
		k, err := keeper.Decrypt(t.Context(), d[3:3+eLen])
		if err != nil || len(k) != 32 {
			t.Fatalf("%s: KMS decrypt: %v", v.Name, err)
		}
		block, _ := aes.NewCipher(k)
		gcm, _ := cipher.NewGCM(block)
		ad := "coffer/v1/gocloud-kms+aes-256-gcm\x00" + w.KEK.Provider + "\x00" + w.KEK.KeyID + "\x00" + w.KEK.Version + "\x00" + string(aad)
		got, err := gcm.Open(nil, make([]byte, 12), d[3+eLen:], []byte(ad))
		if err != nil || hex.EncodeToString(got) != v.Secret {
			t.Errorf("%s: by the spec: %v", v.Name, err)
		}
	}
	if n == 0 {
		t.Fatal("no ok vectors")
	}
}
