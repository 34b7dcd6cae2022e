package format_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

type packBlob struct {
	typ vault.BlobType
	id  vault.ID
	raw []byte
}

// manyBlobs returns n blobs of both types, compressible and not, of sizes
// from 0 to 64 KiB.
func manyBlobs(n int) []packBlob {
	r := rand.New(rand.NewPCG(42, 42))
	h := format.NewIDHasher(testKey("chunk-id"))
	var out []packBlob
	for i := range n {
		size := r.IntN(64 << 10)
		if i%17 == 0 {
			size = r.IntN(3)
		}
		var raw []byte
		if r.IntN(2) == 0 {
			raw = testData(uint64(i), size)
		} else {
			raw = textData(uint64(i), size)
		}
		typ := vault.DataBlob
		if i%5 == 0 {
			typ = vault.TreeBlob
		}
		out = append(out, packBlob{typ, h.ID(raw), raw})
	}
	return out
}

func TestPackRoundTrip(t *testing.T) {
	codec := format.NewCodec()
	dek := testKey("dek")
	blobs := manyBlobs(300)
	buf := make([]byte, 0, 32<<20)
	w := format.NewPackWriter(dek, 5, buf)
	if w.Size() != specPrefixSize || w.Count() != 0 {
		t.Fatalf("new writer: size %d count %d", w.Size(), w.Count())
	}
	var raws, zstds int
	for i, b := range blobs {
		p := codec.Encode(nil, b.raw)
		if p[0] == format.EncodingZstd {
			zstds++
		} else {
			raws++
		}
		before := w.Size()
		e := w.Add(b.typ, b.id, p, len(b.raw))
		if e.Offset != uint32(before) || e.Length != uint32(len(p)+specTagSize) || e.Type != b.typ || e.ID != b.id || e.RawLen != uint32(len(b.raw)) {
			t.Fatalf("Add %d = %+v", i, e)
		}
		if w.Size() != before+len(p)+specTagSize || w.Count() != i+1 {
			t.Fatalf("after Add %d: size %d count %d", i, w.Size(), w.Count())
		}
	}
	if raws == 0 || zstds == 0 {
		t.Fatalf("want both encodings: %d raw, %d zstd", raws, zstds)
	}
	name := w.ID()
	pack, written := w.Finish()
	if &pack[0] != &buf[:1][0] {
		t.Error("PackWriter did not reuse the buffer it was given")
	}

	o, entries, err := format.ReadPackHeader(name, bytes.NewReader(pack), int64(len(pack)), dekSet(map[uint32]seal.Key{5: dek}))
	if err != nil {
		t.Fatal(err)
	}
	if o.DEKVersion != 5 {
		t.Errorf("DEKVersion = %d", o.DEKVersion)
	}
	if len(entries) != len(blobs) {
		t.Fatalf("%d entries, want %d", len(entries), len(blobs))
	}
	off := uint32(specPrefixSize)
	var dst []byte
	for i, e := range entries {
		if e != written[i] {
			t.Fatalf("entry %d: read %+v, written %+v", i, e, written[i])
		}
		if e.Offset != off {
			t.Fatalf("entry %d at %d, want %d (44 + Σ sealed lengths)", i, e.Offset, off)
		}
		off += e.Length
		pt, err := o.Open(nil, e.Type, e.ID, e.Offset, pack[e.Offset:e.Offset+e.Length])
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		dst, err = codec.Decode(dst, pt, e.RawLen)
		if err != nil {
			t.Fatalf("decode %d: %v", i, err)
		}
		if !bytes.Equal(dst, blobs[i].raw) {
			t.Fatalf("blob %d differs", i)
		}
		// Open appends to dst.
		pre := []byte("xyz")
		if got, _ := o.Open(pre, e.Type, e.ID, e.Offset, pack[e.Offset:e.Offset+e.Length]); !bytes.Equal(got[:3], pre) || !bytes.Equal(got[3:], pt) {
			t.Fatalf("Open does not append to dst")
		}
	}
	if h := binary.LittleEndian.Uint32(pack[len(pack)-4:]); int(off)+int(h)+4 != len(pack) {
		t.Errorf("blobs end at %d, header of %d, pack of %d", off, h, len(pack))
	}

	// An opener from the prefix alone opens the same blobs.
	o2, err := format.NewPackOpener(name, pack[:specPrefixSize], dekSet(map[uint32]seal.Key{5: dek}))
	if err != nil {
		t.Fatal(err)
	}
	e := entries[len(entries)/2]
	if _, err := o2.Open(nil, e.Type, e.ID, e.Offset, pack[e.Offset:e.Offset+e.Length]); err != nil {
		t.Error(err)
	}
}

