// Package protect holds the rules of deletion protection
// (docs/retention.md): which operations a vault's soft-delete,
// immutability and minimum-retention settings forbid outright
// (vault.ErrImmutable, naming the setting), and which are critical, that
// is, allowed only with a second person's approval (multi-user
// authorization) or, on a single-user local vault, with --confirm.
//
// The rules are pure functions of the settings, so that one table test
// covers every state and every operation, and the engine, the CLI and
// the server all ask the same questions.
package protect

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/vault"
)

// MaxMinRetention bounds the minimum retention: 100 years (36500 days),
// far beyond any retention rule, and far below the 292 years a duration
// can hold, so that no value wraps.
const MaxMinRetention = 36500 * 24 * time.Hour

// ErrInvalid reports a setting value out of range or a change that is
// not a change (bad input rather than a protection refusal).
var ErrInvalid = errors.New("invalid setting")

// immutable reports whether the vault's immutability is enabled or
// locked.
func immutable(s vault.VaultSettings) bool {
	return s.Immutability == vault.ImmutabilityEnabled || s.Immutability == vault.ImmutabilityLocked
}

func forbid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{vault.ErrImmutable}, args...)...)
}

// Forget checks that snapshot snap may be forgotten (soft-deleted) now:
// no snapshot may be removed before it is as old as the vault's minimum
// retention, whatever the immutability.
func Forget(s vault.VaultSettings, snap vault.SnapshotRecord, now time.Time) error {
	if age := now.Sub(snap.Time); s.MinRetention > 0 && age < s.MinRetention {
		return forbid("snapshot %s is %s old and the vault's minimum retention (--min-retention %s) keeps it until %s",
			snap.ID.Short(), FormatDuration(age), FormatDuration(s.MinRetention), snap.Time.Add(s.MinRetention).UTC().Format(time.RFC3339))
	}
	return nil
}

// Expiry is when a snapshot forgotten at deleted may be pruned: at once
// with soft delete off, otherwise after the soft-delete period.
func Expiry(s vault.VaultSettings, deleted time.Time) time.Time {
	if s.SoftDelete == vault.SoftDeleteOff {
		return deleted
	}
	return deleted.Add(time.Duration(s.SoftDeleteDays) * 24 * time.Hour)
}

// Prunable checks that prune may remove the forgotten snapshot snap now:
// only once its soft-delete period has ended (at once with soft delete
// off). A live snapshot is never prunable.
func Prunable(s vault.VaultSettings, snap vault.SnapshotRecord, now time.Time) error {
	if snap.Deleted.IsZero() {
		return forbid("snapshot %s is live: only forgotten snapshots are pruned, after their --soft-delete-days", snap.ID.Short())
	}
	if exp := Expiry(s, snap.Deleted); now.Before(exp) {
		return forbid("snapshot %s was forgotten %s ago and soft delete (--soft-delete %s, --soft-delete-days %d) keeps it until %s",
			snap.ID.Short(), FormatDuration(now.Sub(snap.Deleted).Round(time.Hour)), s.SoftDelete, s.SoftDeleteDays, exp.UTC().Format(time.RFC3339))
	}
	return nil
}

// Change describes what a settings change needs: nothing more (no
// Critical reasons), or a second person's approval for each reason in
// Critical.
type Change struct {
	Critical []string // e.g. "shortening soft delete from 30 to 14 days"
}

// NeedsApproval reports whether the change is critical.
func (c Change) NeedsApproval() bool { return len(c.Critical) > 0 }

// Validate checks that s is a well-formed set of settings.
func Validate(s vault.VaultSettings) error {
	if err := validateValues(s); err != nil {
		return err
	}
	if s.Immutability == vault.ImmutabilityLocked && s.SoftDelete != vault.SoftDeleteAlwaysOn {
		return fmt.Errorf("%w: a locked vault's soft delete is always-on", ErrInvalid)
	}
	return nil
}

