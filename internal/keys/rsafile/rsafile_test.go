package rsafile_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/keys/keytest"
	"github.com/coffer-backup/coffer/internal/keys/rsafile"
	"github.com/coffer-backup/coffer/internal/vault"
)

// encoding is how a test writes a private key to its PEM file.
type encoding string

const (
	pkcs1 encoding = "RSA PRIVATE KEY"
	pkcs8 encoding = "PRIVATE KEY"
)

func genKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// key3072 is generated once per test binary: the tests only need one.
var key3072 = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return k
})

// pemBytes encodes key (any private key) as enc.
func pemBytes(t testing.TB, key any, enc encoding) []byte {
	t.Helper()
	var der []byte
	var err error
	switch enc {
	case pkcs1:
		der = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	case pkcs8:
		der, err = x509.MarshalPKCS8PrivateKey(key)
	}
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: string(enc), Bytes: der})
}

// writeFile replaces path atomically with b, mode 0600.
func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t testing.TB, path string, key any, enc encoding) {
	t.Helper()
	writeFile(t, path, pemBytes(t, key, enc))
}

func open(t testing.TB, path string) *rsafile.Provider {
	t.Helper()
	p, err := rsafile.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// reopen returns a nil interface, not a nil *Provider, on error.
func reopen(path string) (vault.KeyProvider, error) {
	p, err := rsafile.Open(path)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// material is everything secret about k, for the suite's leak checks.
func material(t testing.TB, k *rsa.PrivateKey) [][]byte {
	t.Helper()
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	m := [][]byte{k.D.Bytes(), x509.MarshalPKCS1PrivateKey(k), p8}
	for _, p := range k.Primes {
		m = append(m, p.Bytes())
	}
	return m
}

// specVersion is the key version as the issue defines it: the first 16
// hex digits of the SHA-256 of the public key's SubjectPublicKeyInfo.
func specVersion(t testing.TB, k *rsa.PrivateKey) string {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:])[:16]
}

func harness(enc encoding) keytest.Harness {
	return keytest.Harness{
		Revocation:  keytest.RevokeLive, // the file is read on every Wrap and Unwrap
		SecretSizes: []int{32, 64},
		New: func(t *testing.T) *keytest.Fixture {
			k := genKey(t, 2048)
			path := filepath.Join(t.TempDir(), "cmk.pem")
			writeKey(t, path, k, enc)
			away := path + ".revoked"
			return &keytest.Fixture{
				Provider: open(t, path),
				Reopen:   func(*testing.T) (vault.KeyProvider, error) { return reopen(path) },
				Revoke:   func(t *testing.T) { rename(t, path, away) },
				Restore:  func(t *testing.T) { rename(t, away, path) },
				Names:    []string{path},
				Material: material(t, k),
			}
		},
	}
}

func TestConformance(t *testing.T) {
	t.Run("PKCS1", func(t *testing.T) { keytest.Run(t, harness(pkcs1)) })
	t.Run("PKCS8", func(t *testing.T) { keytest.Run(t, harness(pkcs8)) })
}

