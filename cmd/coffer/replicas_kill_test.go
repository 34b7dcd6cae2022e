package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/catalog/postgres"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// The tests in this file kill a `coffer server` replica (SIGKILL) in the
// middle of each background job and check that the other replica
// completes it and that nothing is left half-done. The moment to kill is
// found without any hook in the server: each replica reaches the bucket
// through an S3 proxy of its own (s3Gate) run by the test, which holds
// the one request the test waits for (a keyring generation's PUT, the
// vault's first read) until the replica is killed under it.

// s3Gate is an HTTP proxy in front of the S3 server. Requests pass
// through, except the first one hold matches: that one is held, before it
// reaches the S3 server or after its response came back (afterwards),
// until the client goes away; held reports it.
type s3Gate struct {
	URL     string // the proxy's endpoint
	held    chan string
	release chan struct{} // a send lets the held request go on

	mu         sync.Mutex
	match      func(method, path string) bool
	afterwards bool
}

// gateS3 starts a proxy in front of sv for the duration of the test.
func gateS3(t *testing.T, sv *s3test.Server) *s3Gate {
	t.Helper()
	up, err := url.Parse(sv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if up.Scheme != "http" {
		t.Fatalf("the S3 gate proxies plain HTTP; the S3 server is at %s", sv.Endpoint)
	}
	g := &s3Gate{held: make(chan string, 1), release: make(chan struct{}, 1)}
	rp := httputil.NewSingleHostReverseProxy(up)
	// The Host header stays the proxy's: that is the host the client
	// signed its request for (AWS SigV4).
	rp.ModifyResponse = func(resp *http.Response) error {
		if g.take(resp.Request.Method, resp.Request.URL.Path, true) {
			g.hold(resp.Request)
		}
		return nil
	}
	rp.ErrorLog = log.New(io.Discard, "", 0) // a killed client's request is no news
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.take(r.Method, r.URL.Path, false) {
			g.hold(r)
			if r.Context().Err() != nil {
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	g.URL = "http://" + l.Addr().String()
	return g
}

// holdNext arms the gate: the next request whose method and path (the
// bucket's name first) match is held, before it reaches the S3 server,
// or once it is done there with afterwards.
func (g *s3Gate) holdNext(match func(method, path string) bool, afterwards bool) {
	g.mu.Lock()
	g.match, g.afterwards = match, afterwards
	g.mu.Unlock()
}

func (g *s3Gate) take(method, path string, afterwards bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.match == nil || g.afterwards != afterwards || !g.match(method, path) {
		return false
	}
	g.match = nil
	g.held <- method + " " + path
	return true
}

// hold blocks until the client of r goes away (it is killed), the test
// releases the request, or a minute has passed.
func (g *s3Gate) hold(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-g.release:
	case <-time.After(time.Minute):
	}
}

// waitHeld waits until the gate holds a request, and returns it.
func (g *s3Gate) waitHeld(t *testing.T, r *replica, what string) string {
	t.Helper()
	select {
	case req := <-g.held:
		t.Logf("%s: holding %s", what, req)
		return req
	case err := <-r.done:
		r.done <- err
		t.Fatalf("%s: the server ended (%v) before the gate held its request\n%s", what, err, r.log.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s: the gate held nothing in 2 minutes\n%s", what, r.log.String())
	}
	return ""
}

// storeURLVia is the site's store URL with endpoint as the S3 endpoint.
func (s *replicaSite) storeURLVia(endpoint string) string {
	return strings.Replace(s.storeURL(), "endpoint="+s.s3.Endpoint, "endpoint="+endpoint, 1)
}

// startReplicaVia is startReplica with the bucket reached through
// endpoint (an s3Gate), extra environment and extra server flags.
func startReplicaVia(t *testing.T, s *replicaSite, endpoint string, env []string, args ...string) *replica {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"server", "--data", s.data, "--listen", "127.0.0.1:0", "--store", s.storeURLVia(endpoint)}, args...)...)
	cmd.Env = append(s.childEnv(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{cmd: cmd, log: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = r.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				addr <- a
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-r.done
	})
	select {
	case a := <-addr:
		r.url = a
	case err := <-r.done:
		r.done <- err
		t.Fatalf("coffer server exited: %v\n%s", err, r.log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("coffer server did not start listening\n%s", r.log.String())
	}
	return r
}

// killSite is a deployment with one vault, v, whose history was written
// two months ago: sources keep1 and keep2 backed up three times each.
type killSite struct {
	*replicaSite
	e    *testEnv
	cat  *postgres.Catalog
	id   vault.ID
	srcs map[string]string // host → source directory
}

func newKillSite(t *testing.T, setup ...[]string) *killSite {
	t.Helper()
	ctx := context.Background()
	site := newReplicaSite(t)

	e := newEnv(t)
	e.clock = time.Now().Add(-60 * 24 * time.Hour)
	e.setenv("COFFER_CATALOG", site.catalog)
	url, stop := serveInProcess(t, e, site)
	e.setenv("COFFER_CACERT", filepath.Join(site.data, "tls", "ca.pem"))
	e.setenv("COFFER_TOKEN", "@"+filepath.Join(site.data, "initial-owner-token"))
	mustCoffer(t, e, "vault", "create", "v", "--vault", url)
	e.setenv("COFFER_VAULT", url+"/v")
	srcs := map[string]string{}
	for i, host := range []string{"keep1", "keep2"} {
		src := filepath.Join(t.TempDir(), host)
		srcs[host] = src
		for round := range 3 {
			writeFile(t, filepath.Join(src, "big"), randBytes(uint64(10*i+round+1), 1<<20), 0o644)
			writeFile(t, filepath.Join(src, "d", "small"), []byte(fmt.Sprintf("%s round %d", host, round)), 0o644)
			backupJSON(t, e, src, "--host", host)
			e.clock = e.clock.Add(24 * time.Hour)
		}
	}
	for _, args := range setup {
		mustCoffer(t, e, args...)
	}
	stop()
	e.clock = time.Now()
	e.setenv("COFFER_VAULT", "")

	cat, err := postgres.Open(ctx, site.catalog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	rec, err := cat.Vault(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	return &killSite{replicaSite: site, e: e, cat: cat, id: rec.ID, srcs: srcs}
}

// keyringPut matches the PUT of a keyring generation of vault v.
func keyringPut(method, path string) bool {
	return method == http.MethodPut && strings.Contains(path, "/coffer/vaults/v/keys/")
}

// lockHeld reports whether another holder has the job lock name.
func (k *killSite) lockHeld(t *testing.T, name string) bool {
	t.Helper()
	unlock, ok, err := k.cat.TryJobLock(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		unlock()
	}
	return !ok
}

// waitLockFree waits until the killed replica's job lock is gone with its
// connection.
func (k *killSite) waitLockFree(t *testing.T, name string) {
	t.Helper()
	for start := time.Now(); k.lockHeld(t, name); time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the killed server's job lock %q is still held after 30 s", name)
		}
	}
}

// keyrings lists the keyring generations in the bucket, oldest first.
func (k *killSite) keyrings(t *testing.T) []uint64 {
	t.Helper()
	var gens []uint64
	for name := range k.s3.Names(t, k.bucket, "coffer/vaults/v/keys/") {
		var g uint64
		if _, err := fmt.Sscanf(name, "%d", &g); err != nil || format.KeyringName(g) != name {
			t.Fatalf("unexpected object keys/%s in the bucket", name)
		}
		gens = append(gens, g)
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i] < gens[j] })
	return gens
}

