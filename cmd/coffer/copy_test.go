package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func copyJSONOut(t *testing.T, e *testEnv, args ...string) []copyJSON {
	t.Helper()
	var out []copyJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, append([]string{"copy", "--json"}, args...)...)), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func snapshotsOf(t *testing.T, e *testEnv, ref string) []snapshotJSON {
	t.Helper()
	var snaps []snapshotJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "snapshots", "--json", "--vault", ref)), &snaps); err != nil {
		t.Fatal(err)
	}
	return snaps
}

// copy local → local, then local → server, then server → server: host,
// paths, tags and files kept, the copy's time the destination's, the
// original recorded; a second copy sends nothing and duplicates nothing;
// the copies restore byte for byte.
func TestCopyVaults(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	os.WriteFile(filepath.Join(src, "d", "big"), randBytes(7, 3<<20), 0o644)
	os.WriteFile(filepath.Join(src, "small"), []byte("small"), 0o644)
	e.setenv("COFFER_HOST", "web01")
	first := backupJSON(t, e, src, "--tag", "daily")
	os.WriteFile(filepath.Join(src, "later"), []byte("later"), 0o644)
	second := backupJSON(t, e, src)
	orig := snapshotsOf(t, e, "default")

	e.tick()
	out := copyJSONOut(t, e, "--from-vault", "default", "--to-vault", "usb")
	if len(out) != 2 || out[0].Copy == nil || out[1].Copy == nil {
		t.Fatalf("copy: %+v", out)
	}
	copies := snapshotsOf(t, e, "usb")
	if len(copies) != 2 {
		t.Fatalf("usb holds %d snapshots", len(copies))
	}
	byOrig := map[string]snapshotJSON{}
	for _, c := range copies {
		if c.CopiedFrom != nil {
			byOrig[c.CopiedFrom.Snapshot] = c
		}
	}
	for i, o := range orig {
		c := byOrig[o.ID]
		if c.Host != "web01" || c.Tree == o.Tree || c.Files != o.Files || strings.Join(c.Paths, ",") != strings.Join(o.Paths, ",") ||
			strings.Join(c.Tags, ",") != strings.Join(o.Tags, ",") || c.CopiedFrom == nil || c.CopiedFrom.Snapshot != o.ID || !c.CopiedFrom.Time.Equal(o.Time) {
			t.Errorf("copy %d: %+v of %+v", i, c, o)
		}
		if !c.Time.After(o.Time) {
			t.Errorf("copy %d is dated %s, not after the original's %s: the destination records its own time", i, c.Time, o.Time)
		}
	}
	again := copyJSONOut(t, e, "--from-vault", "default", "--to-vault", "usb")
	if len(again) != 2 || again[0].Skipped == "" || again[1].Skipped == "" {
		t.Fatalf("second copy: %+v", again)
	}
	if n := len(snapshotsOf(t, e, "usb")); n != 2 {
		t.Fatalf("usb holds %d snapshots after a second copy", n)
	}
	dst := t.TempDir()
	mustCoffer(t, e, "restore", byOrig[second].ID[:8], "--vault", "usb", "--target", dst)
	for _, name := range []string{"d/big", "small", "later"} {
		want, _ := os.ReadFile(filepath.Join(src, name))
		got, err := os.ReadFile(filepath.Join(dst, src, name))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s differs after restoring the copy: %v", name, err)
		}
	}
	mustCoffer(t, e, "check", "--vault", "usb", "--read-data")

	// local → server → server.
	srv := servertest.Start(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "off1", "--vault", srv.URL, "--token", srv.OwnerToken)
	mustCoffer(t, e, "vault", "create", "off2", "--vault", srv.URL, "--token", srv.OwnerToken)
	op := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--vault", srv.URL+"/off1", "--role", "backup-operator", "--name", "copier", "--token", srv.OwnerToken))
	out = copyJSONOut(t, e, "--from-vault", "default", "--to-vault", srv.URL+"/off1", "--token", op, first[:8])
	if len(out) != 1 || out[0].Copy == nil || out[0].Copy.CopiedFrom == nil || out[0].Copy.CopiedFrom.Snapshot != first {
		t.Fatalf("copy to server: %+v", out)
	}
	out = copyJSONOut(t, e, "--from-vault", "default", "--to-vault", srv.URL+"/off1", "--token", op)
	if len(out) != 2 || out[0].Skipped == "" || out[1].Copy == nil || out[1].Copy.CopiedFrom.Snapshot != second {
		t.Fatalf("second copy to server: %+v", out)
	}
	out = copyJSONOut(t, e, "--from-vault", srv.URL+"/off1", "--to-vault", srv.URL+"/off2", "--token", srv.OwnerToken)
	if len(out) != 2 || out[0].Copy == nil || out[1].Copy == nil {
		t.Fatalf("server to server: %+v", out)
	}
	dst2 := t.TempDir()
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "restore", out[1].Copy.ID[:8], "--vault", srv.URL+"/off2", "--target", dst2, "--host", "web01")
	for _, name := range []string{"d/big", "small", "later"} {
		want, _ := os.ReadFile(filepath.Join(src, name))
		got, err := os.ReadFile(filepath.Join(dst2, src, name))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s differs after restoring the server's copy: %v", name, err)
		}
	}
	mustCoffer(t, e, "check", "--vault", srv.URL+"/off2", "--read-data")
}

