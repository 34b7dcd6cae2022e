package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/posture"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// localMarker is a plaintext string in the backed-up files, and
// localName a file name: neither may appear anywhere in the cache.
const (
	localMarker = "LOCALCOPY-PLAINTEXT-MARKER-7f3a9c"
	localName   = "quarterly-payroll-secret-name.txt"
)

type localCopiesJSON struct {
	ID    string `json:"snapshot_id"`
	Local *struct {
		Keep      int       `json:"keep"`
		Held      int       `json:"held"`
		Encrypted bool      `json:"encrypted"`
		Cipher    string    `json:"cipher"`
		Lease     time.Time `json:"lease_expires"`
	} `json:"local_copies"`
}

func backupLocal(t *testing.T, e *testEnv, args ...string) localCopiesJSON {
	t.Helper()
	var r localCopiesJSON
	decodeJSON(t, mustCoffer(t, e, append([]string{"backup", "--json"}, args...)...), &r)
	if r.Local == nil {
		t.Fatalf("backup --json printed no local_copies")
	}
	return r
}

// localSource writes a small tree holding the marker and the name; round
// changes one file so each backup differs.
func localSource(t *testing.T, dir string, round int) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "docs", localName), []byte(strings.Repeat(localMarker+" salary table\n", 2000)), 0o644)
	writeFile(t, filepath.Join(dir, "docs", "round.txt"), []byte(strings.Repeat(localMarker, round+1)), 0o644)
	writeFile(t, filepath.Join(dir, "big.bin"), append(randBytes(uint64(round), 3<<20), []byte(localMarker)...), 0o600)
}

// grepTree fails the test when any file under dir holds one of needles.
func grepTree(t *testing.T, dir string, needles ...string) {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range needles {
			if strings.Contains(d.Name(), s) {
				t.Errorf("cache path %s names %q", p, s)
			}
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n++
		for _, s := range needles {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("cache file %s holds %q in plaintext", p, s)
			}
		}
		return nil
	})
	if n < 4 {
		t.Fatalf("only %d files under %s: is that the cache?", n, dir)
	}
}

