package main

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for the coffer binary: the crash
// and concurrency tests re-execute it with COFFER_TEST_MAIN=1 so that a
// child process runs exactly what main runs, and can be killed. With
// COFFER_TEST_HWM set it writes the process's peak RSS since exec (the
// VmHWM line of /proc/self/status) to that file as it ends: getrusage's
// ru_maxrss would report at least the test process's own RSS, which the
// child inherits through the exec (TestMemoryBudget).
func TestMain(m *testing.M) {
	if os.Getenv("COFFER_TEST_MAIN") == "1" {
		code := run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
		if path := os.Getenv("COFFER_TEST_HWM"); path != "" {
			if b, err := os.ReadFile("/proc/self/status"); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(l, "VmHWM:") {
						_ = os.WriteFile(path, []byte(l), 0o600)
					}
				}
			}
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}
