package s3_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/store/storetest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestConformanceTLS runs the store suite against versitygw over https,
// where bodies go unsigned (UNSIGNED-PAYLOAD) with their CRC32C.
func TestConformanceTLS(t *testing.T) {
	sv := s3test.StartTLS(t)
	bucket := sv.Bucket(t, true)
	n := 0
	storetest.Run(t, func(t *testing.T) vault.Store {
		n++
		return openStore(t, sv, bucket, "tls/v"+string(rune('a'+n%26))+"/"+t.Name())
	})
}

// flipper damages the bodies of PUT requests on their way to the server
// (after the signature, before TLS): a fault on the path that neither
// TCP's nor TLS's checks would see.
type flipper struct {
	base http.RoundTripper
	mu   sync.Mutex
	hits int
}

func (f *flipper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && r.Body != nil && r.ContentLength > 0 {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		b = bytes.Clone(b)
		b[len(b)/2] ^= 0x40
		f.mu.Lock()
		f.hits++
		f.mu.Unlock()
		r = r.Clone(r.Context())
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	return f.base.RoundTrip(r)
}

// TestDamagedBodyRefused: a body damaged between the store and the server
// is refused by the server, not stored: over https, where the body is not
// part of the signature, by its CRC32C; over http by the signature. Both
// a single PUT and a multipart upload's part.
func TestDamagedBodyRefused(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := map[bool]string{false: "http", true: "https"}[useTLS]
		t.Run(name, func(t *testing.T) {
			var sv *s3test.Server
			tr := &http.Transport{}
			if useTLS {
				sv = s3test.StartTLS(t)
				pem, err := os.ReadFile(sv.CAFile)
				if err != nil {
					t.Fatal(err)
				}
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(pem)
				tr.TLSClientConfig = &tls.Config{RootCAs: pool}
			} else {
				sv = s3test.Start(t)
			}
			bucket := sv.Bucket(t, true)
			f := &flipper{base: tr}
			st, err := s3.Open(context.Background(), s3.Options{
				Bucket: bucket, Prefix: "p", Endpoint: sv.Endpoint, Region: "us-east-1", PathStyle: true,
				Credentials: sv.Credentials(), PartSize: 5 << 20, MaxAttempts: 2, MaxBackoff: 10 * time.Millisecond,
				HTTPClient: &http.Client{Transport: f},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			clean := openStore(t, sv, bucket, "p")
			ctx := context.Background()
			for _, size := range []int{100_000, 6 << 20} { // one PUT; a multipart upload
				h := vault.Handle{Type: vault.PackObject, Name: "aa" + name + string(rune('0'+size%7))}
				data := bytes.Repeat([]byte("coffer"), size/6)
				err := st.Put(ctx, h, bytes.NewReader(data), int64(len(data)))
				if err == nil {
					t.Fatalf("a %d-byte object damaged on the way was stored", len(data))
				}
				// Over https only the CRC32C can have caught it (the body is
				// not signed): S3 answers BadDigest.
				if useTLS && !strings.Contains(err.Error(), "BadDigest") {
					t.Errorf("a damaged %d-byte body over https: %v; want BadDigest (its CRC32C)", len(data), err)
				}
				if _, err := clean.Stat(ctx, h); !errors.Is(err, vault.ErrNotFound) {
					t.Errorf("after a refused put of %d bytes: Stat = %v, want not found", len(data), err)
				}
			}
			if f.hits == 0 {
				t.Fatal("no body was damaged: the test exercised nothing")
			}
		})
	}
}