func TestPackEmpty(t *testing.T) {
	dek := testKey("dek")
	w := format.NewPackWriter(dek, 1, nil)
	pack, entries := w.Finish()
	if len(entries) != 0 || len(pack) != specPrefixSize+8+specTagSize+4 {
		t.Fatalf("empty pack: %d bytes, %d entries", len(pack), len(entries))
	}
	_, entries, err := format.ReadPackHeader(w.ID(), bytes.NewReader(pack), int64(len(pack)), dekSet(map[uint32]seal.Key{1: dek}))
	if err != nil || len(entries) != 0 {
		t.Fatalf("empty pack: %v, %d entries", err, len(entries))
	}
}

func TestPackFreshSalt(t *testing.T) {
	a := format.NewPackWriter(testKey("dek"), 1, nil)
	b := format.NewPackWriter(testKey("dek"), 1, nil)
	if a.ID() == b.ID() {
		t.Error("two packs share a name")
	}
}

func TestPackWriterPanicsOnHugeBlob(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Add accepted a raw length above 128 MiB")
		}
	}()
	format.NewPackWriter(testKey("dek"), 1, nil).Add(vault.DataBlob, vault.ID{}, []byte{0}, specMaxRaw+1)
}

// smallPack returns a pack of three blobs and its name.
func smallPack(tb testing.TB, dek seal.Key, ver uint32) (vault.ID, []byte, []format.PackEntry) {
	tb.Helper()
	codec := format.NewCodec()
	w := format.NewPackWriter(dek, ver, nil)
	for i, raw := range [][]byte{textData(1, 300), testData(2, 50), mustEncodeTree(tb, sampleTree())} {
		typ := vault.DataBlob
		if i == 2 {
			typ = vault.TreeBlob
		}
		w.Add(typ, testID(string(rune('a'+i))), codec.Encode(nil, raw), len(raw))
	}
	pack, entries := w.Finish()
	return w.ID(), pack, entries
}

