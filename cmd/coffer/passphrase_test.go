package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// passEnv is a home with a local vault "laptop" wrapped by a passphrase
// read from COFFER_PASSWORD_FILE.
type passEnv struct {
	*testEnv
	dir     string
	secrets []string // every passphrase used: none may appear anywhere
	out     strings.Builder
}

func (p *passEnv) file(t *testing.T, name, pass string) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.secrets = append(p.secrets, pass)
	return path
}

// run runs coffer and keeps what it printed, to look for passphrases in.
func (p *passEnv) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	out, errOut, code := coffer(t, p.testEnv, args...)
	p.out.WriteString(out + errOut)
	return out, errOut, code
}

func (p *passEnv) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := p.run(t, args...)
	if code != exitOK {
		t.Fatalf("coffer %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (p *passEnv) fails(t *testing.T, want string, args ...string) {
	t.Helper()
	_, errOut, code := p.run(t, args...)
	if code != exitFailure || !strings.Contains(errOut, want) {
		t.Errorf("coffer %s: exit %d, %q; want exit 1 saying %q", strings.Join(args, " "), code, errOut, want)
	}
}

// TestPassphraseVault walks a passphrase-wrapped vault through the CLI:
// create, back up and restore; a wrong passphrase and none; a second
// passphrase added, the first's slot kept, the second removed (and then
// refused); a DEK rotation; back to the platform key. No passphrase ever
// reaches the output, the catalog, the store or the key log.
func TestPassphraseVault(t *testing.T) {
	p := &passEnv{testEnv: newEnv(t), dir: t.TempDir()}
	one := p.file(t, "one", "first passphrase of the laptop")
	two := p.file(t, "two", "second passphrase, for the safe")
	wrong := p.file(t, "wrong", "a passphrase of nobody's")
	src := smallData(t)

	p.setenv("COFFER_PASSWORD_FILE", one)
	p.must(t, "vault", "create", "laptop", "--single-user", "--key", "passphrase:")
	p.setenv("COFFER_VAULT", "laptop")
	if out := p.must(t, "vault", "show"); !strings.Contains(out, "passphrase:") {
		t.Errorf("vault show does not name the passphrase KEK:\n%s", out)
	}
	p.must(t, "backup", src)

	p.setenv("COFFER_PASSWORD_FILE", wrong)
	p.fails(t, "wrong key", "snapshots")
	p.setenv("COFFER_PASSWORD_FILE", "")
	p.fails(t, "COFFER_PASSWORD_FILE", "snapshots")
	p.setenv("COFFER_PASSWORD_COMMAND", "cat '"+one+"'")
	p.must(t, "snapshots")
	p.setenv("COFFER_PASSWORD_COMMAND", "")

	p.setenv("COFFER_PASSWORD_FILE", one)
	p.setenv("COFFER_NEW_PASSWORD_FILE", two)
	p.must(t, "key", "add", "--passphrase")
	p.setenv("COFFER_NEW_PASSWORD_FILE", "")
	slots := p.must(t, "key", "slots")
	if n := strings.Count(slots, "argon2id t=3 m=64 MiB p=4"); n != 2 {
		t.Fatalf("key slots after add:\n%s", slots)
	}
	p.setenv("COFFER_PASSWORD_FILE", two)
	secondSlot := ""
	for _, l := range strings.Split(slots, "\n") {
		if l != "" && !strings.Contains(l, "opened by") {
			secondSlot = strings.Fields(l)[0]
		}
	}
	p.fails(t, "the one this passphrase opens", "key", "remove", secondSlot[:8])
	p.must(t, "restore", "latest", "--target", filepath.Join(p.dir, "r2"))

	p.setenv("COFFER_PASSWORD_FILE", one)
	p.must(t, "key", "remove", secondSlot[:8])
	p.setenv("COFFER_PASSWORD_FILE", two)
	p.fails(t, "wrong key", "snapshots")
	p.setenv("COFFER_PASSWORD_FILE", one)
	p.fails(t, "only passphrase", "key", "remove", strings.Fields(p.must(t, "key", "slots"))[0])
	p.must(t, "key", "rotate")
	p.must(t, "backup", src)
	r := filepath.Join(p.dir, "r")
	p.must(t, "restore", "latest", "--target", r)
	assertSameTree(t, src, filepath.Join(r, src))
	p.must(t, "key", "log")

	p.must(t, "key", "use-pmk", "--confirm")
	p.setenv("COFFER_PASSWORD_FILE", "")
	p.must(t, "snapshots")

	// SECURITY: no passphrase in anything coffer printed or stored.
	haystacks := map[string][]byte{"output": []byte(p.out.String())}
	filepath.WalkDir(p.home, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(path)
			haystacks[path] = b
		}
		return nil
	})
	for where, b := range haystacks {
		for _, s := range p.secrets {
			if bytes.Contains(b, []byte(s)) || bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString([]byte(s)))) {
				t.Errorf("the passphrase %q is in %s", s, where)
			}
		}
	}
}

