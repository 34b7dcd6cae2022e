package platform

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// TestRotate: a new version becomes current, the old one still opens what
// it wrapped (also after reopening the file), and the file stays 0600.
func TestRotate(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ks, err := Create(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{7}, 32)
	aad := []byte("aad")
	w1, err := ks.Wrap(ctx, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ks.Rotate(t0.Add(91 * 24 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if ref.Version != "2" || ks.Current() != ref || !ks.Created().Equal(t0.Add(91*24*time.Hour)) {
		t.Fatalf("after rotation: %v, current %v, created %v", ref, ks.Current(), ks.Created())
	}
	w2, err := ks.Wrap(ctx, secret, aad)
	if err != nil || w2.KEK.Version != "2" {
		t.Fatalf("wrap after rotation: %v %v", w2.KEK, err)
	}
	again, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Unwrap(ctx, w1, aad); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("v1 record after rotation: %v", err)
	}
	if got, err := again.Unwrap(ctx, w2, aad); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("v2 record after reopening: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v after rotation", fi.Mode())
	}
}

// TestRotateConcurrent: two processes' keystores on one key file rotating
// at once end on the same version and key, never on two keys under one
// version.
func TestRotateConcurrent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := Create(path, now); err != nil {
		t.Fatal(err)
	}
	a, _ := Open(path)
	b, _ := Open(path)
	var wg sync.WaitGroup
	for _, ks := range []*Keystore{a, b} {
		wg.Go(func() {
			if _, err := ks.Rotate(now.Add(100 * 24 * time.Hour)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if a.Current() != b.Current() || a.Current().Version != "2" {
		t.Fatalf("after concurrent rotations: %v and %v, want both v2", a.Current(), b.Current())
	}
	w, err := a.Wrap(ctx, bytes.Repeat([]byte{1}, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unwrap(ctx, w, nil); err != nil {
		t.Errorf("one process cannot open what the other wrapped after rotating: %v", err)
	}
}

// TestUnwrapVersionRotatedElsewhere: a keystore opened before another
// process sharing the key file rotated it unwraps what that process
// wrapped under the new version (it reads the file again) and makes that
// version its current one; a version the file does not hold still fails
// with vault.ErrKeyUnavailable.
func TestUnwrapVersionRotatedElsewhere(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a, err := Create(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Rotate(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{9}, 32)
	w, err := a.Wrap(ctx, secret, []byte("aad"))
	if err != nil || w.KEK.Version != "2" {
		t.Fatalf("wrap after the rotation: %v %v", w.KEK, err)
	}
	got, err := b.Unwrap(ctx, w, []byte("aad"))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unwrap of a version rotated by another keystore: %v", err)
	}
	if b.Current() != a.Current() {
		t.Errorf("after the unwrap b's current key is %v, a's %v", b.Current(), a.Current())
	}
	w.KEK.Version = "3"
	if _, err := b.Unwrap(ctx, w, []byte("aad")); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("unwrap of a version no file holds: %v, want ErrKeyUnavailable", err)
	}
}

// TestRefresh: a keystore sharing its key file with another process takes
// on what that process did to the file: a newer current version it
// rotated to, and the versions it retired; a file holding another key,
// or whose current version went back, is refused.
func TestRefresh(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	mine, err := Create(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := theirs.Rotate(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if len(mine.Versions()) != 1 || mine.Current().Version != "1" {
		t.Fatalf("before Refresh: versions %v, current %v", mine.Versions(), mine.Current())
	}
	if err := mine.Refresh(); err != nil {
		t.Fatal(err)
	}
	if len(mine.Versions()) != 2 || mine.Current().Version != "2" || !mine.Created().Equal(t0.Add(time.Hour)) {
		t.Fatalf("after their rotation: versions %v, current %v", mine.Versions(), mine.Current())
	}
	w, err := mine.Wrap(ctx, bytes.Repeat([]byte{1}, 32), []byte("aad"))
	if err != nil || w.KEK.Version != "2" {
		t.Fatalf("wrap after Refresh: %v, %v", w.KEK, err)
	}
	if _, err := theirs.Retire([]int{1}); err != nil {
		t.Fatal(err)
	}
	if err := mine.Refresh(); err != nil {
		t.Fatal(err)
	}
	if vs := mine.Versions(); len(vs) != 1 || vs[0].Version != 2 {
		t.Errorf("after their retirement: versions %v, want v2 alone", vs)
	}
	if _, err := mine.Unwrap(ctx, vault.WrappedKey{KEK: vault.KeyRef{Provider: Provider, KeyID: mine.ID(), Version: "1"}, Alg: Alg, Data: w.Data}, []byte("aad")); err == nil {
		t.Error("a retired version still unwraps after Refresh")
	}

	// The file put back as it was before the rotation: refused.
	if err := os.WriteFile(path, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := mine.Refresh(); !errors.Is(err, vault.ErrKeyUnavailable) || mine.Current().Version != "2" {
		t.Errorf("Refresh of a file whose current version went back: %v, current %v", err, mine.Current())
	}
	// Another key's file: refused.
	os.Remove(path)
	if _, err := Create(path, t0); err != nil {
		t.Fatal(err)
	}
	if err := mine.Refresh(); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("Refresh of another key's file: %v, want ErrWrongKey", err)
	}
}
