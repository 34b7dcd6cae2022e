package postgres

import (
	"context"
	"fmt"
	"sync"

	"github.com/coffer-backup/coffer/internal/vault"
)

var _ vault.JobLocker = (*Catalog)(nil)

// TryJobLock implements vault.JobLocker with a session-level advisory
// lock, held on a connection taken out of the pool for as long as the
// job runs. When the holder's process dies, or its connection breaks,
// PostgreSQL releases the lock, and another replica may take the job on;
// what the dead holder left is what its committed transactions wrote.
func (c *Catalog) TryJobLock(ctx context.Context, name string) (func(), bool, error) {
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("job lock %s: %w", name, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+lockKey+`)`, "job "+name).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("job lock %s: %w", name, err)
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	c.jobMu.Lock()
	if c.jobs == nil { // closed meanwhile
		c.jobMu.Unlock()
		conn.Hijack().Close(context.Background())
		return nil, false, fmt.Errorf("job lock %s: catalog closed", name)
	}
	c.jobs[conn] = struct{}{}
	c.jobMu.Unlock()
	var once sync.Once
	unlock := func() {
		once.Do(func() {
			c.jobMu.Lock()
			_, held := c.jobs[conn]
			delete(c.jobs, conn)
			c.jobMu.Unlock()
			if !held {
				return // Close closed the connection
			}
			var released bool
			err := conn.QueryRow(context.Background(), `SELECT pg_advisory_unlock(`+lockKey+`)`, "job "+name).Scan(&released)
			if err != nil || !released {
				// Never hand a connection that may still hold the lock
				// back to the pool: closing it releases the lock.
				conn.Hijack().Close(context.Background())
				return
			}
			conn.Release()
		})
	}
	return unlock, true, nil
}
