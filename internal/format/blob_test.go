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
	small := make([]byte, 10)
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

// TestCodecProbe checks the writer rule of §3: a blob of 256 KiB or more
// whose first 64 KiB do not shrink by 1/32 is stored raw without a full
// zstd pass; smaller blobs are always tried whole.
func TestCodecProbe(t *testing.T) {
	codec := format.NewCodec()
	const probe = 64 << 10
	mixed := func(n int) []byte { // random first 64 KiB, compressible rest
		return append(testData(1, probe), textData(2, n-probe)...)
	}
	for _, c := range []struct {
		name string
		data []byte
		enc  byte
	}{
		{"256 KiB, random sample, text after", mixed(256 << 10), format.EncodingRaw},
		{"1 MiB, random sample, text after", mixed(1 << 20), format.EncodingRaw},
		{"256 KiB - 1, random start, text after: no probe", mixed(256<<10 - 1), format.EncodingZstd},
		{"256 KiB text", textData(3, 256<<10), format.EncodingZstd},
		{"1 MiB text after 32 KiB of random: sample shrinks", append(testData(4, 32<<10), textData(5, 1<<20-32<<10)...), format.EncodingZstd},
		{"1 MiB random", testData(6, 1<<20), format.EncodingRaw},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := codec.Encode(nil, c.data)
			if p[0] != c.enc {
				t.Errorf("encoding %d, want %d", p[0], c.enc)
			}
			if out, err := codec.Decode(nil, p, uint32(len(c.data))); err != nil || !bytes.Equal(out, c.data) {
				t.Errorf("round trip: %v", err)
			}
		})
	}
}

// TestCodecEncodeFramed: EncodeFramed gives the same blob plaintext as
// Encode, and returns the framed buffer itself, uncopied, when raw.
func TestCodecEncodeFramed(t *testing.T) {
	codec := format.NewCodec()
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"one byte", []byte{7}},
		{"random 4 KiB", testData(1, 4<<10)},
		{"random 1 MiB (probe)", testData(2, 1<<20)},
		{"text 100 KiB", textData(3, 100<<10)},
		{"text 1 MiB", textData(4, 1<<20)},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := codec.Encode(nil, c.data)
			framed := append([]byte{0xee}, c.data...)
			for _, dst := range [][]byte{nil, make([]byte, 5), make([]byte, 0, 2<<20)} {
				got := codec.EncodeFramed(dst, framed)
				if !bytes.Equal(got, want) {
					t.Fatalf("EncodeFramed differs from Encode: encoding %d vs %d, %d vs %d bytes", got[0], want[0], len(got), len(want))
				}
				if got[0] == format.EncodingRaw && &got[0] != &framed[0] {
					t.Error("raw result is a copy, not the framed buffer")
				}
				if !bytes.Equal(framed[1:], c.data) {
					t.Fatal("EncodeFramed changed the data")
				}
				out, err := codec.Decode(nil, got, uint32(len(c.data)))
				if err != nil || !bytes.Equal(out, c.data) {
					t.Fatalf("round trip: %v", err)
				}
			}
		})
	}
}
