package server_test

// Floods and resource bounds: an attacker with no token (or a low-role
// token) must not exhaust the server's memory, CPU or disk, hold its
// connections, or grow its audit log without bound. Each test plays that
// attacker over loopback TLS in a bounded loop; memory is measured by
// counting the expensive operations through the server's hooks or with
// runtime/metrics, never by a wall-clock assertion.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// hashWatch stands in for the server's password check: it counts the
// checks, how many run at once, and the hashes they were given. While
// gate is open (nil or closed) a check returns at once.
type hashWatch struct {
	good string // the one password that is checked for real

	mu    sync.Mutex
	cur   int
	max   int
	calls int
	bad   int // checks of a password other than good
	phcs  []string
	gate  chan struct{}
	real  bool // check every password with authn.CheckPassword
}

func (w *hashWatch) check(phc, password string) error {
	w.mu.Lock()
	w.cur++
	w.calls++
	if password != w.good {
		w.bad++
	}
	w.max = max(w.max, w.cur)
	w.phcs = append(w.phcs, phc)
	gate, real := w.gate, w.real
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.cur--
		w.mu.Unlock()
	}()
	if gate != nil {
		<-gate
	}
	if real || password == w.good {
		return authn.CheckPassword(phc, password)
	}
	return authn.ErrBadPassword
}

func (w *hashWatch) stats() (calls, bad, maxConc int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls, w.bad, w.max
}

func (w *hashWatch) reset() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.phcs
	w.calls, w.bad, w.max, w.phcs = 0, 0, 0, nil
	return p
}

// arenaWatching starts an arena whose password checks go through w.
func arenaWatching(t *testing.T, w *hashWatch) *arena {
	t.Helper()
	return newArenaWith(t, servertest.Options{Configure: func(o *server.Options) { o.CheckPassword = w.check }})
}

// from returns an HTTP client whose connections come from the loopback
// address ip (any of 127.0.0.0/8), as an attacker rotating addresses.
func (a *arena) from(ip string) *http.Client {
	a.t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{TLSClientConfig: a.env.TLS, DialContext: d.DialContext}
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	a.t.Cleanup(tr.CloseIdleConnections)
	return hc
}

// answer is one raw call's outcome.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// send sends one request with hc (no t.Fatal: goroutines call it).
func (a *arena) send(hc *http.Client, method, path, token string, body any) answer {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		p, err := json.Marshal(b)
		if err != nil {
			return answer{err: err}
		}
		rd = bytes.NewReader(p)
	}
	req, err := http.NewRequest(method, a.env.URL+path, rd)
	if err != nil {
		return answer{err: err}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: out, err: err}
}

func (a *arena) tryLogin(hc *http.Client, name, password string) answer {
	return a.send(hc, "POST", "/v1/login", "", api.Login{Name: name, Password: password})
}

