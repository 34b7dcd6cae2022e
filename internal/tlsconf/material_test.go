package tlsconf

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

var allFiles = []string{CAKeyName, CACertName, KeyName, CertName}

func readFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range allFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		files[name] = b
	}
	return files
}

// checkComplete asserts that dir holds a complete, consistent local CA and
// server certificate for hosts at now, equal to m.
func checkComplete(t testing.TB, dir string, m *Material, now time.Time, hosts ...string) {
	t.Helper()
	files := readFiles(t, dir)
	for _, name := range allFiles {
		if files[name] == nil {
			t.Fatalf("%s missing", name)
		}
	}
	if !bytes.Equal(files[CertName], m.CertPEM) || !bytes.Equal(files[KeyName], m.KeyPEM) || !bytes.Equal(files[CACertName], m.CAPEM) {
		t.Fatal("files differ from the returned material")
	}
	ca, err := parseAuthorityForTest(files[CACertName], files[CAKeyName])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		if _, err := m.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: h, CurrentTime: now}); err != nil {
			t.Errorf("leaf does not verify for %s under ca.pem: %v", h, err)
		}
	}
}

func parseAuthorityForTest(certPEM, keyPEM []byte) (*x509.Certificate, error) {
	certs, _, err := parseCertificates(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !samePublicKey(certs[0].PublicKey, key.Public()) {
		return nil, errors.New("CA key does not match ca.pem")
	}
	return certs[0], nil
}

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	hosts := []string{"backup.example.com", "192.0.2.10", "2001:db8::1"}
	m, created, err := LoadOrCreate(dir, hosts, now)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("created = false in an empty directory")
	}
	checkComplete(t, dir, m, now, hosts...)

	if runtime.GOOS != "windows" {
		for name, want := range map[string]fs.FileMode{CAKeyName: 0o600, KeyName: 0o600, CACertName: 0o644, CertName: 0o644, ".": 0o700 | fs.ModeDir} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != want {
				t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
			}
		}
	}

	leaf := m.Leaf
	if !slices.Equal(leaf.DNSNames, []string{"backup.example.com", "localhost"}) {
		t.Errorf("DNS names %q", leaf.DNSNames)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(ips, []string{"192.0.2.10", "2001:db8::1", "127.0.0.1", "::1"}) {
		t.Errorf("IP addresses %q", ips)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("leaf key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || leaf.IsCA {
		t.Errorf("leaf: ExtKeyUsage %v, IsCA %v", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if want := now.AddDate(CertValidityYears, 0, 0); !leaf.NotAfter.Equal(want) {
		t.Errorf("leaf NotAfter %v, want %v", leaf.NotAfter, want)
	}
	if leaf.Subject.CommonName != "backup.example.com" {
		t.Errorf("leaf CN %q", leaf.Subject.CommonName)
	}

	block, _ := pem.Decode(m.CAPEM)
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !ca.IsCA || !ca.MaxPathLenZero || ca.MaxPathLen != 0:
		t.Errorf("CA: IsCA %v, MaxPathLen %d (zero %v)", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero)
	case ca.KeyUsage&x509.KeyUsageCertSign == 0:
		t.Errorf("CA key usage %v", ca.KeyUsage)
	case !strings.HasPrefix(ca.Subject.CommonName, "Coffer local CA "):
		t.Errorf("CA CN %q", ca.Subject.CommonName)
	case !ca.NotAfter.Equal(now.AddDate(CAValidityYears, 0, 0)):
		t.Errorf("CA NotAfter %v", ca.NotAfter)
	case !slices.Equal(ca.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}):
		t.Errorf("CA ExtKeyUsage %v", ca.ExtKeyUsage)
	}
	if m.CAFingerprint() != Fingerprint(ca.Raw) {
		t.Errorf("CAFingerprint %s", m.CAFingerprint())
	}

	// The CA's limits hold: what it signs for client authentication, or
	// as an intermediate CA, does not verify.
	caKey, err := parsePrivateKey(readFiles(t, dir)[CAKeyName])
	if err != nil {
		t.Fatal(err)
	}
	local := &testCA{cert: ca, key: caKey}
	clientPEM, _ := local.issue(t, leafOptions{names: []string{"localhost"}, notBefore: now, notAfter: now.Add(time.Hour), eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	clientCert, _, _ := parseCertificates(clientPEM)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := clientCert[0].Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("the local CA can vouch for a client certificate")
	}

	// Loading again changes nothing.
	before := readFiles(t, dir)
	m2, created, err := LoadOrCreate(dir, hosts, now.AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("created = true on reload")
	}
	if m2.Fingerprint() != m.Fingerprint() || !bytes.Equal(m2.CAPEM, m.CAPEM) || !bytes.Equal(m2.KeyPEM, m.KeyPEM) {
		t.Error("reload returned different material")
	}
	if after := readFiles(t, dir); !mapsEqual(before, after) {
		t.Error("reload rewrote files")
	}
}

func mapsEqual(a, b map[string][]byte) bool {
	for k := range a {
		if !bytes.Equal(a[k], b[k]) {
			return false
		}
	}
	return len(a) == len(b)
}

// TestLoadOrCreateRepairs starts from each state a crash or an operator
// can leave and checks the outcome.
func TestLoadOrCreateRepairs(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string, orig map[string][]byte)
		keepCA  bool // the CA must survive
	}{
		{"only the CA", func(t *testing.T, dir string, _ map[string][]byte) {
			remove(t, dir, CertName, KeyName)
		}, true},
		{"CA and server key", func(t *testing.T, dir string, _ map[string][]byte) {
			remove(t, dir, CertName)
		}, true},
		{"server certificate without key", func(t *testing.T, dir string, _ map[string][]byte) {
			remove(t, dir, KeyName)
		}, true},
		{"server key does not match", func(t *testing.T, dir string, _ map[string][]byte) {
			other := newTestCA(t, "x")
			_, key := other.issue(t, leafOptions{})
			write(t, dir, KeyName, key)
		}, true},
		{"server certificate from another CA", func(t *testing.T, dir string, _ map[string][]byte) {
			other := newTestCA(t, "x")
			cert, key := other.issue(t, leafOptions{names: []string{"localhost"}})
			write(t, dir, CertName, cert)
			write(t, dir, KeyName, key)
		}, true},
		{"only the CA key", func(t *testing.T, dir string, _ map[string][]byte) {
			remove(t, dir, CACertName, CertName, KeyName)
		}, false},
		{"CA certificate without key, no server", func(t *testing.T, dir string, _ map[string][]byte) {
			remove(t, dir, CAKeyName, CertName, KeyName)
		}, false},
		{"new CA key beside the old CA", func(t *testing.T, dir string, _ map[string][]byte) {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, _ := x509.MarshalPKCS8PrivateKey(k)
			write(t, dir, CAKeyName, pemBlock("PRIVATE KEY", der))
		}, false},
		{"stale temporary file", func(t *testing.T, dir string, orig map[string][]byte) {
			write(t, dir, tempPrefix+KeyName+"-123", []byte("half a key"))
			remove(t, dir, CertName, KeyName)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, err := LoadOrCreate(dir, nil, now); err != nil {
				t.Fatal(err)
			}
			orig := readFiles(t, dir)
			tt.prepare(t, dir, orig)
			m, created, err := LoadOrCreate(dir, nil, now)
			if err != nil {
				t.Fatal(err)
			}
			if !created {
				t.Fatal("created = false after a repair")
			}
			checkComplete(t, dir, m, now)
			if got := bytes.Equal(readFiles(t, dir)[CACertName], orig[CACertName]); got != tt.keepCA {
				t.Errorf("CA kept = %v, want %v", got, tt.keepCA)
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), tempPrefix) {
					t.Errorf("temporary file %s left", e.Name())
				}
			}
		})
	}
}

