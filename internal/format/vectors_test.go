package format_test

// Test vectors (age test-kit style): each file under testdata/vectors is
// one input and the outcome the spec requires of it. TestVectors only
// reads them; TestVectors -update rewrites them from the generators below,
// with crypto/rand seeded so that an unchanged format regenerates the same
// bytes.

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

const vectorDir = "testdata/vectors"

// vector is one file of testdata/vectors.
type vector struct {
	Comment string `json:"comment"`
	// Object is "pack", "snapshot", "tree" or "blob".
	Object string `json:"object"`
	// Name is the object's name in the store: a pack's salt, a snapshot's
	// ID (hex).
	Name string `json:"name,omitempty"`
	// DEKs are the DEK versions a reader has (version → hex key).
	DEKs map[string]string `json:"deks,omitempty"`
	// Data is the object (hex).
	Data string `json:"data"`
	// Size, when set, is the pack size a store reports, if not len(Data).
	Size *int64 `json:"size,omitempty"`
	// RawLen is a blob's raw length from its pack's index.
	RawLen uint32 `json:"raw_len,omitempty"`
	// Expect is the outcome of reading the object (for a pack: its
	// header): ok, corrupt, truncated or key_unavailable.
	Expect string `json:"expect"`

	Blobs    []vectorBlob    `json:"blobs,omitempty"`    // pack: the entries and each blob's outcome
	Snapshot *vectorSnapshot `json:"snapshot,omitempty"` // snapshot: the record
	Tree     []string        `json:"tree,omitempty"`     // tree: one line per node (dumpTree)
	Plain    *string         `json:"plain,omitempty"`    // blob: decoded data (hex)
}

type vectorBlob struct {
	Type   uint8  `json:"type"`
	ID     string `json:"id"`
	Offset uint32 `json:"offset"`
	Length uint32 `json:"length"`
	RawLen uint32 `json:"raw_len"`
	// Expect is ok, open_fails (authentication) or decode_fails (§3).
	Expect string `json:"expect"`
	Data   string `json:"data,omitempty"` // decoded, when ok (hex)
}

type vectorSnapshot struct {
	Time       string   `json:"time"`
	Host       string   `json:"host"`
	Paths      []string `json:"paths"`
	Tags       []string `json:"tags"`
	Tree       string   `json:"tree"`
	Parent     string   `json:"parent"`
	Files      uint64   `json:"files"`
	Dirs       uint64   `json:"dirs"`
	Bytes      uint64   `json:"bytes"`
	BytesAdded uint64   `json:"bytes_added"`
	DurationNS int64    `json:"duration_ns"`
}

func readVector(tb testing.TB, path string) vector {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var v vector
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return v
}

func (v *vector) keys(tb testing.TB) format.DEKs {
	tb.Helper()
	m := map[uint32]seal.Key{}
	for ver, k := range v.DEKs {
		n, err := strconv.ParseUint(ver, 10, 32)
		if err != nil {
			tb.Fatal(err)
		}
		m[uint32(n)] = mustKey(tb, k)
	}
	return dekSet(m)
}

func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	files, _ := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	counts := map[string]int{}
	for _, f := range files {
		v := readVector(t, f)
		counts[v.Object+"/"+v.Expect]++
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			switch v.Object {
			case "pack":
				checkPackVector(t, v)
			case "snapshot":
				checkSnapshotVector(t, v)
			case "tree":
				checkTreeVector(t, v)
			case "blob":
				checkBlobVector(t, v)
			default:
				t.Fatalf("unknown object %q", v.Object)
			}
		})
	}
	// The set must keep covering every object and outcome.
	for _, want := range []string{"pack/ok", "pack/corrupt", "pack/truncated", "pack/key_unavailable",
		"snapshot/ok", "snapshot/corrupt", "snapshot/truncated", "snapshot/key_unavailable",
		"tree/ok", "tree/corrupt", "blob/ok", "blob/corrupt"} {
		if counts[want] == 0 {
			t.Errorf("no %s vector under %s (go test -run TestVectors -update)", want, vectorDir)
		}
	}
}

