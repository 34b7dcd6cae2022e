package tlsconf

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Probe statuses, the first word of Report.Verdict.
const (
	StatusOK      = "ok"      // a Coffer client connects and trusts the server; nothing to improve
	StatusWarning = "warning" // a Coffer client connects, but something needs attention
	StatusFail    = "fail"    // a Coffer client cannot connect, or must not trust the server
)

// probeTimeout bounds each connection Probe makes when ctx has no deadline.
const probeTimeout = 10 * time.Second

// CertInfo describes one certificate a server presented.
type CertInfo struct {
	Subject         string    `json:"subject"`
	Issuer          string    `json:"issuer"`
	NotBefore       time.Time `json:"not_before"`
	NotAfter        time.Time `json:"not_after"`
	DNSNames        []string  `json:"dns_names,omitempty"`
	IPs             []string  `json:"ips,omitempty"`
	PublicKey       string    `json:"public_key"` // "ECDSA P-256", "RSA 2048", "Ed25519"
	IsCA            bool      `json:"is_ca"`
	Fingerprint     string    `json:"fingerprint"`      // see Fingerprint; what --fingerprint pins
	SPKIFingerprint string    `json:"spki_fingerprint"` // see SPKIFingerprint
}

// Report is what Probe found out about a TLS server: what a Coffer client
// negotiates with it, the chain it presents, whether the client's policy
// trusts that chain, whether it also accepts what the policy forbids, and
// a verdict.
type Report struct {
	Address    string    `json:"address"`     // host:port probed
	ServerName string    `json:"server_name"` // the name the certificate must carry
	CheckedAt  time.Time `json:"checked_at"`

	// The handshake a Coffer client makes (TLS 1.2+, ECDHE/AEAD).
	Version        string `json:"version,omitempty"`      // "TLS 1.3"
	CipherSuite    string `json:"cipher_suite,omitempty"` // "TLS_AES_128_GCM_SHA256"
	ALPN           string `json:"alpn,omitempty"`         // "h2", "http/1.1" or ""
	HandshakeError string `json:"handshake_error,omitempty"`

	// Chain is the certificates the server presented, leaf first.
	Chain []CertInfo `json:"chain"`
	// Verified reports that the client's trust policy (system roots,
	// --cacert, --fingerprint) accepts Chain for ServerName.
	Verified    bool   `json:"verified"`
	Pinned      bool   `json:"pinned"` // a --fingerprint was given
	VerifyError string `json:"verify_error,omitempty"`

	// AcceptsLegacy reports that the server completed a handshake limited
	// to TLS 1.0/1.1, at LegacyVersion.
	AcceptsLegacy bool   `json:"accepts_legacy"`
	LegacyVersion string `json:"legacy_version,omitempty"`
	// AcceptsWeakCiphers reports that the server completed a TLS 1.2
	// handshake offering only suites outside the policy (RSA key
	// exchange, CBC, RC4, 3DES), choosing WeakCipherSuite.
	AcceptsWeakCiphers bool   `json:"accepts_weak_ciphers"`
	WeakCipherSuite    string `json:"weak_cipher_suite,omitempty"`

	Status   string   `json:"status"`   // StatusOK, StatusWarning or StatusFail
	Verdict  string   `json:"verdict"`  // "ok", "warning: …" or "fail: …"
	Problems []string `json:"problems"` // what is wrong, failures first
}

