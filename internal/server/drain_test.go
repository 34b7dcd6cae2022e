package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/tlsconf"
	"github.com/coffer-backup/coffer/internal/vault"
)

// slowLink forwards TCP connections to target, passing at most rate bytes
// a second from client to server on each: uploads through it take a while,
// so a test can stop the server while some are half sent.
type slowLink struct {
	ln     net.Listener
	target string
	rate   int

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startSlowLink(t *testing.T, target string, rate int) *slowLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slowLink{ln: ln, target: target, rate: rate, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *slowLink) addr() string { return s.ln.Addr().String() }

func (s *slowLink) close() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *slowLink) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *slowLink) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *slowLink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if !s.track(c) {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			// Once the server has stopped listening this fails, and the
			// client sees its connection closed.
			d, err := net.DialTimeout("tcp", s.target, 5*time.Second)
			if err != nil || !s.track(d) {
				return
			}
			defer s.untrack(d)
			// The connection lasts until the server's side ends: what it
			// sent before closing is all passed on, even when the
			// client's side has failed first.
			up := make(chan struct{})
			go func() {
				defer close(up)
				s.throttledCopy(d, c)
				d.(*net.TCPConn).CloseWrite()
			}()
			io.Copy(c, d)
			c.Close()
			d.Close()
			<-up
		}()
	}
}

func (s *slowLink) throttledCopy(dst, src net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			time.Sleep(time.Duration(n) * time.Second / time.Duration(s.rate))
		}
		if err != nil {
			return
		}
	}
}

// metric reads a gauge or counter without labels from the server's
// metrics.
func metric(ctx context.Context, c *client.Client, name string) (float64, error) {
	text, err := c.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in the metrics", name)
}

// waitMetric polls metric name until ok accepts its value.
func waitMetric(t *testing.T, c *client.Client, name string, ok func(float64) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		v, err := metric(context.Background(), c, name)
		if err != nil {
			t.Fatal(err)
		}
		if ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still %v after 10 s", name, v)
		}
	}
}

// storeFiles returns the vault's store files whose names start with
// ".tmp-" (local.Store's unpublished writes) and the total size of its
// packs.
func storeFiles(t *testing.T, dataDir, name string) (temps []string, packBytes int64) {
	t.Helper()
	dir := server.VaultDir(dataDir, name)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			temps = append(temps, p)
		}
		if d.Type().IsRegular() && filepath.Base(filepath.Dir(filepath.Dir(p))) == "packs" && !strings.HasPrefix(d.Name(), ".") {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			packBytes += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return temps, packBytes
}

