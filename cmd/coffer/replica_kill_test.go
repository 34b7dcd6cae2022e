package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/postgres"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// replicaSite is what the replicas of one deployment share: a PostgreSQL
// catalog, a bucket on a versitygw with Object Lock (coffer server
// --store s3://BUCKET/coffer) and a data directory (platform key, audit
// signing key, TLS material).
type replicaSite struct {
	catalog string
	s3      *s3test.Server
	bucket  string
	data    string
}

func (s *replicaSite) storeURL() string { return s.s3.URL(s.bucket, "coffer") }

// newReplicaSite starts versitygw (first: without it the test skips
// before PostgreSQL starts) and a PostgreSQL catalog, makes a bucket with
// Object Lock, and gives this process the bucket's credentials through
// the environment, as the children get them (the in-process server of a
// test's setup reads them there).
func newReplicaSite(t *testing.T) *replicaSite {
	t.Helper()
	sv := s3test.Start(t)
	site := &replicaSite{catalog: pgtest.URL(t), s3: sv, data: filepath.Join(t.TempDir(), "data")}
	site.bucket = site.s3.Bucket(t, true)
	t.Setenv("AWS_ACCESS_KEY_ID", site.s3.Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", site.s3.Secret)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return site
}

// childEnv is the environment of a `coffer server` child: the catalog and
// the bucket's credentials (the standard AWS chain's environment), and
// nothing else.
func (s *replicaSite) childEnv() []string {
	return []string{"COFFER_TEST_MAIN=1", "COFFER_CATALOG=" + s.catalog,
		"AWS_ACCESS_KEY_ID=" + s.s3.Access, "AWS_SECRET_ACCESS_KEY=" + s.s3.Secret,
		"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent", "AWS_EC2_METADATA_DISABLED=true"}
}

// replica is a `coffer server` child process.
type replica struct {
	cmd  *exec.Cmd
	url  string
	log  *lockedBuffer
	done chan error
}

// startReplica runs `coffer server` on the site in a child process (the
// test binary as coffer), on a port of its own, and waits until it
// listens.
func startReplica(t *testing.T, s *replicaSite) *replica {
	t.Helper()
	return startReplicaVia(t, s, s.s3.Endpoint, nil)
}

// kill sends SIGKILL and waits for the process to end.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-r.done
	r.done <- err
	if ee, ok := err.(*exec.ExitError); !ok || !ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("the server ended with %v before it was killed:\n%s", err, r.log.String())
	}
}

// serveInProcess runs `coffer server` on the site in this process with
// e's clock, until stop is called.
func serveInProcess(t *testing.T, e *testEnv, s *replicaSite) (url string, stop func()) {
	t.Helper()
	var out, log lockedBuffer
	addrc := make(chan string, 1)
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &log, getenv: e.getenv, now: e.now,
		onListen: func(addr string) { addrc <- addr }}
	root := newRootCmd(a)
	root.SetArgs([]string{"server", "--data", s.data, "--listen", "127.0.0.1:0", "--store", s.storeURL()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	select {
	case addr := <-addrc:
		return "https://" + addr, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server stopped with %v\n%s", err, log.String())
			}
		}
	case err := <-done:
		cancel()
		t.Fatalf("server exited: %v\n%s", err, log.String())
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("server did not start")
	}
	return "", nil
}

// TestReplicaKilledMidPrune: two `coffer server` processes share one
// PostgreSQL catalog and one bucket. A prune through the first is killed
// (SIGKILL) while it deletes the objects of the expired snapshots it
// removed from the chain, or later, while it deletes the packs only they
// needed. Then a prune through the other server takes the job lock at
// once (the dead server's advisory lock went with its connection, and its
// prune session does not hold the job back) and completes the job: the
// catalog lists exactly the packs and snapshots the bucket holds, no
// condemned pack is left, check --read-data finds nothing to report, and
// the kept snapshots restore byte for byte.
func TestReplicaKilledMidPrune(t *testing.T) {
	t.Run("deleting snapshot objects", func(t *testing.T) { killMidPrune(t, true) })
	t.Run("deleting packs", func(t *testing.T) { killMidPrune(t, false) })
}

