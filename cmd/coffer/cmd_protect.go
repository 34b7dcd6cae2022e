package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/vault"
)

func newForgetCmd(a *app) *cobra.Command {
	var jsonOut, dryRun, usePolicy bool
	var pf policyFlags
	var sf selectFlags
	cmd := &cobra.Command{
		Use:   "forget [SNAPSHOT...]",
		Short: "Soft-delete snapshots, by ID or by a retention policy",
		Long: `Forget snapshots: they leave the snapshot list but keep all their data for the
vault's soft-delete period (14 days by default; coffer vault show), during which
"coffer undelete ID" brings them back. After it, "coffer prune" may reclaim their
space. Nothing is ever deleted at once.

Name snapshots by ID (or unique prefix), or give a policy with --keep-* flags:
every snapshot the policy does not keep is forgotten, per group of snapshots
with the same host and paths (--group-by). --dry-run shows what would go.

--host, --path and --tag (as for coffer snapshots) limit a policy to the
snapshots they select: the others are neither kept nor forgotten, whatever the
policy says. With no filter the policy applies to every host's snapshots. With
IDs, filters given must select every snapshot named, or nothing is forgotten.
--policy applies the vault's stored policy (coffer policy set) now, as a vault
server's daily run would: what it does not keep is forgotten, except snapshots
younger than the minimum retention, which stay and are listed.

A snapshot younger than the vault's minimum retention (--min-retention of
coffer vault set) cannot be forgotten: if any snapshot named by ID cannot,
none is; a policy leaves such snapshots in place and lists them.`,
		Example: `  coffer forget 1a2b3c4d
  coffer forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run
  coffer forget --keep-last 3 --keep-within 30d --keep-tag monthly --group-by host
  coffer forget --host web01 --path /srv --keep-daily 14 --dry-run
  coffer forget --policy --dry-run`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			sel, err := sf.selection()
			if err != nil {
				return err
			}
			policy, hasPolicy, err := pf.policy(cmd)
			if err != nil {
				return err
			}
			if usePolicy {
				if hasPolicy || len(args) > 0 {
					return errors.New("--policy applies the stored policy: give no snapshot IDs or --keep-* flags with it")
				}
				if !sel.snapshotFilter.Empty() {
					return errors.New("--policy applies the stored policy to the whole vault, as the daily run does: give no --host, --path or --tag with it (or give the --keep-* flags instead of --policy)")
				}
				return a.forgetStoredPolicy(ctx, dryRun, jsonOut)
			}
			switch {
			case hasPolicy && len(args) > 0:
				return errors.New("give snapshot IDs or --keep-* flags, not both")
			case !hasPolicy && len(args) == 0:
				return errors.New("name the snapshots to forget, give a policy with --keep-* flags, or apply the stored policy with --policy (coffer forget --help)")
			}
			v, closer, err := a.openProtection(ctx)
			if err != nil {
				return err
			}
			defer closer.Close()
			snaps, err := v.Snapshots(ctx)
			if err != nil {
				return err
			}
			settings, err := v.settings(ctx)
			if err != nil {
				return err
			}
			now := a.now()
			var ids []vault.ID
			var groups []retention.Group
			var protected []vault.SnapshotRecord
			if hasPolicy {
				// The policy sees only the selected snapshots: it keeps or
				// forgets those, and never one the filters leave out. As at
				// the daily run, what the minimum retention protects stays
				// and is listed.
				plan, err := protect.PlanPolicy(settings, policy, sel.Select(snaps), now)
				if err != nil {
					return err
				}
				groups, protected, ids = plan.Groups, plan.Protected, protect.IDs(plan.Forget)
			} else {
				for _, ref := range args {
					s, err := engine.FindSnapshot(snaps, ref)
					if err != nil {
						return fmt.Errorf("nothing was forgotten: %w", err)
					}
					if !sel.Match(s) {
						return notSelected(s, sel.snapshotFilter)
					}
					ids = append(ids, s.ID)
				}
			}
			var done []vault.SnapshotRecord
			expiry := protect.Expiry(settings, now)
			if dryRun {
				// What the protection would refuse; nothing changes.
				for _, s := range snaps {
					if slices.Contains(ids, s.ID) {
						if err := protect.Forget(settings, s, now); err != nil {
							return fmt.Errorf("--dry-run: %w", err)
						}
						done = append(done, s)
					}
				}
			} else if len(ids) > 0 {
				if done, expiry, err = v.forget(ctx, ids); err != nil {
					return err
				}
			}
			r := forgetResult{DryRun: dryRun, Groups: groups, Done: done, Protected: protected, Expiry: expiry, Settings: settings}
			if hasPolicy {
				r.Policy = &policy
			}
			return printForget(a, r, jsonOut)
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be forgotten; change nothing")
	cmd.Flags().BoolVar(&usePolicy, "policy", false, "apply the vault's stored policy (coffer policy show) now, as a vault server's daily run does")
	pf.register(cmd, true)
	sf.register(cmd, false)
	return cmd
}

// policyFlags are the --keep-* flags of forget and policy set.
type policyFlags struct {
	last, hourly, daily, weekly, monthly, yearly int
	within, groupBy                              string
	tags                                         []string
}

func (f *policyFlags) register(cmd *cobra.Command, groupBy bool) {
	fl := cmd.Flags()
	fl.IntVar(&f.last, "keep-last", 0, "keep the N newest snapshots (-1: all)")
	fl.IntVar(&f.hourly, "keep-hourly", 0, "keep the newest snapshot of each of the last N hours that have one (-1: all)")
	fl.IntVar(&f.daily, "keep-daily", 0, "likewise for days")
	fl.IntVar(&f.weekly, "keep-weekly", 0, "likewise for ISO weeks")
	fl.IntVar(&f.monthly, "keep-monthly", 0, "likewise for months")
	fl.IntVar(&f.yearly, "keep-yearly", 0, "likewise for years")
	fl.StringVar(&f.within, "keep-within", "", "keep every snapshot within this long of the group's newest (30d, 12h, 1y2m)")
	fl.StringArrayVar(&f.tags, "keep-tag", nil, "keep every snapshot with this tag (repeatable)")
	if groupBy {
		fl.StringVar(&f.groupBy, "group-by", "host,paths", "apply the policy per group of snapshots sharing these fields: host, paths, tags")
	}
}

// policy builds the policy the flags give; has reports whether any
// --keep-* flag was given.
func (f *policyFlags) policy(cmd *cobra.Command) (p retention.Policy, has bool, err error) {
	for _, name := range []string{"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly", "keep-within", "keep-tag"} {
		if cmd.Flags().Changed(name) {
			has = true
		}
	}
	if !has {
		return p, false, nil
	}
	p = retention.Policy{Last: f.last, Hourly: f.hourly, Daily: f.daily, Weekly: f.weekly, Monthly: f.monthly, Yearly: f.yearly, Tags: f.tags}
	if f.within != "" {
		if p.Within, err = retention.ParseDuration(f.within); err != nil {
			return p, true, fmt.Errorf("--keep-within: %w", err)
		}
	}
	if cmd.Flags().Lookup("group-by") != nil {
		if p.GroupBy, err = retention.ParseGroupBy(f.groupBy); err != nil {
			return p, true, fmt.Errorf("--group-by: %w", err)
		}
	}
	return p, true, p.Validate()
}

func newUndeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "undelete SNAPSHOT...",
		Short: "Bring back forgotten snapshots, with all their data",
		Long: `Bring back snapshots forgotten with "coffer forget", as long as prune has not
removed them (their soft-delete period has not ended, or prune has not run
since). "coffer snapshots --deleted" lists them.`,
		Example: "  coffer undelete 1a2b3c4d",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			v, closer, err := a.openProtection(ctx)
			if err != nil {
				return err
			}
			defer closer.Close()
			for _, ref := range args {
				s, err := v.undelete(ctx, ref)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "snapshot %s (%s, %s) is back\n", s.ID.Short(), tableTime(s.Time), safeText(s.Host))
			}
			return nil
		},
	}
}