// dialError marks a failure to reach the server, as opposed to a refused
// handshake.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// Probe connects to addr ("host:port" or "https://host[:port]/…") and
// reports on its TLS as `coffer doctor tls` shows it. It makes three
// connections: a handshake with the client's policy (whose certificates it
// verifies as ClientConfig would, without aborting, so the chain is
// reported even when untrusted), one limited to TLS 1.0/1.1, and one at
// TLS 1.2 offering only suites outside the policy. No application data is
// sent.
//
// Problems with the server are in the Report; the error is for bad
// options or an address that cannot be reached at all.
func Probe(ctx context.Context, addr string, o ClientOptions) (*Report, error) {
	host, port, err := splitTarget(addr)
	if err != nil {
		return nil, err
	}
	v, err := newVerifier(o)
	if err != nil {
		return nil, err
	}
	serverName := o.ServerName
	if serverName == "" {
		serverName = host
	}
	dial := o.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: probeTimeout}).DialContext
	}
	now := v.now()
	r := &Report{Address: net.JoinHostPort(host, port), ServerName: serverName, CheckedAt: now, Pinned: v.pin != ""}

	handshake := func(cfg *tls.Config) (tls.ConnectionState, error) {
		hctx := ctx
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeout(ctx, probeTimeout)
			defer cancel()
		}
		conn, err := dial(hctx, "tcp", r.Address)
		if err != nil {
			return tls.ConnectionState{}, &dialError{err}
		}
		defer conn.Close()
		// SECURITY: InsecureSkipVerify only lets the handshake finish so
		// that the chain can be reported; it is verified below with the
		// client's policy, and nothing is sent over these connections.
		cfg.InsecureSkipVerify = true
		cfg.ServerName = serverName
		cfg.Time = o.Now
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(hctx); err != nil {
			return tls.ConnectionState{}, err
		}
		return tc.ConnectionState(), nil
	}
	var dialErr *dialError

	got, mainErr := handshake(&tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: CipherSuites(),
		NextProtos:   []string{"h2", "http/1.1"},
	})
	if errors.As(mainErr, &dialErr) {
		return nil, fmt.Errorf("connect to %s: %w", r.Address, mainErr)
	}
	legacy, legacyErr := handshake(&tls.Config{
		MinVersion: tls.VersionTLS10, // crypto/tls offers 1.0/1.1 only when asked explicitly
		MaxVersion: tls.VersionTLS11,
		CipherSuites: suitesFor(func(vers []uint16) bool {
			return slices.Contains(vers, tls.VersionTLS10) || slices.Contains(vers, tls.VersionTLS11)
		}),
	})
	if errors.As(legacyErr, &dialErr) {
		return nil, fmt.Errorf("connect to %s: %w", r.Address, legacyErr)
	}
	weak, weakErr := handshake(&tls.Config{
		MinVersion: tls.VersionTLS12,
		MaxVersion: tls.VersionTLS12,
		CipherSuites: slices.DeleteFunc(suitesFor(func(vers []uint16) bool { return slices.Contains(vers, tls.VersionTLS12) }),
			func(id uint16) bool { return slices.Contains(CipherSuites(), id) }),
	})
	if errors.As(weakErr, &dialErr) {
		return nil, fmt.Errorf("connect to %s: %w", r.Address, weakErr)
	}

	var fails, warns []string
	certs := got.PeerCertificates
	if mainErr != nil {
		r.HandshakeError = mainErr.Error()
		msg := "no handshake with Coffer's policy (TLS 1.2 or later, ECDHE with AEAD ciphers): " + mainErr.Error()
		switch {
		case legacyErr == nil && weakErr != nil:
			msg = fmt.Sprintf("the server speaks only %s, older than the TLS 1.2 Coffer requires", tls.VersionName(legacy.Version))
		case weakErr == nil:
			msg = fmt.Sprintf("the server chose %s when offered only suites outside Coffer's policy and refused the policy's (ECDHE with AEAD ciphers)", tls.CipherSuiteName(weak.CipherSuite))
		}
		fails = append(fails, msg)
		// Show the chain from whichever handshake got one.
		if certs = weak.PeerCertificates; len(certs) == 0 {
			certs = legacy.PeerCertificates
		}
	} else {
		r.Version = tls.VersionName(got.Version)
		r.CipherSuite = tls.CipherSuiteName(got.CipherSuite)
		r.ALPN = got.NegotiatedProtocol
		if got.Version < tls.VersionTLS12 || !allowedSuite(got.Version, got.CipherSuite) {
			// The client's configuration prevents this; checked anyway,
			// since a verdict must not rest on an assumption.
			fails = append(fails, fmt.Sprintf("negotiated %s with %s, outside Coffer's policy (TLS 1.2+, ECDHE with AEAD ciphers)", r.Version, r.CipherSuite))
		}
	}
	for _, c := range certs {
		r.Chain = append(r.Chain, certInfo(c))
	}

	if len(certs) > 0 {
		verr := v.verify(certs, serverName)
		r.Verified = verr == nil
		if verr != nil {
			r.VerifyError = verr.Error()
			var ue *UntrustedError
			if !errors.As(verr, &ue) || ue.Reason != ReasonValidity {
				reason := "not trusted"
				if ue != nil {
					reason = ue.Reason.String()
				}
				fails = append(fails, "certificate not trusted: "+reason)
			}
		}
		leaf := certs[0]
		switch {
		case now.After(leaf.NotAfter):
			fails = append(fails, "certificate expired on "+leaf.NotAfter.UTC().Format(time.DateOnly))
		case now.Before(leaf.NotBefore):
			fails = append(fails, "certificate is not valid until "+leaf.NotBefore.UTC().Format(time.RFC3339)+" (check the clocks)")
		case leaf.NotAfter.Sub(now) < RenewBefore:
			warns = append(warns, fmt.Sprintf("certificate expires in %d days, on %s", int(leaf.NotAfter.Sub(now).Hours()/24), leaf.NotAfter.UTC().Format(time.DateOnly)))
		}
	}

	if legacyErr == nil {
		r.AcceptsLegacy = true
		r.LegacyVersion = tls.VersionName(legacy.Version)
		warns = append(warns, "accepts "+r.LegacyVersion+" (TLS before 1.2 is obsolete)")
	}
	if weakErr == nil {
		r.AcceptsWeakCiphers = true
		r.WeakCipherSuite = tls.CipherSuiteName(weak.CipherSuite)
		warns = append(warns, "accepts TLS 1.2 suite "+r.WeakCipherSuite+" (not ECDHE with an AEAD cipher)")
	}

	r.Problems = append(append([]string{}, fails...), warns...)
	switch {
	case len(fails) > 0:
		r.Status = StatusFail
	case len(warns) > 0:
		r.Status = StatusWarning
	default:
		r.Status = StatusOK
	}
	r.Verdict = r.Status
	if len(r.Problems) > 0 {
		r.Verdict += ": " + strings.Join(r.Problems, "; ")
	}
	return r, nil
}

