package catalogtest

// Cases for the deletion-protection part of vault.Catalog
// (docs/retention.md): soft-deleted snapshots, condemned packs, vault
// settings, the vault event trail, writer sessions and multi-user
// authorization requests.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

func addSnapshot(t *testing.T, c vault.Catalog, v vault.ID, s vault.SnapshotRecord) {
	t.Helper()
	if err := c.AddSnapshot(t.Context(), v, s); err != nil {
		t.Fatalf("AddSnapshot(%s): %v", s.ID.Short(), err)
	}
}

func setSnapshotDeleted(t *testing.T, c vault.Catalog, v, id vault.ID, at time.Time, by string) {
	t.Helper()
	if err := c.SetSnapshotDeleted(t.Context(), v, id, at, by); err != nil {
		t.Fatalf("SetSnapshotDeleted(%s, %v, %q): %v", id.Short(), at, by, err)
	}
}

// testSnapshotSoftDelete checks that a soft-deleted snapshot is still
// listed, in its place, with when and by whom, and that undelete clears
// both.
func testSnapshotSoftDelete(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	var ss []vault.SnapshotRecord
	for i := range 3 {
		s := newSnapshot(t, base.Add(time.Duration(i)*time.Hour))
		addSnapshot(t, c, v.ID, s)
		ss = append(ss, s)
	}
	// The same ID in another vault is another snapshot.
	addSnapshot(t, c, other.ID, ss[1])
	for _, s := range snapshots(t, c, v.ID) {
		if !s.Deleted.IsZero() || s.DeletedBy != "" {
			t.Errorf("new snapshot %s: Deleted %v by %q, want zero and \"\"", s.ID.Short(), s.Deleted, s.DeletedBy)
		}
	}

	want := slices.Clone(ss)
	at := base.Add(48*time.Hour + 123456*time.Microsecond).In(time.FixedZone("UTC-3", -3*3600))
	setSnapshotDeleted(t, c, v.ID, ss[1].ID, at, "zoë")
	want[1].Deleted, want[1].DeletedBy = at, "zoë"
	equal(t, "Snapshots after a soft delete", snapshots(t, c, v.ID), normSnapshots(want))
	equal(t, "Snapshots of the other vault", snapshots(t, c, other.ID), normSnapshots(ss[1:2]))

	at2 := time.Date(2200, 1, 2, 3, 4, 5, 6000, time.Local)
	setSnapshotDeleted(t, c, v.ID, ss[0].ID, at2, "0123456789abcdef")
	want[0].Deleted, want[0].DeletedBy = at2, "0123456789abcdef"
	equal(t, "Snapshots after a second soft delete", snapshots(t, c, v.ID), normSnapshots(want))

	// Undelete clears both fields, whatever by says.
	setSnapshotDeleted(t, c, v.ID, ss[1].ID, time.Time{}, "ops")
	want[1].Deleted, want[1].DeletedBy = time.Time{}, ""
	equal(t, "Snapshots after undelete", snapshots(t, c, v.ID), normSnapshots(want))
	// Undeleting a live snapshot succeeds and changes nothing.
	setSnapshotDeleted(t, c, v.ID, ss[2].ID, time.Time{}, "")
	equal(t, "Snapshots after undeleting a live snapshot", snapshots(t, c, v.ID), normSnapshots(want))
	equal(t, "Snapshots of the other vault", snapshots(t, c, other.ID), normSnapshots(ss[1:2]))
}

func testSnapshotSoftDeleteNotFound(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	if err := c.SetSnapshotDeleted(ctx, newID(), newID(), base, "zoë"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("SetSnapshotDeleted in an empty catalog: got %v, want ErrNotFound", err)
	}
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	s := newSnapshot(t, base)
	addSnapshot(t, c, v.ID, s)
	o := newSnapshot(t, base)
	addSnapshot(t, c, other.ID, o)
	for _, tc := range []struct {
		name      string
		vault, id vault.ID
	}{
		{"an unknown snapshot", v.ID, newID()},
		{"another vault's snapshot", v.ID, o.ID},
		{"an unknown vault", newID(), s.ID},
	} {
		for _, at := range []time.Time{base, {}} {
			if err := c.SetSnapshotDeleted(ctx, tc.vault, tc.id, at, "zoë"); !errors.Is(err, vault.ErrNotFound) {
				t.Errorf("SetSnapshotDeleted of %s at %v: got %v, want ErrNotFound", tc.name, at, err)
			}
		}
	}
	equal(t, "Snapshots", snapshots(t, c, v.ID), normSnapshots([]vault.SnapshotRecord{s}))
	equal(t, "Snapshots of the other vault", snapshots(t, c, other.ID), normSnapshots([]vault.SnapshotRecord{o}))
}

