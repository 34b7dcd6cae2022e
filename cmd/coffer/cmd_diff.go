package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
)

func newDiffCmd(a *app) *cobra.Command {
	var jsonOut bool
	var sf selectFlags
	var maxEntries uint64
	cmd := &cobra.Command{
		Use:   "diff SNAPSHOT1 SNAPSHOT2",
		Short: "Show what changed between two snapshots",
		Long: `Show the paths added (+), removed (-), modified (M), changed type (T) or
changed only in metadata (U) from SNAPSHOT1 to SNAPSHOT2. It visits no more
entries than the two snapshots' records count, and stops with an error at a
snapshot whose trees expand to more (--max-entries overrides the sum).

"latest" is this host's newest snapshot ($COFFER_HOST or this machine's host
name; with an agent's token, the agent's); --host, --path and --tag narrow the
choice, --any-host widens it to every host. A snapshot named by ID is used whatever its
host, but refused when filters given exclude it.`,
		Example: "  coffer diff 1a2b3c4d latest\n  coffer diff 1a2b 5e6f --json\n  coffer diff 1a2b3c4d latest --path /srv",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, err := sf.selection()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			s1, err := a.findSnapshot(ctx, v, args[0], sel)
			if err != nil {
				return err
			}
			s2, err := a.findSnapshot(ctx, v, args[1], sel)
			if err != nil {
				return err
			}
			if s1.Domain != s2.Domain {
				// Blob IDs of two dedup domains differ for the same
				// content: every file would compare as modified.
				return fmt.Errorf("snapshots %s and %s are of two sources of a vault whose dedup scope is \"source\" (dedup domains %s and %s): their contents cannot be compared; compare each with a snapshot of its own source", s1.ID.Short(), s2.ID.Short(), domainName(s1.Domain), domainName(s2.Domain))
			}
			repo, err := v.ForSnapshot(ctx, s1)
			if err != nil {
				return err
			}
			counts := map[byte]int{}
			enc := json.NewEncoder(a.jsonStdout)
			bound := maxEntries
			if bound == 0 {
				bound = entryBound(s1, 0) + entryBound(s2, 0)
				if bound < entryBound(s1, 0) {
					bound = ^uint64(0)
				}
			}
			err = agent.Diff(ctx, repo, s1.Tree, s2.Tree, bound, func(c agent.Change) error {
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
	sf.register(cmd, true)
	maxEntriesFlag(cmd, &maxEntries)
	return cmd
}

// domainName names a dedup domain for messages.
func domainName(d string) string {
	if d == "" {
		return "vault-wide"
	}
	return safeText(d)
}
