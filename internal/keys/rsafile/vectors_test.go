package rsafile_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/cryptotest"

	"github.com/coffer-backup/coffer/internal/keys/rsafile"
	"github.com/coffer-backup/coffer/internal/vault"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors (and testdata/test-kek.pem if absent)")

const (
	vectorDir = "testdata/vectors"
	// vectorKey is a 2048-bit test key, never used for anything else.
	vectorKey = "testdata/test-kek.pem"
	// vectorVersion is vectorKey's version, written out so that a change
	// to the version derivation fails this test.
	vectorVersion = "3d36680291e38378"
)

// wrapVector is one file of testdata/vectors: a wrapped key and what
// Unwrap must make of it with vectorKey and aad.
type wrapVector struct {
	Comment string `json:"comment"`
	Version string `json:"version"`
	Alg     string `json:"alg"`
	AAD     string `json:"aad"`
	Wrapped string `json:"wrapped"`
	Expect  string `json:"expect"` // "ok", "wrong_key", "key_unavailable" or "corrupt"
	Secret  string `json:"secret,omitempty"`
}

// openVectorKey opens vectorKey by its absolute path.
func openVectorKey(t testing.TB) *rsafile.Provider {
	t.Helper()
	abs, err := filepath.Abs(vectorKey)
	if err != nil {
		t.Fatal(err)
	}
	return open(t, abs)
}

