// Package catalogtest is the conformance suite every vault.Catalog
// implementation runs (the SQLite and the PostgreSQL catalog), and, in
// RunStorage, the tests of what a SQL catalog stores, seen from its rows.
//
// An implementation's test calls Run with a function that returns a new,
// empty catalog:
//
//	func TestConformance(t *testing.T) {
//		catalogtest.Run(t, func(t *testing.T) vault.Catalog {
//			c, err := Open(filepath.Join(t.TempDir(), "catalog.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			return c
//		})
//	}
package catalogtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Run runs the conformance suite. newCatalog is called once per subtest
// with that subtest's t and must return a new, empty catalog; Run closes
// it (Close must therefore be safe to call again if newCatalog also
// registers it with t.Cleanup).
//
// Times are compared with time.Time.Equal; the times the suite stores have
// microsecond precision, the finest PostgreSQL keeps.
func Run(t *testing.T, newCatalog func(t *testing.T) vault.Catalog) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c vault.Catalog)
	}{
		{"VaultRoundTrip", testVaultRoundTrip},
		{"VaultDuplicate", testVaultDuplicate},
		{"VaultNotFound", testVaultNotFound},
		{"PackRoundTrip", testPackRoundTrip},
		{"BlobInTwoPacks", testBlobInTwoPacks},
		{"PackKeys", testPackKeys},
		{"UnindexedPacks", testUnindexedPacks},
		{"PackTotals", testPackTotals},
		{"DuplicatePack", testDuplicatePack},
		{"VaultScoping", testVaultScoping},
		{"SnapshotRoundTrip", testSnapshotRoundTrip},
		{"SnapshotOrder", testSnapshotOrder},
		{"SnapshotDuplicate", testSnapshotDuplicate},
		{"IterationStops", testIterationStops},
		{"Concurrent", testConcurrent},
		{"TokenRoundTrip", testTokenRoundTrip},
		{"TokenDuplicate", testTokenDuplicate},
		{"TokenNotFound", testTokenNotFound},
		{"TokenUnknownVault", testTokenUnknownVault},
		{"TokenOrder", testTokenOrder},
		{"TokenRevoke", testTokenRevoke},
		{"TokenRevokeUnknown", testTokenRevokeUnknown},
		{"TokenExpiry", testTokenExpiry},
		{"TokenByID", testTokenByID},
		{"PrincipalNames", testPrincipalNames},
		{"KeyEventRoundTrip", testKeyEventRoundTrip},
		{"KeyEventOrder", testKeyEventOrder},
		{"KeyEventUnknownVault", testKeyEventUnknownVault},
		{"LastKeyEvent", testLastKeyEvent},
		{"SnapshotSoftDelete", testSnapshotSoftDelete},
		{"SnapshotSoftDeleteNotFound", testSnapshotSoftDeleteNotFound},
		{"SnapshotRemove", testSnapshotRemove},
		{"PackCondemn", testPackCondemn},
		{"PackRemove", testPackRemove},
		{"PackRemoveNotFound", testPackRemoveNotFound},
		{"SettingsDefaults", testSettingsDefaults},
		{"SettingsRoundTrip", testSettingsRoundTrip},
		{"SettingsUnstorable", testSettingsUnstorable},
		{"EventRoundTrip", testEventRoundTrip},
		{"EventOrder", testEventOrder},
		{"EventUnknownVault", testEventUnknownVault},
		{"SessionLifecycle", testSessionLifecycle},
		{"SessionOrder", testSessionOrder},
		{"SessionDuplicate", testSessionDuplicate},
		{"RequestRoundTrip", testRequestRoundTrip},
		{"RequestOrder", testRequestOrder},
		{"RequestDuplicate", testRequestDuplicate},
		{"RequestDecide", testRequestDecide},
		{"RequestDecideInvalid", testRequestDecideInvalid},
		{"RequestDecideConcurrent", testRequestDecideConcurrent},
		{"VaultDelete", testVaultDelete},
		{"KeyAnchorLifecycle", testKeyAnchorLifecycle},
		{"KeyAnchorConflict", testKeyAnchorConflict},
		{"KeyAnchorUnknownVault", testKeyAnchorUnknownVault},
		{"ChainAppend", testChainAppend},
		{"ChainStateRules", testChainStateRules},
		{"ChainConsistentRead", testChainConsistentRead},
		{"ChainConcurrent", testChainConcurrent},
		{"ChainSettings", testChainSettings},
		{"PackHeader", testPackHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCatalog(t)
			closed := false
			t.Cleanup(func() {
				if !closed {
					c.Close()
				}
			})
			tt.fn(t, c)
			closed = true
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// newID returns a random ID. crypto/rand.Read never fails (it crashes the
// program instead), so newID is safe to call from any goroutine.
func newID() vault.ID {
	var id vault.ID
	rand.Read(id[:])
	return id
}

// base is a fixed instant with microsecond precision, away from UTC so
// that implementations must not depend on the location.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.FixedZone("UTC+5:30", 5*3600+1800))

func createVault(t *testing.T, c vault.Catalog, name string) vault.VaultRecord {
	t.Helper()
	v := vault.VaultRecord{ID: newID(), Name: name, Created: base}
	if err := c.CreateVault(t.Context(), v); err != nil {
		t.Fatalf("CreateVault(%q): %v", name, err)
	}
	return v
}

// newPack returns a pack of n blobs. Field values are chosen to exercise
// the full range of their types.
func newPack(t *testing.T, n int) (vault.PackRecord, []vault.BlobRecord) {
	t.Helper()
	p := vault.PackRecord{
		ID:         newID(),
		Size:       1<<40 + 12345,
		DEKVersion: math.MaxUint32,
		Blobs:      n,
		Created:    base.Add(time.Duration(n) * time.Microsecond),
	}
	blobs := make([]vault.BlobRecord, n)
	var off uint32
	for i := range blobs {
		typ := vault.DataBlob
		if i%3 == 2 {
			typ = vault.TreeBlob
		}
		length := uint32(100 + i)
		blobs[i] = vault.BlobRecord{
			ID:     newID(),
			Type:   typ,
			Pack:   p.ID,
			Offset: off,
			Length: length,
			RawLen: length * 3,
		}
		off += length
	}
	if n > 0 {
		// Extremes in the last blob.
		blobs[n-1].Offset = math.MaxUint32 - 1
		blobs[n-1].Length = math.MaxUint32
		blobs[n-1].RawLen = math.MaxUint32
	}
	return p, blobs
}

func addPack(t *testing.T, c vault.Catalog, v vault.ID, p vault.PackRecord, blobs []vault.BlobRecord) {
	t.Helper()
	if err := c.AddPack(t.Context(), v, p, blobs); err != nil {
		t.Fatalf("AddPack(%s): %v", p.ID.Short(), err)
	}
}

func allPacks(t *testing.T, c vault.Catalog, v vault.ID) []vault.PackRecord {
	t.Helper()
	var ps []vault.PackRecord
	err := c.Packs(t.Context(), v, func(p vault.PackRecord) error {
		p.Created = p.Created.UTC()
		p.Condemned = p.Condemned.UTC()
		ps = append(ps, p)
		return nil
	})
	if err != nil {
		t.Fatalf("Packs: %v", err)
	}
	sortPacks(ps)
	return ps
}

func allBlobs(t *testing.T, c vault.Catalog, v vault.ID) []vault.BlobRecord {
	t.Helper()
	var bs []vault.BlobRecord
	err := c.Blobs(t.Context(), v, func(b vault.BlobRecord) error {
		bs = append(bs, b)
		return nil
	})
	if err != nil {
		t.Fatalf("Blobs: %v", err)
	}
	sortBlobs(bs)
	return bs
}

func snapshots(t *testing.T, c vault.Catalog, v vault.ID) []vault.SnapshotRecord {
	t.Helper()
	ss, err := c.Snapshots(t.Context(), v)
	if err != nil {
		t.Fatalf("Snapshots: %v", err)
	}
	return normSnapshots(ss)
}

func sortPacks(ps []vault.PackRecord) {
	slices.SortFunc(ps, func(a, b vault.PackRecord) int { return bytes.Compare(a.ID[:], b.ID[:]) })
}

func sortBlobs(bs []vault.BlobRecord) {
	slices.SortFunc(bs, func(a, b vault.BlobRecord) int {
		if c := bytes.Compare(a.Pack[:], b.Pack[:]); c != 0 {
			return c
		}
		if a.Offset != b.Offset {
			if a.Offset < b.Offset {
				return -1
			}
			return 1
		}
		return bytes.Compare(a.ID[:], b.ID[:])
	})
}

// normPacks returns ps sorted, with times in UTC, so that reflect.DeepEqual
// compares instants (UTC also strips monotonic readings; a zero time
// stays zero).
func normPacks(ps ...vault.PackRecord) []vault.PackRecord {
	ps = slices.Clone(ps)
	for i := range ps {
		ps[i].Created = ps[i].Created.UTC()
		ps[i].Condemned = ps[i].Condemned.UTC()
	}
	sortPacks(ps)
	return ps
}

func normBlobs(bss ...[]vault.BlobRecord) []vault.BlobRecord {
	bs := slices.Concat(bss...)
	sortBlobs(bs)
	return bs
}

// normSnapshots puts times in UTC and treats nil and empty slices alike.
func normSnapshots(ss []vault.SnapshotRecord) []vault.SnapshotRecord {
	ss = slices.Clone(ss)
	for i := range ss {
		ss[i].Time = ss[i].Time.UTC()
		ss[i].Deleted = ss[i].Deleted.UTC()
		if len(ss[i].Paths) == 0 {
			ss[i].Paths = nil
		}
		if len(ss[i].Tags) == 0 {
			ss[i].Tags = nil
		}
	}
	return ss
}

func equal[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func testVaultRoundTrip(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	want := []vault.VaultRecord{
		{ID: newID(), Name: "primary", Created: base},
		{ID: newID(), Name: "Ärchiv – 東京 🗄", Created: time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)},
		{ID: newID(), Name: "far-future", Created: time.Date(2200, 1, 2, 3, 4, 5, 6000, time.Local)},
	}
	for _, v := range want {
		if err := c.CreateVault(ctx, v); err != nil {
			t.Fatalf("CreateVault(%q): %v", v.Name, err)
		}
	}
	for _, w := range want {
		got, err := c.Vault(ctx, w.Name)
		if err != nil {
			t.Fatalf("Vault(%q): %v", w.Name, err)
		}
		if got.ID != w.ID || got.Name != w.Name || !got.Created.Equal(w.Created) {
			t.Errorf("Vault(%q) = %+v, want %+v", w.Name, got, w)
		}
	}
}

func testVaultDuplicate(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	orig := createVault(t, c, "primary")

	err := c.CreateVault(ctx, vault.VaultRecord{ID: newID(), Name: "primary", Created: base.Add(time.Hour)})
	if !errors.Is(err, vault.ErrExists) {
		t.Errorf("CreateVault with a taken name: got %v, want ErrExists", err)
	}
	// A vault's ID is its identity too.
	err = c.CreateVault(ctx, vault.VaultRecord{ID: orig.ID, Name: "other", Created: base})
	if !errors.Is(err, vault.ErrExists) {
		t.Errorf("CreateVault with a taken ID: got %v, want ErrExists", err)
	}
	if _, err := c.Vault(ctx, "other"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Vault(other) after failed create: got %v, want ErrNotFound", err)
	}

	got, err := c.Vault(ctx, "primary")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != orig.ID || !got.Created.Equal(orig.Created) {
		t.Errorf("failed CreateVault changed the vault: got %+v, want %+v", got, orig)
	}
}

func testVaultNotFound(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	if _, err := c.Vault(ctx, "missing"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Vault(missing) in an empty catalog: got %v, want ErrNotFound", err)
	}
	createVault(t, c, "primary")
	for _, name := range []string{"missing", "", "primar", "primary "} {
		if _, err := c.Vault(ctx, name); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("Vault(%q): got %v, want ErrNotFound", name, err)
		}
	}
}

func testPackRoundTrip(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	if got := allPacks(t, c, v.ID); len(got) != 0 {
		t.Errorf("Packs of a new vault: %v", got)
	}
	if got := allBlobs(t, c, v.ID); len(got) != 0 {
		t.Errorf("Blobs of a new vault: %v", got)
	}

	p1, b1 := newPack(t, 1)
	p2, b2 := newPack(t, 7)
	p3, b3 := newPack(t, 300)
	p3.Size = 16 << 20
	p3.DEKVersion = 0
	addPack(t, c, v.ID, p1, b1)
	addPack(t, c, v.ID, p2, b2)
	addPack(t, c, v.ID, p3, b3)

	equal(t, "Packs", allPacks(t, c, v.ID), normPacks(p1, p2, p3))
	equal(t, "Blobs", allBlobs(t, c, v.ID), normBlobs(b1, b2, b3))
}

func testBlobInTwoPacks(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	p1, b1 := newPack(t, 3)
	p2, b2 := newPack(t, 3)
	// Two concurrent backups stored the same blob, at different offsets.
	b2[1].ID = b1[0].ID
	b2[1].Type = b1[0].Type
	addPack(t, c, v.ID, p1, b1)
	addPack(t, c, v.ID, p2, b2)

	got := allBlobs(t, c, v.ID)
	equal(t, "Blobs", got, normBlobs(b1, b2))
	var packs []vault.ID
	for _, b := range got {
		if b.ID == b1[0].ID {
			packs = append(packs, b.Pack)
		}
	}
	if len(packs) != 2 || packs[0] == packs[1] {
		t.Errorf("blob %s found in packs %v, want one row in each of %s and %s", b1[0].ID.Short(), packs, p1.ID.Short(), p2.ID.Short())
	}
}

// testDuplicatePack checks that recording a pack ID twice fails with
// ErrExists and, since AddPack is atomic, leaves none of the second call's
// blobs behind.
func testDuplicatePack(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	p, blobs := newPack(t, 5)
	addPack(t, c, v.ID, p, blobs)

	again, more := newPack(t, 9)
	again.ID = p.ID
	for i := range more {
		more[i].Pack = p.ID
		more[i].Offset = uint32(1_000_000 + 1000*i) // none of the first call's
	}
	err := c.AddPack(t.Context(), v.ID, again, more)
	if !errors.Is(err, vault.ErrExists) {
		t.Errorf("AddPack of a recorded pack ID: got %v, want ErrExists", err)
	}
	equal(t, "Packs", allPacks(t, c, v.ID), normPacks(p))
	equal(t, "Blobs", allBlobs(t, c, v.ID), normBlobs(blobs))
}

func testVaultScoping(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	a := createVault(t, c, "a")
	b := createVault(t, c, "b")
	empty := createVault(t, c, "empty")

	pa, ba := newPack(t, 4)
	pb, bb := newPack(t, 6)
	addPack(t, c, a.ID, pa, ba)
	addPack(t, c, b.ID, pb, bb)

	// The same pack ID and blobs recorded in both vaults are separate rows.
	shared, sharedBlobs := newPack(t, 2)
	addPack(t, c, a.ID, shared, sharedBlobs)
	addPack(t, c, b.ID, shared, sharedBlobs)

	sa := newSnapshot(t, base)
	sb := newSnapshot(t, base)
	if err := c.AddSnapshot(ctx, a.ID, sa); err != nil {
		t.Fatal(err)
	}
	if err := c.AddSnapshot(ctx, b.ID, sb); err != nil {
		t.Fatal(err)
	}
	sameID := newSnapshot(t, base.Add(time.Minute))
	sameIDb := sameID
	sameIDb.Host = "other-host"
	if err := c.AddSnapshot(ctx, a.ID, sameID); err != nil {
		t.Fatal(err)
	}
	if err := c.AddSnapshot(ctx, b.ID, sameIDb); err != nil {
		t.Fatalf("AddSnapshot of an ID present only in another vault: %v", err)
	}

	equal(t, "Packs(a)", allPacks(t, c, a.ID), normPacks(pa, shared))
	equal(t, "Packs(b)", allPacks(t, c, b.ID), normPacks(pb, shared))
	equal(t, "Blobs(a)", allBlobs(t, c, a.ID), normBlobs(ba, sharedBlobs))
	equal(t, "Blobs(b)", allBlobs(t, c, b.ID), normBlobs(bb, sharedBlobs))
	equal(t, "Snapshots(a)", snapshots(t, c, a.ID), normSnapshots([]vault.SnapshotRecord{sa, sameID}))
	equal(t, "Snapshots(b)", snapshots(t, c, b.ID), normSnapshots([]vault.SnapshotRecord{sb, sameIDb}))

	if got := allPacks(t, c, empty.ID); len(got) != 0 {
		t.Errorf("Packs(empty) = %v", got)
	}
	if got := allBlobs(t, c, empty.ID); len(got) != 0 {
		t.Errorf("Blobs(empty) = %v", got)
	}
	if got := snapshots(t, c, empty.ID); len(got) != 0 {
		t.Errorf("Snapshots(empty) = %v", got)
	}
}

func newSnapshot(t *testing.T, tm time.Time) vault.SnapshotRecord {
	t.Helper()
	return vault.SnapshotRecord{
		ID:         newID(),
		Time:       tm,
		Host:       "host-1",
		Paths:      []string{"/home/user"},
		Tags:       []string{"daily"},
		Tree:       newID(),
		Files:      10,
		Dirs:       2,
		Bytes:      12345,
		BytesAdded: 678,
		Duration:   3 * time.Second,
	}
}

func testSnapshotRoundTrip(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	if got := snapshots(t, c, v.ID); len(got) != 0 {
		t.Errorf("Snapshots of a new vault: %v", got)
	}

	first := vault.SnapshotRecord{
		ID:   newID(),
		Time: base,
		Host: "zoë-laptop.example",
		Paths: []string{
			"/home/zoë/Документы",
			`C:\Users\東京\写真`,
			"/srv/with space/and\ttab/\"quoted\"/back\\slash",
			"/emoji/🗄️",
		},
		Tags:       []string{"täglich", "日本語", `a"b\c`, "with,comma", "[bracket]"},
		Tree:       newID(),
		Parent:     vault.ID{}, // none
		Files:      1 << 33,
		Dirs:       math.MaxUint32 + 7,
		Bytes:      5 << 40,
		BytesAdded: 3 << 30,
		Duration:   1*time.Hour + 23*time.Minute + 45*time.Second + 678901234,
		Domain:     "agt_0123456789abcdef",
		// A copy (docs/format.md §8.6): its original's vault, ID and time.
		Copy: &vault.SnapshotCopy{Vault: newID(), Snapshot: newID(), Time: time.Date(2021, 3, 4, 5, 6, 7, 890123456, time.UTC)},
	}
	second := vault.SnapshotRecord{
		ID:         newID(),
		Time:       base.Add(24 * time.Hour),
		Host:       "h",
		Paths:      []string{"/"},
		Tags:       nil, // none
		Tree:       newID(),
		Parent:     first.ID,
		Files:      0,
		Dirs:       0,
		Bytes:      0,
		BytesAdded: 0,
		Duration:   0,
	}
	for _, s := range []vault.SnapshotRecord{first, second} {
		if err := c.AddSnapshot(ctx, v.ID, s); err != nil {
			t.Fatalf("AddSnapshot(%s): %v", s.ID.Short(), err)
		}
	}
	got := snapshots(t, c, v.ID)
	equal(t, "Snapshots", got, normSnapshots([]vault.SnapshotRecord{first, second}))
	if len(got) == 2 {
		if !got[0].Parent.IsZero() {
			t.Errorf("Parent of a snapshot without one = %s, want zero", got[0].Parent)
		}
		if got[1].Parent != first.ID {
			t.Errorf("Parent = %s, want %s", got[1].Parent, first.ID)
		}
	}
}

func testSnapshotOrder(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")

	east := time.FixedZone("UTC+9", 9*3600)
	west := time.FixedZone("UTC-8", -8*3600)
	var want []vault.SnapshotRecord
	// Times in different locations: their wall clocks sort differently
	// from their instants.
	for i, tm := range []time.Time{
		time.Date(2024, 1, 1, 8, 0, 0, 0, east),       // 2023-12-31T23:00Z
		time.Date(2023, 12, 31, 16, 0, 0, 1000, west), // 2024-01-01T00:00:00.000001Z
		time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC),
	} {
		s := newSnapshot(t, tm)
		s.Host = fmt.Sprintf("host-%d", i)
		want = append(want, s)
	}
	// Three snapshots at the same instant sort by ID.
	same := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	var ties []vault.SnapshotRecord
	for i := range 3 {
		s := newSnapshot(t, same.In([]*time.Location{east, west, time.UTC}[i]))
		s.Host = fmt.Sprintf("tie-%d", i)
		ties = append(ties, s)
	}
	slices.SortFunc(ties, func(a, b vault.SnapshotRecord) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	want = slices.Insert(want, 3, ties...)

	// Add in an order that is neither the wanted one nor its reverse.
	for _, i := range []int{4, 0, 6, 2, 5, 1, 3} {
		if err := c.AddSnapshot(ctx, v.ID, want[i]); err != nil {
			t.Fatal(err)
		}
	}
	equal(t, "Snapshots", snapshots(t, c, v.ID), normSnapshots(want))
}

func testSnapshotDuplicate(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	s := newSnapshot(t, base)
	if err := c.AddSnapshot(ctx, v.ID, s); err != nil {
		t.Fatal(err)
	}
	dup := newSnapshot(t, base.Add(time.Hour))
	dup.ID = s.ID
	dup.Host = "someone-else"
	if err := c.AddSnapshot(ctx, v.ID, dup); !errors.Is(err, vault.ErrExists) {
		t.Errorf("AddSnapshot of a recorded ID: got %v, want ErrExists", err)
	}
	equal(t, "Snapshots", snapshots(t, c, v.ID), normSnapshots([]vault.SnapshotRecord{s}))
}

func testIterationStops(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	for range 3 {
		p, blobs := newPack(t, 4)
		addPack(t, c, v.ID, p, blobs)
	}
	stop := errors.New("stop here")

	calls := 0
	err := c.Packs(ctx, v.ID, func(vault.PackRecord) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Errorf("Packs with fn failing on call 2: err %v after %d calls, want %v after 2", err, calls, stop)
	}

	calls = 0
	err = c.Blobs(ctx, v.ID, func(vault.BlobRecord) error {
		calls++
		if calls == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 5 {
		t.Errorf("Blobs with fn failing on call 5: err %v after %d calls, want %v after 5", err, calls, stop)
	}

	// The catalog remains usable.
	if n := len(allBlobs(t, c, v.ID)); n != 12 {
		t.Errorf("Blobs after stopped iterations: %d rows, want 12", n)
	}
}

func testConcurrent(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	const (
		workers = 16
		rounds  = 8
		blobsN  = 50
	)
	var (
		mu        sync.Mutex
		wantPacks []vault.PackRecord
		wantBlobs [][]vault.BlobRecord
		wantSnaps []vault.SnapshotRecord
		wg        sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				p, blobs := newPack(t, blobsN)
				if err := c.AddPack(ctx, v.ID, p, blobs); err != nil {
					t.Errorf("worker %d: AddPack: %v", w, err)
					return
				}
				s := newSnapshot(t, base.Add(time.Duration(w*rounds+r)*time.Second))
				if err := c.AddSnapshot(ctx, v.ID, s); err != nil {
					t.Errorf("worker %d: AddSnapshot: %v", w, err)
					return
				}
				mu.Lock()
				wantPacks = append(wantPacks, p)
				wantBlobs = append(wantBlobs, blobs)
				wantSnaps = append(wantSnaps, s)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.SortFunc(wantSnaps, func(a, b vault.SnapshotRecord) int { return a.Time.Compare(b.Time) })
	equal(t, "Packs", allPacks(t, c, v.ID), normPacks(wantPacks...))
	equal(t, "Blobs", allBlobs(t, c, v.ID), normBlobs(wantBlobs...))
	equal(t, "Snapshots", snapshots(t, c, v.ID), normSnapshots(wantSnaps))
}

// newToken returns a vault-scoped token record with a random hash and a
// random ID of 16 lowercase hex digits.
func newToken(t *testing.T, vaultName string, created time.Time) vault.TokenRecord {
	t.Helper()
	var id [8]byte
	rand.Read(id[:])
	tok := vault.TokenRecord{
		ID:        hex.EncodeToString(id[:]),
		Name:      "laptop backups",
		Role:      "backup-operator",
		Vault:     vaultName,
		Created:   created,
		CreatedBy: "0123456789abcdef",
	}
	rand.Read(tok.Hash[:])
	return tok
}

func addToken(t *testing.T, c vault.Catalog, tok vault.TokenRecord) {
	t.Helper()
	if err := c.AddToken(t.Context(), tok); err != nil {
		t.Fatalf("AddToken(%s): %v", tok.ID, err)
	}
}

// normTokens puts times in UTC (a zero time stays zero) and treats nil and
// empty alike.
func normTokens(ts ...vault.TokenRecord) []vault.TokenRecord {
	if len(ts) == 0 {
		return nil
	}
	ts = slices.Clone(ts)
	for i := range ts {
		ts[i].Created = ts[i].Created.UTC()
		ts[i].Expires = ts[i].Expires.UTC()
		ts[i].Revoked = ts[i].Revoked.UTC()
	}
	return ts
}

func tokens(t *testing.T, c vault.Catalog) []vault.TokenRecord {
	t.Helper()
	ts, err := c.Tokens(t.Context())
	if err != nil {
		t.Fatalf("Tokens: %v", err)
	}
	return normTokens(ts...)
}

func tokenByHash(t *testing.T, c vault.Catalog, hash [32]byte) vault.TokenRecord {
	t.Helper()
	tok, err := c.TokenByHash(t.Context(), hash)
	if err != nil {
		t.Fatalf("TokenByHash: %v", err)
	}
	return normTokens(tok)[0]
}

func testTokenRoundTrip(t *testing.T, c vault.Catalog) {
	createVault(t, c, "Ärchiv – 東京 🗄")
	if got := tokens(t, c); len(got) != 0 {
		t.Errorf("Tokens of a new catalog: %v", got)
	}
	// The initial owner token: server-wide, never expires, created by
	// nobody.
	owner := vault.TokenRecord{ID: "00000000000000ff", Name: "initial owner", Role: "owner", Created: base}
	rand.Read(owner.Hash[:])
	// A vault-scoped token with every field set.
	scoped := newToken(t, "Ärchiv – 東京 🗄", base.Add(time.Microsecond))
	scoped.Name = `zoë's "laptop", 日本語`
	scoped.Expires = base.Add(90 * 24 * time.Hour)
	scoped.CreatedBy = owner.ID
	addToken(t, c, owner)
	addToken(t, c, scoped)

	for _, want := range []vault.TokenRecord{owner, scoped} {
		got := tokenByHash(t, c, want.Hash)
		equal(t, "TokenByHash("+want.ID+")", got, normTokens(want)[0])
		if !got.Revoked.IsZero() {
			t.Errorf("token %s: Revoked = %v, want zero (active)", want.ID, got.Revoked)
		}
	}
	if got := tokenByHash(t, c, owner.Hash); !got.Expires.IsZero() || got.Vault != "" || got.CreatedBy != "" {
		t.Errorf("owner token: Expires %v, Vault %q, CreatedBy %q; want zero, \"\", \"\"", got.Expires, got.Vault, got.CreatedBy)
	}
	equal(t, "Tokens", tokens(t, c), normTokens(owner, scoped))
}

func testTokenDuplicate(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	createVault(t, c, "primary")
	orig := newToken(t, "primary", base)
	addToken(t, c, orig)

	sameID := newToken(t, "primary", base.Add(time.Hour))
	sameID.ID = orig.ID
	if err := c.AddToken(ctx, sameID); !errors.Is(err, vault.ErrExists) {
		t.Errorf("AddToken with a taken ID: got %v, want ErrExists", err)
	}
	sameHash := newToken(t, "primary", base.Add(time.Hour))
	sameHash.Hash = orig.Hash
	sameHash.Role = "owner"
	sameHash.Vault = ""
	if err := c.AddToken(ctx, sameHash); !errors.Is(err, vault.ErrExists) {
		t.Errorf("AddToken with a taken hash: got %v, want ErrExists", err)
	}
	if _, err := c.TokenByHash(ctx, sameID.Hash); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("TokenByHash of the refused token: got %v, want ErrNotFound", err)
	}
	equal(t, "TokenByHash", tokenByHash(t, c, orig.Hash), normTokens(orig)[0])
	equal(t, "Tokens", tokens(t, c), normTokens(orig))
}

func testTokenNotFound(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	if _, err := c.TokenByHash(ctx, [32]byte{}); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("TokenByHash in an empty catalog: got %v, want ErrNotFound", err)
	}
	createVault(t, c, "primary")
	tok := newToken(t, "primary", base)
	addToken(t, c, tok)
	near := tok.Hash
	near[31] ^= 1
	for _, h := range [][32]byte{{}, near, {0: tok.Hash[0]}} {
		if got, err := c.TokenByHash(ctx, h); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("TokenByHash(%x): got %+v, %v; want ErrNotFound", h, got, err)
		}
	}
}

// testTokenUnknownVault checks that a token cannot name a vault that does
// not exist (yet): it would start to work when someone creates a vault of
// that name.
func testTokenUnknownVault(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	createVault(t, c, "primary")
	for _, name := range []string{"missing", "primary ", "Primary"} {
		tok := newToken(t, name, base)
		if err := c.AddToken(ctx, tok); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("AddToken for vault %q: got %v, want ErrNotFound", name, err)
		}
	}
	if got := tokens(t, c); len(got) != 0 {
		t.Errorf("Tokens after refused adds: %+v", got)
	}
}

