package main

import (
	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/vault"
)

// maxEntriesFlag adds --max-entries, which overrides the bound a walk of
// a snapshot takes from its record (agent.MaxEntries).
func maxEntriesFlag(cmd *cobra.Command, n *uint64) {
	cmd.Flags().Uint64Var(n, "max-entries", 0, "visit at most this many entries of a snapshot instead of what its record counts (only for a snapshot you trust whose record undercounts, e.g. made before records counted symlinks)")
}

// entryBound is the most entries a walk of s visits: what its record
// counts, or the user's --max-entries.
func entryBound(s vault.SnapshotRecord, override uint64) uint64 {
	if override > 0 {
		return override
	}
	return agent.MaxEntries(s)
}