func TestPackOpenRejects(t *testing.T) {
	dek := testKey("dek")
	name, pack, entries := smallPack(t, dek, 1)
	o, _, err := format.ReadPackHeader(name, bytes.NewReader(pack), int64(len(pack)), dekSet(map[uint32]seal.Key{1: dek}))
	if err != nil {
		t.Fatal(err)
	}
	e := entries[1]
	sealed := pack[e.Offset : e.Offset+e.Length]
	other := entries[0]
	for _, c := range []struct {
		name   string
		typ    vault.BlobType
		id     vault.ID
		offset uint32
		sealed []byte
		want   string
	}{
		{"ok", e.Type, e.ID, e.Offset, sealed, "ok"},
		{"other type", vault.TreeBlob, e.ID, e.Offset, sealed, "corrupt"},
		{"other ID", e.Type, other.ID, e.Offset, sealed, "corrupt"},
		{"other offset", e.Type, e.ID, e.Offset + 1, sealed, "corrupt"},
		{"other blob's bytes", e.Type, e.ID, e.Offset, pack[other.Offset : other.Offset+other.Length], "corrupt"},
		{"one byte short", e.Type, e.ID, e.Offset, sealed[:len(sealed)-1], "corrupt"},
		{"one byte more", e.Type, e.ID, e.Offset, pack[e.Offset : e.Offset+e.Length+1], "corrupt"},
		{"16 bytes", e.Type, e.ID, e.Offset, sealed[:16], "truncated"},
		{"empty", e.Type, e.ID, e.Offset, nil, "truncated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := o.Open(nil, c.typ, c.id, c.offset, c.sealed)
			wantOutcome(t, "Open", err, c.want)
		})
	}

	// The same blob under another pack's key does not open.
	name2, pack2, _ := smallPack(t, dek, 1)
	o2, _, err := format.ReadPackHeader(name2, bytes.NewReader(pack2), int64(len(pack2)), dekSet(map[uint32]seal.Key{1: dek}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = o2.Open(nil, e.Type, e.ID, e.Offset, sealed)
	wantOutcome(t, "blob moved to another pack", err, "corrupt")
}

func TestNewPackOpenerRejects(t *testing.T) {
	dek := testKey("dek")
	name, pack, _ := smallPack(t, dek, 1)
	prefix := pack[:specPrefixSize]
	set := func(i int, v byte) []byte { c := bytes.Clone(prefix); c[i] = v; return c }
	keys := dekSet(map[uint32]seal.Key{1: dek})
	keyErr := errors.New("KEK offline")
	for _, c := range []struct {
		name   string
		id     vault.ID
		prefix []byte
		keys   format.DEKs
		want   string
	}{
		{"ok", name, prefix, keys, "ok"},
		{"43 bytes", name, prefix[:43], keys, "truncated"},
		{"bad magic", name, set(3, 'X'), keys, "corrupt"},
		{"version 2", name, set(4, 2), keys, "corrupt"},
		{"reserved", name, set(6, 1), keys, "corrupt"},
		{"wrong name", testID("other"), prefix, keys, "corrupt"},
		{"salt changed", name, set(43, prefix[43]^1), keys, "corrupt"},
		{"DEK version unknown", name, set(8, 9), keys, "key_unavailable"},
		{"DEKs error passes through", name, prefix, func(uint32) (seal.Key, error) { return seal.Key{}, keyErr }, "other"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := format.NewPackOpener(c.id, c.prefix, c.keys)
			if c.want == "other" {
				if !errors.Is(err, keyErr) {
					t.Errorf("err %v does not wrap the DEKs error", err)
				}
				return
			}
			wantOutcome(t, "NewPackOpener", err, c.want)
		})
	}
}

// TestPackEveryBitFlip: a change of any bit of a pack makes reading the
// header, opening a blob or decoding it fail, and never panics.
func TestPackEveryBitFlip(t *testing.T) {
	dek := testKey("dek")
	codec := format.NewCodec()
	name, pack, _ := smallPack(t, dek, 1)
	keys := anyVersion(dek)
	if err := readAll(t, name, pack, keys, codec); err != nil {
		t.Fatal(err)
	}
	for i := range pack {
		for bit := range 8 {
			err := readAll(t, name, flip(pack, i, bit), keys, codec)
			if got := outcome(err); got != "corrupt" {
				t.Fatalf("bit %d of byte %d/%d flipped: %s (%v)", bit, i, len(pack), got, err)
			}
		}
	}
	for n := range len(pack) {
		if err := readAll(t, name, pack[:n], keys, codec); err == nil {
			t.Fatalf("pack cut to %d bytes reads", n)
		} else if n < specMinPackSize && outcome(err) != "truncated" {
			t.Fatalf("pack cut to %d bytes: %v, want truncated", n, err)
		}
	}
}

// sparsePack is a ReaderAt over a pack of a given size that is zero but for
// its prefix and its last four bytes. It records the largest read.
type sparsePack struct {
	size    int64
	prefix  []byte
	tail    [4]byte
	maxRead int
}

