package tlsconf

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/fsutil"
)

// Names of the files LoadOrCreate keeps in the server's TLS directory
// (DATA/tls). The directory belongs to Coffer: a certificate of your own is
// given with --tls-cert and --tls-key and loaded with [LoadFiles] instead.
const (
	CACertName = "ca.pem"         // the local CA's certificate; public, 0644
	CAKeyName  = "ca-key.pem"     // the local CA's private key; 0600
	CertName   = "server.pem"     // the server's certificate; public, 0644
	KeyName    = "server-key.pem" // the server's private key; 0600
)

// Lifetimes of what LoadOrCreate creates.
const (
	// CAValidityYears is how long a new local CA is valid (ten years, counted
	// with time.AddDate). Clients trust it with --cacert, so it should
	// outlive many server certificates.
	CAValidityYears = 10

	// CertValidityYears is how long a new server certificate is valid (one
	// year, with time.AddDate), capped at the CA's own expiry. A short
	// life limits the use of a stolen server key; LoadOrCreate renews
	// the certificate, under the same CA, at a start within RenewBefore
	// of its expiry.
	CertValidityYears = 1

	// RenewBefore is how long before expiry LoadOrCreate replaces a
	// server certificate or local CA it made, and how close to expiry
	// Probe starts warning.
	RenewBefore = 30 * 24 * time.Hour

	// backdate moves NotBefore into the past so that a client whose
	// clock is a little behind the server's accepts a brand-new
	// certificate.
	backdate = time.Hour
)

// Material is a server's certificate and private key, ready for
// [ServerConfig], with the PEM they came from.
//
// KeyPEM and Cert.PrivateKey are secret: Material's String and GoString
// print neither, so a Material that reaches a log or an error leaks
// nothing.
type Material struct {
	CertPEM []byte            // the certificate chain, leaf first
	KeyPEM  []byte            // the private key (secret)
	CAPEM   []byte            // the local CA's certificate, or nil when unknown
	Cert    tls.Certificate   // chain and key for tls.Config.Certificates
	Leaf    *x509.Certificate // the parsed leaf, also in Cert.Leaf
}

// Fingerprint returns the SHA-256 fingerprint of the server certificate
// (see [Fingerprint]), which clients can pin with --fingerprint.
func (m *Material) Fingerprint() string { return Fingerprint(m.Leaf.Raw) }

// CAFingerprint returns the SHA-256 fingerprint of the local CA's
// certificate, or "" when the material has no CA.
func (m *Material) CAFingerprint() string {
	block, _ := pem.Decode(m.CAPEM)
	if block == nil {
		return ""
	}
	return Fingerprint(block.Bytes)
}

// String describes the material without its private key.
func (m Material) String() string {
	if m.Leaf == nil {
		return "tlsconf.Material{}"
	}
	return fmt.Sprintf("tlsconf.Material{leaf %q, %s, key [redacted]}", m.Leaf.Subject.String(), Fingerprint(m.Leaf.Raw))
}

// GoString is String, so that %#v does not print the private key either.
func (m Material) GoString() string { return m.String() }

// errKeyNotCert reports a private key in a file that should hold
// certificates.
var errKeyNotCert = errors.New("a private key where a certificate was expected")

// errKeyMismatch reports a private key that does not belong to the
// certificate beside it.
var errKeyMismatch = errors.New("private key does not match the certificate's public key")

// LoadFiles loads a certificate chain (leaf first) and its private key from
// the PEM files given with --tls-cert and --tls-key. CAPEM is left nil.
func LoadFiles(certFile, keyFile string) (*Material, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read TLS key: %w", err)
	}
	m, err := ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return m, nil
}

// ParseKeyPair parses a PEM certificate chain (leaf first) and the leaf's
// PEM private key (PKCS #8, SEC 1 EC or PKCS #1 RSA, unencrypted). It
// accepts ECDSA P-256/P-384/P-521, Ed25519 and RSA 2048–8192 bit keys,
// rejects a key that does not match the leaf, and rejects a leaf whose
// extended key usage excludes TLS server authentication. CAPEM is nil.
func ParseKeyPair(certPEM, keyPEM []byte) (*Material, error) {
	certs, ders, err := parseCertificates(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	if err := checkPublicKey(leaf.PublicKey); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		return nil, errKeyMismatch
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil, errors.New("certificate is not for TLS servers: its extended key usage lacks serverAuth")
	}
	return &Material{
		CertPEM: certPEM,
		KeyPEM:  keyPEM,
		Cert:    tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf},
		Leaf:    leaf,
	}, nil
}

