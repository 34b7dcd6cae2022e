package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/coffer-backup/coffer/internal/fsutil"
)

// savedToken is a token `coffer login --save` keeps for later commands
// against the same server: $COFFER_HOME/tokens/<hash of the server URL>,
// mode 0600 in a 0700 directory.
type savedToken struct {
	Server    string    `json:"server"` // https://host:port, lower case: the only server it is sent to
	Principal string    `json:"principal"`
	ID        string    `json:"id"`
	Expires   time.Time `json:"expires"`
	Secret    string    `json:"secret"`
}

// tokenKey is the server a saved token belongs to, as compared: the
// scheme and host:port, lower case.
func tokenKey(server string) string { return strings.ToLower(strings.TrimRight(server, "/")) }

func (a *app) tokenPath(server string) (string, error) {
	home, err := a.cofferHome()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(tokenKey(server)))
	return filepath.Join(home, "tokens", hex.EncodeToString(sum[:16])+".json"), nil
}

// saveToken writes t for server: a temporary file (0600) renamed into
// place, so that a crash leaves the old token or the new one.
func (a *app) saveToken(t savedToken) (string, error) {
	p, err := a.tokenPath(t.Server)
	if err != nil {
		return "", err
	}
	t.Server = tokenKey(t.Server)
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	f, err := os.CreateTemp(dir, ".tmp-token-")
	if err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	defer os.Remove(f.Name())
	if err = f.Chmod(0o600); err == nil {
		_, err = f.Write(append(b, '\n'))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	} else {
		f.Close()
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err == nil {
		err = fsutil.SyncDir(dir)
	}
	if err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	return p, nil
}

// loadToken returns the token saved for server, or "" when there is none.
// An expired one, or one others could read, is an error that says what to
// do: never silently another identity.
func (a *app) loadToken(server string) (string, error) {
	p, err := a.tokenPath(server)
	if err != nil {
		return "", nil // no home: no saved token
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("saved token %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("saved token %s is not a private file (mode %v): remove it and run coffer login --save again", p, fi.Mode())
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("saved token %s: %w", p, err)
	}
	var t savedToken
	if err := json.Unmarshal(b, &t); err != nil || t.Secret == "" {
		return "", fmt.Errorf("saved token %s is damaged: remove it and run coffer login --save again", p)
	}
	// SECURITY: a token goes only to the server that issued it.
	if t.Server != tokenKey(server) {
		return "", nil
	}
	if !t.Expires.IsZero() && !a.now().Before(t.Expires) {
		return "", fmt.Errorf("the token coffer login saved for %s (%s) expired at %s: run coffer login %s --save again", t.Server, safeText(t.Principal), t.Expires.Local().Format(time.RFC3339), safeText(t.Principal))
	}
	return t.Secret, nil
}

// loginPassword reads the password: typed at a terminal without echo
// (prompted on stderr), else the first line of standard input.
func (a *app) loginPassword(name string) (string, error) {
	if in, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(in.Fd())) {
		b, err := readSecret(in, a.stderr, fmt.Sprintf("password for %s: ", safeText(name)))
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if len(b) == 0 {
			return "", errors.New("no password given")
		}
		return string(b), nil
	}
	return a.readPassword()
}