func testTokenOrder(t *testing.T, c vault.Catalog) {
	createVault(t, c, "primary")
	east := time.FixedZone("UTC+9", 9*3600)
	west := time.FixedZone("UTC-8", -8*3600)
	var want []vault.TokenRecord
	// Wall clocks in different locations sort differently from their
	// instants.
	for _, tm := range []time.Time{
		time.Date(2024, 1, 1, 8, 0, 0, 0, east),       // 2023-12-31T23:00Z
		time.Date(2023, 12, 31, 16, 0, 0, 1000, west), // 2024-01-01T00:00:00.000001Z
		time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC),
	} {
		want = append(want, newToken(t, "primary", tm))
	}
	// Three tokens created at the same instant sort by ID.
	same := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	var ties []vault.TokenRecord
	for i := range 3 {
		ties = append(ties, newToken(t, "primary", same.In([]*time.Location{east, west, time.UTC}[i])))
	}
	ties[0].ID, ties[1].ID, ties[2].ID = "b000000000000000", "a000000000000000", "a000000000000001"
	slices.SortFunc(ties, func(a, b vault.TokenRecord) int { return strings.Compare(a.ID, b.ID) })
	want = slices.Insert(want, 3, ties...)

	for _, i := range []int{4, 0, 6, 2, 5, 1, 3} {
		addToken(t, c, want[i])
	}
	equal(t, "Tokens", tokens(t, c), normTokens(want...))
}

