package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"golang.org/x/term"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys/passphrase"
	"github.com/coffer-backup/coffer/internal/vault"
)

// A passphrase is read from a file, from a command's output, or from the
// terminal without echo; never from the command line, where other users
// see it (ps, /proc/PID/cmdline) and shells keep it in their history.
const (
	envPasswordFile       = "COFFER_PASSWORD_FILE"
	envPasswordCommand    = "COFFER_PASSWORD_COMMAND"
	envNewPasswordFile    = "COFFER_NEW_PASSWORD_FILE"
	envNewPasswordCommand = "COFFER_NEW_PASSWORD_COMMAND"
)

// passphraseURI is what `vault create --key` and `key use-cmk` take for
// passphrase slots.
func isPassphraseURI(uri string) bool { return uri == "passphrase:" || uri == "passphrase" }

// readPassphrase reads a vault's passphrase: $COFFER_PASSWORD_FILE, else
// the output of $COFFER_PASSWORD_COMMAND, else typed on the terminal. It
// returns where it came from, for messages.
func (a *app) readPassphrase(ctx context.Context, what string) (passphrase.Passphrase, string, error) {
	return a.passphraseFrom(ctx, envPasswordFile, envPasswordCommand, what, false)
}

// newPassphrase reads a passphrase for a new slot: $COFFER_NEW_PASSWORD_FILE
// or _COMMAND, else (for a vault's first passphrase only, orFallback)
// $COFFER_PASSWORD_FILE or _COMMAND, else typed twice on the terminal.
func (a *app) newPassphrase(ctx context.Context, what string, orFallback bool) (passphrase.Passphrase, string, error) {
	if a.getenv(envNewPasswordFile) != "" || a.getenv(envNewPasswordCommand) != "" || !orFallback {
		return a.passphraseFrom(ctx, envNewPasswordFile, envNewPasswordCommand, what, true)
	}
	return a.passphraseFrom(ctx, envPasswordFile, envPasswordCommand, what, true)
}

func (a *app) passphraseFrom(ctx context.Context, fileVar, cmdVar, what string, confirm bool) (passphrase.Passphrase, string, error) {
	if path := a.getenv(fileVar); path != "" {
		p, err := passphrase.FromFile(path)
		return p, fileVar + " " + path, err
	}
	if command := a.getenv(cmdVar); command != "" {
		p, err := a.passphraseCommand(ctx, cmdVar, command)
		return p, cmdVar, err
	}
	in, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return passphrase.Passphrase{}, "", fmt.Errorf("%w: %s needs a passphrase, and standard input is not a terminal: set %s to a file holding it (mode 0600), or %s to a command printing it", vault.ErrKeyUnavailable, what, fileVar, cmdVar)
	}
	b, err := readSecret(in, a.stderr, fmt.Sprintf("passphrase for %s: ", what))
	if err != nil {
		return passphrase.Passphrase{}, "", fmt.Errorf("read the passphrase: %w", err)
	}
	p := passphrase.FirstLine(b)
	clear(b)
	if confirm {
		b, err := readSecret(in, a.stderr, "the same passphrase again: ")
		if err != nil {
			return passphrase.Passphrase{}, "", fmt.Errorf("read the passphrase: %w", err)
		}
		again := passphrase.FirstLine(b)
		clear(b)
		if !again.Equal(p) {
			return passphrase.Passphrase{}, "", errors.New("the two passphrases differ: nothing was changed")
		}
	}
	return p, "the terminal", nil
}

// passphraseCommand runs command with sh -c and takes the first line of
// its output. Its standard error passes through; its exit status must be 0.
func (a *app) passphraseCommand(ctx context.Context, cmdVar, command string) (passphrase.Passphrase, error) {
	c := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	c.Stderr = a.stderr
	out, err := c.StdoutPipe()
	if err != nil {
		return passphrase.Passphrase{}, err
	}
	if err := c.Start(); err != nil {
		return passphrase.Passphrase{}, fmt.Errorf("%w: %s: %v", vault.ErrKeyUnavailable, cmdVar, err)
	}
	b, rerr := io.ReadAll(io.LimitReader(out, 4<<10))
	defer clear(b)
	io.Copy(io.Discard, out)
	if err := c.Wait(); err != nil {
		// SECURITY: the output is not shown: it may be the passphrase.
		return passphrase.Passphrase{}, fmt.Errorf("%w: %s failed: %v", vault.ErrKeyUnavailable, cmdVar, err)
	}
	if rerr != nil {
		return passphrase.Passphrase{}, rerr
	}
	p := passphrase.FirstLine(bytes.TrimRight(b, "\n"))
	if p.Empty() {
		return passphrase.Passphrase{}, fmt.Errorf("%w: %s printed no passphrase", vault.ErrKeyUnavailable, cmdVar)
	}
	return p, nil
}

// passphraseProvider opens the passphrase slots of the vault whose store
// is st with this user's passphrase.
func (a *app) passphraseProvider(ctx context.Context, st vault.Store, cat vault.Catalog, name string) (*passphrase.Provider, error) {
	w, err := engine.InspectRootWith(ctx, st, cat)
	if err != nil {
		return nil, err
	}
	set, err := passphrase.SlotsOf(w)
	if err != nil {
		return nil, err
	}
	pw, source, err := a.readPassphrase(ctx, "vault "+name)
	if err != nil {
		return nil, err
	}
	defer pw.Wipe()
	return passphrase.Open(set, pw, passphrase.Options{Source: source})
}

// createPassphraseProvider makes the first slot of a vault's passphrases.
func (a *app) createPassphraseProvider(ctx context.Context, name string) (*passphrase.Provider, error) {
	pw, source, err := a.newPassphrase(ctx, "the new vault key of "+name, true)
	if err != nil {
		return nil, err
	}
	defer pw.Wipe()
	return passphrase.Create(pw, passphrase.Options{Source: source})
}
