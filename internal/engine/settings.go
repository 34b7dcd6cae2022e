package engine

// The vault's settings (deletion protection, the stored policy,
// single-user, the dedup scope), bound to the snapshot chain and verified
// on every decision that reads them (docs/format.md §8.4).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Settings returns the vault's deletion-protection settings, after
// checking them against the newest settings entry of the snapshot chain
// (docs/format.md §8.4). Settings that do not verify are refused with
// vault.ErrCorrupt: every decision that reads them (forget, prune, a
// settings change, the dedup scope) fails closed, deleting nothing.
func (v *Vault) Settings(ctx context.Context) (vault.VaultSettings, error) {
	s, latest, err := v.settingsAndEntry(ctx)
	if err != nil {
		return s, err
	}
	if latest == nil {
		return s, fmt.Errorf("%w: the vault's settings are not authenticated: the snapshot chain holds no settings entry (it was cut back, or the vault was never opened by a key holder since the upgrade): restore the catalog from a copy you trust", vault.ErrCorrupt)
	}
	// SECURITY: the row must be exactly what the newest settings entry
	// binds: an edited row, or an older row put back (whose entry is not
	// the newest), is refused.
	if format.SettingsDigest(v.rec.ID, s) != latest.Digest {
		return s, fmt.Errorf("%w: the vault's settings in the catalog (%s) are not the ones the vault recorded at chain entry %d (%s by %q): they were changed outside coffer; restore the catalog from a copy you trust",
			vault.ErrCorrupt, describeSettings(s), latest.Seq, latest.Time.UTC().Format(time.RFC3339), latest.Principal)
	}
	return s, nil
}

// settingsChainReader is a catalog that reads a vault's settings and its
// chain entries (not its snapshot records) in one read transaction.
type settingsChainReader interface {
	SettingsChain(ctx context.Context, vault vault.ID) (vault.VaultSettings, []vault.ChainEntry, error)
}

// settingsChainSinceReader reads a vault's settings and its chain entries
// from a given number on, in one read transaction.
type settingsChainSinceReader interface {
	SettingsChainSince(ctx context.Context, vault vault.ID, from uint64) (vault.VaultSettings, []vault.ChainEntry, error)
}

// settingsSeen is a verified chain head and its newest settings entry.
type settingsSeen struct {
	head   vault.ChainEntry
	latest *vault.ChainEntry
}

// rememberSettings keeps what a full verification of entries found, for
// settingsSince. Only a process without a pin (a vault server, where
// every agent request reads the settings) uses it.
func (v *Vault) rememberSettings(entries []vault.ChainEntry, latest *vault.ChainEntry) {
	if v.opt.Pin != nil || len(entries) == 0 {
		return
	}
	seen := &settingsSeen{head: entries[len(entries)-1]}
	if latest != nil {
		l := *latest
		seen.latest = &l
	}
	v.seenMu.Lock()
	if old := v.settingsSeen; old == nil || old.head.Seq <= seen.head.Seq {
		v.settingsSeen = seen
	}
	v.seenMu.Unlock()
}

// settingsSince verifies the settings reading only the chain entries from
// the head the last verification saw (settingsSeen) on, so that a server
// answering many requests does not read and verify the whole chain for
// each. done is false when there is nothing to start from; the caller
// then verifies the whole chain. SECURITY: the head seen before must
// still be in the chain, unchanged: entries are only ever appended, so a
// chain without it was rolled back or rewritten, which this process
// refuses as a pin would.
func (v *Vault) settingsSince(ctx context.Context, ks *keyState, r settingsChainSinceReader) (vault.VaultSettings, *vault.ChainEntry, bool, error) {
	v.seenMu.Lock()
	seen := v.settingsSeen
	v.seenMu.Unlock()
	if seen == nil {
		return vault.VaultSettings{}, nil, false, nil
	}
	s, es, err := r.SettingsChainSince(ctx, v.rec.ID, seen.head.Seq)
	if err != nil {
		return s, nil, true, err
	}
	if len(es) == 0 || es[0].Seq != seen.head.Seq || es[0].MAC != seen.head.MAC {
		return s, nil, true, fmt.Errorf("%w: the vault's settings cannot be trusted: snapshot chain entry %d, which this server verified before, is gone or changed (the catalog was rolled back or altered outside coffer): restore the catalog from a copy you trust", vault.ErrCorrupt, seen.head.Seq)
	}
	mac := format.NewChainMAC(ks.chain, v.rec.ID)
	h, latest := seen.head.MAC, seen.latest
	for i, e := range es[1:] {
		if e.Seq != seen.head.Seq+1+uint64(i) || !format.ValidChainKind(e.Kind) || !mac.Verify(h, e) {
			return s, nil, true, fmt.Errorf("%w: the vault's settings cannot be trusted: snapshot chain entry %d does not verify (the catalog was altered outside coffer): restore the catalog from a copy you trust", vault.ErrCorrupt, e.Seq)
		}
		h = e.MAC
		if e.Kind == vault.ChainSettings {
			latest = &es[1+i]
		}
	}
	if len(es) > 1 {
		next := &settingsSeen{head: es[len(es)-1], latest: latest}
		v.seenMu.Lock()
		if cur := v.settingsSeen; cur == nil || cur.head.Seq <= next.head.Seq {
			v.settingsSeen = next
		}
		v.seenMu.Unlock()
	}
	return s, latest, true, nil
}

