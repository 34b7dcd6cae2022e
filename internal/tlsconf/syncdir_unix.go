//go:build unix

package tlsconf

import (
	"errors"
	"os"
	"syscall"
)

// syncDir fsyncs a directory so that a rename into it is durable.
// Filesystems that cannot sync directories (EINVAL, ENOTSUP) are tolerated.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}
