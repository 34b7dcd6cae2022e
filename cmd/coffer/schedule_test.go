package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestScheduleSystemd: schedule install writes a service and a timer unit
// into $XDG_CONFIG_HOME/systemd/user that run this binary by its absolute
// path with absolute paths, the backup flags and the environment that
// finds the vault, the token only as a file reference; list shows it,
// remove deletes it. Where systemd is the init system the timer is
// enabled; elsewhere (this container) that part is skipped with a note.
func TestScheduleSystemd(t *testing.T) {
	e := newEnv(t)
	cfg := t.TempDir()
	e.setenv("XDG_CONFIG_HOME", cfg)
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("cft_secret_token_value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	e.setenv("COFFER_PASSWORD_FILE", pwFile)
	src := t.TempDir()
	using := "systemd"
	out, errOut, code := coffer(t, e, "schedule", "install", "--using", using, "--every", "1h", "--name", "docs",
		src, "--tag", "nightly", "--exclude", "*.tmp", "--exclude", "100% $HOME", "--vault", "https://backup.example.com:8443/prod", "--token", "@"+tokFile)
	if code != exitOK {
		t.Fatalf("schedule install: exit %d\n%s%s", code, out, errOut)
	}
	dir := filepath.Join(cfg, "systemd", "user")
	svcB, err := os.ReadFile(filepath.Join(dir, "coffer-backup-docs.service"))
	if err != nil {
		t.Fatal(err)
	}
	timerB, err := os.ReadFile(filepath.Join(dir, "coffer-backup-docs.timer"))
	if err != nil {
		t.Fatal(err)
	}
	svc, timer := string(svcB), string(timerB)
	bin, _ := os.Executable()
	bin, _ = filepath.EvalSymlinks(bin)
	for _, want := range []string{
		"ExecStart=" + bin + " backup --no-progress ",
		`"--exclude=*.tmp" "--exclude=100%% $$HOME"`,
		"--tag=nightly",
		" " + src + "\n",
		"Environment=COFFER_HOME=" + e.home + "\n",
		"Environment=COFFER_VAULT=https://backup.example.com:8443/prod\n",
		"Environment=COFFER_TOKEN=@" + tokFile + "\n",
		"Environment=COFFER_PASSWORD_FILE=" + pwFile + "\n",
	} {
		if !strings.Contains(svc, want) {
			t.Errorf("service lacks %q:\n%s", want, svc)
		}
	}
	if strings.Contains(svc, "cft_secret") || strings.Contains(svc, "--vault") || strings.Contains(svc, "--token") {
		t.Errorf("the service carries a token or global flags on its command line:\n%s", svc)
	}
	if !strings.Contains(timer, "OnUnitActiveSec=60min") {
		t.Errorf("timer:\n%s", timer)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "coffer-backup-docs.service")); fi.Mode().Perm() != 0o600 {
		t.Errorf("service mode %v, want 0600", fi.Mode().Perm())
	}
	if list := mustCoffer(t, e, "schedule", "list", "--using", using); !strings.Contains(list, "docs  every 60min") {
		t.Errorf("schedule list:\n%s", list)
	}

	if _, err := os.Stat("/run/systemd/system"); err == nil {
		if out, err := exec.Command("systemctl", "--user", "list-timers", "--all").CombinedOutput(); err == nil {
			t.Logf("systemctl --user list-timers:\n%s", out) // the unit is in a temporary XDG_CONFIG_HOME systemd does not read
		}
	} else if !strings.Contains(errOut, "enable it where systemd runs") {
		t.Errorf("without systemd, install should say how to enable the timer: %s", errOut)
	} else {
		t.Log("systemd is not the init system here: systemctl list-timers is not checked")
	}

	// A raw token is refused, and nothing is written.
	_, errOut, code = coffer(t, e, "schedule", "install", "--using", using, "--every", "1h", "--name", "leak", src, "--token", "cft_secret_token_value")
	if code != exitFailure || !strings.Contains(errOut, "--token @FILE") || strings.Contains(errOut, "cft_secret") {
		t.Errorf("raw token: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "coffer-backup-leak.service")); err == nil {
		t.Error("a schedule with a raw token was written")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--every", "1h", src, "--stdin"}, "no standard input"},
		{[]string{"--every", "1m", src}, "at least 5m0s"},
		{[]string{src}, "--every"},
		{[]string{"--every", "1h", src, "--no-such-flag"}, "unknown flag"},
		{[]string{"--every", "1h", "--name", "Bad/Name", src}, "schedule name"},
	} {
		_, errOut, code := coffer(t, e, append([]string{"schedule", "install", "--using", using}, c.args...)...)
		if code != exitFailure || !strings.Contains(errOut, c.want) {
			t.Errorf("install %q: exit %d, %s; want %q", c.args, code, errOut, c.want)
		}
	}

	// A unit of the same name not written by coffer is left alone.
	os.WriteFile(filepath.Join(dir, "coffer-backup-mine.timer"), []byte("[Timer]\n"), 0o600)
	if _, errOut, code := coffer(t, e, "schedule", "install", "--using", using, "--every", "1h", "--name", "mine", src); code != exitFailure || !strings.Contains(errOut, "not written by coffer") {
		t.Errorf("foreign unit: exit %d, %s", code, errOut)
	}
	if _, errOut, code := coffer(t, e, "schedule", "remove", "--using", using, "mine"); code != exitFailure || !strings.Contains(errOut, "not written by coffer") {
		t.Errorf("remove foreign unit: exit %d, %s", code, errOut)
	}

	mustCoffer(t, e, "schedule", "remove", "--using", using, "docs")
	if _, err := os.Stat(filepath.Join(dir, "coffer-backup-docs.timer")); err == nil {
		t.Error("schedule remove left the timer")
	}
	if list := mustCoffer(t, e, "schedule", "list", "--using", using); strings.Contains(list, "docs") {
		t.Errorf("schedule list after remove:\n%s", list)
	}
}
