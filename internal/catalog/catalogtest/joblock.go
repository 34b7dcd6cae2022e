package catalogtest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// RunJobLock checks vault.JobLocker: open returns two catalogs of one
// database (two replicas, or two Opens of one file), and a job runs on
// one of them at a time.
func RunJobLock(t *testing.T, open func(t *testing.T) (a, b vault.JobLocker)) {
	t.Run("OneHolder", func(t *testing.T) {
		ctx := context.Background()
		a, b := open(t)
		unlock, ok, err := a.TryJobLock(ctx, "prune")
		if err != nil || !ok {
			t.Fatalf("TryJobLock on a free lock = %v, %v; want it taken", ok, err)
		}
		if _, ok, err := b.TryJobLock(ctx, "prune"); err != nil || ok {
			t.Fatalf("TryJobLock through the other catalog while held = %v, %v; want refused", ok, err)
		}
		if _, ok, err := a.TryJobLock(ctx, "prune"); err != nil || ok {
			t.Fatalf("TryJobLock through the same catalog while held = %v, %v; want refused", ok, err)
		}
		other, ok, err := b.TryJobLock(ctx, "rotate")
		if err != nil || !ok {
			t.Fatalf("TryJobLock of another job = %v, %v; want it taken", ok, err)
		}
		other()
		unlock()
		unlock() // a second call does nothing
		again, ok, err := b.TryJobLock(ctx, "prune")
		if err != nil || !ok {
			t.Fatalf("TryJobLock after unlock = %v, %v; want it taken", ok, err)
		}
		if _, ok, _ := a.TryJobLock(ctx, "prune"); ok {
			t.Fatal("a second unlock by the first holder released the new holder's lock")
		}
		again()
	})
	t.Run("Concurrent", func(t *testing.T) {
		ctx := context.Background()
		a, b := open(t)
		var (
			running, maxRunning, runs atomic.Int64
			wg                        sync.WaitGroup
		)
		deadline := time.Now().Add(time.Second)
		for i := range 8 {
			l := a
			if i%2 == 1 {
				l = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					unlock, ok, err := l.TryJobLock(ctx, "retention")
					if err != nil {
						t.Error(err)
						return
					}
					if !ok {
						time.Sleep(time.Millisecond)
						continue
					}
					n := running.Add(1)
					for {
						m := maxRunning.Load()
						if n <= m || maxRunning.CompareAndSwap(m, n) {
							break
						}
					}
					runs.Add(1)
					time.Sleep(2 * time.Millisecond)
					running.Add(-1)
					unlock()
				}
			}()
		}
		wg.Wait()
		if m := maxRunning.Load(); m != 1 {
			t.Errorf("%d runs of one job at once, want 1", m)
		}
		if runs.Load() < 2 {
			t.Errorf("the job ran %d times in a second, want several", runs.Load())
		}
	})
}
