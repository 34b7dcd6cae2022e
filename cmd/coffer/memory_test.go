package main

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/srcvol"
)

// The memory budget (docs/performance.md, "Memory"), enforced on the
// commands as users run them: each in a process of its own, whose peak
// RSS the kernel reports (getrusage's ru_maxrss), on a vault whose blob
// index holds COFFER_BUDGET_BLOBS blobs (default 1,000,000: 1 TB of 1 MiB
// chunks; 10,000,000 is 10 TB) and a tree of COFFER_BUDGET_FILES small
// files (default 20,000; 1,000,000 is the full benchmark tree), written by
// the test or, with COFFER_BUDGET_TREE, one written before by
// scripts/mktree (the test rewrites 1 % of its files).

// Peak RSS allowed, in MiB.
const (
	budgetBackupMiB = 150 // backup and restore, whatever the vault holds
	budgetReaderMiB = 80  // snapshots, ls, vault show, key status
	budgetCheckMiB  = 120 // check (and prune), whatever the vault holds
	// check --read-data also holds a whole pack (up to 17 MiB) and its
	// decoded blobs in each of its workers.
	budgetCheckReadMiB = 200
	syntheticPerPack   = 16 // blobs a synthetic pack holds: 16 MiB packs of 1 MiB chunks
)

// fillSyntheticIndex adds n lookup keys of random blobs to the catalog at
// path (the only vault's), syntheticPerPack a pack, as a vault of n MiB of
// unique data would hold: packs whose sealed header copies are
// placeholders that open under no key. A lookup opens a pack only when
// one of its keys matches (a chance of n/2^64 for a blob it does not
// hold), and anything that loads the whole index opens every pack and
// fails on them. The packs are not in the store: nothing reads them.
func fillSyntheticIndex(t *testing.T, path string, n int) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var vid []byte
	if err := db.QueryRow(`SELECT id FROM vaults`).Scan(&vid); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(uint64(n), 15))
	type row struct{ key, num int64 }
	const batch = 1 << 20 // keys sorted and inserted at a time
	for done := 0; done < n; {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		pack, err := tx.Prepare(`INSERT INTO packs (vault, id, size, dek_version, blobs, created, header) VALUES (?, ?, 16777216, 1, ?, 1, ?)`)
		if err != nil {
			t.Fatal(err)
		}
		keyed, err := tx.Prepare(`INSERT INTO pack_keys (vault, pack, keys) VALUES (?, ?, ?) RETURNING num`)
		if err != nil {
			t.Fatal(err)
		}
		rows := make([]row, 0, batch)
		header := make([]byte, 700)
		for ; done < n && len(rows) < batch; done += syntheticPerPack {
			var id [32]byte
			for j := 0; j < 32; j += 8 {
				binary.LittleEndian.PutUint64(id[j:], r.Uint64())
			}
			keys := make([]byte, 8*syntheticPerPack)
			for j := 0; j < len(keys); j += 8 {
				binary.LittleEndian.PutUint64(keys[j:], r.Uint64())
			}
			if _, err := pack.Exec(vid, id[:], syntheticPerPack, header); err != nil {
				t.Fatal(err)
			}
			var num int64
			if err := keyed.QueryRow(vid, id[:], keys).Scan(&num); err != nil {
				t.Fatal(err)
			}
			for j := 0; j < len(keys); j += 8 {
				rows = append(rows, row{int64(binary.LittleEndian.Uint64(keys[j:])), num})
			}
		}
		slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(a.key, b.key) })
		ins, err := tx.Prepare(`INSERT OR IGNORE INTO blob_keys (key, num) VALUES (?, ?)`)
		if err != nil {
			t.Fatal(err)
		}
		for _, rw := range rows {
			if _, err := ins.Exec(rw.key, rw.num); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// tripFilter adds a pack whose stored keys are 7 bytes long (written past
// the catalog's CHECK, as a catalog writer could): reading every pack's
// keys, which building the dedup filter does, fails on it from then on.
func tripFilter(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var vid []byte
	if err := conn.QueryRowContext(context.Background(), `SELECT id FROM vaults`).Scan(&vid); err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 32)
	id[0] = 0x7e
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`PRAGMA ignore_check_constraints = 1`, nil},
		{`INSERT INTO packs (vault, id, size, dek_version, blobs, created, header) VALUES (?, ?, 16777216, 1, 1, 1, ?)`, []any{vid, id, make([]byte, 700)}},
		{`INSERT INTO pack_keys (vault, pack, keys) VALUES (?, ?, ?)`, []any{vid, id, make([]byte, 7)}},
	} {
		if _, err := conn.ExecContext(context.Background(), q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
}

// peakRSS runs coffer in a child process and returns its exit code,
// output and peak RSS in MiB (VmHWM, which TestMain writes as it ends).
func peakRSS(t *testing.T, home string, args ...string) (int, string, float64) {
	t.Helper()
	hwm := filepath.Join(t.TempDir(), "hwm")
	cmd := child(t, home, args...)
	cmd.Env = append(cmd.Env, "COFFER_TEST_HWM="+hwm)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil {
		t.Fatalf("run coffer %v: %v", args, err)
	}
	b, err := os.ReadFile(hwm)
	if err != nil {
		t.Fatalf("coffer %v: no peak RSS: %v", args, err)
	}
	var kib float64
	if _, err := fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(string(b), "VmHWM:")), "%f kB", &kib); err != nil {
		t.Fatalf("coffer %v: peak RSS %q: %v", args, b, err)
	}
	t.Logf("coffer %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return cmd.ProcessState.ExitCode(), string(out), kib / 1024
}

