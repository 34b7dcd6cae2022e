package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func readAll(t testing.TB, st interface {
	Get(context.Context, vault.Handle, int64, int64) (io.ReadCloser, error)
}, h vault.Handle) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), h, 0, -1)
	if err != nil {
		t.Fatalf("Get(%s): %v", h, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", h, err)
	}
	return b
}

// TestAttackOverwriteAndDeleteMarker plays someone holding the bucket's
// credentials (not Coffer's keys) on a versioned bucket: they overwrite a
// pack and a keyring generation with other bytes, and hide a snapshot
// behind a delete marker, straight through the S3 API. A fresh store (no
// cached versions) still reads, stats and lists the bytes Coffer wrote.
func TestAttackOverwriteAndDeleteMarker(t *testing.T) {
	sv := s3test.Start(t)
	bucket := sv.Bucket(t, true)
	ctx := context.Background()
	st := openStore(t, sv, bucket, "v")
	defer st.Close()
	objs := map[vault.Handle][]byte{
		{Type: vault.PackObject, Name: "aa01"}:     random(t, 7<<20), // multipart with 5 MiB parts
		{Type: vault.KeyObject, Name: "3"}:         random(t, 300),
		{Type: vault.SnapshotObject, Name: "bb02"}: random(t, 500),
	}
	for h, data := range objs {
		if err := st.Put(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	for h := range objs {
		key := "v/" + h.String()
		if h.Type == vault.SnapshotObject {
			if _, err := sv.Client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: &key}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		evil := []byte("attacker's bytes")
		if _, err := sv.Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(evil)}); err != nil {
			t.Fatal(err)
		}
	}
	fresh := openStore(t, sv, bucket, "v")
	defer fresh.Close()
	for h, data := range objs {
		if got := readAll(t, fresh, h); !bytes.Equal(got, data) {
			t.Errorf("%s reads %d bytes that are not the %d Coffer wrote", h, len(got), len(data))
		}
		oi, err := fresh.Stat(ctx, h)
		if err != nil || oi.Size != int64(len(data)) {
			t.Errorf("Stat(%s) = %+v, %v; want size %d", h, oi, err, len(data))
		}
		found := false
		fresh.List(ctx, h.Type, func(oi vault.ObjectInfo) error {
			found = found || (oi.Handle == h && oi.Size == int64(len(data)))
			return nil
		})
		if !found {
			t.Errorf("List(%s) misses %s (or gives the attacker's size)", h.Type, h)
		}
		// A ranged read goes to the same version.
		rc, err := fresh.Get(ctx, h, 1, 5)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if len(data) > 6 && !bytes.Equal(b, data[1:6]) {
			t.Errorf("ranged Get(%s) reads other bytes", h)
		}
	}
}

// TestAttackPlantedKeyHiddenByMarker: the attacker plants keyring
// generation 9 and hides it behind a delete marker, so a conditional PUT
// (If-None-Match sees only the current version) succeeds. The Put must
// not report success while reads return the planted bytes: it fails with
// ErrExists, and the keyring's own checks then refuse the planted bytes.
func TestAttackPlantedKeyHiddenByMarker(t *testing.T) {
	sv := s3test.Start(t)
	bucket := sv.Bucket(t, true)
	ctx := context.Background()
	key := "v/keys/9"
	if _, err := sv.Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader([]byte("planted"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.Client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: &key}); err != nil {
		t.Fatal(err)
	}
	st := openStore(t, sv, bucket, "v")
	defer st.Close()
	h := vault.Handle{Type: vault.KeyObject, Name: "9"}
	mine := random(t, 100)
	err := st.Put(ctx, h, bytes.NewReader(mine), int64(len(mine)))
	if err == nil {
		got := readAll(t, st, h)
		t.Fatalf("Put over a hidden planted version succeeded; reads then return %q", got)
	}
	if !errors.Is(err, vault.ErrExists) {
		t.Fatalf("Put = %v, want ErrExists", err)
	}
}

