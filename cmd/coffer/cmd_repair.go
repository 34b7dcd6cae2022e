package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

const repairLong = `Repair a damaged vault in place, with restic's rules: a repair never makes
more data unreadable than is already lost, says what it dropped, and leaves
the vault passing coffer check (for the damage it repairs). Run it on the
machine that holds the vault and its key, while no backup runs, after
coffer check has named the damage; --dry-run says what it would do.

  coffer repair index       rebuilds the catalog's blob index from the packs
                            in the store: a pack the catalog lacks is added
                            from its own sealed header (only one that opens
                            under the vault's keys), a record that differs
                            from its pack is replaced, the record of a pack
                            missing from the store is removed. A pack whose
                            own header does not open is left alone.
  coffer repair snapshots   for every live snapshot that uses lost data (a
                            directory listing that cannot be read, a chunk
                            missing from the index or in a pack missing from
                            the store), writes a repaired snapshot without
                            it: files with a lost chunk are left out,
                            directories whose listing is lost are kept
                            empty. The repaired snapshot keeps the original's
                            time, host, paths and tags, and names it as its
                            parent; the original is forgotten (soft-deleted:
                            undelete finds it) when deletion protection
                            allows, else it stays and is listed. Run
                            repair index first: repair snapshots refuses
                            while packs in the store are not indexed.

Only what is missing is repaired: a chunk that is stored but fails
authentication (found by check --read-data) is not dropped, and a restore
of such a snapshot lists it. Repair is local only: through a server, the
server stamps a snapshot's time, its catalog is not the client's to rewrite,
and the API has no repair call yet.`

func newRepairCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Repair a damaged vault: rebuild the index, drop lost data from snapshots",
		Long:  repairLong,
		Example: `  coffer check                          # names the damage
  coffer repair index --dry-run
  coffer repair index
  coffer repair snapshots --dry-run     # lists the files each snapshot would lose
  coffer repair snapshots
  coffer check`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newRepairIndexCmd(a), newRepairSnapshotsCmd(a))
	return cmd
}

func (a *app) openForRepair(cmd *cobra.Command) (*openedVault, error) {
	if isRemote(a.vaultRef) {
		return nil, fmt.Errorf("coffer repair works on a local vault only: a server stamps the time of the snapshots it saves, keeps its catalog to itself, and has no repair call yet")
	}
	return a.openVault(cmd.Context(), false)
}

