package server_test

import (
	"context"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/authn"
)

// TestAttackReadsOpenNoWriterSession: restore, ls and diff fetch the
// dedup keys (GET …/dedup) to verify what they read, each run with a
// session of its own. That must not open a backup's writer session: past
// 16 of them the token could not back up for 15 minutes (a cron job
// listing snapshots would lock its own backups out), and each would hold
// condemned packs from prune. On the code as found, the 17th reader
// was refused and so was the backup after it.
func TestAttackReadsOpenNoWriterSession(t *testing.T) {
	a := newArena(t)
	op := a.roleToken(authn.RoleBackupOperator, "a")
	ctx := context.Background()
	for i := range 20 {
		v := a.client(op).Vault("a") // a new client: a new Coffer-Session, as a new process
		if err := v.LoadDedup(ctx); err != nil {
			t.Fatalf("reader %d of 20 fetching the dedup keys: %v", i+1, err)
		}
	}
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("still backed up\n")})
	v := a.client(op).Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{dir}, Host: "h"}); err != nil {
		t.Fatalf("backup after 20 readers: %v", err)
	}
}
