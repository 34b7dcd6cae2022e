package tlsconf

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func clientConfig(t testing.TB, o ClientOptions) *tls.Config {
	t.Helper()
	cfg, err := ClientConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startHTTPSServer serves "hello" over TLS with cfg on a loopback socket.
func startHTTPSServer(t testing.TB, cfg *tls.Config) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }),
		TLSConfig:         cfg,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "https://" + l.Addr().String() + "/"
}

func httpGet(cfg *tls.Config, u string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestClientRefusesOldServer(t *testing.T) {
	m := localMaterial(t, time.Now())
	srv := startTLSServer(t, &tls.Config{
		Certificates: []tls.Certificate{m.Cert},
		MinVersion:   tls.VersionTLS10,
		MaxVersion:   tls.VersionTLS11,
	})
	_, err := dial(srv.addr, clientConfig(t, ClientOptions{CAPEM: m.CAPEM}))
	if err == nil {
		t.Fatal("client completed a handshake with a TLS 1.1 server")
	}
	srv.lastResult(t)
	if msg := ExplainError(err).Error(); !strings.Contains(msg, "older than 1.2") {
		t.Errorf("explained error: %s", msg)
	}
	// The server is fine with a client that does offer 1.1, so the
	// refusal above is the client's policy.
	if _, err := dial(srv.addr, &tls.Config{MinVersion: tls.VersionTLS10, InsecureSkipVerify: true}); err != nil {
		t.Fatalf("the TLS 1.1 test server does not work: %v", err)
	}
}

func TestClientRefusesWeakSuites(t *testing.T) {
	m := localMaterial(t, time.Now())
	srv := startTLSServer(t, &tls.Config{
		Certificates: []tls.Certificate{m.Cert},
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA},
	})
	if _, err := dial(srv.addr, clientConfig(t, ClientOptions{CAPEM: m.CAPEM})); err == nil {
		t.Fatal("client negotiated a CBC suite")
	}
}

func TestClientVerification(t *testing.T) {
	m := localMaterial(t, time.Now(), "backup.example.com")
	srv := startTLSServer(t, serverConfig(t, m, tls.VersionTLS12))
	_, port, _ := net.SplitHostPort(srv.addr)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, m.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	other := newTestCA(t, "some other CA")

	tests := []struct {
		name   string
		addr   string
		o      ClientOptions
		reason Reason // 0: success
	}{
		{"CA file, IP address", srv.addr, ClientOptions{CAFile: caFile}, 0},
		{"CA PEM, IP address", srv.addr, ClientOptions{CAPEM: m.CAPEM}, 0},
		{"CA file, localhost", net.JoinHostPort("localhost", port), ClientOptions{CAFile: caFile}, 0},
		{"CA file, server name", srv.addr, ClientOptions{CAFile: caFile, ServerName: "backup.example.com"}, 0},
		{"CA file, wrong server name", srv.addr, ClientOptions{CAFile: caFile, ServerName: "other.example.com"}, ReasonHostname},
		{"system roots only", srv.addr, ClientOptions{}, ReasonUnknownAuthority},
		{"another CA", srv.addr, ClientOptions{CAPEM: other.pem}, ReasonUnknownAuthority},
		{"pin", srv.addr, ClientOptions{Fingerprint: m.Fingerprint()}, 0},
		{"pin, wrong server name", srv.addr, ClientOptions{Fingerprint: m.Fingerprint(), ServerName: "other.example.com"}, 0},
		{"pin in openssl form", srv.addr, ClientOptions{Fingerprint: opensslForm(m.Fingerprint())}, 0},
		{"wrong pin", srv.addr, ClientOptions{Fingerprint: Fingerprint([]byte("another certificate"))}, ReasonPinMismatch},
		{"pin and CA", srv.addr, ClientOptions{Fingerprint: m.Fingerprint(), CAFile: caFile}, 0},
		{"wrong pin and CA", srv.addr, ClientOptions{Fingerprint: Fingerprint(nil), CAFile: caFile}, ReasonPinMismatch},
		{"pin and another CA", srv.addr, ClientOptions{Fingerprint: m.Fingerprint(), CAPEM: other.pem}, ReasonUnknownAuthority},
		{"pin, clock past expiry", srv.addr, ClientOptions{Fingerprint: m.Fingerprint(), Now: func() time.Time { return time.Now().AddDate(2, 0, 0) }}, ReasonValidity},
		{"CA, clock past expiry", srv.addr, ClientOptions{CAFile: caFile, Now: func() time.Time { return time.Now().AddDate(2, 0, 0) }}, ReasonValidity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := dial(tt.addr, clientConfig(t, tt.o))
			srv.lastResult(t)
			if tt.reason == 0 {
				if err != nil {
					t.Fatalf("handshake: %v", ExplainError(err))
				}
				if cs.Version < tls.VersionTLS12 {
					t.Fatalf("negotiated %s", tls.VersionName(cs.Version))
				}
				return
			}
			if err == nil {
				t.Fatal("handshake succeeded, want refusal")
			}
			ue := asUntrusted(t, ExplainError(err))
			if ue.Reason != tt.reason {
				t.Fatalf("reason %v, want %v: %v", ue.Reason, tt.reason, ue)
			}
			if ue.Fingerprint != m.Fingerprint() {
				t.Errorf("error names fingerprint %s, want %s", ue.Fingerprint, m.Fingerprint())
			}
			if !strings.Contains(ue.Error(), m.Fingerprint()) {
				t.Errorf("message lacks the fingerprint: %v", ue)
			}
		})
	}
}

