package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// tag and rewrite on a local vault: the new snapshot keeps the original's
// time, host and paths; the original is forgotten and can come back.
func TestTagAndRewriteLocal(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "keep.txt"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "secret.key"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := backupJSON(t, e, src, "--tag", "daily")
	before := listSnapshots(t, e)[0]

	var tagged []replacedJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "tag", "--json", "--remove", "daily", "--add", "keep", id[:8])), &tagged); err != nil {
		t.Fatal(err)
	}
	if len(tagged) != 1 || tagged[0].Unchanged || !slices.Equal(tagged[0].Snapshot.Tags, []string{"keep"}) {
		t.Fatalf("tag: %+v", tagged)
	}
	snaps := listSnapshots(t, e)
	if len(snaps) != 1 || snaps[0].ID == id || !snaps[0].Time.Equal(before.Time) || snaps[0].Host != before.Host || snaps[0].Tree != before.Tree {
		t.Fatalf("after tag: %+v, before %+v", snaps, before)
	}
	if out := mustCoffer(t, e, "tag", "--add", "keep", snaps[0].ID[:8]); !strings.Contains(out, "unchanged") {
		t.Fatalf("same tag again: %s", out)
	}

	out := mustCoffer(t, e, "rewrite", "--exclude", "*.key", snaps[0].ID[:8])
	if !strings.Contains(out, "is now") {
		t.Fatalf("rewrite: %s", out)
	}
	after := listSnapshots(t, e)
	if len(after) != 1 || !after[0].Time.Equal(before.Time) || !slices.Equal(after[0].Tags, []string{"keep"}) || after[0].Files != before.Files-1 {
		t.Fatalf("after rewrite: %+v", after)
	}
	ls := mustCoffer(t, e, "ls", after[0].ID[:8])
	if strings.Contains(ls, "secret.key") || !strings.Contains(ls, "keep.txt") {
		t.Fatalf("ls after rewrite:\n%s", ls)
	}
	if out := mustCoffer(t, e, "rewrite", "--exclude", "*.key", after[0].ID[:8]); !strings.Contains(out, "nothing matches") {
		t.Fatalf("rewrite again: %s", out)
	}
	mustCoffer(t, e, "undelete", id[:8])
	mustCoffer(t, e, "check")
}

// Within the minimum retention neither tag nor rewrite changes anything.
func TestTagRefusedWithinMinimumRetention(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := backupJSON(t, e, src)
	mustCoffer(t, e, "vault", "set", "--min-retention", "30d")
	for _, args := range [][]string{{"tag", "--add", "x", id[:8]}, {"rewrite", "--exclude", "a", id[:8]}} {
		_, errOut, code := coffer(t, e, args...)
		if code == 0 || !strings.Contains(errOut, "minimum retention") {
			t.Errorf("%v: exit %d: %s", args, code, errOut)
		}
	}
	if snaps := listSnapshots(t, e); len(snaps) != 1 || snaps[0].ID != id {
		t.Fatalf("list changed: %+v", snaps)
	}
}

// tag and rewrite through a vault server: an owner's token may, an
// operator's may not; the new snapshot keeps the original's time.
func TestTagAndRewriteRemote(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	tokOut := mustCoffer(t, e, "token", "create", "--vault", srv.URL+"/prod", "--role", "backup-operator", "--name", "web01", "--token", srv.OwnerToken)
	op := strings.TrimSpace(tokOut)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	e.setenv("COFFER_TOKEN", op)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "keep.txt"), []byte("keep"), 0o644)
	os.WriteFile(filepath.Join(src, "secret.key"), []byte("secret"), 0o600)
	id := backupJSON(t, e, src)
	before := listSnapshots(t, e)[0]
	for _, args := range [][]string{{"tag", "--add", "x", id[:8]}, {"rewrite", "--exclude", "*.key", id[:8]}} {
		if _, errOut, code := coffer(t, e, args...); code == 0 || !strings.Contains(errOut, "forbidden") {
			t.Errorf("operator %v: exit %d: %s", args, code, errOut)
		}
	}
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "tag", "--add", "keep", id[:8])
	cur := listSnapshots(t, e)[0]
	mustCoffer(t, e, "rewrite", "--exclude", "*.key", cur.ID[:8])
	after := listSnapshots(t, e)
	if len(after) != 1 || !after[0].Time.Equal(before.Time) || !slices.Equal(after[0].Tags, []string{"keep"}) || after[0].Files != before.Files-1 {
		t.Fatalf("after tag and rewrite: %+v (before %+v)", after, before)
	}
	if ls := mustCoffer(t, e, "ls", after[0].ID[:8]); strings.Contains(ls, "secret.key") {
		t.Fatalf("ls:\n%s", ls)
	}
	if del := mustCoffer(t, e, "snapshots", "--deleted"); !strings.Contains(del, id[:8]) {
		t.Fatalf("snapshots --deleted:\n%s", del)
	}
}
