package server_test

// The attacker holds an operator's token (a backup-operator role token,
// or an agent principal's token from `source add`) and tries to rewrite
// the vault's history: snapshots dated in the future, snapshots recorded
// under another machine's host, snapshot records with forged or
// out-of-range fields, and garbage stored under a valid ID that blocks
// prune and check. Each test asserts the promise of docs/security.md it
// attacks.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/vault"
)

// addSource adds agent name to vault "a" (as `coffer source add` does)
// and returns its token.
func (a *arena) addSource(name string) string {
	a.t.Helper()
	tok, err := a.owner.Vault("a").AddSource(context.Background(), api.AddSource{Name: name})
	if err != nil {
		a.t.Fatalf("source add %s: %v", name, err)
	}
	return tok.Secret
}

// backupAs backs dir up into vault "a" with token, as `coffer backup
// --host host` does, and returns the snapshot.
func (a *arena) backupAs(token, dir, host string) vault.SnapshotRecord {
	a.t.Helper()
	ctx := context.Background()
	v := a.client(token).Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		a.t.Fatal(err)
	}
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{dir}, Host: host})
	if err != nil {
		a.t.Fatalf("backup of %s as %s: %v", dir, host, err)
	}
	return res.Snapshot
}

// snapshotObjects counts the snapshot objects in vault "a"'s store.
func (a *arena) snapshotObjects() int {
	a.t.Helper()
	ents, err := os.ReadDir(filepath.Join(server.VaultDir(a.env.DataDir, "a"), "snapshots"))
	if err != nil && !os.IsNotExist(err) {
		a.t.Fatal(err)
	}
	return len(ents)
}

// liveSnapshots lists vault "a"'s live snapshots as the owner sees them.
func (a *arena) liveSnapshots() []vault.SnapshotRecord {
	a.t.Helper()
	snaps, err := a.owner.Vault("a").Snapshots(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	return snaps
}

// advance moves the server's clock forward by d.
func (a *arena) advance(d time.Duration) { a.env.Clock.Add(int64(d)) }

// storePolicy stores p as vault "a"'s retention policy.
func (a *arena) storePolicy(p retention.Policy) {
	a.t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		a.t.Fatal(err)
	}
	ps := string(b)
	if _, err := a.owner.Vault("a").ChangeSettings(context.Background(), api.SettingsChange{Policy: &ps}); err != nil {
		a.t.Fatal(err)
	}
}

// TestAttackHistoryFutureSnapshots: an operator saves snapshots dated in
// the year 2100 in the host and paths of a genuine agent, then the stored
// --keep-last 3 policy runs. Every genuine snapshot must stay live, and
// "latest" must still be the genuine agent's newest backup.
func TestAttackHistoryFutureSnapshots(t *testing.T) {
	a := newArena(t)
	evilDir, dir := t.TempDir(), t.TempDir()
	writeTree(t, evilDir, map[string][]byte{"passwd": []byte("root::0:0::/:/bin/sh\n")})
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	evil := a.backupAs(operator, evilDir, "evil-box") // a tree of the attacker's content

	web := a.addSource("web01")
	var genuine []vault.SnapshotRecord
	for i := range 3 {
		a.advance(time.Hour)
		writeTree(t, dir, map[string][]byte{"passwd": []byte(strings.Repeat("genuine\n", i+1))})
		genuine = append(genuine, a.backupAs(web, dir, "web01"))
	}

	future := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	forged := api.Snapshot{Time: future, Host: "web01", Paths: genuine[0].Paths, Tree: evil.Tree.String(), Files: evil.Files, Dirs: evil.Dirs, Bytes: evil.Bytes}
	// The same forgery from the operator's role token, and from another
	// agent (its own token from source add).
	other := a.addSource("other")
	for _, tok := range []string{operator, other} {
		for i := range 3 {
			forged.Time = future.Add(time.Duration(i) * time.Hour)
			if got, out := a.call("POST", "/v1/vaults/a/snapshots", tok, forged); got < 400 || got >= 500 {
				t.Errorf("a snapshot dated %s in host web01: status %d, want a 4xx refusal: %s", forged.Time, got, out)
			}
		}
	}

	a.storePolicy(retention.Policy{Last: 3})
	a.advance(25 * time.Hour)
	if err := a.env.Server.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	live := map[vault.ID]bool{}
	for _, s := range a.liveSnapshots() {
		live[s.ID] = true
		if s.Time.After(time.Now().Add(48 * time.Hour)) {
			t.Errorf("snapshot %s is dated %s, after the server's clock", s.ID.Short(), s.Time)
		}
	}
	for _, g := range genuine {
		if !live[g.ID] {
			t.Errorf("genuine snapshot %s of web01 was forgotten by the policy", g.ID.Short())
		}
	}
	latest, err := a.owner.Vault("a").FindSnapshot(context.Background(), "latest")
	if err != nil {
		t.Fatal(err)
	}
	if latest.Tree == evil.Tree || latest.ID != genuine[2].ID {
		t.Errorf("latest is %s (host %s, tree %s), want the genuine %s", latest.ID.Short(), latest.Host, latest.Tree.Short(), genuine[2].ID.Short())
	}
}

