package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestPassphraseOnATerminal: vault create --key passphrase: asks twice
// without echo, and a later command asks once; the passphrase is never
// shown.
func TestPassphraseOnATerminal(t *testing.T) {
	e := newEnv(t)
	run := func(args []string, typed ...string) (int, string) {
		t.Helper()
		term := newTerminal(t)
		e.tick()
		out, codec := term.run(e, args...)
		prompts := 0
		for _, s := range typed {
			term.waitUntil(t, fmt.Sprintf("prompt %d", prompts+1), func(screen string) bool { return strings.Count(screen, ": ") > prompts })
			prompts = strings.Count(term.shown(), ": ")
			term.typeSecret(t, s)
		}
		code := <-codec
		<-term.done
		return code, term.shown() + out.String()
	}
	const pass = "typed at the terminal, not echoed"
	code, screen := run([]string{"vault", "create", "laptop", "--single-user", "--key", "passphrase:"}, pass, pass)
	if code != exitOK {
		t.Fatalf("vault create on a terminal: exit %d: %q", code, screen)
	}
	if !strings.Contains(screen, "passphrase for the new vault key of laptop: ") || !strings.Contains(screen, "the same passphrase again: ") {
		t.Errorf("prompts: %q", screen)
	}
	code, screen2 := run([]string{"snapshots", "--vault", "laptop"}, pass)
	if code != exitOK {
		t.Fatalf("snapshots on a terminal: exit %d: %q", code, screen2)
	}
	code, screen3 := run([]string{"snapshots", "--vault", "laptop"}, "not it")
	if code != exitFailure || !strings.Contains(screen3, "wrong key") {
		t.Errorf("wrong passphrase typed: exit %d: %q", code, screen3)
	}
	for _, s := range []string{screen, screen2, screen3} {
		if strings.Contains(s, pass) || strings.Contains(s, "not it") {
			t.Errorf("a passphrase was echoed: %q", s)
		}
	}
}
