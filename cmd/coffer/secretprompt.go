package main

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// readSecret prompts on w and reads a line from the terminal in without
// echoing it. Echo is turned off before the prompt is written (where the
// platform allows it, see echoOff), so keys typed or pasted the moment the
// prompt appears are never shown.
func readSecret(in *os.File, w io.Writer, prompt string) ([]byte, error) {
	fd := int(in.Fd())
	restore := echoOff(fd)
	defer restore()
	fmt.Fprint(w, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(w)
	return b, err
}