// TestAttackLoginFloodBoundsHashes: 40 parallel logins with a wrong
// password, from one address and without a token. Each password check
// costs 64 MiB; the server must run no more of them at once than it has
// cores, and no more in all than the address's failure limit (each
// attempt counted before its hash, not after). The others are refused
// with 429 or 503 and a Retry-After.
func TestAttackLoginFloodBoundsHashes(t *testing.T) {
	w := &hashWatch{good: "correct horse battery", gate: make(chan struct{})}
	a := arenaWatching(t, w)
	a.principal("alice", "user", w.good, "", "")
	const n = 40
	var answered atomic.Int32
	res := make(chan answer, n)
	for range n {
		go func() {
			r := a.tryLogin(a.hc, "alice", "wrong password 123")
			answered.Add(1)
			res <- r
		}()
	}
	// Wait until every attempt is either hashing (held at the gate) or
	// answered, then let the hashes finish.
	for i := 0; i < 6000; i++ {
		calls, _, _ := w.stats()
		if calls+int(answered.Load()) >= n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(w.gate)
	statuses := map[int]int{}
	for range n {
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		statuses[r.status]++
		switch r.status {
		case http.StatusUnauthorized:
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			if r.header.Get("Retry-After") == "" {
				t.Errorf("%d without Retry-After: %s", r.status, r.body)
			}
		default:
			t.Errorf("status %d: %s", r.status, r.body)
		}
	}
	calls, _, maxConc := w.stats()
	t.Logf("statuses %v, %d hashes, at most %d at once", statuses, calls, maxConc)
	if limit := runtime.GOMAXPROCS(0); maxConc > limit {
		t.Errorf("%d password hashes ran at once (64 MiB each), want at most %d (the cores)", maxConc, limit)
	}
	if calls > 10 {
		t.Errorf("%d password hashes for one address's wrong guesses, want at most its limit of 10", calls)
	}
}

// TestAttackLoginSameWorkForEveryName: a login spends one full-cost
// password hash whatever the name: a user with a password, an unknown
// name, a user without a password and an agent (which has none) must not
// be told apart by timing.
func TestAttackLoginSameWorkForEveryName(t *testing.T) {
	w := &hashWatch{good: "correct horse battery", real: true}
	a := arenaWatching(t, w)
	a.principal("alice", "user", w.good, "", "")
	a.principal("bob", "user", "", "", "")
	a.principal("agent1", "agent", "", "", "")
	ref, err := authn.HashPassword("a reference password")
	if err != nil {
		t.Fatal(err)
	}
	cost := strings.Split(ref, "$")[1:4] // algorithm, version, m/t/p
	for _, name := range []string{"alice", "nobody", "bob", "agent1"} {
		w.reset()
		r := a.tryLogin(a.hc, name, "wrong password 123")
		if r.err != nil || r.status != http.StatusUnauthorized {
			t.Fatalf("login %s: %d %v %s", name, r.status, r.err, r.body)
		}
		phcs := w.reset()
		if len(phcs) != 1 {
			t.Errorf("login %s: %d password hashes, want 1", name, len(phcs))
			continue
		}
		if got := strings.Split(phcs[0], "$"); len(got) != 6 || strings.Join(got[1:4], "$") != strings.Join(cost, "$") {
			t.Errorf("login %s: checked against %q, not a full-cost hash like %q", name, phcs[0], ref)
		} else if err := authn.CheckPassword(phcs[0], "wrong password 123"); !errors.Is(err, authn.ErrBadPassword) {
			t.Errorf("login %s: the check did not hash: %v", name, err)
		}
	}
}

// TestAttackLoginRotatingAddresses: guesses at one name spread over many
// addresses, each below the per-address limit, are bounded by a
// per-principal limit. The block is bounded: the real user still logs in
// from an address it logged in from before, and anyone can again once
// the block ends.
func TestAttackLoginRotatingAddresses(t *testing.T) {
	w := &hashWatch{good: "correct horse battery"}
	a := arenaWatching(t, w)
	a.principal("alice", "user", w.good, "", "")
	home := a.from("127.0.0.1")
	if r := a.tryLogin(home, "alice", w.good); r.status != http.StatusCreated {
		t.Fatalf("alice's own login: %d %s", r.status, r.body)
	}
	w.reset()
	refused := 0
	for i := range 30 {
		hc := a.from(fmt.Sprintf("127.0.0.%d", 2+i))
		for range 5 {
			r := a.tryLogin(hc, "alice", fmt.Sprintf("guess %d", i))
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status == http.StatusTooManyRequests {
				refused++
			}
		}
	}
	_, guesses, _ := w.stats()
	t.Logf("150 guesses from 30 addresses: %d hashed, %d refused", guesses, refused)
	if guesses > 20 {
		t.Errorf("%d guesses at alice's password were checked from rotating addresses, want at most 20", guesses)
	}
	if r := a.tryLogin(home, "alice", w.good); r.status != http.StatusCreated {
		t.Errorf("alice locked out of her usual address: %d %s", r.status, r.body)
	}
	fresh := a.from("127.0.0.99")
	if r := a.tryLogin(fresh, "alice", w.good); r.status != http.StatusTooManyRequests {
		t.Errorf("a new address during the block: %d %s", r.status, r.body)
	}
	a.env.Clock.Add(int64(16 * time.Minute))
	if r := a.tryLogin(fresh, "alice", w.good); r.status != http.StatusCreated {
		t.Errorf("alice still locked out after the block: %d %s", r.status, r.body)
	}
}

// TestAttackLoginSuccessDoesNotResetGuesses: an attacker with an
// account of its own logs in between guesses at another's password; a
// success must not wipe the address's count of failures.
func TestAttackLoginSuccessDoesNotResetGuesses(t *testing.T) {
	w := &hashWatch{good: "correct horse battery"}
	a := arenaWatching(t, w)
	a.principal("alice", "user", "alice's secret password", "", "")
	a.principal("mallory", "user", w.good, "", "")
	hc := a.from("127.0.0.7")
	for round := range 3 {
		for i := range 9 {
			a.tryLogin(hc, "alice", fmt.Sprintf("guess %d-%d", round, i))
		}
		a.tryLogin(hc, "mallory", w.good)
	}
	if _, guesses, _ := w.stats(); guesses > 10 {
		t.Errorf("%d guesses checked from one address with successful logins in between, want at most 10", guesses)
	}
}

// auditEntries returns the audit entries whose source is not the
// owner's address (127.0.0.1): the attacker's.
func (a *arena) auditEntries() []api.AuditEntry {
	a.t.Helper()
	var es []api.AuditEntry
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/audit", a.env.OwnerToken, nil), &es); err != nil {
		a.t.Fatal(err)
	}
	out := es[:0]
	for _, e := range es {
		if e.Source != "127.0.0.1" {
			out = append(out, e)
		}
	}
	return out
}

