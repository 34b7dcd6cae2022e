package rsafile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

// TestDropSecrets: DropSecrets forgets the parsed key and the file's
// bytes; with the file gone, the next unwrap fails instead of using a
// key kept in memory, and with it back, works again.
func TestDropSecrets(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "test-kek.pem"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	secret := make([]byte, 32)
	w, err := p.Wrap(ctx, secret, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if p.key == nil || p.raw == nil {
		t.Fatal("no key held after a wrap")
	}
	raw := p.raw
	p.DropSecrets()
	if p.key != nil || p.raw != nil {
		t.Fatal("DropSecrets kept the parsed key")
	}
	for _, b := range raw {
		if b != 0 {
			t.Fatal("DropSecrets left the key file's bytes in memory")
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, w, []byte("aad")); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("unwrap with the key file gone after DropSecrets: %v", err)
	}
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, w, []byte("aad")); err != nil {
		t.Fatalf("unwrap with the key file back: %v", err)
	}
}
