package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/coffer-backup/coffer/internal/agent"
)

// stdinFlags are coffer backup's flags for backing up a stream (restic's
// names): --stdin, --stdin-filename, --stdin-from-command.
type stdinFlags struct {
	stdin, fromCommand bool
	filename           string
}

func (s *stdinFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&s.stdin, "stdin", false, "back up standard input as one file (see --stdin-filename)")
	f.StringVar(&s.filename, "stdin-filename", "stdin", "the file name standard input is stored under, at /NAME in the snapshot (may hold directories: dumps/mydb.sql)")
	f.BoolVar(&s.fromCommand, "stdin-from-command", false, "run the command given after -- and back up its standard output; no snapshot is saved if it exits non-zero")
}

func (s *stdinFlags) set() bool { return s.stdin || s.fromCommand }

// checkArgs checks the arguments before anything else: --stdin takes none,
// --stdin-from-command takes the command, and neither goes with lists of
// paths.
func (s *stdinFlags) checkArgs(args []string, sel excludeFlags) error {
	switch {
	case s.stdin && s.fromCommand:
		return errors.New("give --stdin or --stdin-from-command, not both")
	case sel.listsPaths():
		return errors.New("--files-from and --stdin exclude each other: back up files and a stream in two snapshots")
	case s.stdin && len(args) > 0:
		return fmt.Errorf("--stdin backs up standard input, so it takes no paths (got %d): back up files in another snapshot, or run a command with --stdin-from-command -- CMD ARGS", len(args))
	case s.fromCommand && len(args) == 0:
		return errors.New("--stdin-from-command needs the command to run: coffer backup --stdin-from-command --stdin-filename mydb.sql -- pg_dump mydb")
	}
	if len(sel.exclude)+len(sel.iexclude)+len(sel.excludeFile)+len(sel.iexcludeFile)+len(sel.ifPresent) > 0 ||
		sel.caches || sel.oneFS || sel.largerThan != "" {
		return errors.New("excludes do not apply to a backup of standard input, which is one file: leave them out")
	}
	_, err := agent.StdinPath(s.filename)
	if err != nil {
		return fmt.Errorf("--stdin-filename: %w", err)
	}
	return nil
}

// checkInput refuses --stdin on a terminal (a backup of what is typed is
// rarely meant; restic refuses it too). It runs before a vault is opened.
func (s *stdinFlags) checkInput(a *app) error {
	if !s.stdin {
		return nil
	}
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return errors.New("--stdin: standard input is a terminal: pipe the data in (pg_dump mydb | coffer backup --stdin --stdin-filename mydb.sql)")
	}
	return nil
}

// open returns the stream to back up, and a function to call when the
// backup is over (it stops a command that is still running, as when the
// vault failed first).
func (s *stdinFlags) open(ctx context.Context, a *app, args []string) (io.Reader, func(), error) {
	if !s.fromCommand {
		return a.stdin, func() {}, nil
	}
	// The command's arguments may hold secrets (mysqldump -pSECRET):
	// messages name the program only.
	name := filepath.Base(args[0])
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stderr = a.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			err = ee.Err // exec.Error repeats the name
		}
		return nil, nil, fmt.Errorf("--stdin-from-command: cannot run %s: %v", name, err)
	}
	r := &commandReader{cmd: cmd, out: out, name: name}
	return r, r.stop, nil
}

// commandReader reads a command's standard output and, at its end, waits
// for the command: an exit status other than 0 is a read error, which
// fails the backup before any snapshot is saved.
type commandReader struct {
	cmd    *exec.Cmd
	out    io.Reader
	name   string
	err    error
	waited bool
}

func (c *commandReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.out.Read(p)
	switch {
	case err == io.EOF:
		c.waited = true
		if werr := c.cmd.Wait(); werr != nil {
			c.err = fmt.Errorf("command %s failed (%v): its output is not a complete backup", c.name, werr)
			return n, c.err
		}
		c.err = io.EOF
	case err != nil:
		c.err = err
	}
	return n, err
}

// stop ends a command whose output was not read to the end.
func (c *commandReader) stop() {
	if c.waited {
		return
	}
	c.waited = true
	if c.cmd.Process != nil {
		c.cmd.Process.Kill()
	}
	c.cmd.Wait()
}
