package protect

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/vault"
)

const day = 24 * time.Hour

func policyJSON(t *testing.T, p retention.Policy) string {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// outcome names what a check said: ok, critical (needs approval),
// immutable (forbidden by protection) or invalid (bad input).
func outcome(c Change, err error) string {
	switch {
	case errors.Is(err, vault.ErrImmutable):
		return "immutable"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case err != nil:
		return "error: " + err.Error()
	case c.NeedsApproval():
		return "critical"
	}
	return "ok"
}

// TestEveryStateEveryOperation walks every immutability state (with soft
// delete on, and always-on) against every operation the protection
// governs, and checks the documented outcome (docs/retention.md).
func TestEveryStateEveryOperation(t *testing.T) {
	weekly := retention.Policy{Daily: 7, Weekly: 5, Monthly: 12}
	states := map[string]vault.VaultSettings{
		"disabled":           {SoftDelete: vault.SoftDeleteOn, SoftDeleteDays: 30, Immutability: vault.ImmutabilityDisabled, MinRetention: 30 * day},
		"disabled/always-on": {SoftDelete: vault.SoftDeleteAlwaysOn, SoftDeleteDays: 30, Immutability: vault.ImmutabilityDisabled, MinRetention: 30 * day},
		"enabled":            {SoftDelete: vault.SoftDeleteOn, SoftDeleteDays: 30, Immutability: vault.ImmutabilityEnabled, MinRetention: 30 * day},
		"locked":             {SoftDelete: vault.SoftDeleteAlwaysOn, SoftDeleteDays: 30, Immutability: vault.ImmutabilityLocked, MinRetention: 30 * day},
	}
	for name, s := range states {
		s.Policy = policyJSON(t, weekly)
		states[name] = s
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	young := vault.SnapshotRecord{Time: now.Add(-10 * day)}
	old := vault.SnapshotRecord{Time: now.Add(-40 * day)}

	type op struct {
		name string
		run  func(s vault.VaultSettings) (Change, error)
	}
	set := func(f func(*vault.VaultSettings)) func(vault.VaultSettings) (Change, error) {
		return func(s vault.VaultSettings) (Change, error) {
			n := s
			f(&n)
			return Settings(s, n)
		}
	}
	ops := []op{
		{"forget young snapshot", func(s vault.VaultSettings) (Change, error) { return Change{}, Forget(s, young, now) }},
		{"forget old snapshot", func(s vault.VaultSettings) (Change, error) { return Change{}, Forget(s, old, now) }},
		{"prune a snapshot forgotten 10 days ago", func(s vault.VaultSettings) (Change, error) {
			return Change{}, Prunable(s, vault.SnapshotRecord{Time: old.Time, Deleted: now.Add(-10 * day)}, now)
		}},
		{"prune a snapshot forgotten 40 days ago", func(s vault.VaultSettings) (Change, error) {
			return Change{}, Prunable(s, vault.SnapshotRecord{Time: old.Time, Deleted: now.Add(-40 * day)}, now)
		}},
		{"prune a live snapshot", func(s vault.VaultSettings) (Change, error) { return Change{}, Prunable(s, old, now) }},
		{"policy longer", set(func(n *vault.VaultSettings) {
			n.Policy = policyJSON(t, retention.Policy{Daily: 14, Weekly: 5, Monthly: 12})
		})},
		{"policy shorter", set(func(n *vault.VaultSettings) {
			n.Policy = policyJSON(t, retention.Policy{Daily: 3, Weekly: 5, Monthly: 12})
		})},
		{"policy removed", set(func(n *vault.VaultSettings) { n.Policy = "" })},
		{"soft delete longer", set(func(n *vault.VaultSettings) { n.SoftDeleteDays = 60 })},
		{"soft delete shorter", set(func(n *vault.VaultSettings) { n.SoftDeleteDays = 14 })},
		{"soft delete off", set(func(n *vault.VaultSettings) { n.SoftDelete = vault.SoftDeleteOff })},
		{"soft delete always-on", set(func(n *vault.VaultSettings) { n.SoftDelete = vault.SoftDeleteAlwaysOn })},
		{"soft delete on", set(func(n *vault.VaultSettings) { n.SoftDelete = vault.SoftDeleteOn })},
		{"min retention higher", set(func(n *vault.VaultSettings) { n.MinRetention = 60 * day })},
		{"min retention lower", set(func(n *vault.VaultSettings) { n.MinRetention = 7 * day })},
		{"vault delete (with snapshots)", func(s vault.VaultSettings) (Change, error) { return VaultDelete(s, 3) }},
		{"vault delete (empty)", func(s vault.VaultSettings) (Change, error) { return VaultDelete(s, 0) }},
		{"immutability disabled", set(func(n *vault.VaultSettings) { n.Immutability = vault.ImmutabilityDisabled })},
		{"immutability enabled", set(func(n *vault.VaultSettings) { n.Immutability = vault.ImmutabilityEnabled })},
		{"immutability locked", set(func(n *vault.VaultSettings) { *n = Lock(*n) })},
	}
	want := map[string]map[string]string{
		"disabled": {
			"forget young snapshot": "immutable", "forget old snapshot": "ok",
			"prune a snapshot forgotten 10 days ago": "immutable", "prune a snapshot forgotten 40 days ago": "ok", "prune a live snapshot": "immutable",
			"policy longer": "ok", "policy shorter": "ok", "policy removed": "ok",
			"soft delete longer": "ok", "soft delete shorter": "critical", "soft delete off": "critical",
			"soft delete always-on": "ok", "soft delete on": "ok",
			"min retention higher": "ok", "min retention lower": "critical",
			"vault delete (with snapshots)": "critical", "vault delete (empty)": "critical",
			"immutability disabled": "ok", "immutability enabled": "ok", "immutability locked": "immutable",
		},
		"disabled/always-on": {
			"forget young snapshot": "immutable", "forget old snapshot": "ok",
			"prune a snapshot forgotten 10 days ago": "immutable", "prune a snapshot forgotten 40 days ago": "ok", "prune a live snapshot": "immutable",
			"policy longer": "ok", "policy shorter": "ok", "policy removed": "ok",
			"soft delete longer": "ok", "soft delete shorter": "critical", "soft delete off": "immutable",
			"soft delete always-on": "ok", "soft delete on": "immutable",
			"min retention higher": "ok", "min retention lower": "critical",
			"vault delete (with snapshots)": "critical", "vault delete (empty)": "critical",
			"immutability disabled": "ok", "immutability enabled": "ok", "immutability locked": "immutable",
		},
		"enabled": {
			"forget young snapshot": "immutable", "forget old snapshot": "ok",
			"prune a snapshot forgotten 10 days ago": "immutable", "prune a snapshot forgotten 40 days ago": "ok", "prune a live snapshot": "immutable",
			"policy longer": "ok", "policy shorter": "immutable", "policy removed": "ok",
			"soft delete longer": "ok", "soft delete shorter": "immutable", "soft delete off": "immutable",
			"soft delete always-on": "ok", "soft delete on": "ok",
			"min retention higher": "ok", "min retention lower": "immutable",
			"vault delete (with snapshots)": "immutable", "vault delete (empty)": "critical",
			"immutability disabled": "critical", "immutability enabled": "ok", "immutability locked": "ok",
		},
		"locked": {
			"forget young snapshot": "immutable", "forget old snapshot": "ok",
			"prune a snapshot forgotten 10 days ago": "immutable", "prune a snapshot forgotten 40 days ago": "ok", "prune a live snapshot": "immutable",
			"policy longer": "ok", "policy shorter": "immutable", "policy removed": "ok",
			"soft delete longer": "ok", "soft delete shorter": "immutable", "soft delete off": "immutable",
			"soft delete always-on": "ok", "soft delete on": "immutable",
			"min retention higher": "ok", "min retention lower": "immutable",
			"vault delete (with snapshots)": "immutable", "vault delete (empty)": "critical",
			"immutability disabled": "immutable", "immutability enabled": "immutable", "immutability locked": "ok",
		},
	}
	for state, s := range states {
		for _, o := range ops {
			t.Run(state+"/"+o.name, func(t *testing.T) {
				w, ok := want[state][o.name]
				if !ok {
					t.Fatalf("no expected outcome for %s / %s", state, o.name)
				}
				c, err := o.run(s)
				if got := outcome(c, err); got != w {
					t.Errorf("got %s (%v, %v), want %s", got, c.Critical, err, w)
				}
				if errors.Is(err, vault.ErrImmutable) && !strings.Contains(err.Error(), "--") && !strings.Contains(err.Error(), "immutability") && !strings.Contains(err.Error(), "always-on") {
					t.Errorf("a refusal that names no setting: %v", err)
				}
			})
		}
	}
}

func TestShortens(t *testing.T) {
	p := retention.Policy{Last: 3, Daily: 7, Weekly: -1, Within: 30 * day, Tags: []string{"keep"}}
	for _, c := range []struct {
		n    retention.Policy
		want string // "" or a substring
	}{
		{p, ""},
		{retention.Policy{Last: 4, Daily: 7, Weekly: -1, Within: 30 * day, Tags: []string{"keep", "x"}}, ""},
		{retention.Policy{Last: 2, Daily: 7, Weekly: -1, Within: 30 * day, Tags: []string{"keep"}}, "--keep-last 3 → 2"},
		{retention.Policy{Last: 3, Daily: 7, Weekly: 52, Within: 30 * day, Tags: []string{"keep"}}, "--keep-weekly all → 52"},
		{retention.Policy{Last: 3, Daily: -1, Weekly: -1, Within: 30 * day, Tags: []string{"keep"}}, ""},
		{retention.Policy{Last: 3, Daily: 7, Weekly: -1, Within: 20 * day, Tags: []string{"keep"}}, "--keep-within 30d → 20d"},
		{retention.Policy{Last: 3, Daily: 7, Weekly: -1, Within: 30 * day}, "--keep-tag keep removed"},
		{retention.Policy{Last: 3, Weekly: -1, Within: 30 * day, Tags: []string{"keep"}}, "--keep-daily 7 → 0"},
	} {
		got := Shortens(p, c.n, false)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("Shortens(%+v): %q, want %q", c.n, got, c.want)
		}
	}
	if Shortens(retention.Policy{}, p, true) == "" {
		t.Error("a policy where there was none keeps less than everything")
	}
}

func TestValidate(t *testing.T) {
	ok := vault.DefaultSettings()
	if err := Validate(ok); err != nil {
		t.Fatal(err)
	}
	for i, f := range []func(*vault.VaultSettings){
		func(s *vault.VaultSettings) { s.SoftDeleteDays = 13 },
		func(s *vault.VaultSettings) { s.SoftDeleteDays = 181 },
		func(s *vault.VaultSettings) { s.SoftDelete = "maybe" },
		func(s *vault.VaultSettings) { s.Immutability = "sort-of" },
		func(s *vault.VaultSettings) { s.MinRetention = -time.Second },
		func(s *vault.VaultSettings) { s.Immutability = vault.ImmutabilityLocked },
		func(s *vault.VaultSettings) { s.Policy = "{not json" },
	} {
		s := ok
		f(&s)
		if err := Validate(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("case %d: Validate(%+v) = %v, want ErrInvalid", i, s, err)
		}
	}
	s := ok
	s.SingleUser = true
	if _, err := Settings(ok, s); !errors.Is(err, ErrInvalid) {
		t.Errorf("turning single-user on later: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := vault.DefaultSettings()
	if got := Expiry(s, at); !got.Equal(at.Add(14 * day)) {
		t.Errorf("default expiry %v", got)
	}
	s.SoftDelete = vault.SoftDeleteOff
	if got := Expiry(s, at); !got.Equal(at) {
		t.Errorf("soft delete off: expiry %v", got)
	}
}

// TestDedupScope: narrowing the dedup scope to source is never critical;
// widening it back to vault always is (it hands every agent every
// source's data to probe and read), whatever the immutability; an
// unknown scope is invalid.
func TestDedupScope(t *testing.T) {
	for _, immut := range []vault.Immutability{vault.ImmutabilityDisabled, vault.ImmutabilityEnabled, vault.ImmutabilityLocked} {
		base := vault.DefaultSettings()
		base.Immutability = immut
		if immut == vault.ImmutabilityLocked {
			base = Lock(base)
		}
		to := func(from, to vault.DedupScope) (Change, error) {
			o, n := base, base
			o.DedupScope, n.DedupScope = from, to
			return Settings(o, n)
		}
		if c, err := to(vault.DedupScopeVault, vault.DedupScopeSource); err != nil || c.NeedsApproval() {
			t.Errorf("%s: vault → source: %v, %v; want allowed, not critical", immut, c.Critical, err)
		}
		if c, err := to("", vault.DedupScopeSource); err != nil || c.NeedsApproval() {
			t.Errorf("%s: unset → source: %v, %v; want allowed, not critical", immut, c.Critical, err)
		}
		if c, err := to(vault.DedupScopeSource, vault.DedupScopeVault); err != nil || !c.NeedsApproval() {
			t.Errorf("%s: source → vault: %v, %v; want critical", immut, c.Critical, err)
		}
		if c, err := to(vault.DedupScopeSource, ""); err != nil || !c.NeedsApproval() {
			t.Errorf("%s: source → unset (vault): %v, %v; want critical", immut, c.Critical, err)
		}
		if _, err := to(vault.DedupScopeVault, "host"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: vault → host: %v; want invalid", immut, err)
		}
	}
}
