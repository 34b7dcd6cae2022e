package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/tlsconf"
)

// proxyHost is the name the agents use for the server behind the proxies.
// It is not resolvable (.test is reserved): only the proxy knows where it
// is, so a connection that reaches the server went through the proxy.
const proxyHost = "coffer.test"

// tunnelProxy is an HTTP proxy that answers only CONNECT, as corporate
// egress proxies do for HTTPS. It dials route[target] for a CONNECT to
// target, so the client never resolves the target itself.
//
// With inspect set it is a TLS-inspecting proxy: it completes the client's
// TLS handshake itself, with inspect's certificate (issued by its own CA),
// then opens its own TLS connection to the server with upstream and relays
// the decrypted HTTP between the two.
type tunnelProxy struct {
	url      *url.URL
	srv      *http.Server
	route    map[string]string
	inspect  *tls.Config
	upstream *tls.Config

	mu       sync.Mutex
	closed   bool
	conns    map[net.Conn]struct{}
	targets  []string // every CONNECT target, in order
	requests []string // the first request line of each inspected tunnel
	wg       sync.WaitGroup

	tunnels   atomic.Int64 // CONNECTs answered 200
	upstreams atomic.Int64 // connections opened to the server
	refused   atomic.Int64 // inspected tunnels whose client TLS handshake failed
	up, down  atomic.Int64 // bytes relayed client → server and server → client
}

func startProxy(t *testing.T, route map[string]string, inspect, upstream *tls.Config) *tunnelProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tunnelProxy{url: &url.URL{Scheme: "http", Host: ln.Addr().String()}, route: route,
		inspect: inspect, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	t.Cleanup(p.close)
	return p
}

// close stops the proxy, ends its tunnels and waits for them.
func (p *tunnelProxy) close() {
	p.srv.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// track registers c to be closed by close; false when already closing.
func (p *tunnelProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tunnelProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *tunnelProxy) targetList() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

func (p *tunnelProxy) requestLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.requests...)
}

func (p *tunnelProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		http.Error(w, "closing", http.StatusServiceUnavailable)
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()

	if r.Method != http.MethodConnect {
		http.Error(w, "this proxy only tunnels: use CONNECT", http.StatusMethodNotAllowed)
		return
	}
	target := r.Host
	p.mu.Lock()
	p.targets = append(p.targets, target)
	p.mu.Unlock()
	addr, ok := p.route[target]
	if !ok {
		http.Error(w, "no route to "+target, http.StatusBadGateway)
		return
	}
	var server net.Conn
	if p.inspect == nil {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		server = c
		p.upstreams.Add(1)
		if !p.track(server) {
			server.Close()
			return
		}
		defer p.untrack(server)
	}
	raw, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if !p.track(raw) {
		raw.Close()
		return
	}
	defer p.untrack(raw)
	if _, err := io.WriteString(raw, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	p.tunnels.Add(1)
	// Bytes the client sent after its CONNECT may already be buffered.
	var clientConn net.Conn = &bufferedConn{Conn: raw, r: brw.Reader}

	if p.inspect != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tc := tls.Server(clientConn, p.inspect)
		if err := tc.HandshakeContext(ctx); err != nil {
			p.refused.Add(1)
			return
		}
		clientConn = tc
		cfg := p.upstream.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(target)
		sc, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return
		}
		server = sc
		p.upstreams.Add(1)
		if !p.track(server) {
			server.Close()
			return
		}
		defer p.untrack(server)
	}
	p.relay(clientConn, server)
}

// relay copies both ways until either side ends, then closes both.
func (p *tunnelProxy) relay(clientConn, server net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(&relayWriter{p: p, w: server, n: &p.up, capture: p.inspect != nil}, clientConn)
		done <- struct{}{}
	}()
	go func() {
		io.Copy(&relayWriter{p: p, w: clientConn, n: &p.down}, server)
		done <- struct{}{}
	}()
	<-done
	clientConn.Close()
	server.Close()
	<-done
}

// relayWriter counts what it passes on; with capture it records the first
// line written (the first request of an inspected tunnel).
type relayWriter struct {
	p       *tunnelProxy
	w       io.Writer
	n       *atomic.Int64
	capture bool
	head    []byte
}

func (rw *relayWriter) Write(b []byte) (int, error) {
	if rw.capture {
		rw.head = append(rw.head, b[:min(len(b), 512)]...)
		if i := bytes.Index(rw.head, []byte("\r\n")); i >= 0 || len(rw.head) >= 512 {
			if i < 0 {
				i = len(rw.head)
			}
			rw.p.mu.Lock()
			rw.p.requests = append(rw.p.requests, string(rw.head[:i]))
			rw.p.mu.Unlock()
			rw.capture, rw.head = false, nil
		}
	}
	n, err := rw.w.Write(b)
	rw.n.Add(int64(n))
	return n, err
}

