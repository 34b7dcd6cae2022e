package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/fusefs"
	"github.com/coffer-backup/coffer/internal/vault"
)

func newMountCmd(a *app) *cobra.Command {
	var sf selectFlags
	var maxEntries uint64
	var cacheMiB int64
	cmd := &cobra.Command{
		Use:   "mount MOUNTPOINT",
		Short: "Browse snapshots as a read-only file system",
		Long: `Mount the vault's snapshots at MOUNTPOINT (an existing directory) as a read-only
FUSE file system, until Ctrl-C (or SIGTERM) unmounts it:

  snapshots/<time>/…          every snapshot by its time (UTC), and latest
  hosts/<host>/<time>/…       by host, each with latest
  tags/<tag>/<time>/…         by tag, each with latest
  ids/<ID>/…                  by short ID

Two snapshots of the same second are <time>-<ID>. A host or tag that is not
a file name is shown with '%', '/' and NUL as %25, %2F and %00.

Nothing is read until it is looked at: listing a directory loads that one
directory, and reading a file loads only its chunks, through a chunk cache of
--cache MiB. Files show the snapshot's mode, owner IDs, size and times; hard
links show as separate files. Every write fails (read-only file system), and
the mount is nodev and nosuid and visible to the mounting user only.

The snapshots are those of the vault when the command starts (--host, --path
and --tag narrow them); unmount and mount again to see newer ones. Works on
local vaults and through a vault server: a backup reader's token lists
names and metadata, and reading a file's contents then fails (permission
denied), as the role allows; an operator's or owner's token reads them too.

A snapshot never has more entries alive at once than its record counts: trees
that expand past it (a tree bomb) and paths longer than 8192 bytes give I/O
errors, and a line on stderr says why.`,
		Example: "  mkdir -p /mnt/backups && coffer mount /mnt/backups\n  coffer mount /mnt/backups --host web01\n  coffer mount /mnt/backups --vault https://vault.example:8443/prod --token @reader.token",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, err := sf.selection()
			if err != nil {
				return err
			}
			// At least 32 MiB: a chunk is kept only when it is at most a
			// quarter of the cache, and chunks reach 8 MiB; a smaller cache
			// would load a large chunk again for every read of it.
			if cacheMiB < 32 || cacheMiB > 1<<16 {
				return fmt.Errorf("--cache %d: give a size in MiB from 32 to 65536", cacheMiB)
			}
			dir := args[0]
			if err := checkMountPoint(dir); err != nil {
				return err
			}
			ctx := cmd.Context()
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			all, err := v.Snapshots(ctx)
			if err != nil {
				return err
			}
			snaps := sel.Select(all)
			var logMu sync.Mutex
			f, err := fusefs.New(fusefs.Options{
				Snapshots: snaps,
				Open: func(ctx context.Context, s vault.SnapshotRecord) (fusefs.Repo, error) {
					return v.ForSnapshot(ctx, s)
				},
				MaxEntries: func(s vault.SnapshotRecord) uint64 { return entryBound(s, maxEntries) },
				CacheBytes: cacheMiB << 20,
				Denied:     func(err error) bool { return errors.Is(err, api.ErrForbidden) },
				Log: func(msg string) {
					// Called from the file system's goroutines at once.
					logMu.Lock()
					defer logMu.Unlock()
					fmt.Fprintf(a.stderr, "coffer mount: %s\n", safeText(msg))
				},
			})
			if err != nil {
				return err
			}
			srv, err := fusefs.Mount(dir, f)
			if err != nil {
				return mountError(dir, err)
			}
			if len(snaps) == 0 {
				fmt.Fprintf(a.stderr, "note: no snapshots match (%d in the vault): the mount is empty\n", len(all))
			}
			fmt.Fprintf(a.stdout, "Mounted %d snapshots at %s, read-only. Press Ctrl-C to unmount.\n", len(snaps), safeText(dir))
			return serveMount(ctx, a, srv, dir)
		},
	}
	sf.register(cmd, false)
	maxEntriesFlag(cmd, &maxEntries)
	cmd.Flags().Int64Var(&cacheMiB, "cache", fusefs.DefaultCacheBytes>>20, "MiB of file chunks kept in memory")
	return cmd
}

// checkMountPoint refuses a mount point that is missing, not a directory,
// or a stale FUSE mount (one whose coffer mount ended without unmounting).
func checkMountPoint(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return staleMount(dir)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("mount point %s does not exist: create it (mkdir -p %s), then retry", safeText(dir), safeText(dir))
	case err != nil:
		return fmt.Errorf("mount point %s: %w", safeText(dir), err)
	case !fi.IsDir():
		return fmt.Errorf("mount point %s is not a directory", safeText(dir))
	}
	return nil
}

func staleMount(dir string) error {
	return fmt.Errorf("mount point %s is a stale mount (transport endpoint is not connected: an earlier mount ended without unmounting): run fusermount -u %s (or fusermount3 -u), then retry", safeText(dir), safeText(dir))
}

// mountError explains a failed mount with what to do next.
func mountError(dir string, err error) error {
	if errors.Is(err, syscall.ENOTCONN) {
		return staleMount(dir)
	}
	return fmt.Errorf("mount %s: %w; FUSE needs /dev/fuse and fusermount3 or fusermount (apt-get install fuse3), and a mount point not already mounted (fusermount -u %s)", safeText(dir), err, safeText(dir))
}

// serveMount serves until ctx ends (Ctrl-C, SIGTERM) or the file system is
// unmounted from outside (fusermount -u), then unmounts. A busy mount point
// (a shell inside it, an open file) is retried for a while, with a hint.
func serveMount(ctx context.Context, a *app, srv *fuse.Server, dir string) error {
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	const tries = 10
	for i := 0; ; i++ {
		err := srv.Unmount()
		if err == nil {
			break
		}
		if i == tries {
			return fmt.Errorf("unmount %s: %w: leave the directory and close its files, then run fusermount -u %s (fusermount -u -z %s detaches it now)", safeText(dir), err, safeText(dir), safeText(dir))
		}
		if i == 0 {
			fmt.Fprintf(a.stderr, "coffer mount: %s is busy (%v): leave it and close its files; retrying\n", safeText(dir), err)
		}
		select {
		case <-done:
			return nil
		case <-time.After(time.Second):
		}
	}
	<-done
	fmt.Fprintf(a.stdout, "Unmounted %s.\n", safeText(dir))
	return nil
}