// settingsAndEntry reads the settings row and the chain as of one moment
// and returns the row and the chain's newest settings entry (nil when
// there is none), verified (settingsEntry).
func (v *Vault) settingsAndEntry(ctx context.Context) (vault.VaultSettings, *vault.ChainEntry, error) {
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return vault.VaultSettings{}, nil, err
	}
	if r, ok := v.opt.Catalog.(settingsChainSinceReader); ok && v.opt.Pin == nil {
		if s, latest, done, err := v.settingsSince(ctx, ks, r); done {
			return s, latest, err
		}
	}
	pin, err := v.loadPin() // before the chain is read (loadPin)
	if err != nil {
		return vault.VaultSettings{}, nil, err
	}
	if r, ok := v.opt.Catalog.(settingsChainReader); ok {
		s, entries, err := r.SettingsChain(ctx, v.rec.ID)
		if err != nil {
			return s, nil, err
		}
		latest, err := v.settingsEntry(ks, pin, entries)
		if err == nil {
			v.rememberSettings(entries, latest)
		}
		return s, latest, err
	}
	// Two reads; a writer commits the row and its entry at once
	// (docs/format.md §8.4). A row read the same before and after the
	// chain is that chain's (a change in between would differ, Updated
	// included); otherwise read again, a bounded number of times.
	for try := 0; ; try++ {
		before, err := v.opt.Catalog.Settings(ctx, v.rec.ID)
		if err != nil {
			return before, nil, err
		}
		entries, _, err := v.opt.Catalog.SnapshotChain(ctx, v.rec.ID)
		if err != nil {
			return before, nil, err
		}
		latest, err := v.settingsEntry(ks, pin, entries)
		if err != nil {
			return before, nil, err
		}
		s, err := v.opt.Catalog.Settings(ctx, v.rec.ID)
		if err != nil {
			return s, nil, err
		}
		if s == before || try == 4 {
			return s, latest, nil
		}
	}
}

// settingsEntry returns the newest settings entry of entries, nil when
// there is none, after verifying every entry's MAC up to the head and
// that the chain extends pin, this machine's pin loaded before entries
// were read (a chain cut back to an older settings entry is a rollback,
// docs/format.md §8.2 rule 6).
func (v *Vault) settingsEntry(ks *keyState, pin ChainHead, entries []vault.ChainEntry) (*vault.ChainEntry, error) {
	mac := format.NewChainMAC(ks.chain, v.rec.ID)
	var h [32]byte
	var atPin ChainHead
	var latest *vault.ChainEntry
	for i, e := range entries {
		// Every entry up to the head must verify: a settings entry after
		// a bad one proves nothing, and a good one before a bad one may
		// not be the newest.
		if e.Seq != uint64(i+1) || !format.ValidChainKind(e.Kind) || !mac.Verify(h, e) {
			return nil, fmt.Errorf("%w: the vault's settings cannot be trusted: snapshot chain entry %d does not verify (the catalog was altered outside coffer): restore the catalog from a copy you trust", vault.ErrCorrupt, e.Seq)
		}
		h = e.MAC
		if e.Seq <= pin.Seq {
			atPin = ChainHead{Seq: e.Seq, MAC: h}
		}
		if e.Kind == vault.ChainSettings {
			latest = &entries[i]
		}
	}
	if pin.Seq > 0 {
		// As pinnedPrefix: the chain must reach the pin and match it.
		if err := pin.extendedBy(atPin); err != nil {
			return nil, err
		}
	}
	return latest, nil
}

// describeSettings names the settings a decision reads.
func describeSettings(s vault.VaultSettings) string {
	single := ""
	if s.SingleUser {
		single = ", single-user"
	}
	return fmt.Sprintf("soft delete %s for %d days, immutability %s, minimum retention %v, dedup scope %s%s",
		s.SoftDelete, s.SoftDeleteDays, s.Immutability, s.MinRetention, s.DedupScope.OrDefault(), single)
}

// InitSettings records s as the vault's settings without judging the
// change (a vault being created chooses them: single-user, dedup scope),
// with a settings entry of the chain (docs/format.md §8.4).
func (v *Vault) InitSettings(ctx context.Context, s vault.VaultSettings, principal string) error {
	v.settingsMu.Lock()
	defer v.settingsMu.Unlock()
	return v.writeSettings(ctx, s, principal)
}

// writeSettings appends a settings entry binding s; the catalog writes s
// in the entry's transaction.
func (v *Vault) writeSettings(ctx context.Context, s vault.VaultSettings, principal string) error {
	if s.Updated.IsZero() {
		s.Updated = v.opt.Now().UTC()
	}
	s.Updated = s.Updated.UTC()
	return v.appendChanges(ctx, []chainChange{{kind: vault.ChainSettings, at: s.Updated, by: principal, settings: &s}})
}