func (s *sparsePack) ReadAt(p []byte, off int64) (int, error) {
	s.maxRead = max(s.maxRead, len(p))
	if off >= s.size {
		return 0, io.EOF
	}
	n := 0
	for ; n < len(p) && off+int64(n) < s.size; n++ {
		o := off + int64(n)
		switch {
		case o < int64(len(s.prefix)):
			p[n] = s.prefix[o]
		case o >= s.size-4:
			p[n] = s.tail[o-(s.size-4)]
		default:
			p[n] = 0
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestReadPackHeaderLength(t *testing.T) {
	dek := testKey("dek")
	name, pack, _ := smallPack(t, dek, 1)
	keys := dekSet(map[uint32]seal.Key{1: dek})
	size := int64(len(pack))
	setH := func(h uint32) []byte {
		c := bytes.Clone(pack)
		binary.LittleEndian.PutUint32(c[len(c)-4:], h)
		return c
	}
	for _, c := range []struct {
		name string
		pack []byte
		size int64
		want string
	}{
		{"ok", pack, size, "ok"},
		{"H 0", setH(0), size, "corrupt"},
		{"H 23", setH(23), size, "corrupt"},
		{"H pack minus 48", setH(uint32(size - 48)), size, "corrupt"},
		{"H pack minus 47", setH(uint32(size - 47)), size, "corrupt"},
		{"H 2^32-1", setH(1<<32 - 1), size, "corrupt"},
		{"size says more than there is", pack, size + 100, "truncated"},
		{"size says 63", pack, 63, "truncated"},
		{"size 0", nil, 0, "truncated"},
		{"minimal size, garbage", bytes.Repeat([]byte{0}, specMinPackSize), specMinPackSize, "corrupt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := format.ReadPackHeader(name, bytes.NewReader(c.pack), c.size, keys)
			wantOutcome(t, "ReadPackHeader", err, c.want)
		})
	}

	// H above 16 MiB in a pack large enough to hold it is refused before
	// the header is read.
	for _, c := range []struct {
		name     string
		h        uint32
		readsHdr bool
	}{
		{"H 16 MiB + 1", specMaxPackHeader + 1, false},
		{"H 16 MiB", specMaxPackHeader, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			sp := &sparsePack{size: 40 << 20, prefix: pack[:specPrefixSize]}
			binary.LittleEndian.PutUint32(sp.tail[:], c.h)
			_, _, err := format.ReadPackHeader(name, sp, sp.size, keys)
			wantOutcome(t, "ReadPackHeader", err, "corrupt")
			if read := sp.maxRead > specPrefixSize; read != c.readsHdr {
				t.Errorf("largest read %d bytes: header read = %v, want %v", sp.maxRead, read, c.readsHdr)
			}
		})
	}
}

// TestPackHeaderForgeries: headers that authenticate (sealed with the right
// key by the spec builder) but break the rules of §4.
func TestPackHeaderForgeries(t *testing.T) {
	dek := testKey("dek")
	keys := dekSet(map[uint32]seal.Key{1: dek})
	salt := testID("forged pack")
	plain := append([]byte{0}, []byte("hello, blob")...)
	build := func(edit func(p *specPack)) []byte {
		p := newSpecPack(dek[:], 1, salt)
		p.Add(1, testID("b1"), plain, len(plain)-1)
		p.Add(2, testID("b2"), plain, len(plain)-1)
		if edit != nil {
			edit(p)
		}
		return p.Finish()
	}
	u32 := func(v uint32) *uint32 { return &v }
	for _, c := range []struct {
		name string
		edit func(p *specPack)
		want string
	}{
		{"ok", nil, "ok"},
		{"gap after blobs", func(p *specPack) { p.Junk(1) }, "corrupt"},
		{"gap of a whole blob", func(p *specPack) { p.Junk(100) }, "corrupt"},
		{"overlap", func(p *specPack) { p.Entries[0].Len++ }, "corrupt"},
		{"short by one", func(p *specPack) { p.Entries[1].Len-- }, "corrupt"},
		{"overrun by far", func(p *specPack) { p.Entries[1].Len = 1<<32 - 1 }, "corrupt"},
		{"sealed length 16", func(p *specPack) { p.Entries[1].Len = 16; p.Junk(int(p.Entries[0].Len) - 16) }, "corrupt"},
		{"sealed length 0", func(p *specPack) { p.Entries = p.Entries[:1]; p.Entries = append(p.Entries, specEntry{Type: 1}) }, "corrupt"},
		{"type 0", func(p *specPack) { p.Entries[0].Type = 0 }, "corrupt"},
		{"type 3", func(p *specPack) { p.Entries[1].Type = 3 }, "corrupt"},
		{"raw length 128 MiB + 1", func(p *specPack) { p.Entries[0].RawLen = specMaxRaw + 1 }, "corrupt"},
		{"header magic", func(p *specPack) { p.HeaderMagic = "CFPX" }, "corrupt"},
		{"count too large", func(p *specPack) { p.Count = u32(3) }, "corrupt"},
		{"count huge", func(p *specPack) { p.Count = u32(1<<32 - 1) }, "corrupt"},
		{"count too small", func(p *specPack) { p.Count = u32(1) }, "corrupt"},
		{"header extra byte", func(p *specPack) { p.HeaderExtra = []byte{0} }, "corrupt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pack := build(c.edit)
			_, _, err := format.ReadPackHeader(salt, bytes.NewReader(pack), int64(len(pack)), keys)
			wantOutcome(t, "ReadPackHeader", err, c.want)
		})
	}
	// A raw length of exactly 128 MiB is allowed in the header.
	pack := build(func(p *specPack) { p.Entries[0].RawLen = specMaxRaw })
	if _, _, err := format.ReadPackHeader(salt, bytes.NewReader(pack), int64(len(pack)), keys); err != nil {
		t.Errorf("raw length 128 MiB: %v", err)
	}
}