func killMidPrune(t *testing.T, snapshotPhase bool) {
	ctx := context.Background()
	site := newReplicaSite(t)

	// The vault's history, two months ago (a server and agent whose clock
	// is set back): two sources kept, many backups of data only they
	// hold, forgotten then, so that their soft-delete period is over now.
	e := newEnv(t)
	e.clock = time.Now().Add(-60 * 24 * time.Hour)
	e.setenv("COFFER_CATALOG", site.catalog)
	url, stop := serveInProcess(t, e, site)
	tokFile := filepath.Join(site.data, "initial-owner-token")
	e.setenv("COFFER_CACERT", filepath.Join(site.data, "tls", "ca.pem"))
	e.setenv("COFFER_TOKEN", "@"+tokFile)
	mustCoffer(t, e, "vault", "create", "v", "--vault", url)
	e.setenv("COFFER_VAULT", url+"/v")
	keep := map[string]string{}
	for _, host := range []string{"keep1", "keep2"} {
		src := filepath.Join(t.TempDir(), host)
		writeFile(t, filepath.Join(src, "big"), randBytes(uint64(len(keep)+1), 3<<20), 0o644)
		writeFile(t, filepath.Join(src, "d", "small"), []byte("kept by "+host), 0o644)
		keep[host] = src
		backupJSON(t, e, src, "--host", host)
	}
	const junk = 40
	var forget []string
	for i := range junk {
		src := filepath.Join(t.TempDir(), fmt.Sprintf("junk%d", i))
		writeFile(t, filepath.Join(src, "f"), randBytes(uint64(1000+i), 200_000), 0o644)
		forget = append(forget, backupJSON(t, e, src, "--host", fmt.Sprintf("junk%d", i)))
	}
	mustCoffer(t, e, append([]string{"forget"}, forget...)...)
	stop()

	cat, err := postgres.Open(ctx, site.catalog)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	rec, err := cat.Vault(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	packs := func() (all, condemned int) {
		t.Helper()
		if err := cat.Packs(ctx, rec.ID, func(p vault.PackRecord) error {
			all++
			if !p.Condemned.IsZero() {
				condemned++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return all, condemned
	}
	before, _ := packs()
	if before < 2*junk {
		t.Fatalf("%d packs before the prune; want at least %d", before, 2*junk)
	}

	// Now: two replicas, agents and commands at today's time.
	a, b := startReplica(t, site), startReplica(t, site)
	e.clock = time.Now()
	e.setenv("COFFER_VAULT", "")
	pruneA := make(chan string, 1)
	go func() {
		// The first prune: through a, which is killed under it.
		out, errOut, code := coffer(t, e, "prune", "--vault", a.url+"/v")
		pruneA <- fmt.Sprintf("exit %d: %s%s", code, out, errOut)
	}()
	// Wait until a is in the phase to interrupt: deleting the objects of
	// the snapshots it removed from the chain (the catalog lists only
	// the kept ones, the bucket holds more), or deleting the condemned
	// packs (some are gone from the catalog, others are still there
	// condemned).
	deadline := time.Now().Add(2 * time.Minute)
	for {
		all, condemned := packs()
		if snapshotPhase {
			snaps, err := cat.Snapshots(ctx, rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(snaps) == len(keep) {
				objs := len(site.s3.Names(t, site.bucket, "coffer/vaults/v/snapshots/"))
				if objs == len(keep) {
					t.Fatal("the prune through a deleted every removed snapshot's object before it could be killed")
				}
				t.Logf("killing a: %d snapshots in the catalog, %d snapshot objects in the bucket", len(snaps), objs)
				break
			}
		} else if all < before && condemned > 0 {
			t.Logf("killing a: %d of %d packs removed, %d condemned still there", before-all, before, condemned)
			break
		}
		select {
		case res := <-pruneA:
			t.Fatalf("the prune through a ended before it could be killed mid-way (%d packs, %d condemned): %s", all, condemned, res)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the prune through a did not start deleting packs (%d packs, %d condemned)", all, condemned)
		}
		time.Sleep(2 * time.Millisecond)
	}
	job := "prune " + rec.ID.String()
	if unlock, ok, err := cat.TryJobLock(ctx, job); err != nil || ok {
		if ok {
			unlock()
		}
		t.Errorf("the vault's prune job lock is free while a prunes (%v)", err)
	}
	a.kill(t)
	if res := <-pruneA; strings.HasPrefix(res, "exit 0") {
		t.Fatalf("the prune through the killed server reports success: %s", res)
	}
	// PostgreSQL ends the dead server's connections, and with them its
	// lock.
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		unlock, ok, err := cat.TryJobLock(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			unlock()
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("the killed server's job lock is still held after 30 s")
		}
	}
	_, condemnedLeft := packs()

	// The other replica takes the job on and completes it.
	var rep struct {
		Deleted   int `json:"packs_deleted"`
		Condemned int `json:"packs_condemned"`
		Waiting   int `json:"packs_waiting"`
	}
	out := mustCoffer(t, e, "prune", "--json", "--vault", b.url+"/v")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("prune --json printed %q: %v", out, err)
	}
	if !snapshotPhase && rep.Deleted != condemnedLeft || rep.Waiting != 0 || rep.Deleted == 0 {
		t.Errorf("the prune through b deleted %d packs with %d waiting; want the %d the killed prune left condemned, none waiting (%s)",
			rep.Deleted, rep.Waiting, condemnedLeft, out)
	}

	// Nothing half-done: the catalog's packs are the bucket's, none
	// condemned; its snapshots are the bucket's.
	all, condemned := packs()
	if condemned != 0 {
		t.Errorf("%d condemned packs left after the prune through b", condemned)
	}
	inCatalog := map[string]bool{}
	if err := cat.Packs(ctx, rec.ID, func(p vault.PackRecord) error {
		inCatalog[p.ID.String()] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inBucket := site.s3.Names(t, site.bucket, "coffer/vaults/v/packs/"); !maps.Equal(inCatalog, inBucket) {
		t.Errorf("the catalog lists %d packs, the bucket holds %d: want the same", len(inCatalog), len(inBucket))
	}
	snaps, err := cat.Snapshots(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	snapIDs := map[string]bool{}
	for _, s := range snaps {
		snapIDs[s.ID.String()] = true
	}
	if inBucket := site.s3.Names(t, site.bucket, "coffer/vaults/v/snapshots/"); len(snaps) != len(keep) || !maps.Equal(snapIDs, inBucket) {
		t.Errorf("the catalog lists %d snapshots, the bucket holds %d; want the %d kept in both", len(snaps), len(inBucket), len(keep))
	}
	if all >= before-junk {
		t.Errorf("%d packs of %d left: the junk's packs were not all deleted", all, before)
	}

	// The vault verifies and restores through either server.
	c := startReplica(t, site) // a replaces the killed one
	for _, url := range []string{b.url, c.url} {
		out, errOut, code := coffer(t, e, "check", "--read-data", "--vault", url+"/v")
		if code != exitOK || strings.TrimSpace(errOut) != "" {
			t.Errorf("check --read-data through %s: exit %d\n%s%s", url, code, out, errOut)
		}
	}
	for host, src := range keep {
		target := t.TempDir()
		mustCoffer(t, e, "restore", "latest", "--host", host, "--target", target, "--vault", c.url+"/v")
		assertSameTree(t, src, filepath.Join(target, src))
	}
}
