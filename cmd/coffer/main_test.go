package main

import (
	"context"
	"os"
	"testing"
)

// TestMain lets the test binary stand in for the coffer binary: the crash
// and concurrency tests re-execute it with COFFER_TEST_MAIN=1 so that a
// child process runs exactly what main runs, and can be killed.
func TestMain(m *testing.M) {
	if os.Getenv("COFFER_TEST_MAIN") == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
