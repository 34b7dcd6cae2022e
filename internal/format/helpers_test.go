package format_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// update regenerates the files under testdata/ (vectors and frozen
// samples). Run it only for an intended format change, together with
// docs/format.md, and review the diff: the generators seed crypto/rand
// (testing/cryptotest), so an unchanged format regenerates identical files.
var update = flag.Bool("update", false, "regenerate testdata/vectors and testdata/samples")

// Spec strings, written out here on purpose rather than taken from the
// package, so that a change of a constant in the code shows up as a
// disagreement with docs/format.md.
const (
	specPackMagic      = "CFPK"
	specPackHdrMagic   = "CFPH"
	specSnapMagic      = "CFSN"
	specTreeMagic      = "CFTR"
	specLabelPack      = "coffer/v1/pack"
	specLabelSnapshot  = "coffer/v1/snapshot"
	specLabelChunkID   = "coffer/v1/chunk-id"
	specLabelGearSeed  = "coffer/v1/gear-seed"
	specLabelWrap      = "coffer/v1/wrap"
	specPackHeaderTag  = "coffer/v1/pack-header"
	specPrefixSize     = 44
	specEntrySize      = 41
	specMaxRaw         = 128 << 20
	specMaxPackHeader  = 16 << 20
	specMaxSnapshot    = 16 << 20
	specMinPackSize    = 44 + 16 + 4
	specTagSize        = 16
	specMinSealedBlob  = 17
	specMaxXattrs      = 65536
	specWrappedKeySize = 1 + 32 + 32 + 16
)

// testKey returns a fixed key derived from a label, so tests and generated
// files never depend on crypto/rand for their keys.
func testKey(label string) seal.Key {
	return seal.Key(sha256.Sum256([]byte("coffer test key: " + label)))
}

// testID returns a fixed ID derived from a label.
func testID(label string) vault.ID {
	return vault.ID(sha256.Sum256([]byte("coffer test id: " + label)))
}

// dekSet is a DEKs function over a fixed map of versions.
func dekSet(m map[uint32]seal.Key) format.DEKs {
	return func(v uint32) (seal.Key, error) {
		k, ok := m[v]
		if !ok {
			return seal.Key{}, fmt.Errorf("DEK version %d: %w", v, vault.ErrKeyUnavailable)
		}
		return k, nil
	}
}

// testData returns n deterministic pseudo-random bytes.
func testData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x636f66666572))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// textData returns n bytes of compressible text.
func textData(seed uint64, n int) []byte {
	words := strings.Fields("the quick brown fox jumps over the lazy dog while coffer seals packs of blobs into a vault")
	r := rand.New(rand.NewPCG(seed, 7))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(" \n"[r.IntN(2)])
	}
	return b.Bytes()[:n]
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func mustID(tb testing.TB, s string) vault.ID {
	tb.Helper()
	id, err := vault.ParseID(s)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func mustKey(tb testing.TB, s string) seal.Key {
	tb.Helper()
	b := mustHex(tb, s)
	if len(b) != seal.KeySize {
		tb.Fatalf("key %q: %d bytes", s, len(b))
	}
	return seal.Key(b)
}

// outcome names the class of an error, as the vector files spell it.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, vault.ErrTruncated):
		return "truncated"
	case errors.Is(err, vault.ErrCorrupt):
		return "corrupt"
	case errors.Is(err, vault.ErrKeyUnavailable):
		return "key_unavailable"
	case errors.Is(err, seal.ErrWrongKey), errors.Is(err, vault.ErrWrongKey):
		return "wrong_key"
	}
	return "other: " + err.Error()
}

// wantOutcome fails unless err is of the class want.
func wantOutcome(tb testing.TB, what string, err error, want string) {
	tb.Helper()
	if got := outcome(err); got != want {
		tb.Errorf("%s: got %s (err %v), want %s", what, got, err, want)
	}
}

// --- An independent implementation of docs/format.md, for conformance ---
//
// Nothing below uses the package under test or internal/seal: keys come
// from crypto/hkdf, sealing from crypto/aes and crypto/cipher, layouts from
// the spec's tables.

func specDerive(secret, salt []byte, info string) []byte {
	k, err := hkdf.Key(sha256.New, secret, salt, info, 32)
	if err != nil {
		panic(err)
	}
	return k
}

func specAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// specNonce is N(offset): offset as a 96-bit big-endian integer.
func specNonce(offset uint64) []byte {
	n := make([]byte, 12)
	for i := 11; offset > 0; i-- {
		n[i] = byte(offset)
		offset >>= 8
	}
	return n
}

func specHeaderNonce() []byte { return bytes.Repeat([]byte{0xff}, 12) }

// specEntry is one entry of a pack header.
type specEntry struct {
	Type   byte
	ID     [32]byte
	Len    uint32 // sealed length
	RawLen uint32
}

// specPack builds packs from the spec, including malformed ones: the
// header's entries, magic and count can be edited before finish.
type specPack struct {
	Prefix      []byte
	Key         []byte
	Body        []byte // prefix, sealed blobs and any junk
	Entries     []specEntry
	HeaderMagic string
	Count       *uint32 // overrides len(Entries)
	HeaderExtra []byte  // appended to the header plaintext
}

