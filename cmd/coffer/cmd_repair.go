package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/server"
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
of such a snapshot lists it.

Through a vault server (COFFER_VAULT=https://…/VAULT) the server repairs
its vault; both need an owner (permission vault.repair). repair snapshots
without --dry-run is a critical change there: it answers with a request
for a security approver, naming the snapshots a dry run finds now, and
once approved those snapshots (and no others) are repaired. Deletion
protection holds as ever: an original within the vault's minimum
retention is not forgotten, and a forgotten one is soft-deleted.`

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

// repairIndex runs repair index on the vault, local or on its server.
func (a *app) repairIndex(ctx context.Context, dryRun bool) (api.RepairIndexReport, error) {
	if isRemote(a.vaultRef) {
		rv, err := a.openRemote(ctx, a.vaultRef)
		if err != nil {
			return api.RepairIndexReport{}, err
		}
		defer rv.Close()
		return rv.RepairIndex(ctx, dryRun)
	}
	v, err := a.openVault(ctx, false)
	if err != nil {
		return api.RepairIndexReport{}, err
	}
	defer v.Close()
	res, err := v.RepairIndex(ctx, dryRun, v.principal)
	if err != nil {
		return api.RepairIndexReport{}, err
	}
	return server.WireRepairIndex(res, dryRun), nil
}

// repairSnapshots runs repair snapshots on the vault, local or on its
// server (where a repair that writes becomes a request for approval).
func (a *app) repairSnapshots(ctx context.Context, dryRun bool) (api.RepairSnapshotsReport, error) {
	if isRemote(a.vaultRef) {
		rv, err := a.openRemote(ctx, a.vaultRef)
		if err != nil {
			return api.RepairSnapshotsReport{}, err
		}
		defer rv.Close()
		return rv.RepairSnapshots(ctx, dryRun)
	}
	v, err := a.openVault(ctx, false)
	if err != nil {
		return api.RepairSnapshotsReport{}, err
	}
	defer v.Close()
	out, err := v.RepairSnapshots(ctx, dryRun, v.principal)
	if err != nil {
		return api.RepairSnapshotsReport{}, err
	}
	return api.RepairSnapshotsReport{DryRun: dryRun, Snapshots: server.WireRepairedSnapshots(out)}, nil
}

// shortID is the short form of a hex ID from a report (a server's answer:
// printed through safeText all the same).
func shortID(s string) string {
	if id, err := vault.ParseID(s); err == nil {
		return id.Short()
	}
	return safeText(s)
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
			res, err := a.repairIndex(cmd.Context(), dryRun)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(res)
			}
			verb := map[bool]string{true: "would ", false: ""}[dryRun]
			for _, id := range res.Added {
				fmt.Fprintf(a.stdout, "%sadd pack %s (in the store, missing from the index)\n", verb, safeText(id))
			}
			for _, id := range res.Fixed {
				fmt.Fprintf(a.stdout, "%sfix the record of pack %s (it differed from the pack)\n", verb, safeText(id))
			}
			for _, id := range res.Removed {
				fmt.Fprintf(a.stdout, "%sremove the record of pack %s (missing from the store: its blobs are lost)\n", verb, safeText(id))
			}
			for _, l := range res.Left {
				fmt.Fprintf(a.stderr, "left: %s\n", safeText(l))
			}
			switch {
			case len(res.Added)+len(res.Fixed)+len(res.Removed) == 0:
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
			rep, err := a.repairSnapshots(cmd.Context(), dryRun)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(rep)
			}
			// A request for approval comes with what a dry run found.
			verb := map[bool]string{true: "would ", false: ""}[rep.DryRun]
			kept := 0
			for _, r := range rep.Snapshots {
				fmt.Fprintf(a.stdout, "snapshot %s (host %q, %s):\n", shortID(r.SnapshotID), safeText(r.Host), shortTime(r.Time))
				if r.RootLost {
					fmt.Fprintf(a.stdout, "  its root directory listing is lost: nothing can be kept\n")
				}
				for _, d := range r.Dropped {
					fmt.Fprintf(a.stdout, "  %sdrop %s (%s; a chunk is lost)\n", verb, safeText(d.Path), humanBytes(d.Size))
				}
				for _, d := range r.Emptied {
					fmt.Fprintf(a.stdout, "  %skeep %s empty (its listing is lost)\n", verb, safeText(d))
				}
				if r.RepairedID != "" && !rep.DryRun {
					fmt.Fprintf(a.stdout, "  repaired as snapshot %s\n", shortID(r.RepairedID))
				}
				if r.Forgotten {
					fmt.Fprintf(a.stdout, "  forgot snapshot %s (coffer undelete brings it back)\n", shortID(r.SnapshotID))
				}
				if r.ForgetError != "" {
					kept++
					fmt.Fprintf(a.stderr, "warning: snapshot %s stays, damaged: %s\n", shortID(r.SnapshotID), safeText(r.ForgetError))
				}
			}
			switch {
			case rep.Request != nil:
				printRequest(a, *rep.Request)
			case len(rep.Snapshots) == 0:
				fmt.Fprintln(a.stdout, "no snapshot uses lost data: nothing to repair")
			case dryRun:
				fmt.Fprintf(a.stdout, "dry run: %s would be repaired; nothing was written\n", plural(len(rep.Snapshots), "snapshot", "snapshots"))
			default:
				fmt.Fprintf(a.stdout, "%s repaired\n", plural(len(rep.Snapshots), "snapshot", "snapshots"))
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