// anchor is the keyring generation the catalog anchors.
func (k *killSite) anchor(t *testing.T) uint64 {
	t.Helper()
	a, _, err := k.cat.KeyAnchor(context.Background(), k.id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Generation
}

// keyStatus is coffer key status --json through url.
func (k *killSite) keyStatus(t *testing.T, url string) keyStatusJSON {
	t.Helper()
	var st keyStatusJSON
	out := mustCoffer(t, k.e, "key", "status", "--json", "--vault", url+"/v")
	if err := jsonUnmarshal(out, &st); err != nil {
		t.Fatalf("key status --json printed %q: %v", out, err)
	}
	return st
}

type keyStatusJSON struct {
	KEK        string `json:"kek"`
	DEKVersion uint32 `json:"dek_version"`
	KeyringGen uint64 `json:"keyring_generation"`
}

// verifyThrough checks, through the server at url, that the vault
// passes check --read-data with nothing to report and that the newest
// snapshot of every source restores byte for byte.
func (k *killSite) verifyThrough(t *testing.T, url string) {
	t.Helper()
	out, errOut, code := coffer(t, k.e, "check", "--read-data", "--vault", url+"/v")
	if code != exitOK || strings.TrimSpace(errOut) != "" {
		t.Errorf("check --read-data through %s: exit %d\n%s%s", url, code, out, errOut)
	}
	for host, src := range k.srcs {
		target := t.TempDir()
		mustCoffer(t, k.e, "restore", "latest", "--host", host, "--target", target, "--vault", url+"/v")
		assertSameTree(t, src, filepath.Join(target, src))
		os.RemoveAll(target)
	}
}

// noHalfKeyring checks that the bucket holds no keyring generation
// beyond the one the catalog anchors: a generation the killed replica
// stored but did not anchor was completed or removed.
func (k *killSite) noHalfKeyring(t *testing.T) {
	t.Helper()
	gens, a := k.keyrings(t), k.anchor(t)
	if len(gens) == 0 || gens[len(gens)-1] != a {
		t.Errorf("keyring generations in the bucket %v, the catalog anchors %d: want the newest anchored", gens, a)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// TestReplicaKilledMidDEKRotation: a `coffer key rotate` through one
// replica is killed (SIGKILL) while that replica writes the vault's next
// keyring generation to the bucket: before the write reaches the bucket,
// or after it is stored but before the catalog anchors it. Then, through
// the other replica, the vault opens, its key status is the anchored
// generation's, the bucket holds no generation beyond the anchored one,
// check --read-data is clean, every source restores byte for byte, and a
// repeated rotation completes (its new DEK sealing the next backup).
func TestReplicaKilledMidDEKRotation(t *testing.T) {
	t.Run("before the keyring is stored", func(t *testing.T) { killMidDEKRotation(t, false) })
	t.Run("keyring stored, not anchored", func(t *testing.T) { killMidDEKRotation(t, true) })
	t.Run("keyring stored, not anchored, rotated again", killMidDEKRotationRotateAgain)
}

// killMidDEKRotationRotateAgain: after the kill, a rotation through the
// other replica (which has the vault open at the anchored generation)
// finds the stored generation: it is refused once as a concurrent change
// (409), and asked again it builds on that generation.
func killMidDEKRotationRotateAgain(t *testing.T) {
	k := newKillSite(t)
	ga := gateS3(t, k.s3)
	a := startReplicaVia(t, k.replicaSite, ga.URL, nil)
	b := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, nil)
	before := k.keyStatus(t, b.url)
	ga.holdNext(keyringPut, true)
	res := make(chan string, 1)
	go func() {
		out, errOut, code := coffer(t, k.e, "key", "rotate", "--vault", a.url+"/v")
		res <- fmt.Sprintf("exit %d: %s%s", code, out, errOut)
	}()
	ga.waitHeld(t, a, "key rotate through a")
	a.kill(t)
	<-res
	out, errOut, code := coffer(t, k.e, "key", "rotate", "--vault", b.url+"/v")
	if code == exitOK || !strings.Contains(errOut, "changed at the same moment") {
		t.Errorf("the first rotation through b after the kill: exit %d\n%s%s; want it refused as a concurrent change", code, out, errOut)
	}
	mustCoffer(t, k.e, "key", "rotate", "--vault", b.url+"/v")
	st := k.keyStatus(t, b.url)
	if st.KeyringGen != before.KeyringGen+2 || st.DEKVersion != before.DEKVersion+2 {
		t.Errorf("key status after the rotation asked again %+v, before the kill %+v: want it built on the killed one's generation", st, before)
	}
	k.noHalfKeyring(t)
	k.verifyThrough(t, b.url)
}

func killMidDEKRotation(t *testing.T, stored bool) {
	k := newKillSite(t)
	ga := gateS3(t, k.s3)
	a := startReplicaVia(t, k.replicaSite, ga.URL, nil)
	b := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, nil)
	before := k.keyStatus(t, b.url)
	gensBefore := k.keyrings(t)

	ga.holdNext(keyringPut, stored)
	res := make(chan string, 1)
	go func() {
		out, errOut, code := coffer(t, k.e, "key", "rotate", "--vault", a.url+"/v")
		res <- fmt.Sprintf("exit %d: %s%s", code, out, errOut)
	}()
	ga.waitHeld(t, a, "key rotate through a")
	gens := k.keyrings(t)
	if stored && len(gens) != len(gensBefore)+1 {
		t.Fatalf("keyring generations %v while the PUT's answer is held, %v before; want one more", gens, gensBefore)
	}
	a.kill(t)
	if r := <-res; strings.HasPrefix(r, "exit 0") {
		t.Fatalf("the rotation through the killed server reports success: %s", r)
	}

	// The other replica, which has the vault open, goes on at the
	// anchored generation.
	if st := k.keyStatus(t, b.url); st != before {
		t.Errorf("key status through b after the kill %+v, before %+v: want the same", st, before)
	}
	k.verifyThrough(t, b.url)

	// The next replica to unwrap the vault's keys (here one that starts
	// in place of the killed one; a key TTL's end or a key change do the
	// same) completes a stored generation's anchor (docs/format.md §7.2),
	// and b catches up with it at its next request.
	c := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, nil)
	opened := k.keyStatus(t, c.url)
	want := before
	if stored {
		want.DEKVersion, want.KeyringGen = before.DEKVersion+1, before.KeyringGen+1
	}
	if opened != want {
		t.Errorf("key status through a new replica after the kill %+v; want %+v", opened, want)
	}
	k.noHalfKeyring(t)
	if st := k.keyStatus(t, b.url); st != opened {
		t.Errorf("key status through b %+v, through the new replica %+v: want the same", st, opened)
	}

	// A repeated rotation completes, and a backup through it seals under
	// its DEK; everything reads back through the other replica.
	mustCoffer(t, k.e, "key", "rotate", "--vault", b.url+"/v")
	rotated := k.keyStatus(t, b.url)
	if rotated.DEKVersion != opened.DEKVersion+1 || rotated.KeyringGen != opened.KeyringGen+1 {
		t.Errorf("key status after the repeated rotation %+v, before it %+v: want the next DEK and generation", rotated, opened)
	}
	k.noHalfKeyring(t)
	src := k.srcs["keep1"]
	writeFile(t, filepath.Join(src, "new"), randBytes(99, 200_000), 0o644)
	mustCoffer(t, k.e, "backup", src, "--host", "keep1", "--vault", b.url+"/v")
	if st := k.keyStatus(t, c.url); st != rotated {
		t.Errorf("key status through the new replica %+v, through b %+v", st, rotated)
	}
	k.verifyThrough(t, c.url)
}

