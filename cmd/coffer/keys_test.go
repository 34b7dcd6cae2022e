package main

import (
	"bytes"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// dataCommands are the commands that need the vault's keys, with the
// arguments to run them on a vault holding one snapshot of data.
func dataCommands(t *testing.T, data string) [][]string {
	return [][]string{
		{"backup", data},
		{"snapshots"},
		{"ls", "latest"},
		{"restore", "latest", "--target", t.TempDir()},
		{"diff", "latest", "latest"},
		{"check"},
		{"check", "--read-data"},
		{"vault", "show"},
	}
}

// keyFailure runs every data command and checks that each exits 1 with
// a message holding every string in want and none in notWant. It returns
// one of the messages.
func keyFailure(t *testing.T, e *testEnv, data string, want, notWant []string) string {
	t.Helper()
	var msg string
	for _, args := range dataCommands(t, data) {
		out, errOut, code := coffer(t, e, args...)
		name := strings.Join(args[:min(2, len(args))], " ")
		if code != exitFailure {
			t.Errorf("%s: exit %d, want 1\n%s%s", name, code, out, errOut)
		}
		for _, w := range want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: message lacks %q:\n%s", name, w, errOut)
			}
		}
		for _, w := range notWant {
			if strings.Contains(errOut, w) {
				t.Errorf("%s: message has %q:\n%s", name, w, errOut)
			}
		}
		if strings.Contains(out, "saved") || strings.Contains(out, "restored") {
			t.Errorf("%s: claims success: %q", name, out)
		}
		msg = errOut
	}
	return msg
}

func TestKeyFileMissing(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	mustCoffer(t, e, "backup", data)
	if err := os.Remove(e.keyFile()); err != nil {
		t.Fatal(err)
	}
	msg := keyFailure(t, e, data,
		[]string{e.keyFile(), "does not exist", "restore it from your copy", "--key-file"},
		[]string{"wrong key"})
	t.Logf("missing key file: %s", msg)

	// Backup must not paper over the loss with a new key file: the vault's
	// keys are wrapped by the lost one.
	if _, err := os.Stat(e.keyFile()); err == nil {
		t.Errorf("a command created a new key file for an existing vault")
	}
	if n := len(listSnapshotsRaw(t, e)); n != 0 {
		t.Errorf("listed %d snapshots without a key", n)
	}

}

// listSnapshotsRaw returns the snapshots --json printed, or nothing when
// the command failed.
func listSnapshotsRaw(t *testing.T, e *testEnv) []snapshotJSON {
	t.Helper()
	out, _, code := coffer(t, e, "snapshots", "--json")
	if code != exitOK {
		return nil
	}
	var s []snapshotJSON
	json.Unmarshal([]byte(out), &s)
	return s
}

func TestKeyFileFromCopy(t *testing.T) {
	e := newEnv(t)
	data := smallData(t)
	mustCoffer(t, e, "backup", data)
	key, err := os.ReadFile(e.keyFile())
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "kept-elsewhere.key")
	if err := os.WriteFile(copyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.keyFile()); err != nil {
		t.Fatal(err)
	}
	out := mustCoffer(t, e, "vault", "show", "--key-file", copyPath)
	if !strings.Contains(out, copyPath) {
		t.Errorf("vault show does not name the key file in use:\n%s", out)
	}
	e.setenv("COFFER_KEY_FILE", copyPath)
	mustCoffer(t, e, "check", "--read-data")
	mustCoffer(t, e, "backup", data)
	if _, err := os.Stat(e.keyFile()); err == nil {
		t.Errorf("a key file appeared at the default path although COFFER_KEY_FILE is set")
	}
}