func testSnapshotRemove(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	if err := c.RemoveSnapshot(ctx, newID(), newID()); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("RemoveSnapshot in an empty catalog: got %v, want ErrNotFound", err)
	}
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	var ss []vault.SnapshotRecord
	for i := range 3 {
		s := newSnapshot(t, base.Add(time.Duration(i)*time.Hour))
		addSnapshot(t, c, v.ID, s)
		ss = append(ss, s)
	}
	addSnapshot(t, c, other.ID, ss[1])
	setSnapshotDeleted(t, c, v.ID, ss[0].ID, base.Add(72*time.Hour), "zoë")

	if err := c.RemoveSnapshot(ctx, v.ID, ss[1].ID); err != nil {
		t.Fatalf("RemoveSnapshot of a live snapshot: %v", err)
	}
	gone0 := ss[0]
	gone0.Deleted, gone0.DeletedBy = base.Add(72*time.Hour), "zoë"
	equal(t, "Snapshots after removing one", snapshots(t, c, v.ID), normSnapshots([]vault.SnapshotRecord{gone0, ss[2]}))
	equal(t, "Snapshots of the other vault", snapshots(t, c, other.ID), normSnapshots(ss[1:2]))

	if err := c.RemoveSnapshot(ctx, v.ID, ss[0].ID); err != nil {
		t.Fatalf("RemoveSnapshot of a soft-deleted snapshot: %v", err)
	}
	equal(t, "Snapshots after removing two", snapshots(t, c, v.ID), normSnapshots(ss[2:]))

	for _, tc := range []struct {
		name      string
		vault, id vault.ID
	}{
		{"a removed snapshot", v.ID, ss[1].ID},
		{"an unknown snapshot", v.ID, newID()},
		{"an unknown vault", newID(), ss[2].ID},
		{"another vault's snapshot", other.ID, ss[2].ID},
	} {
		if err := c.RemoveSnapshot(ctx, tc.vault, tc.id); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("RemoveSnapshot of %s: got %v, want ErrNotFound", tc.name, err)
		}
	}
	equal(t, "Snapshots", snapshots(t, c, v.ID), normSnapshots(ss[2:]))
	equal(t, "Snapshots of the other vault", snapshots(t, c, other.ID), normSnapshots(ss[1:2]))

	// The record is gone: the ID may be recorded again.
	addSnapshot(t, c, v.ID, ss[0])
	equal(t, "Snapshots after adding a removed ID again", snapshots(t, c, v.ID), normSnapshots([]vault.SnapshotRecord{ss[0], ss[2]}))
}

func condemnPack(t *testing.T, c vault.Catalog, v, id vault.ID, at time.Time) {
	t.Helper()
	if err := c.CondemnPack(t.Context(), v, id, at); err != nil {
		t.Fatalf("CondemnPack(%s, %v): %v", id.Short(), at, err)
	}
}

// testPackCondemn checks that Packs reports when a pack was condemned,
// that a zero time un-condemns it, and that its blobs stay listed.
func testPackCondemn(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	p1, b1 := newPack(t, 3)
	p2, b2 := newPack(t, 4)
	p3, b3 := newPack(t, 5)
	addPack(t, c, v.ID, p1, b1)
	addPack(t, c, v.ID, p2, b2)
	addPack(t, c, v.ID, p3, b3)
	addPack(t, c, other.ID, p2, b2)
	for _, p := range allPacks(t, c, v.ID) {
		if !p.Condemned.IsZero() {
			t.Errorf("new pack %s: Condemned = %v, want zero", p.ID.Short(), p.Condemned)
		}
	}

	at := base.Add(time.Hour + 654321*time.Microsecond).In(time.FixedZone("UTC+14", 14*3600))
	condemnPack(t, c, v.ID, p2.ID, at)
	c2 := p2
	c2.Condemned = at
	equal(t, "Packs after condemning one", allPacks(t, c, v.ID), normPacks(p1, c2, p3))
	equal(t, "Packs of the other vault", allPacks(t, c, other.ID), normPacks(p2))
	// Its blobs remain the vault's until the pack is removed.
	equal(t, "Blobs after condemning a pack", allBlobs(t, c, v.ID), normBlobs(b1, b2, b3))

	at1 := time.Date(2200, 1, 2, 3, 4, 5, 6000, time.Local)
	condemnPack(t, c, v.ID, p1.ID, at1)
	c1 := p1
	c1.Condemned = at1
	equal(t, "Packs after condemning two", allPacks(t, c, v.ID), normPacks(c1, c2, p3))

	// A zero time puts the pack back in use.
	condemnPack(t, c, v.ID, p2.ID, time.Time{})
	equal(t, "Packs after un-condemning one", allPacks(t, c, v.ID), normPacks(c1, p2, p3))
	// Un-condemning a pack in use succeeds and changes nothing.
	condemnPack(t, c, v.ID, p3.ID, time.Time{})
	equal(t, "Packs after un-condemning a pack in use", allPacks(t, c, v.ID), normPacks(c1, p2, p3))

	for _, tc := range []struct {
		name      string
		vault, id vault.ID
	}{
		{"an unknown pack", v.ID, newID()},
		{"an unknown vault", newID(), p1.ID},
		{"another vault's pack", other.ID, p1.ID},
	} {
		for _, at := range []time.Time{base, {}} {
			if err := c.CondemnPack(ctx, tc.vault, tc.id, at); !errors.Is(err, vault.ErrNotFound) {
				t.Errorf("CondemnPack of %s at %v: got %v, want ErrNotFound", tc.name, at, err)
			}
		}
	}
	equal(t, "Packs", allPacks(t, c, v.ID), normPacks(c1, p2, p3))
	equal(t, "Packs of the other vault", allPacks(t, c, other.ID), normPacks(p2))
	equal(t, "Blobs", allBlobs(t, c, v.ID), normBlobs(b1, b2, b3))
}

