package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"testing"
	"unsafe"

	"github.com/coffer-backup/coffer/internal/store/storetest"
	"github.com/coffer-backup/coffer/internal/vault"
	"golang.org/x/sys/unix"
)

// TestConformanceDropReadCache runs the suite with reads dropping their
// pages: the advice must never change what a Get returns.
func TestConformanceDropReadCache(t *testing.T) {
	storetest.Run(t, func(t *testing.T) vault.Store {
		s := open(t)
		s.DropReadCache(true)
		return s
	})
}

// resident counts the pages of path held in the page cache.
func resident(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func TestDropReadCache(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	data := make([]byte, 4<<20)
	rand.Read(data)
	h := vault.Handle{Type: vault.PackObject, Name: "a1" + string(bytes.Repeat([]byte("0"), 62))}
	if err := s.Put(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	_, file, _ := s.paths(h)
	read := func(off, n int64) {
		t.Helper()
		rc, err := s.Get(ctx, h, off, n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data[off:off+n]) {
			t.Fatalf("read %d+%d: %v, data differs: %v", off, n, err, !bytes.Equal(got, data[off:off+n]))
		}
	}
	// Control: can this filesystem drop pages at all (tmpfs cannot)?
	read(0, int64(len(data)))
	f, _ := os.Open(file)
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
	if resident(t, file) != 0 {
		t.Skip("this filesystem keeps pages after FADV_DONTNEED")
	}

	read(0, int64(len(data))) // advice off: the pages stay
	if n := resident(t, file); n == 0 {
		t.Fatal("a plain read left no pages cached; the test cannot tell advice from none")
	}
	s.DropReadCache(true)
	page := int64(os.Getpagesize())
	read(page/2, 2*page) // the middle page only is wholly inside
	read(2*page, int64(len(data))-2*page)
	n := resident(t, file)
	// Page 0 (read only in part) stays; everything read whole is dropped.
	if n > 2 {
		t.Fatalf("%d pages still cached after reads with DropReadCache", n)
	}
}
