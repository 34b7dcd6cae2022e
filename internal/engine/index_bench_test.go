package engine_test

import (
	"path/filepath"
	"testing"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// BenchmarkOpenIndex opens a vault whose index holds 15,000 blobs in 50
// packs (the size of compare.sh's tree set: 15,036 files) and loads it:
// the cost format 2 adds is one header copy opened per pack, against
// 300 catalog rows per pack before.
func BenchmarkOpenIndex(b *testing.B) {
	const packs, perPack = 50, 300
	e := newEnvB(b)
	v, err := engine.Create(ctx, e.opts(), engine.DefaultChunker())
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for range packs {
		for range perPack {
			data := randBytes(uint64(n), 1024)
			n++
			id := v.BlobID(data)
			if _, err := v.SaveBlob(ctx, vault.DataBlob, id, v.Codec().Encode(nil, data), len(data)); err != nil {
				b.Fatal(err)
			}
		}
		if err := v.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	v.Close()
	b.ResetTimer()
	for b.Loop() {
		w, err := engine.Open(ctx, e.opts())
		if err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
}

// newEnvB is newEnv for benchmarks: a local store.
func newEnvB(b *testing.B) *env {
	b.Helper()
	dir := b.TempDir()
	st, err := local.Open(filepath.Join(dir, "store"))
	if err != nil {
		b.Fatal(err)
	}
	cat, err := sqlite.Open(filepath.Join(dir, "catalog.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cat.Close() })
	ks, err := platform.Create(filepath.Join(dir, "platform.key"), testStart)
	if err != nil {
		b.Fatal(err)
	}
	return &env{dir: dir, store: st, cat: cat, keys: ks, clock: &clock{t: testStart}}
}
