package catalogtest

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Storage is a SQL catalog seen from below as well: what RunStorage needs
// beyond vault.Catalog to check what an implementation stored, and what
// it left alone when a write failed. Tables and columns are named as in
// the schema both SQL catalogs share.
type Storage interface {
	vault.Catalog
	// Rows returns the number of rows of table.
	Rows(table string) (int, error)
	// Exec runs one statement written with ? placeholders, outside the
	// catalog's methods (as a bug, or someone with write access to the
	// database, would).
	Exec(query string, args ...any) error
	// RefuseDeletes makes every deletion of a row of table fail with an
	// error containing "refused by test" until allow is called.
	RefuseDeletes(table string) (allow func() error, err error)
}

// RunStorage runs the tests of what a SQL catalog stores: writes that
// fail leave nothing behind, values a catalog cannot store are refused
// (and store nothing), and values at the edges of their ranges (times to
// the nanosecond, uint64s above MaxInt64) survive. newStorage is called
// once per subtest and must return a new, empty catalog; it closes it
// itself (t.Cleanup).
func RunStorage(t *testing.T, newStorage func(t *testing.T) Storage) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c Storage)
	}{
		{"RemovePackAtomic", testRemovePackAtomic},
		{"AddPackAtomic", testAddPackAtomic},
		{"WriteDuringIteration", testWriteDuringIteration},
		{"AddPackWrongPack", testAddPackWrongPack},
		{"UnknownVault", testUnknownVault},
		{"KeyEventInvalid", testKeyEventInvalid},
		{"TimeRange", testTimeRange},
		{"Uint64Range", testUint64Range},
		{"TokenTimeRange", testTokenTimeRange},
		{"SettingsRefused", testSettingsRefused},
		{"SnapshotDeletedStored", testSnapshotDeletedStored},
		{"PackCondemnedStored", testPackCondemnedStored},
		{"SessionChoices", testSessionChoices},
		{"EventInvalid", testEventInvalid},
		{"RequestChoices", testRequestChoices},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStorage(t)) })
	}
}

// nanoAt is a time with nanoseconds, in UTC (as catalogs return times),
// so that records holding it compare equal after a round trip.
var nanoAt = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// rowCount returns the number of rows of table.
func rowCount(t *testing.T, c Storage, table string) int {
	t.Helper()
	n, err := c.Rows(table)
	if err != nil {
		t.Fatalf("count rows of %s: %v", table, err)
	}
	return n
}

// flatPack returns a pack of n blobs of 4096 bytes, one after the other.
func flatPack(n int) (vault.PackRecord, []vault.BlobRecord) {
	p := vault.PackRecord{ID: newID(), Size: 16 << 20, DEKVersion: 1, Blobs: n, Created: time.Now()}
	blobs := make([]vault.BlobRecord, n)
	for i := range blobs {
		blobs[i] = vault.BlobRecord{ID: newID(), Type: vault.DataBlob, Pack: p.ID, Offset: uint32(i * 4096), Length: 4096, RawLen: 8000}
	}
	return p, blobs
}

// testRemovePackAtomic makes the deletion of the pack row fail after its
// blobs' and keys' rows were deleted, and checks that they are still there.
func testRemovePackAtomic(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID
	p, blobs := flatPack(10)
	p.Keys = []uint64{1, 2, 3}
	if err := c.AddPack(ctx, v, p, blobs); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePack(ctx, v, newID()); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("RemovePack of an unknown pack: %v, want ErrNotFound", err)
	}
	allow, err := c.RefuseDeletes("packs")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePack(ctx, v, p.ID); err == nil || !strings.Contains(err.Error(), "refused by test") {
		t.Fatalf("RemovePack with the pack row undeletable: %v", err)
	}
	if n, k := rowCount(t, c, "blobs"), rowCount(t, c, "blob_keys"); n != 10 || k != 3 {
		t.Errorf("%d blob rows and %d key rows, want 10 and 3", n, k)
	}
	if err := allow(); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePack(ctx, v, p.ID); err != nil {
		t.Fatal(err)
	}
	if n, k := rowCount(t, c, "blobs"), rowCount(t, c, "blob_keys"); n != 0 || k != 0 {
		t.Errorf("%d blob rows and %d key rows, want none", n, k)
	}
}

