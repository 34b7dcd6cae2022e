// Package format provides Coffer's on-store encodings: packs of sealed
// blobs, blob compression, trees, snapshots, the vault config and the
// keyring (docs/format.md). Everything read from a store is untrusted:
// decoders return errors wrapping vault.ErrCorrupt or vault.ErrTruncated
// and never panic.
package format

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Pack layout constants (docs/format.md §4).
const (
	PackMagic        = "CFPK"
	PackHeaderMagic  = "CFPH"
	PackVersion      = 0x01
	PackPrefixSize   = 44
	PackTargetSize   = 16 << 20 // packs are closed before they would exceed it
	MaxBlobRawSize   = 128 << 20
	MaxPackHeader    = 16 << 20
	packEntrySize    = 1 + vault.IDSize + 4 + 4
	packHeaderAADTag = "coffer/v1/pack-header"
	minPackSize      = PackPrefixSize + seal.Overhead + 4
)

// headerNonce is all ones: blob nonces are offsets below 2^32, so it never
// collides with one (docs/format.md §4).
var headerNonce = bytes.Repeat([]byte{0xff}, seal.NonceSize)

// PackEntry locates one sealed blob in a pack.
type PackEntry struct {
	Type   vault.BlobType
	ID     vault.ID
	Offset uint32
	Length uint32 // sealed length
	RawLen uint32
}

// DEKs returns the DEK of a version, or an error (vault.ErrKeyUnavailable)
// when it cannot be had.
type DEKs func(version uint32) (seal.Key, error)

// PackWriter builds one pack in memory.
type PackWriter struct {
	dekVer  uint32
	aead    cipher.AEAD
	buf     []byte
	entries []PackEntry
	id      vault.ID
	aad     []byte
}

// NewPackWriter starts a pack sealed with dek (of version dekVersion) into
// buf[:0] (pass a reused buffer to avoid allocation).
func NewPackWriter(dek seal.Key, dekVersion uint32, buf []byte) *PackWriter {
	w := &PackWriter{dekVer: dekVersion}
	rand.Read(w.id[:]) // the salt is the pack's name
	w.buf = append(buf[:0], PackMagic...)
	w.buf = append(w.buf, PackVersion, 0, 0, 0)
	w.buf = binary.LittleEndian.AppendUint32(w.buf, dekVersion)
	w.buf = append(w.buf, w.id[:]...)
	k := seal.Derive(dek, w.id[:], seal.LabelPack)
	w.aead = seal.NewAEAD(k)
	k.Wipe()
	w.aad = make([]byte, PackPrefixSize+1+vault.IDSize)
	copy(w.aad, w.buf)
	return w
}

// DEKVersion is the version of the DEK sealing the pack.
func (w *PackWriter) DEKVersion() uint32 { return w.dekVer }

// ID is the pack's name (its salt).
func (w *PackWriter) ID() vault.ID { return w.id }

// Size is the number of bytes written so far.
func (w *PackWriter) Size() int { return len(w.buf) }

// SizeWith is the size the finished pack would have with one more blob
// of sealed length sealedLen: prefix, sealed blobs, the sealed header with
// every entry, and its 4-byte length (docs/format.md §4).
func (w *PackWriter) SizeWith(sealedLen int) int {
	return len(w.buf) + sealedLen + 8 + (len(w.entries)+1)*packEntrySize + seal.Overhead + 4
}

// Count is the number of blobs added.
func (w *PackWriter) Count() int { return len(w.entries) }

// Add seals one blob. plain is the blob plaintext (encoding byte and
// payload, see EncodeBlob); rawLen its decoded length.
func (w *PackWriter) Add(t vault.BlobType, id vault.ID, plain []byte, rawLen int) PackEntry {
	off := len(w.buf)
	if off > 1<<32-1-len(plain)-seal.Overhead || rawLen > MaxBlobRawSize {
		panic("format: pack or blob too large") // the caller closes packs at PackTargetSize
	}
	if need := len(plain) + seal.Overhead; cap(w.buf)-off < need {
		// Grow by doubling: Seal appending to a full buffer would
		// allocate exactly what it needs and copy the whole pack, once
		// per blob, and a pack of small blobs (trees) would cost the
		// square of its size in copies and fresh pages.
		nb := make([]byte, off, max(2*cap(w.buf), off+need))
		copy(nb, w.buf)
		w.buf = nb
	}
	nonce := seal.CounterNonce(uint64(off)) // unique: offsets strictly increase within a pack
	w.aad[PackPrefixSize] = byte(t)
	copy(w.aad[PackPrefixSize+1:], id[:])
	w.buf = w.aead.Seal(w.buf, nonce[:], plain, w.aad)
	e := PackEntry{Type: t, ID: id, Offset: uint32(off), Length: uint32(len(w.buf) - off), RawLen: uint32(rawLen)}
	w.entries = append(w.entries, e)
	return e
}

