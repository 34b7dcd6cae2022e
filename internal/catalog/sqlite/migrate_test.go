package sqlite

import (
	"bytes"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// The testdata catalogs were written by earlier versions of Coffer; the
// tests below check that every later version reads them. All of them
// hold, in vault "primary" (ID 0x01…, created at fixtureCreated), pack
// 0x02… (4096 bytes, DEK version 1) with data blob 0x03… at offset 0
// (100 bytes sealed, 200 raw) and tree blob 0x04… at offset 100 (50 and
// 70 bytes), and snapshot 0x05… of host-1 at fixtureCreated, of paths
// ["/home"] and tags ["daily"], tree 0x04…, 1 file, 1 dir, 200 bytes, 150
// added, 1s. IDs are one byte repeated (idOf).

// fixtureCreated is when the fixtures' vaults, packs and tokens were
// created.
var fixtureCreated = time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)

// idOf returns the ID whose bytes are all b.
func idOf(b byte) (id vault.ID) {
	for i := range id {
		id[i] = b
	}
	return id
}

// fixture is what a testdata catalog holds in one vault.
type fixture struct {
	vault     vault.VaultRecord
	packs     []vault.PackRecord // ordered by ID
	blobs     []vault.BlobRecord // ordered by pack, offset
	snapshots []vault.SnapshotRecord
}

// primaryV1 is the content of vault "primary" in every fixture.
func primaryV1() fixture {
	return fixture{
		vault: vault.VaultRecord{ID: idOf(1), Name: "primary", Created: fixtureCreated},
		packs: []vault.PackRecord{{ID: idOf(2), Size: 4096, DEKVersion: 1, Blobs: 2, Created: fixtureCreated}},
		blobs: []vault.BlobRecord{
			{ID: idOf(3), Type: vault.DataBlob, Pack: idOf(2), Offset: 0, Length: 100, RawLen: 200},
			{ID: idOf(4), Type: vault.TreeBlob, Pack: idOf(2), Offset: 100, Length: 50, RawLen: 70},
		},
		snapshots: []vault.SnapshotRecord{{
			ID: idOf(5), Time: fixtureCreated, Host: "host-1", Paths: []string{"/home"}, Tags: []string{"daily"}, Tree: idOf(4),
			Files: 1, Dirs: 1, Bytes: 200, BytesAdded: 150, Duration: time.Second,
		}},
	}
}

// fixtureTokens are the tokens of catalog-v2.db and catalog-v3.db:
// "0123456789abcdef" (laptop, backup-operator of primary, hash 0x01 0…,
// expiring a day after creation, created by "00000000000000ff") and
// "00000000000000ff" (initial owner, server-wide, hash 0x02 0…, revoked
// an hour after creation), in the order of Tokens.
func fixtureTokens() []vault.TokenRecord {
	return []vault.TokenRecord{
		{ID: "00000000000000ff", Name: "initial owner", Role: "owner", Hash: [32]byte{2}, Created: fixtureCreated, Revoked: fixtureCreated.Add(time.Hour)},
		{ID: "0123456789abcdef", Name: "laptop", Role: "backup-operator", Vault: "primary", Hash: [32]byte{1}, Created: fixtureCreated,
			Expires: fixtureCreated.Add(24 * time.Hour), CreatedBy: "00000000000000ff"},
	}
}

