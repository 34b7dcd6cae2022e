// Package schedule renders periodic backups as systemd service and timer
// units or as crontab lines, and reads back the ones it wrote
// (coffer schedule install, list, remove).
package schedule

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Job is one scheduled command.
type Job struct {
	// Name is the job's name: lowercase letters, digits, - and _.
	Name string
	// Every is the period between runs.
	Every time.Duration
	// Command is the program (an absolute path) and its arguments.
	Command []string
	// Env is the environment the command runs with, in this order. It
	// holds references (a token file, a password file), never secrets.
	Env [][2]string
}

// Marker starts every file and line this package writes, so that list
// and remove touch nothing else.
const Marker = "coffer-schedule"

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,39}$`)

// MinEvery is the shortest period.
const MinEvery = 5 * time.Minute

// Check reports what is wrong with j.
func (j Job) Check() error {
	if !validName.MatchString(j.Name) {
		return fmt.Errorf("schedule name %q: use 1 to 40 lowercase letters, digits, - and _", j.Name)
	}
	if j.Every < MinEvery {
		return fmt.Errorf("--every %v: at least %v", j.Every, MinEvery)
	}
	if j.Every%time.Minute != 0 {
		return fmt.Errorf("--every %v: a whole number of minutes", j.Every)
	}
	if len(j.Command) == 0 || !strings.HasPrefix(j.Command[0], "/") {
		return errors.New("schedule: the command must be an absolute path")
	}
	for _, a := range append(slices.Clone(j.Command), envStrings(j.Env)...) {
		for _, r := range a {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("schedule: argument %q holds a control character (a newline?): a unit file or crontab line cannot carry it", a)
			}
		}
	}
	for _, kv := range j.Env {
		if !regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`).MatchString(kv[0]) {
			return fmt.Errorf("schedule: environment name %q", kv[0])
		}
	}
	return nil
}

func envStrings(env [][2]string) []string {
	var out []string
	for _, kv := range env {
		out = append(out, kv[0], kv[1])
	}
	return out
}

// UnitName is the base name of j's systemd units (.service, .timer).
func UnitName(name string) string { return "coffer-backup-" + name }

// systemdQuote quotes one word for ExecStart= (exec true) or
// Environment= (systemd.service(5) "Command lines", systemd.exec(5),
// systemd.syntax(7)): specifiers (%) are escaped, and variables ($) in a
// command line (Environment= expands none), and a word with anything but
// plain characters is double-quoted with \ and " escaped. The first word
// of a command line is an absolute path (Job.Check), so none of the
// prefixes that change how it runs (-, @, :, +, !) can start it.
func systemdQuote(s string, exec bool) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if exec {
		s = strings.ReplaceAll(s, "$", "$$")
	}
	if s != "" && regexp.MustCompile(`^[A-Za-z0-9/._=:,@+%-]+$`).MatchString(s) {
		return s
	}
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	return `"` + s + `"`
}

// Service returns j's systemd service unit.
func (j Job) Service() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s %s: written by coffer schedule install; coffer schedule remove %s deletes it\n", Marker, j.Name, j.Name)
	b.WriteString("[Unit]\n")
	fmt.Fprintf(&b, "Description=Coffer backup %s\n", j.Name)
	b.WriteString("Wants=network-online.target\nAfter=network-online.target\n\n")
	b.WriteString("[Service]\nType=oneshot\n")
	for _, kv := range j.Env {
		fmt.Fprintf(&b, "Environment=%s\n", systemdQuote(kv[0]+"="+kv[1], false))
	}
	words := make([]string, len(j.Command))
	for i, w := range j.Command {
		words[i] = systemdQuote(w, true)
	}
	fmt.Fprintf(&b, "ExecStart=%s\n", strings.Join(words, " "))
	b.WriteString("Nice=10\nIOSchedulingClass=idle\n")
	return b.String()
}

