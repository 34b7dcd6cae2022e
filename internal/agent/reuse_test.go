package agent_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// sessionRepo is a vault as the HTTPS client sees it: Has knows only the
// blobs this backup stored, and Stored asks the vault about many at once.
// lost names chunks the vault says it no longer holds; fail makes every
// Stored call fail.
type sessionRepo struct {
	*engine.Vault
	mu     sync.Mutex
	mine   map[vault.ID]bool
	lost   map[vault.ID]bool
	fail   bool
	calls  int // Stored calls
	asked  int // IDs asked about
	hasTry int // Has calls about data blobs the session did not store
}

func (r *sessionRepo) Has(t vault.BlobType, id vault.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.mine[id] && t == vault.DataBlob {
		r.hasTry++
	}
	return r.mine[id]
}

func (r *sessionRepo) SaveBlob(ctx context.Context, t vault.BlobType, id vault.ID, p []byte, rawLen int) (bool, error) {
	r.mu.Lock()
	r.mine[id] = true
	r.mu.Unlock()
	return r.Vault.SaveBlob(ctx, t, id, p, rawLen)
}

func (r *sessionRepo) Stored(ctx context.Context, t vault.BlobType, ids []vault.ID) ([]bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.asked += len(ids)
	if r.fail {
		return nil, errors.New("server unreachable")
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		out[i] = r.Vault.Has(t, id) && !r.lost[id]
	}
	return out, nil
}

// TestReuseThroughStored: with a repository whose Has knows only its own
// session, an unchanged re-run reuses every file by asking about their
// chunks in one batch, never one by one; a file one of whose chunks the
// vault no longer holds is read again (and its chunk stored again); and
// when the vault cannot be asked, every file is read: never reused on a
// guess.
func TestReuseThroughStored(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	const files = 2000
	for i := range files {
		write(t, filepath.Join(src, fmt.Sprintf("d%d", i%20), fmt.Sprintf("f%d", i)), randBytes(uint64(i), 100+i%3000))
	}
	v := newVault(t, small)
	eng, ok := v.repo.(*engine.Vault)
	if !ok {
		t.Skip("needs the local engine underneath")
	}
	newRepo := func() *sessionRepo {
		return &sessionRepo{Vault: eng, mine: map[vault.ID]bool{}, lost: map[vault.ID]bool{}}
	}
	run := func(r *sessionRepo) *agent.BackupResult {
		t.Helper()
		res, err := agent.Backup(context.Background(), r, agent.BackupOptions{Paths: []string{src}, Host: "h"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := run(newRepo())

	r := newRepo()
	second := run(r)
	if second.Reused != files {
		t.Errorf("unchanged re-run reused %d of %d files", second.Reused, files)
	}
	if r.calls != 1 || r.asked < files {
		t.Errorf("Stored called %d times for %d IDs, want once for all %d files", r.calls, r.asked, files)
	}
	if r.hasTry != 0 {
		t.Errorf("%d Has calls about the parent's chunks: one round trip per file", r.hasTry)
	}

	// The vault lost the chunk of f7 (pruned, damaged): f7 is read again.
	lost := chunksOf(t, v, second.Snapshot.Tree, filepath.Join(src, "d7", "f7"))
	r = newRepo()
	for _, id := range lost {
		r.lost[id] = true
	}
	third := run(r)
	if third.Reused != files-1 {
		t.Errorf("with f7's chunk gone: reused %d, want %d", third.Reused, files-1)
	}
	if !r.mine[lost[0]] {
		t.Error("f7's chunk was not stored again")
	}

	r = newRepo()
	r.fail = true
	fourth := run(r)
	if fourth.Reused != 0 {
		t.Errorf("the vault could not be asked, yet %d files were reused", fourth.Reused)
	}
	if subtree(t, v, first.Snapshot.Tree, src) != subtree(t, v, fourth.Snapshot.Tree, src) {
		t.Error("reading every file again gave another tree")
	}
}