// Finish appends the sealed header and returns the whole pack and its
// entries. The writer must not be used afterwards.
func (w *PackWriter) Finish() ([]byte, []PackEntry) {
	hdr := make([]byte, 0, 8+len(w.entries)*packEntrySize)
	hdr = append(hdr, PackHeaderMagic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(w.entries)))
	for _, e := range w.entries {
		hdr = append(hdr, byte(e.Type))
		hdr = append(hdr, e.ID[:]...)
		hdr = binary.LittleEndian.AppendUint32(hdr, e.Length)
		hdr = binary.LittleEndian.AppendUint32(hdr, e.RawLen)
	}
	start := len(w.buf)
	w.buf = w.aead.Seal(w.buf, headerNonce, hdr, headerAAD(w.buf[:PackPrefixSize]))
	w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(len(w.buf)-start))
	return w.buf, w.entries
}

func headerAAD(prefix []byte) []byte {
	aad := make([]byte, 0, PackPrefixSize+len(packHeaderAADTag))
	return append(append(aad, prefix[:PackPrefixSize]...), packHeaderAADTag...)
}

// PackOpener opens the blobs of one pack.
type PackOpener struct {
	id         vault.ID
	aead       cipher.AEAD
	aad        []byte
	DEKVersion uint32
}

// NewPackOpener checks a pack's prefix (its first 44 bytes) against the
// pack's name and derives its key.
func NewPackOpener(id vault.ID, prefix []byte, keys DEKs) (*PackOpener, error) {
	if len(prefix) < PackPrefixSize {
		return nil, fmt.Errorf("pack %s: %w: %d bytes", id, vault.ErrTruncated, len(prefix))
	}
	p := prefix[:PackPrefixSize]
	if string(p[:4]) != PackMagic {
		return nil, fmt.Errorf("pack %s: %w: bad magic", id, vault.ErrCorrupt)
	}
	if p[4] != PackVersion {
		return nil, fmt.Errorf("pack %s: %w: unknown format version %d", id, vault.ErrCorrupt, p[4])
	}
	if p[5]|p[6]|p[7] != 0 {
		return nil, fmt.Errorf("pack %s: %w: reserved bytes set", id, vault.ErrCorrupt)
	}
	if !bytes.Equal(p[12:44], id[:]) {
		return nil, fmt.Errorf("pack %s: %w: salt does not match the pack name", id, vault.ErrCorrupt)
	}
	ver := binary.LittleEndian.Uint32(p[8:12])
	dek, err := keys(ver)
	if err != nil {
		return nil, fmt.Errorf("pack %s: DEK version %d: %w", id, ver, err)
	}
	k := seal.Derive(dek, id[:], seal.LabelPack)
	o := &PackOpener{id: id, aead: seal.NewAEAD(k), DEKVersion: ver}
	k.Wipe()
	o.aad = make([]byte, PackPrefixSize+1+vault.IDSize)
	copy(o.aad, p)
	return o, nil
}

// Open authenticates and decrypts one sealed blob, appending its plaintext
// (encoding byte and payload) to dst.
func (o *PackOpener) Open(dst []byte, t vault.BlobType, id vault.ID, offset uint32, sealed []byte) ([]byte, error) {
	if len(sealed) < seal.Overhead+1 {
		return nil, fmt.Errorf("pack %s: blob %s: %w", o.id, id, vault.ErrTruncated)
	}
	nonce := seal.CounterNonce(uint64(offset))
	aad := make([]byte, len(o.aad))
	copy(aad, o.aad)
	aad[PackPrefixSize] = byte(t)
	copy(aad[PackPrefixSize+1:], id[:])
	out, err := o.aead.Open(dst, nonce[:], sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("pack %s: blob %s at offset %d: %w: authentication failed", o.id, id, offset, vault.ErrCorrupt)
	}
	return out, nil
}

