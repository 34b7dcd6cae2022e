package main

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// uncacheExecutable drops the pages of the test binary that no process
// maps from the page cache, as they are once an installed binary has been
// run a few times. Just after the link every page of the file is cached,
// and a process's page faults then map the cached pages around each one
// as well: a first backup of 100,000 small files by this test's binary
// peaked at 49 MB of file-backed RSS (135.8 MiB in all) just after the
// link and at 35 MB (120.5 MiB) with its pages written back and dropped
// (docs/performance.md, "The budget").
func uncacheExecutable(t *testing.T) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Pages not yet written back stay cached: write them first.
	if err := f.Sync(); err != nil {
		t.Logf("syncing the test binary: %v", err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Logf("dropping the test binary's cached pages: %v", err)
	}
}