// testAddPackAtomic provokes a failure on the last blob of a pack and
// checks that nothing of the pack remains.
func testAddPackAtomic(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID
	p, blobs := flatPack(100)
	blobs[99].Offset = blobs[50].Offset // two blobs cannot share bytes

	err := c.AddPack(ctx, v, p, blobs)
	if !errors.Is(err, vault.ErrExists) {
		t.Fatalf("AddPack with a duplicate offset: %v, want ErrExists", err)
	}
	if !strings.Contains(err.Error(), blobs[99].ID.String()) {
		t.Errorf("error %q does not name the failing blob", err)
	}
	if n := rowCount(t, c, "packs"); n != 0 {
		t.Errorf("%d pack rows remain", n)
	}
	if n := rowCount(t, c, "blobs"); n != 0 {
		t.Errorf("%d blob rows remain", n)
	}

	// A corrected retry succeeds.
	blobs[99].Offset = 99 * 4096
	if err := c.AddPack(ctx, v, p, blobs); err != nil {
		t.Fatal(err)
	}
	if n := rowCount(t, c, "blobs"); n != 100 {
		t.Errorf("%d blob rows, want 100", n)
	}
}

// testWriteDuringIteration checks that fn may write to the catalog while
// Blobs holds its read open, and that the iteration does not see the
// write (it reads one snapshot of the catalog).
func testWriteDuringIteration(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID
	p, blobs := flatPack(10)
	if err := c.AddPack(ctx, v, p, blobs); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := c.Blobs(ctx, v, func(vault.BlobRecord) error {
		n++
		p, blobs := flatPack(10)
		return c.AddPack(ctx, v, p, blobs)
	})
	if err != nil || n != 10 {
		t.Fatalf("Blobs: %d calls, %v; want 10", n, err)
	}
	if got := rowCount(t, c, "blobs"); got != 110 {
		t.Errorf("%d blobs, want 110", got)
	}
}

func testAddPackWrongPack(t *testing.T, c Storage) {
	v := createVault(t, c, "v").ID
	p, blobs := flatPack(3)
	blobs[2].Pack = newID()
	if err := c.AddPack(t.Context(), v, p, blobs); err == nil {
		t.Fatal("AddPack accepted a blob of another pack")
	}
	if n := rowCount(t, c, "packs"); n != 0 {
		t.Errorf("%d pack rows", n)
	}
}

func testUnknownVault(t *testing.T, c Storage) {
	ctx := t.Context()
	p, blobs := flatPack(3)
	if err := c.AddPack(ctx, newID(), p, blobs); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddPack to an unknown vault: %v, want ErrNotFound", err)
	}
	s := vault.SnapshotRecord{ID: newID(), Time: time.Now(), Tree: newID()}
	if err := c.AddSnapshot(ctx, newID(), s); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddSnapshot to an unknown vault: %v, want ErrNotFound", err)
	}
	e := vault.KeyEvent{Vault: newID(), Time: time.Now(), Event: vault.KeyEventDEKRotate, OK: true}
	if err := c.AddKeyEvent(ctx, e); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddKeyEvent to an unknown vault: %v, want ErrNotFound", err)
	}
}

// testKeyEventInvalid checks that events without a time or an event name,
// or with a time out of range, are refused and store nothing.
func testKeyEventInvalid(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID
	for _, e := range []vault.KeyEvent{
		{Vault: v, Time: time.Time{}, Event: vault.KeyEventDEKRotate},
		{Vault: v, Time: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), Event: vault.KeyEventDEKRotate},
		{Vault: v, Time: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), Event: vault.KeyEventDEKRotate},
		{Vault: v, Time: time.Now(), Event: ""},
	} {
		if err := c.AddKeyEvent(ctx, e); err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Errorf("AddKeyEvent(%+v): %v, want invalid", e, err)
		}
	}
	if n := rowCount(t, c, "key_events"); n != 0 {
		t.Errorf("%d key event rows", n)
	}
	// Nanoseconds survive.
	want := vault.KeyEvent{Vault: v, Time: time.Date(2024, 2, 29, 1, 2, 3, 123456789, time.UTC), Event: vault.KeyEventUsePMK, OK: true}
	if err := c.AddKeyEvent(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, err := c.LastKeyEvent(ctx, v); err != nil || got != want {
		t.Errorf("LastKeyEvent = %+v, %v; want %+v", got, err, want)
	}
}

