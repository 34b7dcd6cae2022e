package server_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func dedupVault(t *testing.T, c *client.Client, name string) *client.Vault {
	t.Helper()
	v := c.Vault(name)
	if err := v.LoadDedup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

// hookedVault runs before() when the agent saves its snapshot: after it
// has learned which blobs the vault holds and uploaded the rest.
type hookedVault struct {
	*client.Vault
	before func()
}

func (h hookedVault) SaveSnapshot(ctx context.Context, s vault.SnapshotRecord) (vault.SnapshotRecord, error) {
	h.before()
	return h.Vault.SaveSnapshot(ctx, s)
}

// TestPruneWaitsForRemoteBackup: a prune on the server during a remote
// backup that deduplicated against a forgotten snapshot's data leaves
// that data (the backup's session is alive); the next prune, after the
// backup saved its snapshot, keeps it for good; the snapshot restores. A
// backup whose session went quiet for longer than prune waits is refused
// its snapshot.
func TestPruneWaitsForRemoteBackup(t *testing.T) {
	env := servertest.Start(t)
	ctx := context.Background()
	owner := env.Client(t, env.OwnerToken)
	op := newVault(t, owner, "prod")
	src := t.TempDir()
	writeTree(t, src, map[string][]byte{"a": randomBytes(1, 3<<20), "b": randomBytes(2, 100_000)})

	first, err := agent.Backup(ctx, dedupVault(t, env.Client(t, op), "prod"), agent.BackupOptions{Paths: []string{src}, Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	ov := owner.Vault("prod")
	if _, _, err := ov.Forget(ctx, []vault.ID{first.Snapshot.ID}); err != nil {
		t.Fatal(err)
	}
	env.Clock.Add(int64(15 * 24 * time.Hour))

	var during api.PruneReport
	v2 := hookedVault{Vault: dedupVault(t, env.Client(t, op), "prod"), before: func() {
		var err error
		if during, err = ov.Prune(ctx, false); err != nil {
			t.Error(err)
		}
	}}
	second, err := agent.Backup(ctx, v2, agent.BackupOptions{Paths: []string{src}, Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if len(during.Expired) != 1 || during.Condemned == 0 || during.Deleted != 0 || during.Waiting != during.Condemned || during.Sessions != 1 {
		t.Fatalf("prune during the backup: %+v", during)
	}
	after, err := ov.Prune(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if after.Reprieved == 0 {
		t.Errorf("prune after the backup: %+v (the data it deduplicated against must be kept)", after)
	}
	restoreAndCompare(t, env.Client(t, op).Vault("prod"), second.Snapshot, src)
	rep, err := ov.Check(ctx, true, nil)
	if err != nil || len(rep.Errors) != 0 {
		t.Fatalf("check: %v %v", err, rep.Errors)
	}

	// A backup that went quiet for 20 minutes is refused its snapshot.
	if err := os.WriteFile(filepath.Join(src, "c"), randomBytes(3, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	v3 := hookedVault{Vault: dedupVault(t, env.Client(t, op), "prod"), before: func() { env.Clock.Add(int64(20 * time.Minute)) }}
	_, err = agent.Backup(ctx, v3, agent.BackupOptions{Paths: []string{src}, Host: "h"})
	var re *api.RemoteError
	if !errors.As(err, &re) || re.Code != api.CodeConflict {
		t.Errorf("a backup whose session expired: %v, want a conflict", err)
	}
}