func newPruneCmd(a *app) *cobra.Command {
	var jsonOut, dryRun bool
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Reclaim space no live or soft-deleted snapshot needs",
		Long: `Remove forgotten snapshots whose soft-delete period has ended, then the packs no
remaining snapshot (live or soft-deleted) needs. Safe to run while backups run:
a pack is first condemned, and deleted only when every backup that began before
that has finished and no snapshot turns out to need it (a later prune deletes
what had to wait). An interrupted prune leaves a vault that check passes.

A pack more than a tenth unneeded is repacked: what is still needed is copied
into new packs (decrypted and sealed again under the current data key) before
the old pack is condemned.`,
		Example: "  coffer prune --dry-run\n  coffer prune --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			v, closer, err := a.openProtection(ctx)
			if err != nil {
				return err
			}
			defer closer.Close()
			rep, err := v.prune(ctx, dryRun)
			if err != nil {
				return err
			}
			return printPrune(a, rep, jsonOut)
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be removed; delete nothing")
	return cmd
}

func printPrune(a *app, rep api.PruneReport, jsonOut bool) error {
	if jsonOut {
		if err := a.printJSON(rep); err != nil {
			return err
		}
		return pruneProblems(a, rep)
	}
	verb := func(done, would string) string {
		if rep.DryRun {
			return would
		}
		return done
	}
	fmt.Fprintf(a.stdout, "%s %s; %s kept until %s soft-delete period ends\n",
		verb("removed", "would remove"), plural(len(rep.Expired), "expired snapshot", "expired snapshots"), plural(rep.StillDeleted, "forgotten snapshot", "forgotten snapshots"), pick(rep.StillDeleted, "its", "their"))
	fmt.Fprintf(a.stdout, "%s %s (%s)\n", verb("condemned", "would condemn"), plural(rep.Condemned, "unused pack", "unused packs"), humanBytes(uint64(rep.CondemnedBytes)))
	fmt.Fprintf(a.stdout, "%s %s, %s reclaimed\n", verb("deleted", "would delete"), plural(rep.Deleted, "pack", "packs"), humanBytes(uint64(rep.DeletedBytes)))
	if rep.Waiting > 0 {
		fmt.Fprintf(a.stdout, "%s (%s) %s for %s to finish; run prune again later\n", plural(rep.Waiting, "condemned pack", "condemned packs"), humanBytes(uint64(rep.WaitingBytes)), pick(rep.Waiting, "waits", "wait"), plural(rep.Sessions, "running backup", "running backups"))
	}
	if rep.Reprieved > 0 {
		fmt.Fprintf(a.stdout, "%s kept: a snapshot saved meanwhile needs %s\n", plural(rep.Reprieved, "condemned pack", "condemned packs"), pick(rep.Reprieved, "it", "them"))
	}
	if rep.Repacked > 0 {
		fmt.Fprintf(a.stdout, "%s %s: %s still needed %s into new packs\n", verb("repacked", "would repack"), plural(rep.Repacked, "partly used pack", "partly used packs"), humanBytes(uint64(rep.RepackedBytes)), verb("copied", "would be copied"))
	}
	if rep.PartlyUsed > 0 {
		fmt.Fprintf(a.stdout, "%s kept whole: %s unused inside, under the repacking threshold\n", plural(rep.PartlyUsed, "pack", "packs"), humanBytes(uint64(rep.UnusedBytes)))
	}
	return pruneProblems(a, rep)
}

