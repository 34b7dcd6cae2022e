package main

// Attacks on retired platform key versions (docs/keys.md, "Retiring
// platform key versions"): whoever can write a local vault's directory
// (its store and its catalog) saves a copy while the vault's keyring is
// wrapped under platform KEK v1 and puts it back whole after a rotation.
// The catalog's anchor rolls back with it, so only the key file can refuse
// the copy: v1 must be gone from it once nothing needs it, and must stay
// while anything might.

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/keys/platform"
)

// copyDir copies the directory src to dst: the attacker's saved copy of a
// vault directory, or putting it back.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// putBack replaces the vault directory dir with the copy saved.
func putBack(t *testing.T, saved, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	copyDir(t, saved, dir)
}

// keyVersions lists the versions in the key file, read from disk.
func keyVersions(t *testing.T, path string) []int {
	t.Helper()
	ks, err := platform.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, v := range ks.Versions() {
		out = append(out, v.Version)
	}
	return out
}

// retireJSON runs coffer key retire with args and --json.
func retireJSON(t *testing.T, e *testEnv, args ...string) (retireReport, string, int) {
	t.Helper()
	out, errOut, code := coffer(t, e, append([]string{"key", "retire", "--json"}, args...)...)
	var rep retireReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("key retire --json: %v\n%s%s", err, out, errOut)
	}
	return rep, errOut, code
}

// TestAttackKEKRollbackAfterRetire: a vault given by path, saved whole
// (store and catalog) under v1, put back after key rotate --kek: backup,
// restore, check and the rest fail with "key unavailable" naming v1,
// because v1 is gone from the key file; before the fix the copy opened
// and backups went on under the old keyring.
func TestAttackKEKRollbackAfterRetire(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	dir := filepath.Join(t.TempDir(), "usb", "vault")
	e.setenv("COFFER_VAULT", dir)
	mustCoffer(t, e, "backup", data)
	saved := filepath.Join(t.TempDir(), "saved")
	copyDir(t, dir, saved)
	if fi, err := os.Stat(vaultListPath(e.keyFile())); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the list of vaults beside the key file: %v, mode %v; want 0600", err, fi.Mode())
	}

	out, errOut, code := coffer(t, e, "key", "rotate", "--kek")
	if code != exitOK || !strings.Contains(out, "rewrapped") || !strings.Contains(errOut, "retired") {
		t.Fatalf("key rotate --kek: exit %d\n%s%s", code, out, errOut)
	}
	if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{2}) {
		t.Fatalf("key file versions after key rotate --kek: %v, want [2]", got)
	}
	mustCoffer(t, e, "backup", data)
	current := filepath.Join(t.TempDir(), "current")
	copyDir(t, dir, current)

	putBack(t, saved, dir) // store and catalog together: the anchor too
	keyFailure(t, e, data, []string{"key unavailable", "version 1"}, nil)

	putBack(t, current, dir)
	mustCoffer(t, e, "check", "--read-data")
	dst := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", dst)
	assertSameTree(t, data, filepath.Join(dst, data))
}

