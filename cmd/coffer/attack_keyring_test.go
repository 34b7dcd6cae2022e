package main

// Keyring and config attacks played from the CLI: the attacker writes the
// vault's store directly (keys/, config) with nothing but the customer
// key's PUBLIC key, and backup, restore and check must refuse, saying what
// is wrong. And the format-1 golden vault upgrades in place.

import (
	"bytes"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// cmkVault makes a single-user vault with one backup, switched to an
// rsa-file customer key; it returns the data directory and the public key.
func cmkVault(t *testing.T, e *testEnv) (string, *rsa.PublicKey) {
	t.Helper()
	mustCoffer(t, e, "vault", "create", "default", "--single-user")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a"), []byte("the owner's data\n"), 0o644)
	backupJSON(t, e, src)
	key, err := rsa.GenerateKey(cryptorand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "cmk.pem")
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	mustCoffer(t, e, "key", "use-cmk", "rsa-file://"+keyFile)
	return src, &key.PublicKey
}

func keyringFiles(t *testing.T, e *testEnv) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.storeDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	sort.Strings(names)
	return names
}

func vaultID(t *testing.T, e *testEnv) vault.ID {
	t.Helper()
	var c struct{ ID string }
	b, err := os.ReadFile(filepath.Join(e.storeDir(), "config"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &c)
	id, err := vault.ParseID(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// wantAllRefuse runs backup, restore and check and wants each to fail
// with every one of words in its error output.
func wantAllRefuse(t *testing.T, e *testEnv, src string, words ...string) {
	t.Helper()
	for _, args := range [][]string{
		{"backup", src},
		{"restore", "latest", "--target", filepath.Join(t.TempDir(), "out")},
		{"check", "--read-data"},
	} {
		out, errOut, code := coffer(t, e, args...)
		if code == exitOK {
			t.Errorf("coffer %s accepted the planted keyring:\n%s%s", args[0], out, errOut)
			continue
		}
		for _, w := range words {
			if !strings.Contains(errOut, w) {
				t.Errorf("coffer %s: stderr does not say %q:\n%s", args[0], w, errOut)
			}
		}
	}
}

// TestAttackCLIAttackerDEK: the RSA customer key's public key and write
// access to keys/ are enough to wrap a DEK of the attacker's choosing with
// the right AAD; the next backup used it and check passed. Now, in place
// of the current generation, backup, restore and check refuse, and the key
// log does not stay silent about why (the refusal names the keyring); as
// the next generation it does not authenticate and is ignored (check
// lists it), and the vault's own DEK stays current.
func TestAttackCLIAttackerDEK(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		t.Run(map[bool]string{false: "new generation", true: "current generation rewritten"}[inPlace], func(t *testing.T) {
			e := newEnv(t)
			src, pub := cmkVault(t, e)
			names := keyringFiles(t, e)
			latest := filepath.Join(e.storeDir(), "keys", names[len(names)-1])
			b, err := os.ReadFile(latest)
			if err != nil {
				t.Fatal(err)
			}
			var kr map[string]any
			if err := json.Unmarshal(b, &kr); err != nil {
				t.Fatal(err)
			}
			id := vaultID(t, e)
			deks := kr["deks"].([]any)
			ver := uint32(deks[len(deks)-1].(map[string]any)["version"].(float64)) + 1
			attackerDEK := seal.NewRandomKey()
			wrapped, err := rsa.EncryptOAEP(sha256.New(), cryptorand.Reader, pub, attackerDEK[:], seal.KeyAAD(id, "dek", ver))
			if err != nil {
				t.Fatal(err)
			}
			kr["deks"] = append(deks, map[string]any{"version": ver, "created": time.Now().UTC(), "wrapped": wrapped})
			kr["current_dek"] = ver
			gen := uint64(kr["generation"].(float64))
			target := latest
			if !inPlace {
				gen++
				target = filepath.Join(e.storeDir(), "keys", vaultKeyringName(gen))
			}
			kr["generation"] = gen
			nb, _ := json.Marshal(kr)
			os.Remove(target)
			writeFile(t, target, nb, 0o600)
			if !inPlace {
				// The next generation's name, and a MAC that does not
				// verify: ignored, the vault's own DEK stays current.
				for _, args := range [][]string{{"backup", src}, {"restore", "latest", "--target", filepath.Join(t.TempDir(), "out")}} {
					mustCoffer(t, e, args...)
				}
				_, errOut, code := coffer(t, e, "check", "--read-data")
				if code != exitOK || !strings.Contains(errOut, "keys/"+vaultKeyringName(gen)) {
					t.Errorf("coffer check with keys/%s planted: exit %d, stderr %q; want success listing it", vaultKeyringName(gen), code, errOut)
				}
				var st struct {
					DEK int `json:"dek_version"`
				}
				if err := json.Unmarshal([]byte(mustCoffer(t, e, "key", "status", "--json")), &st); err != nil {
					t.Fatal(err)
				}
				if uint32(st.DEK) == ver {
					t.Errorf("the attacker's DEK v%d is current", ver)
				}
				return
			}
			wantAllRefuse(t, e, src, "keyring")
			// The refusal is on the vault's record: key log shows it.
			if out := mustCoffer(t, e, "key", "log"); !strings.Contains(out, "keyring-refused") {
				t.Errorf("key log does not show the refused keyring:\n%s", out)
			}
		})
	}
}

func vaultKeyringName(g uint64) string { return format.KeyringName(g) }

// TestAttackCLIDowngradeAfterRevocation: a platform-wrapped generation
// saved before use-cmk is put back after the customer revokes the key
// (the customer-key generation deleted): backups must not resume under
// the platform key.
func TestAttackCLIDowngradeAfterRevocation(t *testing.T) {
	e := newEnv(t)
	mustCoffer(t, e, "vault", "create", "default", "--single-user")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a"), []byte("the owner's data\n"), 0o644)
	backupJSON(t, e, src)
	keysDir := filepath.Join(e.storeDir(), "keys")
	saved := map[string][]byte{}
	for _, n := range keyringFiles(t, e) {
		saved[n], _ = os.ReadFile(filepath.Join(keysDir, n))
	}
	key, err := rsa.GenerateKey(cryptorand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "cmk.pem")
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	mustCoffer(t, e, "key", "use-cmk", "rsa-file://"+keyFile)
	backupJSON(t, e, src)
	os.Remove(keyFile) // revoked
	for _, n := range keyringFiles(t, e) {
		os.Remove(filepath.Join(keysDir, n))
	}
	for n, b := range saved {
		writeFile(t, filepath.Join(keysDir, n), b, 0o600)
	}
	wantAllRefuse(t, e, src, "older than generation")
}

// TestAttackCLIConfigEdited: a store writer shrinks the chunks or changes
// the pack size in the config.
func TestAttackCLIConfigEdited(t *testing.T) {
	for name, edit := range map[string]func(map[string]any){
		"64-byte chunks":  func(m map[string]any) { m["chunker"] = map[string]any{"min": 64, "avg": 128, "max": 256} },
		"4 KiB chunks":    func(m map[string]any) { m["chunker"] = map[string]any{"min": 4096, "avg": 8192, "max": 16384} },
		"2 MiB pack size": func(m map[string]any) { m["pack_size"] = 2 << 20 },
		"1 GiB pack size": func(m map[string]any) { m["pack_size"] = 1 << 30 },
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			src := filepath.Join(t.TempDir(), "src")
			writeFile(t, filepath.Join(src, "a"), []byte("data\n"), 0o644)
			backupJSON(t, e, src)
			p := filepath.Join(e.storeDir(), "config")
			b, _ := os.ReadFile(p)
			var m map[string]any
			json.Unmarshal(b, &m)
			edit(m)
			nb, _ := json.Marshal(m)
			os.Remove(p)
			writeFile(t, p, nb, 0o600)
			wantAllRefuse(t, e, src, "config")
		})
	}
}