// TestAttackHistoryAgentHost: an agent's snapshots carry its own name as
// host, whatever host it claims, so it can neither write into another
// machine's history (retention groups, parent choice) nor hide its own.
// Other writers may not claim an agent's name.
func TestAttackHistoryAgentHost(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("web01's file")})
	web := a.addSource("web01")
	genuine := a.backupAs(web, dir, "web01")

	evilTok := a.addSource("evil")
	claim := api.Snapshot{Host: "web01", Paths: genuine.Paths, Tree: genuine.Tree.String(), Files: genuine.Files, Dirs: genuine.Dirs, Bytes: genuine.Bytes}
	var evil api.Snapshot
	if err := json.Unmarshal(a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", evilTok, claim), &evil); err != nil {
		t.Fatal(err)
	}
	if evil.Host != "evil" {
		t.Errorf("agent evil claimed host web01 and its snapshot records host %q, want evil", evil.Host)
	}
	for _, s := range a.liveSnapshots() {
		if s.ID.String() == evil.ID && s.Host != "evil" {
			t.Errorf("the listing shows agent evil's snapshot as host %q", s.Host)
		}
	}
	// Nor can it name web01's snapshot as its parent.
	claim.Parent = genuine.ID.String()
	if got, out := a.call("POST", "/v1/vaults/a/snapshots", evilTok, claim); got != http.StatusBadRequest {
		t.Errorf("agent evil naming web01's snapshot as parent: status %d, want 400: %s", got, out)
	}
	// The agent learns the host it is bound to, and picks its parent
	// among its own snapshots.
	v := a.client(evilTok).Vault("a")
	if err := v.LoadDedup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v.BoundHost() != "evil" {
		t.Errorf("agent evil's dedup answer names host %q, want evil", v.BoundHost())
	}
	second := a.backupAs(evilTok, dir, "evil")
	if second.Parent.String() != evil.ID || second.Host != "evil" {
		t.Errorf("agent evil's backup: host %s, parent %s, want host evil and its own snapshot %s", second.Host, second.Parent.Short(), evil.ID[:8])
	}

	// A role token or a user may name hosts, but not an agent's.
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	body := api.Snapshot{Host: "web01", Paths: genuine.Paths, Tree: genuine.Tree.String(), Files: genuine.Files, Dirs: genuine.Dirs, Bytes: genuine.Bytes}
	if got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, body); got != http.StatusForbidden {
		t.Errorf("operator token claiming agent web01's host: status %d, want 403: %s", got, out)
	}
	a.principal("ann", "user", "", authn.RoleBackupOperator, "a")
	ann, err := a.owner.CreateToken(context.Background(), api.CreateToken{Name: "ann-script", Principal: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"web01", "WEB01", "Web01"} {
		body.Host = host
		if got, out := a.call("POST", "/v1/vaults/a/snapshots", ann.Secret, body); got != http.StatusForbidden {
			t.Errorf("user ann claiming agent web01's host as %q: status %d, want 403: %s", host, got, out)
		}
	}
	body.Host = "ann-laptop"
	out := a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", ann.Secret, body)
	var saved api.Snapshot
	if err := json.Unmarshal(out, &saved); err != nil || saved.Host != "ann-laptop" {
		t.Errorf("user ann's snapshot: host %q (%v), want ann-laptop as claimed", saved.Host, err)
	}

	// A parent must be a snapshot of the writer's own host.
	body = api.Snapshot{Host: "x", Paths: genuine.Paths, Tree: genuine.Tree.String(), Parent: genuine.ID.String(), Files: genuine.Files, Dirs: genuine.Dirs, Bytes: genuine.Bytes}
	if got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, body); got != http.StatusBadRequest {
		t.Errorf("parent of another host: status %d, want 400: %s", got, out)
	}
}

