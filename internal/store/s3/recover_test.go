package s3_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestRecoverFromStore: a vault on S3 (an Object Lock bucket, so reads go
// by version) gets three backups with a DEK rotation between them and a
// forget; then its catalog is lost. With the store and the key alone,
// Open records the vault and anchors its keyring, and Recover rebuilds
// the index and the snapshot list: every snapshot whose object is in the
// store restores byte for byte, check --read-data finds nothing wrong,
// and the next backup deduplicates against the recovered index. A second
// Recover is refused.
func TestRecoverFromStore(t *testing.T) {
	sv := s3test.Start(t)
	ctx := context.Background()
	bucket := sv.Bucket(t, true)
	dir := t.TempDir()
	ks, err := platform.Create(filepath.Join(dir, "platform.key"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	openCat := func(name string) *sqlite.Catalog {
		cat, err := sqlite.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cat.Close() })
		return cat
	}
	opts := func(st vault.Store, cat vault.Catalog) engine.Options {
		return engine.Options{Store: st, Catalog: cat, Keys: ks, Name: "prod"}
	}
	st := openStore(t, sv, bucket, "backups/prod")
	defer st.Close()
	cat := openCat("catalog.db")
	v, err := engine.Create(ctx, opts(st, cat), engine.DefaultChunker())
	if err != nil {
		t.Fatal(err)
	}
	type backup struct {
		src   string
		snap  vault.SnapshotRecord
		files map[string][]byte
	}
	var backups []backup
	shared := random(t, 2<<20)
	for i := range 3 {
		files := map[string][]byte{"shared": shared, "own": random(t, 300_000+i), "d/small": []byte{byte(i)}}
		src := t.TempDir()
		for name, data := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755)
			if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "web01"})
		if err != nil {
			t.Fatalf("backup %d: %v", i, err)
		}
		backups = append(backups, backup{src: src, snap: res.Snapshot, files: files})
		if i == 0 {
			if _, err := v.RotateDEK(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := v.Forget(ctx, []vault.ID{backups[1].snap.ID}, "ann"); err != nil {
		t.Fatal(err)
	}
	v.Close()

	// The catalog is lost: a new, empty one, the same store and key.
	fresh := openCat("recovered.db")
	r, err := engine.Open(ctx, opts(st, fresh))
	if err != nil {
		t.Fatalf("open with an empty catalog: %v", err)
	}
	defer r.Close()
	if snaps, err := r.AllSnapshots(ctx); err != nil || len(snaps) != 0 {
		t.Fatalf("before recover: %d snapshots, %v", len(snaps), err)
	}
	res, err := r.Recover(ctx, "recoverer")
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if len(res.Unreadable) != 0 || len(res.Index.Added) == 0 {
		t.Fatalf("recover: %d packs added, unreadable %v", len(res.Index.Added), res.Unreadable)
	}
	snaps, err := r.AllSnapshots(ctx)
	if err != nil {
		t.Fatalf("the recovered snapshot list does not verify: %v", err)
	}
	if len(snaps) != len(backups) {
		t.Fatalf("recovered %d snapshots, want %d (every object in the store, the forgotten one live again)", len(snaps), len(backups))
	}
	byID := map[vault.ID]vault.SnapshotRecord{}
	for _, s := range snaps {
		byID[s.ID] = s
	}
	for i, b := range backups {
		got, ok := byID[b.snap.ID]
		if !ok || got.Tree != b.snap.Tree || !got.Time.Equal(b.snap.Time) || got.Host != b.snap.Host || !got.Deleted.IsZero() {
			t.Fatalf("snapshot %d: recovered as %+v, want %+v, live", i, got, b.snap)
		}
		dst := t.TempDir()
		if _, err := agent.Restore(ctx, r, got.Tree, agent.RestoreOptions{Target: dst}); err != nil {
			t.Fatalf("restore snapshot %d after recover: %v", i, err)
		}
		for name, want := range b.files {
			data, err := os.ReadFile(filepath.Join(dst, b.src, name))
			if err != nil || !bytes.Equal(data, want) {
				t.Fatalf("snapshot %d: %s differs after recover: %v", i, name, err)
			}
		}
	}
	rep, err := r.Check(ctx, engine.CheckOptions{ReadData: true})
	if err != nil || len(rep.Errors) != 0 || rep.Snapshots != len(backups) {
		t.Fatalf("check --read-data after recover: %v, %d snapshots, errors %v", err, rep.Snapshots, rep.Errors)
	}
	before := r.BytesAdded()
	src := backups[2].src
	if _, err := agent.Backup(ctx, r, agent.BackupOptions{Paths: []string{src}, Host: "web01"}); err != nil {
		t.Fatalf("backup after recover: %v", err)
	}
	if added := r.BytesAdded() - before; added > 64<<10 {
		t.Errorf("a backup of unchanged data after recover stored %d bytes: the recovered index does not deduplicate", added)
	}
	if _, err := r.Recover(ctx, "recoverer"); !errors.Is(err, vault.ErrExists) {
		t.Fatalf("a second recover: %v, want ErrExists", err)
	}
}
