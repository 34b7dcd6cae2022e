package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestLoginOnATerminal: on a terminal, login asks for the password without
// echoing it, then offers to save the token; a yes saves it and prints no
// token.
func TestLoginOnATerminal(t *testing.T) {
	srv, e := loginEnv(t)
	term := newTerminal(t)
	e.tick()
	out, codec := term.run(e, "login", "alice", "--vault", srv.URL)
	term.waitFor(t, "password for alice: ")
	term.typeSecret(t, "correct horse battery")
	term.waitFor(t, "[y/N] ")
	term.pty.Write([]byte("y\n"))
	code := <-codec
	<-term.done
	shown := term.shown()
	if code != exitOK {
		t.Fatalf("login on a terminal: exit %d, terminal %q", code, shown)
	}
	if strings.Contains(shown, "correct horse") {
		t.Errorf("the password was echoed: %q", shown)
	}
	if strings.Contains(out.String(), "cft_") || strings.Contains(shown, "cft_") {
		t.Errorf("a saved token was printed: %q %q", out.String(), shown)
	}
	if files, _ := filepath.Glob(filepath.Join(e.home, "tokens", "*")); len(files) != 1 {
		t.Fatalf("saved tokens: %v", files)
	}
	if out := mustCoffer(t, e, "snapshots", "--vault", srv.URL+"/prod"); !strings.Contains(out, "no snapshots") {
		t.Errorf("snapshots with the token saved at the terminal: %q", out)
	}
}