// parseCertificates parses every CERTIFICATE block of a PEM file. Text
// around the blocks (openssl's "subject=" lines) is ignored; a key block
// or any other block type is an error, as is a file without certificates.
func parseCertificates(data []byte) ([]*x509.Certificate, [][]byte, error) {
	var certs []*x509.Certificate
	var ders [][]byte
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
			}
			certs = append(certs, c)
			ders = append(ders, block.Bytes)
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			return nil, nil, errKeyNotCert
		default:
			return nil, nil, fmt.Errorf("unexpected PEM block %q where a certificate was expected", short(block.Type))
		}
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("no PEM certificate found")
	}
	return certs, ders, nil
}

// parsePrivateKey parses the first private key block of a PEM file and
// checks that its type and size are ones this package serves with.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var key any
		var err error
		switch block.Type {
		case "EC PARAMETERS": // openssl ecparam -genkey writes these first
			continue
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			if strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
				return nil, errors.New("the private key is encrypted: decrypt it first (openssl pkey -in KEY -out PLAIN)")
			}
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the private key is encrypted: decrypt it first (openssl pkey -in KEY -out PLAIN)")
		case "CERTIFICATE":
			return nil, errors.New("a certificate where a private key was expected")
		default:
			return nil, fmt.Errorf("unexpected PEM block %q where a private key was expected", short(block.Type))
		}
		if err != nil {
			// The parser's message names the structure, never key bytes.
			return nil, fmt.Errorf("private key: %w", err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		if err := checkPublicKey(signer.Public()); err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		return signer, nil
	}
}

// checkPublicKey accepts the key types and sizes a TLS server should use
// and crypto/tls clients accept.
func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("unsupported ECDSA curve %s: use P-256, P-384 or P-521", k.Curve.Params().Name)
	case *rsa.PublicKey:
		// Below 2048 bits RSA is breakable; above 8192 crypto/tls
		// clients refuse the certificate.
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("RSA key of %d bits: use 2048 to 8192 bits", n)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("unsupported public key type %T: use ECDSA, Ed25519 or RSA", pub)
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// authority is the local CA: its certificate, its PEM and its key.
type authority struct {
	cert *x509.Certificate
	pem  []byte
	key  crypto.Signer
}

// LoadOrCreate returns the server's certificate from dir (DATA/tls),
// creating a local CA and a server certificate there when dir has none.
// created reports that a new server certificate was written (and perhaps a
// new CA), so that the caller can print its fingerprint and where the CA
// is; now is the time certificates are issued and checked at.
//
// hosts are the server's DNS names and IP addresses; the certificate also
// covers "localhost", 127.0.0.1 and ::1. A new CA is ECDSA P-256, named
// "Coffer local CA <hostname>", valid for [CAValidityYears] years, and can
// sign only end-entity certificates for TLS servers (MaxPathLenZero,
// ExtKeyUsage serverAuth). It is deliberately not name-constrained to the
// hosts: a host added later, or a container's new host name, then gets a
// new server certificate under the same CA, and agents that trust ca.pem
// keep working. A new server certificate is ECDSA P-256, valid for
// [CertValidityYears] year(s) but not beyond the CA, for serverAuth.
//
// Every file is written crash-safely (temporary file, fsync, rename, fsync
// of dir), keys with mode 0600, dir with 0700, in the order CA key, CA
// certificate, server key, server certificate, so an interrupted run
// leaves a state the next one recognises and completes. In detail:
//
//   - A server certificate and key that match are loaded. When they were
//     issued by the CA in dir, LoadOrCreate reissues them under that CA if
//     they expire within [RenewBefore], are not yet valid, or do not cover
//     every host; when the CA itself is within [RenewBefore] of its
//     expiry, it makes a new CA first. A certificate
//     not issued by a complete CA in dir is reissued (a run that died
//     between a new CA and its server certificate) unless dir holds no CA
//     key, in which case it is loaded as it is and never renewed.
//   - A missing server certificate or key, or a pair that does not match,
//     is reissued under the CA, or under a new CA when the CA is missing,
//     incomplete or mismatched.
//   - A file that exists but is not PEM of the expected kind is an error:
//     it was not written by this function, so LoadOrCreate does not
//     overwrite it.
//
// Two processes must not call LoadOrCreate on the same dir at once.
func LoadOrCreate(dir string, hosts []string, now time.Time) (m *Material, created bool, err error) {
	return loadOrCreate(osWriter{}, dir, hosts, now)
}

// fileWriter replaces a file atomically and durably. Tests substitute one
// that fails part-way to simulate a crash.
type fileWriter interface {
	WriteFile(name string, data []byte, perm fs.FileMode) error
}

// pairState classifies a certificate file and its key file.
type pairState int

const (
	pairNone       pairState = iota // neither file exists
	pairOK                          // both exist and match
	pairIncomplete                  // one file is missing, or the two do not match
)

