package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/localcopy"
	"github.com/coffer-backup/coffer/internal/vault"
)

func newBackupCmd(a *app) *cobra.Command {
	var tags []string
	var sel excludeFlags
	var host, parentRef string
	var jsonOut, force bool
	var in stdinFlags
	var localCopies int
	var localLease time.Duration
	cmd := &cobra.Command{
		Use:   "backup PATH...",
		Short: "Back up files and directories into the vault",
		Long: `Back up files and directories into the vault, creating the vault (and its
platform key file) on first use. Files unchanged since the parent snapshot
(same size, mtime, ctime and inode) are not read again. The parent is the
newest snapshot of the same host and the same set of paths, whatever its tags;
--parent SNAPSHOT chooses another of this host's, and --force reads every file.
Prints the new snapshot's ID.

Paths are checked first: one that does not exist is a warning when others do
(the backup goes on without it and exits 3), and when none exists nothing is
created and the exit code is 1.

The snapshot keeps the absolute paths: backing up ~/Documents stores
/home/you/Documents, and a restore recreates that path under its target.

Excludes (--exclude, --iexclude, --exclude-file, --iexclude-file) are
gitignore-style patterns matched against each entry's absolute path, the
given paths included, as restic does:
  *.log          a name, at any depth (* ? [a-z] match within one name; \ escapes)
  cache/tmp      tmp directly inside a directory named cache, at any depth
  /srv/cache     anchored: a leading / starts at the root
  **/build/**    ** is any number of directories (at the end: what is inside)
  node_modules/  a trailing / matches directories only
  !keep.log      ! puts back what an earlier pattern left out; the last
                 match wins (what is inside an excluded directory stays out)
An excluded directory is not read. A pattern that matched nothing is a
warning (the exit code stays the same). Exclude files take one pattern a line,
with # comments, and expand $VAR ($$ is a $).

--files-from reads paths to back up, one a line, with the same rules as
paths given here (one missing among several is a warning, exit 3).

--stdin backs up standard input as one file, --stdin-filename NAME (default
"stdin") at /NAME in the snapshot, mode 0600, owned by you and dated now; it
is chunked like a file, so an unchanged dump adds almost nothing the next
time. Its parent is the newest snapshot of the same host and NAME. In a
pipeline coffer cannot see the producing command fail: pg_dump dying halfway
is a short stream that looks complete. Use --stdin-from-command instead,
which runs the command itself and saves no snapshot when it exits non-zero
(or at least set -o pipefail and check the exit code).

--local-copies N also keeps the newest N snapshots of this host and these
paths in an encrypted local cache under $COFFER_HOME/local-copies, for
coffer restore --from local with no network. Nothing there is plaintext: it
is sealed (AES-256-GCM) under a key the vault wraps (a server, for this
agent's own token only; a local vault, with its key). Each backup renews
this machine's lease on that key for --local-lease (default 7 days); once
the lease ends and cannot be renewed (the token or the customer-managed key
revoked), the cache cannot be read (docs/operations.md, "Local copies"). A
local copy that cannot be made is a warning: the snapshot is in the vault,
and the exit code is 3.`,
		Example: `  coffer backup ~/Documents
  coffer backup /etc /srv --tag nightly --exclude '*.tmp' --exclude /srv/cache
  coffer backup ~ --exclude '**/node_modules/' --exclude '*.log' --exclude '!keep.log' --exclude-caches
  coffer backup / --one-file-system --exclude-file /etc/coffer/excludes --exclude-larger-than 1G
  find /srv -name '*.db' -print0 | coffer backup --files-from-raw -
  coffer backup ~/Documents --json
  coffer backup /srv --force                 # read every file again, however unchanged it looks
  coffer backup /srv --local-copies 2        # and keep the 2 newest in an encrypted local cache
  coffer backup --stdin-from-command --stdin-filename mydb.sql -- pg_dump mydb
  set -o pipefail; pg_dump mydb | coffer backup --stdin --stdin-filename mydb.sql`,
		Args: func(cmd *cobra.Command, args []string) error {
			if in.set() {
				return in.checkArgs(args, sel)
			}
			if len(args) == 0 && !sel.listsPaths() {
				return errors.New("requires at least 1 arg(s), only received 0: give the paths to back up (or --files-from FILE)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if localCopies < 0 || localCopies > maxLocalCopies {
				return fmt.Errorf("--local-copies %d: want 0 (none) to %d", localCopies, maxLocalCopies)
			}
			if localLease < localcopy.MinLease || localLease > localcopy.MaxLease {
				return fmt.Errorf("--local-lease %s: want %s to %s", localLease, localcopy.MinLease, localcopy.MaxLease)
			}
			if force && parentRef != "" {
				return errors.New("give --parent or --force, not both: --force reads every file, with no parent")
			}
			if host == "" {
				h, err := a.thisHost()
				if err != nil {
					return err
				}
				host = h
			}
			var exclude agent.ExcludeRules
			var missing []error
			if in.set() {
				if err := in.checkInput(a); err != nil {
					return err
				}
			} else {
				// What to back up and leave out is read before anything is
				// opened: a bad pattern or list changes nothing.
				listed, err := sel.listedPaths(a)
				if err != nil {
					return err
				}
				args = append(args, listed...)
				if len(args) == 0 {
					return errors.New("nothing to back up: the --files-from lists are empty")
				}
				if exclude, err = sel.rules(a); err != nil {
					return err
				}
				if err := exclude.Check(); err != nil {
					return err
				}
				// Paths first, before a vault or key file is created: a path
				// that does not exist among several is a warning (exit 3), and
				// no path at all is an error.
				if args, missing, err = checkBackupPaths(args); err != nil {
					return err
				}
			}
			for _, m := range missing {
				fmt.Fprintf(a.stderr, "warning: %s\n", safeText(m.Error()))
			}
			ctx := cmd.Context()
			v, err := a.open(ctx, true)
			if err != nil {
				return err
			}
			defer v.Close()
			var skip []string
			var parentSince time.Time
			switch v := v.(type) {
			case *openedVault:
				if v.created && !jsonOut {
					fmt.Fprintf(a.stderr, "created vault %q at %s\nplatform key file: %s (keep a copy somewhere else: without it the backups cannot be read)\n", v.loc.name, v.loc.dir, v.keys.Path())
				}
				skip = append(skip, v.loc.dir)
			case *remoteVault:
				if err := v.LoadDedup(ctx); err != nil {
					return err
				}
				// An agent's snapshots are recorded under its own name:
				// its parent is one of those.
				if bound := v.BoundHost(); bound != "" {
					if cmd.Flags().Changed("host") && host != bound {
						return fmt.Errorf("--host %s: this token is the agent %s's, whose snapshots the server records as host %s: leave --host out", host, bound, bound)
					}
					host = bound
					parentSince = v.BoundHostSince()
				}
			}
			var parent *vault.SnapshotRecord
			if parentRef != "" {
				// "latest" is this backup's host's newest; an ID is checked
				// by the agent (same host and source).
				var sel selection
				if parentRef == "latest" {
					sel.Hosts = []string{host}
				}
				p, err := a.findSnapshot(ctx, v, parentRef, sel)
				if err != nil {
					return fmt.Errorf("--parent %s: %w", parentRef, err)
				}
				parent = &p
			}
			var onChunking func()
			if _, remote := v.(*remoteVault); remote {
				a.limitMemory(remoteBackupBudget)
			} else {
				a.limitMemory(backupBudget)
				a.collectAtLimit()
				onChunking = a.chunkingStarted
			}
			opts := agent.BackupOptions{Paths: args}
			if in.set() {
				r, stop, err := in.open(ctx, a, args)
				if err != nil {
					return err
				}
				defer stop()
				opts = agent.BackupOptions{Stdin: r, StdinPath: in.filename}
			}
			// Local copies: the cache is opened (and the key lease renewed)
			// before the backup, which then writes to both.
			var repo agent.BackupRepo = v
			var tee *localcopy.Tee
			var lcErr error
			if localCopies > 0 {
				lopt, err := a.localCopyOptions(localLease)
				if err != nil {
					return err
				}
				c, reset, err := localcopy.OpenForBackup(ctx, lopt, cacheKeys(v), v.Dedup())
				if reset != "" {
					fmt.Fprintf(a.stderr, "warning: local copies started again (%s)\n", safeText(reset))
				}
				if err != nil {
					lcErr = err
					fmt.Fprintf(a.stderr, "warning: no local copy this time: %s\n", safeText(err.Error()))
				} else {
					defer c.Close()
					tee, repo = c.Tee(v, localCopies)
				}
			}
			prog := a.newProgress("backup")
			res, err := agent.Backup(ctx, repo, agent.BackupOptions{
				Paths: opts.Paths, Stdin: opts.Stdin, StdinPath: opts.StdinPath, Tags: tags, Host: host, Exclude: exclude,
				SkipDirs: skip, Now: a.now, Scan: prog != nil, ParentSince: parentSince,
				Parent: parent, Force: force, OnChunking: onChunking,
				// Each path's volume and its encryption, sealed with the
				// snapshot (coffer source list, coffer agent status).
				Source:   a.volumes.Report,
				Progress: prog.fn(),
				Warn: func(w agent.Warning) {
					prog.printAbove(a.stderr, "warning: %s\n", safeText(fmt.Sprint(w)))
				},
			})
			prog.clear()
			if err != nil {
				return err
			}
			s := res.Snapshot
			var local map[string]any
			if tee != nil {
				held, err := tee.Commit(ctx)
				if err != nil {
					lcErr = err
					fmt.Fprintf(a.stderr, "warning: local copy: %s\n", safeText(err.Error()))
				}
				local = map[string]any{"keep": localCopies, "held": held, "encrypted": true, "cipher": localcopy.Cipher, "lease_expires": tee.Expires()}
			}
			if jsonOut {
				enc := json.NewEncoder(a.jsonStdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(map[string]any{
					"snapshot_id": s.ID.String(), "parent": idOrEmpty(s.Parent), "time": s.Time,
					"host": s.Host, "paths": s.Paths, "tags": s.Tags, "files": s.Files, "dirs": s.Dirs,
					"bytes": s.Bytes, "bytes_added": s.BytesAdded, "files_unchanged": res.Reused,
					"duration_seconds": s.Duration.Seconds(), "unreadable": res.Unreadable, "local_copies": local,
				}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "snapshot %s saved\n", s.ID.Short())
				fmt.Fprintf(a.stdout, "  %s, %s, %s processed (%s unchanged), %s added to the vault in %s\n",
					plural(s.Files, "file", "files"), plural(s.Dirs, "dir", "dirs"), humanBytes(s.Bytes), plural(res.Reused, "file", "files"), humanBytes(s.BytesAdded), humanDuration(s.Duration))
				if local != nil {
					fmt.Fprintf(a.stdout, "  local copies: %d of %d held, sealed with %s; key lease until %s\n", local["held"], localCopies, localcopy.Cipher, tee.Expires().Format(time.RFC3339))
				}
			}
			if lcErr != nil {
				return &partialError{fmt.Sprintf("snapshot %s saved in the vault, but no local copy was made: %s", s.ID.Short(), safeText(lcErr.Error()))}
			}
			if n := res.Unreadable + len(missing); n > 0 {
				return &partialError{fmt.Sprintf("snapshot %s saved, but %s could not be read (listed above)", s.ID.Short(), plural(n, "file or directory", "files or directories"))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&tags, "tag", nil, "tag the snapshot (repeatable)")
	f.StringVar(&host, "host", "", "host name recorded in the snapshot (default: $COFFER_HOST, else this machine's; with an agent's token the server records the agent's name)")
	f.StringVar(&parentRef, "parent", "", `reuse unchanged files of this snapshot of the same host (ID, prefix or "latest") instead of the newest of the same paths`)
	f.BoolVar(&force, "force", false, "read every file, with no parent snapshot to reuse unchanged files from")
	f.BoolVar(&jsonOut, "json", false, "print the result as JSON")
	f.IntVar(&localCopies, "local-copies", 0, "also keep the newest N snapshots of these paths in an encrypted local cache, for restore --from local")
	f.DurationVar(&localLease, "local-lease", localcopy.DefaultLease, "how long the local copies stay readable without the vault (each backup renews it)")
	sel.register(f)
	in.register(f)
	return cmd
}

// checkBackupPaths splits paths into those that exist and a warning for
// each that does not (or cannot be looked at); none existing is an error
// naming every one.
func checkBackupPaths(paths []string) (exist []string, missing []error, err error) {
	var why []string
	for _, p := range paths {
		if _, err := os.Lstat(p); err != nil {
			if pe, ok := err.(*fs.PathError); ok {
				err = pe.Err // the path is named once
			}
			missing = append(missing, fmt.Errorf("%s: %w (not backed up)", p, err))
			why = append(why, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		exist = append(exist, p)
	}
	if len(exist) == 0 {
		return nil, nil, fmt.Errorf("nothing to back up: %s", strings.Join(why, "; "))
	}
	return exist, missing, nil
}
