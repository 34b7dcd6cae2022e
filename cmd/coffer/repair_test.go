package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

type repairJSON struct {
	DryRun    bool `json:"dry_run"`
	Snapshots []struct {
		ID       string `json:"snapshot_id"`
		Repaired string `json:"repaired_id"`
		Dropped  []struct {
			Path string `json:"path"`
		} `json:"dropped"`
		Emptied   []string `json:"emptied"`
		Forgotten bool     `json:"forgotten"`
	} `json:"snapshots"`
}

func repairSnapshots(t *testing.T, e *testEnv, dry bool) repairJSON {
	t.Helper()
	args := []string{"repair", "snapshots", "--json"}
	if dry {
		args = append(args, "--dry-run")
	}
	var r repairJSON
	if err := json.Unmarshal([]byte(mustCoffer(t, e, args...)), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// assertRepaired: after repair, check passes; the latest snapshot
// restores every file of src but those in lost, byte for byte, and none
// of those; three snapshots are live.
func assertRepaired(t *testing.T, e *testEnv, src string, lost map[string][][2]uint64) {
	t.Helper()
	out, errOut, code := coffer(t, e, "check")
	if code != exitOK {
		t.Fatalf("check after repair: exit %d\n%s%s", code, out, errOut)
	}
	target := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", target, "--verify")
	assertRestoredExcept(t, src, target, lost, true)
	if n := len(listSnapshots(t, e)); n != 3 {
		t.Errorf("%d live snapshots after repair, want 3", n)
	}
}

func fileSet(m map[string][][2]uint64) []string {
	var out []string
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// TestRepairDeletedPack: a data pack deleted from the store. repair index
// removes its record, repair snapshots replaces the two snapshots using
// it by copies without the files that lost a chunk (and nothing more);
// then check passes, and the rest restores byte for byte.
func TestRepairDeletedPack(t *testing.T) {
	e := newEnv(t)
	src, snaps := spreadData(t, e)
	v := openTestVault(t, e)
	uses := usesOf(t, v.Vault, mustParseID(t, listSnapshots(t, e)[2].Tree))
	v.Close()
	pack, _ := damagedPack(t, uses, src)
	lost := expectedLoss(uses, func(r vault.BlobRecord) bool { return r.Pack == pack })
	packDamage[0].do(t, packFile(e, pack.String()), nil)
	if _, _, code := coffer(t, e, "check"); code != exitFailure {
		t.Fatalf("check of the damaged vault: exit %d", code)
	}

	// Dry runs change nothing.
	dry := mustCoffer(t, e, "repair", "index", "--dry-run")
	if !strings.Contains(dry, "would remove the record of pack "+pack.String()) {
		t.Errorf("repair index --dry-run:\n%s", dry)
	}
	if mustCoffer(t, e, "repair", "index", "--dry-run") != dry {
		t.Error("repair index --dry-run changed something")
	}
	mustCoffer(t, e, "repair", "index")
	if out := mustCoffer(t, e, "repair", "index"); !strings.Contains(out, "nothing to repair") {
		t.Errorf("second repair index: %s", out)
	}
	plan := repairSnapshots(t, e, true)
	if len(plan.Snapshots) != 2 || len(listSnapshots(t, e)) != 3 {
		t.Fatalf("dry run: %+v", plan)
	}
	res := repairSnapshots(t, e, false)
	if len(res.Snapshots) != 2 {
		t.Fatalf("repaired %d snapshots, want the 2 using the pack: %+v", len(res.Snapshots), res)
	}
	for _, s := range res.Snapshots {
		if s.ID == snaps[0] || !s.Forgotten || len(s.Repaired) != 64 {
			t.Errorf("repair: %+v", s)
		}
	}
	var dropped []string
	for _, d := range res.Snapshots[len(res.Snapshots)-1].Dropped {
		dropped = append(dropped, d.Path)
	}
	sort.Strings(dropped)
	if want := fileSet(lost); !slices.Equal(dropped, want) {
		t.Errorf("the latest snapshot's repair dropped %q, the pack's loss is %q", dropped, want)
	}
	assertRepaired(t, e, src, lost)
	// The repaired snapshot keeps the original's time; history is in
	// the chain (and the event trail).
	for _, s := range listSnapshots(t, e) {
		if s.ID == snaps[2] {
			t.Error("the original is still live")
		}
	}
	if out := mustCoffer(t, e, "repair", "snapshots"); !strings.Contains(out, "nothing to repair") {
		t.Errorf("second repair snapshots: %s", out)
	}
}

// TestRepairDamagedTree: a directory's listing fails authentication: the
// repaired snapshots keep the directory empty, and everything else.
func TestRepairDamagedTree(t *testing.T) {
	e := newEnv(t)
	src, _ := spreadData(t, e)
	v := openTestVault(t, e)
	root := mustParseID(t, listSnapshots(t, e)[2].Tree)
	uses := usesOf(t, v.Vault, root)
	// The docs directory of the last snapshot (shared with the second).
	var docs vault.ID
	id := root
	for _, name := range strings.Split(strings.TrimPrefix(filepath.Join(src, "docs"), "/"), "/") {
		tr, err := v.LoadTree(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tr.Nodes {
			if string(n.Name) == name {
				id = n.Subtree
			}
		}
	}
	docs = id
	rec, ok := v.Lookup(vault.TreeBlob, docs)
	v.Close()
	if !ok {
		t.Fatal("docs tree not indexed")
	}
	flipBit(t, packFile(e, rec.Pack.String()), int64(rec.Offset+rec.Length/2), 2)
	lost := map[string][][2]uint64{}
	for p := range uses {
		if strings.HasPrefix(p, filepath.Join(src, "docs")+"/") {
			lost[p] = nil
		}
	}
	if _, _, code := coffer(t, e, "check"); code != exitFailure {
		t.Fatal("check does not see the damaged tree")
	}
	res := repairSnapshots(t, e, false)
	if len(res.Snapshots) != 2 {
		t.Fatalf("repaired %+v", res)
	}
	for _, s := range res.Snapshots {
		if len(s.Emptied) != 1 || s.Emptied[0] != filepath.Join(src, "docs")+"/" || len(s.Dropped) != 0 {
			t.Errorf("repair of %s: emptied %q, dropped %v", s.ID[:8], s.Emptied, s.Dropped)
		}
	}
	assertRepaired(t, e, src, lost)
}

// TestRepairLostIndex: the catalog's records of two packs are removed
// (the index is lost, the packs are not). repair snapshots refuses (it
// would take their data for lost); repair index brings them back from
// the packs' own headers, and nothing at all is lost.
func TestRepairLostIndex(t *testing.T) {
	e := newEnv(t)
	src, _ := spreadData(t, e)
	v := openTestVault(t, e)
	uses := usesOf(t, v.Vault, mustParseID(t, listSnapshots(t, e)[2].Tree))
	vid := v.Record().ID
	root, _ := v.Lookup(vault.TreeBlob, mustParseID(t, listSnapshots(t, e)[2].Tree))
	v.Close()
	pack, _ := damagedPack(t, uses, src)
	cat, err := sqlite.Open(filepath.Join(e.vaultDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []vault.ID{pack, root.Pack} {
		if err := cat.RemovePack(context.Background(), vid, p); err != nil {
			t.Fatal(err)
		}
	}
	cat.Close()
	if _, _, code := coffer(t, e, "check"); code != exitFailure {
		t.Fatal("check does not see the lost index")
	}
	if _, errOut, code := coffer(t, e, "repair", "snapshots"); code != exitFailure || !strings.Contains(errOut, "repair index first") {
		t.Errorf("repair snapshots with packs unindexed: exit %d, %s", code, errOut)
	}
	out := mustCoffer(t, e, "repair", "index")
	for _, p := range []vault.ID{pack, root.Pack} {
		if !strings.Contains(out, "add pack "+p.String()) {
			t.Errorf("repair index does not add %s:\n%s", p.Short(), out)
		}
	}
	if out := mustCoffer(t, e, "repair", "snapshots"); !strings.Contains(out, "nothing to repair") {
		t.Errorf("repair snapshots after repair index: %s", out)
	}
	assertRepaired(t, e, src, nil)
	mustCoffer(t, e, "check", "--read-data")
}

// TestRepairIsLocalOnly: through a server, repair says why not.
// TestRepairThroughServer: repair index and repair snapshots with a
// server's vault. The server repairs; repair snapshots (a critical change
// there) answers with a request that names what a dry run finds, and once
// a security approver approves it, check passes and the rest restores.
// An operator is refused.
func TestRepairThroughServer(t *testing.T) {
	srv := servertest.Start(t)
	e := serverEnv(t, srv)
	mustCoffer(t, e, "vault", "create", "prod")
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	src := smallData(t)
	backupJSON(t, e, src)
	packs := func() map[string]int64 {
		out := map[string]int64{}
		filepath.WalkDir(server.VaultDir(srv.DataDir, "prod"), func(p string, d os.DirEntry, err error) error {
			if fi, ierr := os.Stat(p); err == nil && ierr == nil && !d.IsDir() && filepath.Base(filepath.Dir(filepath.Dir(p))) == "packs" {
				out[p] = fi.Size()
			}
			return err
		})
		return out
	}
	before := packs()
	writeFile(t, filepath.Join(src, "new.bin"), randBytes(7, 400_000), 0o644)
	damaged := backupJSON(t, e, src)
	var big string
	for p, n := range packs() {
		if _, old := before[p]; !old && n > 400_000 {
			big = p
		}
	}
	if big == "" {
		t.Fatal("the second backup wrote no data pack")
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	if _, _, code := coffer(t, e, "check"); code != exitFailure {
		t.Fatalf("check of the damaged vault: exit %d", code)
	}
	op := mustCoffer(t, e, "token", "create", "--role", "backup-operator", "--vault", srv.URL+"/prod", "--json")
	var opTok struct {
		Secret string `json:"token"`
	}
	if err := json.Unmarshal([]byte(op), &opTok); err != nil || opTok.Secret == "" {
		t.Fatalf("token create: %s", op)
	}
	failsWith(t, e, "forbidden", "repair", "index", "--token", opTok.Secret)

	if out := mustCoffer(t, e, "repair", "index", "--dry-run"); !strings.Contains(out, "would remove the record of pack "+filepath.Base(big)) {
		t.Errorf("repair index --dry-run:\n%s", out)
	}
	if out := mustCoffer(t, e, "repair", "index"); !strings.Contains(out, "index repaired") {
		t.Errorf("repair index:\n%s", out)
	}
	if out := mustCoffer(t, e, "repair", "snapshots", "--dry-run"); !strings.Contains(out, "would drop /") || !strings.Contains(out, "new.bin") {
		t.Errorf("repair snapshots --dry-run:\n%s", out)
	}
	out := mustCoffer(t, e, "repair", "snapshots")
	if !strings.Contains(out, "needs a second person's approval") || !strings.Contains(out, damaged[:8]) {
		t.Fatalf("repair snapshots:\n%s", out)
	}
	req := requestID(t, out)
	if n := len(listSnapshots(t, e)); n != 2 {
		t.Fatalf("%d snapshots before approval", n)
	}
	approver, _, err := server.IssueApproverToken(t.Context(), srv.DataDir, "alice", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if out := mustCoffer(t, e, "approve", req, "--vault", srv.URL, "--token", approver); !strings.Contains(out, "repaired "+damaged[:8]) {
		t.Errorf("approve:\n%s", out)
	}
	if out, errOut, code := coffer(t, e, "check"); code != exitOK {
		t.Fatalf("check after repair: exit %d\n%s%s", code, out, errOut)
	}
	target := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", target)
	os.Remove(filepath.Join(src, "new.bin"))
	assertSameTree(t, src, filepath.Join(target, src))
}
