package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// TestRetries: reads and idempotent writes are sent again when the server
// is unavailable; saving a snapshot is not (it could be recorded twice).
func TestRetries(t *testing.T) {
	old := retryDelays
	retryDelays = []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}
	defer func() { retryDelays = old }()
	var lists, saves, dedups atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/vaults/a/snapshots":
			if lists.Add(1) < 3 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"code":"unavailable","message":"starting"}`))
				return
			}
			w.Write([]byte(`[]`))
		case r.Method == http.MethodPost && r.URL.Path == "/v1/vaults/a/snapshots":
			saves.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"code":"unavailable","message":"starting"}`))
		case r.URL.Path == "/v1/vaults/a/dedup":
			dedups.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"code":"key_unavailable","message":"the KEK cannot be reached"}`))
		}
	}))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c, err := New(Options{Server: srv.URL, Token: "t", TLS: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	v := c.Vault("a")
	if _, err := v.Snapshots(ctx); err != nil || lists.Load() != 3 {
		t.Errorf("list after two unavailable answers: %v after %d requests", err, lists.Load())
	}
	if _, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Host: "h"}); err == nil || saves.Load() != 1 {
		t.Errorf("save snapshot: %v after %d requests, want one request and its error", err, saves.Load())
	}
	if err := v.LoadDedup(ctx); !errors.Is(err, vault.ErrKeyUnavailable) || dedups.Load() != 1 {
		t.Errorf("key unavailable: %v after %d requests, want one request (not a transient failure)", err, dedups.Load())
	}
	// The server going away: refused connections are retried, then
	// reported.
	srv.Close()
	if _, err := v.Snapshots(ctx); err == nil {
		t.Error("a closed server answered")
	}
}
