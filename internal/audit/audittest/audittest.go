// Package audittest provides the conformance suite of audit.Store, which
// every implementation runs, and an in-memory Store that passes it.
package audittest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/audit"
)

// TestStore runs the conformance suite; open returns a new, empty store.
func TestStore(t *testing.T, open func(t testing.TB) audit.Store) {
	t.Run("Empty", func(t *testing.T) { testEmpty(t, open(t)) })
	t.Run("AppendRead", func(t *testing.T) { testAppendRead(t, open(t)) })
	t.Run("Conflict", func(t *testing.T) { testConflict(t, open(t)) })
	t.Run("BadHashCount", func(t *testing.T) { testBadHashCount(t, open(t)) })
	t.Run("ConcurrentAppend", func(t *testing.T) { testConcurrentAppend(t, open(t)) })
	t.Run("Checkpoints", func(t *testing.T) { testCheckpoints(t, open(t)) })
}

// Records returns n distinct records for indexes start….
func Records(start int64, n int) [][]byte {
	rs := make([][]byte, n)
	for i := range rs {
		rs[i] = fmt.Appendf(nil, `{"record":%d}`, start+int64(i))
	}
	return rs
}

// Append appends records to s at its current size with correctly
// computed hashes, failing t on error, and returns the first index.
func Append(t testing.TB, s audit.Store, records [][]byte) int64 {
	t.Helper()
	ctx := context.Background()
	start, err := s.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := Hashes(ctx, s, start, records)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, start, records, hs); err != nil {
		t.Fatal(err)
	}
	return start
}

// Hashes returns the hashes to store with records appended at start.
func Hashes(ctx context.Context, s audit.Store, start int64, records [][]byte) ([]tlog.Hash, error) {
	stored := tlog.StoredHashCount(start)
	var out []tlog.Hash
	r := tlog.HashReaderFunc(func(xs []int64) ([]tlog.Hash, error) {
		hs := make([]tlog.Hash, len(xs))
		for i, x := range xs {
			if x >= stored {
				hs[i] = out[x-stored]
				continue
			}
			h, err := s.AuditHashes(ctx, []int64{x})
			if err != nil {
				return nil, err
			}
			hs[i] = h[0]
		}
		return hs, nil
	})
	for i, rec := range records {
		hs, err := tlog.StoredHashes(start+int64(i), rec, r)
		if err != nil {
			return nil, err
		}
		out = append(out, hs...)
	}
	return out, nil
}

func testEmpty(t *testing.T, s audit.Store) {
	ctx := t.Context()
	if n, err := s.AuditSize(ctx); err != nil || n != 0 {
		t.Errorf("AuditSize = %d, %v; want 0", n, err)
	}
	if rs, err := s.AuditRecords(ctx, 0, 10); err != nil || len(rs) != 0 {
		t.Errorf("AuditRecords = %v, %v; want none", rs, err)
	}
	if hs, err := s.AuditHashRange(ctx, 0, 10); err != nil || len(hs) != 0 {
		t.Errorf("AuditHashRange = %v, %v; want none", hs, err)
	}
	if _, err := s.AuditHashes(ctx, []int64{0}); !errors.Is(err, audit.ErrNotFound) {
		t.Errorf("AuditHashes of a missing hash: %v, want ErrNotFound", err)
	}
	if hs, err := s.AuditHashes(ctx, nil); err != nil || len(hs) != 0 {
		t.Errorf("AuditHashes(nil) = %v, %v", hs, err)
	}
	if _, err := s.LatestAuditCheckpoint(ctx); !errors.Is(err, audit.ErrNotFound) {
		t.Errorf("LatestAuditCheckpoint: %v, want ErrNotFound", err)
	}
	if cs, err := s.AuditCheckpoints(ctx, 0, 10); err != nil || len(cs) != 0 {
		t.Errorf("AuditCheckpoints = %v, %v; want none", cs, err)
	}
	// Appending nothing changes nothing.
	if err := s.AppendAudit(ctx, 0, nil, nil); err != nil {
		t.Errorf("AppendAudit of nothing: %v", err)
	}
}

