package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/engine"
)

func stdinBackup(t testing.TB, v *testVault, r io.Reader, name string) *agent.BackupResult {
	t.Helper()
	res, err := agent.Backup(context.Background(), v.repo, agent.BackupOptions{Stdin: r, StdinPath: name, Host: "testhost"})
	if err != nil {
		t.Fatalf("backup of stdin: %v", err)
	}
	return res
}

// TestStdinBackup: a stream is stored as one file under its virtual path
// (mode 0600, restored byte for byte), a second run of the same 20 MiB
// stream adds less than 1% to the vault, and its parent is the first run
// (the virtual path is the path set).
func TestStdinBackup(t *testing.T) {
	v := newVault(t, engine.DefaultChunker())
	dump := randBytes(7, 20<<20)
	first := stdinBackup(t, v, bytes.NewReader(dump), "dumps/mydb.sql")
	s := first.Snapshot
	if len(s.Paths) != 1 || s.Paths[0] != "/dumps/mydb.sql" || s.Files != 1 || s.Bytes != uint64(len(dump)) {
		t.Fatalf("snapshot paths %q, %d files, %d bytes; want [/dumps/mydb.sql], 1, %d", s.Paths, s.Files, s.Bytes, len(dump))
	}
	second := stdinBackup(t, v, bytes.NewReader(dump), "dumps/mydb.sql").Snapshot
	if second.Parent != s.ID {
		t.Errorf("second run's parent %s, want the first %s", second.Parent.Short(), s.ID.Short())
	}
	if second.BytesAdded*100 >= uint64(len(dump)) {
		t.Errorf("second run of an unchanged stream added %d bytes, want < 1%% of %d", second.BytesAdded, len(dump))
	}
	target := t.TempDir()
	restore(t, v, second.Tree, agent.RestoreOptions{Target: target})
	p := filepath.Join(target, "dumps", "mydb.sql")
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, dump) {
		t.Fatalf("restored %d bytes (%v), want the %d of the stream", len(got), err, len(dump))
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != agent.StdinPerm {
		t.Errorf("restored mode %v (%v), want %o", st.Mode(), err, agent.StdinPerm)
	}

	// Empty input is an empty file, still a snapshot.
	e := stdinBackup(t, v, strings.NewReader(""), "").Snapshot
	if e.Paths[0] != "/stdin" || e.Bytes != 0 || e.Files != 1 {
		t.Errorf("empty stdin: paths %q, %d bytes, %d files", e.Paths, e.Bytes, e.Files)
	}
}

// TestStdinReadErrorSavesNothing: a stream that breaks off (the producing
// command died, coffer backup --stdin-from-command saw it exit non-zero)
// fails the backup and records no snapshot: a cut-short dump must not pass
// for a good one.
func TestStdinReadErrorSavesNothing(t *testing.T) {
	v := newVault(t, small)
	ctx := context.Background()
	before, _ := v.repo.Snapshots(ctx)
	boom := errors.New("pg_dump exited with status 1")
	r := io.MultiReader(bytes.NewReader(randBytes(3, 200_000)), iotest.ErrReader(boom))
	_, err := agent.Backup(ctx, v.repo, agent.BackupOptions{Stdin: r, StdinPath: "mydb.sql", Host: "testhost"})
	if !errors.Is(err, boom) {
		t.Fatalf("backup of a broken stream: %v, want it to fail with the stream's error", err)
	}
	if after, _ := v.repo.Snapshots(ctx); len(after) != len(before) {
		t.Errorf("a broken stream recorded %d snapshots", len(after)-len(before))
	}
}

// TestStdinPathRefusesEscapes: the virtual name cannot climb out of the
// snapshot or name the root.
func TestStdinPathRefusesEscapes(t *testing.T) {
	for _, bad := range []string{"..", "../etc/passwd", "a/../../b", "/", "a\x00b", "//"} {
		if p, err := agent.StdinPath(bad); err == nil {
			t.Errorf("StdinPath(%q) = %q, want an error", bad, p)
		}
	}
	for in, want := range map[string]string{"": "/stdin", "mydb.sql": "/mydb.sql", "/srv/db.sql": "/srv/db.sql", "a//b/./c": "/a/b/c"} {
		if p, err := agent.StdinPath(in); err != nil || p != want {
			t.Errorf("StdinPath(%q) = %q, %v; want %q", in, p, err, want)
		}
	}
}

// TestRemoteStdin runs the stdin tests against a vault server.
func TestRemoteStdin(t *testing.T) {
	remoteMode = true
	defer func() { remoteMode = false }()
	t.Run("Backup", TestStdinBackup)
	t.Run("ReadError", TestStdinReadErrorSavesNothing)
}
