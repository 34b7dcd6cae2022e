package catalogtest

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Conformance of the snapshot chain and sealed pack headers
// (docs/format.md §4.1, §8.1). The catalog does not make or check MACs:
// these entries carry arbitrary ones.

func chainEntry(seq uint64, kind vault.ChainKind, snap vault.ID, at time.Time, by string) vault.ChainEntry {
	e := vault.ChainEntry{Seq: seq, Kind: kind, Snapshot: snap, Time: at, Principal: by}
	e.Digest[0], e.MAC[0], e.MAC[1] = byte(seq), byte(seq), byte(kind)
	return e
}

// appendOne appends es (and rows) atop whatever head the catalog has,
// checking that it is want.
func appendOne(t *testing.T, c vault.Catalog, v vault.ID, wantHead uint64, es []vault.ChainEntry, rows []vault.SnapshotRecord) error {
	t.Helper()
	return c.AppendChain(t.Context(), v, func(head vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
		if head.Seq != wantHead {
			t.Errorf("AppendChain head = %d, want %d", head.Seq, wantHead)
		}
		return es, rows, nil
	})
}

func readChain(t *testing.T, c vault.Catalog, v vault.ID) ([]vault.ChainEntry, []vault.SnapshotRecord) {
	t.Helper()
	es, ss, err := c.SnapshotChain(t.Context(), v)
	if err != nil {
		t.Fatalf("SnapshotChain: %v", err)
	}
	return es, ss
}

func testChainAppend(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "a")
	other := createVault(t, c, "b")
	base := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	s1, s2 := newSnapshot(t, base), newSnapshot(t, base.Add(time.Hour))
	add1 := chainEntry(1, vault.ChainAdd, s1.ID, base, "ann")
	if err := appendOne(t, c, v.ID, 0, []vault.ChainEntry{add1}, []vault.SnapshotRecord{s1}); err != nil {
		t.Fatal(err)
	}
	add2 := chainEntry(2, vault.ChainAdd, s2.ID, base, "")
	forget := chainEntry(3, vault.ChainForget, s1.ID, base.Add(2*time.Hour), "bob")
	if err := appendOne(t, c, v.ID, 1, []vault.ChainEntry{add2, forget}, []vault.SnapshotRecord{s2}); err != nil {
		t.Fatal(err)
	}
	es, ss := readChain(t, c, v.ID)
	equal(t, "chain", es, []vault.ChainEntry{add1, add2, forget})
	s1.Deleted, s1.DeletedBy = forget.Time, "bob"
	equal(t, "snapshots", normSnapshots(ss), normSnapshots([]vault.SnapshotRecord{s1, s2}))
	// The head given to fn is the newest entry, MAC included.
	c.AppendChain(t.Context(), v.ID, func(head vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
		equal(t, "head", head, forget)
		return nil, nil, nil
	})
	undel := chainEntry(4, vault.ChainUndelete, s1.ID, base.Add(3*time.Hour), "bob")
	forget2 := chainEntry(5, vault.ChainForget, s1.ID, base.Add(4*time.Hour), "")
	remove := chainEntry(6, vault.ChainRemove, s1.ID, base.Add(5*time.Hour), "carl")
	if err := appendOne(t, c, v.ID, 3, []vault.ChainEntry{undel, forget2, remove}, nil); err != nil {
		t.Fatal(err)
	}
	es, ss = readChain(t, c, v.ID)
	if len(es) != 6 || len(ss) != 1 || ss[0].ID != s2.ID {
		t.Errorf("after remove: %d entries, snapshots %v", len(es), ss)
	}
	// A recover entry (a chain rebuilt from the store) records its
	// snapshot as an add does.
	s3 := newSnapshot(t, base.Add(6*time.Hour))
	rec := chainEntry(7, vault.ChainRecover, s3.ID, base.Add(7*time.Hour), "dora")
	if err := appendOne(t, c, v.ID, 6, []vault.ChainEntry{rec}, []vault.SnapshotRecord{s3}); err != nil {
		t.Fatalf("append a recover entry: %v", err)
	}
	es, ss = readChain(t, c, v.ID)
	if len(es) != 7 || len(ss) != 2 {
		t.Fatalf("after recover: %d entries, %d snapshots", len(es), len(ss))
	}
	equal(t, "recover entry", es[6], rec)
	equal(t, "recovered snapshot", normSnapshots(ss[1:]), normSnapshots([]vault.SnapshotRecord{s3}))
	// Scoped by vault; unknown vaults.
	if es, ss := readChain(t, c, other.ID); len(es) != 0 || len(ss) != 0 {
		t.Errorf("another vault sees %d entries, %d snapshots", len(es), len(ss))
	}
	if err := appendOne(t, c, newID(), 0, nil, nil); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("AppendChain on an unknown vault: %v, want ErrNotFound", err)
	}
	// Deleting the vault deletes its chain.
	if err := c.DeleteVault(t.Context(), v.ID, base); err != nil {
		t.Fatal(err)
	}
	if es, _ := readChain(t, c, v.ID); len(es) != 0 {
		t.Errorf("a deleted vault keeps %d chain entries", len(es))
	}
}

