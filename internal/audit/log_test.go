package audit_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/audit/audittest"
)

// TestMemStore runs the conformance suite on the in-memory store the
// other tests may use.
func TestMemStore(t *testing.T) {
	audittest.TestStore(t, func(testing.TB) audit.Store { return audittest.NewMemStore() })
}

// TestRoundTrip appends, checkpoints and verifies, and reads the entries
// back.
func TestRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	idx := e.fill(100, 7*time.Second)
	for i, x := range idx {
		if x != int64(i) {
			t.Fatalf("entry %d got index %d", i, x)
		}
	}
	cp, err := e.log.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 100 {
		t.Fatalf("checkpoint of %d entries, want 100", cp.Size)
	}
	tree, err := audit.OpenCheckpoint(cp, e.vkey)
	if err != nil {
		t.Fatal(err)
	}

	r := e.verify(audit.VerifyOptions{Now: e.clock.Now()})
	if !r.OK() || r.Err() != nil {
		t.Fatalf("verify: %v\n%s", r.Err(), r)
	}
	if r.Entries != 100 || r.Unproven != 0 || r.Latest == nil || r.Latest.Size != 100 || r.Tree != tree {
		t.Errorf("report: %d entries, %d unproven, latest %+v, tree %v; want 100, 0, the checkpoint, %v", r.Entries, r.Unproven, r.Latest, r.Tree, tree)
	}
	if r.Checkpoints != len(e.checkpoints()) || r.Checkpoints < 10 {
		t.Errorf("%d checkpoints verified, %d stored", r.Checkpoints, len(e.checkpoints()))
	}
	// With the checkpoint as trusted, nothing changes.
	if r := e.verify(audit.VerifyOptions{Trusted: &cp}); !r.OK() || !r.TrustedOK {
		t.Errorf("verify with the latest as trusted: %v (trusted ok %v)", r.Err(), r.TrustedOK)
	}

	all, err := audit.Entries(ctx, e.cat, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 100 {
		t.Fatalf("Entries: %d", len(all))
	}
	for i, got := range all {
		want := entry(i)
		if got.Index != int64(i) || got.Entry.Op != want.Op || !maps.Equal(got.Entry.Params, want.Params) || got.Entry.Vault != want.Vault {
			t.Fatalf("entry %d = %+v, want %+v", i, got, want)
		}
	}
	if !all[0].Entry.Time.Equal(time.Date(2026, 5, 6, 7, 0, 7, 0, time.UTC)) {
		t.Errorf("first entry's time %v: Append did not take it from the clock", all[0].Entry.Time)
	}
}

func TestEntriesFilter(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.fill(30, time.Second)
	start := e.clock.Now()
	for _, x := range []audit.Entry{
		{Principal: "alice", Vault: "primary", Op: "snapshot.forget", Outcome: audit.OutcomeDenied, Source: "198.51.100.1:1"},
		{Principal: "alice", Vault: "second", Op: "restore", Outcome: audit.OutcomeOK},
	} {
		e.clock.Add(time.Second)
		if _, err := e.log.Append(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		f    audit.Filter
		want []int64
	}{
		{audit.Filter{Principal: "alice"}, []int64{30, 31}},
		{audit.Filter{Principal: "alice", Vault: "second"}, []int64{31}},
		{audit.Filter{Outcome: audit.OutcomeDenied}, []int64{30}},
		{audit.Filter{Op: "restore"}, []int64{31}},
		{audit.Filter{Since: start}, []int64{29, 30, 31}}, // entry 29 was at start
		{audit.Filter{Since: start.Add(2 * time.Second)}, []int64{31}},
		{audit.Filter{Until: start.Add(-28 * time.Second)}, []int64{0}}, // before entry 1's time
		{audit.Filter{Vault: "primary", Limit: 2}, []int64{27, 30}},
		{audit.Filter{Limit: 3}, []int64{29, 30, 31}},
		{audit.Filter{Vault: "none"}, nil},
	} {
		got, err := audit.Entries(ctx, e.cat, c.f)
		if err != nil {
			t.Fatal(err)
		}
		var idx []int64
		for _, g := range got {
			idx = append(idx, g.Index)
		}
		if !slices.Equal(idx, c.want) {
			t.Errorf("Entries(%+v) = %v, want %v", c.f, idx, c.want)
		}
	}
}

// TestCheckpointEveryMinute drives the clock: while entries arrive, no
// entry waits longer than CheckpointEvery for a signed checkpoint, and
// an idle log gets no new ones.
func TestCheckpointEveryMinute(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	var times []time.Time // of each entry
	for i := range 60 {
		e.clock.Add(7 * time.Second)
		if _, err := e.log.Append(ctx, entry(i)); err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now()
		times = append(times, now)
		latest, err := e.cat.LatestAuditCheckpoint(ctx)
		if i < 8 && errors.Is(err, audit.ErrNotFound) {
			continue // the first minute
		}
		if err != nil {
			t.Fatal(err)
		}
		// Every entry a minute old or more is signed.
		for j, at := range times {
			if now.Sub(at) >= audit.CheckpointEvery && int64(j) >= latest.Size {
				t.Fatalf("at entry %d: entry %d of %v waits unsigned since %v", i, j, at, now.Sub(at))
			}
		}
	}
	cps := e.checkpoints()
	if len(cps) < 6 || len(cps) > 8 {
		t.Errorf("%d checkpoints for 7 minutes of entries, want about 7", len(cps))
	}
	for i := 1; i < len(cps); i++ {
		if gap := cps[i].Time.Sub(cps[i-1].Time); gap > audit.CheckpointEvery+7*time.Second || gap < audit.CheckpointEvery {
			t.Errorf("checkpoints %d and %d %v apart", i-1, i, gap)
		}
	}

	// Idle: no new checkpoint, however much time passes, until an entry.
	if _, err := e.log.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	n := len(e.checkpoints())
	e.clock.Add(time.Hour)
	if _, err := e.log.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if len(e.checkpoints()) != n {
		t.Error("a checkpoint was written for a log that did not grow")
	}
	if _, err := e.log.Append(ctx, entry(0)); err != nil {
		t.Fatal(err)
	}
	if got := e.checkpoints(); len(got) != n+1 || got[n].Size != 61 {
		t.Errorf("after an hour's pause the next entry was not signed at once: %d checkpoints", len(got))
	}
}

// TestRun checks the background loop: it signs entries that arrive, and
// a last checkpoint when stopped.
func TestRun(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.log.Run(ctx, time.Millisecond) }()

	e.fill(3, 0) // the clock stands still: only Run checkpoints
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := e.cat.LatestAuditCheckpoint(t.Context()); err == nil && c.Size == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not sign the entries")
		}
		time.Sleep(time.Millisecond)
	}
	e.fill(2, 0)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c, err := e.cat.LatestAuditCheckpoint(t.Context()); err != nil || c.Size != 5 {
		t.Errorf("after Run stopped the latest checkpoint is %+v, %v; want 5 entries", c, err)
	}
}