func checkPackVector(t *testing.T, v vector) {
	data := mustHex(t, v.Data)
	size := int64(len(data))
	if v.Size != nil {
		size = *v.Size
	}
	name := mustID(t, v.Name)
	o, entries, err := format.ReadPackHeader(name, bytes.NewReader(data), size, v.keys(t))
	wantOutcome(t, "ReadPackHeader", err, v.Expect)
	if err != nil {
		return
	}
	if len(entries) != len(v.Blobs) {
		t.Fatalf("%d entries, want %d", len(entries), len(v.Blobs))
	}
	codec := format.NewCodec()
	for i, e := range entries {
		w := v.Blobs[i]
		if byte(e.Type) != w.Type || e.ID != mustID(t, w.ID) || e.Offset != w.Offset || e.Length != w.Length || e.RawLen != w.RawLen {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
			continue
		}
		pt, err := o.Open(nil, e.Type, e.ID, e.Offset, data[e.Offset:e.Offset+e.Length])
		if w.Expect == "open_fails" {
			wantOutcome(t, "Open blob "+strconv.Itoa(i), err, "corrupt")
			continue
		}
		if err != nil {
			t.Errorf("Open blob %d: %v", i, err)
			continue
		}
		raw, err := codec.Decode(nil, pt, e.RawLen)
		if w.Expect == "decode_fails" {
			wantOutcome(t, "Decode blob "+strconv.Itoa(i), err, "corrupt")
			continue
		}
		if err != nil {
			t.Errorf("Decode blob %d: %v", i, err)
			continue
		}
		if w.Expect != "ok" {
			t.Errorf("blob %d opened and decoded, want %s", i, w.Expect)
		}
		if !bytes.Equal(raw, mustHex(t, w.Data)) {
			t.Errorf("blob %d decodes to other data", i)
		}
	}
}

func checkSnapshotVector(t *testing.T, v vector) {
	id := mustID(t, v.Name)
	rec, err := format.OpenSnapshot(id, mustHex(t, v.Data), v.keys(t))
	wantOutcome(t, "OpenSnapshot", err, v.Expect)
	if err != nil {
		return
	}
	s := v.Snapshot
	want := vault.SnapshotRecord{ID: id, Host: s.Host, Paths: s.Paths, Tags: s.Tags, Tree: mustID(t, s.Tree),
		Files: s.Files, Dirs: s.Dirs, Bytes: s.Bytes, BytesAdded: s.BytesAdded, Duration: time.Duration(s.DurationNS)}
	if s.Parent != "" {
		want.Parent = mustID(t, s.Parent)
	}
	var err2 error
	if want.Time, err2 = time.Parse(time.RFC3339Nano, s.Time); err2 != nil {
		t.Fatal(err2)
	}
	sameSnapshot(t, rec, want)
}

func checkTreeVector(t *testing.T, v vector) {
	data := mustHex(t, v.Data)
	tr, err := format.DecodeTree(data)
	wantOutcome(t, "DecodeTree", err, v.Expect)
	if err != nil {
		return
	}
	if got := strings.Split(strings.TrimSuffix(dumpTree(tr), "\n"), "\n"); len(tr.Nodes) > 0 && !slices.Equal(got, v.Tree) {
		t.Errorf("tree\n got %q\nwant %q", got, v.Tree)
	} else if len(tr.Nodes) == 0 && len(v.Tree) != 0 {
		t.Errorf("empty tree, want %d nodes", len(v.Tree))
	}
	if enc := mustEncodeTree(t, tr); !bytes.Equal(enc, data) {
		t.Error("tree re-encodes to other bytes")
	}
}

func checkBlobVector(t *testing.T, v vector) {
	out, err := format.NewCodec().Decode(nil, mustHex(t, v.Data), v.RawLen)
	wantOutcome(t, "Decode", err, v.Expect)
	if err == nil && !bytes.Equal(out, mustHex(t, *v.Plain)) {
		t.Error("blob decodes to other data")
	}
}

// --- generator ---

// vectorGen collects vectors and writes them.
type vectorGen struct {
	t  *testing.T
	vs map[string]vector
}

func (g *vectorGen) add(name string, v vector) {
	if _, dup := g.vs[name]; dup {
		g.t.Fatalf("duplicate vector %s", name)
	}
	g.vs[name] = v
}

func deksHex(m map[uint32]seal.Key) map[string]string {
	out := map[string]string{}
	for v, k := range m {
		out[strconv.FormatUint(uint64(v), 10)] = hex.EncodeToString(k[:])
	}
	return out
}