// TestEncodingsAndSizes: both PEM encodings of 2048- and 3072-bit keys
// work, the version does not depend on the encoding, and the wrapped form
// is plain RSA-OAEP-SHA256 with the AAD as label.
func TestEncodingsAndSizes(t *testing.T) {
	for _, bits := range []int{2048, 3072} {
		k := key3072()
		if bits == 2048 {
			k = genKey(t, 2048)
		}
		var w vault.WrappedKey
		secret := bytes.Repeat([]byte{0x5a}, 32)
		aad := []byte("vault-id root")
		for i, enc := range []encoding{pkcs1, pkcs8} {
			t.Run(strings.ReplaceAll(string(enc), " ", "_")+"/"+strconv.Itoa(bits), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "cmk.pem")
				writeKey(t, path, k, enc)
				p := open(t, path)
				want := vault.KeyRef{Provider: "rsa-file", KeyID: path, Version: specVersion(t, k)}
				if got := p.Current(); got != want {
					t.Fatalf("Current() = %+v, want %+v", got, want)
				}
				if i == 1 {
					// Wrapped under the other encoding of the same key:
					// same version, opens (KeyID is this file's path).
					old := w
					old.KEK.KeyID = path
					got, err := p.Unwrap(t.Context(), old, aad)
					if err != nil || !bytes.Equal(got, secret) {
						t.Fatalf("unwrap of a key wrapped under the %s encoding: %v", pkcs1, err)
					}
				}
				var err error
				w, err = p.Wrap(t.Context(), secret, aad)
				if err != nil {
					t.Fatal(err)
				}
				if w.Alg != "rsa-oaep-sha256" || w.KEK != want || len(w.Data) != bits/8 {
					t.Fatalf("wrapped: alg %q, KEK %v, %d bytes", w.Alg, w.KEK, len(w.Data))
				}
				// The spec alone opens it.
				pt, err := rsa.DecryptOAEP(sha256.New(), nil, k, w.Data, aad)
				if err != nil || !bytes.Equal(pt, secret) {
					t.Fatalf("RSA-OAEP-SHA256 with the AAD as label: %v", err)
				}
				if _, err := p.Unwrap(t.Context(), w, []byte("vault-id dek")); !errors.Is(err, vault.ErrWrongKey) {
					t.Fatalf("other AAD: %v, want ErrWrongKey", err)
				}
			})
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecScalar, err := ec.Bytes() // the private scalar, which no message may show
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k1024, k4096, ok := genKey(t, 1024), genKey(t, 4096), genKey(t, 2048)
	pub, err := x509.MarshalPKIXPublicKey(&ok.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	block := func(typ string, b []byte, h map[string]string) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Headers: h, Bytes: b})
	}
	cases := []struct {
		name     string
		contents []byte
		want     string // in the message
		secret   []byte // must not be in the message
	}{
		{"RSA1024", pemBytes(t, k1024, pkcs1), "1024-bit RSA key", k1024.D.Bytes()},
		{"RSA4096", pemBytes(t, k4096, pkcs8), "4096-bit RSA key", k4096.D.Bytes()},
		{"ECDSAPKCS8", pemBytes(t, ec, pkcs8), "ECDSA key, not an RSA key", ecScalar},
		{"ECDSASEC1", block("EC PRIVATE KEY", ecDER, nil), `"EC PRIVATE KEY"`, ecScalar},
		{"Ed25519", pemBytes(t, ed, pkcs8), "Ed25519 key, not an RSA key", ed.Seed()},
		{"Empty", nil, "no PEM", nil},
		{"NotPEM", []byte("hello\n"), "no PEM", nil},
		{"PublicKeyOnly", block("PUBLIC KEY", pub, nil), "no PEM", nil},
		{"CertificateOnly", block("CERTIFICATE", []byte{0x30, 0}, nil), "no PEM", nil},
		{"EncryptedPKCS8", block("ENCRYPTED PRIVATE KEY", []byte{0x30, 0}, nil), "encrypted", nil},
		{"EncryptedPKCS1", block("RSA PRIVATE KEY", []byte{1, 2, 3}, map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}), "encrypted", nil},
		{"TwoKeys", append(pemBytes(t, ok, pkcs1), pemBytes(t, genKey(t, 2048), pkcs8)...), "more than one private key", ok.D.Bytes()},
		{"CorruptDER", block("RSA PRIVATE KEY", bytes.Repeat([]byte{0x30}, 200), nil), "invalid", nil},
		{"PKCS8LabelledPKCS1", block("RSA PRIVATE KEY", pemToDER(t, pemBytes(t, ok, pkcs8)), nil), "invalid", ok.D.Bytes()},
		{"Huge", bytes.Repeat([]byte("A"), 65<<10), "larger than 64 KiB", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cmk.pem")
			writeFile(t, path, c.contents)
			_, err := rsafile.Open(path)
			checkRefused(t, err, path, c.want, c.secret)
		})
	}
	t.Run("Missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cmk.pem")
		_, err := rsafile.Open(path)
		checkRefused(t, err, path, "is missing", nil)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%v: want fs.ErrNotExist too", err)
		}
		if !strings.Contains(err.Error(), "restore the key file") {
			t.Errorf("%v: does not say to restore the key file", err)
		}
		// use-pmk is refused on a vault that is not single-user: the CLI
		// adds it only where it works (cmd/coffer keyAdvice).
		if strings.Contains(err.Error(), "use-pmk") {
			t.Errorf("%v: suggests use-pmk, which the vault may refuse", err)
		}
	})
	t.Run("Directory", func(t *testing.T) {
		path := t.TempDir()
		_, err := rsafile.Open(path)
		checkRefused(t, err, path, "not a regular file", nil)
	})
	t.Run("Relative", func(t *testing.T) {
		_, err := rsafile.Open("cmk.pem")
		checkRefused(t, err, "cmk.pem", "not absolute", nil)
	})
}