func testAppendRead(t *testing.T, s audit.Store) {
	ctx := t.Context()
	var all [][]byte
	for _, n := range []int{1, 2, 5, 1, 13, 40} {
		rs := Records(int64(len(all)), n)
		if start := Append(t, s, rs); start != int64(len(all)) {
			t.Fatalf("appended at %d, want %d", start, len(all))
		}
		all = append(all, rs...)
	}
	size := int64(len(all))
	if n, err := s.AuditSize(ctx); err != nil || n != size {
		t.Fatalf("AuditSize = %d, %v; want %d", n, err, size)
	}
	// Records, in pages.
	for _, page := range []int{1, 7, 100} {
		var got []audit.Record
		for from := int64(0); ; {
			rs, err := s.AuditRecords(ctx, from, page)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) > page {
				t.Fatalf("AuditRecords(%d, %d) returned %d", from, page, len(rs))
			}
			got = append(got, rs...)
			if len(rs) < page {
				break
			}
			from = rs[len(rs)-1].Index + 1
		}
		if len(got) != len(all) {
			t.Fatalf("page %d: %d records, want %d", page, len(got), len(all))
		}
		for i, r := range got {
			if r.Index != int64(i) || !bytes.Equal(r.Data, all[i]) {
				t.Fatalf("page %d: record %d = %d %q, want %q", page, i, r.Index, r.Data, all[i])
			}
		}
	}
	// Returned bytes are the caller's.
	rs, _ := s.AuditRecords(ctx, 0, 1)
	rs[0].Data[0] = 'X'
	if rs, _ := s.AuditRecords(ctx, 0, 1); rs[0].Data[0] != '{' {
		t.Error("changing a returned record changed the store")
	}

	// Hashes: as tlog computes them, readable by index and by range.
	want, err := Hashes(ctx, NewMemStore(), 0, all)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(want)) != tlog.StoredHashCount(size) {
		t.Fatalf("test: %d hashes", len(want))
	}
	idx := []int64{5, 0, int64(len(want) - 1), 3}
	hs, err := s.AuditHashes(ctx, idx)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range idx {
		if hs[i] != want[x] {
			t.Errorf("AuditHashes: index %d differs", x)
		}
	}
	if _, err := s.AuditHashes(ctx, []int64{1, int64(len(want))}); !errors.Is(err, audit.ErrNotFound) {
		t.Errorf("AuditHashes past the end: %v, want ErrNotFound", err)
	}
	rng, err := s.AuditHashRange(ctx, 2, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(rng) != len(want)-2 {
		t.Fatalf("AuditHashRange(2) returned %d, want %d", len(rng), len(want)-2)
	}
	for i, h := range rng {
		if h.Index != int64(i+2) || h.Hash != want[i+2] {
			t.Fatalf("AuditHashRange: %d: %d %v", i, h.Index, h.Hash)
		}
	}
	if rng, err := s.AuditHashRange(ctx, 0, 3); err != nil || len(rng) != 3 {
		t.Errorf("AuditHashRange(0, 3) = %d hashes, %v", len(rng), err)
	}
	// The tree is the one tlog computes.
	th, err := tlog.TreeHash(size, tlog.HashReaderFunc(func(xs []int64) ([]tlog.Hash, error) { return s.AuditHashes(ctx, xs) }))
	if err != nil {
		t.Fatal(err)
	}
	leaves := make([]tlog.Hash, len(all))
	for i, r := range all {
		leaves[i] = tlog.RecordHash(r)
	}
	if th != rfc6962(leaves) {
		t.Error("tree hash from the stored hashes is not the RFC 6962 hash of the records")
	}
}

// rfc6962 computes a Merkle tree hash directly from RFC 6962 §2.1.
func rfc6962(leaves []tlog.Hash) tlog.Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return tlog.NodeHash(rfc6962(leaves[:k]), rfc6962(leaves[k:]))
}

func testConflict(t *testing.T, s audit.Store) {
	ctx := t.Context()
	Append(t, s, Records(0, 3))
	rs := Records(3, 2)
	hs, err := Hashes(ctx, s, 3, rs)
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []int64{0, 2, 4, 100} {
		hs := hs
		if want := tlog.StoredHashCount(start+2) - tlog.StoredHashCount(start); int64(len(hs)) != want {
			hs = make([]tlog.Hash, want) // the right count, so only the start is wrong
		}
		if err := s.AppendAudit(ctx, start, rs, hs); !errors.Is(err, audit.ErrConflict) {
			t.Errorf("AppendAudit at %d of a log of 3: %v, want ErrConflict", start, err)
		}
	}
	if n, _ := s.AuditSize(ctx); n != 3 {
		t.Errorf("size after conflicts: %d, want 3", n)
	}
	if err := s.AppendAudit(ctx, 3, rs, hs); err != nil {
		t.Errorf("AppendAudit at 3: %v", err)
	}
}

