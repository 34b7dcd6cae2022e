package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func probe(t testing.TB, addr string, o ClientOptions) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Probe(ctx, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func hasProblem(r *Report, substr string) bool {
	return slices.ContainsFunc(r.Problems, func(p string) bool { return strings.Contains(p, substr) })
}

func TestProbeCofferServer(t *testing.T) {
	m := localMaterial(t, time.Now())
	srv := startTLSServer(t, serverConfig(t, m, tls.VersionTLS12))

	// Untrusted: everything is still reported.
	r := probe(t, srv.addr, ClientOptions{})
	if r.Version != "TLS 1.3" || !strings.HasPrefix(r.CipherSuite, "TLS_") || r.ALPN != "h2" || r.HandshakeError != "" {
		t.Errorf("version %q suite %q ALPN %q handshake error %q", r.Version, r.CipherSuite, r.ALPN, r.HandshakeError)
	}
	if len(r.Chain) != 1 || r.Chain[0].Fingerprint != m.Fingerprint() || r.Chain[0].SPKIFingerprint != SPKIFingerprint(m.Leaf) {
		t.Fatalf("chain %+v", r.Chain)
	}
	c := r.Chain[0]
	if c.Subject != m.Leaf.Subject.String() || c.Issuer != m.Leaf.Issuer.String() || !c.NotAfter.Equal(m.Leaf.NotAfter) ||
		!slices.Equal(c.DNSNames, []string{"localhost"}) || !slices.Equal(c.IPs, []string{"127.0.0.1", "::1"}) || c.PublicKey != "ECDSA P-256" {
		t.Errorf("certificate info %+v", c)
	}
	if r.Verified || r.Status != StatusFail || !hasProblem(r, "not trusted") || !strings.Contains(r.VerifyError, "--cacert") {
		t.Errorf("untrusted server: verified %v status %s problems %q verify error %q", r.Verified, r.Status, r.Problems, r.VerifyError)
	}
	if r.AcceptsLegacy || r.AcceptsWeakCiphers {
		t.Errorf("legacy %v weak %v against ServerConfig", r.AcceptsLegacy, r.AcceptsWeakCiphers)
	}

	// Trusted through the CA, or the pin.
	for name, o := range map[string]ClientOptions{"CA": {CAPEM: m.CAPEM}, "pin": {Fingerprint: m.Fingerprint()}} {
		r := probe(t, srv.addr, o)
		if !r.Verified || r.Status != StatusOK || r.Verdict != "ok" || len(r.Problems) != 0 || r.Pinned != (name == "pin") {
			t.Errorf("%s: verified %v pinned %v verdict %q", name, r.Verified, r.Pinned, r.Verdict)
		}
	}

	// A certificate for another name, and a wrong pin.
	r = probe(t, srv.addr, ClientOptions{CAPEM: m.CAPEM, ServerName: "other.example"})
	if r.Verified || !hasProblem(r, "another host name") {
		t.Errorf("wrong name: %v %q", r.Verified, r.Problems)
	}
	r = probe(t, srv.addr, ClientOptions{Fingerprint: Fingerprint(nil)})
	if r.Verified || !hasProblem(r, "pinned") {
		t.Errorf("wrong pin: %v %q", r.Verified, r.Problems)
	}

	// Close to expiry, and past it.
	soon := m.Leaf.NotAfter.Add(-10 * 24 * time.Hour)
	r = probe(t, "https://"+srv.addr+"/some/path", ClientOptions{CAPEM: m.CAPEM, Now: func() time.Time { return soon }})
	if !r.Verified || r.Status != StatusWarning || !hasProblem(r, "expires in 10 days") || !strings.HasPrefix(r.Verdict, "warning: ") {
		t.Errorf("expiring: verified %v verdict %q", r.Verified, r.Verdict)
	}
	past := m.Leaf.NotAfter.Add(time.Hour)
	r = probe(t, srv.addr, ClientOptions{CAPEM: m.CAPEM, Now: func() time.Time { return past }})
	if r.Verified || r.Status != StatusFail || !hasProblem(r, "expired on") || hasProblem(r, "not trusted") {
		t.Errorf("expired: verified %v problems %q", r.Verified, r.Problems)
	}

	// The report's JSON carries the fields --json promises.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"version":"TLS 1.3"`, `"cipher_suite"`, `"chain"`, `"fingerprint":"SHA256:`, `"spki_fingerprint"`, `"verified":false`, `"accepts_legacy":false`, `"status":"fail"`, `"verdict":"fail: `, `"problems"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
}

func TestProbeMinTLS13(t *testing.T) {
	m := localMaterial(t, time.Now())
	srv := startTLSServer(t, serverConfig(t, m, tls.VersionTLS13))
	r := probe(t, srv.addr, ClientOptions{CAPEM: m.CAPEM})
	if r.Version != "TLS 1.3" || r.Status != StatusOK || r.AcceptsLegacy || r.AcceptsWeakCiphers {
		t.Errorf("%+v", r)
	}
}

func TestProbeWeakServer(t *testing.T) {
	m := localMaterial(t, time.Now())
	// Deliberately weak: TLS 1.0 and up, with crypto/tls's default suites
	// (which include ECDHE CBC suites).
	weak := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{m.Cert}, MinVersion: tls.VersionTLS10})
	r := probe(t, weak.addr, ClientOptions{CAPEM: m.CAPEM})
	if !r.Verified || r.Version != "TLS 1.3" {
		t.Errorf("verified %v version %q", r.Verified, r.Version)
	}
	if !r.AcceptsLegacy || r.LegacyVersion != "TLS 1.1" || !r.AcceptsWeakCiphers || !strings.Contains(r.WeakCipherSuite, "CBC") {
		t.Errorf("legacy %v %q, weak %v %q", r.AcceptsLegacy, r.LegacyVersion, r.AcceptsWeakCiphers, r.WeakCipherSuite)
	}
	if r.Status != StatusWarning || !hasProblem(r, "accepts TLS 1.1") || !hasProblem(r, "not ECDHE with an AEAD") {
		t.Errorf("verdict %q", r.Verdict)
	}

	// Only TLS 1.0/1.1: a Coffer client cannot connect at all.
	old := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{m.Cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	r = probe(t, old.addr, ClientOptions{CAPEM: m.CAPEM})
	if r.Status != StatusFail || r.HandshakeError == "" || !hasProblem(r, "speaks only TLS 1.1") || !r.AcceptsLegacy {
		t.Errorf("TLS 1.1 server: %+v", r)
	}
	if len(r.Chain) != 1 || r.Chain[0].Fingerprint != m.Fingerprint() {
		t.Errorf("chain from the legacy handshake: %+v", r.Chain)
	}

	// Only CBC suites at TLS 1.2.
	cbc := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{m.Cert}, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}})
	r = probe(t, cbc.addr, ClientOptions{CAPEM: m.CAPEM})
	if r.Status != StatusFail || !hasProblem(r, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA") || !r.Verified {
		t.Errorf("CBC server: %+v", r)
	}
}