// testPackRemove checks that RemovePack takes the pack's blobs with it,
// and only its own.
func testPackRemove(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	p1, b1 := newPack(t, 3)
	p2, b2 := newPack(t, 5)
	p3, b3 := newPack(t, 2)
	// A blob stored twice by concurrent backups: removing one copy keeps
	// the other.
	b2[1].ID, b2[1].Type = b1[0].ID, b1[0].Type
	addPack(t, c, v.ID, p1, b1)
	addPack(t, c, v.ID, p2, b2)
	addPack(t, c, v.ID, p3, b3)
	addPack(t, c, other.ID, p2, b2)
	condemnPack(t, c, v.ID, p3.ID, base.Add(time.Hour))

	if err := c.RemovePack(t.Context(), v.ID, p2.ID); err != nil {
		t.Fatalf("RemovePack: %v", err)
	}
	c3 := p3
	c3.Condemned = base.Add(time.Hour)
	equal(t, "Packs after RemovePack", allPacks(t, c, v.ID), normPacks(p1, c3))
	equal(t, "Blobs after RemovePack", allBlobs(t, c, v.ID), normBlobs(b1, b3))
	equal(t, "Packs of the other vault", allPacks(t, c, other.ID), normPacks(p2))
	equal(t, "Blobs of the other vault", allBlobs(t, c, other.ID), normBlobs(b2))

	if err := c.RemovePack(t.Context(), v.ID, p3.ID); err != nil {
		t.Fatalf("RemovePack of a condemned pack: %v", err)
	}
	equal(t, "Packs after removing two", allPacks(t, c, v.ID), normPacks(p1))
	equal(t, "Blobs after removing two", allBlobs(t, c, v.ID), normBlobs(b1))

	// The records are gone: the pack may be recorded again.
	addPack(t, c, v.ID, p2, b2)
	equal(t, "Packs after adding a removed pack again", allPacks(t, c, v.ID), normPacks(p1, p2))
	equal(t, "Blobs after adding a removed pack again", allBlobs(t, c, v.ID), normBlobs(b1, b2))
}

func testPackRemoveNotFound(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	if err := c.RemovePack(ctx, newID(), newID()); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("RemovePack in an empty catalog: got %v, want ErrNotFound", err)
	}
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	p, blobs := newPack(t, 4)
	addPack(t, c, v.ID, p, blobs)
	op, oblobs := newPack(t, 3)
	addPack(t, c, other.ID, op, oblobs)
	gone, goneBlobs := newPack(t, 2)
	addPack(t, c, v.ID, gone, goneBlobs)
	if err := c.RemovePack(ctx, v.ID, gone.ID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		vault, id vault.ID
	}{
		{"a removed pack", v.ID, gone.ID},
		{"an unknown pack", v.ID, newID()},
		{"another vault's pack", v.ID, op.ID},
		{"an unknown vault", newID(), p.ID},
	} {
		if err := c.RemovePack(ctx, tc.vault, tc.id); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("RemovePack of %s: got %v, want ErrNotFound", tc.name, err)
		}
	}
	equal(t, "Packs", allPacks(t, c, v.ID), normPacks(p))
	equal(t, "Blobs", allBlobs(t, c, v.ID), normBlobs(blobs))
	equal(t, "Packs of the other vault", allPacks(t, c, other.ID), normPacks(op))
	equal(t, "Blobs of the other vault", allBlobs(t, c, other.ID), normBlobs(oblobs))
}

func settings(t *testing.T, c vault.Catalog, v vault.ID) vault.VaultSettings {
	t.Helper()
	s, err := c.Settings(t.Context(), v)
	if err != nil {
		t.Fatalf("Settings: %v", err)
	}
	return normSettings(s)
}

func setSettings(t *testing.T, c vault.Catalog, v vault.ID, s vault.VaultSettings) {
	t.Helper()
	if err := c.SetSettings(t.Context(), v, s); err != nil {
		t.Fatalf("SetSettings(%+v): %v", s, err)
	}
}

// normSettings puts Updated in UTC.
func normSettings(s vault.VaultSettings) vault.VaultSettings {
	s.Updated = s.Updated.UTC()
	s.DedupScope = s.DedupScope.OrDefault() // "" is stored as "vault"
	return s
}

func testSettingsDefaults(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	unknown := newID()
	if got, err := c.Settings(ctx, unknown); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Settings in an empty catalog: got %+v, %v; want ErrNotFound", got, err)
	}
	v := createVault(t, c, "primary")
	got := settings(t, c, v.ID)
	equal(t, "Settings of a new vault", got, vault.DefaultSettings())
	if !got.Updated.IsZero() {
		t.Errorf("Settings of a new vault: Updated = %v, want zero", got.Updated)
	}

	s := vault.DefaultSettings()
	s.SoftDeleteDays = 30
	s.Updated = base
	if err := c.SetSettings(ctx, unknown, s); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("SetSettings of an unknown vault: got %v, want ErrNotFound", err)
	}
	if got, err := c.Settings(ctx, unknown); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Settings of an unknown vault after SetSettings: got %+v, %v; want ErrNotFound", got, err)
	}
	equal(t, "Settings of a new vault", settings(t, c, v.ID), vault.DefaultSettings())
}

