package agent

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// zeroRuns is n bytes of random data with zero runs of random lengths
// (from 1 byte to several blocks) at random places.
func zeroRuns(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(255) + 1)
	}
	for range n / 3000 {
		at := rng.IntN(n)
		l := rng.IntN(3 * 4096)
		if rng.IntN(4) == 0 {
			l = rng.IntN(10)
		}
		clear(b[at:min(n, at+l)])
	}
	return b
}

// cleared zeroes n bytes of b at off.
func cleared(b []byte, off, n int) []byte {
	clear(b[off : off+n])
	return b
}

// TestWriteSparse checks which bytes writeSparse writes: it writes into a
// file full of 0xFF, so a byte left out still reads 0xFF. Exactly the
// zeros of the blocks (aligned in the file) that hold only zeros within
// the chunk must be left out; every other byte must be written.
func TestWriteSparse(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cases := []struct {
		name string
		data []byte
		off  int64
		blk  int
	}{
		{"empty", nil, 100, 4096},
		{"all zero, aligned", make([]byte, 3*4096), 4096, 4096},
		{"all zero, unaligned", make([]byte, 3*4096+5), 4000, 4096},
		{"one zero byte", []byte{0}, 7, 4096},
		{"one byte", []byte{9}, 4095, 4096},
		{"no zeros", bytes.Repeat([]byte{7}, 5*writePiece+3), 1, 4096},
		{"zero runs", zeroRuns(1, 300_000), 0, 4096},
		{"zero runs, unaligned", zeroRuns(2, 300_000), 12345, 4096},
		{"zero runs, 512 B blocks", zeroRuns(3, 100_000), 777, 512},
		{"zero runs, 64 KiB blocks", cleared(zeroRuns(4, 1<<20), 300_000, 200_000), 65535, 64 << 10},
		{"block size unknown", zeroRuns(5, 50_000), 3, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			blk := tc.blk
			if blk == 0 {
				blk = defaultHoleBlock
			}
			size := tc.off + int64(len(tc.data)) + 2*int64(blk)
			if err := f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, int(size)), 0); err != nil {
				t.Fatal(err)
			}
			if err := writeSparse(f, tc.data, tc.off, tc.blk); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, size)
			if _, err := f.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			want := bytes.Repeat([]byte{0xff}, int(size))
			copy(want[tc.off:], tc.data)
			skipped := 0
			for s := int64(0); s < int64(len(tc.data)); {
				// The chunk's part of the block the byte at s is in.
				e := min(int64(len(tc.data)), (tc.off+s)/int64(blk)*int64(blk)+int64(blk)-tc.off)
				if allZeroBytes(tc.data[s:e]) {
					copy(want[tc.off+s:tc.off+e], bytes.Repeat([]byte{0xff}, int(e-s)))
					skipped += int(e - s)
				}
				s = e
			}
			if i := firstDiff(got, want); i >= 0 {
				t.Fatalf("byte %d: %#x, want %#x (data covers %d..%d)", i, got[i], want[i], tc.off, tc.off+int64(len(tc.data)))
			}
			t.Logf("%d of %d bytes left out", skipped, len(tc.data))
		})
	}
}

// allZeroBytes is allZero's plain definition.
func allZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func TestAllZero(t *testing.T) {
	for n := range 100 {
		b := make([]byte, n)
		if !allZero(b) {
			t.Fatalf("%d zeros: not all zero", n)
		}
		for i := range n {
			b[i] = 1
			if allZero(b) {
				t.Fatalf("%d bytes, byte %d set: all zero", n, i)
			}
			b[i] = 0
		}
	}
}

// TestWriteSparseAnyOrder writes the chunks of a file with zero runs into a
// new file in a random order, several at once, as the restore workers do,
// and checks that the file reads back as the data.
func TestWriteSparseAnyOrder(t *testing.T) {
	data := cleared(zeroRuns(6, 2<<20), 1<<20, 300_000) // and a run of many blocks
	for seed := range uint64(5) {
		rng := rand.New(rand.NewPCG(seed, 2))
		var offs []int
		for off := 0; off < len(data); off += 1 + rng.IntN(100_000) {
			offs = append(offs, off)
		}
		offs = append(offs, len(data))
		order := rng.Perm(len(offs) - 1)
		f, err := os.Create(filepath.Join(t.TempDir(), "f"))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(order))
		for _, i := range order {
			wg.Go(func() {
				errs <- writeSparse(f, data[offs[i]:offs[i+1]], int64(offs[i]), 4096)
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(int64(len(data))); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f.Name())
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if i := firstDiff(got, data); i >= 0 {
			t.Fatalf("seed %d, %d chunks: byte %d differs", seed, len(order), i)
		}
	}
}

func chunk1MiB() []byte {
	b := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// BenchmarkAllZero is the cost of looking for zero blocks in a 1 MiB chunk
// block by block: in data (the common case) and in zeros (all of it read).
func BenchmarkAllZero(b *testing.B) {
	for _, bc := range []struct {
		name string
		data []byte
	}{{"data", chunk1MiB()}, {"zeros", make([]byte, 1<<20)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				for i := 0; i < len(bc.data); i += 4096 {
					if allZero(bc.data[i:i+4096]) != (bc.name == "zeros") {
						b.Fatal("wrong answer")
					}
				}
			}
		})
	}
}

// BenchmarkWriteChunk writes a 1 MiB chunk of data as the restore did
// before holes inside chunks (writePieces) and does now (writeSparse).
func BenchmarkWriteChunk(b *testing.B) {
	data := chunk1MiB()
	f, err := os.Create(filepath.Join(b.TempDir(), "f"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for _, bc := range []struct {
		name  string
		write func() error
	}{
		{"pieces", func() error { return writePieces(f, data, 12345) }},
		{"sparse", func() error { return writeSparse(f, data, 12345, 4096) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := bc.write(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestHoleBlock(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	want := int(st.Blksize)
	if want <= 0 || want&(want-1) != 0 {
		want = defaultHoleBlock
	}
	if got := holeBlock(f, 1<<30); got != want {
		t.Errorf("large file: hole block %d, want st_blksize %d", got, want)
	}
	if got := holeBlock(f, askBlockFrom-1); got != defaultHoleBlock {
		t.Errorf("small file: hole block %d, want %d", got, defaultHoleBlock)
	}
	f.Close()
	if got := holeBlock(f, 1<<30); got != defaultHoleBlock {
		t.Errorf("closed file: hole block %d, want %d", got, defaultHoleBlock)
	}
}
