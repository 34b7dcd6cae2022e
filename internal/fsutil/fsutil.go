// Package fsutil holds the few file-system steps that several packages
// need to make writes durable.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// TempPrefix starts the names of WriteFileSync's temporary files, so that
// callers can recognise (and remove) those a crash left behind.
const TempPrefix = ".tmp-"

// WriteFileSync writes b to path durably: into a temporary file in the
// same directory, synced, renamed over path, and the directory synced.
// A crash leaves either the old file or the new one (and perhaps the
// temporary file), never a torn one. The file has mode before any byte is
// written to it.
func WriteFileSync(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}