// startOfMinute moves the server's clock to just after the start of a
// minute, so that a test's requests fall in one minute's budgets.
func (a *arena) startOfMinute() {
	now := time.Now().Add(time.Duration(a.env.Clock.Load()))
	next := now.Truncate(time.Minute).Add(time.Minute + 100*time.Millisecond)
	a.env.Clock.Add(int64(next.Sub(now)))
}

// flushSummaries moves the server's clock past the minute and writes the
// summaries of what was not audited one by one, as the server does every
// minute and when it stops.
func (a *arena) flushSummaries() {
	a.t.Helper()
	a.env.Clock.Add(int64(time.Minute))
	if err := a.env.Server.FlushAuditSummaries(context.Background()); err != nil {
		a.t.Fatal(err)
	}
}

// refusedIn sums what the entries say was refused: one per entry, or the
// count a summary entry gives.
func refusedIn(t *testing.T, es []api.AuditEntry) int {
	t.Helper()
	n := 0
	for _, e := range es {
		if e.Outcome == "ok" {
			continue
		}
		if c, ok := e.Params["refused"]; ok {
			var k int
			if _, err := fmt.Sscan(c, &k); err != nil {
				t.Fatalf("summary count %q: %v", c, err)
			}
			n += k
			continue
		}
		n++
	}
	return n
}

