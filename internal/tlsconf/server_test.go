package tlsconf

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestServerConfigPolicy(t *testing.T) {
	ecdsaM := localMaterial(t, time.Now())
	ca := newTestCA(t, "test RSA CA")
	rsaM := ca.material(t, leafOptions{names: []string{"127.0.0.1"}, key: rsaKey(t, 2048)})

	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
	}
	rsaKex := []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_RSA_WITH_AES_128_CBC_SHA}

	tests := []struct {
		name      string
		serverMin uint16
		client    *tls.Config
		ok        bool
		version   uint16
	}{
		// crypto/tls clients offer 1.0/1.1 only with MinVersion set.
		{"TLS 1.0 client", tls.VersionTLS12, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}, false, 0},
		{"TLS 1.1 client", tls.VersionTLS12, &tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}, false, 0},
		{"TLS 1.2 RSA key exchange only", tls.VersionTLS12, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: rsaKex}, false, 0},
		{"TLS 1.2 CBC only", tls.VersionTLS12, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: cbc}, false, 0},
		{"TLS 1.2 ECDHE AES-GCM", tls.VersionTLS12, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}, true, tls.VersionTLS12},
		{"TLS 1.2 ECDHE ChaCha20", tls.VersionTLS12, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}}, true, tls.VersionTLS12},
		{"TLS 1.2 everything crypto/tls has", tls.VersionTLS12, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS12,
			CipherSuites: suitesFor(func([]uint16) bool { return true })}, true, tls.VersionTLS12},
		{"TLS 1.3", tls.VersionTLS12, &tls.Config{}, true, tls.VersionTLS13},
		{"min 1.3, TLS 1.2 client", tls.VersionTLS13, &tls.Config{MaxVersion: tls.VersionTLS12}, false, 0},
		{"min 1.3, TLS 1.3 client", tls.VersionTLS13, &tls.Config{MinVersion: tls.VersionTLS13}, true, tls.VersionTLS13},
	}
	for _, keyType := range []struct {
		name string
		m    *Material
	}{{"ECDSA", ecdsaM}, {"RSA", rsaM}} {
		servers := map[uint16]*tlsServer{
			tls.VersionTLS12: startTLSServer(t, serverConfig(t, keyType.m, tls.VersionTLS12)),
			tls.VersionTLS13: startTLSServer(t, serverConfig(t, keyType.m, tls.VersionTLS13)),
		}
		for _, tt := range tests {
			t.Run(keyType.name+"/"+tt.name, func(t *testing.T) {
				srv := servers[tt.serverMin]
				cfg := tt.client.Clone()
				cfg.InsecureSkipVerify = true // this test is about the server's policy
				cs, err := dial(srv.addr, cfg)
				serverErr := srv.lastResult(t)
				if !tt.ok {
					if err == nil {
						t.Fatalf("handshake succeeded with %s %s, want refusal", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
					}
					// The server itself refused, not just the client.
					if serverErr == nil {
						t.Fatalf("client failed (%v) but the server accepted the handshake", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("handshake: %v (server: %v)", err, serverErr)
				}
				if cs.Version != tt.version {
					t.Errorf("version %s, want %s", tls.VersionName(cs.Version), tls.VersionName(tt.version))
				}
				if !allowedSuite(cs.Version, cs.CipherSuite) {
					t.Errorf("negotiated %s, outside the policy", tls.CipherSuiteName(cs.CipherSuite))
				}
			})
		}
	}
}

func TestServerConfigRejectsBadArguments(t *testing.T) {
	m := localMaterial(t, time.Now())
	for _, v := range []uint16{0, tls.VersionTLS10, tls.VersionTLS11, 0x0305} {
		if _, err := ServerConfig(m, v); err == nil {
			t.Errorf("ServerConfig(min %s) succeeded", tls.VersionName(v))
		}
	}
	if _, err := ServerConfig(nil, tls.VersionTLS12); err == nil {
		t.Error("ServerConfig(nil) succeeded")
	}
	if _, err := ServerConfig(&Material{}, tls.VersionTLS12); err == nil {
		t.Error("ServerConfig(empty material) succeeded")
	}
	cfg := serverConfig(t, m, tls.VersionTLS12)
	if !slices.Equal(cfg.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("NextProtos = %q", cfg.NextProtos)
	}
	for _, id := range cfg.CipherSuites {
		name := tls.CipherSuiteName(id)
		if !strings.HasPrefix(name, "TLS_ECDHE_") || !(strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305")) {
			t.Errorf("suite %s is not ECDHE with AEAD", name)
		}
	}
}

func TestParseMinVersion(t *testing.T) {
	for in, want := range map[string]uint16{
		"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13, " TLS1.3 ": tls.VersionTLS13,
		"tls 1.2": tls.VersionTLS12, "TLSv1.3": tls.VersionTLS13,
	} {
		got, err := ParseMinVersion(in)
		if err != nil || got != want {
			t.Errorf("ParseMinVersion(%q) = %x, %v; want %x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1.0", "1.1", "1", "1.4", "ssl3", "12", "TLS 1.2.1"} {
		if v, err := ParseMinVersion(in); err == nil {
			t.Errorf("ParseMinVersion(%q) = %x, want error", in, v)
		}
	}
}

// TestPlainHTTPRefused sends a plain HTTP request to an http.Server that
// serves TLS with ServerConfig: it must not reach the handler.
func TestPlainHTTPRefused(t *testing.T) {
	m := localMaterial(t, time.Now())
	var calls atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			io.WriteString(w, "secret API response")
		}),
		TLSConfig:         serverConfig(t, m, tls.VersionTLS12),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	base := l.Addr().String()

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + base + "/")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP: status %d, want 400", resp.StatusCode)
		}
		if strings.Contains(string(body), "secret") {
			t.Errorf("plain HTTP got the API response: %q", body)
		}
		t.Logf("plain HTTP: %s %q", resp.Status, body)
	} else {
		t.Logf("plain HTTP: %v", err)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("plain HTTP request reached the handler (%d calls)", n)
	}

	// The same server answers over TLS, so the refusal is not an outage.
	cfg, err := ClientConfig(ClientOptions{CAPEM: m.CAPEM})
	if err != nil {
		t.Fatal(err)
	}
	tlsClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err = tlsClient.Get("https://" + base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || calls.Load() != 1 {
		t.Fatalf("HTTPS request: status %d, %d handler calls", resp.StatusCode, calls.Load())
	}
}
