// Package tlsconf provides Coffer's TLS policy and certificate handling:
// the vault server's configuration (TLS 1.2 or later, ECDHE with AEAD
// ciphers only), its local CA and certificate in DATA/tls, the client's
// configuration (TLS 1.2 or later, chain and host name verification, an
// extra CA file, certificate pinning) with errors that say how to trust an
// unknown certificate, and Probe, which `coffer doctor tls` reports from.
//
// There is no plaintext mode: nothing in this package configures a
// listener or a client without TLS.
package tlsconf

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// CipherSuites returns the TLS 1.2 cipher suites Coffer's server and client
// allow: ECDHE key exchange (forward secrecy) with an AEAD cipher (AES-GCM
// or ChaCha20-Poly1305), for ECDSA and for RSA certificates. RSA key
// exchange (no forward secrecy) and CBC-mode suites (padding-oracle
// history) are excluded. TLS 1.3 suites are not configurable in
// crypto/tls and all of them are ECDHE/AEAD.
func CipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// allowedSuite reports whether a negotiated suite meets the policy: any
// TLS 1.3 suite, or one of CipherSuites for TLS 1.2.
func allowedSuite(version, suite uint16) bool {
	if version >= tls.VersionTLS13 {
		return true
	}
	return version == tls.VersionTLS12 && slices.Contains(CipherSuites(), suite)
}

// ParseMinVersion parses the server's minimum TLS version setting: "1.2"
// or "1.3", optionally written "TLS1.3", "tls 1.3" or "TLSv1.3". Older
// versions are refused with an error, never configured.
func ParseMinVersion(s string) (uint16, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	v = strings.TrimPrefix(v, "tls")
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	switch v {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	case "1.0", "1.1", "1":
		return 0, fmt.Errorf("minimum TLS version %q is not allowed: TLS 1.0 and 1.1 are obsolete (RFC 8996); use 1.2 or 1.3", short(s))
	}
	return 0, fmt.Errorf("unknown minimum TLS version %q: use 1.2 or 1.3", short(s))
}

// ServerConfig returns the vault server's TLS configuration for m.
// minVersion must be tls.VersionTLS12 or tls.VersionTLS13; anything else is
// an error, so TLS 1.0 and 1.1 can never be enabled.
//
// Key exchange groups (CurvePreferences) are left at crypto/tls's default,
// which Go keeps current: in Go 1.26 the hybrid post-quantum
// X25519MLKEM768, SecP256r1MLKEM768 and SecP384r1MLKEM1024 (TLS 1.3 only),
// then X25519, P-256, P-384 and P-521. NextProtos offers h2 and http/1.1;
// http.Server.ServeTLS adjusts it to the protocols the server runs.
func ServerConfig(m *Material, minVersion uint16) (*tls.Config, error) {
	if minVersion != tls.VersionTLS12 && minVersion != tls.VersionTLS13 {
		return nil, fmt.Errorf("server minimum TLS version %s is not allowed: use TLS 1.2 or TLS 1.3", tls.VersionName(minVersion))
	}
	if m == nil || len(m.Cert.Certificate) == 0 || m.Cert.PrivateKey == nil {
		return nil, errors.New("server TLS configuration needs a certificate and its private key")
	}
	return &tls.Config{
		// Policy: TLS 1.2 or later only. Setting MinVersion explicitly
		// also keeps GODEBUG=tls10server=1 from re-enabling 1.0/1.1.
		MinVersion: minVersion,
		// Policy: for TLS 1.2, ECDHE with AEAD only (see CipherSuites).
		CipherSuites: CipherSuites(),
		Certificates: []tls.Certificate{m.Cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}