func newSpecPack(dek []byte, dekVersion uint32, salt [32]byte) *specPack {
	p := &specPack{HeaderMagic: specPackHdrMagic}
	p.Prefix = append([]byte(specPackMagic), 0x01, 0, 0, 0)
	p.Prefix = binary.LittleEndian.AppendUint32(p.Prefix, dekVersion)
	p.Prefix = append(p.Prefix, salt[:]...)
	p.Key = specDerive(dek, salt[:], specLabelPack)
	p.Body = append([]byte(nil), p.Prefix...)
	return p
}

// blobAAD is P || type || ID.
func (p *specPack) blobAAD(typ byte, id [32]byte) []byte {
	aad := append([]byte(nil), p.Prefix...)
	aad = append(aad, typ)
	return append(aad, id[:]...)
}

// seal returns blob plaintext sealed as it would be at offset.
func (p *specPack) seal(offset int, typ byte, id [32]byte, plain []byte) []byte {
	return specAEAD(p.Key).Seal(nil, specNonce(uint64(offset)), plain, p.blobAAD(typ, id))
}

// Add seals a blob at the current end and lists it in the header.
func (p *specPack) Add(typ byte, id [32]byte, plain []byte, rawLen int) {
	ct := p.seal(len(p.Body), typ, id, plain)
	p.Body = append(p.Body, ct...)
	p.Entries = append(p.Entries, specEntry{Type: typ, ID: id, Len: uint32(len(ct)), RawLen: uint32(rawLen)})
}

// Junk appends n bytes that no header entry accounts for.
func (p *specPack) Junk(n int) { p.Body = append(p.Body, bytes.Repeat([]byte{0xa5}, n)...) }

func (p *specPack) headerPlain() []byte {
	h := []byte(p.HeaderMagic)
	n := uint32(len(p.Entries))
	if p.Count != nil {
		n = *p.Count
	}
	h = binary.LittleEndian.AppendUint32(h, n)
	for _, e := range p.Entries {
		h = append(h, e.Type)
		h = append(h, e.ID[:]...)
		h = binary.LittleEndian.AppendUint32(h, e.Len)
		h = binary.LittleEndian.AppendUint32(h, e.RawLen)
	}
	return append(h, p.HeaderExtra...)
}

// Finish appends the sealed header and its length.
func (p *specPack) Finish() []byte {
	aad := append(append([]byte(nil), p.Prefix...), specPackHeaderTag...)
	hdr := specAEAD(p.Key).Seal(nil, specHeaderNonce(), p.headerPlain(), aad)
	out := append(append([]byte(nil), p.Body...), hdr...)
	return binary.LittleEndian.AppendUint32(out, uint32(len(hdr)))
}

// specSnapshot seals a snapshot object from the spec (§8).
func specSnapshot(dek []byte, dekVersion uint32, salt [32]byte, id [32]byte, plain []byte) []byte {
	prefix := append([]byte(specSnapMagic), 0x01, 0, 0, 0)
	prefix = binary.LittleEndian.AppendUint32(prefix, dekVersion)
	prefix = append(prefix, salt[:]...)
	k := specDerive(dek, salt[:], specLabelSnapshot)
	aad := append(append([]byte(nil), prefix...), id[:]...)
	return specAEAD(k).Seal(prefix, make([]byte, 12), plain, aad)
}

// specOpenSnapshot opens a snapshot object from the spec (§8).
func specOpenSnapshot(dek []byte, id [32]byte, obj []byte) ([]byte, error) {
	if len(obj) < 44+16 {
		return nil, errors.New("short")
	}
	k := specDerive(dek, obj[12:44], specLabelSnapshot)
	aad := append(append([]byte(nil), obj[:44]...), id[:]...)
	return specAEAD(k).Open(nil, make([]byte, 12), obj[44:], aad)
}

// --- trees ---