func testTokenRevoke(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	createVault(t, c, "primary")
	a := newToken(t, "primary", base)
	b := newToken(t, "primary", base.Add(time.Second))
	addToken(t, c, a)
	addToken(t, c, b)

	at := base.Add(time.Hour + 123456*time.Microsecond).In(time.FixedZone("UTC-3", -3*3600))
	if err := c.RevokeToken(ctx, a.ID, at); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	wantA := a
	wantA.Revoked = at
	equal(t, "TokenByHash of the revoked token", tokenByHash(t, c, a.Hash), normTokens(wantA)[0])
	equal(t, "TokenByHash of the other token", tokenByHash(t, c, b.Hash), normTokens(b)[0])

	// Revoking again succeeds and keeps the first time, earlier or later.
	for _, again := range []time.Time{at.Add(time.Hour), at.Add(-time.Minute)} {
		if err := c.RevokeToken(ctx, a.ID, again); err != nil {
			t.Errorf("RevokeToken of a revoked token: %v", err)
		}
	}
	equal(t, "TokenByHash after revoking twice", tokenByHash(t, c, a.Hash), normTokens(wantA)[0])
	equal(t, "Tokens", tokens(t, c), normTokens(wantA, b))
}

func testTokenRevokeUnknown(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	if err := c.RevokeToken(ctx, "0123456789abcdef", base); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("RevokeToken in an empty catalog: got %v, want ErrNotFound", err)
	}
	createVault(t, c, "primary")
	tok := newToken(t, "primary", base)
	addToken(t, c, tok)
	for _, id := range []string{"", tok.ID[:15], tok.ID + "0", strings.ToUpper(tok.ID), tok.Name} {
		if err := c.RevokeToken(ctx, id, base); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("RevokeToken(%q): got %v, want ErrNotFound", id, err)
		}
	}
	equal(t, "Tokens", tokens(t, c), normTokens(tok))
}