// pruneProblems reports the snapshots prune could not walk: a damaged
// vault ends the command with the partial-success exit code.
func pruneProblems(a *app, rep api.PruneReport) error {
	for _, u := range rep.Unwalkable {
		fmt.Fprintf(a.stderr, "warning: snapshot %s\n", u)
	}
	switch {
	case rep.Incomplete:
		return &partialError{"nothing was condemned or deleted: a snapshot's tree cannot be read, so no pack can be proved unneeded; run coffer check, then forget the snapshots it names"}
	case len(rep.Unwalkable) > 0:
		return &partialError{fmt.Sprintf("%s %s trees that are not trees and cannot be restored in full; forget %s", plural(len(rep.Unwalkable), "snapshot", "snapshots"), pick(len(rep.Unwalkable), "holds", "hold"), pick(len(rep.Unwalkable), "it", "them"))}
	}
	return nil
}

func newVaultSetCmd(a *app) *cobra.Command {
	var softDelete, immut, minRet, scope string
	var days int
	var confirm, jsonOut bool
	cmd := &cobra.Command{
		Use:   "set [VAULT]",
		Short: "Change a vault's deletion protection: soft delete, immutability, minimum retention",
		Long: `Change how a vault protects its snapshots from deletion (docs/retention.md):

  --soft-delete on|off|always-on   forgotten snapshots are kept (and can be
                                   undeleted) for --soft-delete-days; always-on
                                   can never be turned off again
  --soft-delete-days N             14 to 180 (default 14)
  --immutability enabled|disabled|locked
                                   enabled: no retention may be shortened and
                                   soft delete not turned off; disabled again
                                   only while unlocked. locked: irreversible,
                                   and soft delete becomes always-on
  --min-retention D                no snapshot may be forgotten before it is
                                   this old (30d, 12w, 1y)
  --dedup-scope vault|source       vault: backups of every source deduplicate
                                   against each other, and every agent can
                                   probe (and read) the whole vault. source:
                                   each source (coffer source add) has its own
                                   dedup domain and lists, probes and reads only
                                   its own backups; identical files of two
                                   sources are stored twice (docs/operations.md)

Critical changes (turning soft delete off or shortening it, disabling
immutability, lowering the minimum retention, widening the dedup scope from
source to vault) need a second person's approval.
A local vault has one principal: they need --confirm on a single-user vault
(the one a first backup makes, or "coffer vault create --single-user"), and are
refused on any other.

A change that can never be undone is announced first and needs a yes on a
terminal, or --confirm: locking immutability or making soft delete always-on
(on any vault), and on a local vault that is not single-user, anything whose
undoing would be a critical change (enabling immutability, a longer soft
delete or minimum retention).`,
		Example: `  coffer vault set --soft-delete-days 30
  coffer vault set prod --immutability enabled --min-retention 30d
  coffer vault set --immutability locked      # irreversible
  coffer vault set prod --dedup-scope source`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.vaultArg(args, 0); err != nil {
				return err
			}
			f := cmd.Flags()
			if !f.Changed("soft-delete") && !f.Changed("soft-delete-days") && !f.Changed("immutability") && !f.Changed("min-retention") && !f.Changed("dedup-scope") {
				return errors.New("nothing to change: give --soft-delete, --soft-delete-days, --immutability, --min-retention or --dedup-scope")
			}
			var ret time.Duration
			if f.Changed("min-retention") {
				var err error
				if ret, err = retention.ParseDuration(minRet); err != nil {
					return fmt.Errorf("--min-retention: %w", err)
				}
				if ret > protect.MaxMinRetention {
					return fmt.Errorf("--min-retention %s: at most %s", minRet, protect.FormatDuration(protect.MaxMinRetention))
				}
			}
			var change api.SettingsChange
			if f.Changed("soft-delete") {
				change.SoftDelete = &softDelete
			}
			if f.Changed("soft-delete-days") {
				change.SoftDeleteDays = &days
			}
			if f.Changed("immutability") {
				change.Immutability = &immut
			}
			if f.Changed("min-retention") {
				secs := int64(ret / time.Second)
				change.MinRetentionSeconds = &secs
			}
			if f.Changed("dedup-scope") {
				if err := checkDedupScope(scope); err != nil {
					return err
				}
				change.DedupScope = &scope
			}
			return a.changeSettings(cmd.Context(), change, confirm, jsonOut)
		},
	}
	f := cmd.Flags()
	f.StringVar(&softDelete, "soft-delete", "", "on, off or always-on")
	f.IntVar(&days, "soft-delete-days", 0, "how long forgotten snapshots are kept: 14 to 180 days")
	f.StringVar(&immut, "immutability", "", "enabled, disabled or locked (irreversible)")
	f.StringVar(&minRet, "min-retention", "", "no snapshot may be forgotten before it is this old: 30d, 12w, 1y")
	f.StringVar(&scope, "dedup-scope", "", "vault (dedup across all sources) or source (a dedup domain per source)")
	f.BoolVar(&confirm, "confirm", false, "make a critical change on a single-user local vault, or a change that cannot be undone")
	f.BoolVar(&jsonOut, "json", false, "print the settings as JSON")
	return cmd
}