// validateValues checks each setting's value on its own.
func validateValues(s vault.VaultSettings) error {
	switch s.SoftDelete {
	case vault.SoftDeleteOn, vault.SoftDeleteOff, vault.SoftDeleteAlwaysOn:
	default:
		return fmt.Errorf("%w: soft delete %q: want on, off or always-on", ErrInvalid, s.SoftDelete)
	}
	if s.SoftDeleteDays < vault.MinSoftDeleteDays || s.SoftDeleteDays > vault.MaxSoftDeleteDays {
		return fmt.Errorf("%w: --soft-delete-days %d: want %d to %d", ErrInvalid, s.SoftDeleteDays, vault.MinSoftDeleteDays, vault.MaxSoftDeleteDays)
	}
	switch s.Immutability {
	case vault.ImmutabilityDisabled, vault.ImmutabilityEnabled, vault.ImmutabilityLocked:
	default:
		return fmt.Errorf("%w: immutability %q: want disabled, enabled or locked", ErrInvalid, s.Immutability)
	}
	if s.MinRetention < 0 || s.MinRetention > MaxMinRetention {
		return fmt.Errorf("%w: --min-retention %s: want 0 to %s", ErrInvalid, FormatDuration(s.MinRetention), FormatDuration(MaxMinRetention))
	}
	if s.Policy != "" {
		if _, err := ParsePolicy(s.Policy); err != nil {
			return err
		}
	}
	switch s.DedupScope {
	case "", vault.DedupScopeVault, vault.DedupScopeSource:
	default:
		return fmt.Errorf("%w: dedup scope %q: want vault or source", ErrInvalid, s.DedupScope)
	}
	return nil
}

// ParsePolicy reads a stored retention policy.
func ParsePolicy(s string) (retention.Policy, error) {
	var p retention.Policy
	if s == "" {
		return p, nil
	}
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return p, fmt.Errorf("%w: stored retention policy: %v", ErrInvalid, err)
	}
	return p, nil
}

// Settings checks a change of a vault's settings from old to new. It
// fails with vault.ErrImmutable, naming the setting, when the vault's
// protection forbids the change; otherwise it says which parts of the
// change are critical. Locking immutability turns soft delete always-on:
// the caller sets that in new before asking (Lock does).
func Settings(old, new vault.VaultSettings) (Change, error) {
	var c Change
	if err := validateValues(new); err != nil {
		return c, err
	}
	if new.SingleUser != old.SingleUser {
		return c, fmt.Errorf("%w: single-user is chosen when a vault is created and never changed", ErrInvalid)
	}

	// Immutability: disabled → enabled → locked; only enabled → disabled
	// goes back, and only with approval.
	switch {
	case old.Immutability == new.Immutability:
	case old.Immutability == vault.ImmutabilityLocked:
		return c, forbid("the vault's immutability is locked, which is irreversible (--immutability %s refused)", new.Immutability)
	case new.Immutability == vault.ImmutabilityLocked && old.Immutability != vault.ImmutabilityEnabled:
		return c, forbid("immutability can be locked only once it is enabled: run --immutability enabled first, then lock")
	case new.Immutability == vault.ImmutabilityDisabled:
		c.Critical = append(c.Critical, "disabling immutability")
	}

	// Soft delete.
	switch {
	case old.SoftDelete == vault.SoftDeleteAlwaysOn && new.SoftDelete != vault.SoftDeleteAlwaysOn:
		return c, forbid("soft delete is always-on, which cannot be turned off (--soft-delete %s refused)", new.SoftDelete)
	case old.SoftDelete != vault.SoftDeleteOff && new.SoftDelete == vault.SoftDeleteOff:
		if immutable(old) {
			return c, forbid("the vault's immutability is %s: soft delete cannot be turned off", old.Immutability)
		}
		c.Critical = append(c.Critical, "turning soft delete off")
	}
	if new.SoftDeleteDays < old.SoftDeleteDays {
		if immutable(old) {
			return c, forbid("the vault's immutability is %s: the soft-delete period cannot be shortened (%d → %d days)", old.Immutability, old.SoftDeleteDays, new.SoftDeleteDays)
		}
		c.Critical = append(c.Critical, fmt.Sprintf("shortening soft delete from %d to %d days", old.SoftDeleteDays, new.SoftDeleteDays))
	}

	// Minimum retention.
	if new.MinRetention < old.MinRetention {
		if immutable(old) {
			return c, forbid("the vault's immutability is %s: the minimum retention cannot be lowered (%s → %s)", old.Immutability, FormatDuration(old.MinRetention), FormatDuration(new.MinRetention))
		}
		c.Critical = append(c.Critical, fmt.Sprintf("lowering the minimum retention from %s to %s", FormatDuration(old.MinRetention), FormatDuration(new.MinRetention)))
	}

	// The dedup scope. Narrowing it to "source" takes nothing away (new
	// backups of a source simply stop deduplicating against other
	// sources); widening it back hands every agent the vault-wide
	// chunk-ID key and every source's snapshots to read: critical.
	if old.DedupScope.OrDefault() == vault.DedupScopeSource && new.DedupScope.OrDefault() == vault.DedupScopeVault {
		c.Critical = append(c.Critical, "widening the dedup scope from source to vault (every agent could then probe and read every source's backups)")
	}

	// The stored retention policy. Removing it is not shortening: the
	// server stops applying it, and every snapshot stays until forgotten
	// by hand (which the minimum retention still governs).
	if new.Policy != old.Policy && new.Policy != "" && immutable(old) {
		op, _ := ParsePolicy(old.Policy)
		np, _ := ParsePolicy(new.Policy)
		if why := Shortens(op, np, old.Policy == ""); why != "" {
			return c, forbid("the vault's immutability is %s: its retention policy cannot be shortened (%s)", old.Immutability, why)
		}
	}
	return c, Validate(new)
}