// TestAttackAuditFloodOneAddress: without a token, an attacker sends
// malformed logins carrying 4 KB each, and requests whose query string
// holds 60 parameters of 1 KB. The audit log must not take an entry per
// request, nor kilobytes per entry: past a few entries a minute, the
// address's refusals are summed up in one entry, and echoed details are
// capped.
func TestAttackAuditFloodOneAddress(t *testing.T) {
	a := newArena(t)
	a.startOfMinute()
	hc := a.from("127.0.0.5")
	junk := strings.Repeat("A", 4000)
	var q strings.Builder
	for i := range 60 {
		fmt.Fprintf(&q, "&p%d=%s", i, strings.Repeat("B", 1000))
	}
	const n = 300
	for i := range n {
		var r answer
		switch i % 3 {
		case 0:
			r = a.send(hc, "POST", "/v1/login", "", []byte(`{"name":"`+junk+`","`+junk+`":1}`))
		case 1:
			r = a.send(hc, "POST", "/v1/login", "", []byte(`{"name":"`+junk+`","password":`))
		default:
			r = a.send(hc, "GET", "/v1/vaults/a?"+q.String()[1:], "", nil)
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.status < 400 {
			t.Fatalf("request %d answered %d", i, r.status)
		}
	}
	es := a.auditEntries()
	t.Logf("%d requests: %d entries before the summary", n, len(es))
	if len(es) > 20 {
		t.Errorf("%d refused requests from one address made %d audit entries in a minute, want at most 20", n, len(es))
	}
	for _, e := range es {
		if p, _ := json.Marshal(e); len(p) > 2048 {
			t.Errorf("an audit entry of a refused request holds %d bytes, want at most 2 KiB: %.300s…", len(p), p)
			break
		}
	}
	a.flushSummaries()
	es = a.auditEntries()
	if got := refusedIn(t, es); got != n {
		t.Errorf("the audit log accounts for %d refused requests, want %d", got, n)
	}
	if len(es) > 21 {
		t.Errorf("%d entries after the summary, want at most 21", len(es))
	}
}

// TestAttackAuditFloodManyAddresses: the same flood spread over 60
// addresses. Per-address budgets are not enough: the entries of all
// addresses in a minute, summaries included, are bounded.
func TestAttackAuditFloodManyAddresses(t *testing.T) {
	a := newArena(t)
	a.startOfMinute()
	const addrs, each = 60, 15
	for i := range addrs {
		hc := a.from(fmt.Sprintf("127.0.0.%d", 10+i))
		for range each {
			if r := a.send(hc, "POST", "/v1/login", "", []byte(`{"name":`)); r.err != nil || r.status != http.StatusBadRequest {
				t.Fatalf("%d %v %s", r.status, r.err, r.body)
			}
		}
	}
	a.flushSummaries()
	es := a.auditEntries()
	t.Logf("%d requests from %d addresses: %d entries", addrs*each, addrs, len(es))
	if len(es) > 130 {
		t.Errorf("%d refused requests from %d addresses made %d audit entries, want at most 130", addrs*each, addrs, len(es))
	}
	if got := refusedIn(t, es); got != addrs*each {
		t.Errorf("the audit log accounts for %d refused requests, want %d", got, addrs*each)
	}
}

// zeroFrame is one zstd frame of n zero bytes (a few KiB), written in
// steps so that the test never holds n bytes.
func zeroFrame(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	z := make([]byte, 1<<20)
	for i := 0; i < n; i += len(z) {
		zw.Write(z[:min(len(z), n-i)])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// uploadRecord is one upload record: header (raw and encoded lengths as
// declared) and body (as sent, which may be shorter).
func uploadRecord(t vault.BlobType, rawLen, encLen int, body []byte) []byte {
	var id vault.ID
	id[0] = byte(len(body))
	return append(api.AppendUploadHeader(nil, api.Ref{Type: t, ID: id}, rawLen, encLen), body...)
}

func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestAttackUploadDeclaredLengths: an operator's upload records declare
// lengths the bytes do not back: 128 MiB of raw data in a 4 KiB zstd
// frame, 64 MiB of encoded data followed by 4 KiB and the end of the
// body. The server must refuse data blobs longer than the vault's chunker
// allows and allocate for a blob no more than a bound ahead of the bytes
// that arrived: 48 such requests must not make it allocate gigabytes.
func TestAttackUploadDeclaredLengths(t *testing.T) {
	a := newArena(t)
	op := a.roleToken(authn.RoleBackupOperator, "a")
	const mib = 1 << 20
	frame := append([]byte{1}, zeroFrame(t, 128*mib)...)
	short := make([]byte, 4096)
	bodies := [][]byte{
		uploadRecord(vault.DataBlob, 128*mib, len(frame), frame),
		uploadRecord(vault.DataBlob, 64*mib, 64*mib+1, short),
		uploadRecord(vault.TreeBlob, 100*mib, 100*mib+1, short),
	}
	runtime.GC()
	before := readMetric("/gc/heap/allocs:bytes")
	for i := range 16 {
		for j, b := range bodies {
			r := a.send(a.hc, "POST", "/v1/vaults/a/blobs", op, b)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status != http.StatusBadRequest && r.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("round %d body %d: status %d: %s", i, j, r.status, r.body)
			}
		}
	}
	allocated := readMetric("/gc/heap/allocs:bytes") - before
	t.Logf("48 lying uploads: %d MiB allocated", allocated>>20)
	if allocated > 256*mib {
		t.Errorf("48 uploads of 4 KiB declaring large blobs made the server allocate %d MiB, want under 256 MiB", allocated>>20)
	}
}

// TestAttackUploadTreeBombsBounded: a tree may legitimately decode to
// tens of MiB, so a tree record declaring 128 MiB of raw data in a 4 KiB
// frame is decoded; 16 of them in parallel must not multiply the memory
// that takes: the live heap stays far below 16 × 128 MiB.
func TestAttackUploadTreeBombsBounded(t *testing.T) {
	a := newArena(t)
	op := a.roleToken(authn.RoleBackupOperator, "a")
	const mib = 1 << 20
	frame := append([]byte{1}, zeroFrame(t, 128*mib)...)
	body := uploadRecord(vault.TreeBlob, 128*mib, len(frame), frame)
	// The heap sample counts objects not yet swept as well as live ones;
	// collecting often keeps it close to what the server holds, so that a
	// late collection (under -race, on a busy machine) is not read as a
	// bomb the budget let through.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	base := readMetric("/memory/classes/heap/objects:bytes")
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if v := readMetric("/memory/classes/heap/objects:bytes"); v > peak.Load() {
				peak.Store(v)
			}
		}
	}()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := a.send(a.hc, "POST", "/v1/vaults/a/blobs", op, body); r.err != nil || r.status != http.StatusBadRequest {
				t.Errorf("tree bomb: %d %v %s", r.status, r.err, r.body)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	grew := int64(peak.Load()) - int64(base)
	t.Logf("16 parallel tree bombs: heap grew by at most %d MiB", grew>>20)
	if grew > 1024*mib {
		t.Errorf("16 parallel tree bombs grew the heap by %d MiB, want under 1 GiB", grew>>20)
	}
}

// slowRequest opens a raw HTTP/1.1 connection, sends head and the first
// bytes of a body it declares longer, and stalls. It returns what the
// server answers before it closes the connection (within a generous
// bound: the server's own timeout was 10 minutes).
func (a *arena) slowRequest(head string, declared int) (status int, closed bool) {
	a.t.Helper()
	cfg := a.env.TLS.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(a.env.URL, "https://"), cfg)
	if err != nil {
		a.t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%sHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"name\":", head, declared)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, false
		}
		return 0, true // closed without an answer
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_, err = br.ReadByte()
	var ne net.Error
	return resp.StatusCode, !(errors.As(err, &ne) && ne.Timeout())
}