// changeSettings applies a settings change to the selected vault, or on
// a server files a request when it is critical.
func (a *app) changeSettings(ctx context.Context, change api.SettingsChange, confirm, jsonOut bool) error {
	v, closer, err := a.openProtection(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	// A change that could never be undone is announced, and needs a yes
	// on a terminal or --confirm.
	cur, err := v.settings(ctx)
	if err != nil {
		return err
	}
	next := cur
	change.Apply(&next)
	_, remote := v.(*remoteVault)
	if why := oneWay(cur, next, !remote && !cur.SingleUser); why != "" {
		what := "this change"
		if d := engine.DescribeSettingsChange(cur, next); d != "" {
			what = d
		}
		if err := a.confirmOneWay(what, why, confirm); err != nil {
			return err
		}
		if remote {
			confirm = false // consent given here; the server's approvals are its own
		}
	}
	res, err := v.changeSettings(ctx, change, confirm)
	if err != nil {
		return err
	}
	if jsonOut {
		return a.printJSON(res)
	}
	switch {
	case res.Request != nil:
		printRequest(a, *res.Request)
	case res.Changed != "":
		fmt.Fprintf(a.stdout, "changed: %s\n", res.Changed)
	default:
		fmt.Fprintln(a.stdout, "nothing changed")
	}
	return nil
}

// printRequest says that a critical change waits for approval.
func printRequest(a *app, r api.Request) {
	id := safeText(r.ID)
	fmt.Fprintf(a.stdout, "%s needs a second person's approval: request %s is waiting (expires %s).\n", safeText(r.Summary), id, shortTime(r.Expires))
	fmt.Fprintf(a.stdout, "A security approver runs: coffer approve %s   (or coffer reject %s)\n", id, id)
}

// checkDedupScope checks a --dedup-scope value.
func checkDedupScope(s string) error {
	if s != string(vault.DedupScopeVault) && s != string(vault.DedupScopeSource) {
		return fmt.Errorf("--dedup-scope %q: want vault or source", s)
	}
	return nil
}

func settingsJSON(s vault.VaultSettings) map[string]any {
	m := map[string]any{"soft_delete": s.SoftDelete, "soft_delete_days": s.SoftDeleteDays, "immutability": s.Immutability,
		"min_retention_seconds": int64(s.MinRetention / time.Second), "min_retention": protect.FormatDuration(s.MinRetention), "single_user": s.SingleUser,
		"dedup_scope": s.DedupScope.OrDefault()}
	if p, err := storedPolicyJSON(s.Policy); err == nil && p != nil {
		m["policy"] = p // the flags' object, never the stored Go struct
	}
	return m
}

func newVaultLogCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "log",
		Short: "List the vault's deletion and protection events",
		Long: `List every forget, undelete, prune, policy and protection change of the vault,
oldest first, with its time, who did it and the outcome (refusals included).
Key events are listed by "coffer key log".`,
		Example: "  coffer vault log\n  coffer vault log --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			v, closer, err := a.openProtection(ctx)
			if err != nil {
				return err
			}
			defer closer.Close()
			evs, err := v.events(ctx)
			if err != nil {
				return err
			}
			if jsonOut {
				if evs == nil {
					evs = []api.VaultEvent{}
				}
				return a.printJSON(evs)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tEVENT\tOUTCOME\tPRINCIPAL\tDETAIL")
			for _, e := range evs {
				outcome := "ok"
				if !e.OK {
					outcome = "REFUSED"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format(time.RFC3339), safeText(e.Event), outcome, safeText(e.Principal), safeText(e.Detail))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func newRequestsCmd(a *app) *cobra.Command {
	var jsonOut, all bool
	cmd := &cobra.Command{
		Use:   "requests",
		Short: "List multi-user authorization requests waiting for a decision",
		Long: `List the critical changes waiting for a security approver on a vault server:
shortening or turning off soft delete, disabling immutability, lowering the
minimum retention, switching from a customer-managed key to the platform key.
Each takes effect only when a different principal holding the security-approver
role approves it ("coffer approve ID"); it expires after 24 hours. --vault
https://host:port/NAME lists one vault's requests, https://host:port all.`,
		Example: "  coffer requests --vault https://backup.example.com:8443/prod\n  coffer requests --all --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, name, err := a.serverClient()
			if err != nil {
				return fmt.Errorf("requests live on a vault server: %w", err)
			}
			defer c.Close()
			rs, err := c.Requests(cmd.Context(), name, all)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(rs)
			}
			if len(rs) == 0 {
				fmt.Fprintln(a.stdout, "no requests waiting")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVAULT\tSTATE\tREQUESTED BY\tEXPIRES\tCHANGE")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", safeText(r.ID), safeText(r.Vault), safeText(r.State), safeText(r.Requester), shortTime(r.Expires), safeText(r.Summary))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVar(&all, "all", false, "also list decided and expired requests")
	return cmd
}

func newDecideCmd(a *app, approve bool) *cobra.Command {
	use, short := "reject REQUEST-ID", "Reject a multi-user authorization request"
	if approve {
		use, short = "approve REQUEST-ID", "Approve a multi-user authorization request: the change takes effect now"
	}
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `. Needs a security-approver token
(issued on the server machine with "coffer server approver-token"), and the
request must be someone else's.`,
		Example: "  coffer " + strings.Fields(use)[0] + " req_0123456789abcdef --vault https://backup.example.com:8443 --token @approver-token",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.serverClient()
			if err != nil {
				return fmt.Errorf("requests live on a vault server: %w", err)
			}
			defer c.Close()
			r, err := c.Decide(cmd.Context(), args[0], approve)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(r)
			}
			fmt.Fprintf(a.stdout, "request %s (%s on %s, by %s) %s\n", safeText(r.ID), safeText(r.Summary), safeText(r.Vault), safeText(r.Requester), safeText(r.State))
			if r.Result != "" {
				fmt.Fprintf(a.stdout, "%s\n", safeText(r.Result))
			}
			if strings.HasPrefix(r.Result, "approved, but it failed") {
				return errors.New("the approved change could not be made")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func newVaultDeleteCmd(a *app) *cobra.Command {
	var confirm bool
	cmd := &cobra.Command{
		Use:   "delete [VAULT]",
		Short: "Delete a vault and everything in it (needs a second person's approval)",
		Long: `Delete a vault: its snapshots, its data, its store. Never while its immutability
is enabled or locked and it holds snapshots. Otherwise it is a critical change:
on a vault server it becomes a request that a security approver must approve
("coffer approve ID"); a local vault can be deleted only if it was created
--single-user, and then with --confirm. A local vault's own event log goes with
it; a server keeps a deleted vault's events, and its name stays taken.`,
		Example: `  coffer vault delete prod --vault https://backup.example.com:8443
  coffer vault delete scratch --confirm     # a local single-user vault`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.vaultArg(args, 0); err != nil {
				return err
			}
			ctx := cmd.Context()
			if isRemote(a.vaultRef) {
				if confirm {
					return errors.New("--confirm is for single-user local vaults: on a server, a security approver approves")
				}
				rv, err := a.openRemote(ctx, a.vaultRef)
				if err != nil {
					return err
				}
				defer rv.Close()
				req, err := rv.Delete(ctx)
				if err != nil {
					return err
				}
				printRequest(a, *req)
				return nil
			}
			return a.deleteLocalVault(ctx, confirm)
		},
	}
	cmd.Flags().BoolVar(&confirm, "confirm", false, "delete a single-user local vault")
	return cmd
}

// deleteLocalVault deletes the selected local vault directory, under the
// same rules as a server's, with no key needed.
func (a *app) deleteLocalVault(ctx context.Context, confirm bool) error {
	loc, err := a.locate()
	if err != nil {
		return err
	}
	if _, err := os.Stat(catalogPath(loc.dir)); err != nil {
		return fmt.Errorf("no vault at %s: %w", loc.dir, vault.ErrNotFound)
	}
	// SECURITY: the settings that allow the deletion are the ones the
	// vault's key holders wrote (docs/format.md §8.4), checked with the
	// vault's keys; settings that do not verify refuse the deletion.
	// Only with the key out of reach (ErrKeyUnavailable, ErrWrongKey)
	// does it go by the catalog's row as it stands, unverified.
	var verified *vault.VaultSettings
	switch o, oerr := a.openVault(ctx, false); {
	case oerr == nil:
		st, serr := o.Settings(ctx)
		o.Close()
		if serr != nil {
			return serr
		}
		verified = &st
	case errors.Is(oerr, vault.ErrKeyUnavailable) || errors.Is(oerr, vault.ErrWrongKey):
		fmt.Fprintf(a.stderr, "warning: the vault's key is out of reach (%v): its deletion protection is read from the catalog unverified\n", oerr)
	default:
		return oerr
	}
	cat, err := sqlite.Open(catalogPath(loc.dir))
	if err != nil {
		return err
	}
	rec, err := cat.Vault(ctx, localCatalogName)
	var settings vault.VaultSettings
	var snaps []vault.SnapshotRecord
	if err == nil {
		settings, err = cat.Settings(ctx, rec.ID)
	}
	if err == nil && verified != nil {
		settings = *verified
	}
	if err == nil {
		snaps, err = cat.Snapshots(ctx, rec.ID)
	}
	if err != nil {
		cat.Close()
		return err
	}
	c, err := protect.VaultDelete(settings, len(snaps))
	if err == nil && !settings.SingleUser {
		err = fmt.Errorf("%w: deleting a vault needs a second person's approval, and a local vault has one principal; only a vault created with `coffer vault create --single-user` can be deleted here (with --confirm)", vault.ErrApprovalRequired)
	}
	if err == nil && !confirm {
		err = fmt.Errorf("%w: %s is a critical change: add --confirm to delete %s and its %s", vault.ErrApprovalRequired, strings.Join(c.Critical, "; "), loc.dir, plural(len(snaps), "snapshot", "snapshots"))
	}
	if err != nil {
		if eerr := cat.AddEvent(ctx, vault.VaultEvent{Vault: rec.ID, Time: a.now().UTC(), Principal: a.principal(), Event: vault.EventVaultDelete, Detail: "refused: " + err.Error()}); eerr != nil {
			fmt.Fprintf(a.stderr, "warning: could not record the refusal: %v\n", eerr)
		}
		cat.Close()
		return err
	}
	cat.Close()
	if err := os.RemoveAll(loc.dir); err != nil {
		return fmt.Errorf("delete %s: %w (run the command again to finish)", loc.dir, err)
	}
	if err := a.unlistVault(loc.keyFile, loc.dir); err != nil {
		fmt.Fprintf(a.stderr, "warning: could not remove %s from the list of vaults beside the key file: %v (coffer key retire --forget %s does it)\n", loc.dir, err, loc.dir)
	}
	fmt.Fprintf(a.stdout, "vault %s deleted with its %s (%s removed, its event log with it)\n", loc.name, plural(len(snaps), "snapshot", "snapshots"), loc.dir)
	return nil
}
