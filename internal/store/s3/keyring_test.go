package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// barrierStore holds every keyring Put until both writers have reached
// theirs, so that the two writers of one generation send their
// conditional puts together and only the S3 server decides between them.
type barrierStore struct {
	vault.Store
	arrive *sync.WaitGroup
}

func (b barrierStore) Put(ctx context.Context, h vault.Handle, rd io.Reader, size int64) error {
	if h.Type == vault.KeyObject {
		b.arrive.Done()
		b.arrive.Wait()
	}
	return b.Store.Put(ctx, h, rd, size)
}

// TestConcurrentKeyringGenerations: two writers of one vault (two
// servers sharing its catalog and bucket) each rotate its DEK at the same
// moment, so both write keyring generation N+1. The generation is created
// with If-None-Match: *, so exactly one wins, the other fails with
// ErrKeyChanged, the bucket holds one version of keys/N+1 (the winner's),
// and a fresh open of the vault uses the winner's DEK and reads what it
// wrote with it. Without the conditional create, both puts succeed and
// the anchor names one generation while the store reads another.
func TestConcurrentKeyringGenerations(t *testing.T) {
	sv := s3test.Start(t)
	ctx := context.Background()
	for _, lock := range []bool{false, true} {
		bucket := sv.Bucket(t, lock)
		dir := t.TempDir()
		cat, err := sqlite.Open(filepath.Join(dir, "catalog.db"))
		if err != nil {
			t.Fatal(err)
		}
		ks, err := platform.Create(filepath.Join(dir, "platform.key"), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		opts := func(st vault.Store) engine.Options {
			return engine.Options{Store: st, Catalog: cat, Keys: ks, Name: "v"}
		}
		first := openStore(t, sv, bucket, "vaults/v")
		v0, err := engine.Create(ctx, opts(first), engine.DefaultChunker())
		if err != nil {
			t.Fatalf("lock %v: create: %v", lock, err)
		}
		v0.Close()
		first.Close()

		var arrive sync.WaitGroup
		writers := make([]*engine.Vault, 2)
		for i := range writers {
			st := openStore(t, sv, bucket, "vaults/v")
			defer st.Close()
			w, err := engine.Open(ctx, opts(barrierStore{Store: st, arrive: &arrive}))
			if err != nil {
				t.Fatalf("lock %v: open writer %d: %v", lock, i, err)
			}
			defer w.Close()
			writers[i] = w
		}
		for round := range 3 {
			gen := format.KeyringName(uint64(round + 2))
			arrive.Add(2)
			vers := make([]uint32, 2)
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for i, w := range writers {
				wg.Go(func() { vers[i], errs[i] = w.RotateDEK(ctx) })
			}
			wg.Wait()
			won := -1
			for i, err := range errs {
				switch {
				case err == nil && won >= 0:
					t.Fatalf("lock %v: both writers installed keyring generation %s", lock, gen)
				case err == nil:
					won = i
				case !errors.Is(err, engine.ErrKeyChanged):
					t.Fatalf("lock %v: writer %d of generation %s: %v, want ErrKeyChanged", lock, i, gen, err)
				}
			}
			if won < 0 {
				t.Fatalf("lock %v: neither writer installed generation %s: %v", lock, gen, errs)
			}
			key := "vaults/v/keys/" + gen
			out, err := sv.Client.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &key})
			if err != nil {
				t.Fatal(err)
			}
			if n := len(out.Versions); n != 1 || aws.ToString(out.Versions[0].Key) != key {
				t.Fatalf("lock %v: the bucket holds %d versions of %s, want the winner's only", lock, n, key)
			}

			// The winner writes under its new DEK; a fresh open (a third
			// server) takes the winner's generation and reads it back.
			data := random(t, 100_000)
			w := writers[won]
			id := w.BlobID(data)
			if _, err := w.SaveBlob(ctx, vault.DataBlob, id, w.Codec().Encode(nil, data), len(data)); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			st := openStore(t, sv, bucket, "vaults/v")
			fresh, err := engine.Open(ctx, opts(st))
			if err != nil {
				t.Fatalf("lock %v: a fresh open after the race for generation %s: %v", lock, gen, err)
			}
			if info := fresh.KeyInfo(); info.KeyringGen != uint64(round+2) || info.DEKVersion != vers[won] {
				t.Fatalf("lock %v: fresh open uses generation %d DEK v%d, want %d v%d (the winner's)", lock, info.KeyringGen, info.DEKVersion, round+2, vers[won])
			}
			got, err := fresh.LoadBlob(ctx, vault.DataBlob, id, nil)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("lock %v: the winner's data under its new DEK does not read back: %v", lock, err)
			}
			fresh.Close()
			st.Close()

			// The loser learns the new generation on its next open.
			loser := 1 - won
			writers[loser].Close()
			st2 := openStore(t, sv, bucket, "vaults/v")
			defer st2.Close()
			if writers[loser], err = engine.Open(ctx, opts(barrierStore{Store: st2, arrive: &arrive})); err != nil {
				t.Fatalf("lock %v: reopen the loser: %v", lock, err)
			}
			defer writers[loser].Close()
		}
		cat.Close()
	}
}
