package engine

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file holds the blob index as the engine queries it, in memory
// bounded by the work rather than by the vault (docs/performance.md):
//
//   - the catalog keeps, for every pack, a lookup key per blob
//     (docs/format.md §4.2), by which PacksByKey finds the packs that may
//     hold a blob;
//   - a filter built from those keys answers "not stored" without a
//     query (about 1.2 bytes per blob);
//   - a bounded cache keeps the records of the packs looked at last.
//
// SECURITY: the catalog is untrusted. What PacksByKey returns is a hint:
// a blob is found only in the sealed header copy of a pack it names,
// opened under the pack's key exactly as loadIndex opens it, so a row
// pointing a blob at another pack, offset or type finds nothing there.
// A missing or altered row can only make a blob look absent: a backup
// then stores it again (a duplicate, never a loss), a reader fails
// loudly, and prune and check, which read every pack's sealed header
// into a scratch index on disk and never the keys, are not misled
// (RepairIndex writes the keys again).
//
// The whole index is loaded into v.index only by what needs all of it
// (repair, the server's index route): v.full is then set and the map
// answers everything, as before.

// lookupKey is the catalog's lookup key of blob t/id: the first 8 bytes
// of AES-256 under the vault's index key of the type and the first 15
// bytes of the ID. It tells nobody without the key which blob it is (a
// snapshot record shows its root tree's ID), and two blobs whose keys
// collide are told apart by the sealed headers.
func (v *Vault) lookupKey(t vault.BlobType, id vault.ID) uint64 {
	var b [16]byte
	b[0] = byte(t)
	copy(b[1:], id[:15])
	v.idxBlock.Encrypt(b[:], b[:])
	return binary.LittleEndian.Uint64(b[:8])
}

// newIndexBlock derives the vault's index key from its root secret.
func newIndexBlock(root seal.Key, vid vault.ID) cipher.Block {
	k := seal.Derive(root, vid[:], seal.LabelIndexKey)
	defer k.Wipe()
	b, err := aes.NewCipher(k[:])
	if err != nil {
		panic("engine: aes: " + err.Error()) // only for a key size other than 16, 24 or 32
	}
	return b
}

// blobFilter is a Bloom filter of lookup keys: 10 bits and 7 probes per
// key for a false-positive rate below 1%. It never answers "absent" for
// a key that was added. Lookup keys are uniformly random (AES output),
// so the probes are derived from the key itself.
type blobFilter struct {
	bits []uint64
	m    uint64 // number of bits
	n    int    // keys added
	cap  int    // keys it was sized for
}

const (
	filterBitsPerKey = 10
	filterProbes     = 7
	// filterMinKeys is the smallest capacity a filter gets (1.25 MiB):
	// room for a first backup of a million blobs without a rebuild.
	filterMinKeys = 1 << 20
)

func newBlobFilter(keys int) *blobFilter {
	keys = max(keys, filterMinKeys)
	m := uint64(keys) * filterBitsPerKey
	m = (m + 63) &^ 63
	return &blobFilter{bits: make([]uint64, m/64), m: m, cap: keys}
}

func (f *blobFilter) probes(key uint64, fn func(bit uint64) bool) bool {
	h1, h2 := key, (key*0x9E3779B97F4A7C15)|1
	for i := range uint64(filterProbes) {
		hi, _ := bits.Mul64(h1+i*h2, f.m) // h mod m without a division
		if !fn(hi) {
			return false
		}
	}
	return true
}

func (f *blobFilter) add(key uint64) {
	f.probes(key, func(b uint64) bool { f.bits[b/64] |= 1 << (b % 64); return true })
	f.n++
}

func (f *blobFilter) mayHave(key uint64) bool {
	return f.probes(key, func(b uint64) bool { return f.bits[b/64]&(1<<(b%64)) != 0 })
}

func (f *blobFilter) full() bool { return f.n > f.cap }

// Bytes is the filter's size in memory.
func (f *blobFilter) Bytes() int { return 8 * len(f.bits) }

// cachedRec is a blob's place in a cached pack.
type cachedRec struct {
	slot                   uint64 // cacheSlot(key)
	key                    blobKey
	pack                   uint32 // index into recGen.packs
	offset, length, rawLen uint32
}

// cacheSlot is where the cache's map keeps blob k: the first 8 bytes of
// its ID (a keyed hash) with its type. The record holds the whole key: a
// blob whose slot another holds is a miss, never the other's record.
func cacheSlot(k blobKey) uint64 {
	return binary.LittleEndian.Uint64(k.id[:8]) ^ uint64(k.t)
}

