package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/schedule"
)

func newScheduleCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Run backups periodically (systemd timers, else cron)",
		Long: `Install, list and remove periodic backups. With systemd they are a service and
a timer unit (per user in $XDG_CONFIG_HOME/systemd/user, or for the machine
with --system as root); without it, a line in your crontab.`,
	}
	cmd.AddCommand(newScheduleInstallCmd(a), newScheduleListCmd(a), newScheduleRemoveCmd(a))
	return cmd
}

// scheduler is where schedules go: systemd units or a crontab.
type scheduler struct {
	a       *app
	systemd bool
	system  bool   // systemd: /etc/systemd/system, systemctl without --user
	dir     string // systemd: the unit directory
}

func (a *app) scheduler(using string, system bool) (*scheduler, error) {
	s := &scheduler{a: a, system: system}
	switch using {
	case "systemd":
		s.systemd = true
	case "cron":
	case "", "auto":
		// sd_booted(3): systemd is the init system.
		_, err := os.Stat("/run/systemd/system")
		s.systemd = err == nil
	default:
		return nil, fmt.Errorf("--using %q: systemd or cron", using)
	}
	if system && !s.systemd {
		return nil, errors.New("--system installs systemd units for the machine; without systemd, use root's crontab (run as root without --system)")
	}
	if system && os.Geteuid() != 0 {
		return nil, errors.New("--system writes /etc/systemd/system: run it as root (or leave --system out for a timer of your own)")
	}
	if s.systemd {
		switch {
		case system:
			s.dir = "/etc/systemd/system"
		case a.getenv("XDG_CONFIG_HOME") != "":
			s.dir = filepath.Join(a.getenv("XDG_CONFIG_HOME"), "systemd", "user")
		default:
			home := a.getenv("HOME")
			if home == "" {
				h, err := os.UserHomeDir()
				if err != nil {
					return nil, errors.New("cannot find your home for the systemd user units: set XDG_CONFIG_HOME or HOME")
				}
				home = h
			}
			s.dir = filepath.Join(home, ".config", "systemd", "user")
		}
	}
	return s, nil
}