// TestAttackHistoryClientTime: the server records the time it receives a
// snapshot. A client clock ahead by more than the allowed skew is
// refused with a 400 that says so; an earlier time (the start of a long
// backup) is accepted but not recorded.
func TestAttackHistoryClientTime(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	first := a.backupAs(operator, dir, "h")
	a.advance(time.Hour)

	body := api.Snapshot{Host: "h", Paths: first.Paths, Tree: first.Tree.String(), Files: first.Files, Dirs: first.Dirs, Bytes: first.Bytes}
	body.Time = time.Now().Add(time.Hour + 15*time.Minute)
	got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, body)
	if got != http.StatusBadRequest || !strings.Contains(string(out), "clock") {
		t.Errorf("a time ahead of the server's clock: status %d, want 400 naming the clock: %s", got, out)
	}
	body.DurationNS = int64(3 * time.Hour) // started in time, but "ended" 2h ahead
	body.Time = time.Now().Add(-time.Hour)
	if got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, body); got != http.StatusBadRequest {
		t.Errorf("a start plus duration ahead of the server's clock: status %d, want 400: %s", got, out)
	}
	for _, claimed := range []time.Time{{}, time.Now().Add(-30 * 24 * time.Hour), time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)} {
		body.Time, body.DurationNS = claimed, 0
		before := time.Now().Add(time.Hour - time.Second)
		out := a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", operator, body)
		var saved api.Snapshot
		if err := json.Unmarshal(out, &saved); err != nil {
			t.Fatal(err)
		}
		if saved.Time.Before(before) || saved.Time.After(time.Now().Add(time.Hour+time.Minute)) {
			t.Errorf("client time %s: recorded %s, want the server's clock (about %s)", claimed, saved.Time, before)
		}
	}
}

