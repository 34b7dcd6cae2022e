package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// cofferIn runs the CLI with stdin.
func cofferIn(t *testing.T, e *testEnv, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	e.tick()
	var out, errb bytes.Buffer
	code = runWith(context.Background(), args, strings.NewReader(stdin), &out, &errb, e.getenv, e.now)
	return out.String(), errb.String(), code
}

// TestUsersAndRoles: principals get roles on the server or one vault and
// tokens (by login or issued), and may do exactly what their roles allow;
// a revoked role stops working at once; the first security approver comes
// from the server machine and further ones need an approver's approval;
// repeated failed logins are refused for a while.
func TestUsersAndRoles(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL)
	mustCoffer(t, e, "vault", "create", "prod")
	mustCoffer(t, e, "vault", "create", "other")

	if out, errOut, code := cofferIn(t, e, "correct horse battery\n", "user", "create", "alice", "--password-stdin"); code != exitOK || !strings.Contains(out, "user alice created") {
		t.Fatalf("user create: %d %s %s", code, out, errOut)
	}
	mustCoffer(t, e, "role", "assign", "--principal", "alice", "--role", "backup-contributor", "--vault", "prod")
	if out := mustCoffer(t, e, "role", "list", "--vault", "prod"); !strings.Contains(out, "alice") || !strings.Contains(out, "backup-contributor") {
		t.Errorf("role list:\n%s", out)
	}
	out, errOut, code := cofferIn(t, e, "correct horse battery\n", "login", "alice")
	if code != exitOK {
		t.Fatalf("login: %s", errOut)
	}
	alice := strings.TrimSpace(out)

	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"), 0o644)
	as := func(tok string, args ...string) []string { return append(args, "--token", tok) }
	id := backupJSON(t, e, as(alice, src, "--vault", srv.URL+"/prod")...)
	// With COFFER_VAULT naming the server, --vault prod is its vault
	// prod, for data commands as for the others; a directory stays local.
	backupJSON(t, e, as(alice, src, "--vault", "prod")...)
	var snaps []snapshotJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, as(alice, "snapshots", "--json", "--vault", srv.URL+"/prod")...)), &snaps); err != nil || len(snaps) != 2 {
		t.Errorf("after a backup with --vault prod the server's vault has %d snapshots (%v), want 2", len(snaps), err)
	}
	if _, err := os.Stat(filepath.Join(e.home, "vaults", "prod")); !os.IsNotExist(err) {
		t.Errorf("--vault prod made a local vault: %v", err)
	}
	mustCoffer(t, e, as(alice, "vault", "set", "--soft-delete-days", "30", "--vault", srv.URL+"/prod")...)
	mustCoffer(t, e, as(alice, "forget", id[:8], "--vault", srv.URL+"/prod")...)
	for _, args := range [][]string{
		{"vault", "delete", "prod"},
		{"key", "status", "--vault", srv.URL + "/prod"},
		{"role", "assign", "--principal", "alice", "--role", "owner"},
		{"snapshots", "--vault", srv.URL + "/other"},
		{"token", "list"},
	} {
		failsWith(t, e, "forbidden", as(alice, args...)...)
	}
	if _, errOut, _ := coffer(t, e, as(alice, "key", "status", "--vault", srv.URL+"/prod")...); !strings.Contains(errOut, "user:alice") {
		t.Errorf("a refusal does not name the principal: %s", errOut)
	}

	// An agent with an issued token.
	mustCoffer(t, e, "user", "create", "web01", "--agent")
	mustCoffer(t, e, "role", "assign", "--principal", "web01", "--role", "backup-operator", "--vault", "prod")
	web := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--principal", "web01", "--name", "web01"))
	webID := backupJSON(t, e, as(web, src, "--vault", srv.URL+"/prod")...)
	failsWith(t, e, "forbidden", as(web, "forget", webID[:8], "--vault", srv.URL+"/prod")...)

	// A backup-contributor adds sources, which back up but do no more.
	src2 := strings.TrimSpace(mustCoffer(t, e, as(alice, "source", "add", "db01", "--vault", srv.URL+"/prod")...))
	backupJSON(t, e, as(src2, src, "--vault", srv.URL+"/prod")...)
	failsWith(t, e, "forbidden", as(src2, "vault", "set", "--soft-delete-days", "60", "--vault", srv.URL+"/prod")...)
	failsWith(t, e, "forbidden", as(alice, "source", "add", "db02", "--vault", srv.URL+"/other")...)

	// Revocation takes effect with the next request.
	mustCoffer(t, e, "role", "revoke", "--principal", "web01", "--role", "backup-operator", "--vault", "prod")
	failsWith(t, e, "forbidden", as(web, "snapshots", "--vault", srv.URL+"/prod")...)

	// Security approvers: the first from the server machine, the next by
	// approval.
	failsWith(t, e, "server machine", "role", "assign", "--principal", "alice", "--role", "security-approver")
	cofferIn(t, e, "carol's long passphrase\n", "user", "create", "carol", "--password-stdin")
	mustCoffer(t, e, "server", "assign-approver", "--data", srv.DataDir, "--principal", "carol")
	req := requestID(t, mustCoffer(t, e, "role", "assign", "--principal", "alice", "--role", "security-approver"))
	// The password the owner gave carol does not make her logins approve:
	// only one set on the server machine does.
	out, _, _ = cofferIn(t, e, "carol's long passphrase\n", "login", "carol")
	failsWith(t, e, "server machine", as(strings.TrimSpace(out), "approve", req)...)
	if _, errOut, code := cofferIn(t, e, "carol's own passphrase\n", "server", "assign-approver", "--data", srv.DataDir, "--principal", "carol", "--password-stdin"); code != exitOK {
		t.Fatalf("assign-approver --password-stdin: %s", errOut)
	}
	out, _, _ = cofferIn(t, e, "carol's own passphrase\n", "login", "carol")
	carol := strings.TrimSpace(out)
	if out := mustCoffer(t, e, as(carol, "approve", req)...); !strings.Contains(out, "approved") {
		t.Errorf("approve: %s", out)
	}
	if out := mustCoffer(t, e, "role", "list", "--principal", "alice"); !strings.Contains(out, "security-approver") {
		t.Errorf("alice is not an approver after approval:\n%s", out)
	}

	// Guessing passwords: refused for a while after ten failures.
	for range 10 {
		cofferIn(t, e, "wrong password!!\n", "login", "alice")
	}
	_, errOut, _ = cofferIn(t, e, "correct horse battery\n", "login", "alice")
	if !strings.Contains(errOut, "too many failed") {
		t.Errorf("the eleventh login attempt: %s", errOut)
	}
}
