package engine

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

// The filter never answers "absent" for a key it holds, and answers
// "present" for under 1% of keys it does not hold at its capacity.
func TestBlobFilter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n = 200_000
	f := newBlobFilter(n)
	keys := make([]uint64, n)
	for i := range keys {
		keys[i] = r.Uint64()
		f.add(keys[i])
	}
	for _, k := range keys {
		if !f.mayHave(k) {
			t.Fatalf("key %x added but reported absent", k)
		}
	}
	// Filled to its capacity (filterMinKeys, at least n).
	for f.n < f.cap {
		f.add(r.Uint64())
	}
	fp := 0
	const probes = 1_000_000
	for range probes {
		if f.mayHave(r.Uint64()) {
			fp++
		}
	}
	if rate := float64(fp) / probes; rate > 0.01 {
		t.Errorf("false-positive rate %.4f at capacity, want below 0.01", rate)
	}
	if f.full() {
		t.Errorf("full at its capacity")
	}
	f.add(1)
	if !f.full() {
		t.Errorf("not full past its capacity")
	}
}

// BenchmarkFilter compares the two structures docs/performance.md
// weighs for answering "not stored": the Bloom filter the engine uses
// (10 bits a key) and a sorted array of 8-byte keys, at 10 million blobs
// (10 TB of 1 MiB chunks). It reports bytes per key and the false-positive
// rate, and times a probe of an absent key.
func BenchmarkFilter(b *testing.B) {
	const n = 10_000_000
	r := rand.New(rand.NewPCG(3, 4))
	keys := make([]uint64, n)
	for i := range keys {
		keys[i] = r.Uint64()
	}
	b.Run("bloom", func(b *testing.B) {
		f := newBlobFilter(n)
		for _, k := range keys {
			f.add(k)
		}
		fp := 0
		for range 1_000_000 {
			if f.mayHave(r.Uint64()) {
				fp++
			}
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			f.mayHave(uint64(i) * 0x9E3779B97F4A7C15)
		}
		b.ReportMetric(float64(f.Bytes())/n, "B/key")
		b.ReportMetric(float64(fp)/1e6, "fp-rate")
	})
	b.Run("sorted", func(b *testing.B) {
		s := slices.Clone(keys)
		slices.Sort(s)
		hits := 0
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, ok := slices.BinarySearch(s, uint64(i)*0x9E3779B97F4A7C15); ok {
				hits++
			}
		}
		b.StopTimer()
		if hits > 1 {
			b.Logf("%d random probes hit", hits)
		}
		b.ReportMetric(8, "B/key")
		b.ReportMetric(float64(n)/(1<<64), "fp-rate")
	})
}

