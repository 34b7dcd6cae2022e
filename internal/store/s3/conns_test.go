package s3_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestConnectionsReused: ranged reads of one object, each read to its
// end and closed, go over the connections already open: a new TLS
// handshake for every read costs the server and the S3 endpoint more CPU
// than the read itself.
func TestConnectionsReused(t *testing.T) {
	sv := s3test.StartTLS(t)
	bucket := sv.Bucket(t, true)
	var dials atomic.Int64
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	pem, err := os.ReadFile(sv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	d := &net.Dialer{Timeout: 10 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}
	st, err := s3.Open(context.Background(), s3.Options{
		Bucket: bucket, Prefix: "conns", Endpoint: sv.Endpoint, Region: "us-east-1", PathStyle: true,
		Credentials: sv.Credentials(), PartSize: 5 << 20, HTTPClient: &http.Client{Transport: tr},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	data := random(t, 1<<20)
	h := vault.Handle{Type: vault.PackObject, Name: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}
	if err := st.Put(context.Background(), h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	before := dials.Load()
	for i := 0; i < 50; i++ {
		off, n := int64(i*4096), int64(1000+i)
		rc, err := st.Get(context.Background(), h, off, n)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n)
		if _, err := io.ReadFull(rc, got); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if !bytes.Equal(got, data[off:off+n]) {
			t.Fatalf("read %d: wrong bytes", i)
		}
	}
	if d := dials.Load() - before; d > 2 {
		t.Fatalf("50 ranged reads, one at a time, dialled %d new connections: connections are not reused", d)
	}
}
