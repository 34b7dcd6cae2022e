package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// sparseFile is a test file: data pieces at offsets, the rest holes up to
// size.
type sparseFile struct {
	name  string
	size  int64
	data  map[int64][]byte
	dense bool // write the zeros too: a file with zero runs, not holes
	// maxAlloc bounds the restored file's allocated bytes.
	maxAlloc int64
}

func (sf sparseFile) create(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, sf.name)
	if sf.dense {
		b := make([]byte, sf.size)
		for off, d := range sf.data {
			copy(b[off:], d)
		}
		write(t, p, b)
		return p
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off, d := range sf.data {
		if _, err := f.WriteAt(d, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(sf.size); err != nil {
		t.Fatal(err)
	}
	return p
}

// allocated is the space a file takes on disk.
func allocated(t testing.TB, p string) int64 {
	t.Helper()
	return lstatT(t, p).Blocks * 512
}

// holesSupported reports whether dir's file system keeps holes: a probe
// file of 64 MiB with 4 KiB written at each end must take under 1 MiB.
func holesSupported(t testing.TB, dir string) bool {
	t.Helper()
	p := filepath.Join(dir, ".sparse-probe")
	sparseFile{name: ".sparse-probe", size: 64<<20 + 8<<10,
		data: map[int64][]byte{0: randBytes(1, 4<<10), 64<<20 + 4<<10: randBytes(2, 4<<10)}}.create(t, dir)
	defer os.Remove(p)
	return allocated(t, p) < 1<<20
}

// TestRestoreSparse backs up files with holes and with zero runs inside
// chunks, restores them (fresh, and over files full of 0xFF with
// --overwrite) and checks the contents byte for byte and that the zeros
// came back as holes.
func TestRestoreSparse(t *testing.T) {
	const mib = 1 << 20
	files := []sparseFile{
		{name: "vm.img", size: 64*mib + 8<<10, maxAlloc: mib,
			data: map[int64][]byte{0: randBytes(10, 4<<10), 64*mib + 4<<10: randBytes(11, 4<<10)}},
		{name: "zero-run", size: 4 * mib, dense: true, maxAlloc: 2*mib + 256<<10,
			data: map[int64][]byte{0: randBytes(12, mib), 3 * mib: randBytes(13, mib)}},
		{name: "trailing-hole", size: 16*mib + 123, maxAlloc: mib,
			data: map[int64][]byte{0: randBytes(14, 5000)}},
		{name: "leading-hole", size: 16*mib + 123, maxAlloc: mib,
			data: map[int64][]byte{16 * mib: randBytes(15, 123)}},
		// Zero runs that start and end inside file-system blocks, and runs
		// shorter than a block: the bytes must come back exactly.
		{name: "unaligned", size: 3*mib + 777, dense: true, maxAlloc: 2 * mib,
			data: map[int64][]byte{0: randBytes(16, 5000), 300_001: randBytes(17, 10), 300_100: randBytes(18, 4097),
				mib + 4095: randBytes(19, 1), 2*mib - 1: randBytes(20, 3), 2*mib + 8192: randBytes(21, mib+777-8192)}},
		{name: "all-zero", size: 5*mib + 1, dense: true, maxAlloc: mib},
		{name: "tiny", size: 10, data: map[int64][]byte{3: {1, 2, 3}}, maxAlloc: 64 << 10},
	}
	for _, tc := range []struct {
		name     string
		chunking vault.ChunkerParams
	}{
		{"default chunks", engine.DefaultChunker()},
		{"small chunks", small}, // chunk edges fall inside blocks
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "src")
			if err := os.MkdirAll(src, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, sf := range files {
				sf.create(t, src)
			}
			v := newVault(t, tc.chunking)
			res := backup(t, v, src)

			fresh := t.TempDir()
			over := t.TempDir()
			// Existing files full of 0xFF, larger than the backed-up ones:
			// none of their bytes may survive in the holes or past the end.
			for _, sf := range files {
				write(t, filepath.Join(over, src, sf.name), bytes.Repeat([]byte{0xff}, int(sf.size)+3*mib))
			}
			restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: fresh})
			r := restore(t, v, res.Snapshot.Tree, agent.RestoreOptions{Target: over, Overwrite: true})
			if r.Skipped != 0 || len(r.Warnings) != 0 {
				t.Fatalf("restore over existing files: skipped %d, warnings %v", r.Skipped, r.Warnings)
			}
			holes := holesSupported(t, fresh)
			for _, target := range []string{fresh, over} {
				for _, sf := range files {
					want, err := os.ReadFile(filepath.Join(src, sf.name))
					if err != nil {
						t.Fatal(err)
					}
					got := filepath.Join(target, src, sf.name)
					if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
						t.Errorf("%s: content differs from the source (%d bytes, want %d; err %v)", got, len(b), len(want), err)
					}
					if !holes {
						continue
					}
					a := allocated(t, got)
					if a > sf.maxAlloc {
						t.Errorf("%s: %d bytes allocated, want at most %d", got, a, sf.maxAlloc)
					}
					if target == fresh {
						t.Logf("%s: %d bytes, %d allocated (source %d)", sf.name, sf.size, a, allocated(t, filepath.Join(src, sf.name)))
					}
				}
			}
			if !holes {
				t.Skip("the temporary directory's file system does not keep holes: contents checked, allocation not")
			}
		})
	}
}
