package passphrase

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/coffer-backup/coffer/internal/vault"
)

// maxFileSize bounds what is read as a passphrase.
const maxFileSize = 4 << 10

// FromFile reads a passphrase from the file at path: its first line,
// without the line ending (as restic's --password-file). A missing or
// unreadable file, or an empty passphrase, fails with
// vault.ErrKeyUnavailable naming the file: moving the file away is how a
// machine's access is revoked.
func FromFile(path string) (Passphrase, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Passphrase{}, fmt.Errorf("%w: password file %s does not exist", vault.ErrKeyUnavailable, path)
		}
		return Passphrase{}, fmt.Errorf("%w: password file %s: %v", vault.ErrKeyUnavailable, path, errors.Unwrap(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	defer clear(b)
	if err != nil {
		return Passphrase{}, fmt.Errorf("%w: read password file %s: %v", vault.ErrKeyUnavailable, path, errors.Unwrap(err))
	}
	if len(b) > maxFileSize {
		return Passphrase{}, fmt.Errorf("%w: password file %s is larger than %d bytes: it should hold one line", vault.ErrKeyUnavailable, path, maxFileSize)
	}
	p := FirstLine(b)
	if p.Empty() {
		return Passphrase{}, fmt.Errorf("%w: password file %s holds no passphrase", vault.ErrKeyUnavailable, path)
	}
	return p, nil
}

// FirstLine is the passphrase in b: up to the first newline, without a
// carriage return before it.
func FirstLine(b []byte) Passphrase {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	b = bytes.TrimSuffix(b, []byte("\r"))
	return NewPassphrase(b)
}
