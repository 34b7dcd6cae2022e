package sqlite

import (
	"context"
	"sync"

	"github.com/coffer-backup/coffer/internal/vault"
)

var _ vault.JobLocker = (*Catalog)(nil)

// jobLocks are the job locks held in this process, by catalog file and
// job name. A SQLite catalog serves one server, so a lock within the
// process is enough: it keeps two runs of one job (a scheduled one and
// one asked for) apart, also through two Catalogs of one file.
var jobLocks = struct {
	sync.Mutex
	held map[[2]string]bool
}{held: map[[2]string]bool{}}

// TryJobLock implements vault.JobLocker within the process.
func (c *Catalog) TryJobLock(ctx context.Context, name string) (func(), bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	k := [2]string{c.path, name}
	jobLocks.Lock()
	defer jobLocks.Unlock()
	if jobLocks.held[k] {
		return nil, false, nil
	}
	jobLocks.held[k] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			jobLocks.Lock()
			delete(jobLocks.held, k)
			jobLocks.Unlock()
		})
	}, true, nil
}