// testTokenExpiry checks that expiry times survive exactly (to the
// microsecond, whatever their location), and that a zero one stays zero.
func testTokenExpiry(t *testing.T, c vault.Catalog) {
	createVault(t, c, "primary")
	var want []vault.TokenRecord
	for i, exp := range []time.Time{
		{},
		base.Add(time.Microsecond),
		time.Date(2025, 12, 31, 23, 59, 59, 999999000, time.FixedZone("UTC+14", 14*3600)),
		time.Date(2200, 1, 2, 3, 4, 5, 6000, time.Local),
		time.Date(1999, 1, 1, 0, 0, 0, 1000, time.UTC), // before Created: stored as given
	} {
		tok := newToken(t, "primary", base.Add(time.Duration(i)*time.Second))
		tok.Expires = exp
		addToken(t, c, tok)
		want = append(want, tok)
	}
	for _, w := range want {
		got := tokenByHash(t, c, w.Hash)
		if !got.Expires.Equal(w.Expires) || got.Expires.IsZero() != w.Expires.IsZero() {
			t.Errorf("token %s: Expires = %v, want %v", w.ID, got.Expires, w.Expires)
		}
	}
	equal(t, "Tokens", tokens(t, c), normTokens(want...))
}

func addKeyEvent(t *testing.T, c vault.Catalog, e vault.KeyEvent) {
	t.Helper()
	if err := c.AddKeyEvent(t.Context(), e); err != nil {
		t.Fatalf("AddKeyEvent(%s at %v): %v", e.Event, e.Time, err)
	}
}

