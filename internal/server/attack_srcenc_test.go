package server_test

// Attacks on the source reports (issue 17): the report about its machine
// that an agent seals with each snapshot, and GET …/sources, which keeps
// the newest per host for the posture report.

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/vault"
)

// backupReporting backs dir up into vault "a" with token, claiming host,
// with the report f (whatever this machine is).
func (a *arena) backupReporting(token, dir, host string, f func(paths []string) *vault.SourceFacts) vault.SnapshotRecord {
	a.t.Helper()
	ctx := context.Background()
	v := a.client(token).Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		a.t.Fatal(err)
	}
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{dir}, Host: host, Force: true,
		Source: func(_ context.Context, paths []string) *vault.SourceFacts { return f(paths) }})
	if err != nil {
		a.t.Fatalf("backup of %s as %s: %v", dir, host, err)
	}
	return res.Snapshot
}

func claim(enc, method string) func([]string) *vault.SourceFacts {
	return func(paths []string) *vault.SourceFacts {
		f := &vault.SourceFacts{}
		for _, p := range paths {
			f.Volumes = append(f.Volumes, vault.SourceVolume{Path: p, Mount: "/", Device: "/dev/mapper/root", FSType: "ext4", Encryption: enc, Method: method, Detail: "claimed"})
		}
		return f
	}
}

// sources fetches GET …/sources of vault "a" with token, by host.
func (a *arena) sources(token string) map[string]api.SourceReport {
	a.t.Helper()
	out := a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a/sources", token, nil)
	var rs []api.SourceReport
	if err := json.Unmarshal(out, &rs); err != nil {
		a.t.Fatalf("sources %s: %v", out, err)
	}
	m := map[string]api.SourceReport{}
	for _, r := range rs {
		m[r.Host] = r
	}
	return m
}

// TestAttackSourceReportOtherHost: the agent of host web writes a report
// that it means to show under host db (an "encrypted" claim to hide db's
// plain disk, or the reverse). The server records web's snapshot, and so
// its report, under web; db's report stays db's own, with db as its
// writer. An operator token cannot record a report under an agent's host
// either.
func TestAttackSourceReportOtherHost(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	web, db := a.addSource("web"), a.addSource("db")
	dbSnap := a.backupReporting(db, dir, "db", claim(vault.VolumeUnencrypted, ""))
	webSnap := a.backupReporting(web, dir, "db", claim(vault.VolumeEncrypted, "luks2"))
	if webSnap.Host != "web" {
		t.Fatalf("web's snapshot recorded as host %q", webSnap.Host)
	}
	got := a.sources(a.env.OwnerToken)
	d, w := got["db"], got["web"]
	if d.ReportSnapshot != dbSnap.ID.String() || d.Source == nil || d.Source.Volumes[0].Encryption != vault.VolumeUnencrypted || !strings.Contains(d.Writer, "db") {
		t.Errorf("db's report: %+v", d)
	}
	if w.ReportSnapshot != webSnap.ID.String() || w.Source == nil || w.Source.Volumes[0].Method != "luks2" || !strings.Contains(w.Writer, "web") {
		t.Errorf("web's report: %+v", w)
	}
	// A raw save naming host db with a role token is refused (db is an
	// agent): no report lands under db.
	op := a.roleToken(authn.RoleBackupOperator, "a")
	body := api.Snapshot{Host: "db", Paths: dbSnap.Paths, Tree: dbSnap.Tree.String(), Files: dbSnap.Files, Dirs: dbSnap.Dirs, Bytes: dbSnap.Bytes,
		Source: api.FromSourceFacts(claim(vault.VolumeEncrypted, "luks2")(dbSnap.Paths))}
	if st, out := a.call("POST", "/v1/vaults/a/snapshots", op, body); st != http.StatusForbidden {
		t.Errorf("an operator's report under agent db: status %d, want 403: %s", st, out)
	}
	if d2 := a.sources(a.env.OwnerToken)["db"]; d2.ReportSnapshot != d.ReportSnapshot {
		t.Errorf("db's report moved to %s", d2.ReportSnapshot)
	}
	// A retag keeps the report of the original (from its sealed object).
	n, _, err := a.client(a.env.OwnerToken).Vault("a").Retag(context.Background(), dbSnap.ID, api.Retag{Add: []string{"kept"}})
	if err != nil {
		t.Fatal(err)
	}
	one := a.mustStatus(http.StatusOK, "GET", "/v1/vaults/a/snapshots/"+n.ID.String(), a.env.OwnerToken, nil)
	var sn api.Snapshot
	if err := json.Unmarshal(one, &sn); err != nil || sn.Source == nil || sn.Source.Volumes[0].Encryption != vault.VolumeUnencrypted {
		t.Errorf("the retagged snapshot lost its report: %s", one)
	}
	if d3 := a.sources(a.env.OwnerToken)["db"]; d3.ReportSnapshot != n.ID.String() || !strings.Contains(d3.Writer, "db") {
		t.Errorf("after the retag, db's report is %+v (want the retagged snapshot, still db's writer)", d3)
	}
}