// TestPassphraseSlotEditedInStore plays a store writer that lowers a
// slot's Argon2 memory in the latest keyring generation (so that the next
// slot made, or a guess, would be cheap): the vault refuses to open,
// nothing is written, and the passphrase is not in the message.
func TestPassphraseSlotEditedInStore(t *testing.T) {
	p := &passEnv{testEnv: newEnv(t), dir: t.TempDir()}
	one := p.file(t, "one", "the only passphrase here")
	p.setenv("COFFER_PASSWORD_FILE", one)
	p.must(t, "vault", "create", "laptop", "--single-user", "--key", "passphrase:")
	p.setenv("COFFER_VAULT", "laptop")
	keysDir := filepath.Join(p.home, "vaults", "laptop", "store", "keys")
	gens, _ := filepath.Glob(filepath.Join(keysDir, "*"))
	if len(gens) != 1 {
		t.Fatalf("keyring generations %q, want 1 (a rewrap deletes the older)", gens)
	}
	raw, err := os.ReadFile(gens[0])
	if err != nil {
		t.Fatal(err)
	}
	var kr map[string]any
	if err := json.Unmarshal(raw, &kr); err != nil {
		t.Fatal(err)
	}
	root, _ := base64.StdEncoding.DecodeString(kr["root"].(string))
	for _, edit := range []func([]byte){
		func(b []byte) { binary.LittleEndian.PutUint32(b[2+12:], 8<<10) }, // m = 8 MiB
		func(b []byte) { binary.LittleEndian.PutUint32(b[2+8:], 1) },      // t = 1
		func(b []byte) { b[2+17] ^= 1 },                                   // the salt
	} {
		r := bytes.Clone(root)
		edit(r)
		kr["root"] = base64.StdEncoding.EncodeToString(r)
		b, _ := json.Marshal(kr)
		os.Chmod(gens[0], 0o600)
		if err := os.WriteFile(gens[0], b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := p.run(t, "backup", smallData(t))
		t.Logf("edited slot: %s", strings.TrimSpace(errOut))
		if code != exitFailure || !(strings.Contains(errOut, "corrupt") || strings.Contains(errOut, "wrong key")) {
			t.Errorf("edited slot: exit %d, %s", code, errOut)
		}
	}
	if strings.Contains(p.out.String(), "the only passphrase here") {
		t.Error("the passphrase reached the output")
	}
	if n := len(listSnapshotsNoVault(t, p)); n != 0 {
		t.Errorf("%d snapshots saved under an edited keyring", n)
	}
}

// listSnapshotsNoVault counts snapshots files in the store, without keys.
func listSnapshotsNoVault(t *testing.T, p *passEnv) []string {
	t.Helper()
	s, _ := filepath.Glob(filepath.Join(p.home, "vaults", "laptop", "store", "snapshots", "*", "*"))
	return s
}