// bufferedConn reads through the hijacked connection's buffer.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// proxiedClient is a client of server that goes through proxy.
func proxiedClient(t *testing.T, server, tok string, cfg *tls.Config, proxy *url.URL) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{Server: server, Token: tok, TLS: cfg, Proxy: http.ProxyURL(proxy)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// startBehindName starts a server whose certificate is also valid for
// proxyHost, and returns it with its loopback address and the CONNECT
// target (proxyHost:port) that stands for it.
func startBehindName(t *testing.T) (env *servertest.Env, addr, target string) {
	t.Helper()
	env = servertest.StartWith(t, servertest.Options{Hosts: []string{proxyHost}})
	addr = strings.TrimPrefix(env.URL, "https://")
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return env, addr, net.JoinHostPort(proxyHost, port)
}

// smallTree is a directory of a few small files and two larger ones.
func smallTree(seed uint64) map[string][]byte {
	files := map[string][]byte{
		"big.bin":      randomBytes(seed, 1<<20),
		"mid/half.bin": randomBytes(seed+1, 300<<10),
		"empty":        {},
	}
	for i := range 12 {
		files[fmt.Sprintf("small/f%02d", i)] = randomBytes(seed+100+uint64(i), 1000+i*1500)
	}
	return files
}

// TestBackupThroughConnectProxy: an agent reaches the server only through
// an HTTP CONNECT proxy (Options.Proxy), by a name only the proxy can
// resolve; the backup and the restore both go through the tunnel, with the
// server's certificate verified end to end.
func TestBackupThroughConnectProxy(t *testing.T) {
	ctx := context.Background()
	env, addr, target := startBehindName(t)
	px := startProxy(t, map[string]string{target: addr}, nil, nil)
	owner := env.Client(t, env.OwnerToken) // direct, to set up
	tok := newVault(t, owner, "a")

	// A plain request through the proxy is refused: it only tunnels.
	resp, err := http.Get(px.url.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET through the proxy: %s, want 405", resp.Status)
	}

	src := t.TempDir()
	files := smallTree(1)
	writeTree(t, src, files)
	size := treeSize(files)

	v := proxiedClient(t, "https://"+target, tok, env.TLS, px.url).Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "behind-proxy"})
	if err != nil {
		t.Fatalf("backup through the proxy: %v", err)
	}
	if up := px.up.Load(); up < size {
		t.Errorf("%d bytes went up through the proxy for %d bytes of incompressible data", up, size)
	}
	if res.Snapshot.BytesAdded < uint64(size) {
		t.Errorf("backup added %d bytes, want at least %d", res.Snapshot.BytesAdded, size)
	}

	// Restore with a second client: new tunnels.
	tunnels := px.tunnels.Load()
	rv := proxiedClient(t, "https://"+target, tok, env.TLS, px.url).Vault("a")
	if err := rv.LoadDedup(ctx); err != nil { // downloads are then verified against their IDs
		t.Fatal(err)
	}
	down := px.down.Load()
	snap, err := rv.FindSnapshot(ctx, "latest")
	if err != nil || snap.ID != res.Snapshot.ID {
		t.Fatalf("latest through the proxy: %v %v", snap.ID, err)
	}
	restoreAndCompare(t, rv, snap, src)
	if got := px.down.Load() - down; got < size {
		t.Errorf("%d bytes came down through the proxy for a %d-byte restore", got, size)
	}
	if px.tunnels.Load() <= tunnels {
		t.Error("the restoring client opened no tunnel of its own")
	}

	targets := px.targetList()
	if len(targets) < 2 {
		t.Fatalf("CONNECT targets %q: want one per client at least", targets)
	}
	for _, tg := range targets {
		if tg != target {
			t.Errorf("CONNECT to %q, want %q", tg, target)
		}
	}
	t.Logf("%d tunnels to %s; %d bytes up, %d down", px.tunnels.Load(), target, px.up.Load(), px.down.Load())
}

