package server_test

// Helpers shared by the end-to-end tests (proxy, load, drain): generated
// directories, vault and token setup, and restore comparison.

import (
	"bytes"
	"context"
	"encoding/binary"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/vault"
)

// randomBytes returns n incompressible bytes determined by seed, so equal
// seeds give equal content (and equal chunks) in different directories.
func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	r := rand.NewChaCha8(s)
	b := make([]byte, n)
	r.Read(b)
	return b
}

// writeTree writes files (relative name → content) under dir.
func writeTree(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// treeSize is the total length of files.
func treeSize(files map[string][]byte) int64 {
	var n int64
	for _, b := range files {
		n += int64(len(b))
	}
	return n
}

// sameTree fails t unless every regular file under src was restored,
// byte for byte, under dst (restore recreates src's absolute path below
// its target), and dst holds no extra regular file.
func sameTree(t testing.TB, src, dst string) {
	t.Helper()
	restored := filepath.Join(dst, src)
	var files int
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		files++
		rel, _ := filepath.Rel(src, p)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(restored, rel))
		if err != nil {
			t.Errorf("restored %s: %v", rel, err)
			return nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("restored %s differs: %d bytes, want %d", rel, len(got), len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var extra int
	filepath.WalkDir(restored, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			extra++
		}
		return nil
	})
	if extra != files {
		t.Errorf("restore wrote %d files, the source has %d", extra, files)
	}
}

// newVault creates vault name with the owner client and returns a
// backup-operator token for it.
func newVault(t *testing.T, owner *client.Client, name string) string {
	t.Helper()
	if _, err := owner.CreateVault(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	return token(t, owner, "backup-operator", name)
}

// restoreAndCompare restores snapshot snap from v into a new directory and
// compares it with src.
func restoreAndCompare(t testing.TB, v *client.Vault, snap vault.SnapshotRecord, src string) {
	t.Helper()
	dst := t.TempDir()
	if _, err := agent.Restore(context.Background(), v, snap.Tree, agent.RestoreOptions{Target: dst}); err != nil {
		t.Fatalf("restore %s: %v", snap.ID.Short(), err)
	}
	sameTree(t, src, dst)
}