// TestGoldenV1Upgrade: the frozen format-1 vault opens, upgrades in place
// (format-2 config and keyring, anchored in the catalog) and restores
// what it held; its check passes.
func TestGoldenV1Upgrade(t *testing.T) {
	e := newEnv(t)
	if b, err := exec.Command("cp", "-a", filepath.Join("testdata", "golden-v1", "home")+"/.", e.home).CombinedOutput(); err != nil {
		t.Fatalf("copy the golden vault: %v %s", err, b)
	}
	os.Chmod(e.keyFile(), 0o600)
	cfgBefore, _ := os.ReadFile(filepath.Join(e.storeDir(), "config"))
	if !bytes.Contains(cfgBefore, []byte(`"format": 1`)) {
		t.Fatalf("the golden vault's config is not format 1:\n%s", cfgBefore)
	}
	out := mustCoffer(t, e, "snapshots")
	if !strings.Contains(out, "bf279cea") || !strings.Contains(out, "4016aa5f") {
		t.Fatalf("snapshots of the golden vault:\n%s", out)
	}
	cfgAfter, _ := os.ReadFile(filepath.Join(e.storeDir(), "config"))
	if !bytes.Contains(cfgAfter, []byte(`"format": 2`)) {
		t.Errorf("config after the first open is not format 2:\n%s", cfgAfter)
	}
	names := keyringFiles(t, e)
	if len(names) != 3 || names[2] != "0000000003" {
		t.Fatalf("keyring generations after the upgrade: %v, want 1, 2 and the format-2 generation 3", names)
	}
	kb, _ := os.ReadFile(filepath.Join(e.storeDir(), "keys", names[2]))
	if !bytes.Contains(kb, []byte(`"format": 2`)) || !bytes.Contains(kb, []byte(`"mac"`)) {
		t.Errorf("generation 3 is not an authenticated format-2 keyring:\n%s", kb)
	}
	cat, err := sqlite.Open(filepath.Join(e.vaultDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := cat.KeyAnchor(t.Context(), vaultID(t, e))
	cat.Close()
	if err != nil || a.Generation != 3 {
		t.Errorf("anchor after the upgrade: %+v, %v; want generation 3", a, err)
	}
	target := filepath.Join(t.TempDir(), "out")
	mustCoffer(t, e, "restore", "4016aa5f", "--target", target)
	want := map[string]string{"a.txt": "alpha\n", "b.txt": "bravo bravo bravo\n", "c.txt": "charlie\n"}
	found := 0
	filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if w, ok := want[d.Name()]; ok {
				if b, _ := os.ReadFile(p); string(b) == w {
					found++
				}
			}
		}
		return nil
	})
	if found != len(want) {
		t.Errorf("restored %d of the golden vault's %d files intact", found, len(want))
	}
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors") {
		t.Errorf("check after the upgrade:\n%s", out)
	}
	// A second open changes nothing more, and backups work.
	mustCoffer(t, e, "backup", "--host", "golden", target)
	if n := keyringFiles(t, e); len(n) != 3 {
		t.Errorf("keyring generations after a backup: %v", n)
	}
}

