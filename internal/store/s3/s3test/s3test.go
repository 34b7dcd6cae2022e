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
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
	Endpoint       string // http://127.0.0.1:PORT
	Access, Secret string
	Client         *s3.Client // a raw client with the server's root credentials
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

// Start starts a versitygw for t, or skips t when there is none.
func Start(t testing.TB) *Server {
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
	cmd := exec.Command(bin, "--port", addr, "--access", sv.Access, "--secret", sv.Secret,
		"posix", "--versioning-dir", filepath.Join(dir, "versions"), filepath.Join(dir, "data"))
	logf, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
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
	})
	return sv
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
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&region=us-east-1", bucket, prefix, sv.Endpoint)
}