func testBadHashCount(t *testing.T, s audit.Store) {
	ctx := t.Context()
	Append(t, s, Records(0, 1))
	rs := Records(1, 1) // index 1 completes a subtree: two hashes
	hs, err := Hashes(ctx, s, 1, rs)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 {
		t.Fatalf("test: %d hashes", len(hs))
	}
	if err := s.AppendAudit(ctx, 1, rs, hs[:1]); err == nil {
		t.Error("AppendAudit with a hash missing succeeded")
	}
	if err := s.AppendAudit(ctx, 1, rs, append(hs, hs[0])); err == nil {
		t.Error("AppendAudit with a hash too many succeeded")
	}
	if n, _ := s.AuditSize(ctx); n != 1 {
		t.Errorf("size after failed appends: %d, want 1", n)
	}
	if rng, _ := s.AuditHashRange(ctx, 0, 10); len(rng) != 1 {
		t.Errorf("hashes after failed appends: %d, want 1", len(rng))
	}
}

// testConcurrentAppend has writers race to append at the same size:
// exactly one wins each round, and no index is written twice.
func testConcurrentAppend(t *testing.T, s audit.Store) {
	ctx := t.Context()
	const writers, rounds = 4, 10
	for round := range rounds {
		start, err := s.AuditSize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins int
		)
		for w := range writers {
			wg.Go(func() {
				rs := [][]byte{fmt.Appendf(nil, `{"round":%d,"writer":%d}`, round, w)}
				hs, err := Hashes(ctx, s, start, rs)
				if err != nil {
					t.Error(err)
					return
				}
				err = s.AppendAudit(ctx, start, rs, hs)
				switch {
				case err == nil:
					mu.Lock()
					wins++
					mu.Unlock()
				case !errors.Is(err, audit.ErrConflict):
					t.Errorf("round %d writer %d: %v", round, w, err)
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("round %d: %d writers won, want 1", round, wins)
		}
	}
	if n, _ := s.AuditSize(ctx); n != rounds {
		t.Errorf("size %d, want %d", n, rounds)
	}
	if rng, _ := s.AuditHashRange(ctx, 0, 1000); int64(len(rng)) != tlog.StoredHashCount(rounds) {
		t.Errorf("%d hashes, want %d", len(rng), tlog.StoredHashCount(rounds))
	}
}

func testCheckpoints(t *testing.T, s audit.Store) {
	ctx := t.Context()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	cps := []audit.Checkpoint{
		{Size: 5, Note: "five\n", Time: at.Add(time.Minute)},
		{Size: 1, Note: "one\n", Time: at},
		{Size: 12, Note: "twelve\n", Time: at.Add(2 * time.Minute)},
	}
	for _, c := range cps {
		if err := s.AddAuditCheckpoint(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	dup := cps[0]
	dup.Note = "other\n"
	if err := s.AddAuditCheckpoint(ctx, dup); !errors.Is(err, audit.ErrExists) {
		t.Errorf("AddAuditCheckpoint of a stored size: %v, want ErrExists", err)
	}
	if err := s.AddAuditCheckpoint(ctx, audit.Checkpoint{Size: 0, Note: "x\n", Time: at}); err == nil {
		t.Error("AddAuditCheckpoint of size 0 succeeded")
	}
	if c, err := s.LatestAuditCheckpoint(ctx); err != nil || !sameCheckpoint(c, cps[2]) {
		t.Errorf("LatestAuditCheckpoint = %+v, %v; want %+v", c, err, cps[2])
	}
	want := []audit.Checkpoint{cps[1], cps[0], cps[2]}
	got, err := s.AuditCheckpoints(ctx, 0, 10)
	if err != nil || !slices.EqualFunc(got, want, sameCheckpoint) {
		t.Errorf("AuditCheckpoints = %+v, %v; want %+v", got, err, want)
	}
	if got, err := s.AuditCheckpoints(ctx, 2, 1); err != nil || len(got) != 1 || !sameCheckpoint(got[0], cps[0]) {
		t.Errorf("AuditCheckpoints(2, 1) = %+v, %v; want the one of 5", got, err)
	}
	if got, err := s.AuditCheckpoints(ctx, 13, 10); err != nil || len(got) != 0 {
		t.Errorf("AuditCheckpoints(13) = %+v, %v; want none", got, err)
	}
}

func sameCheckpoint(a, b audit.Checkpoint) bool {
	return a.Size == b.Size && a.Note == b.Note && a.Time.Equal(b.Time)
}

// MemStore is an audit.Store in memory, for tests.
type MemStore struct {
	mu      sync.Mutex
	records [][]byte
	hashes  []tlog.Hash
	cps     map[int64]audit.Checkpoint
}

var _ audit.Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{cps: map[int64]audit.Checkpoint{}} }

// AuditSize implements audit.Store.
func (m *MemStore) AuditSize(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.records)), nil
}

// AppendAudit implements audit.Store.
func (m *MemStore) AppendAudit(_ context.Context, start int64, records [][]byte, hashes []tlog.Hash) error {
	end := start + int64(len(records))
	if want := tlog.StoredHashCount(end) - tlog.StoredHashCount(start); start < 0 || int64(len(hashes)) != want {
		return fmt.Errorf("append audit entries at %d: %d hashes, want %d", start, len(hashes), want)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(records) == 0 {
		return nil
	}
	if int64(len(m.records)) != start {
		return fmt.Errorf("%w: %d entries, not %d", audit.ErrConflict, len(m.records), start)
	}
	for _, r := range records {
		m.records = append(m.records, bytes.Clone(r))
	}
	m.hashes = append(m.hashes, hashes...)
	return nil
}

// AuditRecords implements audit.Store.
func (m *MemStore) AuditRecords(_ context.Context, from int64, n int) ([]audit.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var rs []audit.Record
	for i := max(from, 0); i < int64(len(m.records)) && len(rs) < n; i++ {
		rs = append(rs, audit.Record{Index: i, Data: bytes.Clone(m.records[i])})
	}
	return rs, nil
}

// AuditHashes implements audit.Store.
func (m *MemStore) AuditHashes(_ context.Context, indexes []int64) ([]tlog.Hash, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	hs := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m.hashes)) {
			return nil, fmt.Errorf("audit hash %d: %w", x, audit.ErrNotFound)
		}
		hs[i] = m.hashes[x]
	}
	return hs, nil
}

