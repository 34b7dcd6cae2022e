package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/catalog/postgres"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/vault"
)

// CatalogEnv names the environment variable that holds the catalog's
// postgres:// URL for the commands run on the server machine (and the
// default of coffer server --catalog): an environment variable, so that
// a password in the URL is not shown in the list of processes.
const CatalogEnv = "COFFER_CATALOG"

// Catalog is what the server needs of its catalog; the SQLite and the
// PostgreSQL catalogs both provide it.
type Catalog interface {
	vault.Catalog
	audit.Store
	vault.JobLocker
	SettingsChain(ctx context.Context, vault vault.ID) (vault.VaultSettings, []vault.ChainEntry, error)
	SettingsChainSince(ctx context.Context, vault vault.ID, from uint64) (vault.VaultSettings, []vault.ChainEntry, error)
}

var (
	_ Catalog = (*sqlite.Catalog)(nil)
	_ Catalog = (*postgres.Catalog)(nil)
)

// openCatalog opens the catalog at url, a postgres:// URL, or the SQLite
// file in dataDir when url is "".
func openCatalog(ctx context.Context, dataDir, url string) (Catalog, error) {
	switch {
	case url == "":
		return sqlite.Open(catalogFile(dataDir))
	case postgres.IsURL(url):
		return postgres.Open(ctx, url)
	}
	return nil, fmt.Errorf("catalog: want a postgres:// URL, or nothing for the SQLite file in the data directory")
}

// runJob runs fn as the background job name unless another server
// sharing the catalog (or another run in this one) runs it now; then it
// skips it and returns nil, and the holder's run counts for this one.
func (s *Server) runJob(ctx context.Context, name string, fn func() error) error {
	unlock, ok, err := s.cat.TryJobLock(ctx, name)
	if err != nil {
		return err
	}
	if !ok {
		s.jobSkipped(name)
		return nil
	}
	s.jobs.done(name)
	defer unlock()
	return fn()
}

// jobStuckAfter is how long a background job may be found running
// elsewhere, turn after turn, before each skip is a warning: no job runs
// that long, and any user who may connect to a shared catalog can take
// its advisory locks and keep them, which would otherwise stop the job
// on every server with nothing but a debug line.
const jobStuckAfter = 6 * time.Hour

// jobSkipped records that job name was skipped because its lock was
// taken, and warns once it has been taken for longer than jobStuckAfter.
func (s *Server) jobSkipped(name string) {
	now := s.opt.Now()
	since := s.jobs.skipped(name, now)
	if held := now.Sub(since); held >= jobStuckAfter {
		s.log.Warn("a background job has not run on any server this one can see for a long time: another session holds its lock (on PostgreSQL, see pg_locks for the advisory lock's holder)", "job", name, "held_for", held.Round(time.Minute).String(), "since", since.UTC().Format(time.RFC3339))
		return
	}
	s.log.Debug("background job runs on another server", "job", name)
}

// jobSkips remembers, per background job, since when every turn of this
// server found it running elsewhere.
type jobSkips struct {
	mu    sync.Mutex
	since map[string]time.Time
}

func (j *jobSkips) skipped(name string, now time.Time) time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.since == nil {
		j.since = map[string]time.Time{}
	}
	t, ok := j.since[name]
	if !ok {
		j.since[name] = now
		t = now
	}
	return t
}

func (j *jobSkips) done(name string) {
	j.mu.Lock()
	delete(j.since, name)
	j.mu.Unlock()
}