// TestGoldenV1UpgradeCutShort: a crash after the format-2 keyring was
// stored and anchored but before the config was replaced (the config
// deleted, or still format 1) leaves a vault that opens and finishes.
func TestGoldenV1UpgradeCutShort(t *testing.T) {
	for _, state := range []string{"config deleted", "config still format 1"} {
		t.Run(state, func(t *testing.T) {
			e := newEnv(t)
			if b, err := exec.Command("cp", "-a", filepath.Join("testdata", "golden-v1", "home")+"/.", e.home).CombinedOutput(); err != nil {
				t.Fatalf("copy the golden vault: %v %s", err, b)
			}
			os.Chmod(e.keyFile(), 0o600)
			cfgPath := filepath.Join(e.storeDir(), "config")
			v1cfg, _ := os.ReadFile(cfgPath)
			mustCoffer(t, e, "snapshots") // upgrades
			os.Remove(cfgPath)
			if state == "config still format 1" {
				writeFile(t, cfgPath, v1cfg, 0o600)
			}
			mustCoffer(t, e, "snapshots")
			cfg, err := os.ReadFile(cfgPath)
			if err != nil || !bytes.Contains(cfg, []byte(`"format": 2`)) {
				t.Errorf("config after the next open: %v\n%s", err, cfg)
			}
			if out := mustCoffer(t, e, "check"); !strings.Contains(out, "no errors") {
				t.Errorf("check:\n%s", out)
			}
		})
	}
}