// normKeyEvents puts times in UTC and treats nil and empty alike.
func normKeyEvents(es ...vault.KeyEvent) []vault.KeyEvent {
	if len(es) == 0 {
		return nil
	}
	es = slices.Clone(es)
	for i := range es {
		es[i].Time = es[i].Time.UTC()
	}
	return es
}

func keyEvents(t *testing.T, c vault.Catalog, v vault.ID) []vault.KeyEvent {
	t.Helper()
	es, err := c.KeyEvents(t.Context(), v)
	if err != nil {
		t.Fatalf("KeyEvents: %v", err)
	}
	return normKeyEvents(es...)
}

func lastKeyEvent(t *testing.T, c vault.Catalog, v vault.ID) vault.KeyEvent {
	t.Helper()
	e, err := c.LastKeyEvent(t.Context(), v)
	if err != nil {
		t.Fatalf("LastKeyEvent: %v", err)
	}
	return normKeyEvents(e)[0]
}

// testKeyEventRoundTrip checks that every field survives, times exactly
// to the microsecond whatever their location.
func testKeyEventRoundTrip(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	if got := keyEvents(t, c, v.ID); len(got) != 0 {
		t.Errorf("KeyEvents of a new vault: %v", got)
	}
	want := []vault.KeyEvent{
		{
			Vault: v.ID, Time: base, Principal: "0123456789abcdef", Event: vault.KeyEventUseCMK,
			KEK: "pkcs11:token=coffer;object=kek v3", Detail: "switched from platform:default v2", OK: true,
		},
		{
			Vault: v.ID, Time: base.Add(time.Microsecond), Principal: "system", Event: vault.KeyEventKeyUnavailable,
			KEK:    "pkcs11:token=coffer;object=kek v3",
			Detail: "HSM unreachable: dial tcp 10.0.0.7:1234: i/o timeout\nsecond line, \"quoted\", 日本語 🗝",
			OK:     false,
		},
		{
			// Empty principal, KEK and detail are kept as empty.
			Vault: v.ID, Time: time.Date(2025, 12, 31, 23, 59, 59, 999999000, time.FixedZone("UTC+14", 14*3600)),
			Event: vault.KeyEventKeyRecovered, OK: true,
		},
		{
			Vault: v.ID, Time: time.Date(2200, 1, 2, 3, 4, 5, 6000, time.Local), Principal: "zoë",
			Event: vault.KeyEventDEKRotate, KEK: "platform:default v7", OK: true,
		},
		{
			Vault: v.ID, Time: time.Date(2200, 1, 2, 3, 4, 5, 7000, time.Local), Principal: "zoë",
			Event: vault.KeyEventKEKRotate, KEK: "platform:default v8", Detail: "from platform:default v7", OK: false,
		},
		{
			Vault: v.ID, Time: time.Date(2200, 1, 2, 3, 4, 5, 8000, time.UTC), Principal: "zoë",
			Event: vault.KeyEventUsePMK, KEK: "platform:default v8", OK: true,
		},
	}
	for _, e := range want {
		addKeyEvent(t, c, e)
	}
	got := keyEvents(t, c, v.ID)
	equal(t, "KeyEvents", got, normKeyEvents(want...))
	for i := range min(len(got), len(want)) {
		if !got[i].Time.Equal(want[i].Time) {
			t.Errorf("event %d: Time = %v, want %v", i, got[i].Time, want[i].Time)
		}
	}
	equal(t, "LastKeyEvent", lastKeyEvent(t, c, v.ID), normKeyEvents(want[len(want)-1])[0])
}

