package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

func newRestoreCmd(a *app) *cobra.Command {
	var target string
	var include []string
	var overwrite, jsonOut bool
	var sf selectFlags
	var deleteDamaged bool
	var maxEntries uint64
	var extra restoreExtra
	var from string
	cmd := &cobra.Command{
		Use:   "restore SNAPSHOT --target DIR",
		Short: "Restore a snapshot into a directory",
		Long: `Restore a snapshot (or the parts named by --include) into DIR, recreating the
snapshot's absolute paths below it. Existing files are left untouched unless
--overwrite is given. A file or directory that cannot be written (or that
exists, without --overwrite) is a warning: everything else is restored, and
the exit code is 3. Nothing is ever written outside DIR: a snapshot entry
that would escape it, or lead through a symlink, stops the restore.

"latest" is the newest snapshot of this host: of $COFFER_HOST or this
machine's host name, or with an agent's token of the agent's own. Another
machine's newer backup is never restored by accident. --host NAME restores
another host's, --any-host the newest of any; --path and --tag narrow the
choice (a host that backs up several sets of paths: --path picks the set). A
snapshot named by ID is restored whatever its host, but refused when filters
given exclude it.

Damage in the vault (a pack missing, truncated or failing authentication, a
chunk of the wrong length) does not stop a restore: every file it can
restore is restored, and a file that lost chunks is written with the good
chunks in place and zeros (holes) where data was lost, with mode 0600 and
none of its other metadata, so it is never taken for the original. Each
damaged file is listed at the end with the byte ranges lost (offset–end),
and each directory whose listing could not be read is listed as lost; the
exit code is 3. With --delete-damaged damaged files are removed instead.
A fault that is not damage (a key that cannot be reached, a network or
server failure, Ctrl-C) stops the restore with exit code 1.

A snapshot's record counts its files and directories (coffer snapshots shows
them); a restore visits no more entries than that, so a snapshot whose trees
name the same subtrees over and over (a "tree bomb") stops with an error
before anything is written instead of filling the disk and memory.

--exclude and --iexclude leave out what their patterns match, with backup's
matcher (gitignore-style; the last pattern that matches decides, ! puts back)
applied to each entry's path in the snapshot (/home/ann/x.log); a directory
left out takes everything below it. With --include, an entry must be
included and not excluded.

--dry-run reads the snapshot's trees, lists every entry that would be
restored and counts files, directories and bytes; it writes nothing and does
not look at the target (files there that would be left alone or replaced are
not predicted). It reads no file data, so damage to data is not found
(coffer check --read-data does).

--verify reads every file the restore wrote back from the target and checks
each chunk against the snapshot (its chunk ID, computed with the vault's key;
with a server token that may not back up, the chunk fetched again). A file
that differs (or cannot be read back, say one restored with mode 0000 by a
user who is not root) is listed and the exit code is 3. Damaged files are
already listed as damaged and are not verified; files left untouched in the
target are not either.`,
		Example: `  coffer restore latest --target /tmp/restored
  coffer restore 1a2b3c4d --target /tmp/r --include /home/ann/Documents/report.odt
  coffer restore latest --target / --overwrite     # put everything back in place
  coffer restore latest --host web02 --path /srv --target /tmp/r   # another machine's newest backup of /srv
  coffer restore latest --target /tmp/r --delete-damaged   # a damaged vault: keep only intact files
  coffer restore 1a2b3c4d --target /tmp/r --max-entries 2000000   # a trusted old snapshot that undercounts
  coffer restore latest --target /tmp/r --exclude '*.iso' --iexclude '/home/*/cache'
  coffer restore latest --target /tmp/r --include /srv --dry-run   # what would come back, nothing written
  coffer restore latest --target /srv-new --verify                 # read it all back and compare
  coffer restore latest --target /srv --from local --overwrite      # from the encrypted local copy, no network`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if target == "" {
				return fmt.Errorf("give the directory to restore into with --target DIR")
			}
			sel, err := sf.selection()
			if err != nil {
				return err
			}
			var ropt agent.RestoreOptions
			if err := extra.apply(a, &ropt); err != nil {
				return err
			}
			ctx := cmd.Context()
			var s vault.SnapshotRecord
			var repo agent.RestoreRepo
			switch from {
			case "local":
				c, err := a.openLocalCopies(ctx)
				if err != nil {
					return err
				}
				defer c.Close()
				if s, err = findLocalCopy(c, args[0], sel); err != nil {
					return err
				}
				a.limitMemory(restoreBudget)
				repo = c.Vault()
			case "vault", "":
				v, err := a.open(ctx, false)
				if err != nil {
					return err
				}
				defer v.Close()
				if s, err = a.findSnapshot(ctx, v, args[0], sel); err != nil {
					return err
				}
				a.limitMemory(restoreBudget)
				switch v := v.(type) {
				case *openedVault:
					v.store.DropReadCache(true)
				case *remoteVault:
					// With the chunk-ID key every download is verified against
					// its ID here too; a token without backup rights restores
					// what the server has authenticated (GCM) without it.
					if err := v.LoadDedup(ctx); err != nil && !errors.Is(err, api.ErrForbidden) {
						return err
					}
				}
				// The snapshot's trees and data are read, and verified, in its
				// dedup domain (a source's, in a vault whose dedup scope is
				// "source").
				if repo, err = v.ForSnapshot(ctx, s); err != nil {
					return err
				}
			default:
				return fmt.Errorf("--from %s: want vault or local", safeText(from))
			}
			var entries []dryRunEntry
			if ropt.DryRun {
				ropt.Entry = func(p string, n *format.Node) {
					entries = append(entries, dryRunEntry{Path: p, Type: kindName(n.Kind), Size: n.Size})
				}
			}
			prog := a.newProgress("restore")
			ropt.Target, ropt.Include, ropt.Overwrite, ropt.Owners = target, include, overwrite, os.Geteuid() == 0
			ropt.MaxEntries, ropt.DeleteDamaged = entryBound(s, maxEntries), deleteDamaged
			ropt.Progress = prog.fn()
			ropt.Warn = func(w agent.Warning) {
				prog.printAbove(a.stderr, "warning: %s\n", safeText(fmt.Sprint(w)))
			}
			res, err := agent.Restore(ctx, repo, s.Tree, ropt)
			prog.clear()
			if err != nil {
				return err
			}
			if ropt.DryRun {
				return printDryRun(a, s, target, res, entries, jsonOut, ropt.Verify)
			}
			if jsonOut {
				enc := json.NewEncoder(a.jsonStdout)
				enc.SetIndent("", "  ")
				damaged, lostDirs, lostBytes := damageReport(res)
				out := map[string]any{"snapshot_id": s.ID.String(), "host": s.Host, "target": target, "files": res.Files,
					"dirs": res.Dirs, "bytes": res.Bytes, "skipped_existing": res.Skipped, "warnings": len(res.Warnings),
					"damaged": damaged, "lost_dirs": lostDirs, "lost_bytes": lostBytes}
				if ropt.Verify {
					out["verified"], out["mismatched"] = res.Verified, verifyJSON(res)
				}
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				printDamage(a.stderr, res)
				fmt.Fprintf(a.stdout, "restored snapshot %s (host %q, %s) to %s: %s, %s, %s\n", s.ID.Short(), s.Host, s.Time.UTC().Format(time.RFC3339), target, plural(res.Files, "file", "files"), plural(res.Dirs, "dir", "dirs"), humanBytes(res.Bytes))
			}
			// One rule for every per-file problem: a warning, and exit 3.
			var why []string
			if d := damageSummary(res, deleteDamaged); d != "" {
				why = append(why, d)
			}
			if ropt.Verify {
				if v := printVerify(a, res, jsonOut); v != "" {
					why = append(why, v)
				}
			}
			if n := len(res.Warnings) - res.Skipped; n > 0 {
				why = append(why, plural(n, "entry", "entries")+" could not be written as they were")
			}
			if res.Skipped > 0 {
				why = append(why, plural(res.Skipped, "existing entry was", "existing entries were")+" left untouched (use --overwrite to replace them)")
			}
			if len(why) > 0 {
				return &partialError{"restored, but " + strings.Join(why, ", and ") + " (listed above)"}
			}
			return nil
		},
	}
	f := cmd.Flags()
	sf.register(cmd, true)
	f.StringVar(&target, "target", "", "directory to restore into (created if missing)")
	f.StringArrayVar(&include, "include", nil, "restore only this path of the snapshot (repeatable)")
	f.BoolVar(&overwrite, "overwrite", false, "replace files that already exist in the target")
	f.BoolVar(&jsonOut, "json", false, "print the result as JSON")
	f.BoolVar(&deleteDamaged, "delete-damaged", false, "remove files that lost data to damage in the vault instead of keeping them with zeros")
	f.StringVar(&from, "from", "vault", "where to restore from: vault, or local (this machine's encrypted local copies, no network)")
	extra.register(f)
	maxEntriesFlag(cmd, &maxEntries)
	return cmd
}