type cachedPack struct {
	id        vault.ID
	condemned bool
}

// recGen is one generation of the record cache: its records in the order
// they were put (a pack's in the order of its header, which is the order
// its blobs were stored) and a map from slot to the newest of them.
type recGen struct {
	order  []cachedRec
	slots  map[uint64]uint32 // cacheSlot → index into order
	packs  []cachedPack
	packOf map[vault.ID]uint32
}

func newRecGen() *recGen {
	// Sized once: a generation fills to cacheGen (a pack's records at a
	// time), and growing them there allocated three times their size.
	return &recGen{order: make([]cachedRec, 0, cacheGen), slots: make(map[uint64]uint32, cacheGen), packOf: map[vault.ID]uint32{}}
}

func (g *recGen) find(k blobKey, slot uint64) (int, bool) {
	i, ok := g.slots[slot]
	if !ok || g.order[i].key != k {
		return 0, false
	}
	return int(i), true
}

func (g *recGen) record(i int) (vault.BlobRecord, bool) {
	r := &g.order[i]
	p := g.packs[r.pack]
	return vault.BlobRecord{ID: r.key.id, Type: r.key.t, Pack: p.id, Offset: r.offset, Length: r.length, RawLen: r.rawLen}, p.condemned
}

// recordCache keeps the records of recently looked-up packs in two
// generations of at most cacheGen records each: when the current one is
// full it becomes the old one and the old one is dropped, and a record
// found in the old one moves to the current one. So it holds at most
// 2×cacheGen records (about 90 bytes each with the map) and keeps what is
// used.
//
// A backup asks for a pack's blobs in about the order they were stored
// (a re-run walks the files in the order the first run read them, give
// or take its readers overtaking each other), so a lookup first looks at
// the records put just after the last one found: a few contiguous
// records, where the map costs a cache miss of the processor on every
// lookup (most of what a re-run of a million unchanged files spent
// deciding that their chunks are stored).
type recordCache struct {
	cur, old *recGen
	next     int // index into cur.order after the last record found
}

// cacheGen is the number of records in one cache generation: 2 × 32,768
// records are about 6 MiB (docs/performance.md).
const cacheGen = 1 << 15

// cacheAhead and cacheBehind bound the records looked at around next.
const (
	cacheBehind = 4
	cacheAhead  = 12
)

func (c *recordCache) get(k blobKey) (vault.BlobRecord, bool, bool) {
	slot := cacheSlot(k)
	if g := c.cur; g != nil {
		lo, hi := max(0, c.next-cacheBehind), min(len(g.order), c.next+cacheAhead)
		for i := lo; i < hi; i++ {
			if g.order[i].slot == slot && g.order[i].key == k {
				c.next = i + 1
				r, condemned := g.record(i)
				return r, condemned, true
			}
		}
		if i, ok := g.find(k, slot); ok {
			c.next = i + 1
			r, condemned := g.record(i)
			return r, condemned, true
		}
	}
	if g := c.old; g != nil {
		if i, ok := g.find(k, slot); ok {
			r, condemned := g.record(i)
			c.put(r, condemned)
			return r, condemned, true
		}
	}
	return vault.BlobRecord{}, false, false
}

// put caches r; a record of a live pack is not replaced by one of a
// condemned pack.
func (c *recordCache) put(r vault.BlobRecord, condemned bool) {
	if c.cur == nil {
		c.cur = newRecGen()
	}
	k := blobKey{r.ID, r.Type}
	slot := cacheSlot(k)
	if condemned {
		if i, ok := c.cur.find(k, slot); ok && !c.cur.packs[c.cur.order[i].pack].condemned {
			return
		}
	}
	if len(c.cur.order) >= cacheGen {
		c.old, c.cur = c.cur, newRecGen()
		c.next = 0
	}
	g := c.cur
	pi, ok := g.packOf[r.Pack]
	if !ok {
		pi = uint32(len(g.packs))
		g.packs = append(g.packs, cachedPack{id: r.Pack, condemned: condemned})
		g.packOf[r.Pack] = pi
	}
	g.slots[slot] = uint32(len(g.order))
	g.order = append(g.order, cachedRec{slot: slot, key: k, pack: pi, offset: r.Offset, length: r.Length, rawLen: r.RawLen})
}

