package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

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
		Bytes: s.Bytes, BytesAdded: s.BytesAdded, Duration: s.Duration.Seconds()}
}

func newSnapshotsCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "snapshots",
		Short:   "List the vault's snapshots",
		Example: "  coffer snapshots\n  coffer snapshots --json | jq '.[].id'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := a.open(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer v.Close()
			snaps, err := v.Snapshots(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				out := make([]snapshotJSON, 0, len(snaps))
				for _, s := range snaps {
					out = append(out, toSnapshotJSON(s))
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			if len(snaps) == 0 {
				fmt.Fprintln(a.stdout, "no snapshots yet")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tHOST\tPATHS\tTAGS\tFILES\tSIZE\tADDED")
			for _, s := range snaps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID.Short(), s.Time.Local().Format("2006-01-02 15:04:05"),
					s.Host, strings.Join(s.Paths, ","), strings.Join(s.Tags, ","), s.Files, humanBytes(s.Bytes), humanBytes(s.BytesAdded))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%d snapshots\n", len(snaps))
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}