// platformKeyFile reads the site's platform key versions (kept in the
// shared catalog, sealed): the current version, the newest, and every
// version there is.
func (k *killSite) platformKeyFile(t *testing.T) (cur int, versions []int) {
	t.Helper()
	rows, err := k.cat.PlatformKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		versions = append(versions, r.Version)
		cur = max(cur, r.Version)
	}
	return cur, versions
}

// platformDone waits until the platform key rotation is complete: the
// platform key holds its current version alone, at least version min, the vault
// is wrapped under it and the bucket holds its anchored keyring
// generation alone (the older ones, wrapped under retired versions, are
// gone).
func (k *killSite) platformDone(t *testing.T, url string, min int, within time.Duration) keyStatusJSON {
	t.Helper()
	var why string
	for start := time.Now(); time.Since(start) < within; time.Sleep(200 * time.Millisecond) {
		cur, versions := k.platformKeyFile(t)
		st := k.keyStatus(t, url)
		gens, a := k.keyrings(t), k.anchor(t)
		switch {
		case cur < min || len(versions) != 1:
			why = fmt.Sprintf("platform key: current v%d, versions %v", cur, versions)
		case !strings.HasSuffix(st.KEK, fmt.Sprintf(" v%d", cur)):
			why = fmt.Sprintf("the vault's KEK is %s, the platform key's current version v%d", st.KEK, cur)
		case len(gens) != 1 || gens[0] != a || st.KeyringGen != a:
			why = fmt.Sprintf("keyring generations %v in the bucket, anchor %d, key status %+v", gens, a, st)
		default:
			return st
		}
	}
	t.Fatalf("the platform key rotation is not complete after %s: %s", within, why)
	return keyStatusJSON{}
}