// opensslForm writes a fingerprint as openssl x509 -fingerprint -sha256
// prints it.
func opensslForm(fp string) string {
	hexDigits := strings.ToUpper(strings.TrimPrefix(fp, "SHA256:"))
	var pairs []string
	for i := 0; i < len(hexDigits); i += 2 {
		pairs = append(pairs, hexDigits[i:i+2])
	}
	return "sha256 Fingerprint=" + strings.Join(pairs, ":")
}

func TestUntrustedErrorMessage(t *testing.T) {
	m := localMaterial(t, time.Now())
	srv := startTLSServer(t, serverConfig(t, m, tls.VersionTLS12))
	_, err := dial(srv.addr, clientConfig(t, ClientOptions{}))
	ue := asUntrusted(t, ExplainError(err))
	msg := ue.Error()
	for _, want := range []string{
		m.Fingerprint(), "--cacert", "--fingerprint", "DATA/tls/ca.pem", "proxy",
		"out of band", m.Leaf.Subject.String(), m.Leaf.Issuer.String(),
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	var cve *tls.CertificateVerificationError
	if !errors.As(ExplainError(err), &cve) {
		t.Error("the explained error no longer holds the *tls.CertificateVerificationError")
	}
	t.Log(msg)

	// ExplainError leaves other errors alone.
	other := errors.New("connection reset")
	if ExplainError(other) != other || ExplainError(nil) != nil {
		t.Error("ExplainError changed an unrelated error")
	}
}

// TestUntrustedThroughHTTP checks that the typed error survives net/http's
// wrapping, for verification by crypto/tls (through ExplainError) and by
// the pin check (directly).
func TestUntrustedThroughHTTP(t *testing.T) {
	m := localMaterial(t, time.Now())
	u := startHTTPSServer(t, serverConfig(t, m, tls.VersionTLS12))
	host := strings.TrimSuffix(strings.TrimPrefix(u, "https://"), "/")

	_, err := httpGet(clientConfig(t, ClientOptions{}), u)
	var urlErr *url.Error
	if !errors.As(err, &urlErr) {
		t.Fatalf("error %v (%T) is not a *url.Error", err, err)
	}
	ue := asUntrusted(t, ExplainError(err))
	if ue.Reason != ReasonUnknownAuthority || ue.Host != host {
		t.Errorf("reason %v host %q, want %v %q", ue.Reason, ue.Host, ReasonUnknownAuthority, host)
	}
	for _, want := range []string{m.Fingerprint(), "--cacert", "--fingerprint", host} {
		if !strings.Contains(ue.Error(), want) {
			t.Errorf("message lacks %q: %v", want, ue)
		}
	}

	// A wrong pin: the *UntrustedError is in the chain without help.
	_, err = httpGet(clientConfig(t, ClientOptions{Fingerprint: Fingerprint(nil)}), u)
	ue = asUntrusted(t, err)
	if ue.Reason != ReasonPinMismatch || ue.Pinned != Fingerprint(nil) {
		t.Errorf("reason %v pinned %s", ue.Reason, ue.Pinned)
	}
	if ExplainError(err) != err {
		t.Error("ExplainError replaced an error that already explains itself")
	}

	// A hostname mismatch names the host asked for.
	_, err = httpGet(clientConfig(t, ClientOptions{CAPEM: m.CAPEM, ServerName: "wrong.example"}), u)
	ue = asUntrusted(t, ExplainError(err))
	if ue.Reason != ReasonHostname || !strings.Contains(ue.Error(), `"wrong.example"`) {
		t.Errorf("hostname error: %v", ue)
	}

	for name, o := range map[string]ClientOptions{
		"CA":  {CAPEM: m.CAPEM},
		"pin": {Fingerprint: m.Fingerprint()},
	} {
		if body, err := httpGet(clientConfig(t, o), u); err != nil || body != "hello" {
			t.Errorf("%s: %q, %v", name, body, ExplainError(err))
		}
	}
}

func TestPinnedLeafValidity(t *testing.T) {
	for name, created := range map[string]time.Time{
		"expired":         time.Now().AddDate(-2, 0, 0),
		"not yet valid":   time.Now().AddDate(0, 2, 0),
		"expires shortly": time.Now().AddDate(-1, 0, 2), // still valid: accepted
	} {
		t.Run(name, func(t *testing.T) {
			m := localMaterial(t, created)
			srv := startTLSServer(t, serverConfig(t, m, tls.VersionTLS12))
			_, err := dial(srv.addr, clientConfig(t, ClientOptions{Fingerprint: m.Fingerprint()}))
			if name == "expires shortly" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("pinned certificate outside its validity period was accepted")
			}
			ue := asUntrusted(t, err)
			if ue.Reason != ReasonValidity || !strings.Contains(ue.Error(), "clock") {
				t.Fatalf("%v: %v", ue.Reason, ue)
			}
		})
	}
}

