package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLoginOnATerminal: on a terminal, login asks for the password without
// echoing it, then offers to save the token; a yes saves it and prints no
// token.
func TestLoginOnATerminal(t *testing.T) {
	srv, e := loginEnv(t)
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
	waitFor := func(s string) {
		t.Helper()
		for range 500 { // at most 10 s
			mu.Lock()
			ok := strings.Contains(screen.String(), s)
			mu.Unlock()
			if ok {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the terminal never showed %q: %q", s, screen.String())
	}
	e.tick()
	var out bytes.Buffer
	codec := make(chan int, 1)
	go func() {
		codec <- runWith(context.Background(), []string{"login", "alice", "--vault", srv.URL}, tty, &out, tty, e.getenv, e.now)
	}()
	waitFor("password for alice: ")
	pty.Write([]byte("correct horse battery\n"))
	waitFor("[y/N] ")
	pty.Write([]byte("y\n"))
	code := <-codec
	tty.Close()
	<-done
	mu.Lock()
	shown := screen.String()
	mu.Unlock()
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
