package sqlite

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Behaviour of this implementation that vault.Catalog leaves open, and
// input it refuses.

var at = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// TestSettingsRefused checks that settings the schema cannot store fail
// with an error that says what was refused, store nothing, and that
// nanoseconds survive.
func TestSettingsRefused(t *testing.T) {
	c, _ := openTemp(t)
	ctx := t.Context()
	v := newVault(t, c, "v")

	s := vault.DefaultSettings()
	if err := c.SetSettings(ctx, v, s); err == nil || errors.Is(err, vault.ErrNotFound) {
		t.Errorf("SetSettings without Updated: %v, want an error", err)
	}
	s.Updated = at
	s.SoftDeleteDays = 7
	err := c.SetSettings(ctx, v, s)
	if err == nil || !strings.Contains(err.Error(), "soft_delete_days") || !strings.Contains(err.Error(), "7 days") {
		t.Errorf("SetSettings with 7 days: %v, want an error naming soft_delete_days and 7 days", err)
	}
	t.Logf("error: %v", err)
	if n := count(t, c.db, "vault_settings"); n != 0 {
		t.Errorf("%d settings rows", n)
	}

	s.SoftDeleteDays = 20
	if err := c.SetSettings(ctx, v, s); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Settings(ctx, v); err != nil || got != s {
		t.Errorf("Settings = %+v, %v; want %+v", got, err, s)
	}
}

func TestSnapshotDeletedStored(t *testing.T) {
	c, _ := openTemp(t)
	ctx := t.Context()
	v := newVault(t, c, "v")

	// AddSnapshot records Deleted and DeletedBy as given.
	s := vault.SnapshotRecord{ID: newID(), Time: at, Tree: newID(), Deleted: at.Add(time.Hour), DeletedBy: "zoë"}
	if err := c.AddSnapshot(ctx, v, s); err != nil {
		t.Fatal(err)
	}
	// DeletedBy without Deleted is dropped: "" while live.
	live := vault.SnapshotRecord{ID: newID(), Time: at.Add(time.Second), Tree: newID(), DeletedBy: "zoë"}
	if err := c.AddSnapshot(ctx, v, live); err != nil {
		t.Fatal(err)
	}
	live.DeletedBy = ""
	ss, err := c.Snapshots(ctx, v)
	if err != nil || len(ss) != 2 || !ss[0].Deleted.Equal(s.Deleted) || ss[0].DeletedBy != "zoë" || !ss[1].Deleted.IsZero() || ss[1].DeletedBy != "" {
		t.Fatalf("Snapshots = %+v, %v", ss, err)
	}

	// Soft-deleting again replaces the time and principal: the soft-delete
	// period runs from the last forget.
	if err := c.SetSnapshotDeleted(ctx, v, s.ID, at.Add(2*time.Hour), "ops"); err != nil {
		t.Fatal(err)
	}
	// No principal is stored as "".
	if err := c.SetSnapshotDeleted(ctx, v, live.ID, at.Add(3*time.Hour), ""); err != nil {
		t.Fatal(err)
	}
	ss, err = c.Snapshots(ctx, v)
	if err != nil || !ss[0].Deleted.Equal(at.Add(2*time.Hour)) || ss[0].DeletedBy != "ops" || !ss[1].Deleted.Equal(at.Add(3*time.Hour)) || ss[1].DeletedBy != "" {
		t.Errorf("Snapshots = %+v, %v", ss, err)
	}
	if err := c.SetSnapshotDeleted(ctx, v, s.ID, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), "ops"); err == nil {
		t.Error("SetSnapshotDeleted at a time out of range succeeded")
	}
	// The schema holds no principal for a live snapshot.
	if _, err := c.db.Exec(`UPDATE snapshots SET deleted = NULL WHERE id = ?`, s.ID[:]); err == nil {
		t.Error("a live snapshot with deleted_by set was stored")
	}
}

