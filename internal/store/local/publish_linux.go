package local

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/vault"
)

// publish renames tmp to final unless final exists (vault.ErrExists). On
// failure tmp is left in place.
func (s *Store) publish(tmp, final string) error {
	if !s.noRenameat2.Load() {
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EEXIST):
			return vault.ErrExists
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
			// The kernel or this filesystem does not support the flag.
			s.noRenameat2.Store(true)
		default:
			return &os.LinkError{Op: "renameat2", Old: tmp, New: final, Err: err}
		}
	}
	return linkPublish(tmp, final)
}