// TestAttackSlowBodies: without a token, an attacker starts requests
// and never finishes their bodies. A login's body must arrive within a
// short bound, and a request refused at authentication must be answered
// at once and its connection closed, not held reading a body nobody will
// read.
func TestAttackSlowBodies(t *testing.T) {
	a := newArenaWith(t, servertest.Options{Configure: func(o *server.Options) { o.BodyTimeout = 300 * time.Millisecond }})
	if status, closed := a.slowRequest("POST /v1/login HTTP/1.1\r\n", 100); !closed {
		t.Errorf("a login whose body never ends held its connection for 30 s (answer %d)", status)
	}
	for _, c := range []struct{ head, what string }{
		{"POST /v1/vaults/a/blobs HTTP/1.1\r\n", "without a token"},
		{"POST /v1/vaults/a/blobs HTTP/1.1\r\nAuthorization: Bearer cft_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n", "with a wrong token"},
		{"POST /v1/vaults/a/blobs HTTP/1.1\r\nAuthorization: Bearer " + a.roleToken(authn.RoleBackupReader, "a") + "\r\n", "with a reader's token"},
	} {
		status, closed := a.slowRequest(c.head, 1000)
		if status != http.StatusUnauthorized && status != http.StatusForbidden {
			t.Errorf("an upload %s whose body never ends: answer %d, want 401 or 403 at once", c.what, status)
		}
		if !closed {
			t.Errorf("an upload %s refused with %d held its connection for 30 s", c.what, status)
		}
	}
}