// testKeyEventOrder checks that events sort by time (the instant, not the
// wall clock), events of one instant in the order they were added, and
// that each vault sees only its own.
func testKeyEventOrder(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "primary")
	other := createVault(t, c, "other")
	east := time.FixedZone("UTC+9", 9*3600)
	west := time.FixedZone("UTC-8", -8*3600)
	ev := func(tm time.Time, detail string) vault.KeyEvent {
		return vault.KeyEvent{Vault: v.ID, Time: tm, Principal: "system", Event: vault.KeyEventKEKRotate, KEK: "platform:default v1", Detail: detail, OK: true}
	}
	var want []vault.KeyEvent
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
	ties := []vault.KeyEvent{
		ev(same.In(east), "tie z"),
		ev(same.In(west), "tie a"),
		ev(same, "tie m"),
	}
	ties[0].Principal, ties[1].Principal, ties[2].Principal = "z", "a", "m"
	ties[1].OK = false
	ties[1].Event = vault.KeyEventKeyUnavailable

	// Add in an order that is neither the time order nor its reverse,
	// the ties among the others and an event of the other vault.
	add := []vault.KeyEvent{want[3], ties[0], want[0], ties[1], want[2], ties[2], want[1]}
	for i, e := range add {
		addKeyEvent(t, c, e)
		o := e
		o.Vault = other.ID
		o.Detail = fmt.Sprintf("other %d", i)
		addKeyEvent(t, c, o)
	}
	want = slices.Insert(want, 3, ties...)
	equal(t, "KeyEvents", keyEvents(t, c, v.ID), normKeyEvents(want...))
	equal(t, "LastKeyEvent", lastKeyEvent(t, c, v.ID), normKeyEvents(want[len(want)-1])[0])

	gotOther := keyEvents(t, c, other.ID)
	if len(gotOther) != len(add) {
		t.Fatalf("KeyEvents(other): %d events, want %d", len(gotOther), len(add))
	}
	for _, e := range gotOther {
		if e.Vault != other.ID || !strings.HasPrefix(e.Detail, "other ") {
			t.Errorf("KeyEvents(other) holds %+v", e)
		}
	}
}