func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	p := openVectorKey(t)
	if v := p.Current().Version; v != vectorVersion {
		t.Fatalf("%s has version %s, want %s", vectorKey, v, vectorVersion)
	}
	files, _ := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	if len(files) < 10 {
		t.Fatalf("only %d vector files under %s (run go test -run TestVectors -update)", len(files), vectorDir)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var v wrapVector
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			w := vault.WrappedKey{
				KEK:  vault.KeyRef{Provider: rsafile.Name, KeyID: p.Path(), Version: v.Version},
				Alg:  v.Alg,
				Data: unhex(t, v.Wrapped),
			}
			got, err := p.Unwrap(t.Context(), w, unhex(t, v.AAD))
			want := map[string]error{"wrong_key": vault.ErrWrongKey, "key_unavailable": vault.ErrKeyUnavailable, "corrupt": vault.ErrCorrupt}
			switch v.Expect {
			case "ok":
				if err != nil {
					t.Fatalf("Unwrap: %v", err)
				}
				if !bytes.Equal(got, unhex(t, v.Secret)) {
					t.Errorf("secret %x, want %s", got, v.Secret)
				}
			default:
				sentinel, ok := want[v.Expect]
				if !ok {
					t.Fatalf("unknown expectation %q", v.Expect)
				}
				if !errors.Is(err, sentinel) || got != nil {
					t.Errorf("Unwrap: %v (%d bytes), want %v", err, len(got), sentinel)
				}
			}
		})
	}
}

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// generateVectors writes testdata/vectors from vectorKey, generating the
// key first if it is absent. crypto/rand is seeded, so an unchanged
// format regenerates identical files.
func generateVectors(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 1)
	if _, err := os.Stat(vectorKey); errors.Is(err, os.ErrNotExist) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(vectorKey), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorKey, pemBytes(t, k, pkcs8), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := openVectorKey(t)
	version := p.Current().Version
	vid := bytes.Repeat([]byte{0xc0}, 32)
	keyAAD := func(purpose string, v byte) []byte { return append(append(bytes.Clone(vid), purpose...), v, 0, 0, 0) }
	root, dek := sha256.Sum256([]byte("vector root")), sha256.Sum256([]byte("vector dek 7"))
	rootAAD, dekAAD := keyAAD("root", 0), keyAAD("dek", 7)
	wrap := func(secret, aad []byte) []byte {
		w, err := p.Wrap(t.Context(), secret, aad)
		if err != nil {
			t.Fatal(err)
		}
		return w.Data
	}
	wr, wd := wrap(root[:], rootAAD), wrap(dek[:], dekAAD)
	flip := func(i int) []byte { b := bytes.Clone(wd); b[i] ^= 1; return b }
	h := hex.EncodeToString
	vs := map[string]wrapVector{
		"ok_root":           {Comment: "the root secret, AAD vault ID || \"root\" || u32 0 as the OAEP label", Wrapped: h(wr), AAD: h(rootAAD), Expect: "ok", Secret: h(root[:])},
		"ok_dek":            {Comment: "DEK version 7, AAD vault ID || \"dek\" || u32 7", Wrapped: h(wd), AAD: h(dekAAD), Expect: "ok", Secret: h(dek[:])},
		"ok_empty_aad":      {Comment: "empty AAD: empty OAEP label", Wrapped: h(wrap(dek[:], nil)), Expect: "ok", Secret: h(dek[:])},
		"wrong_vault":       {Comment: "AAD of another vault", Wrapped: h(wd), AAD: h(append([]byte{1}, dekAAD[1:]...)), Expect: "wrong_key"},
		"dek_as_root":       {Comment: "a DEK presented as the root secret", Wrapped: h(wd), AAD: h(keyAAD("root", 7)), Expect: "wrong_key"},
		"dek_other_version": {Comment: "DEK 7 presented as DEK 6", Wrapped: h(wd), AAD: h(keyAAD("dek", 6)), Expect: "wrong_key"},
		"flipped_first":     {Comment: "bit flipped in the first byte", Wrapped: h(flip(0)), AAD: h(dekAAD), Expect: "wrong_key"},
		"flipped_middle":    {Comment: "bit flipped in byte 128", Wrapped: h(flip(128)), AAD: h(dekAAD), Expect: "wrong_key"},
		"flipped_last":      {Comment: "bit flipped in the last byte", Wrapped: h(flip(255)), AAD: h(dekAAD), Expect: "wrong_key"},
		"truncated":         {Comment: "255 bytes", Wrapped: h(wd[:255]), AAD: h(dekAAD), Expect: "wrong_key"},
		"extended":          {Comment: "257 bytes", Wrapped: h(append(bytes.Clone(wd), 0)), AAD: h(dekAAD), Expect: "wrong_key"},
		"empty":             {Comment: "no bytes", AAD: h(dekAAD), Expect: "wrong_key"},
		"other_version":     {Comment: "the keyring names another version of the key file", Version: "0123456789abcdef", Wrapped: h(wd), AAD: h(dekAAD), Expect: "key_unavailable"},
		"other_alg":         {Comment: "the keyring names another wrapping algorithm", Alg: "hkdf-sha256-aes-256-gcm", Wrapped: h(wd), AAD: h(dekAAD), Expect: "corrupt"},
	}
	if err := os.MkdirAll(vectorDir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	for _, f := range old {
		os.Remove(f)
	}
	for name, v := range vs {
		if v.Version == "" {
			v.Version = version
		}
		if v.Alg == "" {
			v.Alg = rsafile.Alg
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vectorDir, name+".json"), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("vector key version %s", version)
}

// FuzzUnwrap: Unwrap of untrusted bytes never panics and fails only with
// ErrWrongKey, returning no data.
func FuzzUnwrap(f *testing.F) {
	p := openVectorKey(f)
	aad := []byte("fuzz aad")
	w, err := p.Wrap(f.Context(), make([]byte, 32), aad)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(w.Data, aad)
	f.Add([]byte{}, []byte{})
	f.Add(make([]byte, 256), aad)
	f.Add(bytes.Repeat([]byte{0xff}, 256), aad)
	f.Fuzz(func(t *testing.T, data, aad []byte) {
		got, err := p.Unwrap(t.Context(), vault.WrappedKey{KEK: p.Current(), Alg: rsafile.Alg, Data: data}, aad)
		if err != nil {
			if !errors.Is(err, vault.ErrWrongKey) || got != nil {
				t.Fatalf("err %v, %d bytes", err, len(got))
			}
			return
		}
		if len(data) != 256 {
			t.Fatalf("accepted %d bytes", len(data))
		}
	})
}