func newRepairIndexCmd(a *app) *cobra.Command {
	var dryRun, jsonOut bool
	cmd := &cobra.Command{
		Use:     "index",
		Short:   "Rebuild the catalog's blob index from the packs in the store",
		Long:    repairLong,
		Example: "  coffer repair index --dry-run\n  coffer repair index --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := a.openForRepair(cmd)
			if err != nil {
				return err
			}
			defer v.Close()
			res, err := v.RepairIndex(cmd.Context(), dryRun, v.principal)
			if err != nil {
				return err
			}
			if jsonOut {
				ids := func(l []vault.ID) []string {
					out := []string{}
					for _, id := range l {
						out = append(out, id.String())
					}
					return out
				}
				left := res.Left
				if left == nil {
					left = []string{}
				}
				enc := json.NewEncoder(a.jsonStdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"dry_run": dryRun, "added": ids(res.Added), "fixed": ids(res.Fixed), "removed": ids(res.Removed), "left": left})
			}
			verb := map[bool]string{true: "would ", false: ""}[dryRun]
			for _, id := range res.Added {
				fmt.Fprintf(a.stdout, "%sadd pack %s (in the store, missing from the index)\n", verb, id)
			}
			for _, id := range res.Fixed {
				fmt.Fprintf(a.stdout, "%sfix the record of pack %s (it differed from the pack)\n", verb, id)
			}
			for _, id := range res.Removed {
				fmt.Fprintf(a.stdout, "%sremove the record of pack %s (missing from the store: its blobs are lost)\n", verb, id)
			}
			for _, l := range res.Left {
				fmt.Fprintf(a.stderr, "left: %s\n", safeText(l))
			}
			switch {
			case !res.Changed():
				fmt.Fprintln(a.stdout, "the index matches the packs in the store: nothing to repair")
			case dryRun:
				fmt.Fprintln(a.stdout, "dry run: nothing was changed")
			default:
				fmt.Fprintf(a.stdout, "index repaired: %s added, %s fixed, %s removed; next: coffer repair snapshots, then coffer check\n",
					plural(len(res.Added), "pack", "packs"), plural(len(res.Fixed), "record", "records"), plural(len(res.Removed), "record", "records"))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would change, change nothing")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	return cmd
}

func newRepairSnapshotsCmd(a *app) *cobra.Command {
	var dryRun, jsonOut bool
	cmd := &cobra.Command{
		Use:     "snapshots",
		Short:   "Replace snapshots that use lost data by repaired ones",
		Long:    repairLong,
		Example: "  coffer repair snapshots --dry-run\n  coffer repair snapshots --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := a.openForRepair(cmd)
			if err != nil {
				return err
			}
			defer v.Close()
			out, err := v.RepairSnapshots(cmd.Context(), dryRun, v.principal)
			if err != nil {
				return err
			}
			if jsonOut {
				return printRepairJSON(a, out, dryRun)
			}
			verb := map[bool]string{true: "would ", false: ""}[dryRun]
			kept := 0
			for _, r := range out {
				fmt.Fprintf(a.stdout, "snapshot %s (host %q, %s):\n", r.Old.ID.Short(), safeText(r.Old.Host), r.Old.Time.UTC().Format(time.RFC3339))
				if r.RootLost {
					fmt.Fprintf(a.stdout, "  its root directory listing is lost: nothing can be kept\n")
				}
				for _, d := range r.Dropped {
					fmt.Fprintf(a.stdout, "  %sdrop %s (%s; a chunk is lost)\n", verb, safeText(d.Path), humanBytes(d.Size))
				}
				for _, d := range r.Emptied {
					fmt.Fprintf(a.stdout, "  %skeep %s empty (its listing is lost)\n", verb, safeText(d))
				}
				switch {
				case dryRun:
				case !r.New.ID.IsZero():
					fmt.Fprintf(a.stdout, "  repaired as snapshot %s\n", r.New.ID.Short())
				}
				if r.Forgotten {
					fmt.Fprintf(a.stdout, "  forgot snapshot %s (coffer undelete brings it back)\n", r.Old.ID.Short())
				}
				if r.ForgetErr != "" {
					kept++
					fmt.Fprintf(a.stderr, "warning: snapshot %s stays, damaged: %s\n", r.Old.ID.Short(), safeText(r.ForgetErr))
				}
			}
			switch {
			case len(out) == 0:
				fmt.Fprintln(a.stdout, "no snapshot uses lost data: nothing to repair")
			case dryRun:
				fmt.Fprintf(a.stdout, "dry run: %s would be repaired; nothing was written\n", plural(len(out), "snapshot", "snapshots"))
			default:
				fmt.Fprintf(a.stdout, "%s repaired\n", plural(len(out), "snapshot", "snapshots"))
			}
			if kept > 0 {
				return &partialError{fmt.Sprintf("repaired, but %s could not be forgotten (deletion protection) and still use lost data: check reports them until they may be forgotten", plural(kept, "original snapshot", "original snapshots"))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what each snapshot would lose, write nothing")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	return cmd
}

func printRepairJSON(a *app, out []engine.RepairedSnapshot, dryRun bool) error {
	list := []map[string]any{}
	for _, r := range out {
		dropped := []map[string]any{}
		for _, d := range r.Dropped {
			dropped = append(dropped, map[string]any{"path": d.Path, "size": d.Size})
		}
		emptied := r.Emptied
		if emptied == nil {
			emptied = []string{}
		}
		m := map[string]any{"snapshot_id": r.Old.ID.String(), "dropped": dropped, "emptied": emptied, "root_lost": r.RootLost,
			"forgotten": r.Forgotten}
		if !r.New.ID.IsZero() {
			m["repaired_id"] = r.New.ID.String()
		}
		if r.ForgetErr != "" {
			m["forget_error"] = r.ForgetErr
		}
		list = append(list, m)
	}
	enc := json.NewEncoder(a.jsonStdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"dry_run": dryRun, "snapshots": list})
}
