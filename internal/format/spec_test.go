package format_test

// Conformance of the code to docs/format.md, checked against the
// independent implementation in helpers_test.go (crypto/hkdf, crypto/aes,
// the spec's layouts) rather than against the code itself.

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

func TestSpecConstants(t *testing.T) {
	for _, c := range []struct{ name, got, want string }{
		{"PackMagic", format.PackMagic, specPackMagic},
		{"PackHeaderMagic", format.PackHeaderMagic, specPackHdrMagic},
		{"SnapshotMagic", format.SnapshotMagic, specSnapMagic},
		{"TreeMagic", format.TreeMagic, specTreeMagic},
		{"LabelPack", seal.LabelPack, specLabelPack},
		{"LabelSnapshot", seal.LabelSnapshot, specLabelSnapshot},
		{"LabelChunkID", seal.LabelChunkID, specLabelChunkID},
		{"LabelGearSeed", seal.LabelGearSeed, specLabelGearSeed},
		{"LabelWrap", seal.LabelWrap, specLabelWrap},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, spec says %q", c.name, c.got, c.want)
		}
	}
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"PackVersion", format.PackVersion, 1},
		{"SnapshotVersion", format.SnapshotVersion, 1},
		{"TreeVersion", format.TreeVersion, 1},
		{"PackPrefixSize", format.PackPrefixSize, specPrefixSize},
		{"PackTargetSize", format.PackTargetSize, 16 << 20},
		{"MaxBlobRawSize", format.MaxBlobRawSize, specMaxRaw},
		{"MaxPackHeader", format.MaxPackHeader, specMaxPackHeader},
		{"MaxSnapshotSize", format.MaxSnapshotSize, specMaxSnapshot},
		{"EncodingRaw", format.EncodingRaw, 0},
		{"EncodingZstd", format.EncodingZstd, 1},
		{"KindFile", int(format.KindFile), 1},
		{"KindDir", int(format.KindDir), 2},
		{"KindSymlink", int(format.KindSymlink), 3},
		{"KindFIFO", int(format.KindFIFO), 4},
		{"KindCharDev", int(format.KindCharDev), 5},
		{"KindBlockDev", int(format.KindBlockDev), 6},
		{"KindSocket", int(format.KindSocket), 7},
		{"DataBlob", int(vault.DataBlob), 1},
		{"TreeBlob", int(vault.TreeBlob), 2},
		{"seal.KeySize", seal.KeySize, 32},
		{"seal.NonceSize", seal.NonceSize, 12},
		{"seal.Overhead", seal.Overhead, specTagSize},
		{"seal.WrappedSize", seal.WrappedSize, specWrappedKeySize},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, spec says %d", c.name, c.got, c.want)
		}
	}
}

// specBlobs is a mix of blob types and encodings for pack tests.
func specBlobs(tb testing.TB, codec *format.Codec, h *format.IDHasher) (types []vault.BlobType, ids []vault.ID, plains, raws [][]byte) {
	tb.Helper()
	raws = [][]byte{
		testData(1, 1000),                // incompressible: raw
		textData(2, 5000),                // compressible: zstd
		{},                               // empty: raw
		mustEncodeTree(tb, sampleTree()), // a tree
		testData(3, 1),
		textData(4, 70000),
	}
	for i, raw := range raws {
		typ := vault.DataBlob
		if i == 3 {
			typ = vault.TreeBlob
		}
		types = append(types, typ)
		ids = append(ids, h.ID(raw))
		plains = append(plains, codec.Encode(nil, raw))
	}
	return types, ids, plains, raws
}