func testSettingsRoundTrip(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")

	every := vault.VaultSettings{
		SoftDelete:     vault.SoftDeleteAlwaysOn,
		SoftDeleteDays: vault.MaxSoftDeleteDays,
		Immutability:   vault.ImmutabilityLocked,
		MinRetention:   30*24*time.Hour + time.Microsecond,
		SingleUser:     true,
		Policy:         `{"keep_daily":7,"keep_monthly":12,"note":"täglich – 日本語 \"quoted\""}`,
		DedupScope:     vault.DedupScopeSource,
		Updated:        base.Add(123456 * time.Microsecond).In(time.FixedZone("UTC-3", -3*3600)),
	}
	setSettings(t, c, v.ID, every)
	equal(t, "Settings", settings(t, c, v.ID), normSettings(every))
	equal(t, "Settings of the other vault", settings(t, c, other.ID), vault.DefaultSettings())

	// The settings are replaced as a whole: zero values included.
	least := vault.VaultSettings{
		SoftDelete:     vault.SoftDeleteOff,
		SoftDeleteDays: vault.MinSoftDeleteDays,
		Immutability:   vault.ImmutabilityEnabled,
		Updated:        time.Date(2200, 1, 2, 3, 4, 5, 6000, time.Local),
	}
	setSettings(t, c, v.ID, least)
	equal(t, "Settings after replacing them", settings(t, c, v.ID), normSettings(least))

	// Explicitly stored defaults read back with their Updated time.
	defaults := vault.DefaultSettings()
	defaults.Updated = base.Add(time.Hour)
	setSettings(t, c, v.ID, defaults)
	equal(t, "Settings after storing the defaults", settings(t, c, v.ID), normSettings(defaults))

	setSettings(t, c, other.ID, every)
	equal(t, "Settings of the other vault", settings(t, c, other.ID), normSettings(every))
	equal(t, "Settings", settings(t, c, v.ID), normSettings(defaults))
}

// testSettingsUnstorable checks that values outside what VaultSettings
// documents are refused, with an error rather than a panic, and leave the
// stored settings as they were.
func testSettingsUnstorable(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	good := vault.VaultSettings{
		SoftDelete: vault.SoftDeleteOn, SoftDeleteDays: 30, Immutability: vault.ImmutabilityEnabled,
		MinRetention: time.Hour, Policy: `{"keep_last":3}`, Updated: base,
	}
	setSettings(t, c, v.ID, good)
	for _, tc := range []struct {
		name   string
		modify func(*vault.VaultSettings)
	}{
		{"13 days", func(s *vault.VaultSettings) { s.SoftDeleteDays = vault.MinSoftDeleteDays - 1 }},
		{"181 days", func(s *vault.VaultSettings) { s.SoftDeleteDays = vault.MaxSoftDeleteDays + 1 }},
		{"0 days", func(s *vault.VaultSettings) { s.SoftDeleteDays = 0 }},
		{"no soft delete mode", func(s *vault.VaultSettings) { s.SoftDelete = "" }},
		{"an unknown soft delete mode", func(s *vault.VaultSettings) { s.SoftDelete = "maybe" }},
		{"no immutability", func(s *vault.VaultSettings) { s.Immutability = "" }},
		{"an unknown immutability", func(s *vault.VaultSettings) { s.Immutability = "frozen" }},
		{"a negative minimum retention", func(s *vault.VaultSettings) { s.MinRetention = -time.Nanosecond }},
		{"an unknown dedup scope", func(s *vault.VaultSettings) { s.DedupScope = "host" }},
	} {
		s := good
		s.Updated = base.Add(time.Hour)
		tc.modify(&s)
		err := c.SetSettings(t.Context(), v.ID, s)
		if err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Errorf("SetSettings with %s: got %v, want an error", tc.name, err)
		}
	}
	equal(t, "Settings after refused changes", settings(t, c, v.ID), normSettings(good))
}

func addEvent(t *testing.T, c vault.Catalog, e vault.VaultEvent) {
	t.Helper()
	if err := c.AddEvent(t.Context(), e); err != nil {
		t.Fatalf("AddEvent(%s at %v): %v", e.Event, e.Time, err)
	}
}

// normEvents puts times in UTC and treats nil and empty alike.
func normEvents(es ...vault.VaultEvent) []vault.VaultEvent {
	if len(es) == 0 {
		return nil
	}
	es = slices.Clone(es)
	for i := range es {
		es[i].Time = es[i].Time.UTC()
	}
	return es
}

func events(t *testing.T, c vault.Catalog, v vault.ID) []vault.VaultEvent {
	t.Helper()
	es, err := c.Events(t.Context(), v)
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	return normEvents(es...)
}

func testEventRoundTrip(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	if got := events(t, c, v.ID); len(got) != 0 {
		t.Errorf("Events of a new vault: %v", got)
	}
	want := []vault.VaultEvent{
		{Vault: v.ID, Time: base, Principal: "0123456789abcdef", Event: vault.EventForget, Detail: "3 snapshots: 1a2b3c4d 5e6f7a8b 9c0d1e2f", OK: true},
		{
			Vault: v.ID, Time: base.Add(time.Microsecond), Principal: "zoë", Event: vault.EventSettings,
			Detail: "soft delete 30 → 14 days\nsecond line, \"quoted\", 日本語 🗄", OK: false,
		},
		// Empty principal and detail are kept as empty.
		{Vault: v.ID, Time: time.Date(2025, 12, 31, 23, 59, 59, 999999000, time.FixedZone("UTC+14", 14*3600)), Event: vault.EventPrune, OK: true},
		{Vault: v.ID, Time: time.Date(2200, 1, 2, 3, 4, 5, 6000, time.Local), Principal: "system", Event: vault.EventPolicyApplied, Detail: "kept 12", OK: true},
	}
	for _, e := range want {
		addEvent(t, c, e)
	}
	equal(t, "Events", events(t, c, v.ID), normEvents(want...))
}

