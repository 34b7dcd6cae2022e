package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPassphraseOnATerminal: vault create --key passphrase: asks twice
// without echo, and a later command asks once; the passphrase is never
// shown.
func TestPassphraseOnATerminal(t *testing.T) {
	e := newEnv(t)
	run := func(args []string, typed ...string) (int, string) {
		t.Helper()
		pty, tty := openPTY(t)
		var mu sync.Mutex
		var screen bytes.Buffer
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 4096)
			for {
				n, err := pty.Read(buf)
				mu.Lock()
				screen.Write(buf[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		shown := func() string { mu.Lock(); defer mu.Unlock(); return screen.String() }
		e.tick()
		var out bytes.Buffer
		codec := make(chan int, 1)
		go func() { codec <- runWith(context.Background(), args, tty, &out, tty, e.getenv, e.now) }()
		prompts := 0
		for _, s := range typed {
			for i := 0; i < 500 && strings.Count(shown(), ": ") <= prompts; i++ {
				time.Sleep(20 * time.Millisecond)
			}
			prompts = strings.Count(shown(), ": ")
			pty.Write([]byte(s + "\n"))
		}
		code := <-codec
		tty.Close()
		<-done
		return code, shown() + out.String()
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