func remove(t testing.TB, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
}

func write(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLoadOrCreateKeepsOperatorChoices: without a CA key the server
// certificate is served as it is, and garbage is an error, not replaced.
func TestLoadOrCreateKeepsOperatorChoices(t *testing.T) {
	now := time.Now()
	t.Run("CA key removed", func(t *testing.T) {
		dir := t.TempDir()
		m, _, err := LoadOrCreate(dir, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		remove(t, dir, CAKeyName)
		// Even at renewal time and for a new host: nothing to renew with.
		m2, created, err := LoadOrCreate(dir, []string{"new.example"}, now.AddDate(0, 11, 15))
		if err != nil || created {
			t.Fatalf("created %v, err %v", created, err)
		}
		if m2.Fingerprint() != m.Fingerprint() || !bytes.Equal(m2.CAPEM, m.CAPEM) {
			t.Fatal("material changed")
		}
	})
	t.Run("own certificate without any CA", func(t *testing.T) {
		dir := t.TempDir()
		cert, key := newTestCA(t, "corporate CA").issue(t, leafOptions{names: []string{"backup.corp"}})
		write(t, dir, CertName, cert)
		write(t, dir, KeyName, key)
		m, created, err := LoadOrCreate(dir, nil, now)
		if err != nil || created {
			t.Fatalf("created %v, err %v", created, err)
		}
		if !bytes.Equal(m.CertPEM, cert) || m.CAPEM != nil {
			t.Fatal("own certificate not loaded as it is")
		}
	})
	for _, name := range allFiles {
		t.Run("garbage "+name, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, err := LoadOrCreate(dir, nil, now); err != nil {
				t.Fatal(err)
			}
			write(t, dir, name, []byte("garbage"))
			_, _, err := LoadOrCreate(dir, nil, now)
			if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "remove") {
				t.Fatalf("error %v, want one naming %s and saying what to do", err, name)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != "garbage" {
				t.Fatal("garbage file was replaced")
			}
		})
	}
}

func TestLoadOrCreateRenews(t *testing.T) {
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	m, _, err := LoadOrCreate(dir, []string{"example.com"}, now)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := m.CAPEM

	// Within RenewBefore of expiry: a new certificate, same CA.
	later := m.Leaf.NotAfter.Add(-RenewBefore + time.Hour)
	m2, created, err := LoadOrCreate(dir, []string{"example.com"}, later)
	if err != nil || !created {
		t.Fatalf("renewal: created %v, err %v", created, err)
	}
	if !bytes.Equal(m2.CAPEM, caPEM) || m2.Fingerprint() == m.Fingerprint() {
		t.Fatal("renewal changed the CA or kept the certificate")
	}
	checkComplete(t, dir, m2, later, "example.com")

	// New hosts: a new certificate under the same CA, so agents that
	// trust ca.pem keep working.
	m4, created, err := LoadOrCreate(dir, []string{"example.com", "backup.example.org", "10.1.2.3"}, later)
	if err != nil || !created || !bytes.Equal(m4.CAPEM, caPEM) {
		t.Fatalf("new hosts: created %v, err %v, same CA %v", created, err, bytes.Equal(m4.CAPEM, caPEM))
	}
	checkComplete(t, dir, m4, later, "example.com", "backup.example.org", "10.1.2.3")
	// Dropping a host changes nothing: the certificate still covers it.
	if _, created, err := LoadOrCreate(dir, []string{"example.com"}, later); err != nil || created {
		t.Fatalf("fewer hosts: created %v, err %v", created, err)
	}

	// Near the CA's end: the certificate stops with the CA, then a new CA.
	block, _ := pem.Decode(m4.CAPEM)
	ca4, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"example.com", "backup.example.org", "10.1.2.3"}
	m5, created, err := LoadOrCreate(dir, hosts, ca4.NotAfter.AddDate(0, -6, 0))
	if err != nil || !created || !bytes.Equal(m5.CAPEM, m4.CAPEM) {
		t.Fatalf("half a year before the CA's end: created %v, err %v", created, err)
	}
	if !m5.Leaf.NotAfter.Equal(ca4.NotAfter) {
		t.Errorf("certificate ends %v, its CA %v", m5.Leaf.NotAfter, ca4.NotAfter)
	}
	at := ca4.NotAfter.Add(-RenewBefore + time.Hour)
	m6, created, err := LoadOrCreate(dir, hosts, at)
	if err != nil || !created {
		t.Fatalf("near the CA's end: created %v, err %v", created, err)
	}
	if bytes.Equal(m6.CAPEM, m5.CAPEM) {
		t.Error("CA within RenewBefore of its end was kept")
	}
	checkComplete(t, dir, m6, at, hosts...)

	// A certificate made by a clock that was ahead is replaced.
	dir2 := t.TempDir()
	if _, _, err := LoadOrCreate(dir2, nil, now.AddDate(0, 0, 1)); err != nil {
		t.Fatal(err)
	}
	if _, created, err := LoadOrCreate(dir2, nil, now); err != nil || !created {
		t.Fatalf("future certificate: created %v, err %v", created, err)
	}
}

