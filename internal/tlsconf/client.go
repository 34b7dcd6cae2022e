package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// ClientOptions says whom a Coffer client (CLI, agent, doctor) trusts.
type ClientOptions struct {
	// CAFile is a PEM file of extra CA certificates trusted besides the
	// system's (--cacert): a Coffer server's DATA/tls/ca.pem, or the CA
	// of a TLS-inspecting proxy.
	CAFile string

	// CAPEM holds extra CA certificates in PEM, as CAFile does.
	CAPEM []byte

	// Fingerprint pins the server's certificate (--fingerprint), in any
	// form ParseFingerprint accepts. With a pin the server's leaf
	// certificate must be exactly the pinned one and within its validity
	// period; its chain and host name are then checked only when CAFile
	// or CAPEM is given as well.
	Fingerprint string

	// ServerName overrides the name the server's certificate must carry
	// (and that is sent as SNI). Empty: the host being dialled.
	ServerName string

	// Now is the clock certificates are checked against; nil: time.Now.
	Now func() time.Time

	// DialContext opens the TCP connection for Probe (a proxy dialer,
	// for instance); nil: a net.Dialer with a 10-second timeout.
	// ClientConfig does not use it.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// verifier applies the client's trust policy to the certificates a server
// presents. ClientConfig and Probe share it, so doctor's verdict is the
// client's.
type verifier struct {
	roots *x509.CertPool // system roots plus the extra CAs; nil: system roots only
	chain bool           // verify the chain to roots and the host name
	pin   string         // canonical pinned fingerprint; "" when not pinned
	now   func() time.Time
}

func newVerifier(o ClientOptions) (*verifier, error) {
	v := &verifier{chain: true, now: o.Now}
	if v.now == nil {
		v.now = time.Now
	}
	if o.Fingerprint != "" {
		pin, err := ParseFingerprint(o.Fingerprint)
		if err != nil {
			return nil, err
		}
		v.pin = pin
	}
	var extra [][]byte
	if o.CAFile != "" {
		b, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		extra = append(extra, b)
	}
	if len(o.CAPEM) > 0 {
		extra = append(extra, o.CAPEM)
	}
	if len(extra) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			// No system roots here (or none readable): the extra CAs
			// alone are trusted, which is stricter, not looser.
			pool = x509.NewCertPool()
		}
		for i, b := range extra {
			certs, _, err := parseCertificates(b)
			if err != nil {
				name := "CA PEM"
				if i == 0 && o.CAFile != "" {
					name = "CA file " + o.CAFile
				}
				if errors.Is(err, errKeyNotCert) {
					return nil, fmt.Errorf("%s: %w (pass the CA's certificate, ca.pem, not its key)", name, err)
				}
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			for _, c := range certs {
				pool.AddCert(c)
			}
		}
		v.roots = pool
	} else if v.pin != "" {
		// Pinned and no extra CA: the pin alone authenticates the
		// server (see ClientConfig), so no chain is required.
		v.chain = false
	}
	return v, nil
}

// verify applies the policy to certs (leaf first) for host; host may be
// empty only when the chain is not verified.
func (v *verifier) verify(certs []*x509.Certificate, host string) error {
	if len(certs) == 0 {
		return &UntrustedError{Reason: ReasonInvalid, Host: host, Err: errors.New("the server presented no certificate")}
	}
	if v.chain {
		opts := x509.VerifyOptions{
			Roots:         v.roots,
			DNSName:       host,
			Intermediates: x509.NewCertPool(),
			CurrentTime:   v.now(),
		}
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := certs[0].Verify(opts); err != nil {
			return untrusted(certs[0], host, err, err)
		}
	}
	return v.checkPin(certs, host)
}

// checkPin enforces the pin, if any, on the leaf: the exact certificate
// and its validity period.
func (v *verifier) checkPin(certs []*x509.Certificate, host string) error {
	if v.pin == "" {
		return nil
	}
	if len(certs) == 0 {
		return &UntrustedError{Reason: ReasonInvalid, Host: host, Err: errors.New("the server presented no certificate")}
	}
	leaf := certs[0]
	if got := Fingerprint(leaf.Raw); got != v.pin {
		ue := untrusted(leaf, host, nil, nil)
		ue.Reason, ue.Pinned = ReasonPinMismatch, v.pin
		return ue
	}
	// A pin names one certificate, not a key forever: an expired or not
	// yet valid certificate is refused as a CA-verified one would be.
	if now := v.now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		ue := untrusted(leaf, host, nil, fmt.Errorf("current time %s is outside the certificate's validity period", now.UTC().Format(time.RFC3339)))
		ue.Reason = ReasonValidity
		return ue
	}
	return nil
}