// AuditHashRange implements audit.Store.
func (m *MemStore) AuditHashRange(_ context.Context, from int64, n int) ([]audit.StoredHash, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var hs []audit.StoredHash
	for i := max(from, 0); i < int64(len(m.hashes)) && len(hs) < n; i++ {
		hs = append(hs, audit.StoredHash{Index: i, Hash: m.hashes[i]})
	}
	return hs, nil
}

// AddAuditCheckpoint implements audit.Store.
func (m *MemStore) AddAuditCheckpoint(_ context.Context, c audit.Checkpoint) error {
	if c.Size <= 0 {
		return fmt.Errorf("audit checkpoint of %d entries: size must be positive", c.Size)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.cps[c.Size]; ok {
		return fmt.Errorf("audit checkpoint of %d entries: %w", c.Size, audit.ErrExists)
	}
	m.cps[c.Size] = c
	return nil
}

// AuditCheckpoints implements audit.Store.
func (m *MemStore) AuditCheckpoints(_ context.Context, from int64, n int) ([]audit.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var cs []audit.Checkpoint
	for _, c := range m.cps {
		if c.Size >= from {
			cs = append(cs, c)
		}
	}
	slices.SortFunc(cs, func(a, b audit.Checkpoint) int { return int(min(max(a.Size-b.Size, -1), 1)) })
	if len(cs) > n {
		cs = cs[:n]
	}
	return cs, nil
}

// LatestAuditCheckpoint implements audit.Store.
func (m *MemStore) LatestAuditCheckpoint(context.Context) (audit.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var latest audit.Checkpoint
	for _, c := range m.cps {
		if c.Size > latest.Size {
			latest = c
		}
	}
	if latest.Size == 0 {
		return audit.Checkpoint{}, fmt.Errorf("latest audit checkpoint: %w", audit.ErrNotFound)
	}
	return latest, nil
}
