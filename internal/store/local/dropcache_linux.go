package local

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropPages asks the kernel to drop f's cached pages in [off, off+n).
// Only whole pages inside the range go, and only clean ones, so a page
// shared with a neighbouring blob stays. It is advice: an error changes
// nothing that matters and is ignored.
func dropPages(f *os.File, off, n int64) {
	_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}