// Every refused append leaves nothing: not the entries, not the changes.
func testChainStateRules(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "a")
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s1 := newSnapshot(t, base)
	if err := appendOne(t, c, v.ID, 0, []vault.ChainEntry{chainEntry(1, vault.ChainAdd, s1.ID, base, "")}, []vault.SnapshotRecord{s1}); err != nil {
		t.Fatal(err)
	}
	s2 := newSnapshot(t, base)
	fnErr := errors.New("store failed")
	cases := []struct {
		name string
		es   []vault.ChainEntry
		rows []vault.SnapshotRecord
		fn   error
		want error
	}{
		{"gap", []vault.ChainEntry{chainEntry(3, vault.ChainAdd, s2.ID, base, "")}, []vault.SnapshotRecord{s2}, nil, vault.ErrConflict},
		{"renumbered", []vault.ChainEntry{chainEntry(1, vault.ChainAdd, s2.ID, base, "")}, []vault.SnapshotRecord{s2}, nil, vault.ErrConflict},
		{"add twice", []vault.ChainEntry{chainEntry(2, vault.ChainAdd, s1.ID, base, "")}, []vault.SnapshotRecord{s1}, nil, vault.ErrExists},
		{"add without its record", []vault.ChainEntry{chainEntry(2, vault.ChainAdd, s2.ID, base, "")}, nil, nil, nil},
		{"recover without its record", []vault.ChainEntry{chainEntry(2, vault.ChainRecover, s2.ID, base, "")}, nil, nil, nil},
		{"recover one recorded already", []vault.ChainEntry{chainEntry(2, vault.ChainRecover, s1.ID, base, "")}, []vault.SnapshotRecord{s1}, nil, vault.ErrExists},
		{"undelete a live one", []vault.ChainEntry{chainEntry(2, vault.ChainUndelete, s1.ID, base, "")}, nil, nil, vault.ErrConflict},
		{"remove a live one", []vault.ChainEntry{chainEntry(2, vault.ChainRemove, s1.ID, base, "")}, nil, nil, vault.ErrConflict},
		{"forget twice in one append", []vault.ChainEntry{chainEntry(2, vault.ChainForget, s1.ID, base, ""), chainEntry(3, vault.ChainForget, s1.ID, base, "")}, nil, nil, vault.ErrConflict},
		{"forget an unknown one", []vault.ChainEntry{chainEntry(2, vault.ChainForget, s2.ID, base, "")}, nil, nil, vault.ErrNotFound},
		{"import-forgotten a live one", []vault.ChainEntry{chainEntry(2, vault.ChainImportForgotten, s1.ID, base, "")}, nil, nil, vault.ErrConflict},
		{"fn fails after an add", []vault.ChainEntry{chainEntry(2, vault.ChainAdd, s2.ID, base, "")}, []vault.SnapshotRecord{s2}, fnErr, fnErr},
	}
	for _, tc := range cases {
		err := c.AppendChain(t.Context(), v.ID, func(vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
			return tc.es, tc.rows, tc.fn
		})
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		es, ss := readChain(t, c, v.ID)
		if len(es) != 1 || len(ss) != 1 || !ss[0].Deleted.IsZero() {
			t.Fatalf("%s left %d entries, %d snapshots (%+v)", tc.name, len(es), len(ss), ss)
		}
	}
}

