package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// latestHostFlag registers --host on a command that takes snapshot
// references, for findSnapshot.
func latestHostFlag(cmd *cobra.Command, host *string) {
	cmd.Flags().StringVar(host, "host", "", `with "latest": the newest snapshot of this host (default: of any host; with an agent's token, of the agent's own)`)
}

// findSnapshot resolves ref as v.FindSnapshot does, except "latest" with
// a host, which is the newest snapshot of that host. With an agent's
// token and no host, "latest" is the agent's own newest snapshot: another
// machine's backup, however recent, is not what it restores. The
// snapshot found is authenticated by FindSnapshot either way.
func findSnapshot(ctx context.Context, v conn, ref, host string) (vault.SnapshotRecord, error) {
	if ref != "latest" {
		return v.FindSnapshot(ctx, ref)
	}
	if rv, ok := v.(*remoteVault); ok && host == "" {
		// Only a token with backup rights learns its bound host.
		if err := rv.LoadDedup(ctx); err != nil && !errors.Is(err, api.ErrForbidden) {
			return vault.SnapshotRecord{}, err
		}
		host = rv.BoundHost()
	}
	if host == "" {
		return v.FindSnapshot(ctx, ref)
	}
	snaps, err := v.Snapshots(ctx)
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	var mine []vault.SnapshotRecord
	for _, s := range snaps {
		if s.Host == host {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		return vault.SnapshotRecord{}, fmt.Errorf("no snapshot of host %q yet: %w", host, vault.ErrNotFound)
	}
	s, err := engine.FindSnapshot(mine, "latest")
	if err != nil {
		return s, err
	}
	return v.FindSnapshot(ctx, s.ID.String())
}
