package server

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestStoreURLSeal: a vault's own store URL as a shared catalog keeps it
// (docs/format.md §1.1e) opens under the deployment key for its own
// vault name only; the row holds no URL in plaintext; a row moved from
// another name, sealed under another deployment key, flipped or cut
// short is "wrong key"; and the layout is the spec's, recomputed here
// from its HKDF and AES-GCM steps.
func TestStoreURLSeal(t *testing.T) {
	dk := seal.NewRandomKey()
	u := newStoreURLSeal(dk)
	const url = "s3://backups/prod?endpoint=https://s3.example.com:9000&region=eu-west-2"
	row := u.seal("prod", url)
	if got, err := newStoreURLSeal(dk).open("prod", row); err != nil || got != url {
		t.Fatalf("open by another server of the deployment = %q, %v", got, err)
	}
	if bytes.Contains(row, []byte("backups")) || bytes.Contains(row, []byte("s3.example.com")) {
		t.Error("the row holds the URL in plaintext")
	}
	for name, b := range map[string][]byte{
		"another vault's name":      nil,
		"a case variant":            nil,
		"another deployment key":    newStoreURLSeal(seal.NewRandomKey()).seal("prod", url),
		"the URL in plain":          []byte(url),
		"cut short":                 row[:40],
		"empty":                     {},
		"first byte flipped":        flip(row, 0),
		"a salt byte flipped":       flip(row, 5),
		"a ciphertext byte flipped": flip(row, len(row)-1),
	} {
		open := "prod"
		switch name {
		case "another vault's name":
			b, open = row, "prod2"
		case "a case variant":
			b, open = u.seal("Prod", url), "prod"
		}
		if got, err := u.open(open, b); !errors.Is(err, vault.ErrWrongKey) {
			t.Errorf("%s: %q, %v; want ErrWrongKey", name, got, err)
		}
	}

	// The spec's steps.
	v, err := hkdf.Key(sha256.New, dk[:], nil, "coffer/v1/store-url-seal", 32)
	if err != nil {
		t.Fatal(err)
	}
	if row[0] != 0x01 || len(row) != 1+32+len(url)+16 {
		t.Fatalf("row: version %#x, %d bytes; want 0x01, %d", row[0], len(row), 1+32+len(url)+16)
	}
	k, err := hkdf.Key(sha256.New, v, row[1:33], "coffer/v1/store-url-seal", 32)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := aes.NewCipher(k)
	gcm, _ := cipher.NewGCM(blk)
	aad := append([]byte("coffer/v1/store-url-seal\x00"), "prod"...)
	if pt, err := gcm.Open(nil, make([]byte, 12), row[33:], aad); err != nil || string(pt) != url {
		t.Errorf("the row opened by the spec's steps: %q, %v", pt, err)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

// TestSharedCatalogAdoptsStoreURLFile: a vault's store URL that a server
// of an older release recorded in its data directory is copied into the
// shared catalog sealed (the row holds no URL in plaintext), and a server
// on another host, given the deployment key, reads it from there; a
// removal clears the row.
func TestSharedCatalogAdoptsStoreURLFile(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	const storeURL = "s3://backups/far?endpoint=https://s3.example.com&region=eu-west-2"
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	if err := os.MkdirAll(VaultDir(dir, "far"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(storeURLFile(dir, "far"), []byte(storeURL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, _, err := Open(ctx, Options{DataDir: dir, Catalog: url})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if got, err := a.vaultStoreURL(ctx, "far"); err != nil || got != storeURL {
		t.Fatalf("the data directory's store URL = %q, %v", got, err)
	}
	row, err := a.deployment().VaultStore(ctx, "far")
	if err != nil || row == nil || bytes.Contains(row, []byte("backups")) {
		t.Fatalf("the catalog's row: %q, %v; want it sealed", row, err)
	}
	other := t.TempDir()
	os.Chmod(other, 0o700)
	for _, f := range []string{"keys/deployment.key", "audit/" + audit.SigningKeyFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(filepath.Join(other, f)), 0o700)
		if err := os.WriteFile(filepath.Join(other, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, _, err := Open(ctx, Options{DataDir: other, Catalog: url})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, err := b.vaultStoreURL(ctx, "far"); err != nil || got != storeURL {
		t.Errorf("the store URL through another server = %q, %v", got, err)
	}
	if err := b.recordStoreURL(ctx, "far", ""); err != nil {
		t.Fatal(err)
	}
	if row, err := a.deployment().VaultStore(ctx, "far"); err != nil || row != nil {
		t.Errorf("the catalog's row after the removal: %q, %v", row, err)
	}
}

// TestUpgradedCatalogUnsealedStoreURL: a store URL an older catalog kept
// in plain text (moved to vault_stores_unsealed on upgrade) is not
// trusted: the vault's store URL is refused with the fix named, and
// becomes the sealed URL once the operator writes it to the vault's
// store.url in a server's data directory.
func TestUpgradedCatalogUnsealedStoreURL(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	const storeURL = "s3://backups/old?endpoint=https://s3.example.com&region=eu-west-2"
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	a, _, err := Open(ctx, Options{DataDir: dir, Catalog: url})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO vault_stores_unsealed (name, url) VALUES ('old', $1)`, storeURL); err != nil {
		t.Fatal(err)
	}
	got, err := a.vaultStoreURL(ctx, "old")
	if !errors.Is(err, vault.ErrUnsealedStoreURL) || got != "" || !strings.Contains(err.Error(), "store.url") {
		t.Fatalf("an unsealed store URL: %q, %v; want it refused with the fix named", got, err)
	}
	if err := os.MkdirAll(VaultDir(dir, "old"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(storeURLFile(dir, "old"), []byte(storeURL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := a.vaultStoreURL(ctx, "old"); err != nil || got != storeURL {
		t.Fatalf("after store.url is written: %q, %v", got, err)
	}
	if row, err := a.deployment().VaultStore(ctx, "old"); err != nil || row == nil || bytes.Contains(row, []byte("backups")) {
		t.Fatalf("the catalog's row: %q, %v; want it sealed", row, err)
	}
}