// testEventOrder checks that events sort by time (the instant, not the
// wall clock), events of one instant in the order they were added, and
// that each vault sees only its own.
func testEventOrder(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	east := time.FixedZone("UTC+9", 9*3600)
	west := time.FixedZone("UTC-8", -8*3600)
	ev := func(tm time.Time, detail string) vault.VaultEvent {
		return vault.VaultEvent{Vault: v.ID, Time: tm, Principal: "system", Event: vault.EventPrune, Detail: detail, OK: true}
	}
	var want []vault.VaultEvent
	for i, tm := range []time.Time{
		time.Date(2024, 1, 1, 8, 0, 0, 0, east),       // 2023-12-31T23:00Z
		time.Date(2023, 12, 31, 16, 0, 0, 1000, west), // 2024-01-01T00:00:00.000001Z
		time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC),
	} {
		want = append(want, ev(tm, fmt.Sprintf("event %d", i)))
	}
	// Three events at the same instant keep the order they were added in,
	// whatever their details, principals or outcomes.
	same := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	ties := []vault.VaultEvent{ev(same.In(east), "tie z"), ev(same.In(west), "tie a"), ev(same, "tie m")}
	ties[0].Principal, ties[1].Principal, ties[2].Principal = "z", "a", "m"
	ties[1].OK = false
	ties[1].Event = vault.EventVaultDelete

	add := []vault.VaultEvent{want[3], ties[0], want[0], ties[1], want[2], ties[2], want[1]}
	for i, e := range add {
		addEvent(t, c, e)
		o := e
		o.Vault = other.ID
		o.Detail = fmt.Sprintf("other %d", i)
		addEvent(t, c, o)
	}
	want = slices.Insert(want, 3, ties...)
	equal(t, "Events", events(t, c, v.ID), normEvents(want...))

	gotOther := events(t, c, other.ID)
	if len(gotOther) != len(add) {
		t.Fatalf("Events(other): %d events, want %d", len(gotOther), len(add))
	}
	for _, e := range gotOther {
		if e.Vault != other.ID || !strings.HasPrefix(e.Detail, "other ") {
			t.Errorf("Events(other) holds %+v", e)
		}
	}
}

func testEventUnknownVault(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	unknown := newID()
	e := vault.VaultEvent{Vault: unknown, Time: base, Principal: "zoë", Event: vault.EventForget, OK: true}
	if err := c.AddEvent(ctx, e); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddEvent in an empty catalog: got %v, want ErrNotFound", err)
	}
	v := createVault(t, c, "primary")
	e.Vault = v.ID
	addEvent(t, c, e)
	e.Vault = unknown
	if err := c.AddEvent(ctx, e); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddEvent for an unknown vault: got %v, want ErrNotFound", err)
	}
	if got, err := c.Events(ctx, unknown); err != nil || len(got) != 0 {
		t.Errorf("Events of an unknown vault: got %+v, %v; want none", got, err)
	}
	e.Vault = v.ID
	equal(t, "Events", events(t, c, v.ID), normEvents(e))
}

func beginSession(t *testing.T, c vault.Catalog, v vault.ID, s vault.Session) {
	t.Helper()
	if err := c.BeginSession(t.Context(), v, s); err != nil {
		t.Fatalf("BeginSession(%s): %v", s.ID, err)
	}
}

// normSessions puts times in UTC and treats nil and empty alike.
func normSessions(ss ...vault.Session) []vault.Session {
	if len(ss) == 0 {
		return nil
	}
	ss = slices.Clone(ss)
	for i := range ss {
		ss[i].Started = ss[i].Started.UTC()
		ss[i].Touched = ss[i].Touched.UTC()
	}
	return ss
}

func sessions(t *testing.T, c vault.Catalog, v vault.ID) []vault.Session {
	t.Helper()
	ss, err := c.Sessions(t.Context(), v)
	if err != nil {
		t.Fatalf("Sessions: %v", err)
	}
	return normSessions(ss...)
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newSession(kind string, started time.Time) vault.Session {
	return vault.Session{ID: randomHex(16), Kind: kind, Principal: "0123456789abcdef", Started: started, Touched: started}
}

func testSessionLifecycle(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	unknown := newID()
	if err := c.BeginSession(ctx, unknown, newSession("backup", base)); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("BeginSession in an empty catalog: got %v, want ErrNotFound", err)
	}
	v := createVault(t, c, "primary")
	if got := sessions(t, c, v.ID); len(got) != 0 {
		t.Errorf("Sessions of a new vault: %v", got)
	}

	s := newSession("backup", base.In(time.FixedZone("UTC-3", -3*3600)))
	s.Principal = "zoë@laptop"
	beginSession(t, c, v.ID, s)
	equal(t, "Sessions after BeginSession", sessions(t, c, v.ID), normSessions(s))

	at := base.Add(vault.SessionTouch + 123456*time.Microsecond).In(time.FixedZone("UTC+14", 14*3600))
	if err := c.TouchSession(ctx, s.ID, at); err != nil {
		t.Fatalf("TouchSession: %v", err)
	}
	s.Touched = at
	equal(t, "Sessions after TouchSession", sessions(t, c, v.ID), normSessions(s))

	if err := c.BeginSession(ctx, unknown, newSession("backup", base)); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("BeginSession for an unknown vault: got %v, want ErrNotFound", err)
	}
	if got, err := c.Sessions(ctx, unknown); err != nil || len(got) != 0 {
		t.Errorf("Sessions of an unknown vault: got %+v, %v; want none", got, err)
	}

	if err := c.EndSession(ctx, s.ID); err != nil {
		t.Fatalf("EndSession: %v", err)
	}
	if got := sessions(t, c, v.ID); len(got) != 0 {
		t.Errorf("Sessions after EndSession: %v", got)
	}
	// Ending an ended or unknown session succeeds.
	for _, id := range []string{s.ID, "never-begun", ""} {
		if err := c.EndSession(ctx, id); err != nil {
			t.Errorf("EndSession(%q): %v", id, err)
		}
	}
}