func TestProbeNotTLS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
			c.Close()
		}
	}()
	r := probe(t, l.Addr().String(), ClientOptions{})
	if r.Status != StatusFail || r.HandshakeError == "" || len(r.Chain) != 0 || r.Verified {
		t.Errorf("%+v", r)
	}
}

func TestProbeErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	for _, tt := range []struct {
		addr string
		o    ClientOptions
	}{
		{closed, ClientOptions{}},
		{"http://" + closed, ClientOptions{}},
		{"127.0.0.1", ClientOptions{}},
		{"", ClientOptions{}},
		{"https://", ClientOptions{}},
		{closed, ClientOptions{Fingerprint: "nope"}},
		{closed, ClientOptions{CAFile: filepath.Join(t.TempDir(), "missing")}},
	} {
		if r, err := Probe(context.Background(), tt.addr, tt.o); err == nil {
			t.Errorf("Probe(%q, %+v) = %+v, want error", tt.addr, tt.o, r)
		}
	}
}

func TestProbeDialer(t *testing.T) {
	m := localMaterial(t, time.Now())
	srv := startTLSServer(t, serverConfig(t, m, tls.VersionTLS12))
	var dials atomic.Int32
	r := probe(t, "https://coffer.invalid:8443", ClientOptions{
		CAPEM:      m.CAPEM,
		ServerName: "localhost",
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			if addr != "coffer.invalid:8443" {
				t.Errorf("dialled %s", addr)
			}
			return (&net.Dialer{}).DialContext(ctx, network, srv.addr)
		},
	})
	if dials.Load() != 3 || !r.Verified || r.ServerName != "localhost" || r.Address != "coffer.invalid:8443" {
		t.Errorf("%d dials, report %+v", dials.Load(), r)
	}
}

// TestReportText compares WriteText with testdata/report.golden.
func TestReportText(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 1, d, 0, 0, 0, 0, time.UTC) }
	r := &Report{
		Address: "backup.example.com:8443", ServerName: "backup.example.com", CheckedAt: day(10),
		Version: "TLS 1.2", CipherSuite: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", ALPN: "h2",
		Chain: []CertInfo{{
			Subject: "CN=backup.example.com,O=Coffer", Issuer: "CN=Coffer local CA vault1,O=Coffer",
			NotBefore: day(1), NotAfter: day(30), DNSNames: []string{"backup.example.com", "localhost"}, IPs: []string{"127.0.0.1", "::1"},
			PublicKey: "ECDSA P-256", Fingerprint: "SHA256:" + strings.Repeat("ab", 32), SPKIFingerprint: "SHA256:" + strings.Repeat("cd", 32),
		}},
		Verified: true, AcceptsLegacy: true, LegacyVersion: "TLS 1.1",
		Status: StatusWarning, Verdict: "warning: certificate expires in 20 days, on 2026-01-30; accepts TLS 1.1 (TLS before 1.2 is obsolete)",
		Problems: []string{"certificate expires in 20 days, on 2026-01-30", "accepts TLS 1.1 (TLS before 1.2 is obsolete)"},
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("WriteText:\n%s\nwant:\n%s", b.Bytes(), want)
	}
}