// openFixture copies testdata/name to a temporary file, checks that it has
// schema version version and lacks table absent (which a later migration
// adds), and opens it, which migrates it to the current version. It
// returns the open catalog and the file's path.
func openFixture(t *testing.T, name string, version int, absent string) (*Catalog, string) {
	t.Helper()
	orig, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "catalog.db")
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := schemaVersion(t.Context(), old)
	var n int
	if err == nil {
		err = old.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = ?`, absent).Scan(&n)
	}
	old.Close()
	if err != nil || v != version || n != 0 {
		t.Fatalf("%s has schema version %d (%s: %d), %v; want %d without %s", name, v, absent, n, err, version, absent)
	}

	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if v, err := schemaVersion(t.Context(), c.db); err != nil || v != currentVersion {
		t.Errorf("schema version after Open: %d, %v; want %d", v, err, currentVersion)
	}
	return c, path
}

// checkFixture checks that c holds exactly f in f's vault. Times are
// compared as instants: the catalog returns them in UTC, as f has them.
func checkFixture(t *testing.T, c *Catalog, f fixture) {
	t.Helper()
	ctx := t.Context()
	if got, err := c.Vault(ctx, f.vault.Name); err != nil || got != f.vault {
		t.Errorf("Vault(%s) = %+v, %v; want %+v", f.vault.Name, got, err, f.vault)
	}
	var packs []vault.PackRecord
	err := c.Packs(ctx, f.vault.ID, func(p vault.PackRecord) error { packs = append(packs, p); return nil })
	if err != nil || !slices.EqualFunc(packs, f.packs, func(a, b vault.PackRecord) bool { return reflect.DeepEqual(a, b) }) {
		t.Errorf("Packs(%s) = %+v, %v; want %+v", f.vault.Name, packs, err, f.packs)
	}
	var blobs []vault.BlobRecord
	err = c.Blobs(ctx, f.vault.ID, func(b vault.BlobRecord) error { blobs = append(blobs, b); return nil })
	if err != nil || !slices.Equal(blobs, f.blobs) {
		t.Errorf("Blobs(%s) = %+v, %v; want %+v", f.vault.Name, blobs, err, f.blobs)
	}
	ss, err := c.Snapshots(ctx, f.vault.ID)
	if err != nil || !equalSnapshots(ss, f.snapshots) {
		t.Errorf("Snapshots(%s) = %+v, %v; want %+v", f.vault.Name, ss, err, f.snapshots)
	}
}

// equalSnapshots reports whether a and b are equal, nil and empty alike.
func equalSnapshots(a, b []vault.SnapshotRecord) bool {
	return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b)
}

// checkKeyEvents checks that the key_events table of a migrated catalog
// works, with its foreign key to vaults: it adds two events to vault v
// (which must have none) and one to a missing vault.
func checkKeyEvents(t *testing.T, c *Catalog, v vault.ID) {
	t.Helper()
	ctx := t.Context()
	if _, err := c.LastKeyEvent(ctx, v); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("LastKeyEvent of a migrated vault: %v, want ErrNotFound", err)
	}
	at := time.Date(2025, 6, 7, 8, 9, 10, 11000, time.UTC)
	want := []vault.KeyEvent{
		{Vault: v, Time: at, Principal: "system", Event: vault.KeyEventKeyUnavailable, KEK: "platform:default v1", Detail: "key file missing", OK: false},
		{Vault: v, Time: at, Principal: "system", Event: vault.KeyEventKeyRecovered, KEK: "platform:default v1", OK: true},
	}
	for _, e := range want {
		if err := c.AddKeyEvent(ctx, e); err != nil {
			t.Fatalf("AddKeyEvent: %v", err)
		}
	}
	missing := want[0]
	missing.Vault = newID()
	if err := c.AddKeyEvent(ctx, missing); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddKeyEvent for a missing vault: %v, want ErrNotFound", err)
	}
	if got, err := c.KeyEvents(ctx, v); err != nil || !slices.Equal(got, want) {
		t.Errorf("KeyEvents = %+v, %v; want %+v", got, err, want)
	}
	if got, err := c.LastKeyEvent(ctx, v); err != nil || got != want[1] {
		t.Errorf("LastKeyEvent = %+v, %v; want %+v", got, err, want[1])
	}
}

// protectionAt is when checkProtection acts.
var protectionAt = time.Date(2025, 7, 8, 9, 10, 11, 12000, time.UTC)

// checkProtection checks that the tables and columns of version 4 work on
// the migrated vault f, which must have default settings, no events,
// sessions or requests, and at least one pack and snapshot, with their
// foreign keys to the migrated vaults. It leaves behind: f's settings
// with a 30-day soft delete (updated at protectionAt), one event, its
// last snapshot and its last pack (with its blobs) removed, and one
// approved request about f.
func checkProtection(t *testing.T, c *Catalog, f fixture) {
	t.Helper()
	ctx := t.Context()
	v := f.vault.ID
	unknown := newID()

	// Migrated snapshots and packs read back live and in use (checkFixture
	// compared them whole); they can be soft-deleted and condemned.
	last := f.snapshots[len(f.snapshots)-1]
	if err := c.SetSnapshotDeleted(ctx, v, last.ID, protectionAt, "zoë"); err != nil {
		t.Fatalf("SetSnapshotDeleted: %v", err)
	}
	ss, err := c.Snapshots(ctx, v)
	if err != nil || len(ss) != len(f.snapshots) || !ss[len(ss)-1].Deleted.Equal(protectionAt) || ss[len(ss)-1].DeletedBy != "zoë" {
		t.Errorf("Snapshots after SetSnapshotDeleted = %+v, %v", ss, err)
	}
	if err := c.SetSnapshotDeleted(ctx, v, last.ID, time.Time{}, ""); err != nil {
		t.Fatalf("SetSnapshotDeleted (undelete): %v", err)
	}
	if ss, err := c.Snapshots(ctx, v); err != nil || !equalSnapshots(ss, f.snapshots) {
		t.Errorf("Snapshots after undelete = %+v, %v; want %+v", ss, err, f.snapshots)
	}
	lastPack := f.packs[len(f.packs)-1]
	if err := c.CondemnPack(ctx, v, lastPack.ID, protectionAt); err != nil {
		t.Fatalf("CondemnPack: %v", err)
	}
	var condemned []vault.ID
	err = c.Packs(ctx, v, func(p vault.PackRecord) error {
		if !p.Condemned.IsZero() {
			condemned = append(condemned, p.ID)
			if !p.Condemned.Equal(protectionAt) {
				t.Errorf("pack %s: Condemned = %v, want %v", p.ID.Short(), p.Condemned, protectionAt)
			}
		}
		return nil
	})
	if err != nil || !slices.Equal(condemned, []vault.ID{lastPack.ID}) {
		t.Errorf("condemned packs %v, %v; want %v", condemned, err, lastPack.ID)
	}
	if err := c.RemovePack(ctx, v, lastPack.ID); err != nil {
		t.Fatalf("RemovePack: %v", err)
	}
	var blobs []vault.BlobRecord
	err = c.Blobs(ctx, v, func(b vault.BlobRecord) error { blobs = append(blobs, b); return nil })
	wantBlobs := slices.DeleteFunc(slices.Clone(f.blobs), func(b vault.BlobRecord) bool { return b.Pack == lastPack.ID })
	if err != nil || !slices.Equal(blobs, wantBlobs) {
		t.Errorf("Blobs after RemovePack = %+v, %v; want %+v", blobs, err, wantBlobs)
	}
	if err := c.RemoveSnapshot(ctx, v, last.ID); err != nil {
		t.Fatalf("RemoveSnapshot: %v", err)
	}
	if ss, err := c.Snapshots(ctx, v); err != nil || !equalSnapshots(ss, f.snapshots[:len(f.snapshots)-1]) {
		t.Errorf("Snapshots after RemoveSnapshot = %+v, %v", ss, err)
	}

	// Settings: defaults until set.
	if s, err := c.Settings(ctx, v); err != nil || s != vault.DefaultSettings() {
		t.Errorf("Settings of a migrated vault = %+v, %v; want the defaults", s, err)
	}
	set := vault.DefaultSettings()
	set.SoftDeleteDays, set.Updated = 30, protectionAt
	if err := c.SetSettings(ctx, v, set); err != nil {
		t.Fatalf("SetSettings: %v", err)
	}
	if s, err := c.Settings(ctx, v); err != nil || s != set {
		t.Errorf("Settings = %+v, %v; want %+v", s, err, set)
	}
	if err := c.SetSettings(ctx, unknown, set); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("SetSettings of an unknown vault: %v, want ErrNotFound", err)
	}

	// Events.
	e := vault.VaultEvent{Vault: v, Time: protectionAt, Principal: "zoë", Event: vault.EventSettings, Detail: "soft delete 14 → 30 days", OK: true}
	if err := c.AddEvent(ctx, e); err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	if es, err := c.Events(ctx, v); err != nil || !slices.Equal(es, []vault.VaultEvent{e}) {
		t.Errorf("Events = %+v, %v; want %+v", es, err, e)
	}
	e.Vault = unknown
	if err := c.AddEvent(ctx, e); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddEvent for an unknown vault: %v, want ErrNotFound", err)
	}

	// Sessions.
	s := vault.Session{ID: "s1", Kind: "backup", Principal: "zoë", Started: protectionAt, Touched: protectionAt}
	if err := c.BeginSession(ctx, v, s); err != nil {
		t.Fatalf("BeginSession: %v", err)
	}
	if err := c.BeginSession(ctx, unknown, vault.Session{ID: "s2", Started: protectionAt}); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("BeginSession for an unknown vault: %v, want ErrNotFound", err)
	}
	if got, err := c.Sessions(ctx, v); err != nil || !slices.Equal(got, []vault.Session{s}) {
		t.Errorf("Sessions = %+v, %v; want %+v", got, err, s)
	}
	if err := c.EndSession(ctx, s.ID); err != nil {
		t.Fatalf("EndSession: %v", err)
	}

	// Requests.
	r := vault.Request{
		ID: "r1", Vault: v, Op: "vault-set", Params: `{"soft_delete_days":14}`, Summary: "soft delete 30 → 14 days", Requester: "zoë",
		Created: protectionAt, Expires: protectionAt.Add(vault.DefaultRequestTTL), State: vault.RequestPending,
	}
	if err := c.AddRequest(ctx, r); err != nil {
		t.Fatalf("AddRequest: %v", err)
	}
	r2 := r
	r2.ID, r2.Vault = "r2", unknown
	if err := c.AddRequest(ctx, r2); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddRequest for an unknown vault: %v, want ErrNotFound", err)
	}
	if err := c.DecideRequest(ctx, r.ID, vault.RequestApproved, "approver", protectionAt.Add(time.Minute)); err != nil {
		t.Fatalf("DecideRequest: %v", err)
	}
	r.State, r.Decider, r.Decided = vault.RequestApproved, "approver", protectionAt.Add(time.Minute)
	if got, err := c.Requests(ctx); err != nil || !slices.Equal(got, []vault.Request{r}) {
		t.Errorf("Requests = %+v, %v; want %+v", got, err, r)
	}
}

// checkProtectionKept checks, after a reopen, what checkProtection left
// behind in f's vault.
func checkProtectionKept(t *testing.T, c *Catalog, f fixture) {
	t.Helper()
	ctx := t.Context()
	if s, err := c.Settings(ctx, f.vault.ID); err != nil || s.SoftDeleteDays != 30 || !s.Updated.Equal(protectionAt) {
		t.Errorf("Settings after reopen = %+v, %v", s, err)
	}
	if es, err := c.Events(ctx, f.vault.ID); err != nil || len(es) != 1 {
		t.Errorf("Events after reopen = %+v, %v", es, err)
	}
	if rs, err := c.Requests(ctx); err != nil || len(rs) != 1 || rs[0].State != vault.RequestApproved {
		t.Errorf("Requests after reopen = %+v, %v", rs, err)
	}
	removed := f.packs[len(f.packs)-1].ID
	f.packs = f.packs[:len(f.packs)-1]
	f.blobs = slices.DeleteFunc(slices.Clone(f.blobs), func(b vault.BlobRecord) bool { return b.Pack == removed })
	f.snapshots = f.snapshots[:len(f.snapshots)-1]
	checkFixture(t, c, f)
}

// reopen closes c and opens path again.
func reopen(t *testing.T, c *Catalog, path string) *Catalog {
	t.Helper()
	c.Close()
	c2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	return c2
}

// TestMigrateV1 opens a catalog written by Coffer with schema version 1
// (testdata/catalog-v1.db, made at commit 236192c by opening a new file and
// adding primaryV1), checks that it migrates to the current version with
// its data intact, and that the tables of later versions work.
func TestMigrateV1(t *testing.T) {
	c, path := openFixture(t, "catalog-v1.db", 1, "tokens")
	ctx := t.Context()
	f := primaryV1()
	checkFixture(t, c, f)

	// The tokens table works, with its foreign key to the old one.
	tok := vault.TokenRecord{ID: "0123456789abcdef", Name: "laptop", Role: "backup-operator", Vault: "primary", Hash: [32]byte{1}, Created: fixtureCreated}
	if err := c.AddToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	tok2 := tok
	tok2.ID, tok2.Hash, tok2.Vault = "fedcba9876543210", [32]byte{2}, "missing"
	if err := c.AddToken(ctx, tok2); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddToken for a missing vault: %v, want ErrNotFound", err)
	}
	if got, err := c.TokenByHash(ctx, tok.Hash); err != nil || got.ID != tok.ID {
		t.Errorf("TokenByHash = %+v, %v", got, err)
	}
	// So do those of versions 3 and 4.
	checkKeyEvents(t, c, f.vault.ID)
	checkProtection(t, c, f)

	// Reopening a migrated file changes nothing.
	c2 := reopen(t, c, path)
	if ts, err := c2.Tokens(ctx); err != nil || len(ts) != 1 {
		t.Errorf("Tokens after reopen: %+v, %v", ts, err)
	}
	if es, err := c2.KeyEvents(ctx, f.vault.ID); err != nil || len(es) != 2 {
		t.Errorf("KeyEvents after reopen: %+v, %v", es, err)
	}
	checkProtectionKept(t, c2, f)
}

// TestMigrateV2 opens a catalog written by Coffer with schema version 2
// (testdata/catalog-v2.db, made at commit bf0b739 by opening a new file
// and adding primaryV1 and fixtureTokens, all created at fixtureCreated),
// checks that it migrates to the current version with its data intact,
// and that the tables of later versions work.
func TestMigrateV2(t *testing.T) {
	c, path := openFixture(t, "catalog-v2.db", 2, "key_events")
	ctx := t.Context()
	f := primaryV1()
	checkFixture(t, c, f)
	if ts, err := c.Tokens(ctx); err != nil || !slices.Equal(ts, fixtureTokens()) {
		t.Errorf("Tokens = %+v, %v; want %+v", ts, err, fixtureTokens())
	}
	checkKeyEvents(t, c, f.vault.ID)
	checkProtection(t, c, f)

	// Reopening a migrated file changes nothing.
	c2 := reopen(t, c, path)
	if es, err := c2.KeyEvents(ctx, f.vault.ID); err != nil || len(es) != 2 {
		t.Errorf("KeyEvents after reopen: %+v, %v", es, err)
	}
	if ts, err := c2.Tokens(ctx); err != nil || len(ts) != 2 {
		t.Errorf("Tokens after reopen: %+v, %v", ts, err)
	}
	checkProtectionKept(t, c2, f)
}

// TestMigrateV3 opens a catalog written by Coffer with schema version 3
// (testdata/catalog-v3.db, made at commit f1833f6 by opening a new file
// and adding primaryV1 plus primaryV3's pack 0x06… and snapshot 0x08…,
// vault "second" (secondV3), fixtureTokens, and two key events of
// primary: a DEK rotation by the owner token two hours after
// fixtureCreated and a failure of the platform key an hour later),
// checks that it migrates to the current version with its data intact,
// the new columns zero, the settings the defaults, and that the new
// methods work on it.
func TestMigrateV3(t *testing.T) {
	c, path := openFixture(t, "catalog-v3.db", 3, "vault_settings")
	ctx := t.Context()
	primary, second := primaryV3(), secondV3()
	checkFixture(t, c, primary)
	checkFixture(t, c, second)
	if ts, err := c.Tokens(ctx); err != nil || !slices.Equal(ts, fixtureTokens()) {
		t.Errorf("Tokens = %+v, %v; want %+v", ts, err, fixtureTokens())
	}
	wantEvents := []vault.KeyEvent{
		{Vault: idOf(1), Time: fixtureCreated.Add(2 * time.Hour), Principal: "00000000000000ff", Event: vault.KeyEventDEKRotate, KEK: "platform:default v1", Detail: "DEK v2", OK: true},
		{Vault: idOf(1), Time: fixtureCreated.Add(3 * time.Hour), Principal: "system", Event: vault.KeyEventKeyUnavailable, KEK: "platform:default v1", Detail: "key file missing", OK: false},
	}
	if es, err := c.KeyEvents(ctx, idOf(1)); err != nil || !slices.Equal(es, wantEvents) {
		t.Errorf("KeyEvents = %+v, %v; want %+v", es, err, wantEvents)
	}
	if e, err := c.LastKeyEvent(ctx, idOf(1)); err != nil || e != wantEvents[1] {
		t.Errorf("LastKeyEvent = %+v, %v; want %+v", e, err, wantEvents[1])
	}
	// Key events added after the migration follow the migrated ones.
	recovered := vault.KeyEvent{Vault: idOf(1), Time: fixtureCreated.Add(3 * time.Hour), Principal: "system", Event: vault.KeyEventKeyRecovered, KEK: "platform:default v1", OK: true}
	if err := c.AddKeyEvent(ctx, recovered); err != nil {
		t.Fatal(err)
	}
	if e, err := c.LastKeyEvent(ctx, idOf(1)); err != nil || e != recovered {
		t.Errorf("LastKeyEvent after adding one = %+v, %v; want %+v", e, err, recovered)
	}

	for _, f := range []fixture{primary, second} {
		if s, err := c.Settings(ctx, f.vault.ID); err != nil || s != vault.DefaultSettings() {
			t.Errorf("Settings(%s) = %+v, %v; want the defaults", f.vault.Name, s, err)
		}
		if es, err := c.Events(ctx, f.vault.ID); err != nil || len(es) != 0 {
			t.Errorf("Events(%s) = %+v, %v; want none", f.vault.Name, es, err)
		}
		if ss, err := c.Sessions(ctx, f.vault.ID); err != nil || len(ss) != 0 {
			t.Errorf("Sessions(%s) = %+v, %v; want none", f.vault.Name, ss, err)
		}
	}
	if rs, err := c.Requests(ctx); err != nil || len(rs) != 0 {
		t.Errorf("Requests = %+v, %v; want none", rs, err)
	}

	checkProtection(t, c, primary)
	// The other vault is untouched.
	checkFixture(t, c, second)
	if s, err := c.Settings(ctx, second.vault.ID); err != nil || s != vault.DefaultSettings() {
		t.Errorf("Settings(second) = %+v, %v; want the defaults", s, err)
	}

	// Reopening a migrated file changes nothing.
	c2 := reopen(t, c, path)
	checkProtectionKept(t, c2, primary)
	checkFixture(t, c2, second)
	if ts, err := c2.Tokens(ctx); err != nil || !slices.Equal(ts, fixtureTokens()) {
		t.Errorf("Tokens after reopen = %+v, %v", ts, err)
	}
	if es, err := c2.KeyEvents(ctx, idOf(1)); err != nil || len(es) != 3 {
		t.Errorf("KeyEvents after reopen = %+v, %v", es, err)
	}
}

// primaryV3 is the content of vault "primary" in catalog-v3.db:
// primaryV1, plus pack 0x06… (8192 bytes, DEK version 2, a minute after
// fixtureCreated) with data blob 0x07… at offset 0 (300 and 600 bytes),
// and snapshot 0x08… of host-1 an hour after fixtureCreated, child of
// 0x05…, of paths ["/home"] and no tags, tree 0x04…, 2 files, 1 dir, 800
// bytes, 300 added, 2s.
func primaryV3() fixture {
	f := primaryV1()
	f.packs = append(f.packs, vault.PackRecord{ID: idOf(6), Size: 8192, DEKVersion: 2, Blobs: 1, Created: fixtureCreated.Add(time.Minute)})
	f.blobs = append(f.blobs, vault.BlobRecord{ID: idOf(7), Type: vault.DataBlob, Pack: idOf(6), Offset: 0, Length: 300, RawLen: 600})
	f.snapshots = append(f.snapshots, vault.SnapshotRecord{
		ID: idOf(8), Time: fixtureCreated.Add(time.Hour), Host: "host-1", Paths: []string{"/home"}, Tree: idOf(4), Parent: idOf(5),
		Files: 2, Dirs: 1, Bytes: 800, BytesAdded: 300, Duration: 2 * time.Second,
	})
	return f
}

// secondV3 is vault "second" of catalog-v3.db (ID 0x11…, created an hour
// after fixtureCreated): pack 0x12… (1024 bytes, DEK version 1) with tree
// blob 0x13… at offset 0 (40 and 60 bytes), and snapshot 0x14… of host-2
// of ["/srv"], tree 0x13…, 3 files, 1 dir, 60 bytes, 40 added, 1ms.
func secondV3() fixture {
	at := fixtureCreated.Add(time.Hour)
	return fixture{
		vault: vault.VaultRecord{ID: idOf(0x11), Name: "second", Created: at},
		packs: []vault.PackRecord{{ID: idOf(0x12), Size: 1024, DEKVersion: 1, Blobs: 1, Created: at}},
		blobs: []vault.BlobRecord{{ID: idOf(0x13), Type: vault.TreeBlob, Pack: idOf(0x12), Offset: 0, Length: 40, RawLen: 60}},
		snapshots: []vault.SnapshotRecord{{
			ID: idOf(0x14), Time: at, Host: "host-2", Paths: []string{"/srv"}, Tree: idOf(0x13),
			Files: 3, Dirs: 1, Bytes: 60, BytesAdded: 40, Duration: time.Millisecond,
		}},
	}
}

// TestMigrateConcurrent opens each old catalog from several handles at
// once: exactly one migrates it, the others see the result.
func TestMigrateConcurrent(t *testing.T) {
	for _, name := range []string{"catalog-v1.db", "catalog-v2.db", "catalog-v3.db"} {
		t.Run(name, func(t *testing.T) { testMigrateConcurrent(t, name) })
	}
}

func testMigrateConcurrent(t *testing.T, name string) {
	orig, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "catalog.db")
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	var (
		cs [4]*Catalog
		wg sync.WaitGroup
	)
	for i := range cs {
		wg.Go(func() {
			c, err := Open(path)
			if err != nil {
				t.Errorf("Open %d: %v", i, err)
				return
			}
			cs[i] = c
		})
	}
	wg.Wait()
	ctx := t.Context()
	for i, c := range cs {
		if c == nil {
			continue
		}
		defer c.Close()
		if _, err := c.Tokens(ctx); err != nil {
			t.Errorf("handle %d: Tokens: %v", i, err)
		}
		if es, err := c.KeyEvents(ctx, vault.ID{0: 1, 31: 1}); err != nil || len(es) != 0 {
			t.Errorf("handle %d: KeyEvents = %v, %v", i, es, err)
		}
		if s, err := c.Settings(ctx, idOf(1)); err != nil || s != vault.DefaultSettings() {
			t.Errorf("handle %d: Settings = %+v, %v", i, s, err)
		}
		if rs, err := c.Requests(ctx); err != nil || len(rs) != 0 {
			t.Errorf("handle %d: Requests = %v, %v", i, rs, err)
		}
		if v, err := schemaVersion(ctx, c.db); err != nil || v != currentVersion {
			t.Errorf("handle %d: schema version %d, %v; want %d", i, v, err, currentVersion)
		}
	}
}

// TestMigrateUnindexed: migrating a schema 15 catalog to 16 lists the
// packs opening a vault must index (no header copy or no lookup keys),
// and no other, so that the first open after the upgrade finds them.
func TestMigrateUnindexed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{`CREATE TABLE schema_version (one INTEGER NOT NULL PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL) STRICT`}
	for _, m := range migrations[:15] {
		stmts = append(stmts, m...)
	}
	stmts = append(stmts, `INSERT INTO schema_version (one, version) VALUES (1, 15)`)
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	v := idOf(1)
	if _, err := db.Exec(`INSERT INTO vaults (id, name, created) VALUES (?, 'primary', 1)`, v[:]); err != nil {
		t.Fatal(err)
	}
	full, unkeyed, legacy, bare := idOf(2), idOf(3), idOf(4), idOf(5)
	for _, p := range []struct {
		id     vault.ID
		header []byte
		keyed  bool
	}{{full, []byte("h"), true}, {unkeyed, []byte("h"), false}, {legacy, nil, false}, {bare, nil, true}} {
		if _, err := db.Exec(`INSERT INTO packs (vault, id, size, dek_version, blobs, created, header) VALUES (?, ?, 100, 1, 1, 1, ?)`, v[:], p.id[:], p.header); err != nil {
			t.Fatal(err)
		}
		if p.keyed {
			if _, err := db.Exec(`INSERT INTO pack_keys (vault, pack, keys) VALUES (?, ?, ?)`, v[:], p.id[:], make([]byte, 8)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []vault.ID
	if err := c.UnindexedPacks(t.Context(), v, func(p vault.PackRecord) error {
		got = append(got, p.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b vault.ID) int { return bytes.Compare(a[:], b[:]) })
	if want := []vault.ID{unkeyed, legacy, bare}; !slices.Equal(got, want) {
		t.Errorf("UnindexedPacks after the migration: %x, want %x", got, want)
	}
}

// TestUnindexedPlan: SQLite finds the packs to index through the index
// of headerless packs and the list of unkeyed ones, never by ranging
// over the vault's packs, which would read every pack with its header.
func TestUnindexedPlan(t *testing.T) {
	c, err := Open(filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rows, err := c.db.QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+unindexedQuery, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(plan, "\n")
	if !strings.Contains(all, "packs_headerless") || !slices.Contains(plan, "SEARCH u USING PRIMARY KEY (vault=?)") {
		t.Errorf("the query of unindexed packs uses neither the index nor the list:\n%s", all)
	}
	for _, l := range plan {
		if l == "SEARCH p USING PRIMARY KEY (vault=?)" || (strings.HasPrefix(l, "SCAN p") && !strings.Contains(l, "packs_headerless")) {
			t.Errorf("the query of unindexed packs ranges over the packs (%s):\n%s", l, all)
		}
	}
}