// inspectingCA is a TLS-inspecting proxy's own CA and the certificate it
// forges for host.
func inspectingCA(t *testing.T, host string) (caPEM []byte, leaf tls.Certificate) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Inspecting Proxy Test CA", Organization: []string{"Example Corp Security"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestBackupThroughInspectingProxy: a TLS-inspecting proxy presents its
// own certificate for the server's name. A client that trusts only the
// server's CA refuses it with an error saying to pass the proxy's CA with
// --cacert (and nothing reaches the server); a client pinning the server's
// fingerprint detects the interception; a client given the proxy's CA
// backs up and restores through it.
func TestBackupThroughInspectingProxy(t *testing.T) {
	ctx := context.Background()
	env, addr, target := startBehindName(t)
	caPEM, forged := inspectingCA(t, proxyHost)
	serverCA, err := os.ReadFile(env.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	serverRoots := x509.NewCertPool()
	if !serverRoots.AppendCertsFromPEM(serverCA) {
		t.Fatal("server CA: no certificate")
	}
	// The proxy speaks HTTP/1.1 on both sides, so the relayed bytes are
	// one protocol end to end whatever ALPN the client offers.
	inspect := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{forged}, NextProtos: []string{"http/1.1"}}
	upstream := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: serverRoots, NextProtos: []string{"http/1.1"}}
	px := startProxy(t, map[string]string{target: addr}, inspect, upstream)
	owner := env.Client(t, env.OwnerToken)
	tok := newVault(t, owner, "a")
	serverURL := "https://" + target

	// (a) Trusting only the server's CA: the forged certificate is refused.
	err = proxiedClient(t, serverURL, tok, env.TLS, px.url).Vault("a").LoadDedup(ctx)
	var ue *tlsconf.UntrustedError
	if !errors.As(err, &ue) {
		t.Fatalf("through the inspecting proxy with the server's CA only: %v (%T), want an UntrustedError", err, err)
	}
	msg := err.Error()
	if ue.Reason != tlsconf.ReasonUnknownAuthority {
		t.Errorf("reason %v, want %v", ue.Reason, tlsconf.ReasonUnknownAuthority)
	}
	if ue.Fingerprint != tlsconf.Fingerprint(forged.Certificate[0]) {
		t.Errorf("error names certificate %s, not the proxy's", ue.Fingerprint)
	}
	for _, want := range []string{"--cacert", "TLS-inspecting proxy", "Inspecting Proxy Test CA", target} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q: %s", want, msg)
		}
	}
	// The proxy learns of the refusal from the client's alert, which may
	// arrive after the client has returned.
	for deadline := time.Now().Add(5 * time.Second); px.refused.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if px.refused.Load() == 0 {
		t.Error("the proxy saw no refused handshake")
	}
	if n := px.upstreams.Load(); n != 0 {
		t.Errorf("the proxy reached the server %d times for a client that refused it", n)
	}

	// Pinning the server's own certificate detects the interception too.
	leafPEM, err := os.ReadFile(env.DataDir + "/tls/" + tlsconf.CertName)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(leafPEM)
	pinned, err := tlsconf.ClientConfig(tlsconf.ClientOptions{Fingerprint: tlsconf.Fingerprint(blk.Bytes)})
	if err != nil {
		t.Fatal(err)
	}
	err = proxiedClient(t, serverURL, tok, pinned, px.url).Vault("a").LoadDedup(ctx)
	if !errors.As(err, &ue) || ue.Reason != tlsconf.ReasonPinMismatch {
		t.Errorf("pinned client through the inspecting proxy: %v, want a pin mismatch", err)
	}

	// (b) Given the proxy's CA (--cacert), the client backs up and
	// restores through it; the proxy relays to the real server.
	pcfg, err := tlsconf.ClientConfig(tlsconf.ClientOptions{CAPEM: caPEM})
	if err != nil {
		t.Fatal(err)
	}
	v := proxiedClient(t, serverURL, tok, pcfg, px.url).Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatalf("trusting the proxy's CA: %v", err)
	}
	src := t.TempDir()
	files := smallTree(2)
	writeTree(t, src, files)
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "inspected"})
	if err != nil {
		t.Fatalf("backup through the inspecting proxy: %v", err)
	}
	restoreAndCompare(t, v, res.Snapshot, src)
	if up := px.up.Load(); up < treeSize(files) {
		t.Errorf("%d plaintext bytes went up through the proxy for %d bytes of data", up, treeSize(files))
	}
	if px.upstreams.Load() == 0 {
		t.Error("the proxy never connected to the server")
	}
	// The proxy saw the requests in the clear (that is what inspection
	// means), as HTTP/1.1.
	lines := px.requestLines()
	var seen bool
	for _, l := range lines {
		if strings.Contains(l, " /v1/vaults/a/") && strings.HasSuffix(l, " HTTP/1.1") {
			seen = true
		}
	}
	if !seen {
		t.Errorf("the proxy saw no API request in the clear: %q", lines)
	}
	// The server's check agrees the data arrived intact.
	rep, err := owner.Vault("a").Check(ctx, true, nil)
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("check --read-data: %v %v", rep.Errors, err)
	}
}
