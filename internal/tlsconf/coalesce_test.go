package tlsconf

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func coalescingClient(t *testing.T, srv *httptest.Server, roots *x509.CertPool, writes *atomic.Int64) *http.Client {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: writes}, nil
	}
	tr := &http.Transport{DialTLSContext: CoalescingDialer(dial, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, 5*time.Second)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestCoalescingDialerSendsBodiesIntact posts bodies of several sizes
// through a coalescing connection and checks that the server received
// every byte, and that a 4 MiB body took far fewer socket writes than its
// 256 TLS records. The server's certificate names 127.0.0.1: it verifies
// only because the dialer checks the host dialled, as http.Transport does.
func TestCoalescingDialerSendsBodiesIntact(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		io.Copy(h, r.Body)
		w.Write(h.Sum(nil))
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	var writes atomic.Int64
	hc := coalescingClient(t, srv, roots, &writes)
	for _, n := range []int{0, 1, 16 << 10, 16<<10 + 1, 300 << 10, 4 << 20} {
		body := make([]byte, n)
		rand.Read(body)
		before := writes.Load()
		resp, err := hc.Post(srv.URL, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := sha256.Sum256(body)
		if !bytes.Equal(got, want[:]) {
			t.Fatalf("%d bytes: the server received other bytes", n)
		}
		if resp.TLS != nil {
			t.Fatalf("%d bytes: response carries a TLS state: the transport did TLS itself", n)
		}
		if w := writes.Load() - before; n == 4<<20 && w > 64 {
			t.Errorf("4 MiB body: %d socket writes, want at most 64 (records sent 16 at a time)", w)
		}
	}
}

// TestCoalescingDialerVerifies: the handshake is crypto/tls's with the
// configuration given: a server whose certificate the roots do not vouch
// for is refused, and a VerifyConnection (pins) is called.
func TestCoalescingDialerVerifies(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	var writes atomic.Int64
	hc := coalescingClient(t, srv, x509.NewCertPool(), &writes)
	if _, err := hc.Get(srv.URL); err == nil {
		t.Fatal("a server signed by an unknown authority was accepted")
	}

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	var called atomic.Bool
	cfg := &tls.Config{RootCAs: roots, VerifyConnection: func(cs tls.ConnectionState) error {
		called.Store(true)
		return errPinned
	}}
	tr := &http.Transport{DialTLSContext: CoalescingDialer((&net.Dialer{}).DialContext, cfg, 5*time.Second)}
	defer tr.CloseIdleConnections()
	if _, err := (&http.Client{Transport: tr}).Get(srv.URL); err == nil {
		t.Fatal("VerifyConnection's refusal was ignored")
	}
	if !called.Load() {
		t.Fatal("VerifyConnection was not called")
	}
}

var errPinned = errorString("not the pinned certificate")

type errorString string

func (e errorString) Error() string { return string(e) }