// TestConcurrentAppend appends from many goroutines through one Log and
// through a second Log on another handle of the same catalog file (as a
// second process would): every entry gets its own index, and the log
// verifies.
func TestConcurrentAppend(t *testing.T) {
	e := newEnv(t)
	other := e.openLog(e.openCatalog())
	const goroutines, each = 8, 40
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		got = map[int64]string{}
	)
	for g := range goroutines {
		l := e.log
		if g%2 == 1 {
			l = other
		}
		wg.Go(func() {
			for i := range each {
				x := entry(i)
				x.Principal = strings.Repeat("g", g+1)
				x.Params = map[string]string{"i": string(rune('a' + i))}
				e.clock.Add(time.Second)
				idx, err := l.Append(t.Context(), x)
				if err != nil && !errors.Is(err, audit.ErrCheckpoint) {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := got[idx]; dup {
					t.Errorf("index %d given twice (%s)", idx, prev)
				}
				got[idx] = x.Principal + x.Params["i"]
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	n := int64(goroutines * each)
	for i := range n {
		if _, ok := got[i]; !ok {
			t.Fatalf("index %d not given", i)
		}
	}
	if _, err := other.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.log.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := e.verify(audit.VerifyOptions{Now: e.clock.Now()})
	if !r.OK() || r.Entries != n || r.Unproven != 0 {
		t.Fatalf("verify: %d entries, %d unproven, %v\n%s", r.Entries, r.Unproven, r.Err(), r)
	}
	// Each entry is where its index says.
	all, err := audit.Entries(t.Context(), e.cat, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range all {
		if got[x.Index] != x.Entry.Principal+x.Entry.Params["i"] {
			t.Fatalf("entry %d is %s%s, Append said %s", x.Index, x.Entry.Principal, x.Entry.Params["i"], got[x.Index])
		}
	}
}

// TestAppendOutlivesContext: an audited request whose client hung up is
// still recorded.
func TestAppendOutlivesContext(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	x, err := e.log.Append(ctx, entry(0))
	if err != nil || x != 0 {
		t.Fatalf("Append with a cancelled context = %d, %v", x, err)
	}
	if n, _ := e.cat.AuditSize(t.Context()); n != 1 {
		t.Errorf("size %d, want 1", n)
	}
}

func TestAppendRefusesInvalid(t *testing.T) {
	e := newEnv(t)
	if _, err := e.log.Append(t.Context(), audit.Entry{Outcome: audit.OutcomeOK}); err == nil {
		t.Error("Append without an op succeeded")
	}
	if n, _ := e.cat.AuditSize(t.Context()); n != 0 {
		t.Errorf("size %d, want 0", n)
	}
}

// TestOpenSignsCrashTail: entries a previous run left unsigned get a
// checkpoint as soon as the log is opened again.
func TestOpenSignsCrashTail(t *testing.T) {
	e := newEnv(t)
	e.fill(5, 0) // the clock stands still: only the first entry is signed
	if c, err := e.cat.LatestAuditCheckpoint(t.Context()); err != nil || c.Size != 1 {
		t.Fatalf("test: latest checkpoint %+v, %v; want the first entry's", c, err)
	}
	e.openLog(e.cat) // the process restarted
	if c, err := e.cat.LatestAuditCheckpoint(t.Context()); err != nil || c.Size != 5 {
		t.Errorf("after reopening, latest checkpoint %+v, %v; want 5 entries", c, err)
	}
}

// TestOpenWrongKey: a log whose checkpoints another key signed is not
// continued with a new key.
func TestOpenWrongKey(t *testing.T) {
	e := newEnv(t)
	e.fill(3, time.Minute)
	signer, vkey, err := audit.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = audit.Open(t.Context(), audit.Config{Store: e.cat, Signer: signer, VerifierKey: vkey, Now: e.clock.Now})
	if !errors.Is(err, audit.ErrKeyMismatch) {
		t.Errorf("Open with another key: %v, want ErrKeyMismatch", err)
	}
	// A verifier key that is not the signer's.
	_, err = audit.Open(t.Context(), audit.Config{Store: e.cat, Signer: e.signer, VerifierKey: vkey, Now: e.clock.Now})
	if err == nil {
		t.Error("Open with a verifier key of another signer succeeded")
	}
}

// TestOpenSkipsForgedLatest: a forged newest checkpoint does not stop
// the server; it continues from the newest valid one, and Verify
// reports the forgery.
func TestOpenSkipsForgedLatest(t *testing.T) {
	e := newEnv(t)
	e.fill(4, time.Minute)
	forged := forge(t, tlog.Tree{N: 4})
	e.tamperArgs(`INSERT INTO audit_checkpoints (size, note, time) VALUES (?, ?, 0)`, 1000, forged)
	l := e.openLog(e.cat)
	if _, err := l.Append(t.Context(), entry(9)); err != nil {
		t.Fatal(err)
	}
	r := e.verify(audit.VerifyOptions{})
	if !hasProblem(r, audit.KindSignature, -1, -1) || len(r.Problems) != 1 {
		t.Errorf("problems %v, want the forged checkpoint only", kinds(r))
	}
}

// forge returns a checkpoint note for tree signed by a key that is not
// the log's but has the same name.
func forge(t testing.TB, tree tlog.Tree) string {
	t.Helper()
	signer, _, err := audit.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := note.Sign(&note.Note{Text: string(tlog.FormatTree(tree))}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return string(msg)
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	signer, vkey, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(vkey, audit.KeyName+"+") || signer.Name() != audit.KeyName {
		t.Errorf("key %q, signer %q", vkey, signer.Name())
	}
	for name, mode := range map[string]os.FileMode{audit.SigningKeyFile: 0o600, audit.VerifierKeyFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	skey, _ := os.ReadFile(filepath.Join(dir, audit.SigningKeyFile))

	// Loaded again: the same key.
	s2, v2, err := audit.LoadOrCreateKey(dir)
	if err != nil || v2 != vkey || s2.KeyHash() != signer.KeyHash() {
		t.Fatalf("second load: %q, %v; want %q", v2, err, vkey)
	}
	// The signer is not the private key when printed.
	for _, s := range []string{signer.Name(), vkey} {
		if strings.Contains(s, "PRIVATE") {
			t.Errorf("%q holds the private key", s)
		}
	}

	// A lost verifier key file is written again.
	os.Remove(filepath.Join(dir, audit.VerifierKeyFile))
	if _, v3, err := audit.LoadOrCreateKey(dir); err != nil || v3 != vkey {
		t.Errorf("after removing verifier.key: %q, %v", v3, err)
	}
	// A verifier key of another key is refused.
	_, other, _ := audit.LoadOrCreateKey(t.TempDir())
	os.WriteFile(filepath.Join(dir, audit.VerifierKeyFile), []byte(other+"\n"), 0o644)
	if _, _, err := audit.LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("with another verifier key: %v", err)
	}
	// A damaged signing key is an error that does not show the file.
	bad := strings.TrimSuffix(string(skey), "\n") + "x"
	os.WriteFile(filepath.Join(dir, audit.SigningKeyFile), []byte(bad), 0o600)
	_, _, err = audit.LoadOrCreateKey(dir)
	if err == nil || strings.Contains(err.Error(), "PRIVATE") || strings.Contains(err.Error(), bad[len(bad)-20:]) {
		t.Errorf("damaged signing key: %v", err)
	}
}

// TestLoadOrCreateKeyConcurrent: processes starting at once agree on one
// key.
func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		vkeys = map[string]bool{}
	)
	for range 8 {
		wg.Go(func() {
			_, vkey, err := audit.LoadOrCreateKey(dir)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			vkeys[vkey] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(vkeys) != 1 {
		t.Errorf("%d different keys created", len(vkeys))
	}
}
