// Package servertest starts a real vault server on loopback TLS for tests:
// a data directory, the local CA, the initial owner token and a listener.
package servertest

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/tlsconf"
)

// Env is a running server.
type Env struct {
	Server     *server.Server
	DataDir    string
	URL        string // https://127.0.0.1:port
	OwnerToken string
	CAFile     string
	TLS        *tls.Config // client configuration trusting the local CA
	// Clock is the server's clock offset: tests move it forward.
	Clock *atomic.Int64
}

// Start runs a server until the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	dir := t.TempDir()
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, first, err := server.Open(ctx, server.Options{DataDir: dir, Now: now, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if !first {
		t.Fatal("a new data directory should get an initial owner token")
	}
	tok, err := os.ReadFile(server.InitialTokenFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	mat, _, err := tlsconf.LoadOrCreate(dir+"/tls", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tlsconf.ServerConfig(mat, tls.VersionTLS12)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, cfg) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	ccfg, err := tlsconf.ClientConfig(tlsconf.ClientOptions{CAFile: dir + "/tls/ca.pem"})
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Server: srv, DataDir: dir, URL: "https://" + ln.Addr().String(), OwnerToken: strings.TrimSpace(string(tok)),
		CAFile: dir + "/tls/ca.pem", TLS: ccfg, Clock: &offset}
}

// Client returns a client authenticating with token.
func (e *Env) Client(t testing.TB, token string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{Server: e.URL, Token: token, TLS: e.TLS,
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// testLog sends the server's warnings and errors to the test log.
type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