// failingWriter simulates a crash: it performs n writes, then fails.
type failingWriter struct{ n int }

func (w *failingWriter) WriteFile(name string, data []byte, perm fs.FileMode) error {
	if w.n == 0 {
		return errors.New("simulated crash")
	}
	w.n--
	return osWriter{}.WriteFile(name, data, perm)
}

// TestLoadOrCreateCrash interrupts creation and renewal after each write
// and checks that the next start completes a consistent state.
func TestLoadOrCreateCrash(t *testing.T) {
	now := time.Now()
	for _, scenario := range []struct {
		name  string
		setup func(t *testing.T, dir string) time.Time // returns when the crashing run happens
		hosts []string
	}{
		{"create", func(t *testing.T, dir string) time.Time { return now }, nil},
		{"renew", func(t *testing.T, dir string) time.Time {
			if _, _, err := LoadOrCreate(dir, nil, now); err != nil {
				t.Fatal(err)
			}
			return now.AddDate(0, 11, 10)
		}, nil},
		{"new host", func(t *testing.T, dir string) time.Time {
			if _, _, err := LoadOrCreate(dir, nil, now); err != nil {
				t.Fatal(err)
			}
			return now
		}, []string{"new.example"}},
		{"new CA at the CA's end", func(t *testing.T, dir string) time.Time {
			if _, _, err := LoadOrCreate(dir, nil, now); err != nil {
				t.Fatal(err)
			}
			return now.AddDate(CAValidityYears, 0, 0).Add(-RenewBefore + time.Hour)
		}, nil},
	} {
		for n := 0; n < 4; n++ {
			t.Run(fmt.Sprintf("%s/after %d writes", scenario.name, n), func(t *testing.T) {
				dir := t.TempDir()
				at := scenario.setup(t, dir)
				if _, _, err := loadOrCreate(&failingWriter{n: n}, dir, scenario.hosts, at); err == nil {
					// Fewer than n writes were needed; nothing to test.
					return
				}
				m, created, err := LoadOrCreate(dir, scenario.hosts, at)
				if err != nil {
					t.Fatal(err)
				}
				if !created {
					t.Fatal("created = false after an interrupted run")
				}
				checkComplete(t, dir, m, at, scenario.hosts...)
			})
		}
	}
}

