package format

import (
	"bytes"
	"errors"
	"runtime"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

// TestDecodeBoundedByRawLength: a small zstd frame that decodes to far
// more than the raw length its blob declares is refused without the
// output growing past that length, and a raw blob of another length is
// refused before it is copied.
func TestDecodeBoundedByRawLength(t *testing.T) {
	c := NewCodec()
	big := c.Encode(nil, make([]byte, 8<<20)) // 8 MiB of zeros: a few hundred bytes
	if big[0] != EncodingZstd || len(big) > 64<<10 {
		t.Fatalf("zeros encoded to %d bytes, encoding %d", len(big), big[0])
	}
	c.Decode(nil, big, 8<<20) // warm the decoder up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := c.Decode(nil, big, 4096)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("decode past the raw length: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("a blob declaring 4 KiB decoded into %d KiB", grew>>10)
	}
	if _, err := c.Decode(nil, append([]byte{EncodingRaw}, make([]byte, 100)...), 99); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("raw blob of the wrong length: %v", err)
	}
	// The result keeps the capacity of the buffer it was given.
	buf := make([]byte, 0, 16<<20)
	data := bytes.Repeat([]byte("coffer "), 1000)
	out, err := c.Decode(buf, c.Encode(nil, data), uint32(len(data)))
	if err != nil || !bytes.Equal(out, data) || cap(out) != cap(buf) {
		t.Errorf("decode into a large buffer: %v, equal %v, capacity %d", err, bytes.Equal(out, data), cap(out))
	}
}
