package engine_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

func report(enc, method string) *vault.SourceFacts {
	return &vault.SourceFacts{Volumes: []vault.SourceVolume{{Path: "/dir", Mount: "/", Device: "/dev/mapper/root", FSType: "ext4", Encryption: enc, Method: method, Detail: "test"}}}
}

// reportedSnapshot saves a snapshot of host at time at carrying f.
func reportedSnapshot(t *testing.T, v *engine.Vault, host string, at time.Time, f *vault.SourceFacts) vault.SnapshotRecord {
	t.Helper()
	s := snapshotOf(t, v, host, []byte("data of "+host))
	tr := s.Tree
	n, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: at, Host: host, Paths: []string{"/dir"}, Tree: tr, Files: 1, Dirs: 1, Source: f})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Sources gives each host's newest snapshot and the newest report among
// its snapshots (a later snapshot without one, as from stdin, does not
// hide it); a tag (a replacement) keeps the report of the original.
func TestSources(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	reportedSnapshot(t, v, "web", testStart.Add(time.Hour), report(vault.VolumeUnencrypted, ""))
	webRep := reportedSnapshot(t, v, "web", testStart.Add(2*time.Hour), report(vault.VolumeEncrypted, "luks2"))
	dbRep := reportedSnapshot(t, v, "db", testStart.Add(time.Hour), report(vault.VolumeUnknown, ""))
	// snapshotOf saves at testStart: older than the reports.
	got, err := v.Sources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Host != "db" || got[1].Host != "web" {
		t.Fatalf("sources %+v", got)
	}
	if w := got[1]; w.Last.ID != webRep.ID || w.Report.ID != webRep.ID || w.Report.Source == nil || w.Report.Source.Volumes[0].Method != "luks2" {
		t.Fatalf("web: %+v", w)
	}
	if d := got[0]; d.Report.ID != dbRep.ID || d.Report.Source.Volumes[0].Encryption != vault.VolumeUnknown {
		t.Fatalf("db: %+v", d)
	}
	// A newer snapshot without a report: Last moves, Report stays.
	plain, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart.Add(3 * time.Hour), Host: "web", Paths: []string{"/dir"}, Tree: webRep.Tree, Files: 1, Dirs: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = v.Sources(ctx, nil)
	if w := got[1]; w.Last.ID != plain.ID || w.Report.ID != webRep.ID {
		t.Fatalf("after a snapshot without a report: %+v", w)
	}
	// A tag replaces the snapshot: the new one keeps the sealed report.
	n, _, err := v.Replace(ctx, webRep.ID, func(o vault.SnapshotRecord) (engine.Derived, error) {
		return engine.Derived{Tags: []string{"kept"}}, nil
	}, "ann")
	if err != nil {
		t.Fatal(err)
	}
	found, err := v.FindSnapshot(ctx, n.ID.String())
	if err != nil || found.Source == nil || found.Source.Volumes[0].Method != "luks2" {
		t.Fatalf("the replacement lost the report: %+v, %v", found.Source, err)
	}
	// keep narrows the hosts (a source token sees its own).
	got, _ = v.Sources(ctx, func(s vault.SnapshotRecord) bool { return s.Host == "db" })
	if len(got) != 1 || got[0].Host != "db" {
		t.Fatalf("keep: %+v", got)
	}
}

// A catalog writer who moves a host's reported snapshot to another host
// (to make an unencrypted machine look encrypted, or the reverse), and a
// store writer who swaps two snapshot objects, are both caught: the
// report is read from the sealed object and checked against the chain.
func TestAttackSourceReportMoved(t *testing.T) {
	setup := func(t *testing.T) (*env, vault.SnapshotRecord, vault.SnapshotRecord) {
		e := newEnv(t, nil)
		v := create(t, e)
		good := reportedSnapshot(t, v, "good", testStart.Add(time.Hour), report(vault.VolumeEncrypted, "luks2"))
		bad := reportedSnapshot(t, v, "bad", testStart.Add(time.Hour), report(vault.VolumeUnencrypted, ""))
		v.Close()
		return e, good, bad
	}
	t.Run("catalog row's host edited", func(t *testing.T) {
		e, good, _ := setup(t)
		execSQL(t, attackerSQL(t, e), `UPDATE snapshots SET host = 'bad' WHERE id = ?`, good.ID[:])
		v := reopen(t, e, nil)
		if got, err := v.Sources(ctx, nil); !errors.Is(err, vault.ErrCorrupt) {
			t.Fatalf("edited host went unnoticed: %+v, %v", got, err)
		}
	})
	t.Run("snapshot objects swapped", func(t *testing.T) {
		e, good, bad := setup(t)
		find := func(id vault.ID) string {
			var hit string
			filepath.WalkDir(filepath.Join(e.dir, "store"), func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.Contains(p, "snapshots") && strings.HasSuffix(p, id.String()) {
					hit = p
				}
				return nil
			})
			if hit == "" {
				t.Fatalf("no object of %s", id.Short())
			}
			return hit
		}
		gp, bp := find(good.ID), find(bad.ID)
		b, err := os.ReadFile(gp)
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(bp, 0o600)
		if err := os.WriteFile(bp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		v := reopen(t, e, nil)
		if got, err := v.Sources(ctx, nil); !errors.Is(err, vault.ErrCorrupt) {
			t.Fatalf("swapped object went unnoticed: %+v, %v", got, err)
		}
	})
}

// A report that breaks the rules is refused before anything is written.
func TestSaveSnapshotRefusesBadReport(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	s := snapshotOf(t, v, "h", []byte("x"))
	bad := report(vault.VolumeEncrypted, "")
	if _, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart, Host: "h", Paths: []string{"/dir"}, Tree: s.Tree, Source: bad}); !errors.Is(err, format.ErrInvalidSnapshot) {
		t.Fatalf("saved: %v", err)
	}
}
