package platform_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestDropSecrets: after DropSecrets the keystore holds no KEK version:
// with the key file gone, wrap and unwrap fail; with it back, they work.
func TestDropSecrets(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	ks, err := platform.Create(path, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	w, err := ks.Wrap(ctx, secret, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ks.DropSecrets()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Unwrap(ctx, w, []byte("aad")); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("unwrap after DropSecrets with the key file gone: %v", err)
	}
	if _, err := ks.Wrap(ctx, secret, []byte("aad")); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("wrap after DropSecrets with the key file gone: %v", err)
	}
	if err := os.WriteFile(path, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Unwrap(ctx, w, []byte("aad")); err != nil {
		t.Fatalf("unwrap with the key file back: %v", err)
	}
}