// systemctl runs systemctl (--user unless system); a failure is reported
// with the command to run by hand, and returned.
func (s *scheduler) systemctl(ctx context.Context, args ...string) error {
	if !s.system {
		args = append([]string{"--user"}, args...)
	}
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// scheduleEnv are the variables a scheduled backup keeps from the
// installing command's environment: where things are and references to
// secrets (files, commands), never a secret itself.
var scheduleEnv = []string{
	"COFFER_HOST", "COFFER_KEK_ROTATION", "COFFER_CACERT", "COFFER_FINGERPRINT",
	"COFFER_PASSWORD_FILE", "COFFER_PASSWORD_COMMAND", "COFFER_LIMIT_UPLOAD", "COFFER_LIMIT_DOWNLOAD",
	"HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
}

// scheduleJob builds the job from the install command's flags, the
// environment and the backup's arguments (paths and backup flags).
func (a *app) scheduleJob(name, every string, backupArgs []string, global *pflag.FlagSet) (schedule.Job, error) {
	var j schedule.Job
	d, err := schedule.ParseEvery(every)
	if err != nil {
		return j, err
	}
	// The backup's arguments are checked as backup itself would read
	// them, and written back absolute and canonical: a timer runs in /.
	bc := newBackupCmd(a)
	bf := bc.Flags()
	// coffer's global flags (--vault, --token …) may follow the paths too;
	// they reach the schedule through its environment, never its command
	// line (a token there would be in every process listing).
	bf.AddFlagSet(global)
	if err := bf.Parse(backupArgs); err != nil {
		return j, fmt.Errorf("backup arguments: %w", err)
	}
	if err := a.resolveVaultRef(); err != nil {
		return j, err
	}
	if v, _ := bf.GetBool("stdin"); v {
		return j, errors.New("--stdin: a scheduled backup has no standard input; use --stdin-from-command -- CMD ARGS")
	}
	if v, _ := bf.GetBool("json"); v {
		return j, errors.New("--json: a scheduled backup's output goes to the journal or cron's mail; leave it out")
	}
	fromCommand, _ := bf.GetBool("stdin-from-command")
	cmdArgs := []string{"backup", "--no-progress"}
	absFlags := map[string]bool{"exclude-file": true, "iexclude-file": true, "files-from": true, "files-from-verbatim": true, "files-from-raw": true}
	var flagErr error
	bf.Visit(func(f *pflag.Flag) {
		if global.Lookup(f.Name) != nil {
			return
		}
		vals := []string{f.Value.String()}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			vals = sv.GetSlice()
		}
		for _, v := range vals {
			if f.Value.Type() == "bool" {
				cmdArgs = append(cmdArgs, "--"+f.Name+"="+v)
				continue
			}
			if absFlags[f.Name] && v != "-" {
				if v, err = filepath.Abs(v); err != nil {
					flagErr = err
				}
			}
			if absFlags[f.Name] && v == "-" {
				flagErr = fmt.Errorf("--%s -: a scheduled backup has no standard input; give a file", f.Name)
			}
			cmdArgs = append(cmdArgs, "--"+f.Name+"="+v)
		}
	})
	if flagErr != nil {
		return j, flagErr
	}
	rest := bf.Args()
	if fromCommand {
		if len(rest) == 0 {
			return j, errors.New("--stdin-from-command needs the command: … --stdin-from-command -- pg_dump mydb")
		}
		cmdArgs = append(append(cmdArgs, "--"), rest...)
	} else {
		if len(rest) == 0 && !bf.Changed("files-from") && !bf.Changed("files-from-verbatim") && !bf.Changed("files-from-raw") {
			return j, errors.New("give the paths to back up: coffer schedule install --every 1h ~/Documents [backup flags]")
		}
		for _, p := range rest {
			abs, err := filepath.Abs(p)
			if err != nil {
				return j, err
			}
			cmdArgs = append(cmdArgs, abs)
		}
	}
	if name == "" {
		name = "backup"
		if len(rest) > 0 && !fromCommand {
			base := strings.ToLower(filepath.Base(rest[0]))
			base = regexp.MustCompile(`[^a-z0-9_-]+`).ReplaceAllString(base, "-")
			base = strings.Trim(base, "-_")
			if len(base) > 40 {
				base = base[:40]
			}
			if base != "" {
				name = base
			}
		}
	}
	bin, err := os.Executable()
	if err != nil {
		return j, fmt.Errorf("find coffer's own path for the schedule: %w", err)
	}
	if bin, err = filepath.EvalSymlinks(bin); err != nil {
		return j, err
	}
	env, err := a.scheduleEnvironment()
	if err != nil {
		return j, err
	}
	j = schedule.Job{Name: name, Every: d, Command: append([]string{bin}, cmdArgs...), Env: env}
	return j, j.Check()
}

