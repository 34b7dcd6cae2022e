package main

import (
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func cmkFile(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(cryptorand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cmk.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func protectionJSON(t *testing.T, e *testEnv, args ...string) map[string]any {
	t.Helper()
	var show struct {
		Protection map[string]any `json:"protection"`
	}
	if err := json.Unmarshal([]byte(mustCoffer(t, e, append([]string{"vault", "show", "--json"}, args...)...)), &show); err != nil {
		t.Fatal(err)
	}
	return show.Protection
}

// TestImplicitVaultIsSingleUser: the vault a first backup makes belongs
// to one person, so the README tour's protection and key commands are not
// one-way doors on it: each can be walked back with --confirm.
func TestImplicitVaultIsSingleUser(t *testing.T) {
	e := newEnv(t)
	src := smallData(t)
	backupJSON(t, e, src)
	if show := mustCoffer(t, e, "vault", "show"); !strings.Contains(show, "single-user:   yes") {
		t.Fatalf("vault show of the first backup's vault does not say single-user:\n%s", show)
	}
	if p := protectionJSON(t, e); p["single_user"] != true {
		t.Fatalf("vault show --json: single_user %v", p["single_user"])
	}
	// The tour, then back again.
	mustCoffer(t, e, "vault", "set", "--immutability", "enabled", "--min-retention", "30d")
	mustCoffer(t, e, "vault", "set", "--immutability", "disabled", "--confirm")
	mustCoffer(t, e, "vault", "set", "--min-retention", "0d", "--confirm")
	key := cmkFile(t)
	mustCoffer(t, e, "key", "use-cmk", "rsa-file://"+key)

	// With the customer key gone, the advice is a command the vault takes.
	os.Rename(key, key+".away")
	_, errOut, code := coffer(t, e, "snapshots")
	if code != exitFailure || !strings.Contains(errOut, "coffer key use-pmk --confirm") {
		t.Errorf("key unavailable on a single-user vault: exit %d, %q", code, errOut)
	}
	os.Rename(key+".away", key)
	mustCoffer(t, e, "key", "use-pmk", "--confirm")
}

// TestOneWayDoorsNeedConfirm: on a vault made with plain `vault create`
// (one principal, not single-user), a change nobody could undo is refused
// without --confirm when there is no terminal to ask on, and changes
// nothing; the key-unavailable advice never names a refused command.
func TestOneWayDoorsNeedConfirm(t *testing.T) {
	e := newEnv(t)
	mustCoffer(t, e, "vault", "create", "default")
	backupJSON(t, e, smallData(t))
	if show := mustCoffer(t, e, "vault", "show"); !strings.Contains(show, "single-user:   no") {
		t.Fatalf("vault show does not say the vault is not single-user:\n%s", show)
	}
	for _, args := range [][]string{
		{"vault", "set", "--immutability", "enabled"},
		{"vault", "set", "--min-retention", "30d"},
		{"vault", "set", "--soft-delete-days", "30"},
	} {
		before := protectionJSON(t, e)
		_, errOut, code := coffer(t, e, args...)
		if code != exitFailure || !strings.Contains(errOut, "cannot be undone") || !strings.Contains(errOut, "--confirm") {
			t.Errorf("%v on a vault that cannot undo it: exit %d, %q", args, code, errOut)
		}
		if after := protectionJSON(t, e); !mapsEqual(before, after) {
			t.Errorf("%v refused but changed %v → %v", args, before, after)
		}
	}
	mustCoffer(t, e, "vault", "set", "--soft-delete-days", "30", "--confirm")

	key := cmkFile(t)
	if _, errOut, code := coffer(t, e, "key", "use-cmk", "rsa-file://"+key); code != exitFailure || !strings.Contains(errOut, "cannot be undone") {
		t.Errorf("use-cmk on a vault that could never go back: exit %d, %q", code, errOut)
	}
	if show := mustCoffer(t, e, "vault", "show"); !strings.Contains(show, "platform-managed") {
		t.Errorf("a refused use-cmk switched the key:\n%s", show)
	}
	mustCoffer(t, e, "key", "use-cmk", "rsa-file://"+key, "--confirm")
	os.Rename(key, key+".away")
	_, errOut, code := coffer(t, e, "snapshots")
	if code != exitFailure || strings.Contains(errOut, "use-pmk") {
		t.Errorf("key unavailable on a vault that refuses use-pmk: exit %d, advice %q", code, errOut)
	}
	// vault show says whether the vault is single-user even when its key
	// is out of reach.
	if out, _, _ := coffer(t, e, "vault", "show"); !strings.Contains(out, "single-user:   no") {
		t.Errorf("vault show with the key out of reach:\n%s", out)
	}
}

// TestLockingNeedsConfirmEverywhere: locking immutability (and soft delete
// always-on) cannot be undone even on a single-user vault.
func TestLockingNeedsConfirmEverywhere(t *testing.T) {
	e := newEnv(t)
	backupJSON(t, e, smallData(t))
	mustCoffer(t, e, "vault", "set", "--immutability", "enabled")
	for _, args := range [][]string{{"vault", "set", "--immutability", "locked"}, {"vault", "set", "--soft-delete", "always-on"}} {
		if _, errOut, code := coffer(t, e, args...); code != exitFailure || !strings.Contains(errOut, "cannot be undone") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
	if p := protectionJSON(t, e); p["immutability"] != "enabled" || p["soft_delete"] != "on" {
		t.Errorf("refused changes changed the vault: %v", p)
	}
	mustCoffer(t, e, "vault", "set", "--immutability", "locked", "--confirm")
}

func mapsEqual(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
