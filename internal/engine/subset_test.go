package engine_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// wholeReads counts, per pack, the reads of a whole pack (what
// --read-data does; a structure check reads headers only).
type wholeReads struct {
	vault.Store
	mu    sync.Mutex
	sizes map[string]int64
	n     map[string]int
}

func (s *wholeReads) Get(c context.Context, h vault.Handle, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	if h.Type == vault.PackObject && off == 0 && n > 0 && n == s.sizes[h.Name] {
		s.n[h.Name]++
	}
	s.mu.Unlock()
	return s.Store.Get(c, h, off, n)
}

func (s *wholeReads) reset(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n = map[string]int{}
	s.sizes = map[string]int64{}
	if err := s.Store.List(ctx, vault.PackObject, func(oi vault.ObjectInfo) error {
		s.sizes[oi.Handle.Name] = oi.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// manyPacks makes a vault of 40 data packs (one blob each) and a
// snapshot using them all.
func manyPacks(t *testing.T) (*env, *engine.Vault, *wholeReads) {
	t.Helper()
	base := newEnv(t, nil)
	st := &wholeReads{Store: base.store}
	base.store = st
	v := create(t, base)
	var chunks [][]byte
	for i := range 40 {
		c := randBytes(uint64(100+i), 3000)
		save(t, v, c)
		flush(t, v) // one pack each
		chunks = append(chunks, c)
	}
	snapshotOf(t, v, "h", chunks...)
	st.reset(t)
	return base, v, st
}

func checkSubset(t *testing.T, v *engine.Vault, sub string) *engine.CheckReport {
	t.Helper()
	s, err := engine.ParseReadSubset(sub)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := v.Check(ctx, engine.CheckOptions{Subset: s})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Subset != s.String() {
		t.Errorf("subset %s: report says %q", sub, rep.Subset)
	}
	return rep
}

// TestCheckSubsetGroupsCoverAll: 1/2 and 2/2 read every pack exactly
// once between them, and 1/5 … 5/5 too.
func TestCheckSubsetGroupsCoverAll(t *testing.T) {
	_, v, st := manyPacks(t)
	for _, m := range []int{2, 5} {
		st.reset(t)
		total := 0
		for n := 1; n <= m; n++ {
			rep := checkSubset(t, v, fmt.Sprintf("%d/%d", n, m))
			if !rep.OK() {
				t.Fatalf("%d/%d: %v", n, m, rep.Errors)
			}
			total += rep.PacksRead
		}
		if len(st.sizes) < 41 {
			t.Fatalf("only %d packs", len(st.sizes))
		}
		for name := range st.sizes {
			if st.n[name] != 1 {
				t.Errorf("1/%d…%d/%d: pack %s read %d times", m, m, m, name[:8], st.n[name])
			}
		}
		if total != len(st.sizes) {
			t.Errorf("reports count %d packs read, the vault has %d", total, len(st.sizes))
		}
	}
}

// TestCheckSubsetPercentAndSize: 10% of 41 packs reads 5 (rounded up);
// a size reads packs adding up to no more than it.
func TestCheckSubsetPercentAndSize(t *testing.T) {
	_, v, st := manyPacks(t)
	rep := checkSubset(t, v, "10%")
	read := 0
	for _, c := range st.n {
		read += c
	}
	want := (len(st.sizes)*10 + 99) / 100
	if rep.PacksRead != want || read != want {
		t.Errorf("10%% of %d packs: report says %d read, the store saw %d, want %d", len(st.sizes), rep.PacksRead, read, want)
	}
	st.reset(t)
	limit := int64(0)
	for _, sz := range st.sizes {
		limit = max(limit, sz)
	}
	limit = limit*3 + 1
	rep = checkSubset(t, v, fmt.Sprint(limit))
	var bytes int64
	for name, c := range st.n {
		bytes += int64(c) * st.sizes[name]
	}
	if rep.PacksRead < 3 || bytes > limit || rep.BytesRead != bytes {
		t.Errorf("size %d: %d packs, %d bytes read (report: %d)", limit, rep.PacksRead, bytes, rep.BytesRead)
	}
}

// TestCheckSubsetFindsDamageInside: a flipped byte inside a blob of a
// pack is found by the group that holds the pack and by no other (a
// structure check cannot see it).
func TestCheckSubsetFindsDamageInside(t *testing.T) {
	e, v, st := manyPacks(t)
	// A data pack: one holding exactly one blob of 3000 bytes and no
	// tree. The 40 data packs all have the same size; the snapshot's tree
	// pack, small too, has another (picking any small pack picked it now
	// and then, and damage in a tree is found by every group's walk).
	bySize := map[int64]int{}
	for _, sz := range st.sizes {
		bySize[sz]++
	}
	var victim string
	for name, sz := range st.sizes {
		if bySize[sz] >= 40 && victim == "" {
			victim = name
		}
	}
	if victim == "" {
		t.Fatalf("no 40 packs of one size among %v", bySize)
	}
	path := filepath.Join(e.dir, "store", "packs", victim[:2], victim)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 1 // inside the first blob (headers are at the end)
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	found := 0
	for n := 1; n <= 4; n++ {
		rep := checkSubset(t, v, fmt.Sprintf("%d/4", n))
		if !rep.OK() {
			found++
			if !strings.Contains(strings.Join(rep.Errors, "\n"), victim) {
				t.Errorf("%d/4: errors do not name pack %s: %v", n, victim[:8], rep.Errors)
			}
		}
	}
	if found != 1 {
		t.Errorf("the damaged pack was found by %d groups of 4, want exactly 1", found)
	}
	if rep := checkSubset(t, v, "100%"); rep.OK() {
		t.Errorf("100%%: damage not found")
	}
}

func TestParseReadSubset(t *testing.T) {
	good := map[string]engine.ReadSubset{
		"10%": {Percent: 10}, "0.5%": {Percent: 0.5}, "100%": {Percent: 100},
		"1/5": {N: 1, M: 5}, "5/5": {N: 5, M: 5},
		"2G": {Bytes: 2 << 30}, "2GiB": {Bytes: 2 << 30}, "2gb": {Bytes: 2 << 30}, "500M": {Bytes: 500 << 20}, "4096": {Bytes: 4096}, "1.5K": {Bytes: 1536},
	}
	for in, want := range good {
		got, err := engine.ParseReadSubset(in)
		if err != nil || got != want {
			t.Errorf("ParseReadSubset(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0%", "101%", "-1%", "NaN%", "0/5", "6/5", "1/0", "a/b", "1/2/3", "0", "-5G", "x", "1e30T", "NaN", "Inf", "1/99999999999", strings.Repeat("1", 65) + "%"} {
		if got, err := engine.ParseReadSubset(in); err == nil {
			t.Errorf("ParseReadSubset(%q) = %+v, want an error", in, got)
		}
	}
}