// Timer returns j's systemd timer unit: first run 5 minutes after boot
// (or after it is started), then every j.Every after the last run began.
func (j Job) Timer() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s %s: written by coffer schedule install; coffer schedule remove %s deletes it\n", Marker, j.Name, j.Name)
	b.WriteString("[Unit]\n")
	fmt.Fprintf(&b, "Description=Coffer backup %s every %s\n\n", j.Name, Every(j.Every))
	b.WriteString("[Timer]\nOnActiveSec=5min\nOnBootSec=5min\n")
	fmt.Fprintf(&b, "OnUnitActiveSec=%dmin\n", int(j.Every/time.Minute))
	b.WriteString("RandomizedDelaySec=60\n")
	fmt.Fprintf(&b, "Unit=%s.service\n\n", UnitName(j.Name))
	b.WriteString("[Install]\nWantedBy=timers.target\n")
	return b.String()
}

// Every formats a period as coffer schedule takes it: 90m, 2h, 1d.
func Every(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%dm", d/time.Minute)
}

// ParseEvery reads a period: a Go duration (90m, 2h30m) or days (1d, 7d).
func ParseEvery(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err == nil && fmt.Sprint(days) == n && days > 0 && days <= 366 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
		return 0, fmt.Errorf("--every %q: want a duration such as 30m, 1h, 1d", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--every %q: want a duration such as 30m, 1h, 1d", s)
	}
	return d, nil
}

// shellQuote quotes one word for sh.
func shellQuote(s string) string {
	if s != "" && regexp.MustCompile(`^[A-Za-z0-9/._=:,@+-]+$`).MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// CronLine returns j as one crontab line, ending with a comment that
// names it. Cron knows only calendar fields, so the period must divide an
// hour (5m … 30m), a day (1h … 12h), or be whole days up to a week.
func (j Job) CronLine() (string, error) {
	var when string
	switch m := int(j.Every / time.Minute); {
	case m < 60 && 60%m == 0:
		when = fmt.Sprintf("*/%d * * * *", m)
	case m == 60:
		when = "17 * * * *"
	case m < 24*60 && m%60 == 0 && 24%(m/60) == 0:
		when = fmt.Sprintf("17 */%d * * *", m/60)
	case m == 24*60:
		when = "17 3 * * *"
	case m == 7*24*60:
		when = "17 3 * * 0"
	default:
		return "", fmt.Errorf("--every %s: cron can only run a backup every 5, 10, 15, 20 or 30 minutes, every 1, 2, 3, 4, 6, 8 or 12 hours, daily or weekly; choose one of those", Every(j.Every))
	}
	var words []string
	for _, kv := range j.Env {
		words = append(words, kv[0]+"="+shellQuote(kv[1]))
	}
	for _, w := range j.Command {
		words = append(words, shellQuote(w))
	}
	// % ends the command in a crontab line unless escaped.
	cmd := strings.ReplaceAll(strings.Join(words, " "), "%", `\%`)
	return fmt.Sprintf("%s %s # %s %s every %s", when, cmd, Marker, j.Name, Every(j.Every)), nil
}

// CronName returns the name of the job a crontab line of this package
// holds, and whether it is one.
func CronName(line string) (string, bool) {
	i := strings.LastIndex(line, "# "+Marker+" ")
	if i < 0 {
		return "", false
	}
	f := strings.Fields(line[i+len(Marker)+3:])
	if len(f) == 0 || !validName.MatchString(f[0]) {
		return "", false
	}
	return f[0], true
}

// UnitJobName returns the name of the job a unit file's text was written
// for, and whether it was written by this package.
func UnitJobName(text string) (string, bool) {
	first, _, _ := strings.Cut(text, "\n")
	f := strings.Fields(first)
	if len(f) < 3 || f[0] != "#" || f[1] != Marker {
		return "", false
	}
	name := strings.TrimSuffix(f[2], ":")
	return name, validName.MatchString(name)
}