// TestPackWriterGrow fills a pack from a small buffer as the engine fills
// a tree pack (Grow before each Add, closed at the limit): the buffer
// doubles, so filling it copies about the pack's size once, not once per
// blob (AES-GCM appends into a buffer of exactly the length it needs), and
// Finish appends the header without copying the pack again.
func TestPackWriterGrow(t *testing.T) {
	const limit = 4 << 20
	dek := testKey("dek")
	codec := format.NewCodec()
	h := format.NewIDHasher(testKey("chunk-id"))
	var plains [][]byte
	var raws []int
	for i := 0; ; i++ {
		raw := testData(uint64(i), 20<<10) // incompressible: 20 KiB sealed
		plains = append(plains, codec.Encode(nil, raw))
		raws = append(raws, len(raw))
		if len(plains)*(20<<10+64) > limit {
			break
		}
	}
	var before, filled, finished runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w := format.NewPackWriter(dek, 1, make([]byte, 0, 1<<10))
	n := 0
	for i, p := range plains {
		sealed := len(p) + specTagSize
		if w.Count() > 0 && w.SizeWith(sealed) > limit {
			break
		}
		w.Grow(sealed, limit)
		w.Add(vault.TreeBlob, h.ID(p), p, raws[i])
		n++
	}
	runtime.ReadMemStats(&filled)
	pack, entries := w.Finish()
	runtime.ReadMemStats(&finished)
	if len(entries) != n || n < 100 || len(pack) > limit {
		t.Fatalf("%d entries of %d blobs added, pack of %d bytes (limit %d)", len(entries), n, len(pack), limit)
	}
	// 1 KiB doubling to 4 MiB allocates about 8 MiB of buffers; growing
	// by the blob would have allocated about n/2 packs' worth (400 MiB).
	if got := filled.TotalAlloc - before.TotalAlloc; got > 3*limit {
		t.Errorf("filling a %d-byte pack allocated %d bytes; want at most %d", len(pack), got, 3*limit)
	}
	if got := finished.TotalAlloc - filled.TotalAlloc; got > 256<<10 {
		t.Errorf("Finish allocated %d bytes: it copied the pack", got)
	}
	if _, got, err := format.ReadPackHeader(w.ID(), bytes.NewReader(pack), int64(len(pack)), dekSet(map[uint32]seal.Key{1: dek})); err != nil || len(got) != n {
		t.Fatalf("read back: %v, %d entries", err, len(got))
	}
}