// Lock returns s with immutability locked and, as locking implies, soft
// delete always-on.
func Lock(s vault.VaultSettings) vault.VaultSettings {
	s.Immutability = vault.ImmutabilityLocked
	s.SoftDelete = vault.SoftDeleteAlwaysOn
	return s
}

// VaultDelete checks that a vault may be deleted: never while its
// immutability is enabled or locked and it holds snapshots (live or
// soft-deleted); otherwise only with approval.
func VaultDelete(s vault.VaultSettings, snapshots int) (Change, error) {
	if immutable(s) && snapshots > 0 {
		return Change{}, forbid("the vault's immutability is %s and it holds %d snapshots: it cannot be deleted", s.Immutability, snapshots)
	}
	return Change{Critical: []string{"deleting the vault"}}, nil
}

// UsePMK: switching a vault from a customer-managed key back to the
// platform key takes the customer's control of the key away, so it is
// critical.
func UsePMK() Change {
	return Change{Critical: []string{"switching from the customer-managed key to the platform key"}}
}

// UseCMK: switching the keys of a vault whose immutability is enabled or
// locked to a customer-managed key puts every backup it promises to keep
// in the hands of whoever controls that key (deleting it destroys them),
// so it is critical there; elsewhere it is not.
func UseCMK(s vault.VaultSettings) Change {
	if !immutable(s) {
		return Change{}
	}
	return Change{Critical: []string{fmt.Sprintf("switching the keys of a vault whose immutability is %s to a customer-managed key", s.Immutability)}}
}

// Shortens reports how policy n keeps less than policy o (a rule removed
// or lowered, a shorter keep-within, a tag no longer kept, another
// grouping), or "" when it keeps at least as much. oNone means o is no
// policy at all, which keeps everything: any policy shortens it.
func Shortens(o, n retention.Policy, oNone bool) string {
	if oNone {
		return "the vault had no policy, which keeps every snapshot"
	}
	less := func(name string, a, b int) string {
		// -1 is unlimited; 0 is the rule unused.
		switch {
		case a == b:
			return ""
		case a == -1:
			return fmt.Sprintf("--keep-%s all → %d", name, b)
		case b == -1:
			return ""
		case b < a:
			return fmt.Sprintf("--keep-%s %d → %d", name, a, b)
		}
		return ""
	}
	for _, r := range []struct {
		name string
		a, b int
	}{{"last", o.Last, n.Last}, {"hourly", o.Hourly, n.Hourly}, {"daily", o.Daily, n.Daily},
		{"weekly", o.Weekly, n.Weekly}, {"monthly", o.Monthly, n.Monthly}, {"yearly", o.Yearly, n.Yearly}} {
		if why := less(r.name, r.a, r.b); why != "" {
			return why
		}
	}
	if n.Within < o.Within {
		return fmt.Sprintf("--keep-within %s → %s", FormatDuration(o.Within), FormatDuration(n.Within))
	}
	for _, t := range o.Tags {
		if !slices.Contains(n.Tags, t) {
			return fmt.Sprintf("--keep-tag %s removed", t)
		}
	}
	if o.GroupBy != n.GroupBy {
		return "another --group-by"
	}
	return ""
}

// FormatDuration prints d as the --keep-within and --min-retention flags
// take it ("30d", "1d12h").
func FormatDuration(d time.Duration) string { return retention.FormatDuration(d) }
