package tlsconf

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// testCA is a CA made by the tests, independent of LoadOrCreate.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pemBlock("CERTIFICATE", der)}
}

// leafOptions describes a certificate issued by testCA.issue.
type leafOptions struct {
	names     []string // DNS names and IP addresses
	key       crypto.Signer
	notBefore time.Time
	notAfter  time.Time
	eku       []x509.ExtKeyUsage
}

// issue returns a certificate and key PEM for o, signed by ca.
func (ca *testCA) issue(t testing.TB, o leafOptions) (certPEM, keyPEM []byte) {
	t.Helper()
	if o.key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		o.key = k
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().AddDate(0, 1, 0)
	}
	if o.eku == nil {
		o.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "test leaf"},
		NotBefore:    o.notBefore,
		NotAfter:     o.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  o.eku,
	}
	for _, n := range o.names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, o.key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(o.key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER)
}

// material issues a certificate under ca and parses it.
func (ca *testCA) material(t testing.TB, o leafOptions) *Material {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, o)
	m, err := ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	m.CAPEM = ca.pem
	return m
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// localMaterial creates a local CA and server certificate with
// LoadOrCreate in a temporary directory.
func localMaterial(t testing.TB, now time.Time, hosts ...string) *Material {
	t.Helper()
	m, created, err := LoadOrCreate(t.TempDir(), hosts, now)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("LoadOrCreate in an empty directory: created = false")
	}
	return m
}

func serverConfig(t testing.TB, m *Material, minVersion uint16) *tls.Config {
	t.Helper()
	cfg, err := ServerConfig(m, minVersion)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// tlsServer accepts connections on a real loopback socket and completes a
// TLS handshake on each with cfg. Server-side handshake results arrive on
// results.
type tlsServer struct {
	addr    string
	results chan error
}

func startTLSServer(t testing.TB, cfg *tls.Config) *tlsServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: l.Addr().String(), results: make(chan error, 64)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := tls.Server(c, cfg)
				err := tc.HandshakeContext(context.Background())
				select {
				case s.results <- err:
				default:
				}
				if err == nil {
					// Let the client finish reading the handshake
					// (TLS 1.3 tickets) before closing.
					buf := make([]byte, 1)
					tc.Read(buf)
				}
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return s
}

// lastResult returns the server's result for the most recent handshake.
func (s *tlsServer) lastResult(t testing.TB) error {
	t.Helper()
	select {
	case err := <-s.results:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no server-side handshake result")
		return nil
	}
}

// dial makes a real TLS handshake to addr with cfg (ServerName defaults to
// the host in addr, as tls.Dial does) and returns its state.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.ConnectionState(), nil
}

func asUntrusted(t testing.TB, err error) *UntrustedError {
	t.Helper()
	var ue *UntrustedError
	if !errors.As(err, &ue) {
		t.Fatalf("error %v (%T) holds no *UntrustedError", err, err)
	}
	return ue
}
