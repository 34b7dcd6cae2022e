package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupStdin: coffer backup --stdin stores the stream under
// /--stdin-filename, a restore gives it back, and a second run of the same
// stream takes the first as its parent.
func TestBackupStdin(t *testing.T) {
	e := newEnv(t)
	dump := string(randBytes(11, 300_000))
	out, errOut, code := cofferIn(t, e, dump, "backup", "--json", "--stdin", "--stdin-filename", "dumps/mydb.sql")
	if code != exitOK {
		t.Fatalf("backup --stdin: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, `"/dumps/mydb.sql"`) {
		t.Errorf("backup --stdin --json: %s, want the path /dumps/mydb.sql", out)
	}
	cofferIn(t, e, dump, "backup", "--stdin", "--stdin-filename", "dumps/mydb.sql")
	snaps := listSnapshots(t, e)
	if len(snaps) != 2 || snaps[1].Parent != snaps[0].ID {
		t.Fatalf("snapshots %+v: want 2, the second's parent the first", snaps)
	}
	target := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", target)
	if got, err := os.ReadFile(filepath.Join(target, "dumps", "mydb.sql")); err != nil || string(got) != dump {
		t.Fatalf("restored %d bytes (%v), want the %d piped in", len(got), err, len(dump))
	}
}

// TestBackupStdinFromCommand: the command's output is backed up, and a
// command that exits non-zero saves no snapshot and fails the backup,
// without its arguments (which may hold a password) in the message.
func TestBackupStdinFromCommand(t *testing.T) {
	e := newEnv(t)
	mustCoffer(t, e, "backup", "--stdin-from-command", "--stdin-filename", "x.txt", "--", "sh", "-c", "printf 'hello dump'")
	target := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", target)
	if got, _ := os.ReadFile(filepath.Join(target, "x.txt")); string(got) != "hello dump" {
		t.Errorf("restored %q, want the command's output", got)
	}
	_, errOut, code := coffer(t, e, "backup", "--stdin-from-command", "--stdin-filename", "x.txt", "--", "sh", "-c", "printf partial; exit 3", "--password=hunter2")
	if code != exitFailure || !strings.Contains(errOut, "command sh failed") {
		t.Errorf("failing command: exit %d, %s; want 1 and a message naming it", code, errOut)
	}
	if strings.Contains(errOut, "hunter2") {
		t.Errorf("the command's arguments reached the message: %s", errOut)
	}
	if n := len(listSnapshots(t, e)); n != 1 {
		t.Errorf("%d snapshots after a failed command, want 1", n)
	}
	_, errOut, code = coffer(t, e, "backup", "--stdin-from-command", "--", filepath.Join(t.TempDir(), "no-such-dump"))
	if code != exitFailure || !strings.Contains(errOut, "cannot run") {
		t.Errorf("missing command: exit %d, %s", code, errOut)
	}
}

// TestBackupStdinRefusals: what does not go with a stream is refused before
// anything is created.
func TestBackupStdinRefusals(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--stdin", "/etc"}, "takes no paths"},
		{[]string{"--stdin", "--stdin-from-command", "--", "true"}, "not both"},
		{[]string{"--stdin-from-command"}, "needs the command"},
		{[]string{"--stdin", "--exclude", "*.tmp"}, "excludes do not apply"},
		{[]string{"--stdin", "--stdin-filename", "../../etc/passwd"}, ".. is not allowed"},
		{[]string{"--stdin", "--files-from", "list"}, "exclude each other"},
	} {
		_, errOut, code := coffer(t, e, append([]string{"backup"}, c.args...)...)
		if code != exitFailure || !strings.Contains(errOut, c.want) {
			t.Errorf("backup %q: exit %d, %s; want an error saying %q", c.args, code, errOut, c.want)
		}
	}
	if _, err := os.Stat(e.vaultDir()); err == nil {
		t.Error("a refused backup created the vault")
	}
}
