package format

import (
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Blob encodings (docs/format.md §3).
const (
	EncodingRaw  = 0x00
	EncodingZstd = 0x01
)

// Codec compresses and decompresses blob payloads. It is safe for
// concurrent use.
type Codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// NewCodec returns a codec using zstd at its fastest level: on the backup
// path compression must keep pace with chunking and sealing on one core.
func NewCodec() *Codec {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		// EncodeAll takes one of this many encoder states and blocks while
		// none is free: one per core, or compression serialises the backup.
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithLowerEncoderMem(true),
		zstd.WithWindowSize(1<<20),
		// Blobs are authenticated by GCM and checked against their keyed
		// BLAKE3 ID: a frame checksum would only cost time.
		zstd.WithEncoderCRC(false),
		zstd.WithZeroFrames(true))
	if err != nil {
		panic("format: zstd encoder: " + err.Error()) // only on invalid options
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		// DecodeAll never grows its output past dst's capacity: Decode
		// gives it exactly the raw length, so that a small frame cannot
		// decode to more than the length its blob declares.
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(MaxBlobRawSize),
		zstd.WithDecoderMaxWindow(MaxBlobRawSize))
	if err != nil {
		panic("format: zstd decoder: " + err.Error())
	}
	return &Codec{enc: enc, dec: dec}
}

// probeSize is how much of a large blob is test-compressed first: data
// that does not shrink there (media, archives, encrypted files) is stored
// raw without spending a full zstd pass on it.
const probeSize = 64 << 10

// incompressible reports whether a sample of data fails to shrink by 3%.
func (c *Codec) incompressible(data []byte, scratch []byte) bool {
	if len(data) < 4*probeSize {
		return false
	}
	out := c.enc.EncodeAll(data[:probeSize], scratch[:0])
	return len(out) > probeSize-probeSize/32
}

// Encode appends the blob plaintext of data (encoding byte, payload) to
// dst[:0]. It stores data raw when zstd does not make it smaller.
func (c *Codec) Encode(dst, data []byte) []byte {
	if cap(dst) < len(data)+1 {
		// Room for the raw fallback, so a failed compression never regrows.
		dst = make([]byte, 0, len(data)+1+len(data)/64+64)
	}
	dst = append(dst[:0], EncodingZstd)
	if !c.incompressible(data, dst[1:]) {
		out := c.enc.EncodeAll(data, dst)
		if len(out) < len(data)+1 {
			return out
		}
	}
	out := append(dst[:0], EncodingRaw)
	return append(out, data...)
}

// EncodeFramed is Encode for data held in framed[1:], with framed[0] free:
// when the data is stored raw it returns framed itself (with the raw
// encoding byte set) and copies nothing; otherwise the compressed blob in
// dst.
func (c *Codec) EncodeFramed(dst, framed []byte) []byte {
	data := framed[1:]
	if cap(dst) < len(data)+1 {
		dst = make([]byte, 0, len(data)+len(data)/64+64)
	}
	dst = append(dst[:0], EncodingZstd)
	if !c.incompressible(data, dst[1:]) {
		out := c.enc.EncodeAll(data, dst)
		if len(out) < len(data)+1 {
			return out
		}
	}
	framed[0] = EncodingRaw
	return framed
}

// Decode appends the decoded data of blob plaintext p to dst[:0] and checks
// its length against rawLen.
func (c *Codec) Decode(dst, p []byte, rawLen uint32) ([]byte, error) {
	if len(p) < 1 {
		return nil, fmt.Errorf("%w: empty blob", vault.ErrCorrupt)
	}
	if rawLen > MaxBlobRawSize {
		return nil, fmt.Errorf("%w: blob raw length %d too large", vault.ErrCorrupt, rawLen)
	}
	var out []byte
	switch p[0] {
	case EncodingRaw:
		if len(p)-1 != int(rawLen) {
			return nil, fmt.Errorf("%w: blob decodes to %d bytes, index says %d", vault.ErrCorrupt, len(p)-1, rawLen)
		}
		out = append(dst[:0], p[1:]...)
	case EncodingZstd:
		if cap(dst) < int(rawLen) {
			dst = make([]byte, 0, rawLen)
		}
		var err error
		// At most rawLen bytes (the decoder is limited to the capacity
		// it is given); the result keeps dst's capacity for reuse.
		out, err = c.dec.DecodeAll(p[1:], dst[:0:rawLen])
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", vault.ErrCorrupt, err)
		}
		if len(out) > 0 && &out[0] == &dst[:1][0] {
			out = dst[:len(out)]
		}
	default:
		return nil, fmt.Errorf("%w: unknown blob encoding %d", vault.ErrCorrupt, p[0])
	}
	if len(out) != int(rawLen) {
		return nil, fmt.Errorf("%w: blob decodes to %d bytes, index says %d", vault.ErrCorrupt, len(out), rawLen)
	}
	return out, nil
}