// ReadPackHeader reads and authenticates the header of the pack id, of
// size bytes, through r. It returns the opener and the entries with their
// offsets.
func ReadPackHeader(id vault.ID, r io.ReaderAt, size int64, keys DEKs) (*PackOpener, []PackEntry, error) {
	if size < minPackSize {
		return nil, nil, fmt.Errorf("pack %s: %w: %d bytes", id, vault.ErrTruncated, size)
	}
	prefix := make([]byte, PackPrefixSize)
	if _, err := r.ReadAt(prefix, 0); err != nil {
		return nil, nil, fmt.Errorf("pack %s: read prefix: %w", id, readErr(err))
	}
	o, err := NewPackOpener(id, prefix, keys)
	if err != nil {
		return nil, nil, err
	}
	var lb [4]byte
	if _, err := r.ReadAt(lb[:], size-4); err != nil {
		return nil, nil, fmt.Errorf("pack %s: read header length: %w", id, readErr(err))
	}
	h := int64(binary.LittleEndian.Uint32(lb[:]))
	if h > size-PackPrefixSize-4 || h > MaxPackHeader || h < seal.Overhead+8 {
		return nil, nil, fmt.Errorf("pack %s: %w: header length %d does not fit a %d-byte pack", id, vault.ErrCorrupt, h, size)
	}
	sealed := make([]byte, h)
	if _, err := r.ReadAt(sealed, size-4-h); err != nil {
		return nil, nil, fmt.Errorf("pack %s: read header: %w", id, readErr(err))
	}
	hdr, err := o.aead.Open(sealed[:0], headerNonce, sealed, headerAAD(prefix))
	if err != nil {
		return nil, nil, fmt.Errorf("pack %s: %w: header authentication failed", id, vault.ErrCorrupt)
	}
	entries, err := parsePackHeader(hdr, uint64(size-4-h))
	if err != nil {
		return nil, nil, fmt.Errorf("pack %s: %w", id, err)
	}
	return o, entries, nil
}

// parsePackHeader decodes an authenticated header plaintext; blobsEnd is
// where the sealed header starts.
func parsePackHeader(hdr []byte, blobsEnd uint64) ([]PackEntry, error) {
	if len(hdr) < 8 || string(hdr[:4]) != PackHeaderMagic {
		return nil, fmt.Errorf("%w: bad header magic", vault.ErrCorrupt)
	}
	n := binary.LittleEndian.Uint32(hdr[4:8])
	if uint64(n)*packEntrySize != uint64(len(hdr)-8) {
		return nil, fmt.Errorf("%w: header lists %d blobs in %d bytes", vault.ErrCorrupt, n, len(hdr)-8)
	}
	entries := make([]PackEntry, n)
	off := uint64(PackPrefixSize)
	p := hdr[8:]
	for i := range entries {
		e := &entries[i]
		e.Type = vault.BlobType(p[0])
		copy(e.ID[:], p[1:33])
		e.Length = binary.LittleEndian.Uint32(p[33:37])
		e.RawLen = binary.LittleEndian.Uint32(p[37:41])
		p = p[packEntrySize:]
		if e.Type != vault.DataBlob && e.Type != vault.TreeBlob {
			return nil, fmt.Errorf("%w: blob %d has unknown type %d", vault.ErrCorrupt, i, e.Type)
		}
		if e.Length < seal.Overhead+1 || e.RawLen > MaxBlobRawSize {
			return nil, fmt.Errorf("%w: blob %d has impossible sizes", vault.ErrCorrupt, i)
		}
		e.Offset = uint32(off)
		off += uint64(e.Length)
		if off > blobsEnd {
			return nil, fmt.Errorf("%w: blobs overrun the header", vault.ErrCorrupt)
		}
	}
	if off != blobsEnd {
		return nil, fmt.Errorf("%w: %d unaccounted bytes before the header", vault.ErrCorrupt, blobsEnd-off)
	}
	return entries, nil
}

func readErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: %v", vault.ErrTruncated, err)
	}
	return err
}

// PackHeader returns the sealed header of a finished pack: the H bytes
// before its last 4 (docs/format.md §4), which the catalog keeps as the
// pack's blob list (§4.1). It returns nil for bytes that are no pack.
func PackHeader(pack []byte) []byte {
	if len(pack) < minPackSize {
		return nil
	}
	h := uint64(binary.LittleEndian.Uint32(pack[len(pack)-4:]))
	if h > uint64(len(pack)-PackPrefixSize-4) {
		return nil
	}
	return pack[len(pack)-4-int(h) : len(pack)-4]
}

// ReadSealedPackHeader is ReadPackHeader that also returns the sealed
// header's bytes, for the catalog's copy (docs/format.md §4.1).
func ReadSealedPackHeader(id vault.ID, r io.ReaderAt, size int64, keys DEKs) ([]PackEntry, []byte, error) {
	if size < minPackSize {
		return nil, nil, fmt.Errorf("pack %s: %w: %d bytes", id, vault.ErrTruncated, size)
	}
	var lb [4]byte
	if _, err := r.ReadAt(lb[:], size-4); err != nil {
		return nil, nil, fmt.Errorf("pack %s: read header length: %w", id, readErr(err))
	}
	h := int64(binary.LittleEndian.Uint32(lb[:]))
	if h > size-PackPrefixSize-4 || h > MaxPackHeader || h < seal.Overhead+8 {
		return nil, nil, fmt.Errorf("pack %s: %w: header length %d does not fit a %d-byte pack", id, vault.ErrCorrupt, h, size)
	}
	prefix := make([]byte, PackPrefixSize)
	if _, err := r.ReadAt(prefix, 0); err != nil {
		return nil, nil, fmt.Errorf("pack %s: read prefix: %w", id, readErr(err))
	}
	sealed := make([]byte, h)
	if _, err := r.ReadAt(sealed, size-4-h); err != nil {
		return nil, nil, fmt.Errorf("pack %s: read header: %w", id, readErr(err))
	}
	if _, err := NewPackOpener(id, prefix, keys); err != nil {
		return nil, nil, err
	}
	entries, err := OpenPackHeader(id, binary.LittleEndian.Uint32(prefix[8:12]), size, sealed, keys)
	if err != nil {
		return nil, nil, err
	}
	return entries, sealed, nil
}

// OpenPackHeader authenticates and parses the catalog's copy of the
// sealed header of pack id (docs/format.md §4.1), whose record gives its
// DEK version and size, and returns the pack's entries with their
// offsets. The prefix it authenticates against is rebuilt from the
// record, so a header opens only as the pack it was written for.
func OpenPackHeader(id vault.ID, dekVersion uint32, size int64, sealed []byte, keys DEKs) ([]PackEntry, error) {
	h := int64(len(sealed))
	if size < minPackSize || h > size-PackPrefixSize-4 || h > MaxPackHeader || h < seal.Overhead+8 {
		return nil, fmt.Errorf("pack %s: %w: a %d-byte header copy does not fit a %d-byte pack", id, vault.ErrCorrupt, h, size)
	}
	var prefix [PackPrefixSize]byte
	copy(prefix[:], PackMagic)
	prefix[4] = PackVersion
	binary.LittleEndian.PutUint32(prefix[8:12], dekVersion)
	copy(prefix[12:], id[:])
	dek, err := keys(dekVersion)
	if err != nil {
		return nil, fmt.Errorf("pack %s: DEK version %d: %w", id, dekVersion, err)
	}
	k := seal.Derive(dek, id[:], seal.LabelPack)
	aead := seal.NewAEAD(k)
	k.Wipe()
	hdr, err := aead.Open(nil, headerNonce, sealed, headerAAD(prefix[:]))
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w: the catalog's copy of its header does not authenticate", id, vault.ErrCorrupt)
	}
	entries, err := parsePackHeader(hdr, uint64(size-4-h))
	if err != nil {
		return nil, fmt.Errorf("pack %s: the catalog's copy of its header: %w", id, err)
	}
	return entries, nil
}
