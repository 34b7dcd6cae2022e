//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Frozen records under fixed test keys (testdata/rsa3072-test-key.pem,
// testdata/aes256-test-key.hex), each with its expected outcome, so that a
// change to the record format fails. Rewrite them (only for a deliberate
// format change) with COFFER_WRITE_PKCS11_VECTORS=1 go test -run TestWriteVectors.

const vectorsFile = "testdata/vectors.json"

type vector struct {
	Name string `json:"name"`
	Key  string `json:"key"` // "rsa" or "aes"
	KEK  struct {
		Provider string `json:"provider"`
		KeyID    string `json:"key_id"`
		Version  string `json:"version"`
	} `json:"kek"`
	Alg    string `json:"alg"`
	AAD    string `json:"aad"`    // hex
	Data   string `json:"data"`   // hex
	Secret string `json:"secret"` // hex, when Expect is "ok"
	Expect string `json:"expect"` // "ok" or "wrong-key"
	// SoftHSM26 overrides Expect on SoftHSM2 2.6, which lacks OAEP-SHA-256:
	// "unavailable".
	SoftHSM26 string `json:"softhsm26,omitempty"`
}

func (v vector) wrapped(t testing.TB) (vault.WrappedKey, []byte) {
	t.Helper()
	data, err1 := hex.DecodeString(v.Data)
	aad, err2 := hex.DecodeString(v.AAD)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("%s: %v", v.Name, err)
	}
	return vault.WrappedKey{KEK: vault.KeyRef{Provider: v.KEK.Provider, KeyID: v.KEK.KeyID, Version: v.KEK.Version},
		Alg: v.Alg, Data: data}, aad
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

func vectorRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile("testdata/rsa3072-test-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

func vectorAESKey(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/aes256-test-key.hex")
	if err != nil {
		t.Fatal(err)
	}
	k, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(k) != 32 {
		t.Fatalf("aes test key: %v", err)
	}
	return k
}

func softGCM(key []byte) cipher.AEAD {
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	return gcm
}

// vectorVersions are the KeyRef versions of the test keys, computed in
// software as the package comment defines them.
func vectorVersions(t testing.TB) (rsaVersion, aesVersion string) {
	der, err := x509.MarshalPKIXPublicKey(&vectorRSAKey(t).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	block, _ := aes.NewCipher(vectorAESKey(t))
	kcv := make([]byte, 16)
	block.Encrypt(kcv, kcv) // CKA_CHECK_VALUE: AES-ECB of a zero block, first 3 bytes
	return hex.EncodeToString(sum[:8]), hex.EncodeToString(kcv[:3])
}

func TestWriteVectors(t *testing.T) {
	if os.Getenv("COFFER_WRITE_PKCS11_VECTORS") == "" {
		t.Skip("set COFFER_WRITE_PKCS11_VECTORS=1 to rewrite " + vectorsFile)
	}
	rsaKey, aesKey := vectorRSAKey(t), vectorAESKey(t)
	rsaVersion, aesVersion := vectorVersions(t)
	secret := bytes.Repeat([]byte{0xc0, 0xff, 0xee, 0x01}, 8)
	aad := []byte("vault-id-0123456789abcdef01234567dek\x03\x00\x00\x00")
	var vs []vector
	add := func(name, key, alg string, data, aad []byte, expect string) {
		v := vector{Name: name, Key: key, Alg: alg, AAD: hex.EncodeToString(aad), Data: hex.EncodeToString(data), Expect: expect}
		v.KEK.Provider = Name
		if key == "rsa" {
			v.KEK.KeyID, v.KEK.Version = "token=coffer;object=vector-kek", rsaVersion
		} else {
			v.KEK.KeyID, v.KEK.Version = "token=coffer;object=vector-aes", aesVersion
		}
		if expect == "ok" {
			v.Secret = hex.EncodeToString(secret)
		}
		if alg == AlgRSAOAEPSHA256 {
			v.SoftHSM26 = "unavailable" // the token cannot even try
		}
		vs = append(vs, v)
	}
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 0x01; return b }
	tok := &softRSA{key: rsaKey}
	sha1Rec, err := wrapRSA(&rsaKey.PublicKey, tok, crypto.SHA1, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	sha256Rec, err := wrapRSA(&rsaKey.PublicKey, tok, crypto.SHA256, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	aesRec, err := wrapAES(softGCM(aesKey), secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	add("rsa-oaep-sha1", "rsa", AlgRSAOAEPSHA1, sha1Rec, aad, "ok")
	add("rsa-oaep-sha256", "rsa", AlgRSAOAEPSHA256, sha256Rec, aad, "ok")
	add("rsa other aad", "rsa", AlgRSAOAEPSHA1, sha1Rec, append(bytes.Clone(aad[:len(aad)-4]), 4, 0, 0, 0), "wrong-key")
	add("rsa empty aad", "rsa", AlgRSAOAEPSHA1, sha1Rec, nil, "wrong-key")
	add("rsa flipped version byte", "rsa", AlgRSAOAEPSHA1, flip(sha1Rec, 0), aad, "wrong-key")
	add("rsa flipped length", "rsa", AlgRSAOAEPSHA1, flip(sha1Rec, 2), aad, "wrong-key")
	add("rsa flipped oaep block", "rsa", AlgRSAOAEPSHA1, flip(sha1Rec, 100), aad, "wrong-key")
	add("rsa flipped ciphertext", "rsa", AlgRSAOAEPSHA1, flip(sha1Rec, 3+384+5), aad, "wrong-key")
	add("rsa flipped tag", "rsa", AlgRSAOAEPSHA1, flip(sha1Rec, len(sha1Rec)-1), aad, "wrong-key")
	add("rsa truncated", "rsa", AlgRSAOAEPSHA1, sha1Rec[:len(sha1Rec)-1], aad, "wrong-key")
	add("rsa sha1 record labelled sha256", "rsa", AlgRSAOAEPSHA256, sha1Rec, aad, "wrong-key")
	add("rsa sha256 record labelled sha1", "rsa", AlgRSAOAEPSHA1, sha256Rec, aad, "wrong-key")
	add("rsa unknown alg", "rsa", "pkcs11-rsa-oaep-sha512", sha1Rec, aad, "wrong-key")
	add("aes-gcm", "aes", AlgAESGCM, aesRec, aad, "ok")
	add("aes other aad", "aes", AlgAESGCM, aesRec, aad[:32], "wrong-key")
	add("aes flipped version byte", "aes", AlgAESGCM, flip(aesRec, 0), aad, "wrong-key")
	add("aes flipped nonce", "aes", AlgAESGCM, flip(aesRec, 5), aad, "wrong-key")
	add("aes flipped ciphertext", "aes", AlgAESGCM, flip(aesRec, 20), aad, "wrong-key")
	add("aes flipped tag", "aes", AlgAESGCM, flip(aesRec, len(aesRec)-1), aad, "wrong-key")
	add("aes truncated", "aes", AlgAESGCM, aesRec[:len(aesRec)-1], aad, "wrong-key")
	add("aes extended", "aes", AlgAESGCM, append(bytes.Clone(aesRec), 0), aad, "wrong-key")
	add("aes unknown alg", "aes", "pkcs11-aes-kwp", aesRec, aad, "wrong-key")
	b, err := json.MarshalIndent(vs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestVectors opens the frozen records with the test keys in software.
func TestVectors(t *testing.T) {
	rsaKey, aesKey := vectorRSAKey(t), vectorAESKey(t)
	for _, v := range readVectors(t) {
		w, aad := v.wrapped(t)
		var got []byte
		var err error
		if v.Key == "rsa" {
			got, err = unwrapRSA(&softRSA{key: rsaKey}, rsaKey.Size(), w.Alg, w.Data, aad)
		} else {
			got, err = unwrapAES(softGCM(aesKey), w.Alg, w.Data, aad)
		}
		switch v.Expect {
		case "ok":
			if err != nil || hex.EncodeToString(got) != v.Secret {
				t.Errorf("%s: %v", v.Name, err)
			}
		case "wrong-key":
			if err == nil {
				t.Errorf("%s: opened", v.Name)
			}
		default:
			t.Errorf("%s: unknown expectation %q", v.Name, v.Expect)
		}
	}
}

// TestVectorsOnToken imports the test keys into SoftHSM2 and opens the
// frozen records through the provider: the token agrees with the spec,
// and the software-computed KeyRef versions (SPKI hash, KCV) match what
// the provider reads from the token.
func TestVectorsOnToken(t *testing.T) {
	tk := newToken(t)
	pemPath, _ := filepath.Abs("testdata/rsa3072-test-key.pem")
	aesPath := filepath.Join(tk.dir, "aes.key")
	if err := os.WriteFile(aesPath, vectorAESKey(t), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--import", pemPath, "--token", "coffer", "--label", "vector-kek", "--id", "11", "--pin", "1234"},
		{"--import", aesPath, "--aes", "--token", "coffer", "--label", "vector-aes", "--id", "12", "--pin", "1234"},
	} {
		if out, err := exec.Command("softhsm2-util", args...).CombinedOutput(); err != nil {
			t.Fatalf("softhsm2-util %v: %v\n%s", args, err, out)
		}
	}
	providers := map[string]*Provider{"rsa": open(t, tk.uri("vector-kek")), "aes": open(t, tk.uri("vector-aes"))}
	rsaVersion, aesVersion := vectorVersions(t)
	if v := providers["rsa"].Current().Version; v != rsaVersion {
		t.Fatalf("RSA version %s, want %s", v, rsaVersion)
	}
	if v := providers["aes"].Current().Version; v != aesVersion {
		t.Fatalf("AES version %s, want the KCV %s", v, aesVersion)
	}
	on26 := softhsm26(t)
	for _, v := range readVectors(t) {
		w, aad := v.wrapped(t)
		got, err := providers[v.Key].Unwrap(ctx, w, aad)
		expect := v.Expect
		if on26 && v.SoftHSM26 != "" {
			expect = v.SoftHSM26
		}
		switch expect {
		case "ok":
			if err != nil || hex.EncodeToString(got) != v.Secret {
				t.Errorf("%s: %v", v.Name, err)
			}
		case "wrong-key":
			if !errors.Is(err, vault.ErrWrongKey) {
				t.Errorf("%s: got %v, want ErrWrongKey", v.Name, err)
			}
		case "unavailable":
			if !errors.Is(err, vault.ErrKeyUnavailable) {
				t.Errorf("%s: got %v, want ErrKeyUnavailable", v.Name, err)
			}
		}
	}
}
