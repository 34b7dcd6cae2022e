//go:build unix

package fsutil

import (
	"errors"
	"os"
	"syscall"
)

// SyncDir fsyncs a directory so that entries created in or removed from it
// are durable. Filesystems that cannot sync directories (EINVAL, ENOTSUP)
// are tolerated.
func SyncDir(dir string) error {
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
