package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: writes to tty can be read from
// pty, and tty is a terminal to term.IsTerminal.
func openPTY(t *testing.T) (pty, tty *os.File) {
	t.Helper()
	p, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(p.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		p.Close()
		t.Skipf("unlock pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(p.Fd()), unix.TIOCGPTN)
	if err != nil {
		p.Close()
		t.Skipf("pseudo-terminal number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		p.Close()
		t.Skipf("open pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { s.Close(); p.Close() })
	// No output processing: a "\r" read from pty is one coffer wrote,
	// not the line discipline's translation of "\n".
	if tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS); err == nil {
		tio.Oflag &^= unix.OPOST
		unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio)
	}
	return p, s
}

// terminal is a person's side of a pseudo-terminal on which a command
// runs: what the command wrote to tty (the screen), and keys typed into
// it. It waits for what it expects to see, with no time limit of its own:
// the command ending first fails the test, and a command that hangs is
// stopped by the test binary's -timeout.
type terminal struct {
	pty, tty *os.File
	ttyFD    int // tty's descriptor, taken before a command runs on it

	mu      sync.Mutex
	screen  bytes.Buffer
	changed chan struct{} // closed when the screen changes, then replaced
	done    chan struct{} // closed when everything written to tty was read
}

func newTerminal(t *testing.T) *terminal {
	t.Helper()
	pty, tty := openPTY(t)
	term := &terminal{pty: pty, tty: tty, ttyFD: int(tty.Fd()), changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(term.done)
		buf := make([]byte, 4096)
		for {
			n, err := pty.Read(buf)
			term.mu.Lock()
			term.screen.Write(buf[:n])
			close(term.changed)
			term.changed = make(chan struct{})
			term.mu.Unlock()
			if err != nil { // EIO once tty is closed and drained
				return
			}
		}
	}()
	return term
}

// run runs coffer with args on the terminal, in the background; its exit
// code arrives on the channel once the command ended and the terminal
// was closed.
func (term *terminal) run(e *testEnv, args ...string) (stdout *bytes.Buffer, code <-chan int) {
	var out bytes.Buffer
	c := make(chan int, 1)
	go func() {
		n := runWith(context.Background(), args, term.tty, &out, term.tty, e.getenv, e.now)
		term.tty.Close() // the screen ends: term.done closes once it is read
		c <- n
	}()
	return &out, c
}

// shown returns what the screen shows.
func (term *terminal) shown() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.screen.String()
}

// waitUntil waits until ok holds for the screen; it fails the test if the
// command ends first.
func (term *terminal) waitUntil(t *testing.T, what string, ok func(screen string) bool) {
	t.Helper()
	for {
		term.mu.Lock()
		screen, changed := term.screen.String(), term.changed
		term.mu.Unlock()
		if ok(screen) {
			return
		}
		select {
		case <-changed:
		case <-term.done:
			if !ok(term.shown()) {
				t.Fatalf("the command ended before %s: %q", what, term.shown())
			}
			return
		}
	}
}

// waitFor waits until the screen shows s.
func (term *terminal) waitFor(t *testing.T, s string) {
	t.Helper()
	term.waitUntil(t, fmt.Sprintf("the terminal showed %q", s), func(screen string) bool { return strings.Contains(screen, s) })
}

// typeSecret types s and a newline once the terminal stops echoing, so
// that an echoed secret can only be coffer's doing (coffer turns echo off
// before it prompts: TestSecretPromptAfterEchoOff).
func (term *terminal) typeSecret(t *testing.T, s string) {
	t.Helper()
	for {
		select {
		case <-term.done:
			t.Fatalf("the command ended before reading %q: %q", s, term.shown())
		default:
		}
		tio, err := unix.IoctlGetTermios(term.ttyFD, unix.TCGETS)
		if err != nil {
			t.Fatalf("terminal settings: %v", err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
		time.Sleep(time.Millisecond) // echo is a terminal setting: nothing signals its change
	}
	term.pty.Write([]byte(s + "\n"))
}
