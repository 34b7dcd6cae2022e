package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoSaysWhatItBuilds: the README's first command must not sit silent
// for minutes while the first build downloads and compiles dependencies; it
// says what it is doing before it builds.
func TestDemoSaysWhatItBuilds(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "scripts", "demo.sh"))
	if err != nil {
		t.Fatal(err)
	}
	said := false
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "echo ") && strings.Contains(line, "building coffer") {
			said = true
		}
		if strings.HasPrefix(line, "go build") {
			if !said {
				t.Fatalf("scripts/demo.sh runs %q before saying what it is doing", line)
			}
			return
		}
	}
	t.Fatal("scripts/demo.sh does not build coffer")
}
