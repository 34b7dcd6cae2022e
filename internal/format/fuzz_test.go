package format_test

// Fuzz targets for every parser of untrusted bytes (docs/format.md §9).
// Seed corpora live under testdata/fuzz/<FuzzName>/; run one with e.g.
//
//	go test ./internal/format/ -run XXX -fuzz FuzzDecodeTree -fuzztime 45s

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// FuzzDecodeTree: DecodeTree never panics, and whatever it accepts
// re-encodes to exactly the input (no two encodings of one tree, so a tree
// has one ID).
func FuzzDecodeTree(f *testing.F) {
	f.Add(mustEncodeTree(f, sampleTree()))
	f.Add(mustEncodeTree(f, &format.Tree{}))
	for _, n := range sampleTree().Nodes {
		f.Add(mustEncodeTree(f, &format.Tree{Nodes: []format.Node{n}}))
	}
	f.Add(treeEnc(1<<62, rawNode(4, "a", nil)))
	f.Add(treeEnc(1, rawNode(4, "a", binary.AppendUvarint(nil, 3), []byte{1, 'x', 0, 1, 'y', 1, 'v', 1, 'z', 0}...)))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := format.DecodeTree(b)
		if err != nil {
			if outcome(err) != "corrupt" {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		enc, err := format.EncodeTree(nil, tr)
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("decode→encode changes the bytes:\n in %x\nout %x", b, enc)
		}
	})
}

// fuzzPack is the valid pack the pack targets start from.
func fuzzPack(tb testing.TB) (vault.ID, []byte) {
	tb.Helper()
	codec := format.NewCodec()
	salt := testID("fuzz pack")
	dek := testKey("fuzz dek")
	p := newSpecPack(dek[:], 1, salt)
	for i, raw := range [][]byte{textData(1, 200), testData(2, 20), {}, mustEncodeTree(tb, sampleTree())} {
		typ := byte(1)
		if i == 3 {
			typ = 2
		}
		p.Add(typ, testID(string(rune(i))), codec.Encode(nil, raw), len(raw))
	}
	return salt, p.Finish()
}

// checkPack reads the pack name/b of any content; it must not panic, and
// what it accepts must be consistent.
func checkPack(t *testing.T, name vault.ID, b []byte, codec *format.Codec) error {
	keys := dekSet(map[uint32]seal.Key{1: testKey("fuzz dek")})
	o, entries, err := format.ReadPackHeader(name, bytes.NewReader(b), int64(len(b)), keys)
	if err != nil {
		if c := outcome(err); c != "corrupt" && c != "truncated" && c != "key_unavailable" {
			t.Fatalf("ReadPackHeader error of no known class: %v", err)
		}
		return err
	}
	end := uint64(len(b)) - 4 - uint64(binary.LittleEndian.Uint32(b[len(b)-4:]))
	off := uint64(specPrefixSize)
	for _, e := range entries {
		if uint64(e.Offset) != off || e.Length < specMinSealedBlob || e.RawLen > specMaxRaw {
			t.Fatalf("accepted entry %+v at %d", e, off)
		}
		off += uint64(e.Length)
	}
	if off != end {
		t.Fatalf("accepted entries end at %d, header at %d", off, end)
	}
	for _, e := range entries {
		pt, err := o.Open(nil, e.Type, e.ID, e.Offset, b[e.Offset:e.Offset+e.Length])
		if err != nil {
			if outcome(err) != "corrupt" {
				t.Fatalf("Open: %v", err)
			}
			return err
		}
		if _, err := codec.Decode(nil, pt, e.RawLen); err != nil {
			if outcome(err) != "corrupt" {
				t.Fatalf("Decode: %v", err)
			}
			return err
		}
	}
	return nil
}

