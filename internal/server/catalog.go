package server

import (
	"context"
	"fmt"

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
		s.log.Debug("background job runs on another server", "job", name)
		return nil
	}
	defer unlock()
	return fn()
}