// TestAttackKEKRetireBlocked: a listed vault that cannot be read when the
// key is rotated (its disk unmounted, or a damaged keyring) keeps every
// version; key retire names it and exits 1, and says how to go on. Once
// it is back, key retire rewraps it and deletes v1, and it still opens;
// one gone for good is forgotten with --forget.
func TestAttackKEKRetireBlocked(t *testing.T) {
	for _, how := range []string{"unmounted", "damaged"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			data := smallData(t)
			a := filepath.Join(t.TempDir(), "a")
			b := filepath.Join(t.TempDir(), "b")
			mustCoffer(t, e, "backup", "--vault", a, data)
			mustCoffer(t, e, "backup", "--vault", b, data)
			away := filepath.Join(t.TempDir(), "away")
			var restore func()
			switch how {
			case "unmounted":
				if err := os.Rename(b, away); err != nil {
					t.Fatal(err)
				}
				restore = func() { os.Rename(away, b) }
			case "damaged":
				// The anchored generation itself (an object planted above it
				// would be ignored: it does not authenticate).
				dir := filepath.Join(b, "store", "keys")
				names, err := os.ReadDir(dir)
				if err != nil || len(names) == 0 {
					t.Fatal(names, err)
				}
				p := filepath.Join(dir, names[len(names)-1].Name())
				saved, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				os.Remove(p)
				if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
					t.Fatal(err)
				}
				restore = func() { os.Remove(p); os.WriteFile(p, saved, 0o400) }
			}
			_, errOut, code := coffer(t, e, "key", "rotate", "--kek", "--vault", a)
			if code != exitOK || !strings.Contains(errOut, b) || !strings.Contains(errOut, "kept") {
				t.Fatalf("key rotate --kek with %s %s: exit %d, stderr %q, want a warning naming it", how, b, code, errOut)
			}
			if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{1, 2}) {
				t.Fatalf("key file versions with %s unreadable: %v, want [1 2]", b, got)
			}
			rep, _, code := retireJSON(t, e)
			if code != exitFailure || len(rep.Blocked) != 1 || rep.Blocked[0].Vault != b || !strings.Contains(rep.Blocked[0].Error, "--forget "+b) || len(rep.Deleted) != 0 {
				t.Fatalf("key retire with %s unreadable: exit %d, %+v", b, code, rep)
			}
			out, _, _ := coffer(t, e, "key", "retire")
			if !strings.Contains(out, "cannot read "+b) || !strings.Contains(out, "nothing deleted") {
				t.Errorf("key retire output with %s unreadable:\n%s", b, out)
			}
			if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{1, 2}) {
				t.Fatalf("key file versions after key retire with %s unreadable: %v", b, got)
			}

			restore()
			rep, errOut, code = retireJSON(t, e)
			if code != exitOK || !slices.Equal(rep.Deleted, []int{1}) || !slices.Contains(rep.Rewrapped, b) {
				t.Fatalf("key retire with %s back: exit %d, %+v %s", b, code, rep, errOut)
			}
			if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{2}) {
				t.Fatalf("key file versions: %v, want [2]", got)
			}
			for _, v := range []string{a, b} {
				mustCoffer(t, e, "check", "--read-data", "--vault", v)
			}
		})
	}
}

// TestKEKRetireForget: a listed vault gone for good blocks until it is
// forgotten; --forget of a path not listed is refused.
func TestKEKRetireForget(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	a := filepath.Join(t.TempDir(), "a")
	gone := filepath.Join(t.TempDir(), "gone")
	mustCoffer(t, e, "backup", "--vault", a, data)
	mustCoffer(t, e, "backup", "--vault", gone, data)
	if err := os.RemoveAll(gone); err != nil {
		t.Fatal(err)
	}
	mustCoffer(t, e, "key", "rotate", "--kek", "--vault", a)
	if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("key file versions with a listed vault missing: %v", got)
	}
	if _, errOut, code := coffer(t, e, "key", "retire", "--forget", filepath.Join(t.TempDir(), "never")); code == exitOK || !strings.Contains(errOut, "no vault is listed") {
		t.Errorf("--forget of a path never listed: exit %d %q", code, errOut)
	}
	rep, _, code := retireJSON(t, e, "--dry-run", "--forget", gone)
	if code != exitOK || len(rep.Deleted) != 0 || !slices.ContainsFunc(rep.Versions, func(v retireVersion) bool { return v.Version == 1 && v.State == "would-retire" }) {
		t.Fatalf("--dry-run --forget: exit %d %+v", code, rep)
	}
	if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("--dry-run deleted: %v", got)
	}
	rep, _, code = retireJSON(t, e, "--forget", gone)
	if code != exitOK || !slices.Equal(rep.Deleted, []int{1}) {
		t.Fatalf("--forget: exit %d %+v", code, rep)
	}
	if rep, _, code := retireJSON(t, e); code != exitOK || len(rep.Blocked) != 0 {
		t.Errorf("key retire after --forget: exit %d, still blocked by %+v", code, rep.Blocked)
	}
	mustCoffer(t, e, "check", "--vault", a)
}