// checkDataDir opens the data directory with a new server instance and
// runs check --read-data on vault name: every pack must read back whole.
// It returns the instance, open.
func checkDataDir(t *testing.T, dataDir, name string, snapshots int) *server.Server {
	t.Helper()
	ctx := context.Background()
	srv, _, err := server.Open(ctx, server.Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	eng, err := srv.Engine(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := eng.Check(ctx, engine.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Errorf("check --read-data by a new server instance: %q", rep.Errors)
	}
	if rep.Snapshots != snapshots {
		t.Errorf("check: %d snapshots, want %d", rep.Snapshots, snapshots)
	}
	t.Logf("check by a new server instance: %d packs, %d blobs, %d snapshots, warnings %q", rep.Packs, rep.Blobs, rep.Snapshots, rep.Warnings)
	return srv
}

// noProxy keeps the environment's HTTPS_PROXY out of the tests.
func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

// TestShutdownDrains stops the server as SIGTERM does (its context is
// cancelled) with requests in flight.
//
// InterruptedBackup: a backup's uploads are half sent over a slow link.
// Serve returns well within DrainTimeout, the backup ends (with an error,
// or a snapshot if it finished first) instead of hanging, and what the
// server acknowledged is in its packs when Serve returns, with no
// temporary file left; a new server instance's check --read-data finds
// every pack whole; restarted, the server takes the backup again, reusing
// what was stored.
//
// RequestInFlightCompletes: an upload the server has half read when it is
// told to stop is read to its end and answered, over HTTP/1.1 and over
// HTTP/2, while Serve waits; the blobs are then durable.
func TestShutdownDrains(t *testing.T) {
	t.Run("InterruptedBackup", testInterruptedBackup)
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run("RequestInFlightCompletes/"+proto, func(t *testing.T) { testRequestInFlightCompletes(t, proto == "h2") })
	}
}

func testInterruptedBackup(t *testing.T) {
	ctx := context.Background()
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken) // direct: not slowed
	tok := newVault(t, owner, "a")

	src := t.TempDir()
	files := map[string][]byte{
		"big/one.bin": randomBytes(7001, 1<<20),
		"big/two.bin": randomBytes(7002, 1<<20),
	}
	for i := range 48 {
		files[fmt.Sprintf("many/f%02d", i)] = randomBytes(7100+uint64(i), 96<<10+i*1024)
	}
	writeTree(t, src, files)

	// 1 MiB/s a connection: a batch of 256 KiB takes a quarter of a
	// second to send, so uploads are half sent at any moment (the client
	// uses up to 4 connections; the ~7 MiB backup would take seconds).
	link := startSlowLink(t, strings.TrimPrefix(env.URL, "https://"), 1<<20)
	c, err := client.New(client.Options{Server: "https://" + link.addr(), Token: tok, TLS: env.TLS, BatchBytes: 256 << 10, Proxy: noProxy})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	v := c.Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}

	type result struct {
		res *agent.BackupResult
		err error
	}
	done := make(chan result, 1)
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		res, err := agent.Backup(bctx, v, agent.BackupOptions{Paths: []string{src}, Host: "h"})
		done <- result{res, err}
	}()

	// Stop once some uploads were acknowledged and one is being read.
	for deadline := time.Now().Add(10 * time.Second); v.BytesAdded() < 256<<10; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no upload acknowledged after 10 s")
		}
	}
	waitMetric(t, owner, "coffer_active_uploads", func(v float64) bool { return v > 0 })
	ackedAtStop := v.BytesAdded()
	stopAt := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- env.Stop() }()

	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("the backup hangs after the server stopped")
	}
	if r.err == nil {
		t.Logf("the backup completed before the server stopped: snapshot %s", r.res.Snapshot.ID.Short())
	} else {
		t.Logf("the backup failed as the server stopped: %v", r.err)
	}
	// The agent exits: its idle connections close. (A connection that
	// has sent no request yet keeps net/http's Shutdown waiting up to
	// 5 s more, golang.org/issue/22682.)
	c.Close()
	var stopErr error
	select {
	case stopErr = <-stopped:
	case <-time.After(server.DrainTimeout + 5*time.Second):
		t.Fatalf("Serve has not returned %v after its context was cancelled", server.DrainTimeout+5*time.Second)
	}
	drained := time.Since(stopAt)
	if stopErr != nil {
		t.Errorf("Serve after cancel: %v (drain cut short, or the final flush failed)", stopErr)
	}
	if drained >= server.DrainTimeout {
		t.Errorf("Serve took %v to drain, DrainTimeout is %v", drained, server.DrainTimeout)
	}
	acked := v.BytesAdded()
	t.Logf("drained in %v; %d bytes acknowledged at the stop, %d in all", drained.Round(time.Millisecond), ackedAtStop, acked)

	// Serve flushed before returning: every blob the client was told is
	// stored is in a pack, and no write is half done.
	temps, packBytes := storeFiles(t, env.DataDir, "a")
	if len(temps) > 0 {
		t.Errorf("temporary files in the store after Serve returned: %q", temps)
	}
	if packBytes < int64(acked) {
		t.Errorf("after Serve returned the store holds %d bytes of packs, but %d bytes of blobs were acknowledged", packBytes, acked)
	}
	if err := env.Close(); err != nil {
		t.Fatalf("closing the stopped server: %v", err)
	}
	if temps, _ := storeFiles(t, env.DataDir, "a"); len(temps) > 0 {
		t.Errorf("temporary files in the store after Close: %q", temps)
	}
	snaps := 0
	if r.err == nil {
		snaps = 1
	}
	srv := checkDataDir(t, env.DataDir, "a", snaps)

	// Restarted, the server takes the backup again; what was stored
	// before the stop is not sent twice.
	mat, _, err := tlsconf.LoadOrCreate(filepath.Join(env.DataDir, "tls"), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tlsconf.ServerConfig(mat, tls.VersionTLS12)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln, cfg) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("second Serve: %v", err)
		}
	}()
	c2, err := client.New(client.Options{Server: "https://" + ln.Addr().String(), Token: tok, TLS: env.TLS, Proxy: noProxy})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	v2 := c2.Vault("a")
	if err := v2.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := agent.Backup(ctx, v2, agent.BackupOptions{Paths: []string{src}, Host: "h"})
	if err != nil {
		t.Fatalf("backup after the restart: %v", err)
	}
	if total := uint64(treeSize(files)); res.Snapshot.BytesAdded >= total {
		t.Errorf("the backup after the restart added %d bytes for %d bytes of data: nothing stored before the stop was reused", res.Snapshot.BytesAdded, total)
	}
	restoreAndCompare(t, v2, res.Snapshot, src)
}