// TestAttackHistoryRecordFields: every field of a snapshot record is
// checked, server-owned ones are never taken from the client, and a
// refused record is refused with 400 before anything is written: no
// snapshot object and no catalog row is left behind.
func TestAttackHistoryRecordFields(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	first := a.backupAs(operator, dir, "h")
	deleted := time.Now()
	good := func() api.Snapshot {
		return api.Snapshot{Host: "h", Paths: []string{"/srv"}, Tree: first.Tree.String(), Files: 1, Dirs: first.Dirs + 16, Bytes: first.Bytes}
	}
	cases := []struct {
		name string
		edit func(*api.Snapshot)
	}{
		{"preset deleted", func(s *api.Snapshot) { s.Deleted = &deleted; s.DeletedBy = "owner" }},
		{"preset deleted_by", func(s *api.Snapshot) { s.DeletedBy = "owner" }},
		{"chosen id", func(s *api.Snapshot) { s.ID = strings.Repeat("ab", 32) }},
		{"escape in host", func(s *api.Snapshot) { s.Host = "h\x1b[2J" }},
		{"newline in host", func(s *api.Snapshot) { s.Host = "h\nsnapshot deleted" }},
		{"bidi override in host", func(s *api.Snapshot) { s.Host = "h\u202e10bew" }},
		{"empty host", func(s *api.Snapshot) { s.Host = "" }},
		{"long host", func(s *api.Snapshot) { s.Host = strings.Repeat("h", 300) }},
		{"control in path", func(s *api.Snapshot) { s.Paths = []string{"/srv\x07"} }},
		{"control in tag", func(s *api.Snapshot) { s.Tags = []string{"nightly\r"} }},
		{"empty tag", func(s *api.Snapshot) { s.Tags = []string{""} }},
		{"repeated tag", func(s *api.Snapshot) { s.Tags = []string{"t", "t"} }},
		{"many tags", func(s *api.Snapshot) {
			for i := range 100 {
				s.Tags = append(s.Tags, strings.Repeat("t", i+1))
			}
		}},
		{"relative path", func(s *api.Snapshot) { s.Paths = []string{"srv"} }},
		{"dot-dot path", func(s *api.Snapshot) { s.Paths = []string{"/srv/../etc"} }},
		{"unclean path", func(s *api.Snapshot) { s.Paths = []string{"/srv/"} }},
		{"unsorted paths", func(s *api.Snapshot) { s.Paths = []string{"/srv", "/etc"} }},
		{"repeated paths", func(s *api.Snapshot) { s.Paths = []string{"/srv", "/srv"} }},
		{"no paths", func(s *api.Snapshot) { s.Paths = nil }},
		{"files 2^64-1", func(s *api.Snapshot) { s.Files = math.MaxUint64 }},
		{"bytes_added 2^64-1", func(s *api.Snapshot) { s.BytesAdded = math.MaxUint64 }},
		{"negative duration", func(s *api.Snapshot) { s.DurationNS = -1 }},
		{"year 10000", func(s *api.Snapshot) { s.Time = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC) }}, // made 10000 below
		{"year 3000", func(s *api.Snapshot) { s.Time = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		// An unknown parent is refused as not found (404):
		// TestAttackIncrementalParentNamesNothing.
		{"bad parent", func(s *api.Snapshot) { s.Parent = "zz" }},
		{"unknown tree", func(s *api.Snapshot) { s.Tree = strings.Repeat("ef", 32) }},
		{"zero tree", func(s *api.Snapshot) { s.Tree = strings.Repeat("00", 32) }},
	}
	objects, rows := a.snapshotObjects(), len(a.liveSnapshots())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := good()
			c.edit(&body)
			raw, err := json.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			raw = []byte(strings.Replace(string(raw), `"9999-`, `"10000-`, 1))
			if got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, raw); got != http.StatusBadRequest {
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
	// Still possible: a valid record, with the server's own time.
	a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", operator, good())

	// A body far over the JSON limit is refused as too large.
	huge := good()
	huge.Paths = []string{"/" + strings.Repeat("p", 2<<20)}
	if got, _ := a.call("POST", "/v1/vaults/a/snapshots", operator, huge); got != http.StatusRequestEntityTooLarge {
		t.Errorf("a 2 MiB snapshot body: status %d, want 413", got)
	}
}

// TestAttackHistorySettingsRanges: every number of a settings or policy
// change is checked for range and refused rather than wrapped: a minimum
// retention of 18446744074 s was stored as 0.29 s, which let every
// snapshot be forgotten at once.
func TestAttackHistorySettingsRanges(t *testing.T) {
	a := newArena(t)
	contributor := a.roleToken(authn.RoleBackupContributor, "a")
	for _, secs := range []int64{18446744074 / 2, 9223372037, 1 << 62, -1, math.MaxInt64, math.MinInt64} {
		body := map[string]any{"min_retention_seconds": secs}
		if got, out := a.call("POST", "/v1/vaults/a/settings", contributor, body); got != http.StatusBadRequest {
			t.Errorf("min_retention_seconds %d: status %d, want 400: %s", secs, got, out)
		}
	}
	// 18446744074 does not fit an int64 either: refused as JSON.
	if got, out := a.call("POST", "/v1/vaults/a/settings", contributor, []byte(`{"min_retention_seconds":18446744074000000000}`)); got != http.StatusBadRequest {
		t.Errorf("min_retention_seconds beyond int64: status %d, want 400: %s", got, out)
	}
	st, err := a.owner.Vault("a").Settings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.MinRetentionSeconds != 0 {
		t.Errorf("after refused changes the minimum retention is %d s, want 0", st.MinRetentionSeconds)
	}
	// A long but representable minimum retention is stored exactly.
	year := int64(365 * 24 * 3600)
	a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", contributor, map[string]any{"min_retention_seconds": 10 * year})
	if st, err = a.owner.Vault("a").Settings(context.Background()); err != nil || st.MinRetentionSeconds != 10*year {
		t.Errorf("minimum retention of 10 years reads back as %d s (%v)", st.MinRetentionSeconds, err)
	}

	for _, policy := range []string{
		`{"Last":3,"Lats":1}`,                           // a typo must not pass as some other policy
		`{"Tags":["prod\u001b[2J"]}`,                    // a tag that rewrites the terminal
		`{"Tags":["` + strings.Repeat("t", 300) + `"]}`, // over-long tag
		`{"Within":-3600000000000}`,
		`{"Last":-2}`,
		`{"GroupBy":200,"Last":1}`,
	} {
		body := map[string]any{"policy": policy}
		if got, out := a.call("POST", "/v1/vaults/a/settings", contributor, body); got != http.StatusBadRequest {
			t.Errorf("policy %s: status %d, want 400: %s", policy, got, out)
		}
	}
}

// uploader stores crafted blobs in vault "a" as an operator's agent
// would: IDs keyed with the vault's chunk-ID key (which any writer gets),
// raw upload records.
type uploader struct {
	a      *arena
	token  string
	hasher *format.IDHasher
	codec  *format.Codec
}

func (a *arena) uploader(token string) *uploader {
	a.t.Helper()
	v := a.client(token).Vault("a")
	if err := v.LoadDedup(context.Background()); err != nil {
		a.t.Fatal(err)
	}
	return &uploader{a: a, token: token, hasher: format.NewIDHasher(v.Dedup().ChunkIDKey), codec: format.NewCodec()}
}

// put uploads plain as a blob of type t under its true ID and returns
// the ID and the status.
func (u *uploader) put(t vault.BlobType, plain []byte) (vault.ID, int, []byte) {
	id := u.hasher.ID(plain)
	enc := u.codec.Encode(nil, plain)
	body := api.AppendUploadHeader(nil, api.Ref{Type: t, ID: id}, len(plain), len(enc))
	body = append(body, enc...)
	got, out := u.a.call("POST", "/v1/vaults/a/blobs", u.token, body)
	return id, got, out
}

// tree encodes nodes as a tree blob.
func (u *uploader) tree(nodes ...format.Node) []byte {
	u.a.t.Helper()
	b, err := format.EncodeTree(nil, &format.Tree{Nodes: nodes})
	if err != nil {
		u.a.t.Fatal(err)
	}
	return b
}

// TestAttackHistoryGarbageTree: an operator stores, under a valid ID, a
// tree blob that is not a tree, or a tree referencing blobs the vault
// does not hold, and bases a snapshot on it. The server refuses such
// trees on upload, so no snapshot can be based on them and prune and
// check keep working; a tree whose children are stored is accepted.
func TestAttackHistoryGarbageTree(t *testing.T) {
	a := newArena(t)
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	u := a.uploader(operator)
	var missing vault.ID
	missing[0] = 1

	data, got, out := u.put(vault.DataBlob, []byte("file content"))
	if got != http.StatusOK {
		t.Fatalf("upload of a data blob: %d %s", got, out)
	}
	sub, got, out := u.put(vault.TreeBlob, u.tree(format.Node{Kind: format.KindFile, Name: []byte("f"), Content: []vault.ID{data}}))
	if got != http.StatusOK {
		t.Fatalf("upload of a valid tree: %d %s", got, out)
	}
	for _, c := range []struct {
		name  string
		plain []byte
	}{
		{"garbage", []byte("this is not a tree, but it hashes to its ID")},
		{"bad magic", append([]byte("CFTX\x01"), 0)},
		{"truncated", u.tree(format.Node{Kind: format.KindFile, Name: []byte("f"), Content: []vault.ID{data}})[:20]},
		{"missing data", u.tree(format.Node{Kind: format.KindFile, Name: []byte("f"), Content: []vault.ID{data, missing}})},
		{"missing subtree", u.tree(format.Node{Kind: format.KindDir, Name: []byte("d"), Subtree: missing})},
		{"data blob as subtree", u.tree(format.Node{Kind: format.KindDir, Name: []byte("d"), Subtree: data})},
		{"tree as data", u.tree(format.Node{Kind: format.KindFile, Name: []byte("f"), Content: []vault.ID{sub}})},
	} {
		id, got, out := u.put(vault.TreeBlob, c.plain)
		if got != http.StatusBadRequest {
			t.Errorf("%s tree: upload status %d, want 400: %s", c.name, got, out)
		}
		a.mustStatus(http.StatusNoContent, "POST", "/v1/vaults/a/flush", operator, nil)
		snap := api.Snapshot{Host: "h", Paths: []string{"/x"}, Tree: id.String()}
		if got, out := a.call("POST", "/v1/vaults/a/snapshots", operator, snap); got != http.StatusBadRequest {
			t.Errorf("snapshot of the %s tree: status %d, want 400: %s", c.name, got, out)
		}
	}
	root, got, out := u.put(vault.TreeBlob, u.tree(format.Node{Kind: format.KindDir, Name: []byte("d"), Subtree: sub}))
	if got != http.StatusOK {
		t.Fatalf("upload of a valid root tree: %d %s", got, out)
	}
	a.mustStatus(http.StatusNoContent, "POST", "/v1/vaults/a/flush", operator, nil)
	a.mustStatus(http.StatusCreated, "POST", "/v1/vaults/a/snapshots", operator, api.Snapshot{Host: "h", Paths: []string{"/x"}, Tree: root.String(), Files: 1})

	// Prune and check still work, and find the vault sound.
	if _, err := a.owner.Vault("a").Prune(context.Background(), false); err != nil {
		t.Errorf("prune: %v", err)
	}
	rep, err := a.owner.Vault("a").Check(context.Background(), true, nil)
	if err != nil || len(rep.Errors) > 0 {
		t.Errorf("check: %v %v", err, rep.Errors)
	}
}

// TestAttackHistoryTreeOrder: since the server refuses a tree whose
// children it does not hold, the agent must store children first even
// with many small batches in flight at once: backups of a deep, wide
// directory succeed with tiny batches, one or several in flight, and
// restore to the same files.
func TestAttackHistoryTreeOrder(t *testing.T) {
	a := newArena(t)
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	src := t.TempDir()
	files := map[string][]byte{}
	for i := range 60 {
		name := fmt.Sprintf("d%d/e%d/f%d", i%7, i%5, i)
		files[name] = randomBytes(uint64(i), 100+i*37)
	}
	writeTree(t, src, files)
	for _, inFlight := range []int{1, 4} {
		c, err := client.New(client.Options{Server: a.env.URL, Token: operator, TLS: a.env.TLS, BatchBytes: 512, InFlight: inFlight,
			Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
		if err != nil {
			t.Fatal(err)
		}
		v := c.Vault("a")
		if err := v.LoadDedup(context.Background()); err != nil {
			t.Fatal(err)
		}
		files[fmt.Sprintf("new%d", inFlight)] = randomBytes(uint64(1000+inFlight), 5000)
		writeTree(t, src, files)
		res, err := agent.Backup(context.Background(), v, agent.BackupOptions{Paths: []string{src}, Host: "h"})
		if err != nil {
			t.Fatalf("backup with %d batch(es) in flight: %v", inFlight, err)
		}
		restoreAndCompare(t, v, res.Snapshot, src)
		c.Close()
	}
}

// TestAttackHistoryPolicyGroups: an agent can only write into its own
// host's group, so a stored policy must group by host: with --group-by
// none (or paths, or tags) one agent's fresh backups would push every
// other machine's snapshots out of --keep-last. The server refuses to
// store such a policy, and applies one stored before as if grouped by
// host too.
func TestAttackHistoryPolicyGroups(t *testing.T) {
	a := newArena(t)
	dir, evilDir := t.TempDir(), t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("genuine")})
	writeTree(t, evilDir, map[string][]byte{"f": []byte("evil")})
	web, evil := a.addSource("web01"), a.addSource("evil")
	var genuine []vault.SnapshotRecord
	for range 2 {
		a.advance(time.Hour)
		genuine = append(genuine, a.backupAs(web, dir, "web01"))
	}
	for _, g := range []retention.GroupBy{retention.GroupByNone, retention.GroupByPaths, retention.GroupByTags} {
		b, _ := json.Marshal(retention.Policy{Last: 2, GroupBy: g})
		if got, out := a.call("POST", "/v1/vaults/a/settings", a.env.OwnerToken, map[string]any{"policy": string(b)}); got != http.StatusBadRequest {
			t.Errorf("policy grouped by %s: status %d, want 400: %s", g, got, out)
		}
	}
	for range 3 {
		a.advance(time.Hour)
		a.backupAs(evil, evilDir, "evil")
	}
	// A policy stored before the check (by an older server): written by a
	// key holder without the check (the settings are authenticated,
	// docs/format.md §8.4, so a plain catalog write would be refused).
	eng, err := a.env.Server.VaultEngine(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	st, err := eng.Settings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(retention.Policy{Last: 2, GroupBy: retention.GroupByNone})
	st.Policy, st.Updated = string(b), time.Now()
	if err := eng.InitSettings(context.Background(), st, "owner"); err != nil {
		t.Fatal(err)
	}
	a.advance(25 * time.Hour)
	if err := a.env.Server.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	live := map[vault.ID]bool{}
	for _, s := range a.liveSnapshots() {
		live[s.ID] = true
	}
	for _, g := range genuine {
		if !live[g.ID] {
			t.Errorf("web01's snapshot %s was forgotten because agent evil backed up more often", g.ID.Short())
		}
	}
}

// TestAttackHistoryOperatorCannotDelete: an operator (role token or
// agent) backs up, restores and checks, but cannot forget, undelete or
// prune snapshots, nor change the settings or policy that decide what is
// kept.
func TestAttackHistoryOperatorCannotDelete(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("x")})
	web := a.addSource("web01")
	s := a.backupAs(web, dir, "web01")
	if _, _, err := a.owner.Vault("a").Forget(context.Background(), []vault.ID{s.ID}); err != nil {
		t.Fatal(err)
	}
	a.principal("olga", "user", "", authn.RoleBackupOperator, "a")
	olga, err := a.owner.CreateToken(context.Background(), api.CreateToken{Name: "olga", Principal: "olga"})
	if err != nil {
		t.Fatal(err)
	}
	policy := `{"Last":1}`
	for name, tok := range map[string]string{"role token": a.roleToken(authn.RoleBackupOperator, "a"), "agent": web, "user": olga.Secret} {
		for _, c := range []struct {
			path string
			body any
		}{
			{"/v1/vaults/a/forget", api.Forget{IDs: []string{s.ID.String()}}},
			{"/v1/vaults/a/undelete", api.Undelete{ID: s.ID.String()}},
			{"/v1/vaults/a/prune", api.Prune{}},
			{"/v1/vaults/a/settings", api.SettingsChange{Policy: &policy}},
		} {
			if got, out := a.call("POST", c.path, tok, c.body); got != http.StatusForbidden {
				t.Errorf("operator (%s) POST %s: status %d, want 403: %s", name, c.path, got, out)
			}
		}
	}
	if del, err := a.owner.Vault("a").Deleted(context.Background()); err != nil || len(del) != 1 {
		t.Errorf("the forgotten snapshot: %v (%v)", del, err)
	}
}

