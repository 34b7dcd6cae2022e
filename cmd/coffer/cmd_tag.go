package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// replacer is what tag and rewrite need of a vault, local or on a server.
type replacer interface {
	protection
	retag(ctx context.Context, id vault.ID, c engine.TagChange) (vault.SnapshotRecord, vault.SnapshotRecord, error)
}

func (o *openedVault) retag(ctx context.Context, id vault.ID, c engine.TagChange) (vault.SnapshotRecord, vault.SnapshotRecord, error) {
	return o.Retag(ctx, id, c, o.principal)
}

func (r *remoteVault) retag(ctx context.Context, id vault.ID, c engine.TagChange) (vault.SnapshotRecord, vault.SnapshotRecord, error) {
	return r.Vault.Retag(ctx, id, api.Retag{Set: c.Set, Add: c.Add, Remove: c.Remove})
}

// replacedJSON is one line of tag's and rewrite's --json output.
type replacedJSON struct {
	Original  string       `json:"original"`
	Snapshot  snapshotJSON `json:"snapshot"`
	Unchanged bool         `json:"unchanged,omitempty"`
}

func newTagCmd(a *app) *cobra.Command {
	var add, remove, set []string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "tag [--add TAG] [--remove TAG] [--set TAG] SNAPSHOT...",
		Short: "Change the tags of snapshots",
		Long: `Change the tags of the named snapshots (IDs or unique prefixes). --set replaces
all tags (give --set "" to clear them), then --remove takes tags away and --add
adds them.

Snapshots are sealed, so a tag change writes a new snapshot with the new tags
and everything else of the original (time, host, paths, files) and forgets the
original, as restic does: the original stays recoverable with coffer undelete
for the soft-delete period. It needs the permission to forget (owner or
backup-contributor on a server), and a snapshot younger than the vault's
minimum retention cannot be retagged. A snapshot whose tags would not change
is left as it is.`,
		Example: `  coffer tag --add keep 1a2b3c4d
  coffer tag --remove daily --add monthly 1a2b3c4d 5e6f7a8b
  coffer tag --set "" 1a2b3c4d`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c := engine.TagChange{Add: add, Remove: remove}
			if cmd.Flags().Changed("set") {
				s := slices.DeleteFunc(slices.Clone(set), func(t string) bool { return t == "" })
				c.Set = &s
			}
			if c.Set == nil && len(add)+len(remove) == 0 {
				return errors.New("give --add, --remove or --set")
			}
			p, closer, err := a.openProtection(ctx)
			if err != nil {
				return err
			}
			defer closer.Close()
			v, ok := p.(replacer)
			if !ok {
				return errors.New("this vault cannot change tags")
			}
			snaps, err := v.Snapshots(ctx)
			if err != nil {
				return err
			}
			var todo []vault.SnapshotRecord
			for _, ref := range args {
				if ref == "latest" {
					// "latest" is a host's newest (selectflags.go); a change
					// of history names its snapshots exactly.
					return fmt.Errorf("%s: name snapshots by ID (coffer snapshots lists them), not latest", "no tags were changed")
				}
				s, err := engine.FindSnapshot(snaps, ref)
				if err != nil {
					return fmt.Errorf("no tags were changed: %w", err)
				}
				if !slices.ContainsFunc(todo, func(t vault.SnapshotRecord) bool { return t.ID == s.ID }) {
					todo = append(todo, s)
				}
			}
			var out []replacedJSON
			changed := 0
			for _, s := range todo {
				if slices.Equal(c.Apply(s.Tags), s.Tags) {
					out = append(out, replacedJSON{Original: s.ID.String(), Snapshot: toSnapshotJSON(s), Unchanged: true})
					if !jsonOut {
						fmt.Fprintf(a.stdout, "snapshot %s unchanged (tags %s)\n", s.ID.Short(), tagList(s.Tags))
					}
					continue
				}
				n, _, err := v.retag(ctx, s.ID, c)
				if err != nil {
					return fmt.Errorf("snapshot %s: %w (%d snapshot(s) changed before it)", s.ID.Short(), err, changed)
				}
				changed++
				out = append(out, replacedJSON{Original: s.ID.String(), Snapshot: toSnapshotJSON(n)})
				if !jsonOut {
					fmt.Fprintf(a.stdout, "snapshot %s is now %s (tags %s); the original is forgotten (coffer undelete %s brings it back)\n", s.ID.Short(), n.ID.Short(), tagList(n.Tags), s.ID.Short())
				}
			}
			if jsonOut {
				return a.printJSON(out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&add, "add", nil, "add this tag (repeatable)")
	f.StringArrayVar(&remove, "remove", nil, "remove this tag (repeatable)")
	f.StringArrayVar(&set, "set", nil, "replace all tags by these (repeatable; --set \"\" clears them)")
	f.BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func tagList(tags []string) string {
	if len(tags) == 0 {
		return "none"
	}
	return strings.Join(tags, ",")
}