// TestAttackLooseDataDir: a data directory that other users of the
// machine may read or write (0777, as a careless mkdir or a volume mount
// leaves it), or a key directory or key file in it that they may read,
// must keep the server from starting, saying how to fix it.
func TestAttackLooseDataDir(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	open := func() error {
		s, _, err := server.Open(ctx, server.Options{DataDir: dir})
		if err == nil {
			s.Close()
		}
		return err
	}
	if err := open(); err != nil { // creates it, private
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o777},
		{dir, 0o750},
		{filepath.Join(dir, "keys"), 0o755},
		{filepath.Join(dir, "keys", "platform.key"), 0o644},
		{filepath.Join(dir, "audit"), 0o755},
		{filepath.Join(dir, "audit", "signing.key"), 0o640},
		{filepath.Join(dir, "catalog.db"), 0o644},
	} {
		st, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(c.path, c.mode); err != nil {
			t.Fatal(err)
		}
		err = open()
		os.Chmod(c.path, st.Mode().Perm())
		if err == nil {
			t.Errorf("the server started with %s at mode %04o", c.path, c.mode)
		} else if !strings.Contains(err.Error(), "chmod") {
			t.Errorf("%s at mode %04o: the error does not say how to fix it: %v", c.path, c.mode, err)
		}
	}
	if err := open(); err != nil {
		t.Errorf("private again, the server does not start: %v", err)
	}
}

// TestAttackReadsAudited: an operator dumps blobs one by one and in
// batches, another operator token probes which blobs the vault holds (the dedup
// oracle). Neither may leave the audit log without a trace: each
// minute's reads and probes of a token on a vault are summed up in one
// entry (requests, blobs, bytes; IDs probed).
func TestAttackReadsAudited(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	eng, err := a.env.Server.Engine(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	var refs []api.Ref
	for i := range 4 {
		data := bytes.Repeat([]byte{byte(i)}, 1000+i)
		id := eng.BlobID(data)
		if _, err := eng.SaveBlob(ctx, vault.DataBlob, id, eng.Codec().Encode(nil, data), len(data)); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, api.Ref{Type: vault.DataBlob, ID: id})
	}
	if err := eng.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	reader := a.roleToken(authn.RoleBackupOperator, "a")
	for _, r := range refs[:3] {
		a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a/data/"+r.ID.String(), reader, nil)
	}
	var batch []byte
	for _, r := range refs[2:] {
		batch = api.AppendRef(batch, r)
	}
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/read", reader, batch)
	op := a.roleToken(authn.RoleBackupOperator, "a")
	var probe []byte
	for i := range 5 {
		var id vault.ID
		id[0] = byte(i)
		probe = api.AppendRef(probe, api.Ref{Type: vault.DataBlob, ID: id})
	}
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/missing", op, probe)
	a.flushSummaries()
	var es []api.AuditEntry
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/audit", a.env.OwnerToken, nil), &es); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"reader":   {"requests": "4", "data_blobs": "5"},
		"operator": {"requests": "1", "ids_probed": "5", "ids_missing": "5"},
	}
	found := map[string]bool{}
	for _, e := range es {
		if e.Op != "reads.summary" || e.Vault != "a" {
			continue
		}
		who := "reader"
		if e.Params["ids_probed"] != "" {
			who = "operator"
		}
		found[who] = true
		for k, v := range want[who] {
			if e.Params[k] != v {
				t.Errorf("%s's summary: %s = %q, want %q (%v)", who, k, e.Params[k], v, e.Params)
			}
		}
		if who == "reader" && (e.Params["bytes"] == "" || e.Params["bytes"] == "0") {
			t.Errorf("reader's summary counts no bytes: %v", e.Params)
		}
	}
	for who := range want {
		if !found[who] {
			t.Errorf("no audit entry sums up the %s's reads", who)
		}
	}
}

