package server_test

// Attacks on key switches of an immutable vault: a key-officer (or an
// owner) alone must not move a vault whose immutability is enabled or
// locked to a key it controls, since deleting that key would then
// destroy every backup the immutability promised to keep.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// cmkArena is an arena whose server reads key files from a key directory
// holding an RSA key, and that key's rsa-file URI.
func cmkArena(t *testing.T) (*arena, string) {
	t.Helper()
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cmk.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newArenaWith(t, servertest.Options{Configure: func(o *server.Options) { o.KeyDirs = []string{dir} }})
	return a, "rsa-file://" + path
}

// keyringFiles lists vault name's stored keyring generations.
func (a *arena) keyringFiles(name string) []string {
	a.t.Helper()
	es, err := os.ReadDir(filepath.Join(server.VaultDir(a.env.DataDir, name), "store", "keys"))
	if err != nil {
		a.t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func (a *arena) keySource(name string) string {
	a.t.Helper()
	var st api.KeyStatus
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "GET", "/v1/vaults/"+name+"/key", a.env.OwnerToken, nil), &st); err != nil {
		a.t.Fatal(err)
	}
	return st.KeySource
}

// TestAttackUseCMKOnImmutableVault: on a vault whose immutability is
// enabled or locked, use-cmk by a key-officer is a request for a security
// approver (202); nothing changes, and no keyring generation goes, until
// it is approved; the requester cannot approve it; approved, the switch
// happens. On a vault without immutability it happens at once, as before.
func TestAttackUseCMKOnImmutableVault(t *testing.T) {
	for _, imm := range []string{"enabled", "locked"} {
		t.Run(imm, func(t *testing.T) {
			a, uri := cmkArena(t)
			officer := a.roleToken(authn.RoleKeyOfficer, "")
			for _, step := range []string{"enabled", "locked"} {
				if step == "locked" && imm != "locked" {
					break
				}
				s := step
				a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/settings", a.env.OwnerToken, api.SettingsChange{Immutability: &s})
			}
			before := a.keyringFiles("a")
			var out struct {
				api.KeyChange
				Request *api.Request `json:"request"`
			}
			if err := json.Unmarshal(a.mustStatus(http.StatusAccepted, "POST", "/v1/vaults/a/key/use-cmk", officer, api.UseCMK{URI: uri}), &out); err != nil {
				t.Fatal(err)
			}
			if out.Request == nil || out.Request.Op != "use-cmk" || out.Changed {
				t.Fatalf("use-cmk on an immutable vault answered %+v", out)
			}
			if strings.Contains(out.Request.Summary, "BEGIN") || !strings.Contains(out.Request.Summary, "rsa-file") {
				t.Errorf("request summary %q", out.Request.Summary)
			}
			if src := a.keySource("a"); src != "platform-managed" {
				t.Fatalf("the key changed before approval: %s", src)
			}
			if got := a.keyringFiles("a"); strings.Join(got, ",") != strings.Join(before, ",") {
				t.Fatalf("keyring generations changed before approval: %v → %v", before, got)
			}
			a.mustStatus(http.StatusForbidden, "POST", "/v1/requests/"+out.Request.ID+"/approve", officer, nil)
			approver := a.roleToken(authn.RoleSecurityApprover, "")
			var done api.Request
			if err := json.Unmarshal(a.mustStatus(http.StatusOK, "POST", "/v1/requests/"+out.Request.ID+"/approve", approver, nil), &done); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(done.Result, "rewrapped") {
				t.Fatalf("approved use-cmk: %+v", done)
			}
			if src := a.keySource("a"); src != "customer-managed" {
				t.Errorf("after approval the vault is %s", src)
			}
		})
	}
	t.Run("mutable", func(t *testing.T) {
		a, uri := cmkArena(t)
		officer := a.roleToken(authn.RoleKeyOfficer, "")
		a.mustStatus(http.StatusOK, "POST", "/v1/vaults/a/key/use-cmk", officer, api.UseCMK{URI: uri})
		if src := a.keySource("a"); src != "customer-managed" {
			t.Errorf("use-cmk on a vault without immutability: %s", src)
		}
	})
	_ = context.Background
}
