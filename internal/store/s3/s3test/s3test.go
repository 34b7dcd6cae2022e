// Package s3test starts a real S3 server, versitygw, for tests: on a free
// loopback port, over a fresh directory, with versioning (and so Object
// Lock) available, until the test ends.
//
// The binary is $COFFER_VERSITYGW, else versitygw on $PATH, else
// $HOME/go/bin/versitygw (where `go install
// github.com/versity/versitygw/cmd/versitygw@v1.8.0` puts it; .ci/run does
// that). Without it the test skips, unless COFFER_REQUIRE_SERVICES is set.
package s3test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Install is the command that installs the server.
const Install = "GOBIN=$HOME/go/bin go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Server is a running versitygw.
type Server struct {
	Endpoint       string // http://127.0.0.1:PORT, https:// from StartTLS
	CAFile         string // StartTLS: the PEM certificate to trust for Endpoint
	Access, Secret string
	Client         *s3.Client // a raw client with the server's root credentials
	pid            int
}

// CPU returns the processor time the server has used so far (user and
// system), read from /proc; 0 where there is no /proc.
func (sv *Server) CPU() time.Duration { return procCPU(fmt.Sprintf("/proc/%d/stat", sv.pid)) }

// SelfCPU returns the processor time this process (the store's side of a
// benchmark) has used so far, as CPU does for the server.
func SelfCPU() time.Duration { return procCPU("/proc/self/stat") }

func procCPU(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces): utime
	// and stime are the 12th and 13th, in clock ticks (100 a second on
	// Linux).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

// Credentials returns the server's root credentials as a provider.
func (sv *Server) Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(sv.Access, sv.Secret, "")
}

func binary() string {
	if b := os.Getenv("COFFER_VERSITYGW"); b != "" {
		return b
	}
	if b, err := exec.LookPath("versitygw"); err == nil {
		return b
	}
	if home, err := os.UserHomeDir(); err == nil {
		b := filepath.Join(home, "go", "bin", "versitygw")
		if _, err := os.Stat(b); err == nil {
			return b
		}
	}
	return ""
}

// Start starts a versitygw on plain http for t, or skips t when there is
// none.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartTLS starts a versitygw on https, with a certificate for 127.0.0.1
// from a CA of its own (Server.CAFile), as S3 is deployed.
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, useTLS bool) *Server {
	t.Helper()
	bin := binary()
	if bin == "" {
		if os.Getenv("COFFER_REQUIRE_SERVICES") != "" {
			t.Fatalf("versitygw is not installed (%s); COFFER_REQUIRE_SERVICES is set", Install)
		}
		t.Skipf("versitygw not installed (%s)", Install)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	for _, d := range []string{"data", "versions"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sv := &Server{Endpoint: "http://" + addr, Access: "coffertest", Secret: randomHex(t, 16)}
	args := []string{"--port", addr, "--access", sv.Access, "--secret", sv.Secret, "--quiet", "--keep-alive"}
	hc := &http.Client{}
	if useTLS {
		cert, key, pool := selfSigned(t, dir)
		args = append(args, "--cert", cert, "--key", key)
		sv.Endpoint, sv.CAFile = "https://"+addr, cert
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	args = append(args, "posix", "--versioning-dir", filepath.Join(dir, "versions"), filepath.Join(dir, "data"))
	cmd := exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	sv.pid = cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("versitygw did not start listening on %s:\n%s", addr, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sv.Client = s3.New(s3.Options{
		BaseEndpoint: aws.String(sv.Endpoint),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials:  sv.Credentials(),
		HTTPClient:   hc,
	})
	return sv
}

// selfSigned writes a self-signed ECDSA certificate for 127.0.0.1 and its
// key into dir and returns their paths and a pool trusting it.
func selfSigned(t testing.TB, dir string) (cert, key string, pool *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "versitygw test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return cert, key, pool
}

// Bucket creates a bucket with a random name and returns it; with lock
// it has Object Lock enabled (and so versioning).
func (sv *Server) Bucket(t testing.TB, lock bool) string {
	t.Helper()
	name := "coffer-" + randomHex(t, 6)
	in := &s3.CreateBucketInput{Bucket: &name}
	if lock {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sv.Client.CreateBucket(ctx, in); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	if lock {
		_, err := sv.Client.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: &name,
			VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}})
		if err != nil {
			t.Fatalf("enable versioning on %s: %v", name, err)
		}
	}
	return name
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// URL is the store URL of bucket/prefix on sv.
func (sv *Server) URL(bucket, prefix string) string {
	u := fmt.Sprintf("s3://%s/%s?endpoint=%s&region=us-east-1", bucket, prefix, sv.Endpoint)
	if sv.CAFile != "" {
		u += "&ca-file=" + url.QueryEscape(sv.CAFile)
	}
	return u
}

// Names lists the names of the objects (their current versions) under
// prefix in bucket, prefix cut off, bypassing Coffer.
func (sv *Server) Names(t testing.TB, bucket, prefix string) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	p := s3.NewListObjectsV2Paginator(sv.Client, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list %s/%s: %v", bucket, prefix, err)
		}
		for _, o := range out.Contents {
			names[strings.TrimPrefix(aws.ToString(o.Key), prefix)] = true
		}
	}
	return names
}