// TestMemoryBudget enforces the budget: backup (first, unchanged and of
// changed files) and restore peak below 150 MiB, and snapshots, ls, vault
// show and key status below 80 MiB without reading the blob index at all
// (they succeed after a tripwire that fails anything that builds the
// filter or loads the whole index), on a vault whose index holds
// COFFER_BUDGET_BLOBS blobs. A loaded index held about 250 bytes a blob:
// 250 MB at the default size.
func TestMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a tree of small files and a catalog of a million keys")
	}
	if raceEnabled {
		// The race detector's shadow memory is in every child's RSS:
		// scripts/test.sh runs this test again without it.
		t.Skip("peak RSS is measured without the race detector (scripts/test.sh runs it so)")
	}
	files := envInt(t, "COFFER_BUDGET_FILES", 20_000)
	blobs := envInt(t, "COFFER_BUDGET_BLOBS", 1_000_000)
	uncacheExecutable(t)
	home := t.TempDir()
	src := os.Getenv("COFFER_BUDGET_TREE")
	start := time.Now()
	if src == "" {
		src = filepath.Join(t.TempDir(), "src")
		makeManyFiles(t, src, files)
		t.Logf("wrote %d files in %s", files, time.Since(start).Round(time.Millisecond))
	} else {
		// A tree written before in the same layout (scripts/mktree's, of
		// COFFER_BUDGET_FILES files), which the test changes 1 % of: a
		// copy, or an overlay on a tree that must stay as it is.
		t.Logf("backing up %s, %d files", src, files)
	}
	first := filepath.Join(t.TempDir(), "first")
	writeFile(t, filepath.Join(first, "a"), []byte("a vault to fill"), 0o644)
	if code, out, _ := peakRSS(t, home, "backup", first); code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, out)
	}
	catalog := filepath.Join(home, "vaults", "default", "catalog.db")
	start = time.Now()
	fillSyntheticIndex(t, catalog, blobs)
	t.Logf("filled the index with %d blobs in %s", blobs, time.Since(start).Round(time.Millisecond))

	within := func(name string, limit float64, args ...string) string {
		t.Helper()
		code, out, rss := peakRSS(t, home, args...)
		if code != exitOK {
			t.Fatalf("%s: exit %d: %s", name, code, out)
		}
		t.Logf("%-18s peak RSS %6.1f MiB (budget %.0f)", name, rss, limit)
		if rss > limit {
			t.Errorf("%s: peak RSS %.1f MiB, over its budget of %.0f MiB (%d files, %d blobs in the index)", name, rss, limit, files, blobs)
		}
		return out
	}
	within("backup", budgetBackupMiB, "backup", src)
	within("unchanged re-run", budgetBackupMiB, "backup", src)
	for i := 0; i < files; i += 100 {
		p := filepath.Join(src, fmt.Sprintf("d%04d", i/1000), fmt.Sprintf("f%06d", i))
		writeFile(t, p, randBytes(uint64(i)+1e9, 1000+i%5000), 0o644)
	}
	within("1 % changed", budgetBackupMiB, "backup", src)
	dst := filepath.Join(t.TempDir(), "dst")
	within("restore", budgetBackupMiB, "restore", "latest", "--target", dst)
	n := 0
	if err := filepath.WalkDir(dst, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n != files {
		t.Errorf("restored %d files, want %d", n, files)
	}

	tripFilter(t, catalog)
	for _, args := range [][]string{{"snapshots"}, {"ls", "latest"}, {"vault", "show"}, {"key", "status"}} {
		within(strings.Join(args, " "), budgetReaderMiB, args...)
	}
	// The tripwires are real: a backup, which builds the filter, and a
	// check, which loads the whole index, fail on them.
	writeFile(t, filepath.Join(src, "new"), randBytes(7, 5000), 0o644)
	if code, out, _ := peakRSS(t, home, "backup", src); code == exitOK || !strings.Contains(out, "lookup keys") {
		t.Errorf("backup after the filter's tripwire: exit %d, output %q; want a failure reading the lookup keys", code, out)
	}
	if code, out, _ := peakRSS(t, home, "check"); code == exitOK {
		t.Errorf("check of a vault with placeholder headers: exit %d, output %q; want a failure", code, out)
	}
}

