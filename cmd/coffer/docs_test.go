package main

import (
	"os"
	"path/filepath"
	"regexp"
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

// TestAuditDocNamesRealOps: docs/audit.md names operations as `audit log`
// shows them: routes (METHOD /path-pattern) and what the server does by
// itself (key.<event>, vault.<event>, reads.summary, refused.summary).
func TestAuditDocNamesRealOps(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "audit.md"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"reads.summary": true, "refused.summary": true}
	for _, f := range []string{"routes.go"} {
		src, err := os.ReadFile(filepath.Join(root, "internal", "server", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`pattern: "([^"]+)"`).FindAllStringSubmatch(string(src), -1) {
			known[m[1]] = true
		}
	}
	vsrc, err := os.ReadFile(filepath.Join(root, "internal", "vault", "vault.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*(KeyEvent|Event)[A-Za-z]+\s*=\s*"([a-z-]+)"`).FindAllStringSubmatch(string(vsrc), -1) {
		if m[1] == "KeyEvent" {
			known["key."+m[2]] = true
		} else {
			known["vault."+m[2]] = true
		}
	}
	if len(known) < 40 {
		t.Fatalf("found only %d operations in the code", len(known))
	}
	text := string(doc)
	// The op row of the entry table: every example is a real op.
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "| `op` |") {
			continue
		}
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(line, -1)[1:] {
			if !known[m[1]] {
				t.Errorf("docs/audit.md gives op %q, which audit log never shows", m[1])
			}
		}
	}
	// Every route it names in full exists.
	for _, m := range regexp.MustCompile("`((?:GET|POST|PUT|DELETE) /[^`…]+)`").FindAllStringSubmatch(text, -1) {
		if !known[m[1]] {
			t.Errorf("docs/audit.md names route %q, which the server does not have", m[1])
		}
	}
	// Dotted op names it mentions are real.
	for _, m := range regexp.MustCompile("`((?:key|vault|reads|refused|snapshot|token|blob)\\.[a-z-]+)`").FindAllStringSubmatch(text, -1) {
		if !known[m[1]] {
			t.Errorf("docs/audit.md names op %q, which audit log never shows", m[1])
		}
	}
}

// TestDocsSpeakOfTheProduct: the documents describe the product as it is,
// never the issues it was built in ("the S3 issue", "issue 7", "in a later
// release"). docs/security.md is checked by its own test.
func TestDocsSpeakOfTheProduct(t *testing.T) {
	root := filepath.Join("..", "..")
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files = append(files, filepath.Join(root, "README.md"))
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	bad := regexp.MustCompile(`(?i)\bthe [a-z0-9#-]+ issue\b|\bissue #?\d+\b|\bissues? (?:tracker|number)|\b(?:in|with) a later release\b|\bcomes? (?:later|in a later)`)
	for _, f := range files {
		if filepath.Base(f) == "security.md" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := bad.FindString(line); m != "" {
				t.Errorf("%s:%d speaks of %q: %s", filepath.Base(f), i+1, m, line)
			}
		}
	}
}