func generateVectors(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 2)
	g := &vectorGen{t: t, vs: map[string]vector{}}
	genPackVectors(g)
	genSnapshotVectors(g)
	genTreeVectors(g)
	genBlobVectors(g)

	if err := os.MkdirAll(vectorDir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	for _, f := range old {
		os.Remove(f)
	}
	for name, v := range g.vs {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(vectorDir, name+".json"), append(b, '\n'))
	}
}

// packVec describes a pack for a vector: its bytes, name and entries.
type packVec struct {
	name    vault.ID
	data    []byte
	entries []vectorBlob
}

func (p packVec) clone() packVec {
	p.data = bytes.Clone(p.data)
	p.entries = slices.Clone(p.entries)
	return p
}

func (p packVec) vector(comment string, deks map[uint32]seal.Key, expect string) vector {
	v := vector{Comment: comment, Object: "pack", Name: p.name.String(), DEKs: deksHex(deks), Data: hex.EncodeToString(p.data), Expect: expect}
	if expect == "ok" {
		v.Blobs = p.entries
	}
	return v
}

func genPackVectors(g *vectorGen) {
	t := g.t
	codec := format.NewCodec()
	hasher := format.NewIDHasher(testKey("vector chunk-id"))
	dek := testKey("vector dek 1")
	keys := map[uint32]seal.Key{1: dek}

	// The base pack, from PackWriter: raw, zstd, empty and tree blobs.
	raws := [][]byte{testData(10, 200), textData(11, 3000), {}, mustEncodeTree(t, sampleTree())}
	w := format.NewPackWriter(dek, 1, nil)
	var base packVec
	for i, raw := range raws {
		typ := vault.DataBlob
		if i == 3 {
			typ = vault.TreeBlob
		}
		e := w.Add(typ, hasher.ID(raw), codec.Encode(nil, raw), len(raw))
		base.entries = append(base.entries, vectorBlob{Type: uint8(e.Type), ID: e.ID.String(), Offset: e.Offset,
			Length: e.Length, RawLen: e.RawLen, Expect: "ok", Data: hex.EncodeToString(raw)})
	}
	base.name = w.ID()
	base.data, _ = w.Finish()
	if codec.Encode(nil, raws[1])[0] != format.EncodingZstd || codec.Encode(nil, raws[0])[0] != format.EncodingRaw {
		t.Fatal("base pack lacks a raw or a zstd blob")
	}
	hdrStart := len(base.data) - 4 - int(binary.LittleEndian.Uint32(base.data[len(base.data)-4:]))

	g.add("pack_ok", base.vector("PackWriter output: raw, zstd, empty and tree blobs", keys, "ok"))
	g.add("pack_ok_other_deks_present", base.vector("the prefix's DEK version selects the key", map[uint32]seal.Key{1: dek, 2: testKey("vector dek 2")}, "ok"))
	empty := format.NewPackWriter(dek, 1, nil)
	ed, _ := empty.Finish()
	g.add("pack_ok_no_blobs", packVec{name: empty.ID(), data: ed}.vector("a pack with an empty header", keys, "ok"))

	mut := func(name, comment string, deks map[uint32]seal.Key, expect string, f func(p *packVec)) {
		p := base.clone()
		f(&p)
		g.add(name, p.vector(comment, deks, expect))
	}
	blobFails := func(name, comment string, f func(p *packVec), failing ...int) {
		p := base.clone()
		f(&p)
		for _, i := range failing {
			p.entries[i].Expect = "open_fails"
			p.entries[i].Data = ""
		}
		g.add(name, p.vector(comment, keys, "ok"))
	}
	blobFails("pack_blob_bitflip", "bit flipped in blob 1's ciphertext: the header reads, blob 1 does not open",
		func(p *packVec) { p.data[p.entries[1].Offset+5] ^= 0x04 }, 1)
	blobFails("pack_blob_tag_bitflip", "bit flipped in blob 0's tag",
		func(p *packVec) { p.data[p.entries[0].Offset+p.entries[0].Length-1] ^= 0x80 }, 0)

	mut("pack_header_bitflip", "bit flipped in the sealed header", keys, "corrupt", func(p *packVec) { p.data[hdrStart+3] ^= 1 })
	mut("pack_header_tag_bitflip", "bit flipped in the header's tag", keys, "corrupt", func(p *packVec) { p.data[len(p.data)-5] ^= 1 })
	mut("pack_prefix_dek_version", "DEK version 1 changed to 2, both versions hold the same key: the prefix is authenticated",
		map[uint32]seal.Key{1: dek, 2: dek}, "corrupt", func(p *packVec) { p.data[8] = 2 })
	mut("pack_prefix_salt_bitflip", "bit flipped in the salt: it no longer equals the pack name", keys, "corrupt", func(p *packVec) { p.data[20] ^= 1 })
	mut("pack_wrong_name", "the pack stored under another name", keys, "corrupt", func(p *packVec) { p.name = testID("another pack") })
	mut("pack_renamed_with_salt", "salt and name both changed consistently: the key changes, the header does not open", keys, "corrupt",
		func(p *packVec) { p.name = testID("another pack"); copy(p.data[12:44], p.name[:]) })
	mut("pack_wrong_key", "another DEK under the same version", map[uint32]seal.Key{1: testKey("vector dek 2")}, "corrupt", func(*packVec) {})
	mut("pack_key_unavailable", "the reader lacks DEK version 1", map[uint32]seal.Key{2: dek}, "key_unavailable", func(*packVec) {})
	mut("pack_bad_magic", "magic CFPX", keys, "corrupt", func(p *packVec) { p.data[3] = 'X' })
	mut("pack_bad_version", "format version 2", keys, "corrupt", func(p *packVec) { p.data[4] = 2 })
	mut("pack_reserved_set", "a reserved byte is 1", keys, "corrupt", func(p *packVec) { p.data[7] = 1 })
	mut("pack_truncated_63", "63 bytes: shorter than 44 + 16 + 4", keys, "truncated", func(p *packVec) { p.data = p.data[:63] })
	mut("pack_truncated_prefix", "the prefix alone", keys, "truncated", func(p *packVec) { p.data = p.data[:44] })
	short := base.vector("the store reports 10 more bytes than it returns", keys, "truncated")
	short.Size = new(int64(len(base.data) + 10))
	g.add("pack_truncated_read", short)
	mut("pack_cut_last_byte", "last byte missing: the header length is read from the wrong place (a reader cannot tell this from corruption)",
		keys, "corrupt", func(p *packVec) { p.data = p.data[:len(p.data)-1] })
	setH := func(h uint32) func(p *packVec) {
		return func(p *packVec) { binary.LittleEndian.PutUint32(p.data[len(p.data)-4:], h) }
	}
	mut("pack_header_length_0", "H = 0", keys, "corrupt", setH(0))
	mut("pack_header_length_too_large", "H = pack size - 47, one more than fits", keys, "corrupt", setH(uint32(len(base.data)-47)))
	mut("pack_header_length_max", "H = 2^32 - 1", keys, "corrupt", setH(1<<32-1))
	mut("pack_header_length_off_by_one", "H one less than the real header", keys, "corrupt", setH(uint32(len(base.data)-4-hdrStart-1)))

	// Forged packs, authentic but against the rules: built from the spec.
	salt := testID("vector forged pack")
	a, b := testData(20, 100), testData(21, 100)
	idA, idB := hasher.ID(a), hasher.ID(b)
	plainA, plainB := append([]byte{0}, a...), append([]byte{0}, b...)
	forge := func(name, comment, expect string, f func(p *specPack), blobExpect ...string) {
		p := newSpecPack(dek[:], 1, salt)
		p.Add(1, idA, plainA, len(a))
		p.Add(1, idB, plainB, len(b))
		f(p)
		pv := packVec{name: salt, data: p.Finish()}
		off := uint32(specPrefixSize)
		for i, e := range p.Entries {
			vb := vectorBlob{Type: e.Type, ID: hex.EncodeToString(e.ID[:]), Offset: off, Length: e.Len, RawLen: e.RawLen, Expect: "ok"}
			if i < len(blobExpect) {
				vb.Expect = blobExpect[i]
			}
			if vb.Expect == "ok" && i < 2 {
				vb.Data = hex.EncodeToString([][]byte{a, b}[i])
			}
			pv.entries = append(pv.entries, vb)
			off += e.Len
		}
		g.add(name, pv.vector(comment, keys, expect))
	}
	forge("pack_ok_spec_built", "a pack built from docs/format.md alone", "ok", func(*specPack) {})
	forge("pack_blobs_swapped", "the two sealed blobs (same length) swapped in place: the nonce is the offset, so neither opens",
		"ok", func(p *specPack) {
			l := int(p.Entries[0].Len)
			x, y := bytes.Clone(p.Body[44:44+l]), bytes.Clone(p.Body[44+l:44+2*l])
			copy(p.Body[44:], y)
			copy(p.Body[44+l:], x)
			p.Entries[0], p.Entries[1] = p.Entries[1], p.Entries[0]
		}, "open_fails", "open_fails")
	forge("pack_type_changed", "authentic header lists blob 0 as a tree: the type is in the blob's AAD", "ok",
		func(p *specPack) { p.Entries[0].Type = 2 }, "open_fails", "ok")
	forge("pack_id_changed", "authentic header gives blob 1 another ID: the ID is in the blob's AAD", "ok",
		func(p *specPack) { p.Entries[1].ID = testID("other") }, "ok", "open_fails")
	forge("pack_gap", "one byte between the last blob and the header that no entry accounts for", "corrupt", func(p *specPack) { p.Junk(1) })
	forge("pack_overlap", "entry 0's sealed length one too long: blobs overlap", "corrupt", func(p *specPack) { p.Entries[0].Len++ })
	forge("pack_overrun", "entry 1's sealed length runs into the header", "corrupt", func(p *specPack) { p.Entries[1].Len += 20 })
	forge("pack_unknown_type", "entry of type 3", "corrupt", func(p *specPack) { p.Entries[1].Type = 3 })
	forge("pack_type_zero", "entry of type 0", "corrupt", func(p *specPack) { p.Entries[0].Type = 0 })
	forge("pack_sealed_length_16", "entry with a sealed length below 17 (the space is filled)", "corrupt", func(p *specPack) {
		p.Entries = append(p.Entries, specEntry{Type: 1, Len: 16})
		p.Junk(16)
	})
	forge("pack_raw_length_too_large", "entry with a raw length of 128 MiB + 1", "corrupt", func(p *specPack) { p.Entries[0].RawLen = specMaxRaw + 1 })
	forge("pack_header_bad_magic", "header magic CFPX", "corrupt", func(p *specPack) { p.HeaderMagic = "CFPX" })
	forge("pack_header_count_large", "header count 3 for 2 entries", "corrupt", func(p *specPack) { n := uint32(3); p.Count = &n })
	forge("pack_header_count_huge", "header count 2^32 - 1", "corrupt", func(p *specPack) { n := uint32(1<<32 - 1); p.Count = &n })
	forge("pack_header_trailing", "a byte after the header's entries", "corrupt", func(p *specPack) { p.HeaderExtra = []byte{0} })
	// Blob plaintexts that authenticate but do not decode (§3).
	forge("pack_blob_bad_encoding", "blob 0 has encoding byte 2", "ok", func(p *specPack) {
		p.Body = p.Body[:44]
		p.Entries = nil
		p.Add(1, idA, append([]byte{2}, a...), len(a))
		p.Add(1, idB, plainB, len(b))
	}, "decode_fails", "ok")
	forge("pack_blob_raw_length_mismatch", "blob 1's raw length in the header is one too many", "ok",
		func(p *specPack) { p.Entries[1].RawLen++ }, "ok", "decode_fails")
	forge("pack_blob_garbage_zstd", "blob 0 is encoding 1 over bytes that are not zstd", "ok", func(p *specPack) {
		p.Body = p.Body[:44]
		p.Entries = nil
		p.Add(1, idA, append([]byte{1}, a...), len(a))
		p.Add(1, idB, plainB, len(b))
	}, "decode_fails", "ok")
}

