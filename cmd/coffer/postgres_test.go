package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
)

// TestServerCommandPostgres runs `coffer server` with its catalog in
// PostgreSQL, named by COFFER_CATALOG: it serves, keeps no catalog file
// in the data directory, and a second server on the same catalog and
// data directory serves the vault the first created. --catalog refuses
// anything but a postgres:// URL.
func TestServerCommandPostgres(t *testing.T) {
	url := pgtest.URL(t)
	data := filepath.Join(t.TempDir(), "data")
	e := newEnv(t)
	e.setenv("COFFER_CATALOG", url)
	start := func() (string, func()) {
		t.Helper()
		var out, log lockedBuffer
		addrc := make(chan string, 1)
		a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &log, getenv: e.getenv, now: time.Now,
			onListen: func(addr string) { addrc <- addr }}
		root := newRootCmd(a)
		root.SetArgs([]string{"server", "--data", data, "--listen", "127.0.0.1:0"})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- root.ExecuteContext(ctx) }()
		select {
		case addr := <-addrc:
			return "https://" + addr, func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("server stopped with %v", err)
				}
			}
		case err := <-done:
			cancel()
			t.Fatalf("server exited: %v\n%s", err, log.String())
		case <-time.After(30 * time.Second):
			cancel()
			t.Fatal("server did not start")
		}
		return "", nil
	}
	first, stopFirst := start()
	defer stopFirst()
	second, stopSecond := start()
	defer stopSecond()
	tokFile := filepath.Join(data, "initial-owner-token")
	e.setenv("COFFER_CACERT", filepath.Join(data, "tls", "ca.pem"))
	mustCoffer(t, e, "vault", "create", "prod", "--vault", first, "--token", "@"+tokFile)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("through the second server"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-operator", "--vault", second+"/prod", "--token", "@"+tokFile))
	mustCoffer(t, e, "backup", src, "--vault", second+"/prod", "--token", tok)
	if out := mustCoffer(t, e, "snapshots", "--vault", first+"/prod", "--token", tok); !strings.Contains(out, src) {
		t.Errorf("the first server does not list the snapshot made through the second:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(data, "catalog.db")); err == nil {
		t.Error("a server on PostgreSQL made a SQLite catalog in its data directory")
	}

	e.setenv("COFFER_CATALOG", "")
	if _, errOut, code := coffer(t, e, "server", "--data", t.TempDir(), "--catalog", "mysql://db/coffer"); code == 0 || !strings.Contains(errOut, "postgres://") {
		t.Errorf("--catalog mysql://: exit %d, %q; want refused, naming postgres://", code, errOut)
	}
}
