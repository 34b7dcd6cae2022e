package schedule

import (
	"strings"
	"testing"
	"time"
)

func job() Job {
	return Job{
		Name: "docs", Every: time.Hour,
		Command: []string{"/usr/local/bin/coffer", "backup", "--no-progress", "--exclude=*.tmp", "/home/me/My Docs", `/a"b\c`, "/100%", "/$HOME"},
		Env:     [][2]string{{"COFFER_HOME", "/home/me/.local/share/coffer"}, {"COFFER_PASSWORD_COMMAND", "pass show 'coffer %h' $X"}},
	}
}

// TestServiceQuoting: every argument reaches ExecStart and Environment= as
// one word with its bytes intact: spaces and quotes quoted, % (a systemd
// specifier) doubled, $ doubled where systemd would expand it (command
// lines) and left alone where it would not (Environment=).
func TestServiceQuoting(t *testing.T) {
	svc := job().Service()
	for _, want := range []string{
		`ExecStart=/usr/local/bin/coffer backup --no-progress "--exclude=*.tmp" "/home/me/My Docs" "/a\"b\\c" /100%% "/$$HOME"`,
		`Environment=COFFER_HOME=/home/me/.local/share/coffer`,
		`Environment="COFFER_PASSWORD_COMMAND=pass show 'coffer %%h' $X"`,
		"Type=oneshot",
	} {
		if !strings.Contains(svc, want) {
			t.Errorf("service lacks %q:\n%s", want, svc)
		}
	}
	if n, ok := UnitJobName(svc); !ok || n != "docs" {
		t.Errorf("UnitJobName = %q, %v", n, ok)
	}
	tm := job().Timer()
	for _, want := range []string{"OnUnitActiveSec=60min", "Unit=coffer-backup-docs.service", "WantedBy=timers.target"} {
		if !strings.Contains(tm, want) {
			t.Errorf("timer lacks %q:\n%s", want, tm)
		}
	}
}

func TestCronLine(t *testing.T) {
	l, err := job().CronLine()
	if err != nil {
		t.Fatal(err)
	}
	want := `17 * * * * COFFER_HOME=/home/me/.local/share/coffer COFFER_PASSWORD_COMMAND='pass show '\''coffer \%h'\'' $X' /usr/local/bin/coffer backup --no-progress '--exclude=*.tmp' '/home/me/My Docs' '/a"b\c' '/100\%' '/$HOME' # coffer-schedule docs every 1h`
	if l != want {
		t.Errorf("cron line\n got %s\nwant %s", l, want)
	}
	if n, ok := CronName(l); !ok || n != "docs" {
		t.Errorf("CronName = %q, %v", n, ok)
	}
	for every, want := range map[time.Duration]string{15 * time.Minute: "*/15 * * * *", 6 * time.Hour: "17 */6 * * *", 24 * time.Hour: "17 3 * * *", 7 * 24 * time.Hour: "17 3 * * 0"} {
		j := job()
		j.Every = every
		if l, err := j.CronLine(); err != nil || !strings.HasPrefix(l, want+" ") {
			t.Errorf("every %v: %q, %v; want %q", every, l, err, want)
		}
	}
	j := job()
	j.Every = 7 * time.Hour
	if _, err := j.CronLine(); err == nil {
		t.Error("every 7h rendered for cron, which cannot run it")
	}
}

// TestCheckRefuses: a newline in an argument would start a new unit
// directive or crontab line; names and periods are checked.
func TestCheckRefuses(t *testing.T) {
	for name, mod := range map[string]func(*Job){
		"newline in a path": func(j *Job) { j.Command = append(j.Command, "/tmp/x\nExecStartPost=/bin/evil") },
		"newline in env":    func(j *Job) { j.Env = append(j.Env, [2]string{"COFFER_VAULT", "a\n[Service]"}) },
		"bad name":          func(j *Job) { j.Name = "../x" },
		"too often":         func(j *Job) { j.Every = time.Minute },
		"relative binary":   func(j *Job) { j.Command[0] = "coffer" },
		"bad env name":      func(j *Job) { j.Env = append(j.Env, [2]string{"A=B", "c"}) },
	} {
		j := job()
		mod(&j)
		if err := j.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := job().Check(); err != nil {
		t.Errorf("a good job: %v", err)
	}
	for in, want := range map[string]time.Duration{"1h": time.Hour, "90m": 90 * time.Minute, "1d": 24 * time.Hour} {
		if d, err := ParseEvery(in); err != nil || d != want {
			t.Errorf("ParseEvery(%q) = %v, %v", in, d, err)
		}
	}
	for _, bad := range []string{"", "0", "-1h", "1x", "d", "0d", "1.5d"} {
		if _, err := ParseEvery(bad); err == nil {
			t.Errorf("ParseEvery(%q) accepted", bad)
		}
	}
}