// TestAttackHistoryParentBeforeAgent: snapshots recorded under a host
// name before an agent of that name existed were made by other writers
// (any operator could name that host then). A backup reuses its parent's
// unchanged files unread, so such a snapshot must never become the
// agent's parent: the agent skips it and the server refuses it.
func TestAttackHistoryParentBeforeAgent(t *testing.T) {
	a := newArena(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"f": []byte("web02's file")})
	operator := a.roleToken(authn.RoleBackupOperator, "a")
	planted := a.backupAs(operator, dir, "web02") // before the agent exists
	a.advance(time.Minute)

	web := a.addSource("web02")
	v := a.client(web).Vault("a")
	if err := v.LoadDedup(context.Background()); err != nil {
		t.Fatal(err)
	}
	since := v.BoundHostSince()
	if since.IsZero() || since.Before(planted.Time) {
		t.Fatalf("agent web02's host is bound since %s, want after the planted snapshot (%s)", since, planted.Time)
	}
	res, err := agent.Backup(context.Background(), v, agent.BackupOptions{Paths: []string{dir}, Host: v.BoundHost(), ParentSince: since})
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot.Parent == planted.ID {
		t.Errorf("agent web02's first backup took the snapshot another writer planted under its name as its parent")
	}
	// Told to, the server refuses it.
	body := api.Snapshot{Host: "web02", Paths: planted.Paths, Tree: res.Snapshot.Tree.String(), Parent: planted.ID.String(), Files: res.Snapshot.Files, Dirs: res.Snapshot.Dirs, Bytes: res.Snapshot.Bytes}
	if got, out := a.call("POST", "/v1/vaults/a/snapshots", web, body); got != http.StatusBadRequest {
		t.Errorf("agent naming a parent from before it existed: status %d, want 400: %s", got, out)
	}
	// Its own snapshots are its parents.
	second, err := agent.Backup(context.Background(), v, agent.BackupOptions{Paths: []string{dir}, Host: v.BoundHost(), ParentSince: since})
	if err != nil {
		t.Fatal(err)
	}
	if second.Snapshot.Parent != res.Snapshot.ID {
		t.Errorf("agent web02's second backup has parent %s, want its first %s", second.Snapshot.Parent.Short(), res.Snapshot.ID.Short())
	}
}