func TestLoadOrCreateHosts(t *testing.T) {
	for _, bad := range []string{"", "https://example.com", "example.com:443", "*.example.com", "exa mple.com", "-x.example", "fe80::1%eth0", strings.Repeat("a", 64) + ".com"} {
		if _, _, err := LoadOrCreate(t.TempDir(), []string{bad}, time.Now()); err == nil {
			t.Errorf("host %q accepted", bad)
		}
	}
	now := time.Now()
	dir := t.TempDir()
	m, _, err := LoadOrCreate(dir, []string{"[2001:db8::2]", "Backup.Example.COM.", "backup.example.com", "127.0.0.1", "::ffff:192.0.2.1", "My_Host"}, now)
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, m, now, "backup.example.com", "my_host", "2001:db8::2", "192.0.2.1")
	if !slices.Equal(m.Leaf.DNSNames, []string{"backup.example.com", "my_host", "localhost"}) {
		t.Errorf("DNS names %q", m.Leaf.DNSNames)
	}
	want := []net.IP{net.ParseIP("2001:db8::2"), net.ParseIP("127.0.0.1"), net.ParseIP("192.0.2.1"), net.ParseIP("::1")}
	if !slices.EqualFunc(m.Leaf.IPAddresses, want, net.IP.Equal) {
		t.Errorf("IP addresses %v, want %v", m.Leaf.IPAddresses, want)
	}
}

func TestLoadOrCreateTightensDirectory(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	dir := filepath.Join(t.TempDir(), "tls")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(dir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v", fi.Mode().Perm())
	}
	file := filepath.Join(t.TempDir(), "file")
	write(t, filepath.Dir(file), "file", nil)
	if _, _, err := LoadOrCreate(file, nil, time.Now()); err == nil {
		t.Fatal("LoadOrCreate on a regular file succeeded")
	}
}

