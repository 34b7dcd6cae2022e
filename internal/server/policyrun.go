package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

// DefaultRetentionAt is the time of day of the daily policy run when
// Options.RetentionAt is empty.
const DefaultRetentionAt = "03:00"

// PolicyGrace is how long before a daily run settings must have been
// stored for that run to apply them: a policy stored at 02:59 waits for
// the next day's 03:00 run, not one minute, so that whoever stored it has
// time to see what it does and change it.
const PolicyGrace = time.Hour

// ParseTimeOfDay reads a time of day "HH:MM" (00:00 to 23:59) as the
// time since midnight.
func ParseTimeOfDay(s string) (time.Duration, error) {
	hs, ms, ok := strings.Cut(s, ":")
	digits := func(x string) bool { return strings.Trim(x, "0123456789") == "" }
	ok = ok && digits(hs) && digits(ms)
	h, herr := strconv.Atoi(hs)
	m, merr := strconv.Atoi(ms)
	if !ok || herr != nil || merr != nil || len(hs) == 0 || len(hs) > 2 || len(ms) != 2 || h < 0 || h > 23 || m < 0 || m > 59 {
		return 0, fmt.Errorf("time of day %q: give hours and minutes, 00:00 to 23:59, such as 03:00", s)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, nil
}

// policySlot returns the newest daily run time at or before now: the
// day's RetentionAt in the server's time zone, or the previous day's when
// now is earlier. On a day when the clocks skip that time, the run is at
// the wall-clock time Go normalizes it to (an hour later).
func (s *Server) policySlot(now time.Time) time.Time {
	loc := s.opt.Location
	if loc == nil {
		loc = time.UTC
	}
	n := now.In(loc)
	h, m := int(s.retentionAt/time.Hour), int(s.retentionAt%time.Hour/time.Minute)
	slot := time.Date(n.Year(), n.Month(), n.Day(), h, m, 0, 0, loc)
	if slot.After(n) {
		y, mo, d := n.Date()
		slot = time.Date(y, mo, d-1, h, m, 0, 0, loc)
	}
	return slot
}

// applyPolicies runs the daily policy run (Maintain calls it every
// minute): each vault's stored retention policy is applied once per day,
// at the first maintenance at or after the day's RetentionAt (or, after a
// server was down then, at its first maintenance later that day). The
// snapshots the policy does not keep are forgotten (soft delete), except
// those the minimum retention still protects.
//
// A run applies only settings stored at least PolicyGrace before its time
// (any settings change counts): whoever stored a policy gets until a later
// run to see what it does (coffer forget --policy --dry-run) and change or
// remove it.
func (s *Server) applyPolicies(ctx context.Context) error {
	names, _, err := s.vaultNames(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if err := s.applyPolicy(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("vault %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

const policyPrincipal = "server (stored policy)"

func (s *Server) applyPolicy(ctx context.Context, name string) error {
	rec, err := s.cat.Vault(ctx, name)
	if err != nil {
		return nil // a directory without a vault: not ours to judge here
	}
	now := s.opt.Now().UTC()
	slot := s.policySlot(now)
	// Unverified, only to skip vaults without a policy, or not due, without
	// opening them: a policy removed by a catalog writer deletes nothing,
	// and one whose change time a catalog writer moved can only apply the
	// policy the key holders stored (verified below), at another run.
	settings, err := s.cat.Settings(ctx, rec.ID)
	if err != nil || settings.Policy == "" || !settings.Updated.Before(slot.Add(-PolicyGrace)) {
		return err
	}
	evs, err := s.cat.Events(ctx, rec.ID)
	if err != nil {
		return err
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Event == vault.EventPolicyApplied {
			// Once per run, whatever its outcome: a run that failed is
			// not retried every minute (each try would be an audit entry).
			if !evs[i].Time.Before(slot) {
				return nil
			}
			break
		}
	}
	eng, err := s.vault(ctx, name)
	if err != nil {
		return err
	}
	// SECURITY: the policy and the protection it is checked against are
	// the ones the vault's key holders wrote (docs/format.md §8.4).
	if settings, err = eng.Settings(ctx); err != nil {
		s.vaultEvent(ctx, rec.ID, policyPrincipal, vault.EventPolicyApplied, "not applied: "+err.Error(), false)
		return err
	}
	if settings.Policy == "" || !settings.Updated.Before(slot.Add(-PolicyGrace)) {
		return nil
	}
	p, err := protect.ParsePolicy(settings.Policy)
	if err != nil {
		return err
	}
	p = p.HostGrouped()
	snaps, err := eng.Snapshots(ctx)
	if err != nil {
		return err
	}
	plan, err := protect.PlanPolicy(settings, p, snaps, now)
	if err != nil {
		s.vaultEvent(ctx, rec.ID, policyPrincipal, vault.EventPolicyApplied, fmt.Sprintf("%s: not applied: %v", p, err), false)
		return err
	}
	var chain map[string]string
	if len(plan.Forget) > 0 {
		if _, err := eng.Forget(ctx, protect.IDs(plan.Forget), policyPrincipal); err != nil {
			s.vaultEvent(ctx, rec.ID, policyPrincipal, vault.EventPolicyApplied, fmt.Sprintf("%s: failed: %v", p, err), false)
			return err
		}
		// The forgets are chain entries: the audit log pins them too.
		chain = map[string]string{"chain": eng.LastChainHead().String()}
	}
	s.vaultEvent(ctx, rec.ID, policyPrincipal, vault.EventPolicyApplied,
		fmt.Sprintf("%s: forgot %d snapshot(s); %d more not kept by the policy are still within the minimum retention", p, len(plan.Forget), len(plan.Protected)), true, chain)
	s.log.Info("stored policy applied", "vault", name, "policy", p.String(), "forgot", len(plan.Forget), "protected", len(plan.Protected))
	return nil
}
