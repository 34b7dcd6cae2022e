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
// as well: the same backup of a million files peaked at 48 MB of
// file-backed RSS with a freshly linked binary and at 32 MB with its
// pages dropped (docs/performance.md, "Memory").
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
