package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// TestRemoteAgentHostAndLatest: an agent's backups are recorded under
// its name (a conflicting --host is refused), and "latest" cannot be
// taken over by another machine's newer backup: an agent's "latest" is
// its own, and --host names whose "latest" to take.
func TestRemoteAgentHostAndLatest(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "vault", "create", "prod")
	web := strings.TrimSpace(mustCoffer(t, e, "source", "add", "web01"))
	evil := strings.TrimSpace(mustCoffer(t, e, "source", "add", "evil"))

	webSrc, evilSrc := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(webSrc, "f"), []byte("web01's data"), 0o644)
	writeFile(t, filepath.Join(evilSrc, "f"), []byte("evil's data"), 0o644)

	e.setenv("COFFER_TOKEN", web)
	failsWith(t, e, "agent web01", "backup", webSrc, "--host", "laptop")
	out := mustCoffer(t, e, "backup", "--json", webSrc)
	var rec struct {
		Host string `json:"host"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || rec.Host != "web01" {
		t.Errorf("agent web01's backup recorded host %q (%v), want web01", rec.Host, err)
	}
	e.setenv("COFFER_TOKEN", evil)
	mustCoffer(t, e, "backup", "--json", evilSrc) // newer than web01's

	restored := func(args ...string) []byte {
		t.Helper()
		dst := t.TempDir()
		mustCoffer(t, e, append([]string{"restore", "latest", "--target", dst}, args...)...)
		for _, src := range []string{webSrc, evilSrc} {
			if b, err := os.ReadFile(filepath.Join(dst, src, "f")); err == nil {
				return b
			}
		}
		t.Fatalf("restore %v restored neither source", args)
		return nil
	}
	e.setenv("COFFER_TOKEN", web)
	if got := restored(); !bytes.Equal(got, []byte("web01's data")) {
		t.Errorf("agent web01's restore latest gave %q, want its own data", got)
	}
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	if got := restored("--host", "web01"); !bytes.Equal(got, []byte("web01's data")) {
		t.Errorf("restore latest --host web01 gave %q, want web01's data", got)
	}
	failsWith(t, e, `no snapshot of host "nohost"`, "ls", "latest", "--host", "nohost")
}
