package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// TestUnknownSubcommandFails: a subcommand that does not exist is an
// error (exit 1) that points at the command's own help, never help and 0.
func TestUnknownSubcommandFails(t *testing.T) {
	for _, args := range [][]string{{"key", "list"}, {"vault", "lst"}, {"audit", "frob"}, {"key", "rotate", "extra", "args", "x"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			e := newEnv(t)
			out, errOut, code := coffer(t, e, args...)
			if code != exitFailure {
				t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if out != "" {
				t.Errorf("printed help on stdout: %q", out)
			}
			help := "`coffer " + args[0] + " --help`"
			if args[0] == "key" && args[1] == "rotate" {
				help = "`coffer key rotate --help`"
			}
			if !strings.Contains(errOut, help) {
				t.Errorf("the error does not point at %s: %q", help, errOut)
			}
		})
	}
	// A group alone still shows its help.
	e := newEnv(t)
	if out, _, code := coffer(t, e, "key"); code != exitOK || !strings.Contains(out, "use-cmk") {
		t.Errorf("coffer key: exit %d, %q", code, out)
	}
}

// TestUsageErrorsPointAtTheirHelp: a wrong flag or argument count names
// the subcommand's help, not only the program's.
func TestUsageErrorsPointAtTheirHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		help string
	}{
		{[]string{"backup"}, "`coffer backup --help`"},
		{[]string{"snapshots", "--frobnicate"}, "`coffer snapshots --help`"},
		{[]string{"vault", "set", "a", "b"}, "`coffer vault set --help`"},
		{[]string{"frobnicate"}, "`coffer --help`"},
	} {
		e := newEnv(t)
		_, errOut, code := coffer(t, e, c.args...)
		if code != exitFailure || !strings.Contains(errOut, c.help) {
			t.Errorf("%v: exit %d, %q lacks %s", c.args, code, errOut, c.help)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	e := newEnv(t)
	out, errOut, code := coffer(t, e, "--version")
	if code != exitOK || out != "coffer "+version+"\n" {
		t.Fatalf("--version: exit %d, %q %q", code, out, errOut)
	}
}

// TestOneOfEachSaysItInTheSingular: a vault with one file and one snapshot
// must not be described as "1 snapshots" or "1 snapshot(s)".
func TestOneOfEachSaysItInTheSingular(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "one")
	writeFile(t, filepath.Join(src, "only.txt"), []byte("x\n"), 0o644)
	var all strings.Builder
	run := func(args ...string) {
		out, errOut, code := coffer(t, e, args...)
		if code != exitOK {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
		all.WriteString(out + errOut)
	}
	run("backup", src)
	run("snapshots")
	run("check", "--read-data")
	run("restore", "latest", "--target", t.TempDir())
	run("forget", "latest")
	run("snapshots", "--deleted")
	run("prune", "--dry-run")
	run("vault", "show")
	bad := regexp.MustCompile(`\b1 [a-zA-Z-]+?(s|\(s\))\b|\(s\)`)
	for _, line := range strings.Split(all.String(), "\n") {
		if m := bad.FindString(line); m != "" && !strings.Contains(line, src) {
			t.Errorf("%q in %q", m, line)
		}
	}
}

// TestNoRawGoDurations: durations reach people as "2 h", never as Go's
// "2h0m0s".
func TestNoRawGoDurations(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_KEK_ROTATION", "2h")
	data := smallData(t)
	mustCoffer(t, e, "backup", data)
	e.mu.Lock()
	e.clock = e.clock.Add(3 * time.Hour)
	e.mu.Unlock()
	out, errOut, code := coffer(t, e, "backup", data)
	if code != exitOK || !strings.Contains(errOut, "platform key rotated") {
		t.Fatalf("backup after the rotation period: exit %d, %q", code, errOut)
	}
	raw := regexp.MustCompile(`\b\d+h\d+m\d+s\b|\b\d+(\.\d+)?(ms|µs|s)\b|\b\d+m\d+(\.\d+)?s\b`)
	for _, s := range []string{out, errOut, mustCoffer(t, e, "key", "log"), mustCoffer(t, e, "login", "--help"), mustCoffer(t, e, "server", "--help")} {
		if m := raw.FindString(s); m != "" {
			t.Errorf("raw Go duration %q in:\n%s", m, s)
		}
	}
}

// TestTableTimesHaveAZone: a time in a table says which zone it is in.
func TestTableTimesHaveAZone(t *testing.T) {
	e := newEnv(t)
	mustCoffer(t, e, "backup", smallData(t))
	zone := time.Now().In(time.Local).Format("MST")
	for _, args := range [][]string{{"snapshots"}, {"forget", "latest"}, {"snapshots", "--deleted"}} {
		out := mustCoffer(t, e, args...)
		times := regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?( [A-Z+-][A-Za-z0-9+-]*)?`).FindAllStringSubmatch(out, -1)
		if len(times) == 0 {
			t.Fatalf("%v printed no time:\n%s", args, out)
		}
		for _, m := range times {
			if strings.TrimSpace(m[2]) != zone {
				t.Errorf("%v: time %q has no zone (want %s)", args, m[0], zone)
			}
		}
	}
}

// TestNoDuplicatedPrefix: an error names its subject once.
func TestNoDuplicatedPrefix(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	for _, args := range [][]string{{"vault", "show"}, {"snapshots"}, {"key", "status"}, {"vault", "set", "--soft-delete-days", "20"}} {
		_, errOut, code := coffer(t, e, append(args, "--vault", srv.URL+"/nope")...)
		if code != exitFailure || !strings.Contains(errOut, "nope") {
			t.Errorf("%v on a missing vault: exit %d, %q", args, code, errOut)
		}
		if strings.Count(errOut, `"nope"`) > 1 || strings.Count(errOut, "nope") > 2 {
			t.Errorf("%v: the vault is named more than once: %q", args, errOut)
		}
	}
}
