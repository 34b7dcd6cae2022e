package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// softHSM initialises a SoftHSM2 token with scripts/softhsm-setup.sh in a
// temporary directory and points the PKCS#11 library at it. It skips when
// SoftHSM2 is not installed, unless COFFER_REQUIRE_SERVICES is set.
func softHSM(t *testing.T) (dir string) {
	t.Helper()
	_, errMod := os.Stat(softhsmModule)
	_, errTool := exec.LookPath("pkcs11-tool")
	if errMod != nil || errTool != nil {
		if os.Getenv("COFFER_REQUIRE_SERVICES") != "" {
			t.Fatal("SoftHSM2 or opensc is not installed (apt-get install softhsm2 opensc); COFFER_REQUIRE_SERVICES is set")
		}
		t.Skip("SoftHSM2 or opensc not installed")
	}
	dir = filepath.Join(t.TempDir(), "hsm")
	out, err := exec.Command("../../scripts/softhsm-setup.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm-setup.sh: %v\n%s", err, out)
	}
	t.Setenv("SOFTHSM2_CONF", filepath.Join(dir, "softhsm2.conf"))
	return dir
}

// TestCustomerManagedKeyInHSM: the vault's keys are wrapped by an RSA key
// in a real PKCS#11 token; with the key object deleted, restore fails
// closed; with the token put back from a copy, restore works again with no
// repair; every pack stays as it was.
func TestCustomerManagedKeyInHSM(t *testing.T) {
	hsm := softHSM(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), randBytes(3, 150_000), 0o644)
	// Created explicitly, not single-user: leaving the customer's key is
	// then refused for want of a second person (below).
	mustCoffer(t, e, "vault", "create", "default")
	backupJSON(t, e, src)

	uri := "pkcs11:token=coffer;object=backup-kek?module-path=" + softhsmModule + "&pin-value=1234"
	// One-way on this vault (use-pmk needs a second person): --confirm.
	out := mustCoffer(t, e, "key", "use-cmk", uri, "--confirm")
	if !strings.Contains(out, "pkcs11:token=coffer;object=backup-kek") || strings.Contains(out, "pin-value=1234") {
		t.Errorf("use-cmk said %q", out)
	}
	show := mustCoffer(t, e, "vault", "show")
	if !strings.Contains(show, "customer-managed") || !strings.Contains(show, "pkcs11:token=coffer;object=backup-kek") {
		t.Errorf("vault show:\n%s", show)
	}
	mustCoffer(t, e, "restore", "latest", "--target", t.TempDir())

	// Revoke: delete the key object from the token (keeping a copy).
	tokens := filepath.Join(hsm, "tokens")
	if out, err := exec.Command("cp", "-a", tokens, tokens+".copy").CombinedOutput(); err != nil {
		t.Fatalf("copy token: %v %s", err, out)
	}
	for _, typ := range []string{"privkey", "pubkey"} {
		cmd := exec.Command("pkcs11-tool", "--module", softhsmModule, "--token-label", "coffer", "--login", "--pin", "1234",
			"--delete-object", "--type", typ, "--label", "backup-kek")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("delete %s: %v %s", typ, err, out)
		}
	}
	_, errOut, code := coffer(t, e, "restore", "latest", "--target", t.TempDir())
	if code != exitFailure || !strings.Contains(errOut, "key unavailable") || !strings.Contains(errOut, "backup-kek") || strings.Contains(errOut, "pin-value=1234") {
		t.Errorf("restore with the key deleted: exit %d, %q", code, errOut)
	}
	if out, _, code := coffer(t, e, "vault", "show"); code != exitFailure || !strings.Contains(out, "key reachable: NO") {
		t.Errorf("vault show with the key deleted: exit %d\n%s", code, out)
	}

	// Restore the token from its copy: everything works again.
	os.RemoveAll(tokens)
	if out, err := exec.Command("mv", tokens+".copy", tokens).CombinedOutput(); err != nil {
		t.Fatalf("restore token: %v %s", err, out)
	}
	dst := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", dst)
	if got, _ := os.ReadFile(filepath.Join(dst, src, "a")); len(got) != 150_000 {
		t.Errorf("restored %d bytes", len(got))
	}
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check: %q", out)
	}
	if log := mustCoffer(t, e, "key", "log"); strings.Contains(log, "pin-value=1234") || !strings.Contains(log, "use-cmk") || !strings.Contains(log, "key-recovered") {
		t.Errorf("key log:\n%s", log)
	}
	// Leaving the customer's key is critical: a vault with one principal
	// that is not single-user refuses it, and records the refusal.
	failsWith(t, e, "second person", "key", "use-pmk", "--confirm")
	if log := mustCoffer(t, e, "key", "log"); !strings.Contains(log, "refused") {
		t.Errorf("the refused use-pmk is not in the key log:\n%s", log)
	}
	// The URI with its PIN is kept beside the platform key file, 0600.
	matches, _ := filepath.Glob(filepath.Join(e.home, "keys", "cmk", "*.json"))
	if len(matches) != 1 {
		t.Fatalf("key configuration files: %v", matches)
	}
	if fi, _ := os.Stat(matches[0]); fi.Mode().Perm() != 0o600 {
		t.Errorf("key configuration mode %v", fi.Mode())
	}
}

