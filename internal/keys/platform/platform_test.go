package platform

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

func TestCreateOpenWrapUnwrap(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys", "platform.key")
	ks, err := Create(p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, err %v", fi.Mode(), err)
	}
	secret := make([]byte, 32)
	secret[0] = 7
	w, err := ks.Wrap(context.Background(), secret, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := again.Unwrap(context.Background(), w, []byte("aad"))
	if err != nil || string(got) != string(secret) {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := again.Unwrap(context.Background(), w, []byte("other")); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("wrong aad: got %v, want ErrWrongKey", err)
	}
	other, err := Create(filepath.Join(t.TempDir(), "k"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Unwrap(context.Background(), w, []byte("aad")); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("other key file: got %v, want ErrWrongKey", err)
	}
	if _, err := Create(p, time.Now()); !errors.Is(err, vault.ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}
}

func TestOpenMissingIsUnavailable(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("got %v, want ErrKeyUnavailable", err)
	}
}

// TestConcurrentCreate: many creators at once, exactly one wins, and no
// reader ever sees a partial file.
func TestConcurrentCreate(t *testing.T) {
	for range 20 {
		p := filepath.Join(t.TempDir(), "platform.key")
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := Create(p, time.Now())
				if err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				} else if !errors.Is(err, vault.ErrExists) {
					t.Error(err)
				}
				if _, err := Open(p); err != nil && !errors.Is(err, vault.ErrKeyUnavailable) {
					t.Errorf("reader saw a partial key file: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d creators won", wins)
		}
		entries, _ := os.ReadDir(filepath.Dir(p))
		if len(entries) != 1 {
			t.Fatalf("left %d files behind", len(entries))
		}
	}
}