// splitTarget accepts "host:port" or an https URL (port 443 by default).
func splitTarget(addr string) (host, port string, err error) {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return "", "", fmt.Errorf("address %q: %w", short(addr), err)
		}
		if u.Scheme != "https" {
			return "", "", fmt.Errorf("address %q: Coffer servers speak only https", short(addr))
		}
		host, port = u.Hostname(), u.Port()
		if port == "" {
			port = "443"
		}
	} else if host, port, err = net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("address %q: want host:port or https://host:port", short(addr))
	}
	if host == "" || port == "" {
		return "", "", fmt.Errorf("address %q: want host:port or https://host:port", short(addr))
	}
	return host, port, nil
}

// suitesFor lists every TLS 1.0–1.2 suite crypto/tls implements, secure
// or not, for the versions keep accepts.
func suitesFor(keep func(versions []uint16) bool) []uint16 {
	var ids []uint16
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if keep(s.SupportedVersions) && !slices.Contains(s.SupportedVersions, tls.VersionTLS13) {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

func certInfo(c *x509.Certificate) CertInfo {
	info := CertInfo{
		Subject:         c.Subject.String(),
		Issuer:          c.Issuer.String(),
		NotBefore:       c.NotBefore,
		NotAfter:        c.NotAfter,
		DNSNames:        c.DNSNames,
		PublicKey:       describeKey(c.PublicKey),
		IsCA:            c.IsCA,
		Fingerprint:     Fingerprint(c.Raw),
		SPKIFingerprint: SPKIFingerprint(c),
	}
	for _, ip := range c.IPAddresses {
		info.IPs = append(info.IPs, ip.String())
	}
	return info
}

func describeKey(pub any) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// WriteText writes the report for a person to read.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("Server:        %s (certificate name %s)\n", r.Address, r.ServerName)
	if r.HandshakeError != "" {
		p("Handshake:     failed: %s\n", r.HandshakeError)
	} else {
		alpn := r.ALPN
		if alpn == "" {
			alpn = "none"
		}
		p("Protocol:      %s\n", r.Version)
		p("Cipher suite:  %s\n", r.CipherSuite)
		p("ALPN:          %s\n", alpn)
	}
	if len(r.Chain) > 0 {
		p("Chain:\n")
	}
	for i, c := range r.Chain {
		p("  %d  subject:   %s\n", i, c.Subject)
		p("     issuer:    %s\n", c.Issuer)
		p("     valid:     %s to %s", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		if left := c.NotAfter.Sub(r.CheckedAt); left < 0 {
			p(" (expired)\n")
		} else {
			p(" (%d days left)\n", int(left.Hours()/24))
		}
		if names := append(slices.Clone(c.DNSNames), c.IPs...); len(names) > 0 {
			p("     names:     %s\n", strings.Join(names, ", "))
		}
		p("     key:       %s", c.PublicKey)
		if c.IsCA {
			p(", CA")
		}
		p("\n     SHA-256:   %s\n", c.Fingerprint)
		p("     SPKI:      %s\n", c.SPKIFingerprint)
	}
	switch {
	case r.Verified && r.Pinned:
		p("Trusted:       yes (pinned fingerprint matches)\n")
	case r.Verified:
		p("Trusted:       yes\n")
	case r.VerifyError != "":
		p("Trusted:       no: %s\n", r.VerifyError)
	default:
		p("Trusted:       unknown (no certificate)\n")
	}
	if r.AcceptsLegacy {
		p("TLS 1.0/1.1:   accepted (%s)\n", r.LegacyVersion)
	} else {
		p("TLS 1.0/1.1:   refused\n")
	}
	if r.AcceptsWeakCiphers {
		p("Weak suites:   accepted (%s)\n", r.WeakCipherSuite)
	} else {
		p("Weak suites:   refused\n")
	}
	p("Verdict:       %s\n", r.Status)
	for _, problem := range r.Problems {
		p("  - %s\n", problem)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
