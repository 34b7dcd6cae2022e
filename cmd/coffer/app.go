package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/srcvol"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Exit codes, documented in `coffer help`.
const (
	exitOK      = 0
	exitFailure = 1
	exitPartial = 3
)

// partialError ends a command that finished but could not read (or write)
// some files: exit code 3.
type partialError struct{ msg string }

func (e *partialError) Error() string { return e.msg }

// app carries what every command needs: the streams, the environment and
// the clock. Nothing here is global.
type app struct {
	// memLimit is the soft heap limit limitMemory set (0 until then);
	// memFilter and memChunking what rebudget adjusts it by.
	memLimit, memFilter atomic.Int64
	// gcOff is set while collectAtLimit has the collector's trigger
	// off; gcPercent is the setting to restore (restoreGC).
	gcOff       atomic.Bool
	gcPercent   atomic.Int64
	memChunking atomic.Bool
	stdin       io.Reader
	// stdout and stderr escape what would act on a terminal (termsafe.go);
	// jsonStdout is stdout for JSON, escaped as JSON; rawStderr is the
	// process's stderr, for the progress line alone.
	stdout, stderr io.Writer
	jsonStdout     io.Writer
	rawStderr      io.Writer
	// rawStdout is the process's stdout unescaped, for the bytes coffer
	// dump writes (file contents, archives) and nothing else.
	rawStdout io.Writer
	getenv    func(string) string
	now       func() time.Time

	vaultRef string
	keyFile  string
	home     string
	noProg   bool
	remote   remoteOpts

	// explicitCreate: the vault is made by `coffer vault create`, which
	// chooses single-user itself, not by a first backup.
	explicitCreate bool
	// acceptKeyRollback: coffer vault accept-rollback opens a vault whose
	// keyring is older than this machine's pin, to accept it.
	acceptKeyRollback bool

	// onListen, when set (by tests), learns the address `coffer server`
	// listens on.
	onListen func(addr string)

	// volumes finds the volume of each backed-up path and whether it is
	// encrypted (the source report a snapshot carries). Its zero value
	// reads this machine; only tests, through runHooked, point it at a
	// fixture machine.
	volumes srcvol.Detector
}

// appHooks replace what a test cannot arrange on the machine it runs on.
type appHooks struct {
	volumes srcvol.Detector
}

const rootLong = `Coffer backs up directories into an encrypted, deduplicating vault.

Everything the vault stores is sealed with AES-256-GCM under data keys that a
platform key (KEK) wraps. The default vault lives under $COFFER_HOME
(default $XDG_DATA_HOME/coffer, else ~/.local/share/coffer) and is created on
first backup, together with its key file.

Exit codes:
  0  success
  1  failure (nothing or not everything was done; the message says why)
  3  finished, but some files could not be read or written (listed on stderr)

Environment:
  COFFER_HOME          where local vaults and the platform key file live
  COFFER_VAULT         default for --vault
  COFFER_KEY_FILE      default for --key-file
  COFFER_HOST          this machine's host name for backups and "latest"
                       (default: the system's host name)
  COFFER_KEK_ROTATION  age at which a backup rotates the platform key (default 90d; off)
  COFFER_TOKEN         default for --token (vault servers); without either, the
                       token coffer login --save kept for that server
  COFFER_CACERT        default for --cacert
  COFFER_FINGERPRINT   default for --fingerprint
  COFFER_PASSWORD_FILE, COFFER_PASSWORD_COMMAND
                       a passphrase vault's passphrase: a file's first line, or
                       a command's (run with sh -c); else it is typed. Never argv
  COFFER_NEW_PASSWORD_FILE, COFFER_NEW_PASSWORD_COMMAND
                       a new passphrase (key add --passphrase)
  COFFER_LIMIT_UPLOAD, COFFER_LIMIT_DOWNLOAD
                       defaults for --limit-upload, --limit-download (bytes per
                       second to and from a vault server: 20M, 512K)
  HTTPS_PROXY          proxy for vault servers (NO_PROXY lists exceptions)`

