package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// copyJSON is one line of copy's --json output.
type copyJSON struct {
	Original string        `json:"original"`
	Copy     *snapshotJSON `json:"copy,omitempty"`
	Skipped  string        `json:"skipped,omitempty"` // why nothing was copied
}

func newCopyCmd(a *app) *cobra.Command {
	var from, to, fromToken string
	var hosts []string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "copy --from-vault SOURCE [--to-vault DEST] [--host HOST] [SNAPSHOT...]",
		Short: "Copy snapshots to another vault",
		Long: `Copy snapshots from the vault --from-vault to the vault --to-vault (default:
--vault), local or on servers, for a second copy elsewhere (3-2-1). With no
SNAPSHOT every live snapshot of the source is copied (of --host only, when
given), oldest first.

Each vault keeps its own keys: coffer reads each chunk from the source and
identifies it with the destination's keys, and only chunks the destination
lacks are sent. Snapshots copied before (by their source vault and ID, live or
forgotten in the destination) are skipped, so running copy again sends nothing
new and makes no duplicates.

A copy keeps the original's host, paths, tags and files. Its time is when the
destination recorded it, as for any backup, so that a copy can never date
itself to become "latest" or to sway retention; the original's time and ID are
recorded with it ("copy of", coffer snapshots --json: copied_from). Reading
needs the data.read permission on the source, writing backup.write on the
destination (--from-token gives the source server's token when it differs).`,
		Example: `  coffer copy --from-vault default --to-vault https://offsite:8443/laptop
  coffer copy --from-vault https://nas:8443/home --to-vault /mnt/usb/coffer --host web01`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if from == "" {
				return errors.New("name the source vault with --from-vault")
			}
			if to == "" {
				to = a.vaultRef
			}
			if to == "" || to == from {
				return errors.New("name a destination vault other than the source with --to-vault")
			}
			saved, savedTok := a.vaultRef, a.remote.token
			defer func() { a.vaultRef, a.remote.token = saved, savedTok }()
			a.vaultRef = from
			if fromToken != "" {
				a.remote.token = fromToken
			}
			if err := a.resolveVaultRef(); err != nil {
				return err
			}
			src, err := a.open(ctx, false)
			if err != nil {
				return fmt.Errorf("source vault: %w", err)
			}
			defer src.Close()
			a.vaultRef, a.remote.token = to, savedTok
			if err := a.resolveVaultRef(); err != nil {
				return err
			}
			dst, err := a.open(ctx, true)
			if err != nil {
				return fmt.Errorf("destination vault: %w", err)
			}
			defer dst.Close()
			if rv, ok := dst.(*remoteVault); ok {
				if err := rv.LoadDedup(ctx); err != nil {
					return fmt.Errorf("destination vault: %w", err)
				}
			}
			si, err := src.Info(ctx)
			if err != nil {
				return fmt.Errorf("source vault: %w", err)
			}
			srcID, err := vault.ParseID(si.ID)
			if err != nil {
				return fmt.Errorf("source vault: %w", err)
			}
			di, err := dst.Info(ctx)
			if err != nil {
				return fmt.Errorf("destination vault: %w", err)
			}
			if di.ID == si.ID {
				return errors.New("the source and the destination are the same vault")
			}
			snaps, err := src.Snapshots(ctx)
			if err != nil {
				return fmt.Errorf("source vault: %w", err)
			}
			var todo []vault.SnapshotRecord
			if len(args) == 0 {
				for _, s := range snaps {
					if len(hosts) == 0 || slices.Contains(hosts, s.Host) {
						todo = append(todo, s)
					}
				}
			}
			for _, ref := range args {
				if ref == "latest" {
					return errors.New("name snapshots by ID (or none, for all), not latest")
				}
				s, err := engine.FindSnapshot(snaps, ref)
				if err != nil {
					return fmt.Errorf("nothing was copied: %w", err)
				}
				if len(hosts) > 0 && !slices.Contains(hosts, s.Host) {
					return fmt.Errorf("nothing was copied: snapshot %s is of host %s, not --host %v", s.ID.Short(), s.Host, hosts)
				}
				if !slices.ContainsFunc(todo, func(t vault.SnapshotRecord) bool { return t.ID == s.ID }) {
					todo = append(todo, s)
				}
			}
			// What the destination holds already, forgotten copies included
			// (undelete those instead of copying them again).
			have := map[vault.ID][]vault.SnapshotRecord{}
			dsnaps, err := destinationSnapshots(ctx, dst)
			if err != nil {
				return fmt.Errorf("destination vault: %w", err)
			}
			for _, d := range dsnaps {
				if c := d.Copy; c != nil && c.Vault == srcID {
					have[c.Snapshot] = append(have[c.Snapshot], d)
				}
			}
			var out []copyJSON
			copied := 0
			for _, s := range todo {
				r, err := src.ForSnapshot(ctx, s)
				if err != nil {
					return err
				}
				// SECURITY: copied_from is a claim anyone who may write the
				// destination can make; a snapshot is skipped only when the
				// destination's copy matches it tree for tree, so a planted
				// claim cannot keep it from being copied (agent.SameCopy).
				var done *vault.SnapshotRecord
				for _, d := range have[s.ID] {
					dr, err := dst.ForSnapshot(ctx, d)
					if err != nil {
						return fmt.Errorf("destination vault: %w", err)
					}
					same, err := agent.SameCopy(ctx, r, s, dr, d)
					if err != nil {
						return fmt.Errorf("compare snapshot %s with %s: %w", s.ID.Short(), d.ID.Short(), err)
					}
					if same {
						done = &d
						break
					}
					fmt.Fprintf(a.stderr, "warning: snapshot %s of the destination claims to be a copy of %s but does not match it; copying %s again\n", d.ID.Short(), s.ID.Short(), s.ID.Short())
				}
				if done != nil {
					why := "copied before as " + done.ID.String()
					if !done.Deleted.IsZero() {
						why += " (forgotten there: coffer undelete brings it back)"
					}
					out = append(out, copyJSON{Original: s.ID.String(), Skipped: why})
					if !jsonOut {
						fmt.Fprintf(a.stdout, "snapshot %s: %s\n", s.ID.Short(), why)
					}
					continue
				}
				// The original's sealed object (listings leave its source
				// report out): the copy keeps the original machine's report.
				full, err := src.FindSnapshot(ctx, s.ID.String())
				if err != nil {
					return fmt.Errorf("source vault: %w", err)
				}
				c := agent.NewCopier(r, dst, a.now)
				n, err := c.Copy(ctx, srcID, full)
				if err != nil {
					return fmt.Errorf("copy snapshot %s: %w (%d copied before it)", s.ID.Short(), err, copied)
				}
				copied++
				j := toSnapshotJSON(n)
				out = append(out, copyJSON{Original: s.ID.String(), Copy: &j})
				if !jsonOut {
					fmt.Fprintf(a.stdout, "snapshot %s copied as %s (%d of %d chunks sent)\n", s.ID.Short(), n.ID.Short(), c.Sent, c.Read)
				}
			}
			if jsonOut {
				return a.printJSON(out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from-vault", "", "the vault to copy from (a name, a directory or https://host:port/NAME)")
	f.StringVar(&to, "to-vault", "", "the vault to copy to (default --vault)")
	f.StringVar(&fromToken, "from-token", "", "bearer token for the source's server, or @FILE (default --token)")
	f.StringArrayVar(&hosts, "host", nil, "copy only this host's snapshots (repeatable)")
	f.BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// destinationSnapshots lists every snapshot of v, forgotten ones too.
func destinationSnapshots(ctx context.Context, v conn) ([]vault.SnapshotRecord, error) {
	switch v := v.(type) {
	case *openedVault:
		return v.AllSnapshots(ctx)
	case *remoteVault:
		live, err := v.Snapshots(ctx)
		if err != nil {
			return nil, err
		}
		del, err := v.Deleted(ctx)
		return append(live, del...), err
	}
	return nil, fmt.Errorf("unknown vault type %T", v)
}