// sampleTree has a node of every kind, xattrs, non-UTF-8 names, empty and
// extreme field values.
func sampleTree() *format.Tree {
	t := &format.Tree{Nodes: []format.Node{
		{Kind: format.KindFile, Name: []byte("a-file"), Perm: 0o644, UID: 1000, GID: 1000, Size: 3 << 20,
			MTime: 1700000000123456789, CTime: 1700000001000000000, Inode: 42, Device: 2049, NLink: 1,
			Content: []vault.ID{testID("c1"), testID("c2"), testID("c3")}},
		{Kind: format.KindFile, Name: []byte("empty"), Perm: 0o600, MTime: -1, CTime: -1 << 62, NLink: 2, Inode: 7, Device: 1},
		{Kind: format.KindDir, Name: []byte("dir"), Perm: 0o7755, UID: 1<<64 - 1, GID: 1 << 32, Subtree: testID("sub"),
			Xattrs: []format.Xattr{{Name: []byte("user.a"), Value: nil}, {Name: []byte("user.b"), Value: []byte("\x00\xff bin")}}},
		{Kind: format.KindSymlink, Name: []byte("link"), Perm: 0o777, Target: []byte("../some/where\xff")},
		{Kind: format.KindSymlink, Name: []byte("link-empty-target"), Perm: 0o777},
		{Kind: format.KindFIFO, Name: []byte("fifo"), Perm: 0o600, MTime: 1<<63 - 1, CTime: -1 << 63},
		{Kind: format.KindCharDev, Name: []byte("null"), Perm: 0o666, RDev: 0x103},
		{Kind: format.KindBlockDev, Name: []byte("sda"), Perm: 0o660, RDev: 1<<64 - 1},
		{Kind: format.KindSocket, Name: []byte("sock"), Perm: 0o755},
		{Kind: format.KindFile, Name: []byte("caf\xc3\xa9"), Perm: 0o644, Size: 1, Content: []vault.ID{testID("x")}},
		{Kind: format.KindFile, Name: []byte("latin1-\xe9\xff\x01"), Perm: 0o4755,
			Xattrs: []format.Xattr{{Name: []byte("security.capability"), Value: bytes.Repeat([]byte{1}, 300)}}},
		{Kind: format.KindDir, Name: []byte("\x7f.."), Perm: 0o1777, Subtree: testID("tmp")},
		{Kind: format.KindFIFO, Name: []byte("..."), Perm: 0},
		{Kind: format.KindFIFO, Name: []byte(".hidden"), Perm: 0o2000},
	}}
	t.Sort()
	return t
}

// specEncodeTree encodes a tree following §5 literally.
func specEncodeTree(t *format.Tree) []byte {
	uv := binary.AppendUvarint
	bs := func(b, v []byte) []byte { return append(uv(b, uint64(len(v))), v...) }
	b := append([]byte(specTreeMagic), 0x01)
	b = uv(b, uint64(len(t.Nodes)))
	for _, n := range t.Nodes {
		b = append(b, byte(n.Kind))
		b = bs(b, n.Name)
		for _, v := range []uint64{uint64(n.Perm), n.UID, n.GID, n.Size} {
			b = uv(b, v)
		}
		b = binary.AppendVarint(b, n.MTime)
		b = binary.AppendVarint(b, n.CTime)
		for _, v := range []uint64{n.Inode, n.Device, n.NLink, uint64(len(n.Xattrs))} {
			b = uv(b, v)
		}
		for _, x := range n.Xattrs {
			b = bs(bs(b, x.Name), x.Value)
		}
		switch n.Kind {
		case 1:
			b = uv(b, uint64(len(n.Content)))
			for _, id := range n.Content {
				b = append(b, id[:]...)
			}
		case 2:
			b = append(b, n.Subtree[:]...)
		case 3:
			b = bs(b, n.Target)
		case 5, 6:
			b = uv(b, n.RDev)
		}
	}
	return b
}

// dumpTree renders a tree as text, one node a line, for vector files and
// comparisons (nil and empty slices print alike, as they encode alike).
func dumpTree(t *format.Tree) string {
	var b strings.Builder
	for _, n := range t.Nodes {
		fmt.Fprintf(&b, "%s name=%x perm=%o uid=%d gid=%d size=%d mtime=%d ctime=%d ino=%d dev=%d nlink=%d",
			n.Kind, n.Name, n.Perm, n.UID, n.GID, n.Size, n.MTime, n.CTime, n.Inode, n.Device, n.NLink)
		for _, x := range n.Xattrs {
			fmt.Fprintf(&b, " xattr=%x:%x", x.Name, x.Value)
		}
		switch n.Kind {
		case format.KindFile:
			fmt.Fprintf(&b, " chunks=%d", len(n.Content))
			for _, id := range n.Content {
				fmt.Fprintf(&b, " %s", id)
			}
		case format.KindDir:
			fmt.Fprintf(&b, " subtree=%s", n.Subtree)
		case format.KindSymlink:
			fmt.Fprintf(&b, " target=%x", n.Target)
		case format.KindCharDev, format.KindBlockDev:
			fmt.Fprintf(&b, " rdev=%d", n.RDev)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func mustEncodeTree(tb testing.TB, t *format.Tree) []byte {
	tb.Helper()
	b, err := format.EncodeTree(nil, t)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// --- files ---

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// flip returns a copy of b with bit bit of byte i inverted.
func flip(b []byte, i, bit int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1 << bit
	return c
}

// readAll reads a pack's header, opens and decodes every blob, returning
// the first error.
func readAll(tb testing.TB, name vault.ID, pack []byte, keys format.DEKs, codec *format.Codec) error {
	tb.Helper()
	o, entries, err := format.ReadPackHeader(name, bytes.NewReader(pack), int64(len(pack)), keys)
	if err != nil {
		return err
	}
	for _, e := range entries {
		pt, err := o.Open(nil, e.Type, e.ID, e.Offset, pack[e.Offset:e.Offset+e.Length])
		if err != nil {
			return err
		}
		if _, err := codec.Decode(nil, pt, e.RawLen); err != nil {
			return err
		}
	}
	return nil
}