// TestKEKRetireUnlisted: a key file from before the list of vaults (the
// list removed, as an older coffer left it) may wrap vaults opened only by
// path, which no list names: its versions stay after a rotation until
// --all-listed confirms the list, and a vault opened once meanwhile is
// listed, rewrapped and still opens after they go.
func TestKEKRetireUnlisted(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	old := filepath.Join(t.TempDir(), "old")
	mustCoffer(t, e, "backup", "--vault", old, data)
	if err := os.Remove(filepath.Join(e.home, "keys", "platform.vaults")); err != nil {
		t.Fatal(err)
	}
	newer := filepath.Join(t.TempDir(), "newer")
	mustCoffer(t, e, "backup", "--vault", newer, data)
	_, errOut, _ := coffer(t, e, "key", "rotate", "--kek", "--vault", newer)
	if !strings.Contains(errOut, "v1 kept") {
		t.Errorf("key rotate --kek with versions older than the list: %q, want a note that v1 is kept", errOut)
	}
	if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("key file versions: %v, want v1 kept (older than the list)", got)
	}
	rep, _, code := retireJSON(t, e)
	if code != exitOK || len(rep.Deleted) != 0 || !slices.ContainsFunc(rep.Versions, func(v retireVersion) bool { return v.Version == 1 && v.State == "unlisted" }) {
		t.Fatalf("key retire without --all-listed: exit %d %+v", code, rep)
	}
	mustCoffer(t, e, "snapshots", "--vault", old) // opened once: listed
	rep, _, code = retireJSON(t, e, "--all-listed")
	if code != exitOK || !slices.Equal(rep.Deleted, []int{1}) || !slices.Contains(rep.Rewrapped, old) {
		t.Fatalf("key retire --all-listed: exit %d %+v", code, rep)
	}
	for _, v := range []string{old, newer} {
		mustCoffer(t, e, "check", "--read-data", "--vault", v)
	}
}

// TestKEKRetireHomeVaults: vaults under $COFFER_HOME/vaults need no list;
// v1 stays while one of them is still wrapped under it, and goes with the
// backup that rewraps the last one.
func TestKEKRetireHomeVaults(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	mustCoffer(t, e, "backup", data)
	mustCoffer(t, e, "backup", "--vault", "other", data)
	e.mu.Lock()
	e.clock = e.clock.AddDate(0, 0, 91)
	e.mu.Unlock()
	mustCoffer(t, e, "backup", data) // rotates; "other" still under v1
	if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("key file versions while vault other is under v1: %v", got)
	}
	rep, _, _ := retireJSON(t, e, "--dry-run")
	if !slices.ContainsFunc(rep.Versions, func(v retireVersion) bool {
		return v.Version == 1 && v.State == "needed" && len(v.NeededBy) == 1 && strings.HasSuffix(v.NeededBy[0], "other")
	}) {
		t.Errorf("dry run: v1 should be needed by vault other: %+v", rep.Versions)
	}
	_, errOut, _ := coffer(t, e, "backup", "--vault", "other", data)
	if !strings.Contains(errOut, "retired") {
		t.Errorf("the backup that rewraps the last vault under v1: %q, want v1 retired", errOut)
	}
	if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{2}) {
		t.Fatalf("key file versions after every vault was rewrapped: %v", got)
	}
	for _, v := range []string{"default", "other"} {
		mustCoffer(t, e, "check", "--read-data", "--vault", v)
	}
}