// scheduleEnvironment is what the scheduled backup needs to find the same
// vault with the same trust: COFFER_HOME, the vault, the key file, the
// server's token as a file reference. SECURITY: a token or passphrase
// itself is refused: unit files and crontabs are readable by more than
// their owner (systemctl show, backups of /etc and of ~/.config).
func (a *app) scheduleEnvironment() ([][2]string, error) {
	home, err := a.cofferHome()
	if err != nil {
		return nil, err
	}
	env := [][2]string{{"COFFER_HOME", home}}
	if ref := a.vaultRef; ref != "" {
		if !isRemote(ref) && strings.ContainsRune(ref, '/') {
			if ref, err = filepath.Abs(ref); err != nil {
				return nil, err
			}
		}
		env = append(env, [2]string{"COFFER_VAULT", ref})
	}
	if a.keyFile != "" {
		kf, err := filepath.Abs(a.keyFile)
		if err != nil {
			return nil, err
		}
		env = append(env, [2]string{"COFFER_KEY_FILE", kf})
	}
	tok := a.remote.token
	if tok == "" {
		tok = a.getenv("COFFER_TOKEN")
	}
	if tok != "" {
		file, ok := strings.CutPrefix(tok, "@")
		if !ok {
			return nil, errors.New("the token would be written into the schedule, where others can read it: put it in a file (mode 0600) and give --token @FILE (or COFFER_TOKEN=@FILE), or save it with coffer login --save")
		}
		abs, err := filepath.Abs(file)
		if err != nil {
			return nil, err
		}
		env = append(env, [2]string{"COFFER_TOKEN", "@" + abs})
	}
	for _, k := range scheduleEnv {
		v := a.getenv(k)
		if v == "" {
			continue
		}
		switch k {
		case "COFFER_CACERT", "COFFER_PASSWORD_FILE":
			if v, err = filepath.Abs(v); err != nil {
				return nil, err
			}
		}
		env = append(env, [2]string{k, v})
	}
	if a.remote.cacert != "" {
		c, err := filepath.Abs(a.remote.cacert)
		if err != nil {
			return nil, err
		}
		env = append(env, [2]string{"COFFER_CACERT", c})
	}
	if a.remote.fingerprint != "" {
		env = append(env, [2]string{"COFFER_FINGERPRINT", a.remote.fingerprint})
	}
	if a.remote.limitUp != "" {
		env = append(env, [2]string{"COFFER_LIMIT_UPLOAD", a.remote.limitUp})
	}
	if a.remote.limitDown != "" {
		env = append(env, [2]string{"COFFER_LIMIT_DOWNLOAD", a.remote.limitDown})
	}
	// A later setting of a variable wins in both systemd and sh: keep the
	// last of each, in first-seen order.
	seen := map[string]int{}
	var out [][2]string
	for _, kv := range env {
		if i, ok := seen[kv[0]]; ok {
			out[i] = kv
			continue
		}
		seen[kv[0]] = len(out)
		out = append(out, kv)
	}
	return out, nil
}

func newScheduleInstallCmd(a *app) *cobra.Command {
	var every, name, using string
	var system bool
	cmd := &cobra.Command{
		Use:   "install --every PERIOD PATH... [backup flags]",
		Short: "Run a backup every PERIOD",
		Long: `Install a periodic backup of PATH... with the backup flags that follow them
(any of coffer backup's). With systemd (or --using systemd) it writes a service
and a timer unit, coffer-backup-NAME.{service,timer}, in
$XDG_CONFIG_HOME/systemd/user (or /etc/systemd/system with --system, as root)
and enables the timer; without it, a line in your crontab (cron runs only
periods that divide an hour or a day, or weekly).

The backup runs this coffer binary by its absolute path, with the paths made
absolute and the environment that finds the same vault: COFFER_HOME, the vault
(--vault or COFFER_VAULT), the key file, the CA and fingerprint, a password
file. A vault server's token is written only as a file reference (--token
@FILE or COFFER_TOKEN=@FILE, or the token coffer login --save kept): a token or
passphrase itself is refused, since unit files and crontabs are readable by
more than you. Output goes to the journal (journalctl --user -u
coffer-backup-NAME) or cron's mail; a failed backup exits non-zero, which
systemd shows as a failed unit.

NAME is --name, else the first path's base name.`,
		Example: `  coffer schedule install --every 1h ~/Documents
  coffer schedule install --every 1d --name srv /srv --exclude '*.tmp' --tag nightly
  coffer schedule install --every 6h --name db --vault https://backup.example.com:8443/prod --token @/etc/coffer/token --stdin-from-command --stdin-filename db.sql -- pg_dump mydb
  sudo coffer schedule install --system --every 1d /etc /srv`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if every == "" {
				return errors.New("give the period: --every 1h (30m, 6h, 1d …)")
			}
			j, err := a.scheduleJob(name, every, args, cmd.Root().PersistentFlags())
			if err != nil {
				return err
			}
			s, err := a.scheduler(using, system)
			if err != nil {
				return err
			}
			if s.systemd {
				return s.installSystemd(cmd.Context(), j)
			}
			return s.installCron(cmd.Context(), j)
		},
	}
	f := cmd.Flags()
	// Flags end at the first path: what follows is the backup's (paths and
	// backup flags), as the synopsis reads.
	f.SetInterspersed(false)
	f.StringVar(&every, "every", "", "run the backup this often: 30m, 1h, 6h, 1d (at least 5m)")
	f.StringVar(&name, "name", "", "the schedule's name (default: the first path's base name)")
	f.StringVar(&using, "using", "auto", "systemd or cron (auto: systemd when it is the init system)")
	f.BoolVar(&system, "system", false, "systemd: install for the machine in /etc/systemd/system (as root)")
	return cmd
}