func snapVector(comment, name string, obj []byte, deks map[uint32]seal.Key, expect string, rec *vault.SnapshotRecord) vector {
	v := vector{Comment: comment, Object: "snapshot", Name: name, DEKs: deksHex(deks), Data: hex.EncodeToString(obj), Expect: expect}
	if rec != nil {
		v.Snapshot = &vectorSnapshot{Time: rec.Time.UTC().Format(time.RFC3339Nano), Host: rec.Host, Paths: rec.Paths,
			Tags: rec.Tags, Tree: rec.Tree.String(), Files: rec.Files, Dirs: rec.Dirs, Bytes: rec.Bytes,
			BytesAdded: rec.BytesAdded, DurationNS: int64(rec.Duration)}
		if !rec.Parent.IsZero() {
			v.Snapshot.Parent = rec.Parent.String()
		}
	}
	return v
}

func genSnapshotVectors(g *vectorGen) {
	t := g.t
	dek := testKey("vector dek 1")
	keys := map[uint32]seal.Key{1: dek}
	rec := sampleSnapshot()
	obj, err := format.SealSnapshot(rec, dek, 1)
	if err != nil {
		t.Fatal(err)
	}
	name := rec.ID.String()
	g.add("snapshot_ok", snapVector("SealSnapshot output, every field set", name, obj, keys, "ok", &rec))
	np := rec
	np.ID, np.Parent, np.Tags, np.Paths = testID("no parent"), vault.ID{}, nil, []string{"/"}
	objNP, _ := format.SealSnapshot(np, dek, 1)
	g.add("snapshot_ok_no_parent", snapVector("no parent, no tags", np.ID.String(), objNP, keys, "ok", &np))
	spec := specSnapshot(dek[:], 1, testID("vector salt"), np.ID, fuzzSnapshotJSON(np))
	g.add("snapshot_ok_spec_built", snapVector("built from docs/format.md alone, with \"parent\": \"\"", np.ID.String(), spec, keys, "ok", &np))

	set := func(i int, x byte) []byte { c := bytes.Clone(obj); c[i] ^= x; return c }
	g.add("snapshot_ciphertext_bitflip", snapVector("bit flipped in the ciphertext", name, set(60, 1), keys, "corrupt", nil))
	g.add("snapshot_tag_bitflip", snapVector("bit flipped in the tag", name, set(len(obj)-1, 0x40), keys, "corrupt", nil))
	g.add("snapshot_salt_bitflip", snapVector("bit flipped in the salt", name, set(12, 1), keys, "corrupt", nil))
	g.add("snapshot_dek_version_changed", snapVector("DEK version 1 changed to 3, both versions hold the same key", name, set(8, 2),
		map[uint32]seal.Key{1: dek, 3: dek}, "corrupt", nil))
	g.add("snapshot_renamed", snapVector("stored under another ID", testID("other snapshot").String(), obj, keys, "corrupt", nil))
	g.add("snapshot_wrong_key", snapVector("another DEK under version 1", name, obj, map[uint32]seal.Key{1: testKey("vector dek 2")}, "corrupt", nil))
	g.add("snapshot_key_unavailable", snapVector("the reader lacks DEK version 1", name, obj, map[uint32]seal.Key{2: dek}, "key_unavailable", nil))
	g.add("snapshot_bad_magic", snapVector("magic CFSX", name, set(3, 'N'^'X'), keys, "corrupt", nil))
	g.add("snapshot_bad_version", snapVector("version 0", name, set(4, 1), keys, "corrupt", nil))
	g.add("snapshot_reserved_set", snapVector("reserved byte set", name, set(6, 0x10), keys, "corrupt", nil))
	g.add("snapshot_truncated_59", snapVector("59 bytes: shorter than 44 + 16", name, obj[:59], keys, "truncated", nil))
	g.add("snapshot_cut_last_byte", snapVector("last byte missing", name, obj[:len(obj)-1], keys, "corrupt", nil))
	g.add("snapshot_unknown_field", snapVector("authentic plaintext with an unknown field", name,
		specSnapshot(dek[:], 1, testID("vector salt"), rec.ID, []byte(`{"tree":"`+rec.Tree.String()+`","extra":1}`)), keys, "corrupt", nil))
	g.add("snapshot_bad_tree_id", snapVector("authentic plaintext whose tree is not 64 hex digits", name,
		specSnapshot(dek[:], 1, testID("vector salt"), rec.ID, []byte(`{"tree":"abc"}`)), keys, "corrupt", nil))
}