func pemToDER(t testing.TB, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}

func checkRefused(t *testing.T, err error, path, want string, secret []byte) {
	t.Helper()
	if !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("Open: %v, want ErrKeyUnavailable", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, path) || !strings.Contains(msg, want) {
		t.Errorf("Open: %q: want the path %s and %q", msg, path, want)
	}
	if len(secret) > 0 && (strings.Contains(msg, string(secret)) || strings.Contains(msg, hex.EncodeToString(secret))) {
		t.Errorf("Open: the error contains the private key")
	}
}

// TestReplacedKey: a key file that now holds another key cannot unwrap
// what the first key wrapped, and says so naming both versions; putting
// the first key back works with no repair step.
func TestReplacedKey(t *testing.T) {
	a, b := genKey(t, 2048), genKey(t, 2048)
	va, vb := specVersion(t, a), specVersion(t, b)
	path := filepath.Join(t.TempDir(), "cmk.pem")
	writeKey(t, path, a, pkcs8)
	p := open(t, path)
	secret, aad := bytes.Repeat([]byte{7}, 32), []byte("aad")
	w, err := p.Wrap(t.Context(), secret, aad)
	if err != nil {
		t.Fatal(err)
	}

	writeKey(t, path, b, pkcs8)
	checkBoth := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, vault.ErrKeyUnavailable) {
			t.Fatalf("%s: %v, want ErrKeyUnavailable", what, err)
		}
		for _, s := range []string{path, va, vb, "different key"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q does not mention %q", what, err, s)
			}
		}
	}
	got, err := p.Unwrap(t.Context(), w, aad)
	if got != nil {
		t.Error("a failed Unwrap returned data")
	}
	checkBoth("Unwrap after replacement", err)
	_, err = p.Wrap(t.Context(), secret, aad)
	checkBoth("Wrap after replacement", err)
	if p.Current().Version != va {
		t.Errorf("Current() changed to %v", p.Current())
	}
	// A provider opened now uses the new key, and still cannot open the
	// old wrapped key.
	q := open(t, path)
	if q.Current().Version != vb {
		t.Errorf("reopened: Current() = %v, want version %s", q.Current(), vb)
	}
	_, err = q.Unwrap(t.Context(), w, aad)
	checkBoth("Unwrap by a provider opened after replacement", err)

	// The file replaced by something that is no key: unavailable too.
	writeFile(t, path, []byte("not a key\n"))
	if _, err := p.Unwrap(t.Context(), w, aad); !errors.Is(err, vault.ErrKeyUnavailable) || !strings.Contains(err.Error(), path) {
		t.Errorf("Unwrap with a garbage key file: %v", err)
	}

	// The same key in the other encoding is the same key.
	writeKey(t, path, a, pkcs1)
	if got, err := p.Unwrap(t.Context(), w, aad); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unwrap after the first key was put back: %v", err)
	}
	if _, err := p.Wrap(t.Context(), secret, aad); err != nil {
		t.Fatalf("Wrap after the first key was put back: %v", err)
	}
}

func TestUnwrapOtherPath(t *testing.T) {
	k := genKey(t, 2048)
	dir := t.TempDir()
	p1, p2 := filepath.Join(dir, "a.pem"), filepath.Join(dir, "b.pem")
	writeKey(t, p1, k, pkcs8)
	writeKey(t, p2, k, pkcs8)
	w, err := open(t, p1).Wrap(t.Context(), make([]byte, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Same key, other file: the KeyRef names the file, so this is not the
	// KEK the wrapped key names.
	_, err = open(t, p2).Unwrap(t.Context(), w, nil)
	if !errors.Is(err, vault.ErrKeyUnavailable) || !strings.Contains(err.Error(), p1) || !strings.Contains(err.Error(), p2) {
		t.Fatalf("got %v, want ErrKeyUnavailable naming both paths", err)
	}
}

func TestOpenCleansPath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cmk.pem")
	writeKey(t, path, genKey(t, 2048), pkcs1)
	p := open(t, dir+"/./sub/../cmk.pem")
	if p.Current().KeyID != path || p.Path() != path {
		t.Errorf("KeyID %q, Path %q, want %q", p.Current().KeyID, p.Path(), path)
	}
}

func TestWrapSecretSizes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cmk.pem")
	writeKey(t, path, genKey(t, 2048), pkcs1)
	p := open(t, path)
	for n, ok := range map[int]bool{0: false, 1: true, 32: true, 190: true, 191: false} {
		_, err := p.Wrap(t.Context(), make([]byte, n), nil)
		if (err == nil) != ok {
			t.Errorf("Wrap of %d bytes: %v, want success %v", n, err, ok)
		}
	}
}

