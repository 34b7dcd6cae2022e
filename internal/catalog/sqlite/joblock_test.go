package sqlite

import (
	"testing"

	"github.com/coffer-backup/coffer/internal/catalog/catalogtest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func TestJobLock(t *testing.T) {
	catalogtest.RunJobLock(t, func(t *testing.T) (vault.JobLocker, vault.JobLocker) {
		a, path := openTemp(t)
		b, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return a, b
	})
}