const rootExample = `  coffer backup ~/Documents --tag daily
  coffer snapshots
  coffer ls latest
  coffer restore latest --target /tmp/restored
  coffer check --read-data
  coffer vault show`

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "coffer",
		Short:         "Encrypted, deduplicating backups you can show an auditor",
		Long:          rootLong,
		Example:       rootExample,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	if a.jsonStdout == nil { // an app made by a test, not by runWith
		a.jsonStdout = a.stdout
	}
	if a.rawStderr == nil {
		a.rawStderr = a.stderr
	}
	if a.rawStdout == nil {
		a.rawStdout = a.stdout
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&a.vaultRef, "vault", a.getenv("COFFER_VAULT"), "vault: a name under $COFFER_HOME/vaults, a directory, or https://host:port/NAME on a vault server; with COFFER_VAULT=https://host:port, a NAME is that server's vault (default \"default\")")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if err := a.resolveVaultRef(); err != nil {
			return err
		}
		up, down, err := a.limits()
		if err != nil {
			return err
		}
		if (up > 0 || down > 0) && !isRemote(a.vaultRef) {
			// Not silently: the limits pace HTTPS to a vault server only.
			fmt.Fprintln(a.stderr, "note: --limit-upload and --limit-download apply to vault servers (https://); a local vault is read and written at full speed")
		}
		return nil
	}
	pf.StringVar(&a.keyFile, "key-file", a.getenv("COFFER_KEY_FILE"), "platform key file (default $COFFER_HOME/keys/platform.key)")
	pf.BoolVar(&a.noProg, "no-progress", false, "never show the live progress display")
	pf.StringVar(&a.remote.token, "token", "", "bearer token for a vault server, or @FILE holding it (default $COFFER_TOKEN)")
	pf.StringVar(&a.remote.cacert, "cacert", "", "also trust this CA (PEM) for a vault server: its DATA/tls/ca.pem, or a TLS-inspecting proxy's CA (default $COFFER_CACERT)")
	pf.StringVar(&a.remote.limitUp, "limit-upload", "", "vault servers: send at most this many bytes per second, e.g. 20M (default $COFFER_LIMIT_UPLOAD; none)")
	pf.StringVar(&a.remote.limitDown, "limit-download", "", "vault servers: receive at most this many bytes per second, e.g. 50M (default $COFFER_LIMIT_DOWNLOAD; none)")
	pf.StringVar(&a.remote.fingerprint, "fingerprint", "", "trust exactly the server certificate with this SHA-256 fingerprint, SHA256:<hex> (default $COFFER_FINGERPRINT)")
	root.AddCommand(
		newBackupCmd(a), newSnapshotsCmd(a), newLsCmd(a), newRestoreCmd(a),
		newDiffCmd(a), newCheckCmd(a), newVaultCmd(a), newVersionCmd(a),
		newServerCmd(a), newTokenCmd(a), newDoctorCmd(a), newKeyCmd(a),
		newForgetCmd(a), newUndeleteCmd(a), newPruneCmd(a), newPolicyCmd(a),
		newRequestsCmd(a), newDecideCmd(a, true), newDecideCmd(a, false),
		newUserCmd(a), newRoleCmd(a), newLoginCmd(a), newAuditCmd(a), newSourceCmd(a),
		newScheduleCmd(a),
		newMountCmd(a),
		newRepairCmd(a),
		newTagCmd(a), newRewriteCmd(a), newCopyCmd(a), newLocalCopiesCmd(a),
	)
	root.AddCommand(newFindCmd(a))
	root.AddCommand(newDumpCmd(a))
	root.AddCommand(newCatCmd(a))
	root.AddCommand(newStatsCmd(a))
	root.AddCommand(newAgentCmd(a))
	root.AddCommand(newPostureCmd(a))
	root.Version = version
	root.Flags().Bool("version", false, "print coffer's version")
	root.SetVersionTemplate("coffer {{.Version}}\n")
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command group (coffer key, coffer
// vault, …) fail on a subcommand it does not have: cobra would print the
// group's help and exit 0, and a script would carry on as if `coffer key
// lst` had worked. A group alone still prints its help.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if c.HasParent() && c.HasSubCommands() && !c.Runnable() {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return errors.New(msg)
		}
	}
}