func testTimeRange(t *testing.T, c Storage) {
	ctx := t.Context()
	for _, tm := range []time.Time{{}, time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if err := c.CreateVault(ctx, vault.VaultRecord{ID: newID(), Name: "v", Created: tm}); err == nil || errors.Is(err, vault.ErrExists) {
			t.Errorf("CreateVault at %v: %v, want out of range", tm, err)
		}
	}
	// Nanoseconds survive.
	want := time.Date(2024, 2, 29, 1, 2, 3, 123456789, time.UTC)
	if err := c.CreateVault(ctx, vault.VaultRecord{ID: newID(), Name: "v", Created: want}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Vault(ctx, "v")
	if err != nil || !got.Created.Equal(want) {
		t.Errorf("Vault: %v, %v; want created %v", got, err, want)
	}
}

func testUint64Range(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID
	s := vault.SnapshotRecord{
		ID: newID(), Time: time.Now(), Tree: newID(),
		Files: math.MaxUint64, Dirs: 1 << 63, Bytes: math.MaxInt64, BytesAdded: math.MaxInt64 + 1,
		Duration: math.MaxInt64,
	}
	if err := c.AddSnapshot(ctx, v, s); err != nil {
		t.Fatal(err)
	}
	ss, err := c.Snapshots(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	got := ss[0]
	if got.Files != s.Files || got.Dirs != s.Dirs || got.Bytes != s.Bytes || got.BytesAdded != s.BytesAdded || got.Duration != s.Duration {
		t.Errorf("got %+v, want %+v", got, s)
	}
}

func testTokenTimeRange(t *testing.T, c Storage) {
	ctx := t.Context()
	late := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, tok := range []vault.TokenRecord{
		{Created: time.Time{}},
		{Created: time.Now(), Expires: late},
		{Created: time.Now(), Revoked: late},
	} {
		tok.ID, tok.Role, tok.Hash = fmt.Sprint(i), "owner", [32]byte{byte(i)}
		if err := c.AddToken(ctx, tok); err == nil || errors.Is(err, vault.ErrExists) {
			t.Errorf("AddToken %d: %v, want out of range", i, err)
		}
	}
	if n := rowCount(t, c, "tokens"); n != 0 {
		t.Errorf("%d token rows", n)
	}
	if err := c.AddToken(ctx, vault.TokenRecord{ID: "x", Role: "owner", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := c.RevokeToken(ctx, "x", time.Time{}); err == nil {
		t.Error("RevokeToken at the zero time succeeded")
	}
	for _, tok := range []vault.TokenRecord{
		{ID: "", Role: "owner", Hash: [32]byte{9}, Created: time.Now()},
		{ID: "y", Role: "", Hash: [32]byte{9}, Created: time.Now()},
	} {
		if err := c.AddToken(ctx, tok); err == nil {
			t.Errorf("AddToken(%+v) succeeded", tok)
		}
	}
}

// testSettingsRefused checks that settings the schema cannot store fail
// with an error that says what was refused, store nothing, and that
// nanoseconds survive.
func testSettingsRefused(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID

	s := vault.DefaultSettings()
	if err := c.SetSettings(ctx, v, s); err == nil || errors.Is(err, vault.ErrNotFound) {
		t.Errorf("SetSettings without Updated: %v, want an error", err)
	}
	s.Updated = nanoAt
	s.SoftDeleteDays = 7
	err := c.SetSettings(ctx, v, s)
	if err == nil || !strings.Contains(err.Error(), "soft_delete_days") || !strings.Contains(err.Error(), "7 days") {
		t.Errorf("SetSettings with 7 days: %v, want an error naming soft_delete_days and 7 days", err)
	}
	t.Logf("error: %v", err)
	if n := rowCount(t, c, "vault_settings"); n != 0 {
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

func testSnapshotDeletedStored(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID

	// AddSnapshot records Deleted and DeletedBy as given.
	s := vault.SnapshotRecord{ID: newID(), Time: nanoAt, Tree: newID(), Deleted: nanoAt.Add(time.Hour), DeletedBy: "zoë"}
	if err := c.AddSnapshot(ctx, v, s); err != nil {
		t.Fatal(err)
	}
	// DeletedBy without Deleted is dropped: "" while live.
	live := vault.SnapshotRecord{ID: newID(), Time: nanoAt.Add(time.Second), Tree: newID(), DeletedBy: "zoë"}
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
	if err := c.SetSnapshotDeleted(ctx, v, s.ID, nanoAt.Add(2*time.Hour), "ops"); err != nil {
		t.Fatal(err)
	}
	// No principal is stored as "".
	if err := c.SetSnapshotDeleted(ctx, v, live.ID, nanoAt.Add(3*time.Hour), ""); err != nil {
		t.Fatal(err)
	}
	ss, err = c.Snapshots(ctx, v)
	if err != nil || !ss[0].Deleted.Equal(nanoAt.Add(2*time.Hour)) || ss[0].DeletedBy != "ops" || !ss[1].Deleted.Equal(nanoAt.Add(3*time.Hour)) || ss[1].DeletedBy != "" {
		t.Errorf("Snapshots = %+v, %v", ss, err)
	}
	if err := c.SetSnapshotDeleted(ctx, v, s.ID, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), "ops"); err == nil {
		t.Error("SetSnapshotDeleted at a time out of range succeeded")
	}
	// The schema holds no principal for a live snapshot.
	if err := c.Exec(`UPDATE snapshots SET deleted = NULL WHERE id = ?`, s.ID[:]); err == nil {
		t.Error("a live snapshot with deleted_by set was stored")
	}
}

func testPackCondemnedStored(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID
	p, blobs := flatPack(2)
	p.Condemned = nanoAt
	if err := c.AddPack(ctx, v, p, blobs); err != nil {
		t.Fatal(err)
	}
	// Condemning again replaces the time.
	if err := c.CondemnPack(ctx, v, p.ID, nanoAt.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var got []vault.PackRecord
	err := c.Packs(ctx, v, func(p vault.PackRecord) error { got = append(got, p); return nil })
	if err != nil || len(got) != 1 || !got[0].Condemned.Equal(nanoAt.Add(time.Hour)) {
		t.Errorf("Packs = %+v, %v", got, err)
	}
	if err := c.CondemnPack(ctx, v, p.ID, time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("CondemnPack at a time out of range succeeded")
	}
}

func testSessionChoices(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID

	// A zero Touched is recorded as Started.
	s := vault.Session{ID: "s", Kind: "backup", Principal: "zoë", Started: nanoAt}
	if err := c.BeginSession(ctx, v, s); err != nil {
		t.Fatal(err)
	}
	ss, err := c.Sessions(ctx, v)
	if err != nil || len(ss) != 1 || !ss[0].Touched.Equal(nanoAt) {
		t.Errorf("Sessions = %+v, %v; want Touched = Started", ss, err)
	}
	// Touching a session that is gone fails, so that its writer learns
	// that prune no longer waits for it.
	if err := c.TouchSession(ctx, "gone", nanoAt); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("TouchSession of an unknown session: %v, want ErrNotFound", err)
	}
	if err := c.TouchSession(ctx, "s", time.Time{}); err == nil {
		t.Error("TouchSession at the zero time succeeded")
	}
	for _, bad := range []vault.Session{
		{ID: "", Started: nanoAt},
		{ID: "x"},
		{ID: "y", Started: nanoAt, Touched: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if err := c.BeginSession(ctx, v, bad); err == nil || errors.Is(err, vault.ErrExists) {
			t.Errorf("BeginSession(%+v): %v, want invalid", bad, err)
		}
	}
	if n := rowCount(t, c, "sessions"); n != 1 {
		t.Errorf("%d session rows, want 1", n)
	}
}

func testEventInvalid(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID
	for _, e := range []vault.VaultEvent{
		{Vault: v, Event: vault.EventForget},
		{Vault: v, Time: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), Event: vault.EventForget},
		{Vault: v, Time: nanoAt, Event: ""},
	} {
		if err := c.AddEvent(ctx, e); err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Errorf("AddEvent(%+v): %v, want invalid", e, err)
		}
	}
	if n := rowCount(t, c, "vault_events"); n != 0 {
		t.Errorf("%d event rows", n)
	}
	// Nanoseconds survive.
	want := vault.VaultEvent{Vault: v, Time: nanoAt, Event: vault.EventForget, OK: true}
	if err := c.AddEvent(ctx, want); err != nil {
		t.Fatal(err)
	}
	if es, err := c.Events(ctx, v); err != nil || len(es) != 1 || es[0] != want {
		t.Errorf("Events = %+v, %v; want %+v", es, err, want)
	}
}

func testRequestChoices(t *testing.T, c Storage) {
	ctx := t.Context()
	v := createVault(t, c, "v").ID
	good := vault.Request{
		ID: "r", Vault: v, Op: "vault-set", Params: `{"a":1}`, Requester: "zoë",
		Created: nanoAt, Expires: nanoAt.Add(vault.DefaultRequestTTL), State: vault.RequestPending,
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
	decided.ID, decided.State, decided.Decider, decided.Decided = "decided", vault.RequestApproved, "zoë", nanoAt.Add(time.Minute)
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
		{"a decision while pending", func(r *vault.Request) { r.Decided = nanoAt }},
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
	if n := rowCount(t, c, "requests"); n != 2 {
		t.Errorf("%d request rows, want 2", n)
	}

	// The conflict says what the request is now; a decision without a
	// time is refused before anything is read.
	if err := c.DecideRequest(ctx, none.ID, vault.RequestApproved, "ops", time.Time{}); err == nil {
		t.Error("DecideRequest at the zero time succeeded")
	}
	err := c.DecideRequest(ctx, decided.ID, vault.RequestRejected, "ops", nanoAt)
	if !errors.Is(err, vault.ErrConflict) || !strings.Contains(err.Error(), "approved") {
		t.Errorf("DecideRequest of an approved request: %v, want ErrConflict naming its state", err)
	}
	t.Logf("error: %v", err)
	// An expired request may have no decider.
	if err := c.DecideRequest(ctx, none.ID, vault.RequestExpired, "", nanoAt); err != nil {
		t.Fatal(err)
	}
	got, err := c.Request(ctx, none.ID)
	if err != nil || got.State != vault.RequestExpired || got.Decider != "" || !got.Decided.Equal(nanoAt) {
		t.Errorf("Request after expiry = %+v, %v", got, err)
	}
}