// lookupIndex finds blob t/id without the whole index: in the cache, or
// in the packs the catalog names for its lookup key. It returns the
// record (preferring a live pack's), whether its pack is condemned, and
// whether it was found. With filtered set a filter that says "absent" is
// believed.
func (v *Vault) lookupIndex(ctx context.Context, t vault.BlobType, id vault.ID, filtered bool) (vault.BlobRecord, bool, bool, error) {
	k := blobKey{id, t}
	v.mu.Lock()
	if r, condemned, ok := v.cache.get(k); ok && !condemned {
		v.mu.Unlock()
		return r, false, true, nil
	}
	v.mu.Unlock()
	return v.lookupUncached(ctx, t, id, filtered)
}

// lookupUncached is lookupIndex for a blob the cache does not hold live
// (the caller looked): the filter, then the packs the catalog names.
func (v *Vault) lookupUncached(ctx context.Context, t vault.BlobType, id vault.ID, filtered bool) (vault.BlobRecord, bool, bool, error) {
	v.mu.Lock()
	key := v.lookupKey(t, id)
	if filtered && v.filter != nil && !v.filter.mayHave(key) {
		v.mu.Unlock()
		return vault.BlobRecord{}, false, false, nil
	}
	v.mu.Unlock()
	var packs []vault.ID
	err := v.opt.Catalog.PacksByKey(ctx, v.rec.ID, []uint64{key}, func(_ uint64, p vault.ID) error {
		if len(packs) < maxPacksPerKey {
			packs = append(packs, p)
		}
		return nil
	})
	if err != nil {
		return vault.BlobRecord{}, false, false, fmt.Errorf("look up %s blob %s: %w", t, id.Short(), err)
	}
	var (
		found     vault.BlobRecord
		condemned bool
		ok        bool
	)
	for _, pid := range packs {
		p, err := v.opt.Catalog.Pack(ctx, v.rec.ID, pid)
		if errors.Is(err, vault.ErrNotFound) {
			continue // removed since (prune), or a row naming no pack
		}
		if err != nil {
			return vault.BlobRecord{}, false, false, fmt.Errorf("look up %s blob %s: %w", t, id.Short(), err)
		}
		deks, err := v.dekFor(ctx)
		if err != nil {
			return vault.BlobRecord{}, false, false, err
		}
		// SECURITY: the blob is taken only from the pack's sealed
		// header, authenticated under the pack's key (packBlobs).
		recs, err := packBlobs(p, deks)
		if err != nil {
			return vault.BlobRecord{}, false, false, fmt.Errorf("look up %s blob %s: %w (run coffer check)", t, id.Short(), err)
		}
		pc := !p.Condemned.IsZero()
		v.mu.Lock()
		for _, r := range recs {
			mine := r.ID == id && r.Type == t
			if mine && (!ok || (condemned && !pc)) {
				found, condemned, ok = r, pc, true
			}
			// The pack's other blobs are cached too: readers and
			// backups go through a pack's blobs in order. Not all of a
			// pack that would fill a generation by itself.
			if mine || len(recs) <= cacheGen/4 {
				v.cache.put(r, pc)
			}
		}
		v.mu.Unlock()
	}
	return found, condemned, ok, nil
}

// maxPacksPerKey bounds the packs one lookup opens: a key in more packs
// than this is a catalog writer's doing (a blob is stored twice only by
// concurrent backups).
const maxPacksPerKey = 64

// ensureFilter builds the filter from the catalog's lookup keys, or
// builds it again, larger, once it holds more keys than it was sized
// for. Keys of packs stored meanwhile are added after the scan.
func (v *Vault) ensureFilter(ctx context.Context) error {
	v.mu.Lock()
	need := v.filter == nil || v.filter.full()
	v.mu.Unlock()
	if !need {
		return nil
	}
	v.filterMu.Lock()
	defer v.filterMu.Unlock()
	v.mu.Lock()
	if v.filter != nil && !v.filter.full() {
		v.mu.Unlock()
		return nil // built by another goroutine meanwhile
	}
	want := 0
	if v.filter != nil {
		want = 2 * v.filter.n
	}
	v.filterFresh = []uint64{}
	v.mu.Unlock()

	n := 0
	err := v.opt.Catalog.PackKeys(ctx, v.rec.ID, func(_ vault.ID, keys []uint64) error {
		n += len(keys)
		return nil
	})
	if err == nil {
		// A scan to count, and one to fill: the keys are not held.
		f := newBlobFilter(max(want, n+n/2))
		if v.opt.OnFilter != nil {
			held := f.Bytes()
			v.mu.Lock()
			if v.filter != nil {
				held += v.filter.Bytes() // in use until the new one replaces it
			}
			v.mu.Unlock()
			v.opt.OnFilter(held)
		}
		err = v.opt.Catalog.PackKeys(ctx, v.rec.ID, func(_ vault.ID, keys []uint64) error {
			for _, k := range keys {
				f.add(k)
			}
			return nil
		})
		if err == nil {
			v.mu.Lock()
			for _, k := range v.filterFresh {
				f.add(k)
			}
			v.filter, v.filterFresh = f, nil
			v.mu.Unlock()
			return nil
		}
	}
	v.mu.Lock()
	v.filterFresh = nil
	v.mu.Unlock()
	return fmt.Errorf("read the blob index's lookup keys: %w", err)
}

