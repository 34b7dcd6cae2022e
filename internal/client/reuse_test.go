package client

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestBatchReadReusesConnection: a batch read's answer is streamed
// (chunked); the client reads it to its end, so the connection goes back
// to the pool instead of being closed, and a restore of many small files
// is not one TLS handshake per batch.
func TestBatchReadReusesConnection(t *testing.T) {
	blob := []byte{format.EncodingRaw, 'h', 'i'}
	// Connections told apart by the client's address: the server is
	// already serving when hostile returns, so its ConnState hook cannot
	// be set race-free.
	var mu sync.Mutex
	conns := map[string]bool{}
	_, c := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		body := new(bytes.Buffer)
		body.ReadFrom(r.Body)
		for rd := bytes.NewReader(body.Bytes()); ; {
			ref, err := api.ReadRef(rd)
			if err != nil {
				break
			}
			w.Write(api.AppendReadOK(nil, ref, len(blob)-1, len(blob)))
			w.(http.Flusher).Flush() // several writes: a chunked answer
			w.Write(blob)
		}
		// The end of the answer (the last chunk) comes a moment after the
		// last record, as when the server's writes outpace the client.
		w.(http.Flusher).Flush()
		time.Sleep(20 * time.Millisecond)
	})
	v := c.Vault("a")
	ids := make([]vault.ID, 3)
	for i := range ids {
		ids[i][0] = byte(i + 1)
	}
	for range 5 {
		n := 0
		if err := v.LoadBlobs(context.Background(), vault.DataBlob, ids, func(i int, data []byte) error {
			if string(data) != "hi" {
				t.Fatalf("blob %d: %q", i, data)
			}
			n++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if n != len(ids) {
			t.Fatalf("%d blobs, want %d", n, len(ids))
		}
	}
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	if n != 1 {
		t.Fatalf("5 batch reads opened %d connections, want 1 (kept alive)", n)
	}
}