// testSessionOrder checks that sessions are listed oldest first (by
// Started, whatever their last touch), each vault its own.
func testSessionOrder(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	east := time.FixedZone("UTC+9", 9*3600)
	west := time.FixedZone("UTC-8", -8*3600)
	var want []vault.Session
	for i, tm := range []time.Time{
		time.Date(2024, 1, 1, 8, 0, 0, 0, east),       // 2023-12-31T23:00Z
		time.Date(2023, 12, 31, 16, 0, 0, 1000, west), // 2024-01-01T00:00:00.000001Z
		time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC),
	} {
		want = append(want, newSession(fmt.Sprintf("kind-%d", i), tm))
	}
	var others []vault.Session
	for _, i := range []int{2, 0, 3, 1} {
		beginSession(t, c, v.ID, want[i])
		o := newSession("other", want[i].Started.Add(-time.Second))
		beginSession(t, c, other.ID, o)
		others = append(others, o)
	}
	// The oldest session touched last is still listed first.
	late := time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC)
	if err := c.TouchSession(ctx, want[0].ID, late); err != nil {
		t.Fatal(err)
	}
	want[0].Touched = late
	equal(t, "Sessions", sessions(t, c, v.ID), normSessions(want...))

	slices.SortFunc(others, func(a, b vault.Session) int { return a.Started.Compare(b.Started) })
	equal(t, "Sessions of the other vault", sessions(t, c, other.ID), normSessions(others...))

	if err := c.EndSession(ctx, want[2].ID); err != nil {
		t.Fatal(err)
	}
	equal(t, "Sessions after ending one", sessions(t, c, v.ID), normSessions(slices.Delete(slices.Clone(want), 2, 3)...))
	equal(t, "Sessions of the other vault", sessions(t, c, other.ID), normSessions(others...))
}

func testSessionDuplicate(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	s := newSession("backup", base)
	beginSession(t, c, v.ID, s)

	dup := newSession("prune", base.Add(time.Hour))
	dup.ID = s.ID
	if err := c.BeginSession(ctx, v.ID, dup); !errors.Is(err, vault.ErrExists) {
		t.Errorf("BeginSession with a taken ID: got %v, want ErrExists", err)
	}
	// Session IDs are unique across vaults.
	if err := c.BeginSession(ctx, other.ID, dup); !errors.Is(err, vault.ErrExists) {
		t.Errorf("BeginSession in another vault with a taken ID: got %v, want ErrExists", err)
	}
	equal(t, "Sessions", sessions(t, c, v.ID), normSessions(s))
	if got := sessions(t, c, other.ID); len(got) != 0 {
		t.Errorf("Sessions of the other vault: %+v", got)
	}
}

// newRequest returns a pending request about vault v (zero: server-wide)
// with a random ID.
func newRequest(v vault.ID, created time.Time) vault.Request {
	return vault.Request{
		ID:        randomHex(8),
		Vault:     v,
		Op:        "vault-set",
		Params:    `{"soft_delete_days":14}`,
		Summary:   "soft delete 30 → 14 days",
		Requester: "0123456789abcdef",
		Created:   created,
		Expires:   created.Add(vault.DefaultRequestTTL),
		State:     vault.RequestPending,
	}
}

func addRequest(t *testing.T, c vault.Catalog, r vault.Request) {
	t.Helper()
	if err := c.AddRequest(t.Context(), r); err != nil {
		t.Fatalf("AddRequest(%s): %v", r.ID, err)
	}
}

// normRequests puts times in UTC (a zero time stays zero) and treats nil
// and empty alike.
func normRequests(rs ...vault.Request) []vault.Request {
	if len(rs) == 0 {
		return nil
	}
	rs = slices.Clone(rs)
	for i := range rs {
		rs[i].Created = rs[i].Created.UTC()
		rs[i].Expires = rs[i].Expires.UTC()
		rs[i].Decided = rs[i].Decided.UTC()
	}
	return rs
}

func requests(t *testing.T, c vault.Catalog) []vault.Request {
	t.Helper()
	rs, err := c.Requests(t.Context())
	if err != nil {
		t.Fatalf("Requests: %v", err)
	}
	return normRequests(rs...)
}

func request(t *testing.T, c vault.Catalog, id string) vault.Request {
	t.Helper()
	r, err := c.Request(t.Context(), id)
	if err != nil {
		t.Fatalf("Request(%s): %v", id, err)
	}
	return normRequests(r)[0]
}