// TestSpecPackWriter opens a PackWriter pack with nothing but the spec and
// rebuilds it byte for byte with the independent writer.
func TestSpecPackWriter(t *testing.T) {
	codec := format.NewCodec()
	dek := testKey("dek")
	const dekVersion = 0x01020304
	types, ids, plains, raws := specBlobs(t, codec, format.NewIDHasher(testKey("chunk-id")))

	w := format.NewPackWriter(dek, dekVersion, nil)
	for i := range plains {
		w.Add(types[i], ids[i], plains[i], len(raws[i]))
	}
	name := w.ID()
	pack, entries := w.Finish()

	// Prefix (§4).
	if string(pack[0:4]) != specPackMagic || pack[4] != 1 || !bytes.Equal(pack[5:8], []byte{0, 0, 0}) {
		t.Fatalf("prefix %x: bad magic, version or reserved", pack[:8])
	}
	if v := binary.LittleEndian.Uint32(pack[8:12]); v != dekVersion {
		t.Errorf("DEK version field %#x, want %#x little-endian", v, dekVersion)
	}
	if !bytes.Equal(pack[12:44], name[:]) {
		t.Errorf("salt %x is not the pack name %s", pack[12:44], name)
	}
	if name.IsZero() {
		t.Error("pack name is zero")
	}
	prefix := pack[:44]
	aead := specAEAD(specDerive(dek[:], name[:], specLabelPack))

	// Header (§4): last 4 bytes are H, header sealed under the all-ones nonce.
	h := int(binary.LittleEndian.Uint32(pack[len(pack)-4:]))
	sealedHdr := pack[len(pack)-4-h : len(pack)-4]
	hdr, err := aead.Open(nil, specHeaderNonce(), sealedHdr, append(slices.Clone(prefix), specPackHeaderTag...))
	if err != nil {
		t.Fatalf("header does not open as the spec says: %v", err)
	}
	if string(hdr[:4]) != specPackHdrMagic {
		t.Fatalf("header magic %q", hdr[:4])
	}
	count := binary.LittleEndian.Uint32(hdr[4:8])
	if int(count) != len(plains) || len(hdr) != 8+int(count)*specEntrySize {
		t.Fatalf("header: count %d, %d bytes; want %d entries of %d bytes", count, len(hdr), len(plains), specEntrySize)
	}
	off := specPrefixSize
	for i := range plains {
		e := hdr[8+i*specEntrySize:]
		typ, id := e[0], vault.ID(e[1:33])
		slen := int(binary.LittleEndian.Uint32(e[33:37]))
		rawLen := binary.LittleEndian.Uint32(e[37:41])
		if typ != byte(types[i]) || id != ids[i] || rawLen != uint32(len(raws[i])) {
			t.Errorf("entry %d: type %d id %s raw %d; want %d %s %d", i, typ, id, rawLen, types[i], ids[i], len(raws[i]))
		}
		if slen != len(plains[i])+specTagSize {
			t.Errorf("entry %d: sealed length %d, want %d", i, slen, len(plains[i])+specTagSize)
		}
		// Blob i starts at 44 + Σ sealed lengths before it, nonce N(offset),
		// AAD P || type || ID.
		aad := append(append(slices.Clone(prefix), typ), id[:]...)
		pt, err := aead.Open(nil, specNonce(uint64(off)), pack[off:off+slen], aad)
		if err != nil {
			t.Errorf("blob %d at offset %d does not open as the spec says: %v", i, off, err)
		} else if !bytes.Equal(pt, plains[i]) {
			t.Errorf("blob %d: plaintext differs", i)
		}
		ent := entries[i]
		if ent.Offset != uint32(off) || ent.Length != uint32(slen) || ent.Type != types[i] || ent.ID != ids[i] || ent.RawLen != uint32(len(raws[i])) {
			t.Errorf("Finish entry %d = %+v, want offset %d length %d", i, ent, off, slen)
		}
		off += slen
	}
	if off != len(pack)-4-h {
		t.Errorf("blobs end at %d, header starts at %d", off, len(pack)-4-h)
	}

	// The independent writer, given the same salt, writes the same bytes.
	sp := newSpecPack(dek[:], dekVersion, name)
	for i := range plains {
		sp.Add(byte(types[i]), ids[i], plains[i], len(raws[i]))
	}
	if spec := sp.Finish(); !bytes.Equal(spec, pack) {
		t.Errorf("PackWriter output differs from the spec's construction (%d vs %d bytes)", len(pack), len(spec))
	}
}

// TestSpecPackReader reads a pack built only from the spec.
func TestSpecPackReader(t *testing.T) {
	codec := format.NewCodec()
	dek := testKey("dek")
	types, ids, plains, raws := specBlobs(t, codec, format.NewIDHasher(testKey("chunk-id")))
	salt := testID("spec pack salt")
	sp := newSpecPack(dek[:], 9, salt)
	for i := range plains {
		sp.Add(byte(types[i]), ids[i], plains[i], len(raws[i]))
	}
	pack := sp.Finish()

	o, entries, err := format.ReadPackHeader(salt, bytes.NewReader(pack), int64(len(pack)), dekSet(map[uint32]seal.Key{9: dek}))
	if err != nil {
		t.Fatal(err)
	}
	if o.DEKVersion != 9 {
		t.Errorf("DEKVersion %d", o.DEKVersion)
	}
	if len(entries) != len(plains) {
		t.Fatalf("%d entries, want %d", len(entries), len(plains))
	}
	for i, e := range entries {
		pt, err := o.Open(nil, e.Type, e.ID, e.Offset, pack[e.Offset:e.Offset+e.Length])
		if err != nil {
			t.Fatalf("blob %d: %v", i, err)
		}
		raw, err := codec.Decode(nil, pt, e.RawLen)
		if err != nil {
			t.Fatalf("blob %d: %v", i, err)
		}
		if !bytes.Equal(raw, raws[i]) {
			t.Errorf("blob %d decodes to other data", i)
		}
	}
}