// ClientConfig returns the TLS configuration for a Coffer client: TLS 1.2
// or later, the same ECDHE/AEAD TLS 1.2 suites the server allows, the
// system roots plus o's CA certificates, and o's pin.
//
// Without a pin crypto/tls verifies the chain and the host name itself
// (the name the caller dials, or ServerName; http.Transport sets it per
// request, IP addresses included). A failure is a
// *tls.CertificateVerificationError, which [ExplainError] turns into an
// [UntrustedError] that tells the user how to trust the server.
//
// With a pin the verification callback returns *UntrustedError itself;
// net/http wraps it in *url.Error, where errors.As finds it.
func ClientConfig(o ClientOptions) (*tls.Config, error) {
	v, err := newVerifier(o)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		// Policy: never below TLS 1.2, whatever the server offers.
		MinVersion:   tls.VersionTLS12,
		CipherSuites: CipherSuites(),
		RootCAs:      v.roots,
		ServerName:   o.ServerName,
		Time:         o.Now,
	}
	if v.pin == "" {
		return cfg, nil
	}
	if !v.chain {
		// SECURITY: InsecureSkipVerify turns off only crypto/tls's own
		// chain and host-name check; it is safe here because
		// VerifyConnection below then accepts nothing but the pinned leaf,
		// within its validity period. The handshake proves that the server
		// holds that leaf's private key (it signs the key exchange: every
		// allowed suite is ECDHE, and TLS 1.3 CertificateVerify), so a pin
		// match authenticates the server without any CA, as the user asked
		// by pinning. VerifyConnection, unlike VerifyPeerCertificate, also
		// runs on resumed sessions.
		cfg.InsecureSkipVerify = true
	}
	// With a CA as well, crypto/tls verifies the chain and host name first
	// and this callback adds the pin: both must hold.
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return v.checkPin(cs.PeerCertificates, cs.ServerName)
	}
	return cfg, nil
}

// Reason says why a server's certificate was not trusted.
type Reason int

// Reasons for an UntrustedError.
const (
	// ReasonUnknownAuthority: the chain does not lead to a trusted CA
	// (self-signed, a local CA, a TLS-inspecting proxy).
	ReasonUnknownAuthority Reason = iota + 1
	// ReasonHostname: the certificate is not for the host dialled.
	ReasonHostname
	// ReasonValidity: the certificate has expired or is not yet valid.
	ReasonValidity
	// ReasonPinMismatch: the certificate is not the pinned one.
	ReasonPinMismatch
	// ReasonInvalid: any other verification failure.
	ReasonInvalid
)

