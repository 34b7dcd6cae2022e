package main

import "golang.org/x/sys/unix"

// echoOff turns the terminal's echo off and returns what restores its
// settings. On failure it does nothing: term.ReadPassword still turns echo
// off, only after the prompt.
func echoOff(fd int) (restore func()) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return func() {}
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
}
