package engine_test

import (
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// BenchmarkReadEncoded measures what a server spends per data blob it
// sends: as it always did (unseal only: "plain"), and for a source's
// token in a vault whose dedup scope is "source", which also decodes and
// hashes the blob to prove its domain ("confined"). 1 MiB chunks, half
// of them compressible.
func BenchmarkReadEncoded(b *testing.B) {
	e := newEnvB(b)
	v, err := engine.Create(ctx, e.opts(), engine.DefaultChunker())
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	const n, size = 16, 1 << 20
	ids := make([]vault.ID, n)
	for i := range ids {
		data := randBytes(uint64(i), size)
		if i%2 == 1 {
			for j := range data[:size/2] {
				data[j] = byte(j % 7) // compressible half
			}
		}
		ids[i] = v.BlobID(data)
		if _, err := v.SaveBlob(ctx, vault.DataBlob, ids[i], v.Codec().Encode(nil, data), len(data)); err != nil {
			b.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	h := v.NewHasher()
	for _, mode := range []string{"plain", "confined"} {
		b.Run(mode, func(b *testing.B) {
			var buf, scratch []byte
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				var sp *[]byte
				if mode == "confined" {
					sp = &scratch
				}
				p, _, err := v.LoadEncodedVerified(ctx, vault.DataBlob, ids[i%n], buf, h, sp)
				if err != nil {
					b.Fatal(err)
				}
				buf = p
			}
		})
	}
}