func (s *scheduler) unitPaths(name string) (service, timer string) {
	base := filepath.Join(s.dir, schedule.UnitName(name))
	return base + ".service", base + ".timer"
}

func (s *scheduler) installSystemd(ctx context.Context, j schedule.Job) error {
	service, timer := s.unitPaths(j.Name)
	for _, p := range []string{service, timer} {
		if b, err := os.ReadFile(p); err == nil {
			if n, ok := schedule.UnitJobName(string(b)); !ok || n != j.Name {
				return fmt.Errorf("%s exists and was not written by coffer schedule: choose another --name", p)
			}
		}
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	// Mode 0600 for a user's units (they name files of the user's);
	// 0644 for system units, which systemd reads as root anyway.
	mode := fs.FileMode(0o600)
	if s.system {
		mode = 0o644
	}
	if err := fsutil.WriteFileSync(service, []byte(j.Service()), mode); err != nil {
		return err
	}
	if err := fsutil.WriteFileSync(timer, []byte(j.Timer()), mode); err != nil {
		return err
	}
	a := s.a
	fmt.Fprintf(a.stdout, "schedule %s: every %s\n  %s\n  %s\n", j.Name, schedule.Every(j.Every), service, timer)
	unit := schedule.UnitName(j.Name) + ".timer"
	user := "--user "
	if s.system {
		user = ""
	}
	if err := s.systemctl(ctx, "daemon-reload"); err == nil {
		err = s.systemctl(ctx, "enable", "--now", unit)
		if err == nil {
			fmt.Fprintf(a.stdout, "timer enabled: systemctl %slist-timers %s\n", user, unit)
			return nil
		}
		fmt.Fprintf(a.stderr, "warning: the units are written, but enabling the timer failed: %v\n", err)
	} else {
		fmt.Fprintf(a.stderr, "warning: the units are written, but systemd could not be told (%v)\n", err)
	}
	fmt.Fprintf(a.stderr, "enable it where systemd runs: systemctl %sdaemon-reload && systemctl %senable --now %s\n", user, user, unit)
	return nil
}

// crontab reads the user's crontab ("" when there is none).
func (s *scheduler) crontab(ctx context.Context) (string, error) {
	var out, errb bytes.Buffer
	c := exec.CommandContext(ctx, "crontab", "-l")
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		if strings.Contains(errb.String(), "no crontab") {
			return "", nil
		}
		return "", fmt.Errorf("crontab -l: %v: %s (is cron installed?)", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (s *scheduler) writeCrontab(ctx context.Context, text string) error {
	c := exec.CommandContext(ctx, "crontab", "-")
	c.Stdin = strings.NewReader(text)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("crontab -: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// withoutJob returns the crontab's lines but job name's.
func withoutJob(tab, name string) (kept []string, found bool) {
	for _, l := range strings.Split(strings.TrimRight(tab, "\n"), "\n") {
		if n, ok := schedule.CronName(l); ok && n == name {
			found = true
			continue
		}
		if l != "" || len(kept) > 0 {
			kept = append(kept, l)
		}
	}
	return kept, found
}

func (s *scheduler) installCron(ctx context.Context, j schedule.Job) error {
	line, err := j.CronLine()
	if err != nil {
		return err
	}
	tab, err := s.crontab(ctx)
	if err != nil {
		return err
	}
	kept, replaced := withoutJob(tab, j.Name)
	if err := s.writeCrontab(ctx, strings.Join(append(kept, line), "\n")+"\n"); err != nil {
		return err
	}
	what := "installed"
	if replaced {
		what = "replaced"
	}
	fmt.Fprintf(s.a.stdout, "schedule %s %s in your crontab (no systemd here): every %s\n", j.Name, what, schedule.Every(j.Every))
	return nil
}

func newScheduleListCmd(a *app) *cobra.Command {
	var using string
	var system bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the periodic backups coffer schedule installed",
		Example: "  coffer schedule list\n  sudo coffer schedule list --system",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.scheduler(using, system)
			if err != nil {
				return err
			}
			if !s.systemd {
				tab, err := s.crontab(cmd.Context())
				if err != nil {
					return err
				}
				for _, l := range strings.Split(tab, "\n") {
					if n, ok := schedule.CronName(l); ok {
						fmt.Fprintf(a.stdout, "%s  cron: %s\n", n, safeText(l))
					}
				}
				return nil
			}
			timers, _ := filepath.Glob(filepath.Join(s.dir, schedule.UnitName("*")+".timer"))
			sort.Strings(timers)
			for _, t := range timers {
				b, err := os.ReadFile(t)
				if err != nil {
					continue
				}
				n, ok := schedule.UnitJobName(string(b))
				if !ok {
					continue
				}
				every, exec := "", ""
				for _, l := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(l, "OnUnitActiveSec="); ok {
						every = v
					}
				}
				svc, _ := os.ReadFile(strings.TrimSuffix(t, ".timer") + ".service")
				for _, l := range strings.Split(string(svc), "\n") {
					if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
						exec = v
					}
				}
				fmt.Fprintf(a.stdout, "%s  every %s  %s\n", n, every, safeText(exec))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&using, "using", "auto", "systemd or cron")
	cmd.Flags().BoolVar(&system, "system", false, "systemd: the machine's schedules")
	return cmd
}

func newScheduleRemoveCmd(a *app) *cobra.Command {
	var using string
	var system bool
	cmd := &cobra.Command{
		Use:     "remove NAME",
		Short:   "Remove a periodic backup coffer schedule installed",
		Example: "  coffer schedule remove documents",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := (schedule.Job{Name: name}).Check(); err != nil && strings.Contains(err.Error(), "schedule name") {
				return err
			}
			s, err := a.scheduler(using, system)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !s.systemd {
				tab, err := s.crontab(ctx)
				if err != nil {
					return err
				}
				kept, found := withoutJob(tab, name)
				if !found {
					return fmt.Errorf("no schedule %q in your crontab (coffer schedule list)", name)
				}
				text := strings.Join(kept, "\n")
				if text != "" {
					text += "\n"
				}
				if err := s.writeCrontab(ctx, text); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "schedule %s removed from your crontab\n", name)
				return nil
			}
			service, timer := s.unitPaths(name)
			b, err := os.ReadFile(timer)
			if err != nil {
				return fmt.Errorf("no schedule %q: %s: %w (coffer schedule list)", name, timer, errors.Unwrap(err))
			}
			if n, ok := schedule.UnitJobName(string(b)); !ok || n != name {
				return fmt.Errorf("%s was not written by coffer schedule: left as it is", timer)
			}
			if err := s.systemctl(ctx, "disable", "--now", schedule.UnitName(name)+".timer"); err != nil {
				fmt.Fprintf(a.stderr, "warning: %v\n", err)
			}
			for _, p := range []string{timer, service} {
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			if err := s.systemctl(ctx, "daemon-reload"); err != nil {
				fmt.Fprintf(a.stderr, "warning: %v\n", err)
			}
			fmt.Fprintf(a.stdout, "schedule %s removed\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&using, "using", "auto", "systemd or cron")
	cmd.Flags().BoolVar(&system, "system", false, "systemd: one of the machine's schedules (as root)")
	return cmd
}
