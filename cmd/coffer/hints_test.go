package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestHintsNameRealCommands: the commands that remediation texts, errors
// and hints tell a user to run exist, with the flags they name. A hint
// naming a command coffer does not have ("coffer protect --soft-delete
// on") sends the user, or an auditor reading a posture report, nowhere.
func TestHintsNameRealCommands(t *testing.T) {
	root := filepath.Join("..", "..")
	dirs := []string{"internal/posture", "internal/server", "internal/engine", "internal/localcopy", "internal/srcvol", "cmd/coffer"}
	cmdRe := regexp.MustCompile("(?:^|[\\s(`'\"])coffer ([a-z][a-z-]*(?: [^\\s,;:()`'\"]+)*)")
	a := &app{getenv: func(string) string { return "" }}
	rootCmd := newRootCmd(a)
	checked := 0
	for _, d := range dirs {
		files, err := filepath.Glob(filepath.Join(root, d, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			fs := token.NewFileSet()
			af, err := parser.ParseFile(fs, f, src, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(af, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					return true
				}
				for _, m := range cmdRe.FindAllStringSubmatch(s, -1) {
					words := strings.Fields(m[1])
					cmd := rootCmd
					depth := 0
					for _, w := range words {
						if strings.HasPrefix(w, "-") {
							break
						}
						sub, _, err := cmd.Find([]string{w})
						if err != nil || sub == cmd {
							break
						}
						cmd, depth = sub, depth+1
					}
					if depth == 0 {
						// "coffer backs up…": prose, not a command, unless it
						// names a flag.
						if slices.ContainsFunc(words[1:], func(w string) bool { return strings.HasPrefix(w, "--") }) {
							t.Errorf("%s: %q names no coffer command", fs.Position(lit.Pos()), "coffer "+m[1])
						}
						continue
					}
					checked++
					for _, w := range words[depth:] {
						if !strings.HasPrefix(w, "--") {
							continue
						}
						for _, name := range strings.Split(w, "/") {
							name = strings.TrimPrefix(name, "--")
							name, _, _ = strings.Cut(name, "=")
							name = strings.TrimRight(name, ".")
							if name == "" || name == "help" || name == "version" {
								continue
							}
							if !hasFlag(rootCmd, cmd, name) {
								t.Errorf("%s: %q: %q has no flag --%s", fs.Position(lit.Pos()), "coffer "+m[1], cmd.CommandPath(), name)
							}
						}
					}
				}
				return true
			})
		}
	}
	if checked < 40 {
		t.Errorf("only %d hints checked: the scan finds nothing", checked)
	}
}

// hasFlag reports whether cmd takes --name; schedule install also takes
// every flag of the backup it installs.
func hasFlag(root, cmd *cobra.Command, name string) bool {
	for _, c := range []*cobra.Command{cmd, root} {
		if c.Flags().Lookup(name) != nil || c.InheritedFlags().Lookup(name) != nil || c.PersistentFlags().Lookup(name) != nil {
			return true
		}
	}
	if cmd.CommandPath() == "coffer schedule install" {
		if b, _, err := root.Find([]string{"backup"}); err == nil && b.Flags().Lookup(name) != nil {
			return true
		}
	}
	return false
}
