package tlsconf

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestFingerprint(t *testing.T) {
	// SHA-256 of "abc" (FIPS 180-2 test vector).
	if got, want := Fingerprint([]byte("abc")), "SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("Fingerprint(abc) = %s, want %s", got, want)
	}
	m := localMaterial(t, time.Now())
	sum := sha256.Sum256(m.Leaf.Raw)
	if m.Fingerprint() != "SHA256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("Material.Fingerprint %s", m.Fingerprint())
	}
	spki := sha256.Sum256(m.Leaf.RawSubjectPublicKeyInfo)
	if SPKIFingerprint(m.Leaf) != "SHA256:"+hex.EncodeToString(spki[:]) {
		t.Errorf("SPKIFingerprint %s", SPKIFingerprint(m.Leaf))
	}
	if SPKIFingerprint(m.Leaf) == m.Fingerprint() {
		t.Error("SPKI and certificate fingerprints coincide")
	}
}

func TestParseFingerprint(t *testing.T) {
	const digits = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	want := "SHA256:" + digits
	var colons []string
	for i := 0; i < len(digits); i += 2 {
		colons = append(colons, strings.ToUpper(digits[i:i+2]))
	}
	for _, in := range []string{
		want,
		digits,
		strings.ToUpper(digits),
		"sha256:" + strings.ToUpper(digits),
		"SHA-256:" + digits,
		strings.Join(colons, ":"),
		"SHA256:" + strings.Join(colons, ":"),
		"sha256 Fingerprint=" + strings.Join(colons, ":"),
		"SHA256 Fingerprint=" + strings.Join(colons, ":") + "\n",
		"  " + want + "  ",
	} {
		got, err := ParseFingerprint(in)
		if err != nil || got != want {
			t.Errorf("ParseFingerprint(%q) = %q, %v", in, got, err)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"", "want 64"},
		{"SHA256:", "want 64"},
		{digits[:62], "62 hex digits, want 64"},
		{digits + "00", "66 hex digits"},
		{digits[:63], "not hexadecimal"},
		{"SHA256:" + strings.Repeat("zz", 32), "not hexadecimal"},
		{"SHA1:" + strings.Repeat("ab", 20), "only SHA-256"},
		{"SHA1 Fingerprint=" + strings.Join(colons[:20], ":"), "only SHA-256"},
		{"md5:" + strings.Repeat("ab", 16), "only SHA-256"},
		{strings.Join(colons, "::"), "pairs"},
		{"b:a7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "pairs"},
		{"SHA256:" + digits + " extra", "not hexadecimal"},
		{strings.Repeat("a", 10000), "…"},
	} {
		got, err := ParseFingerprint(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseFingerprint(%.80q) = %q, %v; want error containing %q", tt.in, got, err, tt.want)
		}
	}
}

// FuzzParseFingerprint: any input parses or fails without panicking, and a
// parsed fingerprint parses back to itself.
func FuzzParseFingerprint(f *testing.F) {
	for _, s := range []string{"", "SHA256:" + strings.Repeat("ab", 32), strings.Repeat("AB:", 31) + "AB", "sha256 Fingerprint=00", "SHA1:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		again, err := ParseFingerprint(got)
		if err != nil || again != got {
			t.Fatalf("ParseFingerprint(%q) = %q, which parses to %q, %v", s, got, again, err)
		}
		if len(got) != len("SHA256:")+64 || strings.ToLower(got[7:]) != got[7:] {
			t.Fatalf("non-canonical result %q", got)
		}
	})
}

// FuzzParseKeyPair: untrusted PEM never panics, and whatever is accepted
// serves a TLS configuration.
func FuzzParseKeyPair(f *testing.F) {
	ca := newTestCA(f, "fuzz CA")
	cert, key := ca.issue(f, leafOptions{names: []string{"localhost"}})
	f.Add(cert, key)
	f.Add(key, cert)
	f.Add([]byte("garbage"), []byte{})
	f.Add(pemBlock("CERTIFICATE", []byte{0x30, 0x00}), pemBlock("PRIVATE KEY", []byte{0x30, 0x00}))
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		m, err := ParseKeyPair(certPEM, keyPEM)
		if err != nil {
			return
		}
		if m.Leaf == nil || m.Cert.PrivateKey == nil {
			t.Fatal("accepted material without leaf or key")
		}
		if _, err := ServerConfig(m, tls.VersionTLS12); err != nil {
			t.Fatal(err)
		}
	})
}