func TestClientConfigBadOptions(t *testing.T) {
	dir := t.TempDir()
	m := localMaterial(t, time.Now())
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := map[string]struct {
		o    ClientOptions
		want string
	}{
		"missing CA file": {ClientOptions{CAFile: filepath.Join(dir, "nope.pem")}, "read CA file"},
		"garbage CA file": {ClientOptions{CAFile: write("garbage.pem", []byte("not a certificate"))}, "no PEM certificate"},
		"CA key as CA":    {ClientOptions{CAFile: write("key.pem", m.KeyPEM)}, "not its key"},
		"corrupt CA PEM":  {ClientOptions{CAPEM: pemBlock("CERTIFICATE", []byte("junk"))}, "certificate 1"},
		"short pin":       {ClientOptions{Fingerprint: "SHA256:abcd"}, "want 64"},
		"SHA-1 pin":       {ClientOptions{Fingerprint: "SHA1:" + strings.Repeat("ab", 20)}, "only SHA-256"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ClientConfig(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") {
				t.Fatal("error quotes key material")
			}
		})
	}
	cfg := clientConfig(t, ClientOptions{})
	if cfg.MinVersion != tls.VersionTLS12 || cfg.InsecureSkipVerify {
		t.Fatalf("default client config: min %x, InsecureSkipVerify %v", cfg.MinVersion, cfg.InsecureSkipVerify)
	}
}