// TestKEKRetireListedVaults: a key file shared by two homes (--key-file)
// keeps a version the other home's vault needs, and key retire rewraps
// that vault before deleting it; a listed directory that now holds
// another vault (the listed one moved) blocks until the moved one is
// opened where it is and the stale entry forgotten, and --forget never
// drops the vault that is there now.
func TestKEKRetireListedVaults(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	home1 := e.home
	home2 := t.TempDir()
	mustCoffer(t, e, "backup", data)
	e.setenv("COFFER_HOME", home2)
	mustCoffer(t, e, "backup", "--key-file", e.keyFile(), data)
	e.setenv("COFFER_HOME", home1)
	mustCoffer(t, e, "key", "rotate", "--kek")
	if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("key file versions while the other home's vault is under v1: %v", got)
	}
	other := filepath.Join(home2, "vaults", "default")
	rep, _, code := retireJSON(t, e)
	if code != exitOK || !slices.Equal(rep.Deleted, []int{1}) || !slices.Contains(rep.Rewrapped, other) {
		t.Fatalf("key retire: exit %d %+v", code, rep)
	}
	e.setenv("COFFER_HOME", home2)
	mustCoffer(t, e, "check", "--read-data", "--key-file", e.keyFile())
	e.setenv("COFFER_HOME", home1)

	p := filepath.Join(t.TempDir(), "p")
	moved := filepath.Join(t.TempDir(), "moved")
	mustCoffer(t, e, "backup", "--vault", p, data)
	if err := os.Rename(p, moved); err != nil {
		t.Fatal(err)
	}
	mustCoffer(t, e, "backup", "--vault", p, data) // another vault at the listed path
	mustCoffer(t, e, "key", "rotate", "--kek", "--vault", p)
	rep, _, code = retireJSON(t, e)
	if code != exitFailure || len(rep.Blocked) != 1 || rep.Blocked[0].Vault != p || !strings.Contains(rep.Blocked[0].Error, "was listed there") {
		t.Fatalf("key retire with a listed vault replaced: exit %d %+v", code, rep)
	}
	if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("key file versions with a listed vault replaced: %v, want [2 3]", got)
	}
	mustCoffer(t, e, "snapshots", "--vault", moved) // opened where it is now: listed
	rep, _, code = retireJSON(t, e, "--forget", p)
	if code != exitOK || len(rep.Forgotten) != 1 || !slices.Equal(rep.Deleted, []int{2}) || !slices.Contains(rep.Rewrapped, moved) {
		t.Fatalf("key retire --forget the stale entry: exit %d %+v", code, rep)
	}
	l, _, err := loadVaultList(e.keyFile())
	if err != nil || !slices.ContainsFunc(l.Vaults, func(v listedVault) bool { return v.Path == p }) {
		t.Errorf("--forget dropped the vault that is at %s now: %+v %v", p, l.Vaults, err)
	}
	for _, v := range []string{p, moved, "default"} {
		mustCoffer(t, e, "check", "--read-data", "--vault", v)
	}
}

// TestKEKRetireAfterVaultDelete: a vault deleted with coffer vault delete
// leaves the list, so it blocks nothing; a vault directory removed by hand
// blocks until forgotten (TestKEKRetireForget).
func TestKEKRetireAfterVaultDelete(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	mustCoffer(t, e, "backup", data)
	p := filepath.Join(t.TempDir(), "p")
	mustCoffer(t, e, "vault", "create", p, "--single-user")
	mustCoffer(t, e, "backup", "--vault", p, data)
	if l, _, _ := loadVaultList(e.keyFile()); !slices.ContainsFunc(l.Vaults, func(v listedVault) bool { return v.Path == p }) {
		t.Fatalf("vault %s not listed after a backup: %+v", p, l.Vaults)
	}
	mustCoffer(t, e, "vault", "delete", "--vault", p, "--confirm")
	if l, _, _ := loadVaultList(e.keyFile()); slices.ContainsFunc(l.Vaults, func(v listedVault) bool { return v.Path == p }) {
		t.Fatalf("vault %s still listed after vault delete: %+v", p, l.Vaults)
	}
	_, errOut, code := coffer(t, e, "key", "rotate", "--kek")
	if code != exitOK || !strings.Contains(errOut, "retired") {
		t.Fatalf("key rotate --kek after the other vault was deleted: exit %d %q", code, errOut)
	}
	if got := keyVersions(t, e.keyFile()); !slices.Equal(got, []int{2}) {
		t.Fatalf("key file versions: %v, want [2]", got)
	}
}