// noteStored records blobs just stored (their pack is in the catalog):
// into the filter (or the keys to add to the one being built) and the
// cache. Called with v.mu held.
func (v *Vault) noteStored(recs []vault.BlobRecord, keys []uint64) {
	if v.filterFresh != nil {
		v.filterFresh = append(v.filterFresh, keys...)
	}
	if v.filter != nil {
		for _, k := range keys {
			v.filter.add(k)
		}
	}
	if v.full {
		for _, r := range recs {
			v.index[blobKey{r.ID, r.Type}] = r
		}
		return
	}
	if len(recs) <= cacheGen/4 {
		for _, r := range recs {
			v.cache.put(r, false)
		}
	}
}

// ensureFull loads the whole index into v.index, once, for what needs
// all of it.
func (v *Vault) ensureFull(ctx context.Context) error {
	v.mu.Lock()
	full := v.full
	v.mu.Unlock()
	if full {
		return nil
	}
	return v.loadIndex(ctx)
}

// keyPacks records the lookup keys of every pack that has a sealed
// header copy but no keys (recorded by an older version, or whose keys
// a catalog writer removed), or, with all, of every pack whose keys
// differ from its header's; it returns how many it wrote (with dry, how
// many it would). It reads one header at a time.
func (v *Vault) keyPacks(ctx context.Context, all, dry bool) (int, error) {
	var todo []vault.ID
	if err := v.opt.Catalog.Packs(ctx, v.rec.ID, func(p vault.PackRecord) error {
		if p.Header != nil && (all || !p.Keyed) {
			todo = append(todo, p.ID)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	return v.keyPackList(ctx, todo, all, dry)
}

// keyPackList is keyPacks for the packs todo.
func (v *Vault) keyPackList(ctx context.Context, todo []vault.ID, all, dry bool) (int, error) {
	if len(todo) == 0 {
		return 0, nil
	}
	var have map[vault.ID][]uint64
	if all {
		have = map[vault.ID][]uint64{}
		if err := v.opt.Catalog.PackKeys(ctx, v.rec.ID, func(id vault.ID, keys []uint64) error {
			have[id] = keys
			return nil
		}); err != nil {
			return 0, err
		}
	}
	deks, err := v.dekFor(ctx)
	if err != nil {
		return 0, err
	}
	done := 0
	for _, id := range todo {
		p, err := v.opt.Catalog.Pack(ctx, v.rec.ID, id)
		if errors.Is(err, vault.ErrNotFound) {
			continue
		}
		if err != nil {
			return done, err
		}
		recs, err := packBlobs(p, deks)
		if err != nil {
			return done, fmt.Errorf("index pack %s: %w (run coffer check)", id.Short(), err)
		}
		keys := v.keysOf(recs)
		if all && p.Keyed && equalKeys(have[id], keys) {
			ok, err := v.keysPointAt(ctx, id, keys)
			if err != nil {
				return done, err
			}
			if ok {
				continue
			}
		}
		if dry {
			done++
			continue
		}
		if err := v.opt.Catalog.SetPackKeys(ctx, v.rec.ID, id, keys); err != nil {
			return done, fmt.Errorf("index pack %s: %w", id.Short(), err)
		}
		done++
	}
	return done, nil
}

// keysPointAt reports whether the catalog finds pack id under each of
// keys.
func (v *Vault) keysPointAt(ctx context.Context, id vault.ID, keys []uint64) (bool, error) {
	found := make(map[uint64]bool, len(keys))
	err := v.opt.Catalog.PacksByKey(ctx, v.rec.ID, keys, func(k uint64, p vault.ID) error {
		if p == id {
			found[k] = true
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	for _, k := range keys {
		if !found[k] {
			return false, nil
		}
	}
	return true, nil
}

func (v *Vault) keysOf(recs []vault.BlobRecord) []uint64 {
	keys := make([]uint64, len(recs))
	for i, r := range recs {
		keys[i] = v.lookupKey(r.Type, r.ID)
	}
	return keys
}

func equalKeys(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