func TestSpecNonces(t *testing.T) {
	for _, off := range []uint64{0, 44, 0x0102, 0x01020304, 1<<32 - 1} {
		got := seal.CounterNonce(off)
		if !bytes.Equal(got[:], specNonce(off)) {
			t.Errorf("CounterNonce(%#x) = %x, want %x", off, got, specNonce(off))
		}
		if bytes.Equal(got[:], specHeaderNonce()) {
			t.Errorf("N(%#x) collides with the header nonce", off)
		}
	}
	// 96-bit big-endian: the low byte is last.
	if n := seal.CounterNonce(0x0102030405060708); hex.EncodeToString(n[:]) != "000000000102030405060708" {
		t.Errorf("CounterNonce = %x", n)
	}
}

// TestSpecSnapshot opens SealSnapshot's output with the spec alone, and
// opens a spec-built snapshot with OpenSnapshot.
func TestSpecSnapshot(t *testing.T) {
	dek := testKey("dek")
	rec := sampleSnapshot()
	obj, err := format.SealSnapshot(rec, dek, 0x0a0b0c0d)
	if err != nil {
		t.Fatal(err)
	}
	if string(obj[:4]) != specSnapMagic || obj[4] != 1 || !bytes.Equal(obj[5:8], []byte{0, 0, 0}) {
		t.Fatalf("prefix %x", obj[:8])
	}
	if v := binary.LittleEndian.Uint32(obj[8:12]); v != 0x0a0b0c0d {
		t.Errorf("DEK version field %#x", v)
	}
	pt, err := specOpenSnapshot(dek[:], rec.ID, obj)
	if err != nil {
		t.Fatalf("snapshot does not open as the spec says: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(pt, &m); err != nil {
		t.Fatalf("plaintext is not JSON: %v", err)
	}
	// The fields §8 names.
	if got, _ := m["time"].(string); got != rec.Time.UTC().Format(time.RFC3339Nano) {
		t.Errorf("time %q, want RFC 3339 with nanoseconds %q", got, rec.Time.UTC().Format(time.RFC3339Nano))
	}
	if m["host"] != rec.Host || m["tree"] != hex.EncodeToString(rec.Tree[:]) || m["parent"] != hex.EncodeToString(rec.Parent[:]) {
		t.Errorf("host/tree/parent = %v %v %v", m["host"], m["tree"], m["parent"])
	}
	for _, f := range []string{"paths", "tags", "files", "dirs", "bytes", "bytes_added", "duration_ns"} {
		if _, ok := m[f]; !ok {
			t.Errorf("plaintext lacks %q: %s", f, pt)
		}
	}

	// Spec-built object, hand-written JSON.
	salt := testID("snapshot salt")
	plain := []byte(`{"time":"2024-05-06T07:08:09.123456789Z","host":"h","paths":["/a"],"tags":[],` +
		`"tree":"` + rec.Tree.String() + `","parent":"","files":1,"dirs":2,"bytes":3,"bytes_added":4,"duration_ns":5}`)
	obj = specSnapshot(dek[:], 3, salt, rec.ID, plain)
	got, err := format.OpenSnapshot(rec.ID, obj, dekSet(map[uint32]seal.Key{3: dek}))
	if err != nil {
		t.Fatalf("OpenSnapshot of a spec-built object: %v", err)
	}
	want := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if !got.Time.Equal(want) || got.Host != "h" || got.Tree != rec.Tree || !got.Parent.IsZero() ||
		got.Files != 1 || got.Dirs != 2 || got.Bytes != 3 || got.BytesAdded != 4 || got.Duration != 5 {
		t.Errorf("OpenSnapshot = %+v", got)
	}
}

func TestSpecTreeEncoding(t *testing.T) {
	tr := sampleTree()
	got := mustEncodeTree(t, tr)
	if want := specEncodeTree(tr); !bytes.Equal(got, want) {
		t.Errorf("EncodeTree differs from §5:\n got %x\nwant %x", got, want)
	}
	// A hand-assembled minimal tree: one FIFO named "p", all fields zero.
	minimal := []byte("CFTR\x01\x01" + "\x04" + "\x01p" + strings.Repeat("\x00", 9) + "\x00")
	dt, err := format.DecodeTree(minimal)
	if err != nil {
		t.Fatalf("minimal tree: %v", err)
	}
	if len(dt.Nodes) != 1 || dt.Nodes[0].Kind != format.KindFIFO || string(dt.Nodes[0].Name) != "p" {
		t.Errorf("minimal tree = %+v", dt)
	}
	if len(minimal)-6 != 13 {
		t.Errorf("a minimal node is %d bytes, the decoder assumes 13", len(minimal)-6)
	}
}

// TestSpecBlobEncoding checks §3: byte 0 is the encoding; 0x01 carries one
// zstd frame, decodable by a stock decoder.
func TestSpecBlobEncoding(t *testing.T) {
	codec := format.NewCodec()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for _, data := range [][]byte{nil, testData(1, 100), textData(2, 100000)} {
		p := codec.Encode(nil, data)
		switch p[0] {
		case 0x00:
			if !bytes.Equal(p[1:], data) {
				t.Error("raw payload differs from the data")
			}
		case 0x01:
			if !bytes.HasPrefix(p[1:], []byte{0x28, 0xb5, 0x2f, 0xfd}) {
				t.Errorf("payload does not start with a zstd frame magic: %x", p[1:5])
			}
			if len(p)-1 >= len(data) {
				t.Errorf("zstd stored although not smaller (%d >= %d)", len(p)-1, len(data))
			}
			out, err := dec.DecodeAll(p[1:], nil)
			if err != nil || !bytes.Equal(out, data) {
				t.Errorf("stock zstd decoder: %v", err)
			}
		default:
			t.Errorf("encoding byte %d", p[0])
		}
	}
}

// TestSpecIDs checks §1.2: ID = BLAKE3-256 keyed with the chunk-ID key.
func TestSpecIDs(t *testing.T) {
	key := testKey("chunk-id")
	h := format.NewIDHasher(key)
	for _, data := range [][]byte{nil, []byte("abc"), testData(5, 1<<20+17)} {
		ref, err := blake3.NewKeyed(key[:])
		if err != nil {
			t.Fatal(err)
		}
		ref.Write(data)
		var want vault.ID
		ref.Sum(want[:0])
		if got := h.ID(data); got != want {
			t.Errorf("ID(%d bytes) = %s, want %s", len(data), got, want)
		}
	}
}

// TestSpecKeyDerivation checks §1 for the derivations this package uses.
func TestSpecKeyDerivation(t *testing.T) {
	secret, salt := testKey("secret"), testID("salt")
	for _, label := range []string{specLabelPack, specLabelSnapshot, specLabelChunkID, specLabelGearSeed, specLabelWrap} {
		got := seal.Derive(secret, salt[:], label)
		if want := specDerive(secret[:], salt[:], label); !bytes.Equal(got[:], want) {
			t.Errorf("Derive(%q) differs from HKDF-SHA256", label)
		}
	}
}

// TestSpecConfigExample parses the examples of §6 and §7.
func TestSpecConfigExample(t *testing.T) {
	vid := testID("vault")
	cfg := `{"format": 1, "id": "` + vid.String() + `", "created": "2024-01-02T03:04:05Z",
 "chunker": {"min": 524288, "avg": 1048576, "max": 8388608},
 "pack_size": 16777216}`
	c, err := format.ParseConfig([]byte(cfg))
	if err != nil {
		t.Fatalf("§6 example: %v", err)
	}
	if c.Format != 1 || c.ID != vid.String() || c.PackSize != 16<<20 ||
		c.Chunker != (vault.ChunkerParams{Min: 512 << 10, Avg: 1 << 20, Max: 8 << 20}) {
		t.Errorf("config = %+v", c)
	}

	wrapped := "AQ==" // shape only: ParseKeyring does not unwrap
	kr := `{"format": 1, "vault": "` + vid.String() + `", "generation": 1, "created": "2024-01-02T03:04:05Z",
 "kek": {"provider": "platform", "key_id": "k1", "version": "1"},
 "root": "` + wrapped + `",
 "deks": [{"version": 1, "created": "2024-01-02T03:04:05Z", "wrapped": "` + wrapped + `"}],
 "current_dek": 1}`
	k, err := format.ParseKeyring("0000000001", []byte(kr), vid)
	if err != nil {
		t.Fatalf("§7 example: %v", err)
	}
	if k.Generation != 1 || k.CurrentDEK != 1 || len(k.DEKs) != 1 || k.KEK.Provider != "platform" || !bytes.Equal(k.Root, []byte{1}) {
		t.Errorf("keyring = %+v", k)
	}
	if got := format.KeyringName(1); got != "0000000001" {
		t.Errorf("KeyringName(1) = %q, want 10 zero-padded digits", got)
	}
	if got := format.KeyringName(4294967296); got != "4294967296" {
		t.Errorf("KeyringName(2^32) = %q", got)
	}
}