func testRequestRoundTrip(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	if got := requests(t, c); len(got) != 0 {
		t.Errorf("Requests of a new catalog: %v", got)
	}
	if got, err := c.Request(ctx, "0123456789abcdef"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Request in an empty catalog: got %+v, %v; want ErrNotFound", got, err)
	}
	v := createVault(t, c, "Ärchiv – 東京 🗄")

	scoped := newRequest(v.ID, base.In(time.FixedZone("UTC-3", -3*3600)))
	scoped.Params = `{"soft_delete_days":14,"note":"täglich – 日本語 \"quoted\"","list":[1,2.5,null,true]}`
	scoped.Summary = `soft delete 30 → 14 days for "Ärchiv"`
	scoped.Requester = "zoë"
	server := newRequest(vault.ID{}, base.Add(time.Microsecond))
	server.Op, server.Params, server.Summary = "use-pmk", `{}`, "switch every vault to the platform key"
	server.Expires = time.Date(2200, 1, 2, 3, 4, 5, 6000, time.Local)
	addRequest(t, c, scoped)
	addRequest(t, c, server)

	for _, want := range []vault.Request{scoped, server} {
		got := request(t, c, want.ID)
		equal(t, "Request("+want.ID+")", got, normRequests(want)[0])
		if got.Decider != "" || !got.Decided.IsZero() {
			t.Errorf("pending request %s: Decider %q, Decided %v; want \"\" and zero", want.ID, got.Decider, got.Decided)
		}
	}
	if got := request(t, c, server.ID); !got.Vault.IsZero() {
		t.Errorf("server-wide request: Vault = %s, want zero", got.Vault)
	}
	equal(t, "Requests", requests(t, c), normRequests(scoped, server))

	for _, id := range []string{"", scoped.ID[:15], scoped.ID + "0", strings.ToUpper(scoped.ID) + "X"} {
		if got, err := c.Request(ctx, id); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("Request(%q): got %+v, %v; want ErrNotFound", id, got, err)
		}
	}
}

func testRequestOrder(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	east := time.FixedZone("UTC+9", 9*3600)
	west := time.FixedZone("UTC-8", -8*3600)
	var want []vault.Request
	for i, tm := range []time.Time{
		time.Date(2024, 1, 1, 8, 0, 0, 0, east),       // 2023-12-31T23:00Z
		time.Date(2023, 12, 31, 16, 0, 0, 1000, west), // 2024-01-01T00:00:00.000001Z
		time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2024, 6, 1, 0, 0, 0, 1000, time.UTC),
	} {
		vid := v.ID
		if i%2 == 1 {
			vid = vault.ID{} // server-wide and vault requests share one order
		}
		want = append(want, newRequest(vid, tm))
	}
	for _, i := range []int{3, 0, 4, 2, 1} {
		addRequest(t, c, want[i])
	}
	equal(t, "Requests", requests(t, c), normRequests(want...))
}

func testRequestDuplicate(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	if err := c.AddRequest(ctx, newRequest(newID(), base)); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddRequest for a vault in an empty catalog: got %v, want ErrNotFound", err)
	}
	v := createVault(t, c, "primary")
	orig := newRequest(v.ID, base)
	addRequest(t, c, orig)

	dup := newRequest(vault.ID{}, base.Add(time.Hour))
	dup.ID = orig.ID
	dup.Op = "vault-delete"
	if err := c.AddRequest(ctx, dup); !errors.Is(err, vault.ErrExists) {
		t.Errorf("AddRequest with a taken ID: got %v, want ErrExists", err)
	}
	missing := newRequest(newID(), base.Add(time.Hour))
	if err := c.AddRequest(ctx, missing); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddRequest for an unknown vault: got %v, want ErrNotFound", err)
	}
	if _, err := c.Request(ctx, missing.ID); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Request of the refused request: got %v, want ErrNotFound", err)
	}
	equal(t, "Request", request(t, c, orig.ID), normRequests(orig)[0])
	equal(t, "Requests", requests(t, c), normRequests(orig))
}

func testRequestDecide(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	var rs []vault.Request
	for i := range 4 {
		vid := v.ID
		if i == 3 {
			vid = vault.ID{}
		}
		r := newRequest(vid, base.Add(time.Duration(i)*time.Minute))
		addRequest(t, c, r)
		rs = append(rs, r)
	}
	want := slices.Clone(rs)
	for i, d := range []struct {
		state vault.RequestState
		by    string
		at    time.Time
	}{
		{vault.RequestApproved, "approver-1", base.Add(time.Hour + 123456*time.Microsecond).In(time.FixedZone("UTC-3", -3*3600))},
		{vault.RequestRejected, "zoë", base.Add(2 * time.Hour)},
		{vault.RequestExpired, "system", time.Date(2200, 1, 2, 3, 4, 5, 6000, time.Local)},
	} {
		if err := c.DecideRequest(ctx, rs[i].ID, d.state, d.by, d.at); err != nil {
			t.Fatalf("DecideRequest(%s, %s): %v", rs[i].ID, d.state, err)
		}
		want[i].State, want[i].Decider, want[i].Decided = d.state, d.by, d.at
		equal(t, "Request after DecideRequest "+string(d.state), request(t, c, rs[i].ID), normRequests(want[i])[0])
	}
	equal(t, "Requests", requests(t, c), normRequests(want...))

	// A decided request cannot be decided again, to any state.
	for _, r := range rs[:3] {
		for _, state := range []vault.RequestState{vault.RequestApproved, vault.RequestRejected, vault.RequestExpired} {
			err := c.DecideRequest(ctx, r.ID, state, "approver-2", base.Add(3*time.Hour))
			if !errors.Is(err, vault.ErrConflict) {
				t.Errorf("DecideRequest(%s) of a decided request: got %v, want ErrConflict", state, err)
			}
		}
	}
	for _, id := range []string{"0123456789abcdef", "", rs[3].ID[:15], rs[3].ID + "0"} {
		if err := c.DecideRequest(ctx, id, vault.RequestApproved, "approver-1", base); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("DecideRequest(%q): got %v, want ErrNotFound", id, err)
		}
	}
	equal(t, "Requests after refused decisions", requests(t, c), normRequests(want...))
}

