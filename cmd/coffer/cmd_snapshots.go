package main

import (
	"fmt"
	"github.com/coffer-backup/coffer/internal/api"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

type snapshotJSON struct {
	ID         string    `json:"id"`
	ShortID    string    `json:"short_id"`
	Time       time.Time `json:"time"`
	Host       string    `json:"host"`
	Paths      []string  `json:"paths"`
	Tags       []string  `json:"tags"`
	Parent     string    `json:"parent,omitempty"`
	Tree       string    `json:"tree"`
	Files      uint64    `json:"files"`
	Dirs       uint64    `json:"dirs"`
	Bytes      uint64    `json:"bytes"`
	BytesAdded uint64    `json:"bytes_added"`
	Duration   float64   `json:"duration_seconds"`
	// CopiedFrom marks a copy (coffer copy): the source vault, the
	// original's ID and time, as the copier claimed them.
	CopiedFrom *api.SnapshotCopy `json:"copied_from,omitempty"`
	// Soft-deleted snapshots (snapshots --deleted) only:
	Deleted   *time.Time `json:"deleted,omitempty"`
	DeletedBy string     `json:"deleted_by,omitempty"`
	Expires   *time.Time `json:"recoverable_until,omitempty"`
}

func idOrEmpty(id vault.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

func toSnapshotJSON(s vault.SnapshotRecord) snapshotJSON {
	tags := s.Tags
	if tags == nil {
		tags = []string{}
	}
	return snapshotJSON{ID: s.ID.String(), ShortID: s.ID.Short(), Time: s.Time, Host: s.Host, Paths: s.Paths,
		Tags: tags, Parent: idOrEmpty(s.Parent), Tree: s.Tree.String(), Files: s.Files, Dirs: s.Dirs,
		Bytes: s.Bytes, BytesAdded: s.BytesAdded, Duration: s.Duration.Seconds(), CopiedFrom: api.FromSnapshot(s).CopiedFrom}
}

func newSnapshotsCmd(a *app) *cobra.Command {
	var jsonOut, deleted bool
	var sf selectFlags
	cmd := &cobra.Command{
		Use:   "snapshots",
		Short: "List the vault's snapshots",
		Long: `List the vault's snapshots, of every host, oldest first. --host, --path and
--tag list only some: --host (repeatable) those of any of the hosts named,
--path (repeatable) those that include every path named among their backed-up
paths, --tag a,b those tagged both a and b (repeatable: any of the lists; ''
for the untagged). With --deleted, list the forgotten (soft-deleted) ones
instead, with when each was forgotten, by whom, and until when "coffer
undelete" can bring it back.`,
		Example: "  coffer snapshots\n  coffer snapshots --host web01 --path /srv --tag nightly\n  coffer snapshots --json | jq '.[].id'\n  coffer snapshots --deleted",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := sf.selection()
			if err != nil {
				return err
			}
			if deleted {
				return a.deletedSnapshots(cmd, jsonOut, sel.snapshotFilter)
			}
			v, err := a.open(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer v.Close()
			snaps, err := v.Snapshots(cmd.Context())
			if err != nil {
				return err
			}
			all := len(snaps)
			snaps = sel.Select(snaps)
			if jsonOut {
				out := make([]snapshotJSON, 0, len(snaps))
				for _, s := range snaps {
					out = append(out, toSnapshotJSON(s))
				}
				return a.printJSON(out)
			}
			if len(snaps) == 0 {
				if all > 0 {
					fmt.Fprintf(a.stdout, "no snapshot matches %s (of %s)\n", safeText(sel.String()), plural(all, "snapshot", "snapshots"))
					return nil
				}
				fmt.Fprintln(a.stdout, "no snapshots yet")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tHOST\tPATHS\tTAGS\tFILES\tSIZE\tADDED")
			for _, s := range snaps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID.Short(), tableTime(s.Time),
					safeText(s.Host), safeList(s.Paths, ","), safeList(s.Tags, ","), s.Files, humanBytes(s.Bytes), humanBytes(s.BytesAdded))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, plural(len(snaps), "snapshot", "snapshots"))
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVar(&deleted, "deleted", false, "list the forgotten (soft-deleted) snapshots")
	sf.register(cmd, false)
	return cmd
}

// deletedSnapshots lists the soft-deleted snapshots.
func (a *app) deletedSnapshots(cmd *cobra.Command, jsonOut bool, f snapshotFilter) error {
	ctx := cmd.Context()
	v, closer, err := a.openProtection(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	settings, err := v.settings(ctx)
	if err != nil {
		return err
	}
	all, err := v.deleted(ctx)
	if err != nil {
		return err
	}
	out := []snapshotJSON{}
	for _, s := range all {
		if s.Deleted.IsZero() || !f.Match(s) {
			continue
		}
		j := toSnapshotJSON(s)
		del, exp := s.Deleted, protect.Expiry(settings, s.Deleted)
		j.Deleted, j.DeletedBy, j.Expires = &del, s.DeletedBy, &exp
		out = append(out, j)
	}
	if jsonOut {
		return a.printJSON(out)
	}
	if len(out) == 0 {
		fmt.Fprintln(a.stdout, "no forgotten snapshots")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tHOST\tPATHS\tFORGOTTEN\tBY\tRECOVERABLE UNTIL")
	for _, s := range out {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ShortID, tableTime(s.Time), safeText(s.Host),
			safeList(s.Paths, ","), shortTime(*s.Deleted), safeText(s.DeletedBy), shortTime(*s.Expires))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%s (coffer undelete ID brings one back)\n", plural(len(out), "forgotten snapshot", "forgotten snapshots"))
	return nil
}
