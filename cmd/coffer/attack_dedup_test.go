package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// TestDedupScopeSourceRoundTrip: two sources of a vault whose dedup scope
// is "source" back up (a file they both hold among them), each lists and
// restores only its own snapshots, and the owner restores, lists and
// diffs either, checks the whole vault with --read-data and prunes it
// (docs/format.md §1.3).
func TestDedupScopeSourceRoundTrip(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	url := srv.URL + "/shared"
	mustCoffer(t, e, "vault", "create", "shared", "--dedup-scope", "source", "--vault", srv.URL, "--token", srv.OwnerToken)
	owner := func(args ...string) []string { return append(args, "--vault", url, "--token", srv.OwnerToken) }
	if show := mustCoffer(t, e, owner("vault", "show")...); !strings.Contains(show, "dedup scope:   source") {
		t.Errorf("vault show does not say the dedup scope is source:\n%s", show)
	}
	web := strings.TrimSpace(mustCoffer(t, e, owner("source", "add", "web")...))
	db := strings.TrimSpace(mustCoffer(t, e, owner("source", "add", "db")...))
	as := func(tok string, args ...string) []string { return append(args, "--vault", url, "--token", tok) }

	common := bytes.Repeat([]byte("a file both sources hold\n"), 4000)
	webSrc, dbSrc := filepath.Join(t.TempDir(), "web"), filepath.Join(t.TempDir(), "db")
	for dir, files := range map[string]map[string][]byte{
		webSrc: {"common.txt": common, "index.html": []byte("<h1>web</h1>\n"), "big.bin": randBytes(1, 3<<20)},
		dbSrc:  {"common.txt": common, "payroll.csv": []byte("alice,100\nbob,200\n")},
	} {
		for name, data := range files {
			os.MkdirAll(dir, 0o755)
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	webFirst := backupJSON(t, e, as(web, webSrc)...)
	dbFirst := backupJSON(t, e, as(db, dbSrc)...)
	os.WriteFile(filepath.Join(dbSrc, "payroll.csv"), []byte("alice,110\nbob,200\ncarol,300\n"), 0o644)
	dbSecond := backupJSON(t, e, as(db, dbSrc)...)

	// Each source sees its own snapshots only.
	var own []snapshotJSON
	decodeJSON(t, mustCoffer(t, e, as(web, "snapshots", "--json")...), &own)
	if len(own) != 1 || own[0].ID != webFirst {
		t.Errorf("source web lists %v, want its own snapshot %s only", own, webFirst[:8])
	}
	failsWith(t, e, "not found", as(web, "restore", dbFirst[:12], "--target", t.TempDir())...)
	failsWith(t, e, "not found", as(web, "ls", dbFirst[:12])...)

	// Each restores its own.
	for _, c := range []struct {
		tok, src string
		files    []string
	}{{web, webSrc, []string{"common.txt", "index.html", "big.bin"}}, {db, dbSrc, []string{"common.txt", "payroll.csv"}}} {
		dst := t.TempDir()
		mustCoffer(t, e, as(c.tok, "restore", "latest", "--target", dst)...)
		for _, f := range c.files {
			want, _ := os.ReadFile(filepath.Join(c.src, f))
			got, err := os.ReadFile(filepath.Join(dst, c.src, f))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s restored by its own source differs: %v", f, err)
			}
		}
	}

	// The owner reads every source's snapshots in their domains.
	var all []snapshotJSON
	decodeJSON(t, mustCoffer(t, e, owner("snapshots", "--json")...), &all)
	if len(all) != 3 {
		t.Errorf("the owner lists %d snapshots, want 3", len(all))
	}
	dst := t.TempDir()
	mustCoffer(t, e, owner("restore", dbFirst[:12], "--target", dst)...)
	if got, _ := os.ReadFile(filepath.Join(dst, dbSrc, "payroll.csv")); string(got) != "alice,100\nbob,200\n" {
		t.Errorf("the owner's restore of db's first snapshot: payroll.csv = %q", got)
	}
	if ls := mustCoffer(t, e, owner("ls", webFirst[:12])...); !strings.Contains(ls, "index.html") {
		t.Errorf("the owner's ls of web's snapshot:\n%s", ls)
	}
	if diff := mustCoffer(t, e, owner("diff", dbFirst[:12], dbSecond[:12])...); !strings.Contains(diff, "M  "+filepath.Join(dbSrc, "payroll.csv")) {
		t.Errorf("the owner's diff of db's snapshots:\n%s", diff)
	}
	failsWith(t, e, "cannot be compared", owner("diff", webFirst[:12], dbFirst[:12])...)

	if out := mustCoffer(t, e, owner("check", "--read-data")...); !strings.Contains(out, "no errors found") {
		t.Errorf("check --read-data of a vault with two source domains:\n%s", out)
	}
	mustCoffer(t, e, owner("forget", dbFirst[:12])...)
	mustCoffer(t, e, owner("prune")...)
	if out := mustCoffer(t, e, owner("check", "--read-data")...); !strings.Contains(out, "no errors found") {
		t.Errorf("check --read-data after prune:\n%s", out)
	}
	dst = t.TempDir()
	mustCoffer(t, e, as(db, "restore", "latest", "--target", dst)...)
	if got, _ := os.ReadFile(filepath.Join(dst, dbSrc, "payroll.csv")); !strings.Contains(string(got), "carol") {
		t.Errorf("db's restore after prune: payroll.csv = %q", got)
	}

	// Widening the scope back is a request, not a change.
	if out := mustCoffer(t, e, owner("vault", "set", "--dedup-scope", "vault")...); !strings.Contains(out, "approval") {
		t.Errorf("vault set --dedup-scope vault on a source vault said %q; want a request for approval", out)
	}
}

// decodeJSON decodes out into v or fails the test.
func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
}