// TestAttackManySessions: an operator token opens backup sessions
// without end (a new Coffer-Session on every request). Each is a catalog
// row that prune must respect; a token may hold only a bounded number at
// once, and a session that went quiet frees its place.
func TestAttackManySessions(t *testing.T) {
	a := newArena(t)
	op := a.roleToken(authn.RoleBackupOperator, "a")
	refused := 0
	for i := range 40 {
		req, err := http.NewRequest("POST", a.env.URL+"/v1/vaults/a/missing", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+op)
		req.Header.Set(api.HeaderSession, fmt.Sprintf("%032x", i+1))
		resp, err := a.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("session %d: status %d", i, resp.StatusCode)
		}
	}
	if refused < 40-16 {
		t.Errorf("one token opened %d backup sessions at once, want at most 16", 40-refused)
	}
	// Sessions gone quiet make room again.
	a.env.Clock.Add(int64(20 * time.Minute))
	req, _ := http.NewRequest("POST", a.env.URL+"/v1/vaults/a/missing", nil)
	req.Header.Set("Authorization", "Bearer "+op)
	req.Header.Set(api.HeaderSession, fmt.Sprintf("%032x", 1000))
	resp, err := a.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a new session after the others went quiet: %d", resp.StatusCode)
	}
}

// TestAttackAuditGrowthOnSuccess: a reader's token polls what it may
// read (the snapshot list) in a tight loop. Each success used to be an
// audit entry; past a few a minute they are summed up in the token's
// reads.summary entry instead, which accounts for every one.
func TestAttackAuditGrowthOnSuccess(t *testing.T) {
	a := newArena(t)
	a.startOfMinute()
	reader := a.roleToken(authn.RoleBackupReader, "a")
	hc := a.from("127.0.0.42")
	const n = 200
	for range n {
		if r := a.send(hc, "GET", "/v1/vaults/a/snapshots", reader, nil); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("%d %v %s", r.status, r.err, r.body)
		}
	}
	a.flushSummaries()
	es := a.auditEntries()
	counted := 0
	for _, e := range es {
		if e.Op == "reads.summary" {
			var k int
			fmt.Sscan(e.Params["other_reads"], &k)
			counted += k
		} else {
			counted++
		}
	}
	t.Logf("%d polls: %d entries", n, len(es))
	if len(es) > 40 {
		t.Errorf("%d successful polls by one token made %d audit entries in a minute, want at most 40", n, len(es))
	}
	if counted != n {
		t.Errorf("the audit log accounts for %d polls, want %d", counted, n)
	}
}

// TestAttackConnectionsPerAddress: without a token, one address opens
// connections and holds them without a word. Past a bound per address
// the server closes further ones at once; another address is served.
func TestAttackConnectionsPerAddress(t *testing.T) {
	a := newArena(t)
	addr := strings.TrimPrefix(a.env.URL, "https://")
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.77")}}
	for range server.MaxConnsPerAddr {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(100 * time.Millisecond) // let the server accept them all
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: a.env.TLS, DialContext: d.DialContext}}
	defer hc.CloseIdleConnections()
	if r := a.send(hc, "GET", "/healthz", "", nil); r.err == nil {
		t.Errorf("connection %d from one address served (%d)", server.MaxConnsPerAddr+1, r.status)
	}
	if r := a.send(a.from("127.0.0.78"), "GET", "/healthz", "", nil); r.err != nil || r.status != http.StatusOK {
		t.Errorf("another address refused: %d %v", r.status, r.err)
	}
}
