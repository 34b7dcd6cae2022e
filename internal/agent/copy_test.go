package agent_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// lyingSource is a copy source with a batched read (as a vault server is)
// whose index says every blob holds one byte: a hostile or broken server
// understating sizes, so that copy groups as many chunks as it may.
type lyingSource struct {
	*engine.Vault
	mu          sync.Mutex
	batches     int
	maxAccepted int // the most bytes one batch handed over and copy kept
}

func (s *lyingSource) BlobSize(vault.BlobType, vault.ID) (uint32, error) { return 1, nil }

func (s *lyingSource) LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	s.mu.Lock()
	s.batches++
	s.mu.Unlock()
	accepted := 0
	defer func() {
		s.mu.Lock()
		s.maxAccepted = max(s.maxAccepted, accepted)
		s.mu.Unlock()
	}()
	for i, id := range ids {
		data, err := s.Vault.LoadBlob(ctx, t, id, nil)
		if err != nil {
			return err
		}
		if err := fn(i, data); err != nil {
			return err
		}
		accepted += len(data)
	}
	return nil
}

// TestAttackCopyBoundedByBytesReceived: copy holds a group of chunks in
// memory until the destination says which it lacks, at most 16 MiB. A
// source whose index understates the chunks' sizes (here: one byte each)
// cannot make it hold more: the group ends at 16 MiB of chunks received,
// and the rest is read in further groups; the copy is whole.
func TestAttackCopyBoundedByBytesReceived(t *testing.T) {
	const copyBytes = 16 << 20 // agent.copyBytes
	chunking := vault.ChunkerParams{Min: 512 << 10, Avg: 1 << 20, Max: 2 << 20}
	sv, dv := newVault(t, chunking), newVault(t, chunking)
	src := t.TempDir()
	want := randBytes(11, 40<<20)
	write(t, filepath.Join(src, "big"), want)
	write(t, filepath.Join(src, "small"), []byte("small"))
	res, err := agent.Backup(context.Background(), sv.Vault, agent.BackupOptions{Paths: []string{src}, Host: "web01"})
	if err != nil {
		t.Fatal(err)
	}

	ls := &lyingSource{Vault: sv.Vault}
	c := agent.NewCopier(ls, dv.Vault, time.Now)
	srcID := vault.ID{1} // the source vault's ID, as copy records it
	cp, err := c.Copy(context.Background(), srcID, res.Snapshot)
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	t.Logf("%d chunks read in %d batches, at most %d bytes kept from one", c.Read, ls.batches, ls.maxAccepted)
	if ls.maxAccepted > copyBytes {
		t.Errorf("copy kept %d bytes of one batch, more than %d", ls.maxAccepted, copyBytes)
	}
	if ls.batches < 3 {
		t.Errorf("40 MiB of chunks came in %d batches: the groups were not bounded by what arrived", ls.batches)
	}
	target := t.TempDir()
	if _, err := agent.Restore(context.Background(), dv.Vault, cp.Tree, agent.RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, src, "big"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("the copy's big file: %d bytes, %v; want the original's %d", len(got), err, len(want))
	}
}