func TestPackCondemnedStored(t *testing.T) {
	c, _ := openTemp(t)
	ctx := t.Context()
	v := newVault(t, c, "v")
	p, blobs := newPack(2)
	p.Condemned = at
	if err := c.AddPack(ctx, v, p, blobs); err != nil {
		t.Fatal(err)
	}
	// Condemning again replaces the time.
	if err := c.CondemnPack(ctx, v, p.ID, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var got []vault.PackRecord
	err := c.Packs(ctx, v, func(p vault.PackRecord) error { got = append(got, p); return nil })
	if err != nil || len(got) != 1 || !got[0].Condemned.Equal(at.Add(time.Hour)) {
		t.Errorf("Packs = %+v, %v", got, err)
	}
	if err := c.CondemnPack(ctx, v, p.ID, time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("CondemnPack at a time out of range succeeded")
	}
}

// TestRemovePackAtomic makes the deletion of the pack row fail after its
// blobs' rows were deleted, and checks that the blobs are still there.
func TestRemovePackAtomic(t *testing.T) {
	c, _ := openTemp(t)
	ctx := t.Context()
	v := newVault(t, c, "v")
	p, blobs := newPack(10)
	if err := c.AddPack(ctx, v, p, blobs); err != nil {
		t.Fatal(err)
	}
	// An unknown pack in a vault with blobs: nothing is deleted.
	if err := c.RemovePack(ctx, v, newID()); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("RemovePack of an unknown pack: %v, want ErrNotFound", err)
	}
	if _, err := c.db.Exec(`CREATE TRIGGER refuse BEFORE DELETE ON packs BEGIN SELECT RAISE(ABORT, 'refused by test'); END`); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePack(ctx, v, p.ID); err == nil || !strings.Contains(err.Error(), "refused by test") {
		t.Fatalf("RemovePack with the pack row undeletable: %v", err)
	}
	if n := count(t, c.db, "blobs"); n != 10 {
		t.Errorf("%d blob rows, want 10", n)
	}
	if _, err := c.db.Exec(`DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePack(ctx, v, p.ID); err != nil {
		t.Fatal(err)
	}
	if n := count(t, c.db, "blobs"); n != 0 {
		t.Errorf("%d blob rows, want 0", n)
	}
}

func TestSessionChoices(t *testing.T) {
	c, _ := openTemp(t)
	ctx := t.Context()
	v := newVault(t, c, "v")

	// A zero Touched is recorded as Started.
	s := vault.Session{ID: "s", Kind: "backup", Principal: "zoë", Started: at}
	if err := c.BeginSession(ctx, v, s); err != nil {
		t.Fatal(err)
	}
	ss, err := c.Sessions(ctx, v)
	if err != nil || len(ss) != 1 || !ss[0].Touched.Equal(at) {
		t.Errorf("Sessions = %+v, %v; want Touched = Started", ss, err)
	}
	// Touching a session that is gone fails, so that its writer learns
	// that prune no longer waits for it.
	if err := c.TouchSession(ctx, "gone", at); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("TouchSession of an unknown session: %v, want ErrNotFound", err)
	}
	if err := c.TouchSession(ctx, "s", time.Time{}); err == nil {
		t.Error("TouchSession at the zero time succeeded")
	}
	for _, bad := range []vault.Session{
		{ID: "", Started: at},
		{ID: "x"},
		{ID: "y", Started: at, Touched: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if err := c.BeginSession(ctx, v, bad); err == nil || errors.Is(err, vault.ErrExists) {
			t.Errorf("BeginSession(%+v): %v, want invalid", bad, err)
		}
	}
	if n := count(t, c.db, "sessions"); n != 1 {
		t.Errorf("%d session rows, want 1", n)
	}
}

func TestEventInvalid(t *testing.T) {
	c, _ := openTemp(t)
	ctx := t.Context()
	v := newVault(t, c, "v")
	for _, e := range []vault.VaultEvent{
		{Vault: v, Event: vault.EventForget},
		{Vault: v, Time: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), Event: vault.EventForget},
		{Vault: v, Time: at, Event: ""},
	} {
		if err := c.AddEvent(ctx, e); err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Errorf("AddEvent(%+v): %v, want invalid", e, err)
		}
	}
	if n := count(t, c.db, "vault_events"); n != 0 {
		t.Errorf("%d event rows", n)
	}
	// Nanoseconds survive.
	want := vault.VaultEvent{Vault: v, Time: at, Event: vault.EventForget, OK: true}
	if err := c.AddEvent(ctx, want); err != nil {
		t.Fatal(err)
	}
	if es, err := c.Events(ctx, v); err != nil || len(es) != 1 || es[0] != want {
		t.Errorf("Events = %+v, %v; want %+v", es, err, want)
	}
}

func TestRequestChoices(t *testing.T) {
	c, _ := openTemp(t)
	ctx := t.Context()
	v := newVault(t, c, "v")
	good := vault.Request{
		ID: "r", Vault: v, Op: "vault-set", Params: `{"a":1}`, Requester: "zoë",
		Created: at, Expires: at.Add(vault.DefaultRequestTTL), State: vault.RequestPending,
	}

	// Params may be empty: none.
	none := good
	none.ID, none.Params = "none", ""
	if err := c.AddRequest(ctx, none); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Request(ctx, none.ID); err != nil || got != none {
		t.Errorf("Request = %+v, %v; want %+v", got, err, none)
	}

	// A request recorded decided already (a change a single-user vault
	// confirms at once) keeps its decision.
	decided := good
	decided.ID, decided.State, decided.Decider, decided.Decided = "decided", vault.RequestApproved, "zoë", at.Add(time.Minute)
	if err := c.AddRequest(ctx, decided); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Request(ctx, decided.ID); err != nil || got != decided {
		t.Errorf("Request = %+v, %v; want %+v", got, err, decided)
	}

	for _, tc := range []struct {
		name   string
		modify func(*vault.Request)
	}{
		{"no ID", func(r *vault.Request) { r.ID = "" }},
		{"no op", func(r *vault.Request) { r.Op = "" }},
		{"no state", func(r *vault.Request) { r.State = "" }},
		{"an unknown state", func(r *vault.Request) { r.State = "approve" }},
		{"params that are not JSON", func(r *vault.Request) { r.Params = "{a:1}" }},
		{"no creation time", func(r *vault.Request) { r.Created = time.Time{} }},
		{"no expiry", func(r *vault.Request) { r.Expires = time.Time{} }},
		{"a decision while pending", func(r *vault.Request) { r.Decided = at }},
		{"a decider while pending", func(r *vault.Request) { r.Decider = "zoë" }},
		{"a decided state without a decision time", func(r *vault.Request) { r.State = vault.RequestRejected }},
	} {
		r := good
		r.ID = "bad"
		tc.modify(&r)
		err := c.AddRequest(ctx, r)
		if err == nil || errors.Is(err, vault.ErrExists) || errors.Is(err, vault.ErrNotFound) {
			t.Errorf("AddRequest with %s: %v, want invalid", tc.name, err)
		}
	}
	if n := count(t, c.db, "requests"); n != 2 {
		t.Errorf("%d request rows, want 2", n)
	}

	// The conflict says what the request is now; a decision without a
	// time is refused before anything is read.
	if err := c.DecideRequest(ctx, none.ID, vault.RequestApproved, "ops", time.Time{}); err == nil {
		t.Error("DecideRequest at the zero time succeeded")
	}
	err := c.DecideRequest(ctx, decided.ID, vault.RequestRejected, "ops", at)
	if !errors.Is(err, vault.ErrConflict) || !strings.Contains(err.Error(), "approved") {
		t.Errorf("DecideRequest of an approved request: %v, want ErrConflict naming its state", err)
	}
	t.Logf("error: %v", err)
	// An expired request may have no decider.
	if err := c.DecideRequest(ctx, none.ID, vault.RequestExpired, "", at); err != nil {
		t.Fatal(err)
	}
	got, err := c.Request(ctx, none.ID)
	if err != nil || got.State != vault.RequestExpired || got.Decider != "" || !got.Decided.Equal(at) {
		t.Errorf("Request after expiry = %+v, %v", got, err)
	}
}
