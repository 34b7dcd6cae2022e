package vault

import "context"

// JobLocker is implemented by catalogs that can make background jobs
// (scheduled retention, key rotation, verification) run on one server
// replica at a time: on PostgreSQL an advisory lock held on a connection
// of its own, which the database releases when the holder dies; on
// SQLite, which one server uses alone, a lock within the process.
type JobLocker interface {
	// TryJobLock takes the job lock named name unless another holder has
	// it, in which case ok is false and unlock nil. The holder calls
	// unlock when the job is done; calling it again does nothing.
	TryJobLock(ctx context.Context, name string) (unlock func(), ok bool, err error)
}
