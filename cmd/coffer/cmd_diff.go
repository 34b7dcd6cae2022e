package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
)

func newDiffCmd(a *app) *cobra.Command {
	var jsonOut bool
	var host string
	cmd := &cobra.Command{
		Use:   "diff SNAPSHOT1 SNAPSHOT2",
		Short: "Show what changed between two snapshots",
		Long: `Show the paths added (+), removed (-), modified (M), changed type (T) or
changed only in metadata (U) from SNAPSHOT1 to SNAPSHOT2.`,
		Example: "  coffer diff 1a2b3c4d latest\n  coffer diff 1a2b 5e6f --json",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			s1, err := findSnapshot(ctx, v, args[0], host)
			if err != nil {
				return err
			}
			s2, err := findSnapshot(ctx, v, args[1], host)
			if err != nil {
				return err
			}
			counts := map[byte]int{}
			enc := json.NewEncoder(a.jsonStdout)
			err = agent.Diff(ctx, v, s1.Tree, s2.Tree, func(c agent.Change) error {
				counts[c.Op]++
				if jsonOut {
					return enc.Encode(map[string]string{"op": string(c.Op), "path": c.Path})
				}
				_, err := fmt.Fprintf(a.stdout, "%c  %s\n", c.Op, safeText(c.Path))
				return err
			})
			if err != nil {
				return err
			}
			if !jsonOut {
				fmt.Fprintf(a.stdout, "%d added, %d removed, %d modified, %d type changed, %d metadata only\n",
					counts['+'], counts['-'], counts['M'], counts['T'], counts['U'])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print one JSON object per line")
	latestHostFlag(cmd, &host)
	return cmd
}
