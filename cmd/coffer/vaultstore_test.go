package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
)

// TestVaultCreateStore: coffer vault create prod --store s3://… on a
// server whose default stores are local puts prod in the bucket under the
// prefix given, and its backups go there; an unknown scheme is refused
// saying so, and --store on a local vault is refused rather than ignored.
func TestVaultCreateStore(t *testing.T) {
	sv := s3test.Start(t)
	// The server (in this process) takes the bucket's credentials from
	// the standard AWS chain, here the environment.
	t.Setenv("AWS_ACCESS_KEY_ID", sv.Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", sv.Secret)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	bucket := sv.Bucket(t, false)
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)

	_, errOut, code := coffer(t, e, "vault", "create", "prod", "--store", "gs://backups/prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	if code == exitOK || !strings.Contains(errOut, `unknown scheme "gs"`) {
		t.Fatalf("--store gs://…: exit %d, %q; want a refusal naming the scheme", code, errOut)
	}
	_, errOut, code = coffer(t, e, "vault", "create", "laptop", "--store", sv.URL(bucket, "laptop"))
	if code == exitOK || !strings.Contains(errOut, "--store is for vaults on a vault server") {
		t.Fatalf("--store on a local vault: exit %d, %q; want a refusal", code, errOut)
	}

	out := mustCoffer(t, e, "vault", "create", "prod", "--store", sv.URL(bucket, "backups/prod"), "--vault", srv.URL, "--token", srv.OwnerToken)
	if !strings.Contains(out, "vault prod created") {
		t.Fatalf("vault create said %q", out)
	}
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	if err := os.WriteFile(filepath.Join(src, "f"), randBytes(9, 300_000), 0o644); err != nil {
		t.Fatal(err)
	}
	backupJSON(t, e, src)
	prefix := "backups/prod/packs/"
	res, err := sv.Client.ListObjectsV2(context.Background(), &awss3.ListObjectsV2Input{Bucket: &bucket, Prefix: aws.String(prefix)})
	if err != nil || len(res.Contents) == 0 {
		t.Fatalf("no pack under %s after a backup (%v): the vault does not live in its own store", prefix, err)
	}
	if _, err := os.Stat(filepath.Join(srv.DataDir, "vaults", "prod", "store")); err == nil {
		t.Fatal("the vault has a local store beside its own")
	}

	// The server's catalog is lost; its platform key (kept apart, as
	// docs/operations.md says to) is all that comes to a new server,
	// with the store's URL.
	key, err := os.ReadFile(filepath.Join(srv.DataDir, "keys", "platform.key"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	srv2 := servertest.StartWith(t, servertest.Options{Configure: func(o *server.Options) {
		os.MkdirAll(filepath.Join(o.DataDir, "keys"), 0o700)
		if err := os.WriteFile(filepath.Join(o.DataDir, "keys", "platform.key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}})
	e.setenv("COFFER_CACERT", srv2.CAFile)
	e.setenv("COFFER_VAULT", "")
	e.setenv("COFFER_TOKEN", "")
	_, errOut, code = coffer(t, e, "vault", "recover", "prod", "--store", sv.URL(bucket, "backups/prod"))
	if code == exitOK || !strings.Contains(errOut, "vault recover rebuilds a vault on a vault server") {
		t.Fatalf("vault recover without a server: exit %d, %q", code, errOut)
	}
	out = mustCoffer(t, e, "vault", "recover", "prod", "--store", sv.URL(bucket, "backups/prod"), "--vault", srv2.URL, "--token", srv2.OwnerToken)
	if !strings.Contains(out, "vault prod recovered: 1 snapshots") {
		t.Fatalf("vault recover said %q", out)
	}
	e.setenv("COFFER_VAULT", srv2.URL+"/prod")
	e.setenv("COFFER_TOKEN", srv2.OwnerToken)
	target := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", target)
	if got, err := os.ReadFile(filepath.Join(target, src, "f")); err != nil || !bytes.Equal(got, randBytes(9, 300_000)) {
		t.Fatalf("restore after recover: %v", err)
	}
}