func testKeyEventUnknownVault(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	unknown := newID()
	e := vault.KeyEvent{Vault: unknown, Time: base, Principal: "system", Event: vault.KeyEventDEKRotate, OK: true}
	if err := c.AddKeyEvent(ctx, e); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddKeyEvent in an empty catalog: got %v, want ErrNotFound", err)
	}
	v := createVault(t, c, "primary")
	e.Vault = v.ID
	addKeyEvent(t, c, e)
	e.Vault = unknown
	if err := c.AddKeyEvent(ctx, e); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AddKeyEvent for an unknown vault: got %v, want ErrNotFound", err)
	}
	if got, err := c.KeyEvents(ctx, unknown); err != nil || len(got) != 0 {
		t.Errorf("KeyEvents of an unknown vault: got %+v, %v; want none", got, err)
	}
	if got, err := c.LastKeyEvent(ctx, unknown); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("LastKeyEvent of an unknown vault: got %+v, %v; want ErrNotFound", got, err)
	}
	e.Vault = v.ID
	equal(t, "KeyEvents", keyEvents(t, c, v.ID), normKeyEvents(e))
}

// testLastKeyEvent checks LastKeyEvent as a caller deciding whether a
// success is a recovery uses it.
func testLastKeyEvent(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "primary")
	empty := createVault(t, c, "empty")
	if got, err := c.LastKeyEvent(ctx, v.ID); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("LastKeyEvent of a vault without events: got %+v, %v; want ErrNotFound", got, err)
	}

	fail := vault.KeyEvent{Vault: v.ID, Time: base, Principal: "system", Event: vault.KeyEventKeyUnavailable, KEK: "awskms:alias/coffer", Detail: "AccessDeniedException", OK: false}
	addKeyEvent(t, c, fail)
	equal(t, "LastKeyEvent after a failure", lastKeyEvent(t, c, v.ID), normKeyEvents(fail)[0])

	rec := vault.KeyEvent{Vault: v.ID, Time: base.Add(time.Microsecond), Principal: "system", Event: vault.KeyEventKeyRecovered, KEK: "awskms:alias/coffer", OK: true}
	addKeyEvent(t, c, rec)
	equal(t, "LastKeyEvent after a recovery", lastKeyEvent(t, c, v.ID), normKeyEvents(rec)[0])

	// An event added later with an earlier time is not the last one.
	late := vault.KeyEvent{Vault: v.ID, Time: base.Add(-time.Hour), Principal: "ops", Event: vault.KeyEventKEKRotate, OK: true}
	addKeyEvent(t, c, late)
	equal(t, "LastKeyEvent after adding an earlier event", lastKeyEvent(t, c, v.ID), normKeyEvents(rec)[0])

	// Of events at the same instant, the one added last is.
	tie := vault.KeyEvent{Vault: v.ID, Time: rec.Time.In(time.FixedZone("UTC-3", -3*3600)), Principal: "system", Event: vault.KeyEventKeyUnavailable, Detail: "again", OK: false}
	addKeyEvent(t, c, tie)
	equal(t, "LastKeyEvent after a tie", lastKeyEvent(t, c, v.ID), normKeyEvents(tie)[0])
	equal(t, "KeyEvents", keyEvents(t, c, v.ID), normKeyEvents(late, fail, rec, tie))

	if got, err := c.LastKeyEvent(ctx, empty.ID); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("LastKeyEvent of another vault: got %+v, %v; want ErrNotFound", got, err)
	}
}

