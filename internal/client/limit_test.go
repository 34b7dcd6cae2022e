package client

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestBandwidthLimits: over loopback TLS, where nothing else slows them,
// uploads (4 at once, as a backup sends batches) and downloads, at the same
// time, each move 20 MiB at a 2 MiB/s limit within 10% of it: a 10 s
// transfer each way, 10 s in all. (A timing
// assertion, but of a limit, on loopback, with a 10% margin; the server
// side does nothing but copy.)
func TestBandwidthLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 10 s")
	}
	const limit = 2 << 20
	const total = 20 << 20
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/up":
			io.Copy(io.Discard, r.Body)
		case "/down":
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			io.CopyN(w, zeros{}, int64(n))
		}
	}))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c, err := New(Options{Server: srv.URL, Token: "t", TLS: &tls.Config{RootCAs: pool}, LimitUpload: limit, LimitDownload: limit})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check := func(what string, moved int64, took time.Duration) {
		t.Helper()
		rate := float64(moved) / took.Seconds()
		t.Logf("%s: %d bytes in %v: %.2f MiB/s (limit %.2f)", what, moved, took.Round(time.Millisecond), rate/(1<<20), float64(limit)/(1<<20))
		if rate > limit*1.1 || rate < limit*0.9 {
			t.Errorf("%s at %.2f MiB/s, want within 10%% of %.2f MiB/s", what, rate/(1<<20), float64(limit)/(1<<20))
		}
	}

	var both sync.WaitGroup
	both.Add(2)
	go func() {
		defer both.Done()
		start := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.hc.Post(srv.URL+"/up", "application/octet-stream", bytes.NewReader(make([]byte, total/4)))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			}()
		}
		wg.Wait()
		check("upload", total, time.Since(start))
	}()
	go func() {
		defer both.Done()
		start := time.Now()
		var moved int64
		for range 2 {
			resp, err := c.hc.Get(srv.URL + "/down?n=" + strconv.Itoa(total/2))
			if err != nil {
				t.Error(err)
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			moved += n
		}
		if moved != total {
			t.Errorf("downloaded %d bytes, want %d", moved, total)
			return
		}
		check("download", moved, time.Since(start))
	}()
	both.Wait()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestNoLimitNoWrapper: without limits the transport is net/http's own.
func TestNoLimitNoWrapper(t *testing.T) {
	c, err := New(Options{Server: "https://127.0.0.1:1", TLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.hc.Transport.(*http.Transport); !ok {
		t.Errorf("transport %T without limits, want *http.Transport", c.hc.Transport)
	}
}
