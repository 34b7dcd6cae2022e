package format_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/coffer-backup/coffer/internal/format"
)

func TestCodecRoundTrip(t *testing.T) {
	codec := format.NewCodec()
	for _, c := range []struct {
		name string
		data []byte
		enc  byte
	}{
		{"nil", nil, format.EncodingRaw},
		{"empty", []byte{}, format.EncodingRaw},
		{"one byte", []byte{'a'}, format.EncodingRaw},
		{"random 1 KiB", testData(1, 1<<10), format.EncodingRaw},
		{"random 1 MiB", testData(2, 1<<20), format.EncodingRaw},
		{"text 100 KiB", textData(3, 100<<10), format.EncodingZstd},
		{"zeros 1 MiB", make([]byte, 1<<20), format.EncodingZstd},
		{"zeros 8 MiB", make([]byte, 8<<20), format.EncodingZstd},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := codec.Encode(nil, c.data)
			if p[0] != c.enc {
				t.Fatalf("encoding %d, want %d", p[0], c.enc)
			}
			if c.enc == format.EncodingZstd && len(p) >= len(c.data) {
				t.Errorf("compressible data did not shrink: %d -> %d", len(c.data), len(p))
			}
			if c.enc == format.EncodingRaw && len(p) != len(c.data)+1 {
				t.Errorf("raw blob is %d bytes for %d", len(p), len(c.data))
			}
			got, err := codec.Decode(nil, p, uint32(len(c.data)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.data) {
				t.Error("round trip differs")
			}
		})
	}
}

// TestCodecBuffers: Encode and Decode write into dst[:0], whatever dst held.
func TestCodecBuffers(t *testing.T) {
	codec := format.NewCodec()
	text := textData(1, 50000)
	dst := bytes.Repeat([]byte{0xee}, 100)
	p := codec.Encode(dst, text)
	if p[0] != format.EncodingZstd {
		t.Fatal("not compressed")
	}
	p = bytes.Clone(p)
	small := make([]byte, 10, 10)
	out, err := codec.Decode(small, p, uint32(len(text)))
	if err != nil || !bytes.Equal(out, text) {
		t.Fatalf("decode into a small buffer: %v", err)
	}
	big := make([]byte, 7, 1<<20)
	out, err = codec.Decode(big, p, uint32(len(text)))
	if err != nil || !bytes.Equal(out, text) {
		t.Fatalf("decode into a large buffer: %v", err)
	}
	if &out[0] != &big[:1][0] {
		t.Error("Decode did not reuse a large enough dst")
	}
	rnd := testData(2, 5000)
	p = codec.Encode(make([]byte, 3, 6000), rnd)
	if p[0] != format.EncodingRaw || !bytes.Equal(p[1:], rnd) {
		t.Error("raw fallback into a reused buffer")
	}
}

func TestCodecDecodeRejects(t *testing.T) {
	codec := format.NewCodec()
	text := textData(1, 10000)
	z := codec.Encode(nil, text)
	if z[0] != format.EncodingZstd {
		t.Fatal("not compressed")
	}
	zlen := uint32(len(text))
	enc, _ := zstd.NewWriter(nil)
	twoFrames := append(enc.EncodeAll(text[:10], []byte{1}), enc.EncodeAll(text[10:20], nil)...)
	for _, c := range []struct {
		name   string
		p      []byte
		rawLen uint32
	}{
		{"empty", nil, 0},
		{"raw, raw length short", []byte("\x00abc"), 2},
		{"raw, raw length long", []byte("\x00abc"), 4},
		{"raw, raw length above 128 MiB", []byte("\x00abc"), specMaxRaw + 1},
		{"zstd, raw length short", z, zlen - 1},
		{"zstd, raw length long", z, zlen + 1},
		{"zstd, raw length 0", z, 0},
		{"zstd, raw length above 128 MiB", z, specMaxRaw + 1},
		{"encoding 2", append([]byte{2}, z[1:]...), zlen},
		{"encoding 0xff", []byte{0xff}, 0},
		{"garbage zstd", append([]byte{1}, testData(3, 100)...), 100},
		{"zstd magic then garbage", append([]byte{1, 0x28, 0xb5, 0x2f, 0xfd}, testData(4, 100)...), 100},
		{"zstd truncated", z[:len(z)-1], zlen},
		{"zstd truncated to the magic", z[:5], zlen},
		{"zstd bit flipped", flip(z, len(z)/2, 3), zlen},
		{"two frames, first frame's length", twoFrames, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := codec.Decode(nil, c.p, c.rawLen)
			if err == nil {
				t.Fatalf("accepted, %d bytes", len(out))
			}
			wantOutcome(t, "Decode", err, "corrupt")
		})
	}
}

func TestCodecConcurrent(t *testing.T) {
	codec := format.NewCodec()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				data := textData(uint64(g*100+i), 20000+i)
				got, err := codec.Decode(nil, codec.Encode(nil, data), uint32(len(data)))
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
