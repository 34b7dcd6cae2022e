package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// BenchmarkPut stores packs of 4 and 16 MiB (a backup's packs) in a
// versitygw bucket with Object Lock, and reports besides the throughput
// the processor time versitygw spent per pack (srv-ms/op): what a pack
// costs the S3 server on the same machine; and the processor time of this
// process per pack (put-ms/op): what it costs the store's side.
func BenchmarkPut(b *testing.B) {
	for _, useTLS := range []bool{false, true} {
		b.Run(map[bool]string{false: "http", true: "https"}[useTLS], func(b *testing.B) {
			sv := s3test.Start(b)
			if useTLS {
				sv = s3test.StartTLS(b)
			}
			bucket := sv.Bucket(b, true)
			for _, size := range []int{4 << 20, 16 << 20} {
				b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
					st := openBig(b, sv, bucket, "bench")
					data := make([]byte, size)
					rand.Read(data)
					ctx := context.Background()
					b.SetBytes(int64(size))
					b.ResetTimer()
					cpu0, self0 := sv.CPU(), s3test.SelfCPU()
					for i := 0; b.Loop(); i++ {
						name := fmt.Sprintf("%064x", time.Now().UnixNano()+int64(i))
						if err := st.Put(ctx, vault.Handle{Type: vault.PackObject, Name: name}, bytes.NewReader(data), int64(size)); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64((sv.CPU()-cpu0).Milliseconds())/float64(b.N), "srv-ms/op")
					b.ReportMetric(float64((s3test.SelfCPU()-self0).Milliseconds())/float64(b.N), "put-ms/op")
				})
			}
		})
	}
}

// openBig opens a store with the default part size, as coffer server does.
func openBig(t testing.TB, sv *s3test.Server, bucket, prefix string) *s3.Store {
	t.Helper()
	st, err := s3.Open(context.Background(), s3.Options{
		Bucket: bucket, Prefix: prefix, Endpoint: sv.Endpoint, Region: "us-east-1", PathStyle: true,
		Credentials: sv.Credentials(), CAFile: sv.CAFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