// TestLocalCopiesThroughServer: backup --local-copies 2 three times
// through a server keeps the newest 2 (the oldest gone); with the server
// stopped, restore --from local gives the files back byte for byte; the
// cache holds neither the files' text nor their names nor the paths; an
// expired lease is refused with how to renew it; a snapshot not held is
// refused with the list of those that are.
func TestLocalCopiesThroughServer(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	web, err := srv.Client(t, srv.OwnerToken).Vault("prod").AddSource(context.Background(), api.AddSource{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", web.Secret)

	src := filepath.Join(t.TempDir(), "payroll-dir-name")
	var ids []string
	for round := range 3 {
		localSource(t, src, round)
		r := backupLocal(t, e, src, "--local-copies", "2")
		ids = append(ids, r.ID)
		if want := min(round+1, 2); r.Local.Held != want || r.Local.Keep != 2 || !r.Local.Encrypted || r.Local.Cipher != "AES-256-GCM" {
			t.Errorf("backup %d: local copies %+v, want %d held of 2, encrypted with AES-256-GCM", round+1, *r.Local, want)
		}
	}
	var list struct {
		Snapshots []struct {
			ID string `json:"snapshot_id"`
		} `json:"snapshots"`
	}
	decodeJSON(t, mustCoffer(t, e, "local-copies", "list", "--json"), &list)
	if len(list.Snapshots) != 2 || list.Snapshots[0].ID != ids[1] || list.Snapshots[1].ID != ids[2] {
		t.Fatalf("local copies held %+v, want the newest two %s %s", list.Snapshots, ids[1][:8], ids[2][:8])
	}

	cache := filepath.Join(e.home, "local-copies")
	grepTree(t, cache, localMarker, localName, "payroll-dir-name", "salary")

	// The server goes away: the local copy restores with no network.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", dst, "--from", "local")
	assertSameTree(t, src, filepath.Join(dst, src))
	dst2 := t.TempDir()
	mustCoffer(t, e, "restore", ids[1][:12], "--target", dst2, "--from", "local")
	if b, _ := os.ReadFile(filepath.Join(dst2, src, "docs", "round.txt")); string(b) != strings.Repeat(localMarker, 2) {
		t.Errorf("the second snapshot restored round.txt as %q", b)
	}
	// The oldest is gone from the cache: refused, naming what is held.
	msg := failsWith(t, e, "not among the local copies", "restore", ids[0][:12], "--target", t.TempDir(), "--from", "local")
	if !strings.Contains(msg, ids[1][:8]) || !strings.Contains(msg, ids[2][:8]) {
		t.Errorf("the refusal does not list the snapshots held: %s", msg)
	}
	// From the vault, with the server down: fails (not silently local).
	if _, _, code := coffer(t, e, "restore", "latest", "--target", t.TempDir()); code == exitOK {
		t.Error("restore --from vault succeeded with the server stopped")
	}

	// The lease (7 days by default) ends: refused, with how to renew.
	e.mu.Lock()
	e.clock = e.clock.Add(7*24*time.Hour + time.Hour)
	e.mu.Unlock()
	msg = failsWith(t, e, "lease expired", "restore", "latest", "--target", t.TempDir(), "--from", "local")
	if !strings.Contains(msg, "coffer local-copies renew") {
		t.Errorf("the expired-lease refusal does not say how to renew: %s", msg)
	}
}

// TestAttackLocalCopiesRevokedToken: once the agent's token is revoked,
// renewal is refused, the lease is dropped from the disk, and the cache
// can no longer be read even before the lease would have ended.
func TestAttackLocalCopiesRevokedToken(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	owner := srv.Client(t, srv.OwnerToken)
	web, err := owner.Vault("prod").AddSource(context.Background(), api.AddSource{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", web.Secret)
	src := filepath.Join(t.TempDir(), "src")
	localSource(t, src, 0)
	backupLocal(t, e, src, "--local-copies", "1")
	mustCoffer(t, e, "local-copies", "renew")
	mustCoffer(t, e, "restore", "latest", "--target", t.TempDir(), "--from", "local")

	if _, err := owner.RevokeToken(context.Background(), web.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, code := coffer(t, e, "local-copies", "renew"); code == exitOK {
		t.Fatal("renew succeeded with a revoked token")
	}
	failsWith(t, e, "lease", "restore", "latest", "--target", t.TempDir(), "--from", "local")
}

// TestAttackLocalCopiesStolenCache: a copy of the cache directory alone
// (without this machine's secret) restores nothing; neither does one
// with the lease file's expiry moved; a tampered pack makes restore name
// the damage, never write wrong bytes; a tampered manifest is refused.
func TestAttackLocalCopiesStolenCache(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	localSource(t, src, 0)
	backupLocal(t, e, src, "--local-copies", "1")
	mustCoffer(t, e, "restore", "latest", "--target", t.TempDir(), "--from", "local")
	grepTree(t, filepath.Join(e.home, "local-copies"), localMarker, localName)

	// Another machine: the same vault path, the cache directory copied,
	// but not this machine's secret.
	thief := newEnv(t)
	thief.setenv("COFFER_HOME", e.home)
	thief.setenv("COFFER_LOCAL_SECRET", filepath.Join(t.TempDir(), "other.secret"))
	os.WriteFile(filepath.Join(t.TempDir(), "other.secret"), bytes.Repeat([]byte{7}, 32), 0o600)
	failsWith(t, thief, "lease", "restore", "latest", "--target", t.TempDir(), "--from", "local")

	dirs, _ := filepath.Glob(filepath.Join(e.home, "local-copies", "*"))
	if len(dirs) != 1 {
		t.Fatalf("cache directories %v", dirs)
	}
	cache := dirs[0]
	// Moving the lease's expiry (its first 8 bytes) breaks it.
	lease := filepath.Join(cache, "lease")
	good, err := os.ReadFile(lease)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[3]++
	os.WriteFile(lease, bad, 0o600)
	failsWith(t, e, "lease", "restore", "latest", "--target", t.TempDir(), "--from", "local")
	os.WriteFile(lease, good, 0o600)

	// A flipped byte in each data pack: the restore names the damage
	// (exit 3) and no restored file has bytes the source never had.
	var packs []string
	filepath.WalkDir(filepath.Join(cache, "store"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, string(filepath.Separator)+"packs"+string(filepath.Separator)) {
			packs = append(packs, p)
		}
		return nil
	})
	if len(packs) == 0 {
		t.Fatal("no packs in the cache store")
	}
	// The largest pack holds big.bin's chunks.
	largest := packs[0]
	for _, p := range packs {
		a, _ := os.Stat(largest)
		b, _ := os.Stat(p)
		if b.Size() > a.Size() {
			largest = p
		}
	}
	for _, p := range []string{largest} {
		b, _ := os.ReadFile(p)
		b[len(b)/3] ^= 0x40
		os.Chmod(p, 0o600)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dst := t.TempDir()
	out, errOut, code := coffer(t, e, "restore", "latest", "--target", dst, "--from", "local")
	if code != exitPartial || !strings.Contains(out+errOut, "damaged") || !strings.Contains(out+errOut, "big.bin") {
		t.Fatalf("restore from a tampered cache: exit %d, want the damage named\n%s\n%s", code, out, errOut)
	}
	want, _ := os.ReadFile(filepath.Join(src, "big.bin"))
	if got, err := os.ReadFile(filepath.Join(dst, src, "big.bin")); err == nil {
		for i := range got {
			if i < len(want) && got[i] != want[i] && got[i] != 0 {
				t.Fatalf("big.bin restored from a tampered cache differs at byte %d with bytes that are not a hole", i)
			}
		}
	}

	// A tampered manifest is refused as such.
	man := filepath.Join(cache, "manifest")
	b, _ := os.ReadFile(man)
	b[len(b)-5] ^= 1
	os.WriteFile(man, b, 0o600)
	failsWith(t, e, "manifest", "restore", "latest", "--target", t.TempDir(), "--from", "local")
}

// TestAttackLocalCopiesLeaseCLI: the lease as a user meets it. Its length
// is the user's (--local-lease); another agent that copies this agent's
// cache and asks the vault for the key with its own token gets nothing;
// with the vault unreachable, renew fails but the lease is kept, so the
// local copies still restore; once the lease's time has passed they are
// refused, saying how to renew.
func TestAttackLocalCopiesLeaseCLI(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	owner := srv.Client(t, srv.OwnerToken).Vault("prod")
	web, err := owner.AddSource(context.Background(), api.AddSource{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	db, err := owner.AddSource(context.Background(), api.AddSource{Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", web.Secret)
	src := filepath.Join(t.TempDir(), "src")
	localSource(t, src, 0)
	r := backupLocal(t, e, src, "--local-copies", "1", "--local-lease", "2h")
	if want := e.now().Add(2 * time.Hour); r.Local.Lease.Before(want.Add(-2*time.Minute)) || r.Local.Lease.After(want) {
		t.Errorf("lease until %s, want about %s (--local-lease 2h)", r.Local.Lease, want)
	}

	// Another agent (its own token, its own machine) copies the cache
	// directory, without the lease, and asks the vault to renew it.
	thief := newEnv(t)
	thief.setenv("COFFER_CACERT", srv.CAFile)
	thief.setenv("COFFER_VAULT", srv.URL+"/prod")
	thief.setenv("COFFER_TOKEN", db.Secret)
	if err := os.CopyFS(filepath.Join(thief.home, "local-copies"), os.DirFS(filepath.Join(e.home, "local-copies"))); err != nil {
		t.Fatal(err)
	}
	leases, _ := filepath.Glob(filepath.Join(thief.home, "local-copies", "*", "lease"))
	if len(leases) != 1 {
		t.Fatalf("leases copied: %v", leases)
	}
	os.Remove(leases[0])
	failsWith(t, thief, "does not open this cache's key for this identity", "local-copies", "renew")
	failsWith(t, thief, "lease", "restore", "latest", "--target", t.TempDir(), "--from", "local")
	failsWith(t, thief, "lease", "local-copies", "list")
	// A backup of its own starts a cache of its own: it does not adopt
	// the copied one (whose key it never got).
	mustCoffer(t, thief, "backup", src, "--local-copies", "1")
	if _, errOut, _ := coffer(t, thief, "local-copies", "list"); errOut != "" {
		t.Errorf("the thief's own cache: %s", errOut)
	}

	// The vault cannot be reached: renew fails, the lease stays.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, code := coffer(t, e, "local-copies", "renew"); code == exitOK {
		t.Fatal("renew succeeded with the server stopped")
	}
	dst := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", dst, "--from", "local")
	assertSameTree(t, src, filepath.Join(dst, src))

	// The 2 hours pass: refused, saying how to renew.
	e.mu.Lock()
	e.clock = e.clock.Add(2 * time.Hour)
	e.mu.Unlock()
	msg := failsWith(t, e, "lease expired", "restore", "latest", "--target", t.TempDir(), "--from", "local")
	if !strings.Contains(msg, "coffer local-copies renew") {
		t.Errorf("the expired-lease refusal does not say how to renew: %s", msg)
	}
	failsWith(t, e, "lease expired", "local-copies", "list")
}

// TestPostureLocalCopies: the posture check source.local-copies reads
// what backups report. Through a server, an agent that keeps no local
// copies makes it not applicable; once it backs up with --local-copies,
// its snapshot carries the cache's facts (kept, held, sealed with
// AES-256-GCM under a key the vault wraps) and the check passes, naming
// the agent. A local vault reads the same from its own snapshots.
func TestPostureLocalCopies(t *testing.T) {
	const check = "source.local-copies"
	evidence := func(t *testing.T, c posture.Check, fact, want string) {
		t.Helper()
		for _, ev := range c.Evidence {
			if ev.Fact == fact {
				if !strings.Contains(ev.Value, want) {
					t.Errorf("%s: evidence %q = %q, want %q in it", check, fact, ev.Value, want)
				}
				return
			}
		}
		t.Errorf("%s: no evidence %q in %+v", check, fact, c.Evidence)
	}
	t.Run("server", func(t *testing.T) {
		srv := servertest.Start(t)
		e := newEnv(t)
		e.setenv("COFFER_CACERT", srv.CAFile)
		mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
		web, err := srv.Client(t, srv.OwnerToken).Vault("prod").AddSource(context.Background(), api.AddSource{Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		e.setenv("COFFER_VAULT", srv.URL+"/prod")
		e.setenv("COFFER_TOKEN", web.Secret)
		src := filepath.Join(t.TempDir(), "src")
		localSource(t, src, 0)

		mustCoffer(t, e, "backup", src)
		r := postureJSON(t, e, "--token", srv.OwnerToken)
		c := wantStatus(t, r, check, posture.NA, "")
		evidence(t, c, "source web local copies", "none kept")

		for round := range 2 {
			localSource(t, src, round+1)
			backupLocal(t, e, src, "--local-copies", "2")
		}
		r = postureJSON(t, e, "--token", srv.OwnerToken)
		if !r.Signed {
			t.Error("the server's report is not signed")
		}
		c = wantStatus(t, r, check, posture.Pass, "")
		if !strings.Contains(c.Summary, "web") {
			t.Errorf("%s: summary %q does not name the agent", check, c.Summary)
		}
		evidence(t, c, "source web local copies", "keeps 2, holds 2, encrypted true (AES-256-GCM)")

		// The agent's next backup keeps none: the newest report rules.
		mustCoffer(t, e, "backup", src)
		wantStatus(t, postureJSON(t, e, "--token", srv.OwnerToken), check, posture.NA, "")
	})
	t.Run("local vault", func(t *testing.T) {
		e := newEnv(t)
		src := filepath.Join(t.TempDir(), "src")
		localSource(t, src, 0)
		mustCoffer(t, e, "backup", src)
		wantStatus(t, postureJSON(t, e), check, posture.NA, "")
		backupLocal(t, e, src, "--local-copies", "3")
		r := postureJSON(t, e)
		c := wantStatus(t, r, check, posture.Pass, "")
		if len(c.Evidence) != 1 || !strings.Contains(c.Evidence[0].Value, "keeps 3, holds 1, encrypted true (AES-256-GCM)") {
			t.Errorf("%s: evidence %+v", check, c.Evidence)
		}
		// A later backup from standard input carries no report: the
		// check reads the one before it.
		if _, errOut, code := cofferIn(t, e, "dump", "backup", "--stdin", "--stdin-filename", "db.sql"); code != exitOK {
			t.Fatalf("backup --stdin: %s", errOut)
		}
		c = wantStatus(t, postureJSON(t, e), check, posture.Pass, "")
		if len(c.Evidence) != 1 || !strings.Contains(c.Evidence[0].Value, "keeps 3, holds 1") {
			t.Errorf("%s after a backup from standard input: evidence %+v", check, c.Evidence)
		}
	})
}
