package audit_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 5, 6, 7, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a server's audit setup: a real SQLite catalog, the key files
// and a Log, with a settable clock.
type env struct {
	t      testing.TB
	dir    string
	path   string // the catalog file
	cat    *sqlite.Catalog
	signer note.Signer
	vkey   string
	clock  *clock
	log    *audit.Log
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	signer, vkey, err := audit.LoadOrCreateKey(filepath.Join(dir, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, path: filepath.Join(dir, "catalog.db"), signer: signer, vkey: vkey, clock: newClock()}
	e.cat = e.openCatalog()
	e.log = e.openLog(e.cat)
	return e
}

func (e *env) openCatalog() *sqlite.Catalog {
	e.t.Helper()
	c, err := sqlite.Open(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) openLog(s audit.Store) *audit.Log {
	e.t.Helper()
	l, err := audit.Open(e.t.Context(), audit.Config{Store: s, Signer: e.signer, VerifierKey: e.vkey, Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// entry returns the i'th test entry.
func entry(i int) audit.Entry {
	return audit.Entry{
		Principal: fmt.Sprintf("%016x", i%3), Source: "192.0.2.1:4000", Vault: []string{"primary", "second", ""}[i%3],
		Op: "snapshot.save", Params: map[string]string{"n": fmt.Sprint(i)}, Outcome: audit.OutcomeOK,
	}
}

// fill appends n entries, the clock advancing step before each, and
// returns their indexes.
func (e *env) fill(n int, step time.Duration) []int64 {
	e.t.Helper()
	var idx []int64
	for i := range n {
		e.clock.Add(step)
		x, err := e.log.Append(e.t.Context(), entry(i))
		if err != nil {
			e.t.Fatal(err)
		}
		idx = append(idx, x)
	}
	return idx
}

func (e *env) verify(opts audit.VerifyOptions) *audit.Report {
	e.t.Helper()
	r, err := audit.Verify(e.t.Context(), e.cat, e.vkey, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) checkpoints() []audit.Checkpoint {
	e.t.Helper()
	cs, err := e.cat.AuditCheckpoints(e.t.Context(), 0, 1<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	return cs
}

// tamper runs statements on the catalog file directly, as someone with
// write access to it would, dropping the append-only triggers first.
func (e *env) tamper(stmts ...string) {
	e.t.Helper()
	db, err := sql.Open("sqlite", "file:"+e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	for _, tr := range []string{"entries", "hashes", "checkpoints"} {
		for _, what := range []string{"update", "delete", "replace"} {
			if _, err := db.Exec(fmt.Sprintf("DROP TRIGGER IF EXISTS audit_%s_no_%s", tr, what)); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			e.t.Fatalf("%s: %v", s, err)
		}
	}
}

// tamperArgs runs one statement with arguments, like tamper.
func (e *env) tamperArgs(stmt string, args ...any) {
	e.t.Helper()
	e.tamper()
	db, err := sql.Open("sqlite", "file:"+e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt, args...); err != nil {
		e.t.Fatalf("%s: %v", stmt, err)
	}
}

// kinds returns the problem kinds of r, in order, with their entry
// ranges.
func kinds(r *audit.Report) []string {
	var ks []string
	for _, p := range r.Problems {
		ks = append(ks, fmt.Sprintf("%s[%d,%d)", p.Kind, p.Index, p.End))
	}
	return ks
}

// hasProblem reports whether r has a problem of kind k about entries
// [from, end) (end -2: any).
func hasProblem(r *audit.Report, k audit.Kind, from, end int64) bool {
	for _, p := range r.Problems {
		if p.Kind == k && p.Index == from && (end == -2 || p.End == end) {
			return true
		}
	}
	return false
}
