package main

import (
	"fmt"
	"os"
	"testing"

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