// testRequestDecideInvalid checks that a request cannot be moved to a
// state other than approved, rejected or expired.
func testRequestDecideInvalid(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	r := newRequest(v.ID, base)
	addRequest(t, c, r)
	for _, state := range []vault.RequestState{vault.RequestPending, "", "approve", "APPROVED"} {
		if err := c.DecideRequest(ctx, r.ID, state, "approver-1", base.Add(time.Hour)); err == nil {
			t.Errorf("DecideRequest to state %q succeeded", state)
		}
	}
	equal(t, "Request after refused decisions", request(t, c, r.ID), normRequests(r)[0])
	if err := c.DecideRequest(ctx, r.ID, vault.RequestApproved, "approver-1", base.Add(time.Hour)); err != nil {
		t.Fatalf("DecideRequest after refused decisions: %v", err)
	}
}

// testRequestDecideConcurrent lets several deciders race on each of a few
// pending requests: exactly one of them wins, the others get ErrConflict,
// and the request holds the winner's decision.
func testRequestDecideConcurrent(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	const (
		deciders = 16
		rounds   = 20
	)
	states := []vault.RequestState{vault.RequestApproved, vault.RequestRejected, vault.RequestExpired}
	decidedAt := func(i int) time.Time { return base.Add(time.Hour + time.Duration(i)*time.Microsecond) }
	for round := range rounds {
		r := newRequest(v.ID, base.Add(time.Duration(round)*time.Second))
		addRequest(t, c, r)
		var (
			errs  [deciders]error
			start = make(chan struct{})
			wg    sync.WaitGroup
		)
		for i := range deciders {
			wg.Go(func() {
				<-start
				errs[i] = c.DecideRequest(ctx, r.ID, states[i%len(states)], fmt.Sprintf("decider-%d", i), decidedAt(i))
			})
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("round %d: deciders %d and %d both succeeded", round, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, vault.ErrConflict):
				t.Errorf("round %d: decider %d: got %v, want nil or ErrConflict", round, i, err)
			}
		}
		if winner < 0 {
			t.Errorf("round %d: no decider succeeded", round)
			continue
		}
		want := r
		want.State, want.Decider, want.Decided = states[winner%len(states)], fmt.Sprintf("decider-%d", winner), decidedAt(winner)
		equal(t, fmt.Sprintf("round %d: Request", round), request(t, c, r.ID), normRequests(want)[0])
	}
}

func testVaultDelete(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "doomed")
	other := createVault(t, c, "other")
	p, b := newPack(t, 3)
	addPack(t, c, v.ID, p, b)
	addPack(t, c, other.ID, p, b)
	addSnapshot(t, c, v.ID, newSnapshot(t, base))
	addEvent(t, c, vault.VaultEvent{Vault: v.ID, Time: base, Principal: "p", Event: vault.EventForget, OK: true})
	if err := c.BeginSession(ctx, v.ID, vault.Session{ID: "s1", Kind: "backup", Started: base, Touched: base}); err != nil {
		t.Fatal(err)
	}

	if err := c.DeleteVault(ctx, v.ID, base.Add(time.Hour)); err != nil {
		t.Fatalf("DeleteVault: %v", err)
	}
	if _, err := c.Vault(ctx, "doomed"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Vault of a deleted vault: %v, want ErrNotFound", err)
	}
	if err := c.CreateVault(ctx, vault.VaultRecord{ID: newID(), Name: "doomed", Created: base}); !errors.Is(err, vault.ErrExists) {
		t.Errorf("CreateVault with a deleted vault's name: %v, want ErrExists", err)
	}
	if err := c.DeleteVault(ctx, v.ID, base.Add(2*time.Hour)); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("DeleteVault twice: %v, want ErrNotFound", err)
	}
	if err := c.DeleteVault(ctx, newID(), base); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("DeleteVault of an unknown vault: %v, want ErrNotFound", err)
	}
	if got := allPacks(t, c, v.ID); len(got) != 0 {
		t.Errorf("packs of a deleted vault: %v", got)
	}
	if got := allBlobs(t, c, v.ID); len(got) != 0 {
		t.Errorf("blobs of a deleted vault: %v", got)
	}
	if ss, err := c.Snapshots(ctx, v.ID); err != nil || len(ss) != 0 {
		t.Errorf("snapshots of a deleted vault: %v %v", ss, err)
	}
	if ss, err := c.Sessions(ctx, v.ID); err != nil || len(ss) != 0 {
		t.Errorf("sessions of a deleted vault: %v %v", ss, err)
	}
	if evs := events(t, c, v.ID); len(evs) != 1 {
		t.Errorf("a deleted vault's events: %v, want them kept", evs)
	}
	equal(t, "Packs of the other vault", allPacks(t, c, other.ID), normPacks(p))
	if _, err := c.Vault(ctx, "other"); err != nil {
		t.Errorf("the other vault: %v", err)
	}
}
