package chunker

import (
	"bytes"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// countingAlloc tracks buffers so tests can check nothing is lost or freed
// twice.
type countingAlloc struct {
	live map[*byte]bool
}

func (a *countingAlloc) Alloc(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 0xAA // contents are arbitrary: make stale reads visible
	}
	a.live[&b[0]] = true
	return b
}

func (a *countingAlloc) Free(b []byte) {
	if !a.live[&b[:1][0]] {
		panic("free of a buffer not allocated, or freed twice")
	}
	delete(a.live, &b[:1][0])
}

// TestOwnedMatchesChunker: the Owned chunker cuts exactly where Chunker
// does, for every size and reader, and its chunks survive later calls.
func TestOwnedMatchesChunker(t *testing.T) {
	gear := Gear(testSeed)
	data := bigData()
	sizes := []int{0, 1, small.Min - 1, small.Min, small.Max, small.Max + 1, 5*small.Max + 17, 1 << 20, 4 << 20}
	for _, size := range sizes {
		for _, rd := range []string{"whole", "short"} {
			in := data[:size]
			newReader := func() io.Reader {
				if rd == "short" {
					return &shortReader{data: in, rng: rand.New(rand.NewPCG(uint64(size), 7)), max: 3000}
				}
				return bytes.NewReader(in)
			}
			want := lengths(chunkAll(t, mustNew(t, newReader(), testSeed, small)))
			a := &countingAlloc{live: map[*byte]bool{}}
			o, err := NewOwned(newReader(), gear, small, a, 3*small.Avg)
			if err != nil {
				t.Fatal(err)
			}
			var chunks [][]byte
			for {
				b, err := o.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				chunks = append(chunks, b) // kept, not copied
			}
			var got []int
			var joined []byte
			for _, c := range chunks {
				got = append(got, len(c)-Headroom)
				joined = append(joined, c[Headroom:]...)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("size %d %s: owned lengths %v, chunker %v", size, rd, got, want)
			}
			if !bytes.Equal(joined, in) {
				t.Fatalf("size %d %s: chunks do not reassemble the input", size, rd)
			}
			// Every allocated buffer is either handed out or the current one.
			o.Close()
			for _, c := range chunks {
				delete(a.live, &c[:1][0])
			}
			if len(a.live) != 0 {
				t.Fatalf("size %d %s: %d buffers neither handed out nor freed", size, rd, len(a.live))
			}
		}
	}
}

func TestOwnedDefaultParams(t *testing.T) {
	data := bigData()
	want := lengths(chunkAll(t, mustNew(t, bytes.NewReader(data), testSeed, DefaultParams())))
	a := &countingAlloc{live: map[*byte]bool{}}
	o, err := NewOwned(bytes.NewReader(data), Gear(testSeed), DefaultParams(), a, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for {
		b, err := o.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, len(b)-Headroom)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("owned lengths %v, chunker %v", got, want)
	}
}

type poolAlloc struct{}

func (poolAlloc) Alloc(n int) []byte { return make([]byte, n) }
func (poolAlloc) Free([]byte)        {}

func BenchmarkOwned(b *testing.B) {
	data := bigData()
	gear := Gear(testSeed)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		o, _ := NewOwned(bytes.NewReader(data), gear, DefaultParams(), poolAlloc{}, 3<<20)
		for {
			if _, err := o.Next(); err != nil {
				break
			}
		}
	}
}