func treeVector(comment string, data []byte, expect string) vector {
	v := vector{Comment: comment, Object: "tree", Data: hex.EncodeToString(data), Expect: expect}
	if expect == "ok" {
		tr, err := format.DecodeTree(data)
		if err != nil {
			panic(err)
		}
		if d := strings.TrimSuffix(dumpTree(tr), "\n"); d != "" {
			v.Tree = strings.Split(d, "\n")
		}
	}
	return v
}

func genTreeVectors(g *vectorGen) {
	fifo := func(name string) []byte { return rawNode(4, name, nil) }
	g.add("tree_ok_all_kinds", treeVector("every node kind, xattrs, non-UTF-8 names, extreme values", mustEncodeTree(g.t, sampleTree()), "ok"))
	g.add("tree_ok_empty", treeVector("no nodes", mustEncodeTree(g.t, &format.Tree{}), "ok"))
	g.add("tree_ok_minimal_node", treeVector("one FIFO named p, every field zero: 13 bytes", treeEnc(1, fifo("p")), "ok"))
	for _, c := range []struct {
		name, comment string
		data          []byte
	}{
		{"tree_bad_magic", "magic CFTX", append([]byte("CFTX\x01"), 0)},
		{"tree_bad_version", "version 2", []byte("CFTR\x02\x00")},
		{"tree_unsorted", "names b, a", treeEnc(2, fifo("b"), fifo("a"))},
		{"tree_duplicate", "names a, a", treeEnc(2, fifo("a"), fifo("a"))},
		{"tree_name_empty", "empty name", treeEnc(1, fifo(""))},
		{"tree_name_dot", "name .", treeEnc(1, fifo("."))},
		{"tree_name_dotdot", "name ..", treeEnc(1, fifo(".."))},
		{"tree_name_slash", "name a/b", treeEnc(1, fifo("a/b"))},
		{"tree_name_nul", "name with NUL", treeEnc(1, fifo("a\x00"))},
		{"tree_unknown_kind", "kind 8", treeEnc(1, rawNode(8, "a", nil))},
		{"tree_kind_zero", "kind 0", treeEnc(1, rawNode(0, "a", nil))},
		{"tree_trailing_byte", "a byte after the last node", append(treeEnc(1, fifo("a")), 0)},
		{"tree_huge_count", "count 2^62 with one node", treeEnc(1<<62, fifo("a"))},
		{"tree_truncated", "last byte of a valid tree missing", func() []byte { b := mustEncodeTree(g.t, sampleTree()); return b[:len(b)-1] }()},
		{"tree_empty_xattr_name", "xattr with an empty name", treeEnc(1, rawNode(4, "a", []byte{1, 0, 0}))},
		{"tree_xattr_count_huge", "xattr count 2^40", treeEnc(1, rawNode(4, "a", binary.AppendUvarint(nil, 1<<40)))},
		{"tree_chunk_count_huge", "chunk count 2^60", treeEnc(1, rawNode(1, "a", nil, binary.AppendUvarint(nil, 1<<60)...))},
		{"tree_varint_not_minimal", "perm 0o111 as the two-byte varint c9 00", treeEnc(1, []byte{4, 1, 'a', 0xc9, 0x00}, make([]byte, 9))},
		{"tree_perm_too_large", "perm 0o10000: more than the 12 permission bits", treeEnc(1, append(binary.AppendUvarint([]byte{4, 1, 'a'}, 0o10000), make([]byte, 9)...))},
	} {
		g.add(c.name, treeVector(c.comment, c.data, "corrupt"))
	}
}

