package tlsconf

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// fingerprintPrefix starts every fingerprint this package prints. It names
// the hash so that a fingerprint of another kind (SHA1:…) is recognised and
// refused instead of being compared byte by byte with the wrong digest.
const fingerprintPrefix = "SHA256:"

// Fingerprint returns "SHA256:" followed by the lowercase hex SHA-256 of a
// certificate's DER encoding: the value `openssl x509 -noout -fingerprint
// -sha256` prints, without its colons. This is what --fingerprint pins.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return fingerprintPrefix + hex.EncodeToString(sum[:])
}

// SPKIFingerprint returns "SHA256:" followed by the lowercase hex SHA-256 of
// the certificate's DER SubjectPublicKeyInfo. Unlike [Fingerprint] it stays
// the same when a certificate is reissued for the same key; it is reported
// for comparison with other tools and is not accepted as a pin.
func SPKIFingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return fingerprintPrefix + hex.EncodeToString(sum[:])
}

// ParseFingerprint parses a SHA-256 certificate fingerprint as a user types
// or pastes it and returns it in the form [Fingerprint] produces. Accepted,
// case-insensitively: "SHA256:<64 hex digits>", the 64 hex digits alone,
// either of those with a colon between every two digits, and openssl's
// "sha256 Fingerprint=AB:CD:…" line. Anything else is an error that says
// what was expected.
func ParseFingerprint(s string) (string, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	for _, p := range []string{"sha256 fingerprint=", "sha256:", "sha-256:"} {
		if strings.HasPrefix(v, p) {
			v = v[len(p):]
			break
		}
	}
	if strings.Contains(v, "fingerprint=") {
		return "", fmt.Errorf("fingerprint %q: only SHA-256 fingerprints are accepted (openssl x509 -noout -fingerprint -sha256)", short(s))
	}
	if strings.HasPrefix(v, "sha1:") || strings.HasPrefix(v, "md5:") || strings.HasPrefix(v, "sha384:") || strings.HasPrefix(v, "sha512:") {
		return "", fmt.Errorf("fingerprint %q: only SHA-256 fingerprints are accepted", short(s))
	}
	if strings.Contains(v, ":") {
		// Colons are accepted only in the openssl layout, one between every
		// two digits, so that a stray separator is not silently dropped.
		parts := strings.Split(v, ":")
		for _, p := range parts {
			if len(p) != 2 {
				return "", fmt.Errorf("fingerprint %q: colons must separate pairs of hex digits; want SHA256:<64 hex digits>", short(s))
			}
		}
		v = strings.Join(parts, "")
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		return "", fmt.Errorf("fingerprint %q is not hexadecimal; want SHA256:<64 hex digits>", short(s))
	}
	if len(b) != sha256.Size {
		return "", fmt.Errorf("fingerprint %q has %d hex digits, want %d (a SHA-256 fingerprint: SHA256:<64 hex digits>)", short(s), len(v), 2*sha256.Size)
	}
	return fingerprintPrefix + hex.EncodeToString(b), nil
}

// short keeps user input quoted in an error message to a readable length.
func short(s string) string {
	const max = 100
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