// TestReplicaKilledMidPlatformRotation: the replica whose platform key
// has come of age rotates it, and is killed (SIGKILL) while it rewraps
// the vault under the new version: before the new keyring generation
// reaches the bucket, after it is stored but not anchored, or after it is
// anchored, while the generations wrapped under the old version are
// deleted. The other replica, running all along, completes the job on its
// own: the vault ends up wrapped under the new version alone, the old
// version is deleted from the platform key, the bucket holds no generation
// beyond the anchored one nor one wrapped under the deleted version,
// check --read-data is clean and every source restores byte for byte;
// then a rotation through a new replica completes too.
func TestReplicaKilledMidPlatformRotation(t *testing.T) {
	t.Run("before the keyring is stored", func(t *testing.T) {
		killMidPlatformRotation(t, keyringPut, false)
	})
	t.Run("keyring stored, not anchored", func(t *testing.T) {
		killMidPlatformRotation(t, keyringPut, true)
	})
	t.Run("deleting older keyrings", func(t *testing.T) {
		killMidPlatformRotation(t, func(method, path string) bool {
			return method == http.MethodDelete && strings.Contains(path, "/coffer/vaults/v/keys/")
		}, false)
	})
}

func killMidPlatformRotation(t *testing.T, match func(method, path string) bool, afterwards bool) {
	k := newKillSite(t)
	// The platform key is 60 days old. b would rotate it at 90 days, a at
	// 30: a rotates it at its first maintenance (every second, with a
	// key TTL of 4 s).
	// b sees the rotated platform key at its next maintenance and would
	// rewrap the vault it has open itself: its first keyring write waits
	// until a is dead, so that a is the one killed in the rewrap.
	gb := gateS3(t, k.s3)
	b := startReplicaVia(t, k.replicaSite, gb.URL, nil, "--key-ttl", "4s")
	before := k.keyStatus(t, b.url) // b has the vault open
	if !strings.HasSuffix(before.KEK, " v1") {
		t.Fatalf("the vault's KEK before the rotation: %s", before.KEK)
	}
	gb.holdNext(keyringPut, false)
	ga := gateS3(t, k.s3)
	ga.holdNext(match, afterwards)
	a := startReplicaVia(t, k.replicaSite, ga.URL, []string{"COFFER_KEK_ROTATION=30d"}, "--key-ttl", "4s")
	ga.waitHeld(t, a, "platform key rotation through a")
	if cur, versions := k.platformKeyFile(t); cur != 2 || len(versions) != 2 {
		t.Fatalf("platform key while a rewraps: current v%d, versions %v; want v2 of v1, v2", cur, versions)
	}
	a.kill(t)
	gb.release <- struct{}{}

	// b completes the job on its own.
	st := k.platformDone(t, b.url, 2, time.Minute)
	t.Logf("after the kill, through b: %+v", st)
	k.verifyThrough(t, b.url)

	// A further rotation, by a replica that rotates every 3 seconds,
	// completes; it is stopped once it has.
	c := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, []string{"COFFER_KEK_ROTATION=3s"}, "--key-ttl", "4s")
	k.platformDone(t, c.url, 3, time.Minute)
	c.kill(t)
	k.platformDone(t, b.url, 3, 30*time.Second)
	k.verifyThrough(t, b.url)
}

