package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPassphraseVaultBesideDefault: a passphrase vault is created by its
// name in a home that already holds the default vault (it was refused as
// if it were the default one), is opened only with its passphrase, and a
// second create of it is refused naming its own directory.
func TestPassphraseVaultBesideDefault(t *testing.T) {
	p := &passEnv{testEnv: newEnv(t), dir: t.TempDir()}
	one := p.file(t, "one", "the passphrase of the second vault")
	wrong := p.file(t, "wrong", "a passphrase of nobody's")
	src := smallData(t)
	p.must(t, "backup", src) // makes the default vault

	p.setenv("COFFER_PASSWORD_FILE", one)
	if out := p.must(t, "vault", "create", "laptop", "--key", "passphrase:"); !strings.Contains(out, filepath.Join("vaults", "laptop")) {
		t.Errorf("vault create: %s", out)
	}
	if _, err := os.Stat(filepath.Join(p.home, "vaults", "laptop")); err != nil {
		t.Fatal(err)
	}
	p.must(t, "backup", src, "--vault", "laptop")
	if out := p.must(t, "vault", "show", "--vault", "laptop"); !strings.Contains(out, "passphrase:") {
		t.Errorf("vault show does not name the passphrase KEK:\n%s", out)
	}
	p.setenv("COFFER_PASSWORD_FILE", wrong)
	p.fails(t, "wrong key", "snapshots", "--vault", "laptop")
	p.must(t, "snapshots") // the default vault needs none
	p.fails(t, filepath.Join("vaults", "laptop"), "vault", "create", "laptop", "--key", "passphrase:")
}
