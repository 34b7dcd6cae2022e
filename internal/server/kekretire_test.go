package server_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// retireFixture is a server's data directory holding vaults made under
// platform key v1, each with one stored blob, reopened by a server whose
// clock is 91 days later and which has opened no vault yet.
type retireFixture struct {
	dir   string
	srv   *server.Server
	blobs map[string][]byte // vault → the blob's plaintext
	ids   map[string]vault.ID
	clock *atomic.Int64
}

func newRetireFixture(t *testing.T, names ...string) *retireFixture {
	t.Helper()
	ctx := context.Background()
	env := servertest.StartWith(t, servertest.Options{Configure: func(o *server.Options) {
		o.KEKRotation = 90 * 24 * time.Hour
	}})
	f := &retireFixture{dir: env.DataDir, blobs: map[string][]byte{}, ids: map[string]vault.ID{}, clock: &atomic.Int64{}}
	for i, name := range names {
		eng, err := env.Server.CreateVault(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 50_000)
		rand.NewChaCha8([32]byte{byte(i)}).Read(data)
		id := eng.BlobID(data)
		if _, err := eng.SaveBlob(ctx, vault.DataBlob, id, eng.Codec().Encode(nil, data), len(data)); err != nil {
			t.Fatal(err)
		}
		if err := eng.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		f.blobs[name], f.ids[name] = data, id
	}
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	f.clock.Store(int64(91 * 24 * time.Hour))
	f.reopen(t)
	return f
}

// reopen opens the data directory again, as a restarted server would.
func (f *retireFixture) reopen(t *testing.T) {
	t.Helper()
	if f.srv != nil {
		f.srv.Close()
	}
	srv, _, err := server.Open(context.Background(), server.Options{DataDir: f.dir, KEKRotation: 90 * 24 * time.Hour,
		Now: func() time.Time { return time.Now().Add(time.Duration(f.clock.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	t.Cleanup(func() { srv.Close() })
}

// versions lists the versions in the server's key file, read from disk.
func (f *retireFixture) versions(t *testing.T) []int {
	t.Helper()
	ks, err := platform.Open(filepath.Join(f.dir, "keys", "platform.key"))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, v := range ks.Versions() {
		out = append(out, v.Version)
	}
	return out
}

// readsBack asserts that vault name opens and gives its blob back.
func (f *retireFixture) readsBack(t *testing.T, name string) {
	t.Helper()
	eng, err := f.srv.Engine(context.Background(), name)
	if err != nil {
		t.Fatalf("vault %s: %v", name, err)
	}
	got, err := eng.LoadBlob(context.Background(), vault.DataBlob, f.ids[name], nil)
	if err != nil || !bytes.Equal(got, f.blobs[name]) {
		t.Fatalf("vault %s: load: %v", name, err)
	}
}

// TestServerRetiresPlatformKeyVersions: after the server's automatic
// rotation, every vault (those not open too) is rewrapped under v2, v1 is
// gone from the server's key file, and every vault still opens and reads.
func TestServerRetiresPlatformKeyVersions(t *testing.T) {
	f := newRetireFixture(t, "prod", "other")
	if err := f.srv.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.versions(t); len(got) != 1 || got[0] != 2 {
		t.Fatalf("key file versions after the rotation: %v, want only v2", got)
	}
	for _, name := range []string{"prod", "other"} {
		f.readsBack(t, name) // the running server, its keystore updated in memory
	}
	f.reopen(t) // a fresh server: nothing from memory
	for _, name := range []string{"prod", "other"} {
		f.readsBack(t, name)
		eng, _ := f.srv.Engine(context.Background(), name)
		if k := eng.KeyInfo().KEK; k.Version != "2" {
			t.Errorf("vault %s wrapped by %s after the rotation, want v2", name, k)
		}
	}
}

// TestServerRetireBlocked: a vault that cannot be read (a damaged keyring
// generation), or that can be read but not opened and rewrapped (its
// config changed), keeps every version; the error and its key log name
// it. Once it is repaired, the next attempt retires v1.
func TestServerRetireBlocked(t *testing.T) {
	for _, how := range []string{"keyring damaged", "config changed"} {
		t.Run(how, func(t *testing.T) {
			f := newRetireFixture(t, "prod", "broken")
			store := filepath.Join(f.dir, "vaults", "broken", "store")
			var restore func()
			switch how {
			case "keyring damaged":
				// The anchored generation itself: an object planted above
				// it does not authenticate and is ignored.
				dir := filepath.Join(store, "keys")
				names, err := os.ReadDir(dir)
				if err != nil || len(names) == 0 {
					t.Fatal(names, err)
				}
				p := filepath.Join(dir, names[len(names)-1].Name())
				orig, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				os.Remove(p)
				if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
					t.Fatal(err)
				}
				restore = func() { os.Remove(p); os.WriteFile(p, orig, 0o400) }
			case "config changed":
				p := filepath.Join(store, "config")
				orig, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				changed := bytes.Replace(orig, []byte(`"pack_size": `), []byte(`"pack_size": 1`), 1)
				if bytes.Equal(changed, orig) {
					t.Fatalf("config has no pack_size: %s", orig)
				}
				if err := os.WriteFile(p, changed, 0o600); err != nil {
					t.Fatal(err)
				}
				restore = func() { os.WriteFile(p, orig, 0o600) }
			}
			err := f.srv.Maintain(context.Background())
			if err == nil || !strings.Contains(err.Error(), "broken") || !strings.Contains(err.Error(), "every version kept") {
				t.Fatalf("Maintain with a vault that cannot be read: %v, want an error naming it", err)
			}
			if got := f.versions(t); len(got) != 2 {
				t.Fatalf("key file versions with a blocked vault: %v, want v1 and v2 kept", got)
			}
			f.readsBack(t, "prod")
			evs := keyEventsOf(t, f.dir, "broken")
			if n := countEvents(evs, vault.KeyEventKEKRetire); n != 1 {
				t.Errorf("kek-retire key events of the blocking vault: %d, want 1: %+v", n, evs)
			}
			// Within the retry time nothing is tried again, and a second
			// blocked attempt adds no second key event.
			if err := f.srv.Maintain(context.Background()); err != nil {
				t.Errorf("Maintain within the retry time: %v", err)
			}
			f.clock.Add(int64(2 * time.Hour))
			if err := f.srv.Maintain(context.Background()); err == nil {
				t.Error("Maintain after the retry time with the vault still broken: no error")
			}
			if n := countEvents(keyEventsOf(t, f.dir, "broken"), vault.KeyEventKEKRetire); n != 1 {
				t.Errorf("kek-retire key events after a second blocked attempt: %d, want 1", n)
			}
			restore()
			f.clock.Add(int64(2 * time.Hour))
			if err := f.srv.Maintain(context.Background()); err != nil {
				t.Fatalf("Maintain after the repair: %v", err)
			}
			if got := f.versions(t); len(got) != 1 || got[0] != 2 {
				t.Fatalf("key file versions after the repair: %v, want only v2", got)
			}
			f.readsBack(t, "prod")
			f.readsBack(t, "broken")
		})
	}
}

// keyEventsOf reads vault name's key log from the server's catalog.
func keyEventsOf(t *testing.T, dir, name string) []vault.KeyEvent {
	t.Helper()
	ctx := context.Background()
	cat, err := sqlite.Open(filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	rec, err := cat.Vault(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := cat.KeyEvents(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func countEvents(evs []vault.KeyEvent, event string) int {
	n := 0
	for _, e := range evs {
		if e.Event == event {
			n++
		}
	}
	return n
}
