package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
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

// echoWatch is the screen seen through a check: it records whether the
// terminal still echoed when coffer wrote a secret's prompt.
type echoWatch struct {
	tty      *os.File
	fd       int
	mu       sync.Mutex
	echoedAt []string // prompts written while echo was on
}

func (w *echoWatch) Write(p []byte) (int, error) {
	s := string(p)
	if strings.Contains(s, "password for") || strings.Contains(s, "passphrase") {
		tio, err := unix.IoctlGetTermios(w.fd, unix.TCGETS)
		if err != nil || tio.Lflag&unix.ECHO != 0 {
			w.mu.Lock()
			w.echoedAt = append(w.echoedAt, s)
			w.mu.Unlock()
		}
	}
	return w.tty.Write(p)
}

// TestSecretPromptAfterEchoOff: a secret's prompt is written only once the
// terminal no longer echoes, so a password typed or pasted the moment the
// prompt appears is never shown on the screen.
func TestSecretPromptAfterEchoOff(t *testing.T) {
	srv, e := loginEnv(t)
	term := newTerminal(t)
	e.tick()
	w := &echoWatch{tty: term.tty, fd: term.ttyFD}
	codec := make(chan int, 1)
	go func() {
		var out bytes.Buffer
		n := runWith(context.Background(), []string{"login", "alice", "--vault", srv.URL}, term.tty, &out, w, e.getenv, e.now)
		term.tty.Close()
		codec <- n
	}()
	term.waitFor(t, "password for alice: ")
	term.pty.Write([]byte("correct horse battery\n")) // at once, as a paste would
	// stderr is not the terminal itself here, so login offers no save.
	code := <-codec
	<-term.done
	if code != exitOK {
		t.Fatalf("login: exit %d, terminal %q", code, term.shown())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.echoedAt) > 0 {
		t.Errorf("prompts written while the terminal echoed: %q", w.echoedAt)
	}
	if strings.Contains(term.shown(), "correct horse") {
		t.Errorf("the password was echoed: %q", term.shown())
	}
}
