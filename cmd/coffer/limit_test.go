package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// TestBandwidthLimitFlags: --limit-upload and --limit-download (and their
// environment variables) pace a backup and a restore against a vault
// server; a bad value is refused before anything is done; on a local
// vault they are a note, not silently ignored. The limit's accuracy is
// internal/client's TestBandwidthLimits.
func TestBandwidthLimitFlags(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "big"), randBytes(5, 3<<20), 0o644)

	start := time.Now()
	mustCoffer(t, e, "backup", src, "--limit-upload", "1MiB")
	if took := time.Since(start); took < 2*time.Second {
		// 3 MiB (incompressible) at 1 MiB/s cannot take less than 2 s
		// (the first bucket is an eighth of a second's worth).
		t.Errorf("backup of 3 MiB at --limit-upload 1MiB took %v", took)
	}
	e.setenv("COFFER_LIMIT_DOWNLOAD", "1M/s")
	start = time.Now()
	mustCoffer(t, e, "restore", "latest", "--target", filepath.Join(t.TempDir(), "r"))
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("restore of 3 MiB at COFFER_LIMIT_DOWNLOAD=1M/s took %v", took)
	}
	e.setenv("COFFER_LIMIT_DOWNLOAD", "")

	for _, bad := range []string{"fast", "-1M", "10X"} {
		_, errOut, code := coffer(t, e, "snapshots", "--limit-upload", bad)
		if code != exitFailure || !strings.Contains(errOut, "--limit-upload") {
			t.Errorf("--limit-upload %s: exit %d, %s", bad, code, errOut)
		}
	}

	l := newEnv(t)
	_, errOut, code := coffer(t, l, "backup", src, "--limit-upload", "1M")
	if code != exitOK || !strings.Contains(errOut, "apply to vault servers") {
		t.Errorf("local vault with a limit: exit %d, %s", code, errOut)
	}
}