func TestParseKeyPairRejects(t *testing.T) {
	ca := newTestCA(t, "test CA")
	goodCert, goodKey := ca.issue(t, leafOptions{names: []string{"localhost"}})
	_, otherKey := ca.issue(t, leafOptions{})
	weakCert, weakKey := ca.issue(t, leafOptions{key: rsaKey(t, 1024)})
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224DER, _ := x509.MarshalPKCS8PrivateKey(p224)
	clientCert, clientKey := ca.issue(t, leafOptions{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edCert, edKey := ca.issue(t, leafOptions{key: edPriv})
	rsaCert, rsaKeyPEM := ca.issue(t, leafOptions{key: rsaKey(t, 2048)})
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	sec1Cert, _ := ca.issue(t, leafOptions{key: ecKey})

	for _, ok := range []struct{ name, cert, key string }{
		{"ECDSA PKCS8", string(goodCert), string(goodKey)},
		{"chain", string(goodCert) + string(ca.pem), string(goodKey)},
		{"Ed25519", string(edCert), string(edKey)},
		{"RSA 2048", string(rsaCert), string(rsaKeyPEM)},
		{"SEC 1 with EC PARAMETERS", "subject=CN = test leaf\n" + string(sec1Cert), "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" + string(pemBlock("EC PRIVATE KEY", sec1))},
	} {
		if _, err := ParseKeyPair([]byte(ok.cert), []byte(ok.key)); err != nil {
			t.Errorf("%s: %v", ok.name, err)
		}
	}

	tests := []struct{ name, cert, key, want string }{
		{"empty", "", "", "no PEM certificate"},
		{"garbage", "garbage", "garbage", "no PEM certificate"},
		{"swapped", string(goodKey), string(goodCert), "private key where a certificate"},
		{"key is a certificate", string(goodCert), string(goodCert), "certificate where a private key"},
		{"mismatched key", string(goodCert), string(otherKey), "does not match"},
		{"corrupt certificate", string(pemBlock("CERTIFICATE", []byte{0x30, 0x03, 1, 2, 3})), string(goodKey), "certificate 1"},
		{"corrupt key", string(goodCert), string(pemBlock("PRIVATE KEY", []byte("junk"))), "private key"},
		{"RSA 1024", string(weakCert), string(weakKey), "1024 bits"},
		{"P-224 key", string(goodCert), string(pemBlock("PRIVATE KEY", p224DER)), "P-224"},
		{"encrypted key", string(goodCert), string(pemBlock("ENCRYPTED PRIVATE KEY", []byte("x"))), "encrypted"},
		{"client certificate", string(clientCert), string(clientKey), "serverAuth"},
		{"unknown block", string(pemBlock("X509 CRL", []byte("x"))), string(goodKey), "X509 CRL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeyPair([]byte(tt.cert), []byte(tt.key))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "BEGIN") {
				t.Fatal("error quotes PEM input")
			}
		})
	}
}

func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "test CA")
	cert, key := ca.issue(t, leafOptions{names: []string{"localhost"}})
	write(t, dir, "cert.pem", cert)
	write(t, dir, "key.pem", key)
	m, err := LoadFiles(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if m.CAPEM != nil || m.Cert.Leaf != m.Leaf || len(m.Cert.Certificate) != 1 {
		t.Fatalf("material %v", m)
	}
	if _, err := LoadFiles(filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")); err == nil || !strings.Contains(err.Error(), "key.pem") {
		t.Fatalf("swapped files: %v", err)
	}
	if _, err := LoadFiles(filepath.Join(dir, "missing.pem"), filepath.Join(dir, "key.pem")); err == nil {
		t.Fatal("missing file accepted")
	}
	if _, err := LoadFiles(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "missing.pem")); err == nil {
		t.Fatal("missing key file accepted")
	}
}

func TestMaterialDoesNotPrintKey(t *testing.T) {
	m := localMaterial(t, time.Now())
	keyBlock, _ := pem.Decode(m.KeyPEM)
	for _, s := range []string{fmt.Sprint(m), fmt.Sprintf("%v %+v %#v %s", m, m, m, m), fmt.Sprintf("%v %+v %#v", *m, *m, *m)} {
		if strings.Contains(s, "PRIVATE") || strings.Contains(s, string(m.KeyPEM[30:60])) || bytes.Contains([]byte(s), keyBlock.Bytes[:8]) {
			t.Fatalf("formatted material shows the key: %s", s)
		}
		if !strings.Contains(s, "[redacted]") {
			t.Fatalf("formatted material: %s", s)
		}
	}
	if s := fmt.Sprint(Material{}); s != "tlsconf.Material{}" {
		t.Errorf("empty material: %s", s)
	}
}