// String names the reason in a few words.
func (r Reason) String() string {
	switch r {
	case ReasonUnknownAuthority:
		return "unknown certificate authority"
	case ReasonHostname:
		return "certificate is for another host name"
	case ReasonValidity:
		return "certificate expired or not yet valid"
	case ReasonPinMismatch:
		return "certificate does not match the pinned fingerprint"
	case ReasonInvalid:
		return "invalid certificate"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// UntrustedError reports a server certificate the client does not trust,
// with what the user needs to decide whether and how to trust it. Its
// message says what to do next (--cacert or --fingerprint, renewal, the
// right host name).
type UntrustedError struct {
	Reason      Reason
	Host        string    // the server dialled (host or host:port), when known
	ServerName  string    // the name the certificate was checked for, for ReasonHostname
	Subject     string    // the leaf's subject
	Issuer      string    // the leaf's issuer
	Names       []string  // the DNS names and IP addresses the leaf is for
	NotBefore   time.Time // the leaf's validity period
	NotAfter    time.Time
	Fingerprint string // the leaf's SHA-256 fingerprint (see Fingerprint)
	Pinned      string // the pinned fingerprint, for ReasonPinMismatch
	Err         error  // the underlying verification error, if any
}

// Unwrap returns the underlying verification error.
func (e *UntrustedError) Unwrap() error { return e.Err }

// Error says which certificate was refused, why, and what the user can do
// about it.
func (e *UntrustedError) Error() string {
	server := "the server"
	if e.Host != "" {
		server = "server " + e.Host
	}
	cert := fmt.Sprintf("certificate %q issued by %q (fingerprint %s)", e.Subject, e.Issuer, e.Fingerprint)
	pinHint := fmt.Sprintf("pin it with --fingerprint %s after checking that fingerprint out of band (a Coffer server prints it when it starts)", e.Fingerprint)
	switch e.Reason {
	case ReasonUnknownAuthority:
		return fmt.Sprintf("%s presented %s, which no trusted authority vouches for. "+
			"To trust it, pass --cacert FILE with the CA that issued it "+
			"(for a Coffer server: the server's DATA/tls/ca.pem; behind a TLS-inspecting proxy: the proxy's CA certificate), "+
			"or %s", server, cert, pinHint)
	case ReasonHostname:
		host := e.ServerName
		if host == "" {
			host = e.Host
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
		}
		if host == "" {
			return fmt.Sprintf("%s presented %s, which is valid only for %s: "+
				"connect using one of those names, or %s", server, cert, listNames(e.Names), pinHint)
		}
		return fmt.Sprintf("%s presented %s, which is valid for %s, not for %q: "+
			"connect using one of those names, have the server's certificate include %q, or %s",
			server, cert, listNames(e.Names), host, host, pinHint)
	case ReasonValidity:
		return fmt.Sprintf("%s presented %s, valid only from %s until %s: "+
			"if it has expired, renew it (a Coffer server renews its own certificate when it restarts); "+
			"otherwise check this machine's clock%s",
			server, cert, e.NotBefore.UTC().Format(time.RFC3339), e.NotAfter.UTC().Format(time.RFC3339), detail(e.Err))
	case ReasonPinMismatch:
		return fmt.Sprintf("%s presented %s, but --fingerprint pins %s: "+
			"if the server's certificate was replaced, check the new fingerprint out of band and pin that; "+
			"otherwise the connection may be intercepted",
			server, cert, e.Pinned)
	}
	return fmt.Sprintf("%s presented %s, which could not be verified%s; "+
		"to trust this exact certificate, %s", server, cert, detail(e.Err), pinHint)
}

func detail(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

func listNames(names []string) string {
	if len(names) == 0 {
		return "no host names"
	}
	return strings.Join(names, ", ")
}

// untrusted describes leaf in an UntrustedError, classifying verr, the
// error from x509 verification (nil when there is none); wrapped becomes
// Err.
func untrusted(leaf *x509.Certificate, host string, verr, wrapped error) *UntrustedError {
	e := &UntrustedError{
		Reason:      ReasonInvalid,
		Host:        host,
		Subject:     leaf.Subject.String(),
		Issuer:      leaf.Issuer.String(),
		Names:       certNames(leaf),
		NotBefore:   leaf.NotBefore,
		NotAfter:    leaf.NotAfter,
		Fingerprint: Fingerprint(leaf.Raw),
		Err:         wrapped,
	}
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var noRoots x509.SystemRootsError
	switch {
	case verr == nil:
	case errors.As(verr, &hostErr):
		e.Reason = ReasonHostname
		e.ServerName = hostErr.Host
	case errors.As(verr, &unknown), errors.As(verr, &noRoots):
		e.Reason = ReasonUnknownAuthority
	case errors.As(verr, &invalid) && invalid.Reason == x509.Expired:
		e.Reason = ReasonValidity
	}
	return e
}

// certNames lists the DNS names and IP addresses a certificate is for.
func certNames(c *x509.Certificate) []string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// ExplainError makes a TLS failure from a connection made with
// ClientConfig (directly or wrapped, by net/http for instance) say what to
// do next:
//
//   - a failed certificate verification becomes an *UntrustedError (which
//     still wraps the *tls.CertificateVerificationError), whose message
//     says how to trust the server;
//   - a server that offers only TLS versions older than 1.2 gets an error
//     saying so, which wraps err.
//
// Any other error is returned unchanged, as is one that already holds an
// *UntrustedError.
func ExplainError(err error) error {
	if err == nil {
		return nil
	}
	var ue *UntrustedError
	if errors.As(err, &ue) {
		return err
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0 {
		return untrusted(cve.UnverifiedCertificates[0], hostOf(err), cve.Err, cve)
	}
	// crypto/tls reports an alert from the peer as a *net.OpError with Op
	// "remote error"; the alert's type is unexported, its text is stable.
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" && oe.Err != nil && oe.Err.Error() == "tls: protocol version not supported" {
		return fmt.Errorf("%w: the server offers only TLS versions older than 1.2, which Coffer refuses; "+
			"upgrade the server, or the proxy in front of it, to TLS 1.2 or later (coffer doctor tls shows what it accepts)", err)
	}
	return err
}

// hostOf finds the host:port a wrapped error was about: the URL of a
// *url.Error, the remote address of a *net.OpError.
func hostOf(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
			return u.Host
		}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Addr != nil {
		return oe.Addr.String()
	}
	return ""
}