func TestURI(t *testing.T) {
	for _, path := range []string{"/etc/coffer/cmk.pem", "/a b/c%d?e#f.pem", "/ключ.pem", "/"} {
		u := rsafile.URI(path)
		got, err := rsafile.ParseURI(u)
		if err != nil || got != path {
			t.Errorf("ParseURI(URI(%q) = %q) = %q, %v", path, u, got, err)
		}
	}
	if got := rsafile.URI("/etc/coffer/cmk.pem"); got != "rsa-file:///etc/coffer/cmk.pem" {
		t.Errorf("URI = %q", got)
	}
	if _, err := rsafile.ParseURI(rsafile.URI("relative/cmk.pem")); err == nil {
		t.Error("the URI of a relative path parses")
	}
}

func TestParseURI(t *testing.T) {
	ok := map[string]string{
		"rsa-file:///etc/coffer/cmk.pem": "/etc/coffer/cmk.pem",
		"rsa-file:///a%20b/k.pem":        "/a b/k.pem",
		"rsa-file:///k%3F.pem":           "/k?.pem",
		"rsa-file:///":                   "/",
	}
	for s, want := range ok {
		got, err := rsafile.ParseURI(s)
		if err != nil || got != want {
			t.Errorf("ParseURI(%q) = %q, %v, want %q", s, got, err, want)
		}
	}
	for _, s := range []string{
		"",
		"rsa-file://",
		"rsa-file:/etc/cmk.pem",
		"rsa-file:etc/cmk.pem",
		"RSA-FILE:///etc/cmk.pem",
		"file:///etc/cmk.pem",
		"/etc/cmk.pem",
		"rsa-file://host/etc/cmk.pem",
		"rsa-file://localhost/etc/cmk.pem",
		"rsa-file://user@/etc/cmk.pem",
		"rsa-file://[::1]/etc/cmk.pem",
		"rsa-file:///etc/cmk.pem?version=1",
		"rsa-file:///etc/cmk.pem?",
		"rsa-file:///etc/cmk.pem#frag",
		"rsa-file:///etc/cmk.pem#",
		"rsa-file:///etc/../cmk.pem",
		"rsa-file:///etc/%2e%2e/cmk.pem",
		"rsa-file:///etc//cmk.pem",
		"rsa-file:///etc/cmk.pem/",
		"rsa-file:///etc/./cmk.pem",
		"rsa-file:///etc/cmk%00.pem",
		"rsa-file:///etc/%zz",
		"rsa-file://relative/cmk.pem",
	} {
		if got, err := rsafile.ParseURI(s); err == nil {
			t.Errorf("ParseURI(%q) = %q, want an error", s, got)
		}
	}
}

// FuzzParseURI: ParseURI never panics, accepts only absolute clean paths,
// and URI gives back a URI that parses to the same path.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"rsa-file:///etc/coffer/cmk.pem", "rsa-file:///a%20b", "rsa-file://h/x", "rsa-file:///x?y", "rsa-file:///%2e%2e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		path, err := rsafile.ParseURI(s)
		if err != nil {
			return
		}
		if !filepath.IsAbs(path) || filepath.Clean(path) != path {
			t.Fatalf("ParseURI(%q) accepted path %q", s, path)
		}
		u := rsafile.URI(path)
		again, err := rsafile.ParseURI(u)
		if err != nil || again != path {
			t.Fatalf("ParseURI(URI(%q) = %q) = %q, %v", path, u, again, err)
		}
		if rsafile.URI(again) != u {
			t.Fatalf("URI is not canonical: %q, %q", u, rsafile.URI(again))
		}
	})
}