func testTokenByID(t *testing.T, c vault.Catalog) {
	createVault(t, c, "v")
	tok := newToken(t, "v", base)
	tok.Expires = base.Add(time.Hour)
	addToken(t, c, tok)
	if err := c.RevokeToken(t.Context(), tok.ID, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err := c.Token(t.Context(), tok.ID)
	if err != nil {
		t.Fatalf("Token(%s): %v", tok.ID, err)
	}
	tok.Revoked = base.Add(time.Minute)
	equal(t, "Token", normTokens(got)[0], normTokens(tok)[0])
	for _, id := range []string{"", strings.ToUpper(tok.ID), tok.ID + " ", "0000000000000000"} {
		if _, err := c.Token(t.Context(), id); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("Token(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

// testPrincipalNames: names are unique without regard to case, a name
// never equals another's ID, and lookups by name and by ID never cross.
func testPrincipalNames(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	add := func(id, name string) error {
		return c.AddPrincipal(ctx, vault.Principal{ID: id, Name: name, Kind: "user", Created: base})
	}
	if err := add("usr_00000000000000a1", "alice"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, name string }{
		{"usr_00000000000000b1", "alice"},                // same name
		{"usr_00000000000000b2", "Alice"},                // case variant
		{"usr_00000000000000b3", "ALICE"},                // case variant
		{"usr_00000000000000b4", "usr_00000000000000a1"}, // another's ID as a name
		{"usr_00000000000000b5", "USR_00000000000000A1"}, // …in another case
		{"alice", "bob"},                                 // another's name as an ID
		{"usr_00000000000000a1", "bob"},                  // the same ID
	} {
		if err := add(tc.id, tc.name); !errors.Is(err, vault.ErrExists) {
			t.Errorf("AddPrincipal(%s, %q) = %v, want ErrExists", tc.id, tc.name, err)
		}
	}
	for _, name := range []string{"alice", "ALICE", "aLiCe"} {
		if p, err := c.Principal(ctx, name); err != nil || p.ID != "usr_00000000000000a1" {
			t.Errorf("Principal(%q) = %v, %v; want alice", name, p, err)
		}
	}
	if _, err := c.Principal(ctx, "usr_00000000000000a1"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Principal(alice's ID) = %v, want ErrNotFound: names and IDs never cross", err)
	}
	if p, err := c.PrincipalByID(ctx, "usr_00000000000000a1"); err != nil || p.Name != "alice" {
		t.Errorf("PrincipalByID = %v, %v; want alice", p, err)
	}
	for _, id := range []string{"alice", "USR_00000000000000A1", "usr_00000000000000a", ""} {
		if _, err := c.PrincipalByID(ctx, id); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("PrincipalByID(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if ps, err := c.Principals(ctx); err != nil || len(ps) != 1 {
		t.Errorf("Principals = %v, %v; want alice alone", ps, err)
	}
	// A password set later records who set it.
	if p, _ := c.PrincipalByID(ctx, "usr_00000000000000a1"); p.Password != "" || p.PasswordBy != "" {
		t.Errorf("new principal: password %q by %q, want none", p.Password, p.PasswordBy)
	}
	if err := c.SetPassword(ctx, "usr_00000000000000a1", "$argon2id$x", "server-machine"); err != nil {
		t.Fatal(err)
	}
	if p, _ := c.Principal(ctx, "alice"); p.Password != "$argon2id$x" || p.PasswordBy != "server-machine" {
		t.Errorf("after SetPassword: password %q by %q", p.Password, p.PasswordBy)
	}
	if err := c.SetPassword(ctx, "alice", "h", "x"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("SetPassword by name: %v, want ErrNotFound", err)
	}
}
