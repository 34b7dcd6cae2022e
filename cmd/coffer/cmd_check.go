package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/engine"
)

func newCheckCmd(a *app) *cobra.Command {
	var readData, jsonOut bool
	var subset string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify the vault's structure, and with --read-data every byte",
		Long: `Verify the vault: every catalogued pack is present with its size and an
authentic header matching the index, every snapshot object is authentic, and
every tree of every snapshot decodes and references only stored blobs. With
--read-data every blob is also decrypted, decompressed and checked against its
ID. Exits 1 and names each damaged object when anything is wrong, and for
each damaged blob the snapshots and files that use it: the path in the
snapshot and the file's byte range lost (offset–end), or the directory
whose listing is lost. A restore of such a snapshot restores the rest and
lists the same files (coffer restore --help).

--read-data-subset reads the data of some packs only (the structure of every
pack is still checked), as restic does:
  10%   that share of the packs, chosen at random (rounded up)
  1/5   the first of 5 fixed groups of packs: a pack's group depends on its
        ID alone, so 1/5 … 5/5 on five days read every pack once (a pack
        written since falls into one of the groups)
  2G    random packs adding up to at most 2 GiB (K, M, G, T: binary units)
The output names the subset and how many packs were read; damage in the
packs it did not read is not found.`,
		Example: "  coffer check\n  coffer check --read-data --json\n  coffer check --read-data-subset 1/7      # from a daily timer: the whole vault every week\n  coffer check --read-data-subset 10%\n  coffer check --read-data-subset 2G",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			opt := engine.CheckOptions{ReadData: readData}
			if cmd.Flags().Changed("read-data-subset") {
				sub, err := engine.ParseReadSubset(subset)
				if err != nil {
					return err
				}
				if readData {
					return fmt.Errorf("give --read-data or --read-data-subset, not both")
				}
				opt.Subset = sub
				readData = true
			}
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			prog := a.newProgress("check")
			var progFn func(engine.CheckProgress)
			if prog != nil {
				progFn = func(p engine.CheckProgress) {
					prog.update(agent.Progress{Files: uint64(p.Done), Bytes: uint64(p.Bytes), Current: p.Phase + " " + p.Current})
				}
			}
			rep, err := v.CheckVault(ctx, opt, progFn)
			prog.clear()
			if err != nil {
				return err
			}
			if jsonOut {
				enc := json.NewEncoder(a.jsonStdout)
				enc.SetIndent("", "  ")
				errs, warns := rep.Errors, rep.Warnings
				if errs == nil {
					errs = []string{}
				}
				if warns == nil {
					warns = []string{}
				}
				damaged := []map[string]any{}
				for _, u := range rep.Damaged {
					damaged = append(damaged, map[string]any{"snapshot_id": u.Snapshot.String(), "path": u.Path, "tree": u.Tree,
						"offset": u.Offset, "end": u.End, "blob": u.Blob.String()})
				}
				out := map[string]any{"ok": rep.OK(), "read_data": readData, "packs": rep.Packs, "blobs": rep.Blobs,
					"snapshots": rep.Snapshots, "trees": rep.Trees, "bytes_read": rep.BytesRead, "errors": errs, "warnings": warns,
					"damaged": damaged, "damaged_more": rep.DamagedMore}
				if !opt.Subset.IsZero() {
					out["read_data_subset"] = rep.Subset
					out["packs_read"] = rep.PacksRead
				}
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				for _, w := range rep.Warnings {
					fmt.Fprintf(a.stderr, "warning: %s\n", safeText(fmt.Sprint(w)))
				}
				for _, e := range rep.Errors {
					fmt.Fprintf(a.stderr, "error: %s\n", safeText(fmt.Sprint(e)))
				}
				for _, u := range rep.Damaged {
					fmt.Fprintf(a.stderr, "damaged: %s\n", safeText(u.String()))
				}
				if rep.DamagedMore > 0 {
					fmt.Fprintf(a.stderr, "damaged: and %s of damaged blobs not listed (the first %d are)\n", plural(rep.DamagedMore, "more use", "more uses"), engine.MaxDamageUses)
				}
				what := "structure"
				switch {
				case !opt.Subset.IsZero():
					what = fmt.Sprintf("structure, and data of subset %s (%s of %d)", subsetText(opt.Subset), plural(rep.PacksRead, "pack", "packs"), rep.Packs)
				case readData:
					what = "structure and data"
				}
				fmt.Fprintf(a.stdout, "checked %s: %s, %s, %s, %s", what, plural(rep.Packs, "pack", "packs"), plural(rep.Blobs, "blob", "blobs"), plural(rep.Snapshots, "snapshot", "snapshots"), plural(rep.Trees, "tree", "trees"))
				if readData {
					fmt.Fprintf(a.stdout, ", %s read", humanBytes(uint64(rep.BytesRead)))
				}
				fmt.Fprintln(a.stdout)
			}
			if !rep.OK() {
				return fmt.Errorf("check found %s: the vault is damaged (each is listed above)", plural(len(rep.Errors), "error", "errors"))
			}
			if !jsonOut {
				fmt.Fprintln(a.stdout, "no errors found")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&readData, "read-data", false, "decrypt and verify every blob")
	cmd.Flags().StringVar(&subset, "read-data-subset", "", "decrypt and verify the blobs of some packs only: 10%, n/m (1/5) or a size (2G)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the report as JSON")
	return cmd
}

// subsetText shows a read-data subset as the user would write it.
func subsetText(s engine.ReadSubset) string {
	if s.Bytes > 0 {
		return humanBytes(uint64(s.Bytes))
	}
	return s.String()
}
