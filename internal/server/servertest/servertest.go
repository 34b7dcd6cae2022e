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
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/audit"
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

	cancel    context.CancelFunc
	done      chan error
	stopOnce  sync.Once
	stopErr   error
	closeOnce sync.Once
	closeErr  error
}

// Options configure StartWith.
type Options struct {
	// Hosts are extra host names or IP addresses the server's certificate
	// is valid for, besides localhost and the loopback addresses.
	Hosts []string
	// Configure, when set, adjusts the server's options (key TTL, allowed
	// PKCS#11 modules and key directories, …) before it opens.
	Configure func(*server.Options)
	// Replica, when set, is a running server this one joins as another
	// replica: it serves the same data directory (and, Configure giving
	// the same Catalog, the same catalog) and uses its owner token.
	Replica *Env
	// Host, when set, is a running server on a shared catalog (Configure
	// giving the same Catalog) that this one joins as a replica on
	// another host: a data directory of its own, given only what every
	// server of a deployment is given (the deployment key and the audit
	// signing key, copied from Host's), and Host's owner token.
	Host *Env
}

// Start runs a server until the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith runs a server configured by opt until the test ends.
func StartWith(t testing.TB, opt Options) *Env {
	t.Helper()
	var dir string
	if opt.Replica != nil {
		dir = opt.Replica.DataDir
	} else {
		dir = t.TempDir()
		os.Chmod(dir, 0o700) // a data directory must be private (t.TempDir makes it 0755)
	}
	if opt.Host != nil {
		for _, f := range []string{"keys/deployment.key", "audit/" + audit.SigningKeyFile} {
			b, err := os.ReadFile(filepath.Join(opt.Host.DataDir, f))
			if err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o700)
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sopt := server.Options{DataDir: dir, Now: now, Logger: log}
	if opt.Configure != nil {
		opt.Configure(&sopt)
	}
	srv, first, err := server.Open(ctx, sopt)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if !first && opt.Replica == nil && opt.Host == nil {
		cancel()
		t.Fatal("a new data directory should get an initial owner token")
	}
	var tok []byte
	if opt.Host != nil {
		tok = []byte(opt.Host.OwnerToken)
	} else if tok, err = os.ReadFile(server.InitialTokenFile(dir)); err != nil {
		cancel()
		t.Fatal(err)
	}
	mat, _, err := tlsconf.LoadOrCreate(dir+"/tls", opt.Hosts, time.Now())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cfg, err := tlsconf.ServerConfig(mat, tls.VersionTLS12)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e := &Env{Server: srv, DataDir: dir, URL: "https://" + ln.Addr().String(), OwnerToken: strings.TrimSpace(string(tok)),
		CAFile: dir + "/tls/ca.pem", Clock: &offset, cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- srv.Serve(ctx, ln, cfg) }()
	t.Cleanup(func() { e.Close() })
	ccfg, err := tlsconf.ClientConfig(tlsconf.ClientOptions{CAFile: e.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	e.TLS = ccfg
	return e
}

// Stop cancels the server's context, as a signal does, and waits for
// Serve to drain and return; it returns Serve's error. The server is not
// closed (Close does that). Stop may be called more than once.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		e.cancel()
		e.stopErr = <-e.done
	})
	return e.stopErr
}

// Close stops the server if it is running, then closes it (flushing its
// vaults and closing the catalog). It runs at the end of the test, and
// may be called earlier and more than once.
func (e *Env) Close() error {
	e.closeOnce.Do(func() {
		e.Stop()
		e.closeErr = e.Server.Close()
	})
	return e.closeErr
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