// upgradeSettings gives a vault whose chain holds no settings entry one
// binding the settings its catalog holds now (docs/format.md §8.4): the
// first open by a key holder after the upgrade trusts what it finds, as
// the format 1 upgrade trusts its soft-delete marks.
func (v *Vault) upgradeSettings(ctx context.Context) error {
	_, latest, err := v.settingsAndEntry(ctx)
	if errors.Is(err, vault.ErrCorrupt) {
		// A chain that does not verify or was rolled back: nothing is
		// bound to it; every reader of the list or the settings refuses
		// the vault, naming what is wrong.
		return nil
	}
	if err != nil || latest != nil {
		return err
	}
	entries, rows, err := v.opt.Catalog.SnapshotChain(ctx, v.rec.ID)
	if err != nil {
		return err
	}
	if len(entries) == 0 && len(rows) > 0 {
		// A chain deleted from the catalog (§8.2): no settings entry
		// would make it look less deleted; listing refuses the vault.
		return nil
	}
	s, err := v.opt.Catalog.Settings(ctx, v.rec.ID)
	if err != nil {
		return err
	}
	v.settingsMu.Lock()
	defer v.settingsMu.Unlock()
	return v.writeSettings(ctx, s, "")
}

// ChangeSettings applies change to the vault's settings after checking it
// against the vault's protection (protect.Settings). A change the
// protection forbids fails with vault.ErrImmutable; a critical one fails
// with vault.ErrApprovalRequired, naming what is critical, unless
// allowCritical (an approved request, or a confirmed single-user vault).
// It returns the settings before and after.
func (v *Vault) ChangeSettings(ctx context.Context, change func(*vault.VaultSettings), principal string, allowCritical bool) (old, new vault.VaultSettings, c protect.Change, err error) {
	// One change at a time (a server has one engine per vault), so that
	// two changes never both start from the same settings.
	v.settingsMu.Lock()
	defer v.settingsMu.Unlock()
	old, err = v.Settings(ctx)
	if err != nil {
		return old, old, c, err
	}
	new = old
	change(&new)
	if new.Immutability == vault.ImmutabilityLocked && old.Immutability != vault.ImmutabilityLocked {
		new = protect.Lock(new) // locking turns soft delete always-on
	}
	c, err = protect.Settings(old, new)
	if err == nil && c.NeedsApproval() && !allowCritical {
		err = fmt.Errorf("%w: %s", vault.ErrApprovalRequired, strings.Join(c.Critical, "; "))
	}
	detail := DescribeSettingsChange(old, new)
	if err != nil {
		v.event(ctx, principal, vault.EventSettings, "refused: "+detail+": "+err.Error(), false)
		return old, old, c, err
	}
	if detail == "" {
		return old, old, c, nil
	}
	new.Updated = v.opt.Now().UTC()
	if err := v.writeSettings(ctx, new, principal); err != nil {
		return old, old, c, err
	}
	ev := vault.EventSettings
	if old.Policy != new.Policy {
		ev = vault.EventPolicy
	}
	if c.NeedsApproval() {
		detail += " (critical: " + strings.Join(c.Critical, "; ") + ")"
	}
	return old, new, c, v.event(ctx, principal, ev, detail, true)
}

// DescribeSettingsChange says what differs from old to new, "" when
// nothing does.
func DescribeSettingsChange(old, new vault.VaultSettings) string {
	var parts []string
	if old.SoftDelete != new.SoftDelete {
		parts = append(parts, fmt.Sprintf("soft delete %s → %s", old.SoftDelete, new.SoftDelete))
	}
	if old.SoftDeleteDays != new.SoftDeleteDays {
		parts = append(parts, fmt.Sprintf("soft-delete days %d → %d", old.SoftDeleteDays, new.SoftDeleteDays))
	}
	if old.Immutability != new.Immutability {
		parts = append(parts, fmt.Sprintf("immutability %s → %s", old.Immutability, new.Immutability))
	}
	if old.MinRetention != new.MinRetention {
		parts = append(parts, fmt.Sprintf("minimum retention %s → %s", protect.FormatDuration(old.MinRetention), protect.FormatDuration(new.MinRetention)))
	}
	if old.Policy != new.Policy {
		parts = append(parts, fmt.Sprintf("policy %s → %s", PolicyFlags(old.Policy), PolicyFlags(new.Policy)))
	}
	if old.DedupScope.OrDefault() != new.DedupScope.OrDefault() {
		parts = append(parts, fmt.Sprintf("dedup scope %s → %s", old.DedupScope.OrDefault(), new.DedupScope.OrDefault()))
	}
	return strings.Join(parts, ", ")
}

// PolicyFlags describes a stored policy as the flags that set it
// ("--keep-daily 7 --group-by host,paths"), "none" when there is none:
// events, audit entries and logs never show the stored JSON.
func PolicyFlags(stored string) string {
	if stored == "" {
		return "none"
	}
	p, err := protect.ParsePolicy(stored)
	if err != nil {
		return "an unreadable policy"
	}
	return p.String()
}