func TestKeyFileWrong(t *testing.T) {
	data := smallData(t)
	e := newEnv(t)
	mustCoffer(t, e, "backup", data)
	other := newEnv(t)
	mustCoffer(t, other, "backup", data)

	// Another vault's platform key file, in place of this vault's.
	b, err := os.ReadFile(other.keyFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.keyFile(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := keyFailure(t, e, data,
		[]string{"wrong key", e.keyFile(), "--key-file", "does not belong to this vault"},
		[]string{"does not exist"})
	t.Logf("wrong key file: %s", wrong)

	// The two failures read differently: one says what is missing, the
	// other that the key is the wrong one.
	if err := os.Remove(e.keyFile()); err != nil {
		t.Fatal(err)
	}
	_, missing, _ := coffer(t, e, "snapshots")
	_, wrongMsg, _ := coffer(t, other, "snapshots") // other's key is fine
	if missing == wrong || wrongMsg != "" {
		t.Errorf("missing and wrong key files give the same message: %q", missing)
	}
}

func TestKeyFileTampered(t *testing.T) {
	data := smallData(t)
	e := newEnv(t)
	mustCoffer(t, e, "backup", data)
	orig, err := os.ReadFile(e.keyFile())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("same key ID, other key bytes", func(t *testing.T) {
		var kf struct {
			Kind    string `json:"kind"`
			Format  int    `json:"format"`
			ID      string `json:"id"`
			Current int    `json:"current"`
			Keys    []struct {
				Version int    `json:"version"`
				Created string `json:"created"`
				Key     []byte `json:"key"`
			} `json:"keys"`
		}
		if err := json.Unmarshal(orig, &kf); err != nil || len(kf.Keys) != 1 || len(kf.Keys[0].Key) != 32 {
			t.Fatalf("key file %s: %v", orig, err)
		}
		kf.Keys[0].Key[0] ^= 1
		b, _ := json.Marshal(kf)
		if err := os.WriteFile(e.keyFile(), b, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(e.keyFile(), orig, 0o600) })
		keyFailure(t, e, data, []string{"wrong key", "does not open the vault's keys"}, []string{"does not exist"})
	})

	t.Run("not a key file", func(t *testing.T) {
		if err := os.WriteFile(e.keyFile(), []byte("hunter2\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(e.keyFile(), orig, 0o600) })
		keyFailure(t, e, data, []string{e.keyFile(), "not a coffer platform key file"}, []string{"wrong key", "does not exist"})
	})

	// And with the original back, everything works.
	mustCoffer(t, e, "check", "--read-data")
}

// TestKeyRotateAndStatus: key rotate starts a new DEK without touching
// stored data; both snapshots restore; key status probes the KEK and fails
// (exit 1) when the key file is gone.
func TestKeyRotateAndStatus(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), randBytes(1, 300_000), 0o644)
	first := backupJSON(t, e, src)
	packs := func() map[string]bool {
		m := map[string]bool{}
		filepath.WalkDir(filepath.Join(e.storeDir(), "packs"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				m[p] = true
			}
			return nil
		})
		return m
	}
	before := packs()
	if out := mustCoffer(t, e, "key", "rotate"); !strings.Contains(out, "DEK v2") {
		t.Errorf("key rotate said %q", out)
	}
	if after := packs(); len(after) != len(before) {
		t.Errorf("key rotate changed the packs: %d before, %d after", len(before), len(after))
	}
	os.WriteFile(filepath.Join(src, "b"), randBytes(2, 300_000), 0o644)
	second := backupJSON(t, e, src)
	var st struct {
		DEK       int  `json:"dek_version"`
		Deks      int  `json:"deks"`
		Reachable bool `json:"key_reachable"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "key", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.DEK != 2 || st.Deks != 2 || !st.Reachable {
		t.Errorf("key status: %+v", st)
	}
	for _, snap := range []string{first, second} {
		dst := t.TempDir()
		mustCoffer(t, e, "restore", snap[:8], "--target", dst)
		if got, _ := os.ReadFile(filepath.Join(dst, src, "a")); !bytes.Equal(got, randBytes(1, 300_000)) {
			t.Errorf("snapshot %s: a differs", snap[:8])
		}
	}
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check after rotation: %q", out)
	}
	os.Rename(e.keyFile(), e.keyFile()+".away")
	if _, errOut, code := coffer(t, e, "key", "status"); code != exitFailure || !strings.Contains(errOut, "platform.key") {
		t.Errorf("key status without the key file: exit %d, %q", code, errOut)
	}
	// vault show still describes the vault and says the key is out of
	// reach and why, then exits 1 with the key's error.
	var show struct {
		Snapshots  int            `json:"snapshots"`
		Encryption map[string]any `json:"encryption"`
	}
	out, errOut, code := coffer(t, e, "vault", "show", "--json")
	if err := json.Unmarshal([]byte(out), &show); err != nil || code != exitFailure || !strings.Contains(errOut, "--key-file") {
		t.Fatalf("vault show --json without the key file: exit %d, %v, stderr %q", code, err, errOut)
	}
	if show.Snapshots != 2 || show.Encryption["key_reachable"] != false || !strings.Contains(show.Encryption["key_error"].(string), "platform.key") || show.Encryption["dek_version"] != float64(2) {
		t.Errorf("vault show without the key file: %+v", show)
	}
	if out, _, _ := coffer(t, e, "vault", "show"); !strings.Contains(out, "key reachable: NO") {
		t.Errorf("vault show without the key file:\n%s", out)
	}
	os.Rename(e.keyFile()+".away", e.keyFile())
	mustCoffer(t, e, "key", "status")
	if out := mustCoffer(t, e, "vault", "show"); !strings.Contains(out, "key reachable: yes") {
		t.Errorf("vault show with the key back:\n%s", out)
	}
}

// TestCustomerManagedKey: use-cmk rewraps with an RSA key file, leaving
// every pack as it was; with the key file gone, restore fails closed and
// vault show says so; with it back, everything works with no repair;
// use-pmk goes back to the platform key: refused on a vault with one
// principal unless it is single-user and the change confirmed.
func TestCustomerManagedKey(t *testing.T) {
	e := newEnv(t)
	mustCoffer(t, e, "vault", "create", "default", "--single-user")
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), randBytes(1, 200_000), 0o644)
	backupJSON(t, e, src)

	key, err := rsa.GenerateKey(cryptorand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "cmk.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	packs := func() map[string][]byte {
		m := map[string][]byte{}
		filepath.WalkDir(filepath.Join(e.storeDir(), "packs"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				m[p], _ = os.ReadFile(p)
			}
			return nil
		})
		return m
	}
	samePacks := func(before map[string][]byte, when string) {
		t.Helper()
		after := packs()
		for p, b := range before {
			if !bytes.Equal(after[p], b) {
				t.Errorf("%s: pack %s changed", when, filepath.Base(p))
			}
		}
	}
	before := packs()
	uri := "rsa-file://" + keyFile
	if out := mustCoffer(t, e, "key", "use-cmk", uri); !strings.Contains(out, "rsa-file") {
		t.Errorf("use-cmk said %q", out)
	}
	samePacks(before, "use-cmk")
	// Crypto-shredding needs the platform key to open nothing any more:
	// the older keyring generations, wrapped by it, are gone.
	if gens, _ := os.ReadDir(filepath.Join(e.storeDir(), "keys")); len(gens) != 1 {
		t.Errorf("keyring generations after use-cmk: %d, want only the newest", len(gens))
	}
	show := mustCoffer(t, e, "vault", "show")
	if !strings.Contains(show, "customer-managed") || !strings.Contains(show, "rsa-file:"+keyFile) || strings.Contains(show, "key file:") {
		t.Errorf("vault show after use-cmk:\n%s", show)
	}
	os.WriteFile(filepath.Join(src, "b"), []byte("after the switch"), 0o644)
	backupJSON(t, e, src)
	mustCoffer(t, e, "restore", "latest", "--target", t.TempDir())

	// A machine that lost the key's URI (a restored COFFER_HOME) cannot
	// open the vault until use-cmk records it again.
	cmkDir := filepath.Join(e.home, "keys", "cmk")
	os.Rename(cmkDir, cmkDir+".lost")
	if _, errOut, code := coffer(t, e, "snapshots"); code != exitFailure || !strings.Contains(errOut, "use-cmk") {
		t.Errorf("snapshots without the key's URI: exit %d, %q", code, errOut)
	}
	if out := mustCoffer(t, e, "key", "use-cmk", uri); !strings.Contains(out, "already wrapped") {
		t.Errorf("use-cmk to record a lost URI: %q", out)
	}
	mustCoffer(t, e, "snapshots")
	os.RemoveAll(cmkDir + ".lost")

	// Revoked: the key file is gone.
	os.Rename(keyFile, keyFile+".away")
	_, errOut, code := coffer(t, e, "restore", "latest", "--target", t.TempDir())
	if code != exitFailure || !strings.Contains(errOut, "key unavailable") || !strings.Contains(errOut, keyFile) {
		t.Errorf("restore with the customer key gone: exit %d, %q", code, errOut)
	}
	if _, _, code := coffer(t, e, "backup", src); code != exitFailure {
		t.Error("a backup ran without the customer key")
	}
	if out, _, code := coffer(t, e, "vault", "show"); code != exitFailure || !strings.Contains(out, "key reachable: NO") {
		t.Errorf("vault show with the customer key gone: exit %d\n%s", code, out)
	}
	// Restored: works again, nothing to repair.
	os.Rename(keyFile+".away", keyFile)
	dst := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", dst)
	if got, _ := os.ReadFile(filepath.Join(dst, src, "b")); string(got) != "after the switch" {
		t.Errorf("restore after the key came back: %q", got)
	}
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check with the customer key: %q", out)
	}

	before = packs()
	failsWith(t, e, "--confirm", "key", "use-pmk")
	if out := mustCoffer(t, e, "key", "use-pmk", "--confirm"); !strings.Contains(out, "platform") {
		t.Errorf("use-pmk said %q", out)
	}
	samePacks(before, "use-pmk")
	os.Remove(keyFile) // no longer needed
	if show := mustCoffer(t, e, "vault", "show"); !strings.Contains(show, "platform-managed") {
		t.Errorf("vault show after use-pmk:\n%s", show)
	}
	mustCoffer(t, e, "restore", "latest", "--target", t.TempDir())

	// The key log holds the switch, the failures, the recovery and the
	// switch back, each with a principal and an outcome.
	var evs []struct {
		Event, Principal, KEK, Detail string
		OK                            bool
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "key", "log", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	var seq []string
	for _, ev := range evs {
		if ev.Principal == "" {
			t.Errorf("key event %s without a principal", ev.Event)
		}
		if seq == nil || seq[len(seq)-1] != ev.Event {
			seq = append(seq, ev.Event)
		}
		if ev.Event == "key-unavailable" && (ev.OK || !strings.Contains(ev.Detail, "cmk.pem")) {
			t.Errorf("key-unavailable event: %+v", ev)
		}
	}
	// The lost URI, then the key file taken away: two failures, each
	// followed by a recovery.
	want := "use-cmk key-unavailable key-recovered key-unavailable key-recovered use-pmk"
	if got := strings.Join(seq, " "); got != want {
		t.Errorf("key events %q, want %q", got, want)
	}
}

// TestPlatformKeyRotatesItself: a backup after the rotation period adds a
// new platform KEK version and rewraps the vault under it, re-encrypting
// nothing; another vault sharing the key file is rewrapped at its next
// backup; old snapshots restore; COFFER_KEK_ROTATION=off turns it off.
func TestPlatformKeyRotatesItself(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), randBytes(5, 100_000), 0o644)
	first := backupJSON(t, e, src)
	mustCoffer(t, e, "backup", "--vault", "other", src)

	e.mu.Lock()
	e.clock = e.clock.Add(91 * 24 * time.Hour)
	e.mu.Unlock()
	_, errOut, code := coffer(t, e, "backup", src)
	if code != exitOK || !strings.Contains(errOut, "platform key rotated") || !strings.Contains(errOut, "v1 → platform:") || !strings.Contains(errOut, "rewrapped") {
		t.Fatalf("backup after 91 days: exit %d, %q", code, errOut)
	}
	kekOf := func(args ...string) string {
		var show struct {
			Encryption map[string]any `json:"encryption"`
		}
		if err := json.Unmarshal([]byte(mustCoffer(t, e, append([]string{"vault", "show", "--json"}, args...)...)), &show); err != nil {
			t.Fatal(err)
		}
		return show.Encryption["kek_version"].(string)
	}
	if v := kekOf(); v != "2" {
		t.Errorf("KEK version after rotation: %s", v)
	}
	if v := kekOf("--vault", "other"); v != "1" {
		t.Errorf("the other vault before its next backup: KEK v%s, want v1 (still readable)", v)
	}
	_, errOut, _ = coffer(t, e, "backup", "--vault", "other", src)
	if strings.Contains(errOut, "platform key rotated") || !strings.Contains(errOut, "rewrapped") {
		t.Errorf("the other vault's backup: %q (want a rewrap, no second rotation)", errOut)
	}
	if v := kekOf("--vault", "other"); v != "2" {
		t.Errorf("the other vault after its backup: KEK v%s", v)
	}
	dst := t.TempDir()
	mustCoffer(t, e, "restore", first[:8], "--target", dst)
	if got, _ := os.ReadFile(filepath.Join(dst, src, "a")); !bytes.Equal(got, randBytes(5, 100_000)) {
		t.Error("the first snapshot differs after the rotation")
	}
	mustCoffer(t, e, "check", "--read-data")

	e.setenv("COFFER_KEK_ROTATION", "off")
	e.mu.Lock()
	e.clock = e.clock.Add(200 * 24 * time.Hour)
	e.mu.Unlock()
	if _, errOut, _ := coffer(t, e, "backup", src); strings.Contains(errOut, "rotated") {
		t.Errorf("rotation with COFFER_KEK_ROTATION=off: %q", errOut)
	}
	e.setenv("COFFER_KEK_ROTATION", "soon")
	if _, errOut, code := coffer(t, e, "backup", src); code != exitFailure || !strings.Contains(errOut, "COFFER_KEK_ROTATION") {
		t.Errorf("bad COFFER_KEK_ROTATION: exit %d %q", code, errOut)
	}
}

// TestRemoteKeys runs the key commands against a vault server: status,
// rotation, a switch to a customer key (packs untouched), its revocation
// taking effect when the server's key time to live ends, recovery with no
// repair step, the switch back, the key log, and the limits: a key URI
// the server's operator did not allow, and a token without the key
// permissions.
func TestRemoteKeys(t *testing.T) {
	keyDir := t.TempDir()
	srv := servertest.StartWith(t, servertest.Options{Configure: func(o *server.Options) {
		o.KeyTTL = time.Hour
		o.KeyDirs = []string{keyDir}
	}})
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL)
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), randBytes(1, 300_000), 0o644)
	backupJSON(t, e, src)

	var st api.KeyStatus
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "key", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Reachable || st.KeySource != "platform-managed" || st.DEKVersion != 1 {
		t.Errorf("key status: %+v", st)
	}
	if out := mustCoffer(t, e, "key", "rotate"); !strings.Contains(out, "DEK v2") {
		t.Errorf("key rotate said %q", out)
	}
	os.WriteFile(filepath.Join(src, "b"), randBytes(2, 100_000), 0o644)
	backupJSON(t, e, src)

	packDir := filepath.Join(server.VaultDir(srv.DataDir, "prod"), "store", "packs")
	packs := func() map[string][]byte {
		m := map[string][]byte{}
		filepath.WalkDir(packDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				m[p], _ = os.ReadFile(p)
			}
			return nil
		})
		return m
	}
	samePacks := func(before map[string][]byte, when string) {
		t.Helper()
		after := packs()
		if len(after) != len(before) || len(before) == 0 {
			t.Errorf("%s: %d packs before, %d after", when, len(before), len(after))
		}
		for p, b := range before {
			if !bytes.Equal(after[p], b) {
				t.Errorf("%s: pack %s changed", when, filepath.Base(p))
			}
		}
	}

	key, err := rsa.GenerateKey(cryptorand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	outside := filepath.Join(t.TempDir(), "cmk.pem")
	writeFile(t, outside, pemBytes, 0o600)
	inside := filepath.Join(keyDir, "cmk.pem")
	writeFile(t, inside, pemBytes, 0o600)

	// The server reads key material only where its operator allows.
	_, stderr, code := coffer(t, e, "key", "use-cmk", "rsa-file://"+outside)
	if code == exitOK || !strings.Contains(stderr, "--key-dir") {
		t.Errorf("use-cmk with a key outside --key-dir: exit %d, %q", code, stderr)
	}
	_, stderr, code = coffer(t, e, "key", "use-cmk", "awskms://alias/backup?region=eu-west-2&endpoint=https://kms.evil.example")
	if code == exitOK || !strings.Contains(stderr, "endpoint=") {
		t.Errorf("use-cmk with a KMS endpoint of the requester's choosing: exit %d, %q", code, stderr)
	}
	_, stderr, code = coffer(t, e, "key", "use-cmk", "pkcs11:token=t;object=o?module-path=/tmp/evil.so&pin-value=1234")
	if code == exitOK || !strings.Contains(stderr, "--pkcs11-module") || strings.Contains(stderr, "1234") {
		t.Errorf("use-cmk with a module the server does not allow: exit %d, %q", code, stderr)
	}

	before := packs()
	if out := mustCoffer(t, e, "key", "use-cmk", "prod", "rsa-file://"+inside); !strings.Contains(out, "keys rewrapped") || !strings.Contains(out, "rsa-file") {
		t.Errorf("use-cmk said %q", out)
	}
	samePacks(before, "use-cmk")
	if info, err := os.Stat(filepath.Join(srv.DataDir, "keys", "cmk")); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("server key configuration directory: %v, %v", info, err)
	}
	if show := mustCoffer(t, e, "vault", "show"); !strings.Contains(show, "customer-managed") || !strings.Contains(show, "key reachable: yes") {
		t.Errorf("vault show after use-cmk:\n%s", show)
	}
	restoreOK := func(when string) {
		t.Helper()
		dst := t.TempDir()
		if _, stderr, code := coffer(t, e, "restore", "latest", "--target", dst); code != exitOK {
			t.Fatalf("%s: restore failed: %s", when, stderr)
		}
		got, _ := os.ReadFile(filepath.Join(dst, src, "a"))
		if !bytes.Equal(got, randBytes(1, 300_000)) {
			t.Errorf("%s: restored data differs", when)
		}
	}
	restoreOK("after use-cmk")

	// Revoke: the server holds the unwrapped keys until their time to
	// live ends, then fails closed.
	os.Rename(inside, inside+".away")
	restoreOK("revoked, within the key TTL")
	srv.Clock.Add(int64(2 * time.Hour))
	for _, args := range [][]string{{"restore", "latest", "--target", t.TempDir()}, {"backup", src}, {"check", "--read-data"}} {
		_, stderr, code := coffer(t, e, args...)
		if code != exitFailure || !strings.Contains(stderr, "key unavailable") || !strings.Contains(stderr, inside) {
			t.Errorf("%s with the key revoked: exit %d, %q", args[0], code, stderr)
		}
	}
	show, _, code := coffer(t, e, "vault", "show")
	if code != exitFailure || !strings.Contains(show, "key reachable: NO") {
		t.Errorf("vault show with the key revoked: exit %d\n%s", code, show)
	}
	if _, _, code := coffer(t, e, "key", "status"); code != exitFailure {
		t.Errorf("key status with the key revoked: exit %d", code)
	}
	// The snapshot list is proven with a key derived from the root
	// secret (docs/format.md §8.2): without the key it is not shown.
	if _, stderr, code := coffer(t, e, "snapshots"); code != exitFailure || !strings.Contains(stderr, "key unavailable") {
		t.Errorf("snapshots with the key revoked: exit %d, %q", code, stderr)
	}

	// Back: no repair step.
	os.Rename(inside+".away", inside)
	if n := len(listSnapshots(t, e)); n != 2 {
		t.Errorf("%d snapshots after the failed backup, want 2", n)
	}
	restoreOK("key back")
	if out := mustCoffer(t, e, "check", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check after the key came back: %s", out)
	}

	// A backup-operator token has no key permissions.
	opTok := strings.TrimSpace(mustCoffer(t, e, "token", "create", "--role", "backup-operator", "--name", "web01"))
	for _, args := range [][]string{{"key", "status"}, {"key", "rotate"}, {"key", "log"}, {"key", "use-pmk"}} {
		_, stderr, code := coffer(t, e, append(args, "--token", opTok)...)
		if code == exitOK || !strings.Contains(stderr, "key.") {
			t.Errorf("%v as backup-operator: exit %d, %q", args, code, stderr)
		}
	}

	// Back to the platform key: taking the key from the customer's
	// control needs a security approver.
	before = packs()
	out := mustCoffer(t, e, "key", "use-pmk")
	reqID := requestID(t, out)
	if st := keyStatus(t, e); st.KeySource != "customer-managed" {
		t.Fatalf("use-pmk took effect before approval: %+v", st)
	}
	approver, _, err := server.IssueApproverToken(t.Context(), srv.DataDir, "alice", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if out := mustCoffer(t, e, "approve", reqID, "--vault", srv.URL, "--token", approver); !strings.Contains(out, "approved") || !strings.Contains(out, "rewrapped") {
		t.Errorf("approve said %q", out)
	}
	if st := keyStatus(t, e); st.KeySource != "platform-managed" {
		t.Errorf("after approval: %+v", st)
	}
	samePacks(before, "use-pmk")
	os.Remove(inside)
	restoreOK("after use-pmk, the customer key deleted")

	var evs []api.KeyEvent
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "key", "log", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Event)
		if ev.Event == vault.KeyEventUseCMK && !strings.HasPrefix(ev.Principal, "token:") {
			t.Errorf("use-cmk recorded with principal %q", ev.Principal)
		}
	}
	want := []string{"dek-rotate", "use-cmk", "key-unavailable", "key-recovered", "use-pmk"}
	if !slices.Equal(got, want) {
		t.Errorf("key events %v, want %v", got, want)
	}
}

// requestID finds the request ID in what a command that needs approval
// printed.
func requestID(t *testing.T, out string) string {
	t.Helper()
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "req_") {
			return f
		}
	}
	t.Fatalf("no request ID in %q", out)
	return ""
}

func keyStatus(t *testing.T, e *testEnv) api.KeyStatus {
	t.Helper()
	var st api.KeyStatus
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "key", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}
