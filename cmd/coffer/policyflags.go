package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/vault"
)

// policyJSON is a retention policy as the CLI prints it with --json: one
// key per flag, snake_case, every key always present, and the policy as
// the flags that set it. It is not the stored form (a Go struct's JSON,
// bound to the vault's settings chain), which users never see.
type policyJSON struct {
	KeepLast    int      `json:"keep_last"`
	KeepHourly  int      `json:"keep_hourly"`
	KeepDaily   int      `json:"keep_daily"`
	KeepWeekly  int      `json:"keep_weekly"`
	KeepMonthly int      `json:"keep_monthly"`
	KeepYearly  int      `json:"keep_yearly"`
	KeepWithin  string   `json:"keep_within"` // "30d", "" when unused
	KeepTags    []string `json:"keep_tags"`
	GroupBy     string   `json:"group_by"`
	Flags       string   `json:"flags"`
}

func toPolicyJSON(p retention.Policy) *policyJSON {
	j := &policyJSON{KeepLast: p.Last, KeepHourly: p.Hourly, KeepDaily: p.Daily, KeepWeekly: p.Weekly,
		KeepMonthly: p.Monthly, KeepYearly: p.Yearly, KeepTags: append([]string{}, p.Tags...),
		GroupBy: p.GroupBy.String(), Flags: p.String()}
	if p.Within != 0 {
		j.KeepWithin = retention.FormatDuration(p.Within)
	}
	return j
}

// storedPolicyJSON is toPolicyJSON of a stored policy, nil when there is
// none.
func storedPolicyJSON(stored string) (*policyJSON, error) {
	if stored == "" {
		return nil, nil
	}
	p, err := protect.ParsePolicy(stored)
	if err != nil {
		return nil, err
	}
	return toPolicyJSON(p), nil
}

// errNoPolicy says that the vault stores no policy, and how to store one.
var errNoPolicy = errors.New(`the vault has no stored retention policy: store one with "coffer policy set --keep-daily 7 --keep-weekly 5" (see "coffer policy set --help"), or give the --keep-* flags to forget`)

// serverPolicy checks what a vault server requires of a stored policy
// (internal/server checkSettingsChange): grouping by host, so that one
// machine's backups never count against another's.
func serverPolicy(p retention.Policy) error {
	if g := p.GroupBy; g != 0 && g&retention.GroupByHost == 0 {
		return fmt.Errorf("--group-by %s: a vault server stores only policies grouped by host, so that one machine's snapshots never count against another's (add host: --group-by host,%s)", g, g)
	}
	return nil
}

// forgetResult is what forget did, or would do (DryRun), for printing.
type forgetResult struct {
	DryRun    bool
	Policy    *retention.Policy // the stored or proposed policy, when one decided
	Groups    []retention.Group // the policy's decisions, when a policy decided
	Done      []vault.SnapshotRecord
	Protected []vault.SnapshotRecord // not kept, but within the minimum retention
	Expiry    time.Time
	Settings  vault.VaultSettings
}