// policyRuns lists the vault's policy-applied events.
func (k *killSite) policyRuns(t *testing.T) []vault.VaultEvent {
	t.Helper()
	evs, err := k.cat.Events(context.Background(), k.id)
	if err != nil {
		t.Fatal(err)
	}
	var runs []vault.VaultEvent
	for _, ev := range evs {
		if ev.Event == vault.EventPolicyApplied {
			runs = append(runs, ev)
		}
	}
	return runs
}

// liveSnapshots lists the snapshots through the server at url.
func (k *killSite) liveSnapshots(t *testing.T, url string) []snapshotJSON {
	t.Helper()
	var snaps []snapshotJSON
	out := mustCoffer(t, k.e, "snapshots", "--json", "--vault", url+"/v")
	if err := json.Unmarshal([]byte(out), &snaps); err != nil {
		t.Fatalf("snapshots --json printed %q: %v", out, err)
	}
	return snaps
}

// TestReplicaKilledMidRetention: the daily run of the vault's stored
// retention policy (keep the newest snapshot of each source) starts on
// one replica, which is killed (SIGKILL) while it opens the vault to
// apply it. While it holds the run's job lock, the other replica's
// maintenance (every second) skips the run; once the killed replica's
// lock is gone with its connection, the other's next turn applies the
// policy, once: every snapshot the policy does not keep is forgotten and
// every other kept (a forget is one catalog transaction, so none is
// half-forgotten), the run is recorded once, check --read-data is clean
// and every source's newest snapshot restores byte for byte.
func TestReplicaKilledMidRetention(t *testing.T) {
	k := newKillSite(t, []string{"policy", "set", "--keep-last", "1"})
	env := []string{"TZ=UTC"}
	args := []string{"--key-ttl", "4s", "--retention-at", "00:00"}
	if time.Now().UTC().Hour() == 0 && time.Now().UTC().Minute() < 2 {
		t.Skip("too close to the policy run's time of day (00:00 UTC): run again in two minutes")
	}
	ga := gateS3(t, k.s3)
	ga.holdNext(func(method, path string) bool { return strings.Contains(path, "/coffer/vaults/v/") }, false)
	a := startReplicaVia(t, k.replicaSite, ga.URL, env, args...)
	ga.waitHeld(t, a, "retention run through a")
	if !k.lockHeld(t, "retention") {
		t.Fatal("the retention job lock is free while a runs the policy")
	}
	b := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, env, args...)
	time.Sleep(3 * time.Second) // b's maintenance runs, and skips the job a holds
	if runs := k.policyRuns(t); len(runs) != 0 {
		t.Fatalf("policy runs while a holds the job: %+v", runs)
	}
	if snaps := k.liveSnapshots(t, b.url); len(snaps) != 6 {
		t.Fatalf("%d snapshots while a holds the job, want the 6 backed up", len(snaps))
	}
	a.kill(t)

	// b's next turn runs the policy.
	var runs []vault.VaultEvent
	for start := time.Now(); len(runs) == 0; time.Sleep(200 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("no policy run within a minute of the kill\n%s", b.log.String())
		}
		runs = k.policyRuns(t)
	}
	time.Sleep(2 * time.Second) // more turns of b: the run is not repeated
	if runs = k.policyRuns(t); len(runs) != 1 || !runs[0].OK || !strings.Contains(runs[0].Detail, "forgot 4 snapshot(s)") {
		t.Errorf("policy runs after the kill: %+v; want one that forgot 4 snapshots", runs)
	}
	snaps := k.liveSnapshots(t, b.url)
	hosts := map[string]int{}
	for _, s := range snaps {
		hosts[s.Host]++
	}
	if len(snaps) != 2 || hosts["keep1"] != 1 || hosts["keep2"] != 1 {
		t.Errorf("snapshots after the policy run: %d, by host %v; want the newest of each source", len(snaps), hosts)
	}
	k.verifyThrough(t, b.url)
}

