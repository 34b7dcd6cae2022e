package server

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestWriterSessionKeptAliveElsewhere: behind a load balancer a remote
// backup's requests may go to one server for its first upload and its
// snapshot, and to another sharing the catalog in between. The session
// the second kept alive in the catalog (which holds prune back) is alive
// for the first too, however quiet it was there; a session quiet on
// every server is still expired.
func TestWriterSessionKeptAliveElsewhere(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	var clock atomic.Int64
	clock.Store(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	advance := func(d time.Duration) { clock.Add(int64(d)) }

	// One store for both, as a bucket would be.
	stores := t.TempDir()
	openStore := func(_ context.Context, name string) (vault.Store, error) {
		return local.Open(filepath.Join(stores, name))
	}
	dirA := t.TempDir()
	os.Chmod(dirA, 0o700)
	a, _, err := Open(ctx, Options{DataDir: dirA, Catalog: url, Now: now, OpenStore: openStore})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	dirB := t.TempDir()
	os.Chmod(dirB, 0o700)
	for _, f := range []string{"keys/deployment.key", "audit/" + audit.SigningKeyFile} {
		b, err := os.ReadFile(filepath.Join(dirA, f))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dirB, f)), 0o700)
		if err := os.WriteFile(filepath.Join(dirB, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, _, err := Open(ctx, Options{DataDir: dirB, Catalog: url, Now: now, OpenStore: openStore})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	va, err := a.CreateVault(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	vb, err := b.vault(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}

	req := func(s *Server, session string) *request {
		r := httptest.NewRequest("POST", "/v1/vaults/v/missing", nil)
		r.Header.Set(api.HeaderSession, session)
		q := &request{w: httptest.NewRecorder(), r: r, ctx: ctx, tok: vault.TokenRecord{ID: "tok-1"}, name: "v"}
		switch s {
		case a:
			q.vault = va
		default:
			q.vault = vb
		}
		return q
	}
	touch := func(s *Server, session string) {
		t.Helper()
		if err := s.touchWriter(req(s, session)); err != nil {
			t.Fatal(err)
		}
	}

	const kept = "0123456789abcdef0123456789abcdef"
	touch(a, kept) // the first upload, on a
	for range 20 { // 20 minutes of uploads, all on b
		advance(time.Minute)
		touch(b, kept)
	}
	touch(a, kept) // back on a, quiet there for 20 minutes
	if err := a.writerAlive(req(a, kept)); err != nil {
		t.Errorf("a session kept alive through another server: %v", err)
	}

	const quiet = "fedcba9876543210fedcba9876543210"
	touch(a, quiet)
	touch(b, quiet)
	advance(20 * time.Minute)
	touch(a, quiet)
	if err := a.writerAlive(req(a, quiet)); err == nil {
		t.Error("a session quiet on every server for 20 minutes is alive")
	}
}
