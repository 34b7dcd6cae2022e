package format_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

const benchBlob = 1 << 20 // the default average chunk size

// goSource returns 1 MiB of Go source text: $(go env GOROOT)/src/net/http
// concatenated (repeated if short).
func goSource(b *testing.B) []byte {
	b.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Skipf("go env GOROOT: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "src", "net", "http", "*.go"))
	var buf bytes.Buffer
	for _, f := range files {
		d, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		buf.Write(d)
	}
	if buf.Len() == 0 {
		b.Skip("no Go source found")
	}
	for buf.Len() < benchBlob {
		buf.Write(buf.Bytes())
	}
	return buf.Bytes()[:benchBlob]
}

func benchInputs(b *testing.B) []struct {
	name string
	data []byte
} {
	return []struct {
		name string
		data []byte
	}{
		{"gosrc", goSource(b)},
		{"random", testData(1, benchBlob)},
	}
}

// BenchmarkPackWriterAdd seals 1 MiB blobs, a new pack every 16.
func BenchmarkPackWriterAdd(b *testing.B) {
	dek := testKey("bench dek")
	plain := append([]byte{format.EncodingRaw}, testData(1, benchBlob)...)
	id := vault.ID{1}
	buf := make([]byte, 0, 17<<20)
	w := format.NewPackWriter(dek, 1, buf)
	b.SetBytes(benchBlob)
	for b.Loop() {
		if w.Count() == 16 {
			w = format.NewPackWriter(dek, 1, buf)
		}
		w.Add(vault.DataBlob, id, plain, benchBlob)
	}
}

// BenchmarkOpenBlob authenticates and decrypts a 1 MiB blob.
func BenchmarkOpenBlob(b *testing.B) {
	dek := testKey("bench dek")
	w := format.NewPackWriter(dek, 1, nil)
	e := w.Add(vault.DataBlob, vault.ID{1}, append([]byte{0}, testData(1, benchBlob)...), benchBlob)
	name := w.ID()
	pack, _ := w.Finish()
	o, err := format.NewPackOpener(name, pack, dekSet(map[uint32]seal.Key{1: dek}))
	if err != nil {
		b.Fatal(err)
	}
	sealed := pack[e.Offset : e.Offset+e.Length]
	dst := make([]byte, 0, benchBlob+1)
	b.SetBytes(benchBlob)
	for b.Loop() {
		if _, err := o.Open(dst[:0], e.Type, e.ID, e.Offset, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCodecEncode(b *testing.B) {
	codec := format.NewCodec()
	for _, in := range benchInputs(b) {
		b.Run(in.name, func(b *testing.B) {
			dst := make([]byte, 0, len(in.data)+1024)
			b.SetBytes(int64(len(in.data)))
			for b.Loop() {
				dst = codec.Encode(dst, in.data)
			}
			b.ReportMetric(float64(len(dst))/float64(len(in.data)), "stored/raw")
		})
	}
}

func BenchmarkCodecDecode(b *testing.B) {
	codec := format.NewCodec()
	for _, in := range benchInputs(b) {
		b.Run(in.name, func(b *testing.B) {
			p := codec.Encode(nil, in.data)
			dst := make([]byte, 0, len(in.data))
			b.SetBytes(int64(len(in.data)))
			for b.Loop() {
				var err error
				if dst, err = codec.Decode(dst, p, uint32(len(in.data))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkIDHasher(b *testing.B) {
	h := format.NewIDHasher(testKey("bench chunk-id"))
	data := testData(1, benchBlob)
	b.SetBytes(benchBlob)
	for b.Loop() {
		h.ID(data)
	}
}

// benchTree is a directory of n files, one chunk each.
func benchTree(n int) *format.Tree {
	t := &format.Tree{}
	for i := range n {
		t.Nodes = append(t.Nodes, format.Node{Kind: format.KindFile, Name: fmt.Appendf(nil, "file-%06d.txt", i),
			Perm: 0o644, UID: 1000, GID: 1000, Size: 4096, MTime: 1700000000000000000 + int64(i), CTime: 1700000000000000000,
			Inode: uint64(1000 + i), Device: 2049, NLink: 1, Content: []vault.ID{testID(fmt.Sprint(i))}})
	}
	return t
}

func BenchmarkEncodeTree(b *testing.B) {
	t := benchTree(1000)
	enc, _ := format.EncodeTree(nil, t)
	dst := make([]byte, 0, len(enc))
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		dst, _ = format.EncodeTree(dst[:0], t)
	}
}

func BenchmarkDecodeTree(b *testing.B) {
	enc, _ := format.EncodeTree(nil, benchTree(1000))
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := format.DecodeTree(enc); err != nil {
			b.Fatal(err)
		}
	}
}
