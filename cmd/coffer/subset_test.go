package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// subsetCase damages one data pack of a vault (a flipped byte inside a
// blob: only reading the data finds it) and checks it with 1/2 and 2/2.
func subsetCase(t *testing.T, e *testEnv, storeDir string, ix blobIndex, snapTree vault.ID) {
	t.Helper()
	uses := usesOf(t, ix, snapTree)
	r := uses["/r.bin"]
	if len(r) == 0 {
		for p, u := range uses {
			if strings.HasSuffix(p, "r.bin") {
				r = u
			}
		}
	}
	if len(r) == 0 {
		t.Fatalf("no r.bin in %v", uses)
	}
	pack := r[0].Pack.String()
	flipBit(t, filepath.Join(storeDir, "packs", pack[:2], pack), int64(r[0].Offset)+20, 3)

	// Structure alone does not see it.
	mustCoffer(t, e, "check")
	failed, packsRead, packs := 0, 0, 0
	for _, g := range []string{"1/2", "2/2"} {
		out, errOut, code := coffer(t, e, "check", "--read-data-subset", g)
		if !strings.Contains(out, "data of subset "+g+" (") {
			t.Errorf("check --read-data-subset %s does not name the subset:\n%s", g, out)
		}
		if code != exitOK {
			failed++
			if !strings.Contains(errOut, pack) {
				t.Errorf("%s: the error does not name pack %s:\n%s", g, pack[:8], errOut)
			}
		}
		jout, _, jcode := coffer(t, e, "check", "--read-data-subset", g, "--json")
		var rep struct {
			OK        bool   `json:"ok"`
			Subset    string `json:"read_data_subset"`
			PacksRead int    `json:"packs_read"`
			Packs     int    `json:"packs"`
		}
		if err := json.Unmarshal([]byte(jout), &rep); err != nil {
			t.Fatalf("--json: %v\n%s", err, jout)
		}
		if rep.Subset != g || rep.OK != (code == exitOK) || (jcode == exitOK) != (code == exitOK) {
			t.Errorf("%s --json: %+v (exit %d, text exit %d)", g, rep, jcode, code)
		}
		packsRead += rep.PacksRead
		packs = rep.Packs
	}
	if failed != 1 {
		t.Errorf("the damaged pack was found by %d of the groups 1/2 and 2/2, want 1", failed)
	}
	if packsRead != packs || packs < 4 {
		t.Errorf("1/2 and 2/2 read %d packs, the vault has %d", packsRead, packs)
	}
	if _, _, code := coffer(t, e, "check", "--read-data-subset", "100%"); code != exitFailure {
		t.Errorf("100%%: exit %d", code)
	}
	for _, bad := range []string{"0%", "3/2", "lots"} {
		if _, errOut, code := coffer(t, e, "check", "--read-data-subset", bad); code != exitFailure || !strings.Contains(errOut, "subset") {
			t.Errorf("--read-data-subset %s: exit %d, %s", bad, code, errOut)
		}
	}
}

func backupsForSubset(t *testing.T, e *testEnv) string {
	t.Helper()
	data := smallData(t)
	backupJSON(t, e, data)
	for i := range 3 {
		writeFile(t, filepath.Join(data, fmt.Sprintf("n%d.bin", i)), randBytes(uint64(50+i), 20_000), 0o644)
		backupJSON(t, e, data)
	}
	return data
}

// TestCheckReadDataSubset: groups 1/2 and 2/2 read every pack between
// them; the group holding a damaged pack finds it, the other does not,
// and each says which subset it read.
func TestCheckReadDataSubset(t *testing.T) {
	e := newEnv(t)
	backupsForSubset(t, e)
	snaps := listSnapshots(t, e)
	v := openTestVault(t, e)
	tree := mustParseID(t, snaps[0].Tree)
	ix := v.Vault
	subsetCase(t, e, e.storeDir(), ix, tree)
	v.Close()
}

// TestCheckReadDataSubsetRemote: the same through a vault server, which
// runs the check and reads the subset it is sent.
func TestCheckReadDataSubsetRemote(t *testing.T) {
	srv, e := remoteVaultEnv(t, servertest.Options{})
	backupsForSubset(t, e)
	eng, err := srv.Server.Engine(context.Background(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	snaps := listSnapshots(t, e)
	subsetCase(t, e, filepath.Join(server.VaultDir(srv.DataDir, "prod"), "store"), eng, mustParseID(t, snaps[0].Tree))
}
