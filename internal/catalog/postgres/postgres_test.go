package postgres

import (
	"context"
	"testing"

	"github.com/coffer-backup/coffer/internal/catalog/catalogtest"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openTemp opens a catalog in a new schema of the test server.
func openTemp(t testing.TB) (*Catalog, string) {
	t.Helper()
	url := pgtest.URL(t)
	c, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, url
}

func TestConformance(t *testing.T) {
	catalogtest.Run(t, func(t *testing.T) vault.Catalog {
		c, _ := openTemp(t)
		return c
	})
}