// run is the whole program: main only wires the process to it, so tests
// drive the real commands in-process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdin, stdout, stderr, os.Getenv, time.Now)
}

func runWith(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string, now func() time.Time) int {
	return runHooked(ctx, args, stdin, stdout, stderr, getenv, now, appHooks{})
}

// runHooked is runWith with the test hooks h.
func runHooked(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string, now func() time.Time, h appHooks) int {
	out, errw := &termWriter{w: stdout}, &termWriter{w: stderr}
	jout := &termWriter{w: stdout, json: true}
	defer func() {
		out.Flush()
		jout.Flush()
		errw.Flush()
	}()
	a := &app{stdin: stdin, stdout: out, stderr: errw, jsonStdout: jout, rawStderr: stderr, rawStdout: stdout, getenv: getenv, now: now, volumes: h.volumes}
	root := newRootCmd(a)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	a.restoreGC() // tests run many commands in one process
	if err == nil {
		return exitOK
	}
	var pe *partialError
	if errors.As(err, &pe) {
		fmt.Fprintf(errw, "coffer: %s\n", pe.msg)
		return exitPartial
	}
	fmt.Fprintf(errw, "coffer: %s\n", userMessage(err, cmd))
	return exitFailure
}

// usageErrors start the messages cobra (and refuseUnknownSubcommands)
// gives for a command line it cannot run.
var usageErrors = []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires ", "invalid argument", "flag needs an argument", "required flag"}

// userMessage adds what to do next to errors users meet; cmd is the
// command that failed (for a usage error, its help is where to look).
func userMessage(err error, cmd *cobra.Command) string {
	msg := err.Error()
	switch {
	case errors.Is(err, vault.ErrWrongKey) && strings.Contains(msg, "platform"):
		return msg + "\n(the key file does not belong to this vault: pass the right one with --key-file or COFFER_KEY_FILE)"
	case errors.Is(err, vault.ErrKeyUnavailable):
		return msg
	case errors.Is(err, vault.ErrCorrupt), errors.Is(err, vault.ErrTruncated):
		return msg + "\n(the vault holds damaged data: run `coffer check --read-data` to see everything affected)"
	case errors.Is(err, context.Canceled):
		return "interrupted; nothing half-written is visible in the vault"
	}
	for _, u := range usageErrors {
		if strings.HasPrefix(msg, u) {
			path := "coffer"
			if cmd != nil {
				path = cmd.CommandPath()
			}
			return msg + "\n(see `" + path + " --help`)"
		}
	}
	return msg
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(a.stdout, "coffer", version)
			return nil
		},
	}
}

const version = "0.1.0-dev"

// printJSON writes v to stdout as indented JSON, as every --json does.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.jsonStdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// resolveVaultRef makes --vault NAME name a vault on the server
// COFFER_VAULT points at (https://host:port, no vault), so that one
// setting serves every command; a directory (with a '/') stays local.
func (a *app) resolveVaultRef() error {
	env := a.getenv("COFFER_VAULT")
	ref := a.vaultRef
	if ref == "" || ref == env || isRemote(ref) || !isRemote(env) || strings.ContainsRune(ref, '/') || ref == "." || ref == ".." {
		return nil
	}
	srv, name, err := client.SplitVaultURL(env)
	if err != nil || name != "" {
		return err // COFFER_VAULT names one vault: --vault NAME is local
	}
	a.vaultRef = srv + "/" + ref
	return nil
}
