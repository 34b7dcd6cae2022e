package localcopy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrBusy: another process is updating the cache.
var ErrBusy = errors.New("another backup is updating the local copies")

const lockName = "lock"

// lock takes the cache directory's lock: exclusive for a backup (which
// writes and prunes; a second backup at the same time makes no local
// copy rather than wait), shared for a reader (which waits for a backup
// that is pruning, so that nothing it reads is deleted under it). The
// lock file holds nothing.
func lock(dir string, exclusive bool, waiting func()) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local-copy cache: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local-copy cache: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		if exclusive {
			f.Close()
			return nil, ErrBusy
		}
		if waiting != nil {
			waiting()
		}
		err = unix.Flock(int(f.Fd()), how)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("local-copy cache: lock: %w", err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
