package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/retention"
)

func newPolicyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Store a vault's retention policy",
		Long: `A vault can store a retention policy (the --keep-* rules of coffer forget).

A vault server applies it once a day, at its daily run (coffer server
--retention-at, 03:00 server time by default): what the policy does not keep
is forgotten (soft delete), except snapshots younger than the minimum
retention. A policy is never applied at once: a run applies only what was
stored at least an hour before it (with 03:00, a policy stored after 02:00 is
first applied at 03:00 the next day). "coffer policy set --dry-run" before
storing it, or "coffer forget --policy --dry-run" after, shows what it would
forget and keep.

A local vault has no daily run: "coffer forget --policy" applies the stored
policy (run it from cron or a systemd timer to apply it every day).

An immutable vault's policy can be lengthened but not shortened. A vault server
stores only policies grouped by host (--group-by host, host,paths or
host,tags; the default is host,paths), so that one machine's backups never
count against another's.`,
	}
	cmd.AddCommand(newPolicySetCmd(a), newPolicyShowCmd(a))
	return cmd
}

// storePolicy is the stored form of p: the JSON of retention.Policy,
// bound to the vault's settings chain (docs/format.md §8.4). Users never
// see it: they see p.String() and policyJSON.
func storePolicy(p retention.Policy) (string, error) {
	b, err := json.Marshal(p)
	return string(b), err
}

func newPolicySetCmd(a *app) *cobra.Command {
	var pf policyFlags
	var clear, jsonOut, dryRun bool
	cmd := &cobra.Command{
		Use:   "set [VAULT]",
		Short: "Store the vault's retention policy",
		Long: `Store the vault's retention policy, replacing the one stored before. It prints
the policy as the flags that set it.

--dry-run stores nothing: it says whether the vault would accept the policy
and lists which snapshots it would forget and keep if it were applied now
(as coffer forget --policy --dry-run does for the stored policy).`,
		Example: `  coffer policy set prod --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run
  coffer policy set prod --keep-daily 7 --keep-weekly 5 --keep-monthly 12
  coffer policy set --clear`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.vaultArg(args, 0); err != nil {
				return err
			}
			p, has, err := pf.policy(cmd)
			if err != nil {
				return err
			}
			switch {
			case clear && has:
				return errors.New("give --keep-* flags or --clear, not both")
			case !clear && !has:
				return errors.New("give the policy's --keep-* flags, or --clear to remove it")
			}
			if dryRun {
				return a.policySetDryRun(cmd.Context(), p, clear, jsonOut)
			}
			var stored string
			if !clear {
				if stored, err = storePolicy(p); err != nil {
					return err
				}
			}
			return a.setPolicy(cmd, api.SettingsChange{Policy: &stored}, jsonOut)
		},
	}
	pf.register(cmd, true)
	cmd.Flags().BoolVar(&clear, "clear", false, "remove the stored policy (snapshots are then kept until forgotten by hand)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "store nothing: show whether the vault would accept the policy and what it would forget and keep")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// setPolicy stores a policy change and prints the stored policy as flags.
func (a *app) setPolicy(cmd *cobra.Command, change api.SettingsChange, jsonOut bool) error {
	ctx := cmd.Context()
	v, closer, err := a.openProtection(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	// As coffer vault set: a change that could never be undone (a longer
	// policy on an immutable local vault that is not single-user) needs a
	// yes on a terminal.
	cur, err := v.settings(ctx)
	if err != nil {
		return err
	}
	next := cur
	change.Apply(&next)
	_, remote := v.(*remoteVault)
	if why := oneWay(cur, next, !remote && !cur.SingleUser); why != "" {
		if err := a.confirmOneWay(engine.DescribeSettingsChange(cur, next), why, false); err != nil {
			return err
		}
	}
	res, err := v.changeSettings(ctx, change, false)
	if err != nil {
		return err
	}
	// What the vault holds now (a request leaves the old policy).
	pol, err := storedPolicyJSON(string(res.Settings.Policy))
	if err != nil {
		return err
	}
	if jsonOut {
		return a.printJSON(struct {
			Policy  *policyJSON  `json:"policy"`
			Changed string       `json:"changed,omitempty"`
			Request *api.Request `json:"request,omitempty"`
		}{pol, res.Changed, res.Request})
	}
	switch {
	case res.Request != nil:
		printRequest(a, *res.Request)
		return nil
	case res.Changed == "":
		fmt.Fprint(a.stdout, "nothing changed: ")
	}
	if pol == nil {
		fmt.Fprintln(a.stdout, "no stored policy: snapshots are kept until forgotten")
		return nil
	}
	fmt.Fprintf(a.stdout, "policy: %s\n", pol.Flags)
	if remote {
		fmt.Fprintln(a.stdout, `the server applies it at its daily run (coffer server --retention-at, 03:00 by default), not now, and not within the hour; "coffer forget --policy --dry-run" shows what it would forget`)
	} else {
		fmt.Fprintln(a.stdout, `"coffer forget --policy" applies it (--dry-run: show what it would forget)`)
	}
	return nil
}

func newPolicyShowCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "show [VAULT]",
		Short: "Show the vault's stored retention policy",
		Long: `Show the vault's stored retention policy as the flags that set it. With --json:
{"policy": {"keep_last": 0, "keep_hourly": 0, "keep_daily": 7, "keep_weekly": 5,
"keep_monthly": 0, "keep_yearly": 0, "keep_within": "", "keep_tags": [],
"group_by": "host,paths", "flags": "--keep-daily 7 --keep-weekly 5 --group-by host,paths"}},
or {"policy": null} when there is none.`,
		Example: "  coffer policy show prod --json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.vaultArg(args, 0); err != nil {
				return err
			}
			ctx := cmd.Context()
			v, closer, err := a.openProtection(ctx)
			if err != nil {
				return err
			}
			defer closer.Close()
			s, err := v.settings(ctx)
			if err != nil {
				return err
			}
			pol, err := storedPolicyJSON(s.Policy)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(struct {
					Policy *policyJSON `json:"policy"`
				}{pol})
			}
			if pol == nil {
				fmt.Fprintln(a.stdout, "no stored policy: snapshots are kept until forgotten")
				return nil
			}
			fmt.Fprintf(a.stdout, "policy: %s\n", pol.Flags)
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}