// TestCheckMemoryBudget enforces the budget of check and prune
// (docs/performance.md, "Memory") on a vault of COFFER_BUDGET_CHECK_FILES
// small files (default 20,000), one blob each: both keep what they must
// know of every blob in a scratch file, not in memory, so their peak RSS
// does not grow with the vault. (TestMemoryBudget's synthetic index cannot be checked: its
// sealed header copies are placeholders, which check reports.)
func TestCheckMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a tree of small files")
	}
	if raceEnabled {
		t.Skip("peak RSS is measured without the race detector (scripts/test.sh runs it so)")
	}
	files := envInt(t, "COFFER_BUDGET_CHECK_FILES", 20_000)
	home := t.TempDir()
	src := filepath.Join(t.TempDir(), "src")
	makeManyFiles(t, src, files)
	if code, out, _ := peakRSS(t, home, "backup", src); code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, out)
	}
	for _, c := range []struct {
		args  []string
		limit float64
		ok    string // in the output of a successful run
	}{
		{[]string{"check"}, budgetCheckMiB, "no errors found"},
		{[]string{"check", "--read-data"}, budgetCheckReadMiB, "no errors found"},
		{[]string{"prune"}, budgetCheckMiB, "deleted 0 packs"},
		{[]string{"check"}, budgetCheckMiB, "no errors found"}, // after prune
	} {
		name := strings.Join(c.args, " ")
		code, out, rss := peakRSS(t, home, c.args...)
		if code != exitOK || !strings.Contains(out, c.ok) {
			t.Fatalf("%s: exit %d: %s", name, code, out)
		}
		t.Logf("%-18s peak RSS %6.1f MiB (budget %.0f)", name, rss, c.limit)
		if rss > c.limit {
			t.Errorf("%s: peak RSS %.1f MiB, over its budget of %.0f MiB (%d files)", name, rss, c.limit, files)
		}
	}
}

// TestBackupCollectsAtLimit: a local backup turns the collector's
// proportional trigger off (it collects at the heap limit only) while it
// runs and turns it back on when it ends; GOGC or GOMEMLIMIT in the
// environment leaves the collector alone.
func TestBackupCollectsAtLimit(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	limit := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(limit)
	gogc := func() int {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}

	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "small"), []byte("coffer"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  string
		want int // the GOGC seen during the backup
	}{
		{"", -1},
		{"GOGC", 100},
		{"GOMEMLIMIT", 100},
	} {
		e := newEnv(t)
		if tc.env != "" {
			e.setenv(tc.env, "200") // read by the command, not by this process's runtime
		}
		// The backup asks for its paths' volumes once it has set its
		// memory limits, before it walks them.
		seen := 0
		e.setVolumes(srcvol.Detector{Resolve: func(p string) (string, error) {
			seen = gogc()
			return p, nil
		}})
		mustCoffer(t, e, "backup", src)
		if seen != tc.want {
			t.Errorf("%q set: GOGC during the backup = %d, want %d", tc.env, seen, tc.want)
		}
		if p := gogc(); p != 100 {
			t.Errorf("%q set: GOGC after the backup = %d, want 100", tc.env, p)
		}
	}
}
