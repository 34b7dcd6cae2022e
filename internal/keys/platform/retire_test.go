package platform

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// TestRetire: a retired version is gone from the key file and from
// memory (what it wrapped no longer opens, with a message naming the
// version), the others still open what they wrapped, the current version
// is never deleted, and the file stays 0600.
func TestRetire(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ks, err := Create(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{7}, 32)
	aad := []byte("aad")
	var ws []vault.WrappedKey
	for i := range 3 {
		if i > 0 {
			if _, err := ks.Rotate(t0.Add(time.Duration(i) * time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		w, err := ks.Wrap(ctx, secret, aad)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	got, err := ks.Retire([]int{1, 3, 7})
	if err != nil || !slices.Equal(got, []int{1}) {
		t.Fatalf("Retire(1, 3 current, 7 absent) = %v, %v; want [1]", got, err)
	}
	again, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []*Keystore{ks, again} {
		if _, err := k.Unwrap(ctx, ws[0], aad); !errors.Is(err, vault.ErrKeyUnavailable) || !strings.Contains(err.Error(), "version 1") {
			t.Errorf("unwrap under the retired v1: %v, want key unavailable naming version 1", err)
		}
		for _, w := range ws[1:] {
			if b, err := k.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(b, secret) {
				t.Errorf("unwrap under v%s after retiring v1: %v", w.KEK.Version, err)
			}
		}
		if vs := k.Versions(); len(vs) != 2 || vs[0].Version != 2 || vs[1].Version != 3 {
			t.Errorf("versions after retiring v1: %v", vs)
		}
	}
	if ks.Current().Version != "3" {
		t.Errorf("current after retiring: %v", ks.Current())
	}
	if got, err := ks.Retire([]int{3}); err != nil || len(got) != 0 {
		t.Errorf("Retire(current) = %v, %v; want nothing deleted", got, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v after retiring", fi.Mode())
	}
	raw, _ := os.ReadFile(path)
	if n := strings.Count(string(raw), `"version"`); n != 2 {
		t.Errorf("key file holds %d versions after retiring v1, want 2", n)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 2 { // platform.key and its lock
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("files beside the key file after retiring: %v (a temporary copy left behind?)", names)
	}
}

// TestRetireAfterDrop: a keystore whose versions were dropped (key TTL)
// retires from the file, stays dropped, and reads the file again on the
// next unwrap.
func TestRetireAfterDrop(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ks, err := Create(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	w1, _ := ks.Wrap(ctx, make([]byte, 32), nil)
	if _, err := ks.Rotate(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	w2, _ := ks.Wrap(ctx, make([]byte, 32), nil)
	ks.DropSecrets()
	if got, err := ks.Retire([]int{1}); err != nil || !slices.Equal(got, []int{1}) {
		t.Fatalf("Retire after DropSecrets: %v, %v", got, err)
	}
	ks.mu.RLock()
	dropped := ks.keys == nil
	ks.mu.RUnlock()
	if !dropped {
		t.Error("Retire loaded the key versions of a keystore that had dropped them")
	}
	if _, err := ks.Unwrap(ctx, w1, nil); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("unwrap under retired v1: %v", err)
	}
	if _, err := ks.Unwrap(ctx, w2, nil); err != nil {
		t.Errorf("unwrap under v2 after retiring v1 and reloading: %v", err)
	}
}

// TestRetireStaleKeystore: a keystore opened before another process
// rotated the file keeps the newer version when it retires, and wraps
// under the file's current version, never under one that stopped being
// current.
func TestRetireStaleKeystore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := Create(path, t0); err != nil {
		t.Fatal(err)
	}
	stale, _ := Open(path)
	other, _ := Open(path)
	if _, err := other.Rotate(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	w, err := stale.Wrap(ctx, make([]byte, 32), nil)
	if err != nil || w.KEK.Version != "2" {
		t.Fatalf("a keystore opened before another rotated wraps under v%s (%v), want v2", w.KEK.Version, err)
	}
	if got, err := stale.Retire([]int{1, 2}); err != nil || !slices.Equal(got, []int{1}) {
		t.Fatalf("Retire(1, 2) from a stale keystore: %v, %v; want [1]", got, err)
	}
	if _, err := other.Unwrap(ctx, w, nil); err != nil {
		t.Errorf("v2 after the stale keystore retired: %v", err)
	}
}

// TestRetireCheckedUnderLock: the caller's check runs under the key
// file's lock (a writer of the state beside the key file, such as the
// CLI's list of vaults, waits for it), and when it fails nothing is
// deleted.
func TestRetireCheckedUnderLock(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ks, err := Create(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	w1, _ := ks.Wrap(ctx, make([]byte, 32), nil)
	if _, err := ks.Rotate(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	locked := false
	got, err := ks.RetireChecked([]int{1}, func() error {
		// The lock is held: another Lock would wait; probe it without
		// blocking through the lock file's holder.
		done := make(chan struct{})
		go func() {
			if unlock, err := Lock(path); err == nil {
				unlock()
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(200 * time.Millisecond):
			locked = true
		}
		return errors.New("the list changed")
	})
	if err == nil || len(got) != 0 {
		t.Fatalf("RetireChecked with a failing check: %v, %v", got, err)
	}
	if !locked {
		t.Error("the check ran without the key file's lock held")
	}
	if _, err := ks.Unwrap(ctx, w1, nil); err != nil {
		t.Errorf("v1 was deleted although the check failed: %v", err)
	}
	again, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Unwrap(ctx, w1, nil); err != nil {
		t.Errorf("v1 is gone from the key file although the check failed: %v", err)
	}
}