// TestAttackCopyPlantedClaim: whoever may write the destination can
// record a snapshot claiming to be a copy of one of the source's; copy
// must not take the claim for the copy and skip the real snapshot.
func TestAttackCopyPlantedClaim(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "real"), []byte("the real data"), 0o644)
	e.setenv("COFFER_HOST", "web01")
	id := backupJSON(t, e, src)
	var show struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "vault", "show", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	mustCoffer(t, e, "vault", "create", "off", "--vault", srv.URL, "--token", srv.OwnerToken)
	op := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--vault", srv.URL+"/off", "--role", "backup-operator", "--name", "m", "--token", srv.OwnerToken))
	// The attacker's snapshot: other data, same host and paths, claiming
	// to be the copy of id.
	fake := t.TempDir()
	os.WriteFile(filepath.Join(fake, "real"), []byte("planted"), 0o644)
	backupJSON(t, e, fake, "--vault", srv.URL+"/off", "--token", op, "--host", "web01")
	v := srv.Client(t, op).Vault("off")
	snaps, err := v.Snapshots(context.Background())
	if err != nil || len(snaps) != 1 {
		t.Fatal(snaps, err)
	}
	planted := snaps[0]
	planted.Paths = []string{src}
	srcID, _ := vault.ParseID(show.ID)
	origID, _ := vault.ParseID(id)
	planted.Copy = &vault.SnapshotCopy{Vault: srcID, Snapshot: origID, Time: e.now()}
	planted.ID, planted.Parent = vault.ID{}, vault.ID{}
	if _, err := v.SaveSnapshot(context.Background(), planted); err != nil {
		t.Fatal(err)
	}
	out := copyJSONOut(t, e, "--from-vault", "default", "--to-vault", srv.URL+"/off", "--token", op)
	if len(out) != 1 || out[0].Copy == nil {
		t.Fatalf("copy skipped the snapshot for the planted claim: %+v", out)
	}
	dst := t.TempDir()
	mustCoffer(t, e, "restore", out[0].Copy.ID[:8], "--vault", srv.URL+"/off", "--token", op, "--target", dst, "--host", "web01")
	if got, _ := os.ReadFile(filepath.Join(dst, src, "real")); string(got) != "the real data" {
		t.Fatalf("restored %q", got)
	}
	// And now it is copied: a second run skips it.
	if again := copyJSONOut(t, e, "--from-vault", "default", "--to-vault", srv.URL+"/off", "--token", op); len(again) != 1 || again[0].Skipped == "" {
		t.Fatalf("second copy: %+v", again)
	}
}