// TestCustomerManagedKeyInHSMOnServer: the same on a vault server, which
// reaches the token itself: `key use-cmk` sends the URI, the server keeps
// it (0600) and loads only the module it was started with; deleting the
// key object fails restores once the server's key TTL has ended, and the
// token put back from a copy makes them work again.
func TestCustomerManagedKeyInHSMOnServer(t *testing.T) {
	hsm := softHSM(t)
	srv := servertest.StartWith(t, servertest.Options{Configure: func(o *server.Options) {
		o.KeyTTL = time.Hour
		o.PKCS11Modules = []string{softhsmModule}
	}})
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), randBytes(4, 150_000), 0o644)
	backupJSON(t, e, src)

	uri := "pkcs11:token=coffer;object=backup-kek?module-path=" + softhsmModule + "&pin-value=1234"
	if out := mustCoffer(t, e, "key", "use-cmk", uri); !strings.Contains(out, "keys rewrapped") || strings.Contains(out, "1234") {
		t.Errorf("use-cmk said %q", out)
	}
	if show := mustCoffer(t, e, "vault", "show"); !strings.Contains(show, "customer-managed") || !strings.Contains(show, "backup-kek") {
		t.Errorf("vault show:\n%s", show)
	}
	matches, _ := filepath.Glob(filepath.Join(srv.DataDir, "keys", "cmk", "*.json"))
	if len(matches) != 1 {
		t.Fatalf("server key configuration files: %v", matches)
	}
	if fi, _ := os.Stat(matches[0]); fi.Mode().Perm() != 0o600 {
		t.Errorf("server key configuration mode %v", fi.Mode())
	}

	tokens := filepath.Join(hsm, "tokens")
	if out, err := exec.Command("cp", "-a", tokens, tokens+".copy").CombinedOutput(); err != nil {
		t.Fatalf("copy token: %v %s", err, out)
	}
	for _, typ := range []string{"privkey", "pubkey"} {
		cmd := exec.Command("pkcs11-tool", "--module", softhsmModule, "--token-label", "coffer", "--login", "--pin", "1234",
			"--delete-object", "--type", typ, "--label", "backup-kek")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("delete %s: %v %s", typ, err, out)
		}
	}
	srv.Clock.Add(int64(2 * time.Hour)) // past the server's key TTL
	_, errOut, code := coffer(t, e, "restore", "latest", "--target", t.TempDir())
	if code != exitFailure || !strings.Contains(errOut, "key unavailable") || !strings.Contains(errOut, "backup-kek") || strings.Contains(errOut, "1234") {
		t.Errorf("restore with the key deleted: exit %d, %q", code, errOut)
	}
	if out, _, code := coffer(t, e, "vault", "show"); code != exitFailure || !strings.Contains(out, "key reachable: NO") {
		t.Errorf("vault show with the key deleted: exit %d\n%s", code, out)
	}

	os.RemoveAll(tokens)
	if out, err := exec.Command("mv", tokens+".copy", tokens).CombinedOutput(); err != nil {
		t.Fatalf("restore token: %v %s", err, out)
	}
	dst := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", dst)
	if got, _ := os.ReadFile(filepath.Join(dst, src, "a")); !bytes.Equal(got, randBytes(4, 150_000)) {
		t.Errorf("restored data differs")
	}
	if log := mustCoffer(t, e, "key", "log"); strings.Contains(log, "1234") || !strings.Contains(log, "key-unavailable") || !strings.Contains(log, "key-recovered") {
		t.Errorf("key log:\n%s", log)
	}
}
