package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestWritePieces(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{0, 1, writePiece - 1, writePiece, writePiece + 1, 3*writePiece + 7} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + n)
		}
		off := int64(n % 4093)
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if err := writePieces(f, data, off); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n)
		if _, err := f.ReadAt(got, off); err != nil && n > 0 {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes at %d: read back differs", n, off)
		}
		if fi, _ := f.Stat(); n > 0 && fi.Size() != off+int64(n) {
			t.Fatalf("%d bytes at %d: size %d", n, off, fi.Size())
		}
	}
}
