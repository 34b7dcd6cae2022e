package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/tlsconf"
)

// TestRemoteCommands drives every command against a vault server over
// loopback TLS, as a newcomer would: create a vault with the owner token,
// issue an operator token, back up, list, restore, diff, check, show.
func TestRemoteCommands(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	out := mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	if !strings.Contains(out, "vault prod created") {
		t.Fatalf("vault create said %q", out)
	}
	tokOut, _, code := coffer(t, e, "token", "create", "--vault", srv.URL+"/prod", "--role", "backup-operator", "--name", "web01", "--token", srv.OwnerToken)
	if code != exitOK {
		t.Fatalf("token create: exit %d", code)
	}
	op := strings.TrimSpace(tokOut)
	if !strings.HasPrefix(op, "cft_") || len(op) != 47 {
		t.Fatalf("token create printed %q, want the token alone", tokOut)
	}
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", op)

	src := filepath.Join(t.TempDir(), "src")
	for i, n := range []int{0, 100, 200_000} {
		p := filepath.Join(src, "d", "f"+string(rune('a'+i)))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, randBytes(uint64(i), n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	first := backupJSON(t, e, src)
	os.WriteFile(filepath.Join(src, "d", "new"), []byte("later"), 0o644)
	second := backupJSON(t, e, src)
	snaps := listSnapshots(t, e)
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots, want 2", len(snaps))
	}
	if ls := mustCoffer(t, e, "ls", "latest", src); !strings.Contains(ls, "/d/new") {
		t.Errorf("ls latest misses d/new:\n%s", ls)
	}
	if diff := mustCoffer(t, e, "diff", first[:8], second[:8]); !strings.Contains(diff, "+  "+filepath.Join(src, "d", "new")) {
		t.Errorf("diff:\n%s", diff)
	}
	dst := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", dst)
	for _, name := range []string{"fa", "fb", "fc", "new"} {
		want, _ := os.ReadFile(filepath.Join(src, "d", name))
		got, err := os.ReadFile(filepath.Join(dst, src, "d", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs after a remote restore: %v", name, err)
		}
	}
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check said %q", out)
	}
	var show struct {
		Name       string         `json:"name"`
		Snapshots  int            `json:"snapshots"`
		Encryption map[string]any `json:"encryption"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "vault", "show", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	if show.Name != "prod" || show.Snapshots != 2 || show.Encryption["algorithm"] != "AES-256-GCM" || show.Encryption["key_source"] != "platform-managed" {
		t.Errorf("vault show: %+v", show)
	}

	// The operator may not manage tokens or create vaults: exit 1, 403.
	if _, errOut, code := coffer(t, e, "token", "list", "--vault", srv.URL); code != exitFailure || !strings.Contains(errOut, "forbidden") {
		t.Errorf("operator token list: exit %d, %q", code, errOut)
	}
	// token list shows the tokens, never a secret.
	list := mustCoffer(t, e, "token", "list", "--vault", srv.URL, "--token", srv.OwnerToken)
	if !strings.Contains(list, "web01") || strings.Contains(list, "cft_") {
		t.Errorf("token list:\n%s", list)
	}
}

// TestRemoteTrust: an unknown certificate is refused with a message that
// says how to trust it; --fingerprint pins it without a CA file.
func TestRemoteTrust(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	_, errOut, code := coffer(t, e, "vault", "create", "x", "--vault", srv.URL)
	if code != exitFailure || !strings.Contains(errOut, "--cacert") || !strings.Contains(errOut, "--fingerprint") {
		t.Fatalf("untrusted server: exit %d, %q", code, errOut)
	}
	mat, _, err := tlsconf.LoadOrCreate(filepath.Join(srv.DataDir, "tls"), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fp := tlsconf.Fingerprint(mat.Leaf.Raw)
	if !strings.Contains(errOut, fp) {
		t.Errorf("the refusal does not show the presented fingerprint %s: %q", fp, errOut)
	}
	mustCoffer(t, e, "vault", "create", "x", "--vault", srv.URL, "--fingerprint", fp)
	wrong := "SHA256:" + strings.Repeat("ab", 32)
	if _, _, code := coffer(t, e, "vault", "create", "y", "--vault", srv.URL, "--fingerprint", wrong); code != exitFailure {
		t.Error("a wrong pin was accepted")
	}

	// doctor tls reports what the server negotiates and trusts.
	e.setenv("COFFER_CACERT", srv.CAFile)
	out := mustCoffer(t, e, "doctor", "tls", srv.URL, "--json")
	var rep tlsconf.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Verified || rep.AcceptsLegacy || rep.Version == "" || len(rep.Chain) == 0 || rep.Chain[0].Fingerprint != fp {
		t.Errorf("doctor tls: %+v", rep)
	}
	e.setenv("COFFER_CACERT", "")
	if _, _, code := coffer(t, e, "doctor", "tls", srv.URL); code != exitFailure {
		t.Error("doctor tls passed an untrusted server")
	}
	_ = context.Background
}

// TestProxyFromEnvironment: HTTPS_PROXY and NO_PROXY come from the
// command's environment (not the process's), and loopback is never
// proxied.
func TestProxyFromEnvironment(t *testing.T) {
	e := newEnv(t)
	e.setenv("HTTPS_PROXY", "http://proxy.example:3128")
	e.setenv("NO_PROXY", "internal.example")
	a := &app{getenv: e.getenv}
	f := a.proxyFunc()
	for _, tc := range []struct{ url, want string }{
		{"https://backup.example.com:8443/v1/vaults", "http://proxy.example:3128"},
		{"https://vault.internal.example:8443/", ""},
		{"https://127.0.0.1:8443/", ""},
		{"https://localhost:8443/", ""},
	} {
		req, _ := http.NewRequest("GET", tc.url, nil)
		u, err := f(req)
		got := ""
		if u != nil {
			got = u.String()
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: proxy %q (%v), want %q", tc.url, got, err, tc.want)
		}
	}
	e.setenv("HTTPS_PROXY", "")
	e.setenv("https_proxy", "http://lower.example:8080")
	req, _ := http.NewRequest("GET", "https://backup.example.com/", nil)
	if u, _ := (&app{getenv: e.getenv}).proxyFunc()(req); u == nil || u.Host != "lower.example:8080" {
		t.Errorf("https_proxy (lower case) not honoured: %v", u)
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServerCommand runs `coffer server` as a user would: it prints where
// the CA and the one-time owner token are and the certificate's
// fingerprint, serves HTTPS with that token, never writes the token to its
// output or log, and exits 0 when stopped (SIGTERM cancels the context in
// main).
func TestServerCommand(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	e := newEnv(t)
	var out, log lockedBuffer
	addrc := make(chan string, 1)
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &log, getenv: e.getenv, now: time.Now,
		onListen: func(addr string) { addrc <- addr }}
	root := newRootCmd(a)
	root.SetArgs([]string{"server", "--data", data, "--listen", "127.0.0.1:0", "--log-format", "json"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("server exited: %v\n%s", err, log.String())
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	tokFile := filepath.Join(data, "initial-owner-token")
	fi, err := os.Stat(tokFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("initial owner token file: %v, mode %v", err, fi.Mode())
	}
	tok, _ := os.ReadFile(tokFile)
	secret := strings.TrimSpace(string(tok))
	for _, want := range []string{filepath.Join(data, "tls", "ca.pem"), "server certificate fingerprint: SHA256:", tokFile, "listening on https://127.0.0.1:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("server output lacks %q:\n%s", want, out.String())
		}
	}
	e.setenv("COFFER_CACERT", filepath.Join(data, "tls", "ca.pem"))
	url := "https://" + addr
	mustCoffer(t, e, "vault", "create", "prod", "--vault", url, "--token", "@"+tokFile)
	if _, errOut, code := coffer(t, e, "vault", "create", "x", "--vault", url, "--token", "cft_"+strings.Repeat("A", 43)); code != exitFailure || !strings.Contains(errOut, "unauthenticated") {
		t.Errorf("unknown token: exit %d %q", code, errOut)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server stopped with %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("server did not stop")
	}
	if strings.Contains(out.String()+log.String(), secret) {
		t.Error("the owner token appears in the server's output or log")
	}
	if !strings.Contains(log.String(), `"msg":"request"`) || !strings.Contains(log.String(), `"req":"`) {
		t.Errorf("no structured request log with request IDs:\n%s", log.String())
	}
}

// TestServerOwnCertificate: with --tls-cert/--tls-key the server uses the
// given certificate (no local CA), agents trust it through its CA, and
// --tls-min 1.3 refuses a TLS 1.2 client.
func TestServerOwnCertificate(t *testing.T) {
	dir := t.TempDir()
	// A CA and a certificate for 127.0.0.1, made the way the server's local
	// CA is, then used as "your own" certificate.
	mat, _, err := tlsconf.LoadOrCreate(filepath.Join(dir, "pki"), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, mat.CertPEM, 0o644)
	os.WriteFile(key, mat.KeyPEM, 0o600)
	data := filepath.Join(dir, "data")
	e := newEnv(t)
	var out, log lockedBuffer
	addrc := make(chan string, 1)
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &log, getenv: e.getenv, now: time.Now,
		onListen: func(addr string) { addrc <- addr }}
	root := newRootCmd(a)
	root.SetArgs([]string{"server", "--data", data, "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key, "--tls-min", "1.3"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() { cancel(); <-done }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("server exited: %v\n%s", err, log.String())
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	if _, err := os.Stat(filepath.Join(data, "tls", "ca.pem")); err == nil {
		t.Error("a local CA was made although a certificate was given")
	}
	if !strings.Contains(out.String(), tlsconf.Fingerprint(mat.Leaf.Raw)) {
		t.Errorf("the server does not print the given certificate's fingerprint:\n%s", out.String())
	}
	e.setenv("COFFER_CACERT", filepath.Join(dir, "pki", "ca.pem"))
	mustCoffer(t, e, "vault", "create", "prod", "--vault", "https://"+addr, "--token", "@"+filepath.Join(data, "initial-owner-token"))
	out12 := &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool()}
	out12.RootCAs.AppendCertsFromPEM(mat.CAPEM)
	if c, err := tls.Dial("tcp", addr, out12); err == nil {
		c.Close()
		t.Error("a TLS 1.2 client was served with --tls-min 1.3")
	}
}
