package localcopy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// storedProber is the client's batch question (agent's storedProber).
type storedProber interface {
	Stored(ctx context.Context, t vault.BlobType, ids []vault.ID) ([]bool, error)
}

// Tee is the repository a backup with local copies writes to: the vault,
// and the cache beside it. A blob counts as held only when both hold it,
// so a file whose chunks the cache lacks is read (and so cached) even
// when the vault has them; every blob the backup saves goes to the
// cache, under the same ID. The snapshot record it saves carries
// Source.LocalCopies: keep, and what will be held after this backup.
type Tee struct {
	repo  agent.BackupRepo
	c     *Cache
	keep  int
	saved *vault.SnapshotRecord
}

// teeBatch is a Tee over a repository that can also answer many blobs at
// once and load trees in batches (the HTTPS client).
type teeBatch struct {
	*Tee
	prober storedProber
	bl     agent.BatchLoader
}

// Tee wraps repo for a backup that keeps keep snapshots in the cache.
func (c *Cache) Tee(repo agent.BackupRepo, keep int) (*Tee, agent.BackupRepo) {
	t := &Tee{repo: repo, c: c, keep: keep}
	p, ok1 := repo.(storedProber)
	bl, ok2 := repo.(agent.BatchLoader)
	if ok1 && ok2 {
		return t, teeBatch{Tee: t, prober: p, bl: bl}
	}
	return t, t
}

func (t *Tee) Dedup() vault.DedupParams { return t.repo.Dedup() }

func (t *Tee) Has(bt vault.BlobType, id vault.ID) bool {
	return t.c.v.Has(bt, id) && t.repo.Has(bt, id)
}

func (t *Tee) SaveBlob(ctx context.Context, bt vault.BlobType, id vault.ID, p []byte, rawLen int) (bool, error) {
	if !t.c.v.Has(bt, id) {
		if _, err := t.c.v.SaveBlob(ctx, bt, id, p, rawLen); err != nil {
			return false, fmt.Errorf("local copy: %w", err)
		}
	}
	if t.repo.Has(bt, id) {
		return false, nil
	}
	return t.repo.SaveBlob(ctx, bt, id, p, rawLen)
}

func (t *Tee) Flush(ctx context.Context) error {
	if err := t.repo.Flush(ctx); err != nil {
		return err
	}
	if err := t.c.v.Flush(ctx); err != nil {
		return fmt.Errorf("local copy: %w", err)
	}
	return nil
}

func (t *Tee) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	return t.repo.LoadTree(ctx, id)
}

// SaveSnapshot saves s in the vault with Source.LocalCopies set.
func (t *Tee) SaveSnapshot(ctx context.Context, s vault.SnapshotRecord) (vault.SnapshotRecord, error) {
	src := vault.SourceFacts{}
	if s.Source != nil {
		src = *s.Source
	}
	src.LocalCopies = &vault.LocalCopyStatus{Keep: t.keep, Held: min(t.keep, t.c.held(s)+1), Encrypted: true, Cipher: Cipher}
	s.Source = &src
	saved, err := t.repo.SaveSnapshot(ctx, s)
	if err == nil {
		t.saved = &saved
	}
	return saved, err
}

func (t *Tee) Snapshots(ctx context.Context) ([]vault.SnapshotRecord, error) {
	return t.repo.Snapshots(ctx)
}

func (t *Tee) BytesAdded() uint64 { return t.repo.BytesAdded() }

// Domain is the repository's dedup domain ("" when it has none).
func (t *Tee) Domain() string {
	if d, ok := t.repo.(interface{ Domain() string }); ok {
		return d.Domain()
	}
	return ""
}

func (t teeBatch) Stored(ctx context.Context, bt vault.BlobType, ids []vault.ID) ([]bool, error) {
	out, err := t.prober.Stored(ctx, bt, ids)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i] = out[i] && i < len(ids) && t.c.v.Has(bt, ids[i])
	}
	return out, nil
}

func (t teeBatch) LoadBlobs(ctx context.Context, bt vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	return t.bl.LoadBlobs(ctx, bt, ids, fn)
}

// Commit records the snapshot the backup saved in the vault as held,
// then prunes the cache to keep snapshots. The manifest is replaced last
// (durably), so a crash at any point leaves the cache as it was before
// or as it is after, never a snapshot half copied. It returns how many
// snapshots are held.
func (t *Tee) Commit(ctx context.Context) (int, error) {
	if t.saved == nil {
		return len(t.c.man.Entries), errors.New("local copy: no snapshot was saved")
	}
	c, s := t.c, *t.saved
	// The cache's own record names nothing: its paths and host are
	// placeholders, and the real record lives in the sealed manifest.
	// Its directory count covers the path components that "/" does not
	// name, so that the engine's walk bound (entries plus components)
	// still holds.
	pad := uint64(0)
	for _, p := range s.Paths {
		pad += uint64(strings.Count(p, "/"))
	}
	loc, err := c.v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: s.Time, Host: snapHost, Paths: []string{"/"}, Tags: []string{},
		Tree: s.Tree, Files: s.Files, Dirs: s.Dirs + pad, Bytes: s.Bytes})
	if err != nil {
		return len(c.man.Entries), fmt.Errorf("local copy: %w", err)
	}
	rec := s
	rec.Source = nil
	before := c.man.Entries
	// Keep the newest keep-1 of the same host and paths, and this one;
	// the snapshots of other paths are not this backup's to drop.
	var kept []Entry
	same := c.held(s)
	for _, e := range c.man.Entries {
		if sameSet(e.Snapshot, s) && same >= t.keep {
			same--
			continue
		}
		kept = append(kept, e)
	}
	c.man.Entries = append(kept, Entry{Snapshot: rec, Local: loc.ID})
	if err := c.writeManifest(); err != nil {
		c.man.Entries = before
		return c.held(s), err
	}
	return c.held(s), c.prune(ctx)
}

// sameSet reports whether a and b are snapshots of the same host and
// paths (what --local-copies N counts).
func sameSet(a, b vault.SnapshotRecord) bool {
	return a.Host == b.Host && slices.Equal(a.Paths, b.Paths)
}

// held counts the snapshots held of s's host and paths.
func (c *Cache) held(s vault.SnapshotRecord) int {
	n := 0
	for _, e := range c.man.Entries {
		if sameSet(e.Snapshot, s) {
			n++
		}
	}
	return n
}

// prune removes from the cache's vault every snapshot the manifest does
// not hold (those just dropped, and any a crash left behind), then the
// data only they used.
func (c *Cache) prune(ctx context.Context) error {
	held := map[vault.ID]bool{}
	for _, e := range c.man.Entries {
		held[e.Local] = true
	}
	all, err := c.v.Snapshots(ctx)
	if err != nil {
		return fmt.Errorf("local copy: prune: %w", err)
	}
	var gone []vault.ID
	for _, s := range all {
		if !held[s.ID] {
			gone = append(gone, s.ID)
		}
	}
	if len(gone) > 0 {
		if _, err := c.v.Forget(ctx, gone, "local-copy"); err != nil {
			return fmt.Errorf("local copy: prune: %w", err)
		}
	}
	// Twice: the first run condemns what nothing needs, the second
	// deletes it (no other writer uses the cache).
	for range 2 {
		if _, err := c.v.Prune(ctx, engine.PruneOptions{Principal: "local-copy"}); err != nil {
			return fmt.Errorf("local copy: prune: %w", err)
		}
	}
	return nil
}

// Expires is when the cache's key lease ends.
func (t *Tee) Expires() time.Time { return t.c.Expires }