// FuzzReadPackHeader feeds arbitrary bytes as a pack (named by its own
// salt field, so that the fuzzer gets past the name check) under a fixed
// DEK.
func FuzzReadPackHeader(f *testing.F) {
	_, pack := fuzzPack(f)
	f.Add(pack)
	f.Add(pack[:specMinPackSize])
	f.Add(bytes.Repeat([]byte{0}, 100))
	f.Add(append([]byte("CFPK\x01\x00\x00\x00\x01\x00\x00\x00"), make([]byte, 60)...))
	codec := format.NewCodec()
	f.Fuzz(func(t *testing.T, b []byte) {
		var name vault.ID
		if len(b) >= specPrefixSize {
			copy(name[:], b[12:44])
		}
		checkPack(t, name, b, codec)
	})
}

// FuzzPackMutation mutates a valid pack (xor a run of bytes, cut, extend)
// and requires that any change is detected.
func FuzzPackMutation(f *testing.F) {
	name, pack := fuzzPack(f)
	f.Add(uint32(0), []byte{1}, uint32(0), uint32(0))
	f.Add(uint32(len(pack)-1), []byte{0x80}, uint32(0), uint32(0))
	f.Add(uint32(50), []byte{0, 0, 1}, uint32(0), uint32(0))
	f.Add(uint32(0), []byte{}, uint32(1), uint32(0))
	f.Add(uint32(0), []byte{}, uint32(0), uint32(3))
	codec := format.NewCodec()
	f.Fuzz(func(t *testing.T, pos uint32, xor []byte, cut, extend uint32) {
		b := bytes.Clone(pack)
		for i, x := range xor {
			if p := int(pos) + i; p < len(b) {
				b[p] ^= x
			}
		}
		b = b[:len(b)-int(cut%uint32(len(b)+1))]
		b = append(b, make([]byte, extend%64)...)
		changed := !bytes.Equal(b, pack) // a cut and an extension can cancel out
		err := checkPack(t, name, b, codec)
		if changed && err == nil {
			t.Fatalf("mutated pack accepted (pos %d xor %x cut %d extend %d)", pos, xor, cut, extend)
		}
		if !changed && err != nil {
			t.Fatalf("unchanged pack rejected: %v", err)
		}
	})
}

// FuzzOpenSnapshot: arbitrary bytes as a snapshot object never panic; a
// valid seed mutated anywhere is rejected.
func FuzzOpenSnapshot(f *testing.F) {
	dek := testKey("fuzz dek")
	rec := sampleSnapshot()
	valid := specSnapshot(dek[:], 1, testID("fuzz salt"), rec.ID, fuzzSnapshotJSON(rec))
	if _, err := format.OpenSnapshot(rec.ID, valid, dekSet(map[uint32]seal.Key{1: dek})); err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:60])
	f.Add([]byte("CFSN\x01\x00\x00\x00\x01\x00\x00\x00"))
	keys := dekSet(map[uint32]seal.Key{1: dek})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := format.OpenSnapshot(rec.ID, b, keys)
		if err != nil {
			if c := outcome(err); c != "corrupt" && c != "truncated" && c != "key_unavailable" {
				t.Fatalf("error of no known class: %v", err)
			}
			return
		}
		if !bytes.Equal(b, valid) {
			t.Fatalf("accepted a snapshot object other than the valid one: %x", b)
		}
		sameSnapshot(t, got, rec)
	})
}

// fuzzSnapshotJSON writes a snapshot plaintext by hand, from §8.
func fuzzSnapshotJSON(r vault.SnapshotRecord) []byte {
	parent := "" // "hex or empty"
	if !r.Parent.IsZero() {
		parent = r.Parent.String()
	}
	b, _ := json.Marshal(map[string]any{"time": r.Time.UTC().Format(time.RFC3339Nano), "host": r.Host, "paths": r.Paths,
		"tags": r.Tags, "tree": r.Tree.String(), "parent": parent, "files": r.Files, "dirs": r.Dirs,
		"bytes": r.Bytes, "bytes_added": r.BytesAdded, "duration_ns": int64(r.Duration)})
	return b
}

