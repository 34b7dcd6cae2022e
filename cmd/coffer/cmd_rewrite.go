package main

import (
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

func newRewriteCmd(a *app) *cobra.Command {
	var x excludeFlags
	var jsonOut, dryRun bool
	cmd := &cobra.Command{
		Use:   "rewrite --exclude PATTERN [--exclude-file FILE] SNAPSHOT...",
		Short: "Remove files from snapshots",
		Long: `Write each named snapshot again without what the patterns match (the patterns
of coffer backup --exclude, --iexclude, --exclude-file, --iexclude-file). Only
trees are rewritten; no file data is read or uploaded. The new snapshot keeps
the original's time, host, paths and tags, and the original is forgotten: it
stays recoverable with coffer undelete for the soft-delete period, and its data
goes only when prune removes it afterwards.

This needs the permission to forget, and a snapshot younger than the vault's
minimum retention cannot be rewritten. A snapshot the patterns do not touch is
left as it is.
On a vault server the server rewrites the trees (it is sent the patterns);
--dry-run works on local vaults only.`,
		Example: `  coffer rewrite --exclude '*.key' 1a2b3c4d
  coffer rewrite --exclude-file secrets.txt --dry-run 1a2b3c4d 5e6f7a8b`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if len(x.ifPresent) > 0 || x.caches || x.oneFS || x.largerThan != "" || x.listsPaths() {
				return errors.New("rewrite takes only patterns (--exclude, --iexclude, --exclude-file, --iexclude-file)")
			}
			rules, err := x.rules(a)
			if err != nil {
				return err
			}
			if len(rules.Patterns) == 0 {
				return errors.New("give the patterns to leave out with --exclude or --exclude-file")
			}
			match, err := agent.ExcludeRules{Patterns: rules.Patterns}.Matcher()
			if err != nil {
				return err
			}
			p, closer, err := a.openProtection(ctx)
			if err != nil {
				return err
			}
			defer closer.Close()
			snaps, err := p.Snapshots(ctx)
			if err != nil {
				return err
			}
			var todo []vault.SnapshotRecord
			for _, ref := range args {
				if ref == "latest" {
					// "latest" is a host's newest (selectflags.go); a change
					// of history names its snapshots exactly.
					return fmt.Errorf("%s: name snapshots by ID (coffer snapshots lists them), not latest", "nothing was rewritten")
				}
				s, err := engine.FindSnapshot(snaps, ref)
				if err != nil {
					return fmt.Errorf("nothing was rewritten: %w", err)
				}
				if !slices.ContainsFunc(todo, func(t vault.SnapshotRecord) bool { return t.ID == s.ID }) {
					todo = append(todo, s)
				}
			}
			if rv, ok := p.(*remoteVault); ok {
				// The server rewrites the trees itself: it takes patterns,
				// never a tree (docs/format.md §8.5).
				if dryRun {
					return errors.New("--dry-run works on local vaults only")
				}
				var pats []api.ExcludePattern
				for _, pt := range rules.Patterns {
					pats = append(pats, api.ExcludePattern{Pattern: pt.Pattern, IgnoreCase: pt.IgnoreCase})
				}
				var out []replacedJSON
				for _, s := range todo {
					n, _, err := rv.Rewrite(ctx, s.ID, pats)
					if err != nil {
						return fmt.Errorf("snapshot %s: %w", s.ID.Short(), err)
					}
					out = append(out, replacedJSON{Original: s.ID.String(), Snapshot: toSnapshotJSON(n)})
					if !jsonOut {
						fmt.Fprintf(a.stdout, "snapshot %s is now %s (%d files, was %d); the original is forgotten (coffer undelete %s brings it back)\n", s.ID.Short(), n.ID.Short(), n.Files, s.Files, s.ID.Short())
					}
				}
				if jsonOut {
					return a.printJSON(out)
				}
				return nil
			}
			v := p.(*openedVault)
			var out []replacedJSON
			for _, s := range todo {
				root, changed, err := v.RewriteTree(ctx, s, match)
				if err != nil {
					return fmt.Errorf("snapshot %s: %w", s.ID.Short(), err)
				}
				if !changed || dryRun {
					out = append(out, replacedJSON{Original: s.ID.String(), Snapshot: toSnapshotJSON(s), Unchanged: !changed})
					if !jsonOut {
						msg := "nothing matches"
						if changed {
							msg = "would be rewritten (--dry-run)"
						}
						fmt.Fprintf(a.stdout, "snapshot %s: %s\n", s.ID.Short(), msg)
					}
					continue
				}
				if err := v.Flush(ctx); err != nil {
					return err
				}
				n, _, err := v.Replace(ctx, s.ID, func(o vault.SnapshotRecord) (engine.Derived, error) {
					return engine.Derived{Tags: o.Tags, Tree: root, BytesAdded: 0}, nil
				}, v.principal)
				if err != nil {
					return fmt.Errorf("snapshot %s: %w", s.ID.Short(), err)
				}
				out = append(out, replacedJSON{Original: s.ID.String(), Snapshot: toSnapshotJSON(n)})
				if !jsonOut {
					fmt.Fprintf(a.stdout, "snapshot %s is now %s (%d files, was %d); the original is forgotten (coffer undelete %s brings it back)\n", s.ID.Short(), n.ID.Short(), n.Files, s.Files, s.ID.Short())
				}
			}
			if jsonOut {
				return a.printJSON(out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	x.register(f)
	f.BoolVarP(&dryRun, "dry-run", "n", false, "say which snapshots would change; change nothing")
	f.BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}