func testRequestInFlightCompletes(t *testing.T, h2 bool) {
	ctx := context.Background()
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken)
	tok := newVault(t, owner, "a")
	v := env.Client(t, tok).Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}

	// An upload of two blobs, built as the client builds it.
	d := v.Dedup()
	hasher, codec := format.NewIDHasher(d.ChunkIDKey), format.NewCodec()
	var body []byte
	var ids []vault.ID
	var firstLen int
	for i := range 2 {
		raw := randomBytes(9000+uint64(i), 200<<10)
		id := hasher.ID(raw)
		enc := codec.Encode(nil, raw)
		body = api.AppendUploadHeader(body, api.Ref{Type: vault.DataBlob, ID: id}, len(raw), len(enc))
		body = append(body, enc...)
		ids = append(ids, id)
		if i == 0 {
			firstLen = len(body)
		}
	}
	split := firstLen + (len(body)-firstLen)/2

	tr := &http.Transport{TLSClientConfig: env.TLS.Clone(), ForceAttemptHTTP2: h2}
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.CloseWithError(errors.New("test ended")) // a failed test does not keep the drain waiting
	req, err := http.NewRequest(http.MethodPost, env.URL+"/v1/vaults/a/blobs", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", api.ContentBinary)
	type answer struct {
		resp *http.Response
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Do(req)
		answered <- answer{resp, err}
	}()
	if _, err := pw.Write(body[:split]); err != nil {
		t.Fatal(err)
	}
	// The server has read the first blob: the handler is in the middle
	// of the request.
	waitMetric(t, owner, "coffer_upload_bytes_total", func(v float64) bool { return v >= float64(firstLen) })

	stopped := make(chan error, 1)
	go func() { stopped <- env.Stop() }()
	// The drain has begun once the listener refuses connections.
	addr := strings.TrimPrefix(env.URL, "https://")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the server still accepts connections 10 s after its context was cancelled")
		}
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned (%v) with a request half read", err)
	default:
	}

	// The rest of the request still arrives and is answered.
	if _, err := pw.Write(body[split:]); err != nil {
		t.Fatalf("sending the rest of the upload during the drain: %v", err)
	}
	pw.Close()
	a := <-answered
	if a.err != nil {
		t.Fatalf("upload in flight at the stop: %v", a.err)
	}
	defer a.resp.Body.Close()
	var res api.UploadResult
	if a.resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(a.resp.Body)
		t.Fatalf("upload in flight at the stop: %s %s", a.resp.Status, b)
	}
	if err := json.NewDecoder(a.resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	if res.Stored != 2 {
		t.Errorf("upload in flight at the stop stored %d blobs, want 2", res.Stored)
	}
	if got := a.resp.ProtoMajor; got != map[bool]int{false: 1, true: 2}[h2] {
		t.Errorf("answered over HTTP/%d", got)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(server.DrainTimeout):
		t.Fatalf("Serve has not returned %v after the last request ended", server.DrainTimeout)
	}
	temps, packBytes := storeFiles(t, env.DataDir, "a")
	if len(temps) > 0 {
		t.Errorf("temporary files in the store after Serve returned: %q", temps)
	}
	if packBytes < int64(len(body)) {
		t.Errorf("after Serve returned the store holds %d bytes of packs for the %d bytes acknowledged", packBytes, len(body))
	}
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	srv := checkDataDir(t, env.DataDir, "a", 0)
	eng, err := srv.Engine(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !eng.Has(vault.DataBlob, id) {
			t.Errorf("blob %s, acknowledged during the drain, is not in the vault", id.Short())
		}
	}
}