// TestConcurrentWritersOneName: two separate writers (two stores, as two
// processes would have) install the same keyring generation and config at
// once; exactly one wins, on a plain and on a versioned bucket, for small
// and multipart objects, and every reader then sees the winner's bytes.
func TestConcurrentWritersOneName(t *testing.T) {
	sv := s3test.Start(t)
	ctx := context.Background()
	for _, lock := range []bool{false, true} {
		bucket := sv.Bucket(t, lock)
		a, b := openStore(t, sv, bucket, "v"), openStore(t, sv, bucket, "v")
		for round, h := range []vault.Handle{
			{Type: vault.KeyObject, Name: "1"}, {Type: vault.KeyObject, Name: "2"},
			{Type: vault.ConfigObject, Name: "config"}, {Type: vault.PackObject, Name: "cc03"},
		} {
			size := 1000 + round
			if h.Type == vault.PackObject {
				size = 6 << 20 // multipart: completion is the conditional step
			}
			data := [][]byte{random(t, size), random(t, size)}
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for i, st := range []interface {
				Put(context.Context, vault.Handle, io.Reader, int64) error
			}{a, b} {
				wg.Go(func() { errs[i] = st.Put(ctx, h, bytes.NewReader(data[i]), int64(size)) })
			}
			wg.Wait()
			won := -1
			for i, err := range errs {
				switch {
				case err == nil && won >= 0:
					t.Fatalf("lock %v: both writers of %s succeeded", lock, h)
				case err == nil:
					won = i
				case !errors.Is(err, vault.ErrExists):
					t.Fatalf("lock %v: writer %d of %s: %v", lock, i, h, err)
				}
			}
			if won < 0 {
				t.Fatalf("lock %v: no writer of %s succeeded", lock, h)
			}
			fresh := openStore(t, sv, bucket, "v")
			if got := readAll(t, fresh, h); !bytes.Equal(got, data[won]) {
				t.Fatalf("lock %v: %s does not read back as the winner's bytes", lock, h)
			}
			fresh.Close()
		}
		a.Close()
		b.Close()
	}
	_ = aws.String
}

// TestAttackLockedVersion: objects written with a retention are in
// COMPLIANCE mode: the attacker holding the bucket's credentials cannot
// delete the version (the bucket refuses), a plain DELETE or an overwrite
// only adds a marker or a version, and the store still reads what Coffer
// wrote; the store's own Delete fails with ErrImmutable. Retain lengthens
// a retention; a bucket without Object Lock refuses to take a locked
// object rather than store it unprotected.
func TestAttackLockedVersion(t *testing.T) {
	sv := s3test.Start(t)
	bucket := sv.Bucket(t, true)
	ctx := context.Background()
	st := openStore(t, sv, bucket, "v")
	defer st.Close()
	if !st.ObjectLock() {
		t.Fatal("ObjectLock() = false on an Object Lock bucket")
	}
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	st.SetRetention(func(context.Context, vault.Handle) (time.Time, error) { return until, nil })
	objs := map[vault.Handle][]byte{
		{Type: vault.PackObject, Name: "dd04"}:     random(t, 6<<20), // multipart
		{Type: vault.SnapshotObject, Name: "ee05"}: random(t, 700),
		{Type: vault.KeyObject, Name: "4"}:         random(t, 300),
	}
	for h, data := range objs {
		if err := st.Put(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		got, err := st.RetainedUntil(ctx, h)
		if err != nil || !got.Equal(until) {
			t.Fatalf("RetainedUntil(%s) = %v, %v; want %v", h, got, err, until)
		}
	}
	for h := range objs {
		key := "v/" + h.String()
		vs, err := sv.Client.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &key})
		if err != nil || len(vs.Versions) != 1 {
			t.Fatalf("versions of %s: %v, %v", key, vs, err)
		}
		if _, err := sv.Client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: &key, VersionId: vs.Versions[0].VersionId}); err == nil {
			t.Fatalf("the bucket deleted locked version of %s", key)
		}
		if _, err := sv.Client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: &key}); err != nil {
			t.Fatal(err)
		}
		if _, err := sv.Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader([]byte("evil"))}); err != nil {
			t.Fatal(err)
		}
		if err := st.Delete(ctx, h); !errors.Is(err, vault.ErrImmutable) {
			t.Fatalf("Delete(%s) of a locked object = %v, want ErrImmutable", h, err)
		}
	}
	fresh := openStore(t, sv, bucket, "v")
	defer fresh.Close()
	for h, data := range objs {
		if got := readAll(t, fresh, h); !bytes.Equal(got, data) {
			t.Errorf("%s does not read back as written after the attack", h)
		}
	}
	later := until.Add(24 * time.Hour)
	h := vault.Handle{Type: vault.KeyObject, Name: "4"}
	if err := fresh.Retain(ctx, h, later, later.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, err := openStore(t, sv, bucket, "v").RetainedUntil(ctx, h); err != nil || !got.Equal(later.Add(time.Hour)) {
		t.Fatalf("after Retain, RetainedUntil = %v, %v; want %v", got, err, later.Add(time.Hour))
	}

	plain := openStore(t, sv, sv.Bucket(t, false), "v")
	defer plain.Close()
	plain.SetRetention(func(context.Context, vault.Handle) (time.Time, error) { return until, nil })
	if err := plain.Put(ctx, h, bytes.NewReader([]byte("x")), 1); err == nil {
		t.Fatal("a bucket without Object Lock took an object that must be locked")
	}
}