// TestAttackSourceReportFields: a writer's report is checked like every
// other field of a snapshot: strings with terminal escapes or bidi
// overrides, oversize strings and lists, volumes of paths the snapshot
// does not hold, made-up states and unknown fields are refused (400) and
// nothing is written.
func TestAttackSourceReportFields(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	first := a.backupAs(operator, dir, "h")
	vol := func() api.SourceVolume {
		return api.SourceVolume{Path: first.Paths[0], Mount: "/", Device: "/dev/vda", FSType: "ext4", Encryption: vault.VolumeUnencrypted, Detail: "ok"}
	}
	good := func() api.Snapshot {
		return api.Snapshot{Host: "h", Paths: first.Paths, Tree: first.Tree.String(), Files: first.Files, Dirs: first.Dirs, Bytes: first.Bytes,
			Source: &api.SourceFacts{Volumes: []api.SourceVolume{vol()}}}
	}
	cases := []struct {
		name string
		edit func(*api.Snapshot)
	}{
		{"escape in detail", func(s *api.Snapshot) { s.Source.Volumes[0].Detail = "ok\x1b[2J\x1b[Hall volumes encrypted" }},
		{"osc in device", func(s *api.Snapshot) { s.Source.Volumes[0].Device = "/dev/\x1b]52;c;ZXZpbA==\x07" }},
		{"bidi in mount", func(s *api.Snapshot) { s.Source.Volumes[0].Mount = "/\u202edetpyrcne" }},
		{"newline in fstype", func(s *api.Snapshot) { s.Source.Volumes[0].FSType = "ext4\nencrypted" }},
		{"long detail", func(s *api.Snapshot) { s.Source.Volumes[0].Detail = strings.Repeat("d", 513) }},
		{"long device", func(s *api.Snapshot) { s.Source.Volumes[0].Device = strings.Repeat("d", 1025) }},
		{"65 volumes", func(s *api.Snapshot) {
			for range 64 {
				s.Source.Volumes = append(s.Source.Volumes, vol())
			}
		}},
		{"repeated path", func(s *api.Snapshot) { s.Source.Volumes = append(s.Source.Volumes, vol()) }},
		{"path not in snapshot", func(s *api.Snapshot) { s.Source.Volumes[0].Path = "/etc" }},
		{"made-up state", func(s *api.Snapshot) { s.Source.Volumes[0].Encryption = "probably" }},
		{"encrypted without method", func(s *api.Snapshot) { s.Source.Volumes[0].Encryption = vault.VolumeEncrypted }},
		{"method on plain", func(s *api.Snapshot) { s.Source.Volumes[0].Method = "luks2" }},
		{"negative local copies", func(s *api.Snapshot) { s.Source.LocalCopies = &api.LocalCopyStatus{Keep: -1} }},
		{"escape in cipher", func(s *api.Snapshot) {
			s.Source.LocalCopies = &api.LocalCopyStatus{Keep: 1, Held: 1, Encrypted: true, Cipher: "AES\x1b[0m"}
		}},
	}
	objects, rows := a.snapshotObjects(), len(a.liveSnapshots())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := good()
			c.edit(&body)
			if got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, body); got != http.StatusBadRequest {
				t.Errorf("status %d, want 400: %s", got, out)
			}
			if n := a.snapshotObjects(); n != objects {
				t.Errorf("the store holds %d snapshot objects after a refused save, want %d", n, objects)
			}
			if n := len(a.liveSnapshots()); n != rows {
				t.Errorf("the catalog lists %d snapshots after a refused save, want %d", n, rows)
			}
		})
	}
	raw, _ := json.Marshal(good())
	raw = []byte(strings.Replace(string(raw), `"fstype":"ext4"`, `"fstype":"ext4","verified":true`, 1))
	if got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, raw); got != http.StatusBadRequest {
		t.Errorf("an unknown field in the report: status %d, want 400: %s", got, out)
	}
	// A valid report is recorded and read back as sent.
	a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", operator, good())
	if h := a.sources(a.env.OwnerToken)["h"]; h.Source == nil || len(h.Source.Volumes) != 1 || h.Source.Volumes[0] != vol() {
		t.Errorf("report read back: %+v", h.Source)
	}
}

// TestAttackSourcesScope: GET …/sources needs vault.read on the vault in
// the path: a reader of another vault, or no token, learns nothing of
// this vault's sources; a reader of this one sees them all; a source's
// token in a vault with dedup scope "source" sees only its own host.
func TestAttackSourcesScope(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	if _, err := a.owner.CreateVault(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	a.setScope("source")
	web, db := a.addSource("web"), a.addSource("db")
	a.backupReporting(web, dir, "web", claim(vault.VolumeEncrypted, "luks2"))
	a.backupReporting(db, dir, "db", claim(vault.VolumeUnencrypted, ""))

	otherReader := a.roleToken(authn.RoleBackupReader, "b")
	for name, tok := range map[string]string{"reader of vault b": otherReader, "no token": ""} {
		st, out := a.call("GET", "/v1/vaults/a/sources", tok, nil)
		if st == http.StatusOK || strings.Contains(string(out), "web") || strings.Contains(string(out), "luks2") {
			t.Errorf("%s: status %d: %s", name, st, out)
		}
	}
	if got := a.sources(a.roleToken(authn.RoleBackupReader, "a")); len(got) != 2 {
		t.Errorf("a reader of vault a sees %d sources, want 2", len(got))
	}
	if got := a.sources(web); len(got) != 1 || got["web"].Source == nil {
		t.Errorf("web's token in a source-scoped vault sees %+v, want only web", got)
	}
	if got := a.sources(db); len(got) != 1 || got["db"].Source == nil {
		t.Errorf("db's token in a source-scoped vault sees %+v, want only db", got)
	}
}