func genBlobVectors(g *vectorGen) {
	codec := format.NewCodec()
	text := textData(30, 2000)
	z := codec.Encode(nil, text)
	if z[0] != format.EncodingZstd {
		g.t.Fatal("text did not compress")
	}
	ok := func(name, comment string, p, plain []byte) {
		s := hex.EncodeToString(plain)
		g.add(name, vector{Comment: comment, Object: "blob", Data: hex.EncodeToString(p), RawLen: uint32(len(plain)), Expect: "ok", Plain: &s})
	}
	bad := func(name, comment string, p []byte, rawLen uint32) {
		g.add(name, vector{Comment: comment, Object: "blob", Data: hex.EncodeToString(p), RawLen: rawLen, Expect: "corrupt"})
	}
	ok("blob_ok_zstd", "a frozen zstd frame: must decode forever", z, text)
	ok("blob_ok_raw", "encoding 0", append([]byte{0}, "raw bytes"...), []byte("raw bytes"))
	ok("blob_ok_empty", "encoding 0, no payload", []byte{0}, nil)
	bad("blob_empty", "no encoding byte", nil, 0)
	bad("blob_unknown_encoding", "encoding byte 2", append([]byte{2}, z[1:]...), uint32(len(text)))
	bad("blob_raw_length_short", "zstd frame, raw length one too small", z, uint32(len(text)-1))
	bad("blob_raw_length_long", "raw blob, raw length one too large", []byte("\x00abc"), 4)
	bad("blob_raw_length_too_large", "raw length 128 MiB + 1", []byte("\x00abc"), specMaxRaw+1)
	bad("blob_garbage_zstd", "encoding 1 over bytes that are not zstd", append([]byte{1}, testData(31, 64)...), 64)
	bad("blob_zstd_truncated", "zstd frame missing its last byte", z[:len(z)-1], uint32(len(text)))
}