// TestRecordCacheSlots: two blobs sharing a cache slot (the same first 8
// bytes of ID and type) never get each other's record; the one put last
// holds the slot, the other is a miss. A blob moves from the old
// generation to the current one, and a condemned pack's record does not
// replace a live one's.
func TestRecordCacheSlots(t *testing.T) {
	var c recordCache
	var a, b vault.ID
	for i := range a {
		a[i], b[i] = byte(i), byte(i)
	}
	b[31] ^= 0xff // same first 8 bytes: same slot
	if cacheSlot(blobKey{a, vault.DataBlob}) != cacheSlot(blobKey{b, vault.DataBlob}) {
		t.Fatal("test IDs do not share a slot")
	}
	pa, pb := vault.ID{1}, vault.ID{2}
	c.put(vault.BlobRecord{ID: a, Type: vault.DataBlob, Pack: pa, Offset: 10, Length: 5}, false)
	if r, _, ok := c.get(blobKey{b, vault.DataBlob}); ok {
		t.Fatalf("b found a's record: %+v", r)
	}
	if _, _, ok := c.get(blobKey{a, vault.TreeBlob}); ok {
		t.Fatal("a's data record answered for a tree blob")
	}
	c.put(vault.BlobRecord{ID: b, Type: vault.DataBlob, Pack: pb, Offset: 20, Length: 6}, false)
	if r, _, ok := c.get(blobKey{b, vault.DataBlob}); !ok || r.Pack != pb || r.Offset != 20 || r.ID != b {
		t.Fatalf("b: %+v %v", r, ok)
	}
	// a may still be found near the last record found, but only as a.
	if r, _, ok := c.get(blobKey{a, vault.DataBlob}); ok && (r.ID != a || r.Pack != pa || r.Offset != 10) {
		t.Fatalf("a after b took its slot: %+v", r)
	}
	// A condemned copy does not replace b's live record.
	c.put(vault.BlobRecord{ID: b, Type: vault.DataBlob, Pack: pa, Offset: 30, Length: 6}, true)
	if r, condemned, ok := c.get(blobKey{b, vault.DataBlob}); !ok || condemned || r.Pack != pb {
		t.Fatalf("b after a condemned put: %+v condemned=%v ok=%v", r, condemned, ok)
	}
	// Filling a generation moves b to the old one; a get brings it back.
	for i := range cacheGen {
		var id vault.ID
		id[0], id[1], id[2], id[8] = byte(i), byte(i>>8), byte(i>>16), 1
		c.put(vault.BlobRecord{ID: id, Type: vault.DataBlob, Pack: pa}, false)
	}
	if _, ok := c.old.find(blobKey{b, vault.DataBlob}, cacheSlot(blobKey{b, vault.DataBlob})); !ok {
		t.Fatal("b is not in the old generation")
	}
	if r, _, ok := c.get(blobKey{b, vault.DataBlob}); !ok || r.Pack != pb {
		t.Fatalf("b from the old generation: %+v %v", r, ok)
	}
	if _, ok := c.cur.find(blobKey{b, vault.DataBlob}, cacheSlot(blobKey{b, vault.DataBlob})); !ok {
		t.Fatal("b did not move to the current generation")
	}
}

// TestRecordCacheOrder: records asked for in about the order they were
// put, or in any order, or not put at all, give exactly their own record
// or a miss, across generations.
func TestRecordCacheOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var c recordCache
	const n = 3 * cacheGen
	ids := make([]vault.ID, n)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(r.Uint32())
		}
	}
	pack := func(i int) vault.ID { return vault.ID{byte(i / 4000), byte(i / 4000 >> 8)} }
	check := func(i int) {
		t.Helper()
		got, condemned, ok := c.get(blobKey{ids[i], vault.DataBlob})
		if !ok {
			return // evicted
		}
		if condemned || got.ID != ids[i] || got.Pack != pack(i) || got.Offset != uint32(i) || got.Type != vault.DataBlob {
			t.Fatalf("record %d: got %+v condemned=%v", i, got, condemned)
		}
	}
	found := 0
	for start := 0; start < n; start += 4000 {
		end := min(start+4000, n)
		for i := start; i < end; i++ {
			c.put(vault.BlobRecord{ID: ids[i], Type: vault.DataBlob, Pack: pack(i), Offset: uint32(i)}, false)
		}
		// Asked for nearly in order: each within 8 of its place.
		order := make([]int, 0, end-start)
		for i := start; i < end; i++ {
			order = append(order, i)
		}
		for i := range order {
			j := min(len(order)-1, i+r.IntN(8))
			order[i], order[j] = order[j], order[i]
		}
		for _, i := range order {
			check(i)
			if _, _, ok := c.get(blobKey{ids[i], vault.DataBlob}); ok {
				found++
			}
			// Never put: a miss. The same ID as a tree blob: a miss.
			var other vault.ID
			other[0] = byte(i)
			if _, _, ok := c.get(blobKey{other, vault.DataBlob}); ok {
				t.Fatalf("an ID never put was found")
			}
			if _, _, ok := c.get(blobKey{ids[i], vault.TreeBlob}); ok {
				t.Fatalf("record %d answered for a tree blob", i)
			}
		}
	}
	if found < n*9/10 {
		t.Errorf("only %d of %d records asked for just after they were put were found", found, n)
	}
	// In random order, across what is left.
	for range 10000 {
		check(r.IntN(n))
	}
}