func loadOrCreate(w fileWriter, dir string, hosts []string, now time.Time) (*Material, bool, error) {
	names, err := certHosts(hosts)
	if err != nil {
		return nil, false, err
	}
	if err := prepareDir(dir); err != nil {
		return nil, false, err
	}
	caCertPEM, caKeyPEM, caState, ca, err := loadAuthority(dir)
	if err != nil {
		return nil, false, err
	}
	srvState, m, err := loadServer(dir)
	if err != nil {
		return nil, false, err
	}

	if srvState == pairOK {
		m.CAPEM = caCertPEM
		switch {
		case caState == pairNone || (caState == pairIncomplete && caKeyPEM == nil):
			// No CA key (the operator may have removed it on purpose):
			// nothing to renew with, so serve what is there.
			if caState == pairNone {
				m.CAPEM = nil
			}
			return m, false, nil
		case caState == pairOK && issuedBy(m.Leaf, ca) && !needsRenewal(m.Leaf, names, now):
			return m, false, nil
		}
		// Otherwise reissue: renewal is due, or an interrupted run left a
		// new or half-written CA beside the old certificate.
	}

	if caState != pairOK || !ca.usable(now) {
		if ca, err = newAuthority(now); err != nil {
			return nil, false, err
		}
		if err := writeAuthority(w, dir, ca); err != nil {
			return nil, false, err
		}
	}
	m, err = issue(ca, names, now)
	if err != nil {
		return nil, false, err
	}
	if err := w.WriteFile(filepath.Join(dir, KeyName), m.KeyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := w.WriteFile(filepath.Join(dir, CertName), m.CertPEM, 0o644); err != nil {
		return nil, false, err
	}
	return m, true, nil
}

// prepareDir creates dir with mode 0700, tightens a looser existing one
// (it holds private keys), and removes temporary files a crash left.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create TLS directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("TLS directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("TLS directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restrict TLS directory: %w", err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read TLS directory: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove stale temporary file: %w", err)
			}
		}
	}
	return nil
}

// readOptional reads a file, returning nil without error when it does not
// exist. Any other failure is an error: a file that cannot be read must
// not be mistaken for a missing one and overwritten.
func readOptional(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

func loadAuthority(dir string) (certPEM, keyPEM []byte, st pairState, ca *authority, err error) {
	certPath, keyPath := filepath.Join(dir, CACertName), filepath.Join(dir, CAKeyName)
	if certPEM, err = readOptional(certPath); err != nil {
		return nil, nil, 0, nil, err
	}
	if keyPEM, err = readOptional(keyPath); err != nil {
		return nil, nil, 0, nil, err
	}
	var cert *x509.Certificate
	if certPEM != nil {
		certs, _, err := parseCertificates(certPEM)
		if err != nil {
			return nil, nil, 0, nil, fmt.Errorf("%s: %w (remove the file to have a new CA created)", certPath, err)
		}
		if len(certs) != 1 || !certs[0].IsCA {
			return nil, nil, 0, nil, fmt.Errorf("%s: not a single CA certificate (remove the file to have a new CA created)", certPath)
		}
		cert = certs[0]
	}
	var key crypto.Signer
	if keyPEM != nil {
		if key, err = parsePrivateKey(keyPEM); err != nil {
			return nil, nil, 0, nil, fmt.Errorf("%s: %w (remove the file to have a new CA created)", keyPath, err)
		}
	}
	switch {
	case cert == nil && key == nil:
		return nil, nil, pairNone, nil, nil
	case cert == nil || key == nil || !samePublicKey(cert.PublicKey, key.Public()):
		return certPEM, keyPEM, pairIncomplete, nil, nil
	}
	return certPEM, keyPEM, pairOK, &authority{cert: cert, pem: certPEM, key: key}, nil
}

func loadServer(dir string) (pairState, *Material, error) {
	certPath, keyPath := filepath.Join(dir, CertName), filepath.Join(dir, KeyName)
	certPEM, err := readOptional(certPath)
	if err != nil {
		return 0, nil, err
	}
	keyPEM, err := readOptional(keyPath)
	if err != nil {
		return 0, nil, err
	}
	if certPEM != nil {
		if _, _, err := parseCertificates(certPEM); err != nil {
			return 0, nil, fmt.Errorf("%s: %w (remove it to have a new certificate issued)", certPath, err)
		}
	}
	if keyPEM != nil {
		if _, err := parsePrivateKey(keyPEM); err != nil {
			return 0, nil, fmt.Errorf("%s: %w (remove it to have a new certificate issued)", keyPath, err)
		}
	}
	switch {
	case certPEM == nil && keyPEM == nil:
		return pairNone, nil, nil
	case certPEM == nil || keyPEM == nil:
		return pairIncomplete, nil, nil
	}
	m, err := ParseKeyPair(certPEM, keyPEM)
	if errors.Is(err, errKeyMismatch) {
		return pairIncomplete, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w (remove it to have a new certificate issued)", certPath, err)
	}
	return pairOK, m, nil
}

func issuedBy(leaf *x509.Certificate, ca *authority) bool {
	return bytes.Equal(leaf.RawIssuer, ca.cert.RawSubject) && leaf.CheckSignatureFrom(ca.cert) == nil
}

// needsRenewal reports that a certificate LoadOrCreate made is close to
// expiry, not yet valid (made by a clock that was ahead) or lacks a host.
func needsRenewal(leaf *x509.Certificate, h hostList, now time.Time) bool {
	if now.Before(leaf.NotBefore) || now.Add(RenewBefore).After(leaf.NotAfter) {
		return true
	}
	for _, name := range h.dns {
		if leaf.VerifyHostname(name) != nil {
			return true
		}
	}
	for _, ip := range h.ips {
		if leaf.VerifyHostname(ip.String()) != nil {
			return true
		}
	}
	return false
}

// usable reports whether the CA can issue a certificate now that will not
// need renewing at once.
func (ca *authority) usable(now time.Time) bool {
	c := ca.cert
	return !now.Before(c.NotBefore) && !now.Add(RenewBefore).After(c.NotAfter)
}

// hostList is what a server certificate covers, in order, without
// duplicates.
type hostList struct {
	dns []string
	ips []net.IP
}

// certHosts validates the given hosts and adds localhost and loopback.
func certHosts(hosts []string) (hostList, error) {
	var h hostList
	add := func(s string) error {
		s = strings.TrimSpace(s)
		if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
			s = s[1 : len(s)-1]
		}
		if ip := net.ParseIP(s); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if !slices.ContainsFunc(h.ips, ip.Equal) {
				h.ips = append(h.ips, ip)
			}
			return nil
		}
		name := strings.TrimSuffix(strings.ToLower(s), ".")
		if !validDNSName(name) {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name (no port, scheme or wildcard)", short(s))
		}
		if !slices.Contains(h.dns, name) {
			h.dns = append(h.dns, name)
		}
		return nil
	}
	for _, s := range append(slices.Clone(hosts), "localhost", "127.0.0.1", "::1") {
		if err := add(s); err != nil {
			return hostList{}, err
		}
	}
	return h, nil
}

