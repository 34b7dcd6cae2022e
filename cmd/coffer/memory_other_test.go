//go:build !linux

package main

import "testing"

// uncacheExecutable is memory_linux_test.go's; elsewhere the page cache is
// left as it is.
func uncacheExecutable(t *testing.T) { t.Helper() }