// FuzzParseKeyring: never panics; what it accepts satisfies the checks it
// promises.
func FuzzParseKeyring(f *testing.F) {
	vid := testID("vault")
	f.Add("0000000001", []byte(`{"format":1,"vault":"`+vid.String()+`","generation":1,"created":"2024-01-02T03:04:05Z",`+
		`"kek":{"provider":"platform","key_id":"k","version":"1"},"root":"AQI=","deks":[{"version":1,"created":"2024-01-02T03:04:05Z","wrapped":"AQI="}],"current_dek":1}`))
	f.Add("0000000002", []byte(`{"format":1,"generation":2}`))
	if b, err := os.ReadFile("testdata/keyring/good.json"); err == nil {
		var k struct{ Vault string }
		json.Unmarshal(b, &k)
		f.Add("0000000002", bytes.ReplaceAll(b, []byte(k.Vault), []byte(vid.String())))
	}
	f.Add("x", []byte(`null`))
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		k, err := format.ParseKeyring(name, b, vid)
		if err != nil {
			return
		}
		if (k.Format != 1 && k.Format != 2) || k.Generation == 0 || format.KeyringName(k.Generation) != name || k.Vault != vid.String() {
			t.Fatalf("accepted %+v as %q", k, name)
		}
		found := false
		for _, d := range k.DEKs {
			found = found || d.Version == k.CurrentDEK
		}
		if !found {
			t.Fatalf("accepted a keyring without its current DEK")
		}
		if k.Format == 2 && (k.Config == nil || k.Config.Validate() != nil || len(k.MAC) != format.MACSize) {
			t.Fatalf("accepted a format-2 keyring without a valid config and MAC")
		}
		// What parses re-marshals and parses to the same.
		again, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := format.ParseKeyring(name, again, vid); err != nil {
			t.Fatalf("re-marshalled keyring rejected: %v", err)
		}
	})
}

// FuzzParseConfig: never panics; what it accepts is valid.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"format": 1, "id": "` + testID("vault").String() + `", "created": "2024-01-02T03:04:05Z",
 "chunker": {"min": 524288, "avg": 1048576, "max": 8388608}, "pack_size": 16777216}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := format.ParseConfig(b)
		if err != nil {
			return
		}
		if (c.Format != 1 && c.Format != 2) || c.Validate() != nil || c.PackSize < 1<<20 || c.PackSize > 64<<20 || c.Chunker.Min < 4096 {
			t.Fatalf("accepted %+v", c)
		}
		if _, err := vault.ParseID(c.ID); err != nil {
			t.Fatalf("accepted id %q", c.ID)
		}
		again, _ := json.Marshal(c)
		if _, err := format.ParseConfig(again); err != nil {
			t.Fatalf("re-marshalled config rejected: %v", err)
		}
	})
}

// FuzzCodecDecode: Decode never panics; what it accepts has the length
// asked for, and a raw blob is its payload.
func FuzzCodecDecode(f *testing.F) {
	codec := format.NewCodec()
	for _, d := range [][]byte{nil, []byte("abc"), textData(1, 3000), testData(2, 100)} {
		f.Add(codec.Encode(nil, d), uint32(len(d)))
	}
	f.Add([]byte{1, 0x28, 0xb5, 0x2f, 0xfd, 0, 0x58, 0, 0}, uint32(0))
	f.Add([]byte{2}, uint32(0))
	f.Fuzz(func(t *testing.T, p []byte, rawLen uint32) {
		// The raw length comes from an authenticated header and sizes the
		// output buffer; keep it within what a test may allocate.
		rawLen %= 4 << 20
		out, err := codec.Decode(nil, p, rawLen)
		if err != nil {
			if outcome(err) != "corrupt" {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if len(out) != int(rawLen) {
			t.Fatalf("accepted %d bytes for raw length %d", len(out), rawLen)
		}
		switch p[0] {
		case format.EncodingRaw:
			if !bytes.Equal(out, p[1:]) {
				t.Fatal("raw blob decodes to other bytes")
			}
		case format.EncodingZstd:
		default:
			t.Fatalf("accepted encoding %d", p[0])
		}
	})
}
