package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// loginEnv starts a server with vault prod and user alice (password
// "correct horse battery", backup-contributor on prod), and returns an
// environment with no token set and a clock at the real time (the token's
// expiry is the server's).
func loginEnv(t *testing.T) (*servertest.Env, *testEnv) {
	t.Helper()
	srv := servertest.Start(t)
	e := newEnv(t)
	e.clock = time.Now()
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL)
	if _, errOut, code := cofferIn(t, e, "correct horse battery\n", "user", "create", "alice", "--password-stdin", "--vault", srv.URL); code != exitOK {
		t.Fatalf("user create: %s", errOut)
	}
	mustCoffer(t, e, "role", "assign", "--principal", "alice", "--role", "backup-contributor", "--vault", "prod", "--vault", srv.URL)
	e.setenv("COFFER_TOKEN", "")
	return srv, e
}

// TestLoginSave: login --save keeps the token (0600, in a 0700 directory
// under $COFFER_HOME) instead of printing it; later commands against that
// server use it when no token is given, and never send it to another
// server; an expired or exposed saved token is an error saying what to do.
func TestLoginSave(t *testing.T) {
	srv, e := loginEnv(t)
	out, errOut, code := cofferIn(t, e, "correct horse battery\n", "login", "alice", "--save", "--vault", srv.URL)
	if code != exitOK {
		t.Fatalf("login --save: exit %d, %s", code, errOut)
	}
	if strings.Contains(out, "cft_") || strings.Contains(errOut, "cft_") {
		t.Errorf("login --save printed the token: %q %q", out, errOut)
	}
	files, _ := filepath.Glob(filepath.Join(e.home, "tokens", "*"))
	if len(files) != 1 {
		t.Fatalf("saved token files: %v", files)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("saved token mode: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Dir(files[0])); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("token directory mode: %v %v", fi.Mode(), err)
	}
	// Used when no token is given, for this server.
	if out := mustCoffer(t, e, "snapshots", "--vault", srv.URL+"/prod"); !strings.Contains(out, "no snapshots") {
		t.Errorf("snapshots with the saved token: %q", out)
	}
	// --token still wins: a wrong one fails rather than falling back.
	if _, _, code := coffer(t, e, "snapshots", "--vault", srv.URL+"/prod", "--token", "cft_wrong"); code != exitFailure {
		t.Errorf("a wrong --token fell back to the saved one")
	}
	// Another server (a different host:port) never gets it.
	other := servertest.Start(t)
	e.setenv("COFFER_CACERT", other.CAFile)
	if _, errOut, code := coffer(t, e, "snapshots", "--vault", other.URL+"/prod"); code != exitFailure || !strings.Contains(errOut, "give a token") {
		t.Errorf("another server: exit %d, %q (the saved token must not be sent there)", code, errOut)
	}
	e.setenv("COFFER_CACERT", srv.CAFile)

	// Readable by others: refused, with what to do.
	os.Chmod(files[0], 0o644)
	if _, errOut, code := coffer(t, e, "snapshots", "--vault", srv.URL+"/prod"); code != exitFailure || !strings.Contains(errOut, "not a private file") {
		t.Errorf("a saved token readable by others: exit %d, %q", code, errOut)
	}
	os.Chmod(files[0], 0o600)
	// Expired: an error naming the way out.
	e.mu.Lock()
	e.clock = e.clock.Add(13 * time.Hour)
	e.mu.Unlock()
	if _, errOut, code := coffer(t, e, "snapshots", "--vault", srv.URL+"/prod"); code != exitFailure || !strings.Contains(errOut, "expired") || !strings.Contains(errOut, "coffer login alice --save") {
		t.Errorf("an expired saved token: exit %d, %q", code, errOut)
	}
}

// TestLoginFromStdinPrintsToken: without a terminal and without --save,
// login reads the password from stdin and prints the token once, saving
// nothing.
func TestLoginFromStdinPrintsToken(t *testing.T) {
	srv, e := loginEnv(t)
	out, errOut, code := cofferIn(t, e, "correct horse battery\n", "login", "alice", "--vault", srv.URL)
	if code != exitOK || !strings.HasPrefix(strings.TrimSpace(out), "cft_") {
		t.Fatalf("login: exit %d, %q %q", code, out, errOut)
	}
	if files, _ := filepath.Glob(filepath.Join(e.home, "tokens", "*")); len(files) != 0 {
		t.Errorf("login without --save saved %v", files)
	}
}