// postureRecords counts the vault's posture records in the audit log
// made since since.
func (k *killSite) postureRecords(t *testing.T, since time.Time) int {
	t.Helper()
	ents, err := audit.Entries(context.Background(), k.cat, audit.Filter{Vault: "v", Op: server.OpPostureRecord, Since: since})
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestReplicaKilledMidPostureRecord: the daily posture record (the
// server's scheduled verification: it reads every source's newest report
// from the store and verifies the audit log, then records the vault's
// posture in it) starts on one replica, which is killed (SIGKILL) while
// it reads the vault. While it holds the job's lock, the other replica
// skips the job; after the kill, the other's next turn records the
// vault's posture, once, and the audit log verifies.
func TestReplicaKilledMidPostureRecord(t *testing.T) {
	k := newKillSite(t)
	start := time.Now().Add(-time.Second)
	if n := k.postureRecords(t, start); n != 0 {
		t.Fatalf("%d posture records before the replicas start", n)
	}
	ga := gateS3(t, k.s3)
	// The first read of a snapshot: the record reads the sources' reports
	// from the newest snapshots (the vault was opened before that, to
	// keep its objects locked).
	ga.holdNext(func(method, path string) bool {
		return method == http.MethodGet && strings.Contains(path, "/coffer/vaults/v/snapshots/")
	}, false)
	a := startReplicaVia(t, k.replicaSite, ga.URL, nil, "--key-ttl", "4s")
	ga.waitHeld(t, a, "posture record through a")
	if !k.lockHeld(t, "posture-record") {
		t.Fatalf("the posture-record job lock is free while a reads the vault\n%s", a.log.String())
	}
	b := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, nil, "--key-ttl", "4s")
	time.Sleep(3 * time.Second) // b's maintenance runs, and skips the job a holds
	if n := k.postureRecords(t, start); n != 0 {
		t.Fatalf("%d posture records while a holds the job", n)
	}
	a.kill(t)
	for s := time.Now(); k.postureRecords(t, start) == 0; time.Sleep(200 * time.Millisecond) {
		if time.Since(s) > time.Minute {
			t.Fatalf("no posture record within a minute of the kill\n%s", b.log.String())
		}
	}
	time.Sleep(2 * time.Second) // more turns of b: the record is not repeated
	if n := k.postureRecords(t, start); n != 1 {
		t.Errorf("%d posture records after the kill, want 1", n)
	}
	out, errOut, code := coffer(t, k.e, "audit", "verify", "--vault", b.url)
	if code != exitOK {
		t.Errorf("audit verify through b: exit %d\n%s%s", code, out, errOut)
	}
}

// TestReplicasOneJobAtATime: each job that two replicas are asked to run
// at the same moment runs once. Two replicas whose platform key is due
// rotate it once (the platform key gains one version, not two) and complete
// the rewrap and retirement; of two DEK rotations that both build on the
// same keyring generation, the one that stores the next generation first
// succeeds and the other is refused as a concurrent change (and succeeds
// when asked again, building on the first); a prune asked of one while the other
// prunes is refused (409) until the other is done. (The retention run and
// the posture record are shown skipped by the replica that does not hold
// their lock in TestReplicaKilledMidRetention and
// TestReplicaKilledMidPostureRecord.)
func TestReplicasOneJobAtATime(t *testing.T) {
	t.Run("platform rotation", func(t *testing.T) {
		k := newKillSite(t)
		env := []string{"COFFER_KEK_ROTATION=30d"}
		a := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, env, "--key-ttl", "4s")
		b := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, env, "--key-ttl", "4s")
		k.keyStatus(t, a.url) // both have the vault open
		k.keyStatus(t, b.url)
		k.platformDone(t, a.url, 2, time.Minute)
		time.Sleep(2 * time.Second) // more turns of both
		if cur, versions := k.platformKeyFile(t); cur != 2 || len(versions) != 1 {
			t.Errorf("platform key after both replicas' turns: current v%d, versions %v; want v2 alone", cur, versions)
		}
		if st := k.keyStatus(t, b.url); !strings.HasSuffix(st.KEK, " v2") {
			t.Errorf("the vault's KEK through b: %s, want v2", st.KEK)
		}
		k.verifyThrough(t, b.url)
	})
	t.Run("DEK rotation", func(t *testing.T) {
		k := newKillSite(t)
		ga := gateS3(t, k.s3)
		a := startReplicaVia(t, k.replicaSite, ga.URL, nil)
		b := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, nil)
		base := k.keyStatus(t, a.url)
		k.keyStatus(t, b.url)
		// a's rotation is held just before it stores its keyring
		// generation; b's rotation installs that generation meanwhile.
		ga.holdNext(keyringPut, false)
		res := make(chan string, 1)
		go func() {
			out, errOut, code := coffer(t, k.e, "key", "rotate", "--vault", a.url+"/v")
			res <- fmt.Sprintf("exit %d: %s%s", code, out, errOut)
		}()
		ga.waitHeld(t, a, "key rotate through a")
		mustCoffer(t, k.e, "key", "rotate", "--vault", b.url+"/v")
		ga.release <- struct{}{}
		if r := <-res; !strings.Contains(r, "changed at the same moment") {
			t.Errorf("the rotation through a, whose generation b installed first: %s", r)
		}
		st := k.keyStatus(t, a.url)
		if st.KeyringGen != base.KeyringGen+1 || st.DEKVersion != base.DEKVersion+1 {
			t.Errorf("key status after one rotation through b and one refused through a: %+v, before %+v", st, base)
		}
		// Asked again, a's rotation builds on b's.
		mustCoffer(t, k.e, "key", "rotate", "--vault", a.url+"/v")
		st = k.keyStatus(t, a.url)
		if st.KeyringGen != base.KeyringGen+2 || st.DEKVersion != base.DEKVersion+2 {
			t.Errorf("key status after a's rotation asked again: %+v, before %+v", st, base)
		}
		if sb := k.keyStatus(t, b.url); sb != st {
			t.Errorf("key status through b %+v, through a %+v", sb, st)
		}
		k.noHalfKeyring(t)
		k.verifyThrough(t, b.url)
	})
	t.Run("prune", func(t *testing.T) {
		// The snapshots but each source's newest forgotten two months ago:
		// their soft-delete period is over, a prune deletes them.
		k := newKillSite(t, []string{"forget", "--keep-last", "1", "--group-by", "host"})
		ga := gateS3(t, k.s3)
		a := startReplicaVia(t, k.replicaSite, ga.URL, nil)
		b := startReplicaVia(t, k.replicaSite, k.s3.Endpoint, nil)
		ga.holdNext(func(method, path string) bool { return method == http.MethodDelete }, false)
		res := make(chan string, 1)
		go func() {
			out, errOut, code := coffer(t, k.e, "prune", "--vault", a.url+"/v")
			res <- fmt.Sprintf("exit %d: %s%s", code, out, errOut)
		}()
		ga.waitHeld(t, a, "prune through a")
		out, errOut, code := coffer(t, k.e, "prune", "--vault", b.url+"/v")
		if code == exitOK || !strings.Contains(errOut, "a prune of this vault is running already") {
			t.Errorf("prune through b while a prunes: exit %d\n%s%s", code, out, errOut)
		}
		a.kill(t)
		<-res
		k.waitLockFree(t, "prune "+k.id.String())
		mustCoffer(t, k.e, "prune", "--vault", b.url+"/v")
		if snaps := k.liveSnapshots(t, b.url); len(snaps) != 2 {
			t.Errorf("%d snapshots after the prune, want 2", len(snaps))
		}
		k.verifyThrough(t, b.url)
	})
}