// validDNSName accepts a lowercase host name of letters, digits, hyphens
// and underscores (found in machine host names, and accepted by crypto/x509)
// in labels of 1 to 63 characters.
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func serialNumber() (*big.Int, error) {
	// 128 random bits: unique without bookkeeping, as CAs must make them.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // positive, never zero
}

func newAuthority(now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	hostname, err := os.Hostname()
	if err != nil || hostname == "" {
		hostname = "unknown host"
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Coffer"}, CommonName: "Coffer local CA " + hostname},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.AddDate(CAValidityYears, 0, 0),
		// This CA signs TLS server certificates and nothing else: no
		// intermediates (MaxPathLenZero), no client or code-signing
		// certificates (serverAuth only, which verifiers apply to the
		// whole chain). No name constraints: see LoadOrCreate.
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	return &authority{cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}, nil
}

func writeAuthority(w fileWriter, dir string, ca *authority) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("encode CA key: %w", err)
	}
	// Key first: a crash between the two leaves a key without a
	// certificate (or with the old one), which the next run replaces.
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := w.WriteFile(filepath.Join(dir, CAKeyName), keyPEM, 0o600); err != nil {
		return err
	}
	return w.WriteFile(filepath.Join(dir, CACertName), ca.pem, 0o644)
}

// issue makes a server certificate for the hosts under ca.
func issue(ca *authority, h hostList, now time.Time) (*Material, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate server key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	notAfter := now.AddDate(CertValidityYears, 0, 0)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	cn := "localhost"
	if len(h.dns) > 0 && h.dns[0] != "localhost" {
		cn = h.dns[0]
	} else if len(h.ips) > 0 && !h.ips[0].IsLoopback() {
		cn = h.ips[0].String()
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Coffer"}, CommonName: cn},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              h.dns,
		IPAddresses:           h.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("create server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode server key: %w", err)
	}
	m, err := ParseKeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	)
	if err != nil {
		return nil, fmt.Errorf("parse new server certificate: %w", err)
	}
	m.CAPEM = ca.pem
	return m, nil
}

// tempPrefix starts the names of temporary files in the TLS directory;
// prepareDir removes leftovers.
const tempPrefix = fsutil.TempPrefix

// osWriter writes files crash-safely: a temporary file in the same
// directory, write, fsync, close, rename over the target, fsync of the
// directory. A reader sees the old file or the new one, never a part.
type osWriter struct{}

func (osWriter) WriteFile(name string, data []byte, perm fs.FileMode) error {
	return fsutil.WriteFileSync(name, data, perm)
}