// SnapshotChain never returns records changed by an entry it does not
// return: appends running while it reads.
func testChainConsistentRead(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "a")
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		var err error
		for seq := uint64(1); err == nil; seq++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			s := newSnapshot(t, base)
			err = c.AppendChain(t.Context(), v.ID, func(head vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
				return []vault.ChainEntry{chainEntry(head.Seq+1, vault.ChainAdd, s.ID, base, "")}, []vault.SnapshotRecord{s}, nil
			})
		}
		done <- err
	}()
	for range 30 {
		es, ss := readChain(t, c, v.ID)
		if len(es) != len(ss) {
			t.Errorf("SnapshotChain read %d entries but %d snapshots", len(es), len(ss))
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Concurrent appenders get consecutive numbers; none is lost.
func testChainConcurrent(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "a")
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	const n = 16
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := newSnapshot(t, base)
			err := c.AppendChain(t.Context(), v.ID, func(head vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
				return []vault.ChainEntry{chainEntry(head.Seq+1, vault.ChainAdd, s.ID, base, "")}, []vault.SnapshotRecord{s}, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	es, ss := readChain(t, c, v.ID)
	if len(es) != n || len(ss) != n {
		t.Fatalf("%d entries, %d snapshots; want %d", len(es), len(ss), n)
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) {
			t.Errorf("entry %d has seq %d", i, e.Seq)
		}
	}
}

func testPackHeader(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "a")
	p, blobs := newPack(t, 3)
	addPack(t, c, v.ID, p, blobs) // a format 1 pack: rows, no header
	q, _ := newPack(t, 2)
	q.Header = []byte("sealed header of q")
	addPack(t, c, v.ID, q, nil)
	got := allPacks(t, c, v.ID)
	i := slices.IndexFunc(got, func(r vault.PackRecord) bool { return r.ID == q.ID })
	if i < 0 || !bytes.Equal(got[i].Header, q.Header) {
		t.Fatalf("pack with a header reads back as %+v", got)
	}
	if j := slices.IndexFunc(got, func(r vault.PackRecord) bool { return r.ID == p.ID }); j < 0 || got[j].Header != nil {
		t.Errorf("a format 1 pack reads back with a header: %+v", got)
	}
	if err := c.SetPackHeader(t.Context(), v.ID, p.ID, []byte("sealed header of p")); err != nil {
		t.Fatal(err)
	}
	if bs := allBlobs(t, c, v.ID); len(bs) != 0 {
		t.Errorf("SetPackHeader left %d blob rows", len(bs))
	}
	got = allPacks(t, c, v.ID)
	if j := slices.IndexFunc(got, func(r vault.PackRecord) bool { return r.ID == p.ID }); j < 0 || string(got[j].Header) != "sealed header of p" {
		t.Errorf("after SetPackHeader: %+v", got)
	}
	if err := c.SetPackHeader(t.Context(), v.ID, newID(), []byte("x")); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("SetPackHeader of an unknown pack: %v, want ErrNotFound", err)
	}
	// A nil header drops the rows of a pack missing from the store; the
	// pack keeps no header.
	m, mblobs := newPack(t, 2)
	addPack(t, c, v.ID, m, mblobs)
	if err := c.SetPackHeader(t.Context(), v.ID, m.ID, nil); err != nil {
		t.Fatal(err)
	}
	if bs := allBlobs(t, c, v.ID); len(bs) != 0 {
		t.Errorf("SetPackHeader(nil) left %d blob rows", len(bs))
	}
	got = allPacks(t, c, v.ID)
	if j := slices.IndexFunc(got, func(r vault.PackRecord) bool { return r.ID == m.ID }); j < 0 || got[j].Header != nil {
		t.Errorf("after SetPackHeader(nil): %+v", got)
	}
}

// testChainSettings: a settings entry (docs/format.md §8.4) writes the
// settings it carries in its own transaction; one without settings, or
// whose settings the catalog cannot store, is refused and changes
// nothing.
func testChainSettings(t *testing.T, c vault.Catalog) {
	v := createVault(t, c, "a")
	base := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	s := vault.VaultSettings{SoftDelete: vault.SoftDeleteAlwaysOn, SoftDeleteDays: 30, Immutability: vault.ImmutabilityLocked,
		MinRetention: time.Hour, SingleUser: true, Policy: `{"last":3}`, DedupScope: vault.DedupScopeSource, Updated: base}
	e := chainEntry(1, vault.ChainSettings, vault.ID{}, base, "ann")
	e.Settings = &s
	if err := appendOne(t, c, v.ID, 0, []vault.ChainEntry{e}, nil); err != nil {
		t.Fatal(err)
	}
	equal(t, "settings", normSettings(settings(t, c, v.ID)), normSettings(s))
	es, _ := readChain(t, c, v.ID)
	e.Settings = nil // not stored with the entry
	equal(t, "chain", es, []vault.ChainEntry{e})

	bad := s
	bad.SoftDeleteDays = 1
	for name, entry := range map[string]vault.ChainEntry{
		"no settings": chainEntry(2, vault.ChainSettings, vault.ID{}, base, "mallory"),
		"unstorable settings": func() vault.ChainEntry {
			x := chainEntry(2, vault.ChainSettings, vault.ID{}, base, "mallory")
			x.Settings = &bad
			return x
		}(),
	} {
		if err := appendOne(t, c, v.ID, 1, []vault.ChainEntry{entry}, nil); err == nil {
			t.Errorf("a settings entry with %s was appended", name)
		}
	}
	es, _ = readChain(t, c, v.ID)
	equal(t, "chain after the refused entries", es, []vault.ChainEntry{e})
	equal(t, "settings after the refused entries", normSettings(settings(t, c, v.ID)), normSettings(s))
}