// printForget prints what forget did or would do: each group's decisions
// when a policy decided, then a summary (or one JSON object).
func printForget(a *app, r forgetResult, jsonOut bool) error {
	if jsonOut {
		type decision struct {
			ID      string   `json:"id"`
			Time    string   `json:"time"`
			Keep    bool     `json:"keep"`
			Reasons []string `json:"reasons"`
		}
		type group struct {
			Key       string     `json:"group"`
			Decisions []decision `json:"snapshots"`
		}
		out := struct {
			DryRun    bool            `json:"dry_run"`
			Policy    *policyJSON     `json:"policy,omitempty"`
			Forgotten []snapshotJSON  `json:"forgotten"`
			Protected *[]snapshotJSON `json:"protected,omitempty"` // with a stored or proposed policy: always there
			Until     time.Time       `json:"recoverable_until"`
			Groups    []group         `json:"groups,omitempty"`
		}{DryRun: r.DryRun, Forgotten: []snapshotJSON{}, Until: r.Expiry}
		if r.Policy != nil {
			out.Policy = toPolicyJSON(*r.Policy)
			out.Protected = &[]snapshotJSON{}
		}
		for _, s := range r.Done {
			out.Forgotten = append(out.Forgotten, toSnapshotJSON(s))
		}
		for _, s := range r.Protected {
			*out.Protected = append(*out.Protected, toSnapshotJSON(s))
		}
		for _, g := range r.Groups {
			og := group{Key: g.Key}
			for _, d := range g.Decisions {
				reasons := d.Reasons
				if reasons == nil {
					reasons = []string{}
				}
				og.Decisions = append(og.Decisions, decision{ID: d.Snapshot.ID.String(), Time: d.Snapshot.Time.Format(time.RFC3339), Keep: d.Keep, Reasons: reasons})
			}
			out.Groups = append(out.Groups, og)
		}
		return a.printJSON(out)
	}
	protected := make(map[vault.ID]bool, len(r.Protected))
	for _, s := range r.Protected {
		protected[s.ID] = true
	}
	for _, g := range r.Groups {
		fmt.Fprintf(a.stdout, "%s:\n", safeText(g.Key))
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		for _, d := range g.Decisions {
			what, reasons := "forget", strings.Join(d.Reasons, ", ")
			switch {
			case d.Keep:
				what = "keep"
			case protected[d.Snapshot.ID]:
				what, reasons = "keep", "minimum retention"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", d.Snapshot.ID.Short(), tableTime(d.Snapshot.Time), what, reasons)
		}
		tw.Flush()
	}
	if n := len(r.Protected); n > 0 {
		fmt.Fprintf(a.stdout, "%s not kept by the policy %s younger than the minimum retention (--min-retention %s) and %s\n",
			plural(n, "snapshot", "snapshots"), pick(n, "is", "are"), protect.FormatDuration(r.Settings.MinRetention), pick(n, "stays", "stay"))
	}
	verb := "forgot"
	if r.DryRun {
		verb = "would forget"
	}
	switch n := len(r.Done); {
	case n == 0:
		fmt.Fprintf(a.stdout, "%s no snapshots\n", verb)
	case r.Settings.SoftDelete == vault.SoftDeleteOff:
		fmt.Fprintf(a.stdout, "%s %s; soft delete is off, so prune may reclaim %s at once\n", verb, plural(n, "snapshot", "snapshots"), pick(n, "it", "them"))
	default:
		fmt.Fprintf(a.stdout, "%s %s: recoverable with `coffer undelete ID` until %s (soft delete, %s)\n",
			verb, plural(n, "snapshot", "snapshots"), shortTime(r.Expiry), plural(r.Settings.SoftDeleteDays, "day", "days"))
	}
	return nil
}

// planPolicy decides what applying p to v now would do, as the vault
// server's daily run decides (protect.PlanPolicy): on a server, grouped by
// host as the server applies it. It changes nothing.
func (a *app) planPolicy(ctx context.Context, v protection, p retention.Policy, settings vault.VaultSettings) (forgetResult, error) {
	if _, remote := v.(*remoteVault); remote {
		p = p.HostGrouped()
	}
	snaps, err := v.Snapshots(ctx)
	if err != nil {
		return forgetResult{}, err
	}
	now := a.now()
	plan, err := protect.PlanPolicy(settings, p, snaps, now)
	if err != nil {
		return forgetResult{}, err
	}
	return forgetResult{DryRun: true, Policy: &p, Groups: plan.Groups, Done: plan.Forget, Protected: plan.Protected,
		Expiry: protect.Expiry(settings, now), Settings: settings}, nil
}

// forgetStoredPolicy is "coffer forget --policy": the vault's stored
// policy applied now, as the server's daily run applies it (snapshots the
// minimum retention protects stay), or with dryRun only shown.
func (a *app) forgetStoredPolicy(ctx context.Context, dryRun, jsonOut bool) error {
	v, closer, err := a.openProtection(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	settings, err := v.settings(ctx)
	if err != nil {
		return err
	}
	if settings.Policy == "" {
		return errNoPolicy
	}
	p, err := protect.ParsePolicy(settings.Policy)
	if err != nil {
		return err
	}
	r, err := a.planPolicy(ctx, v, p, settings)
	if err != nil {
		return err
	}
	if !dryRun {
		r.DryRun = false
		if len(r.Done) > 0 {
			if r.Done, r.Expiry, err = v.forget(ctx, protect.IDs(r.Done)); err != nil {
				return err
			}
		}
	}
	if !jsonOut {
		fmt.Fprintf(a.stdout, "stored policy: %s\n", r.Policy)
	}
	return printForget(a, r, jsonOut)
}

// policySetDryRun is "coffer policy set --dry-run": whether the vault
// would accept the policy (its protection, and a server's grouping rule),
// and which snapshots it would forget and keep if applied now. It only
// reads: nothing is stored, no event or audit entry says "changed".
func (a *app) policySetDryRun(ctx context.Context, p retention.Policy, clear, jsonOut bool) error {
	v, closer, err := a.openProtection(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	cur, err := v.settings(ctx)
	if err != nil {
		return err
	}
	next := cur
	if !clear {
		if _, remote := v.(*remoteVault); remote {
			if err := serverPolicy(p); err != nil {
				return err
			}
		}
		stored, err := storePolicy(p)
		if err != nil {
			return err
		}
		next.Policy = stored
	} else {
		next.Policy = ""
	}
	if _, err := protect.Settings(cur, next); err != nil {
		return fmt.Errorf("--dry-run: policy set would be refused: %w", err)
	}
	if clear {
		old, err := storedPolicyJSON(cur.Policy)
		if err != nil {
			return err
		}
		if jsonOut {
			return a.printJSON(struct {
				DryRun bool        `json:"dry_run"`
				Policy *policyJSON `json:"policy"`
				Remove *policyJSON `json:"removes"`
			}{true, nil, old})
		}
		if old == nil {
			fmt.Fprintln(a.stdout, "dry run: the vault has no stored policy; nothing to remove")
			return nil
		}
		fmt.Fprintf(a.stdout, "dry run: would remove the stored policy %s; snapshots would then be kept until forgotten by hand\n", old.Flags)
		return nil
	}
	r, err := a.planPolicy(ctx, v, p, cur)
	if err != nil {
		return err
	}
	if !jsonOut {
		fmt.Fprintf(a.stdout, "policy (dry run, not stored): %s\n", r.Policy)
		fmt.Fprintln(a.stdout, "if it were applied now:")
	}
	if err := printForget(a, r, jsonOut); err != nil {
		return err
	}
	if !jsonOut {
		fmt.Fprintln(a.stdout, "nothing was stored: run the same command without --dry-run to store the policy")
	}
	return nil
}
