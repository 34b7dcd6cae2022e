package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

const localCopyKeyPath = "/v1/vaults/a/local-copy-key"

// newLocalCopyKey asks for a new local-copy key as the agent whose token
// is tok and checks the answer's shape.
func newLocalCopyKey(t *testing.T, a *arena, tok string) api.LocalCopyKey {
	t.Helper()
	var k api.LocalCopyKey
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "POST", localCopyKeyPath, tok, api.LocalCopyKeyRequest{}), &k); err != nil {
		t.Fatal(err)
	}
	if len(k.Key) != 32 || len(k.Wrapped) == 0 {
		t.Fatalf("local-copy key: %d-byte key, %d-byte wrapped", len(k.Key), len(k.Wrapped))
	}
	if bytes.Contains(k.Wrapped, k.Key) {
		t.Fatal("the wrapped local-copy key holds the key in the clear")
	}
	return k
}

// refusedNoKey checks that a local-copy key request with tok is refused
// with status want and that the answer carries no key.
func refusedNoKey(t *testing.T, a *arena, who, tok string, wrapped []byte, key []byte, want int) {
	t.Helper()
	st, body := a.call("POST", localCopyKeyPath, tok, api.LocalCopyKeyRequest{Wrapped: wrapped})
	if st != want {
		t.Errorf("%s: unwrap answered %d, want %d: %s", who, st, want, body)
	}
	if key != nil && (bytes.Contains(body, []byte(base64.StdEncoding.EncodeToString(key))) || bytes.Contains(body, key)) {
		t.Errorf("%s: the refusal carries the key", who)
	}
}

// TestAttackLocalCopyKeyIsTheAgentsOwn: a local-copy key that the vault
// wrapped for one agent comes back to that agent's tokens only; another
// agent, a reader, an operator or owner token with its own role, a user
// principal, and a revoked token get nothing; and the route never
// unwraps the vault's own wrapped root secret or DEK.
func TestAttackLocalCopyKeyIsTheAgentsOwn(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	web, err := a.owner.Vault("a").AddSource(ctx, api.AddSource{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	db := a.addSource("db")

	k := newLocalCopyKey(t, a, web.Secret)
	var back api.LocalCopyKey
	if err := json.Unmarshal(a.mustStatus(http.StatusOK, "POST", localCopyKeyPath, web.Secret, api.LocalCopyKeyRequest{Wrapped: k.Wrapped}), &back); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Key, k.Key) {
		t.Fatal("the agent's own wrapped key did not unwrap to its key")
	}
	// Two new keys differ.
	if k2 := newLocalCopyKey(t, a, web.Secret); bytes.Equal(k2.Key, k.Key) {
		t.Fatal("two new local-copy keys are equal")
	}

	refusedNoKey(t, a, "another agent", db, k.Wrapped, k.Key, http.StatusConflict)
	// A reader may not back up: 403. Tokens that may, but are no
	// source identity: 400.
	for role, want := range map[authn.Role]int{authn.RoleBackupReader: http.StatusForbidden, authn.RoleKeyOfficer: http.StatusForbidden,
		authn.RoleBackupOperator: http.StatusBadRequest, authn.RoleBackupContributor: http.StatusBadRequest} {
		tok := a.roleToken(role, "a")
		refusedNoKey(t, a, string(role)+" token", tok, k.Wrapped, k.Key, want)
		refusedNoKey(t, a, string(role)+" token (new key)", tok, nil, nil, want)
	}
	refusedNoKey(t, a, "the owner", a.env.OwnerToken, k.Wrapped, k.Key, http.StatusBadRequest)
	a.principal("ann", "user", "", authn.RoleBackupOperator, "a")
	annTok, err := a.owner.CreateToken(ctx, api.CreateToken{Name: "ann", Principal: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	refusedNoKey(t, a, "a user principal", annTok.Secret, k.Wrapped, k.Key, http.StatusBadRequest)
	// Garbage and tampered wrapped keys: refused, never a key.
	bad := bytes.Clone(k.Wrapped)
	bad[len(bad)/2] ^= 1
	refusedNoKey(t, a, "a tampered wrapped key", web.Secret, bad, k.Key, http.StatusBadRequest)
	var w vault.WrappedKey
	if err := json.Unmarshal(k.Wrapped, &w); err != nil {
		t.Fatal(err)
	}
	w.Data[len(w.Data)-1] ^= 1
	flipped, _ := json.Marshal(w)
	refusedNoKey(t, a, "a wrapped key with a flipped bit", web.Secret, flipped, k.Key, http.StatusConflict)

	// The vault's own wrapped root secret and DEK, read off the server's
	// disk, do not unwrap through this route (their AAD differs).
	var kr *format.Keyring
	filepath.WalkDir(a.env.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == format.KeyringName(1) && kr == nil {
			b, _ := os.ReadFile(p)
			var k format.Keyring
			if json.Unmarshal(b, &k) == nil && len(k.Root) > 0 {
				kr = &k
			}
		}
		return nil
	})
	if kr == nil {
		t.Fatal("no keyring found in the server's data directory")
	}
	ref := vault.KeyRef{Provider: kr.KEK.Provider, KeyID: kr.KEK.KeyID, Version: kr.KEK.Version}
	for name, data := range map[string][]byte{"root secret": kr.Root, "DEK": kr.DEKs[0].Wrapped} {
		wb, _ := json.Marshal(vault.WrappedKey{KEK: ref, Alg: kr.KEK.Alg, Data: data})
		refusedNoKey(t, a, "the vault's wrapped "+name, web.Secret, wb, nil, http.StatusConflict)
	}

	// A revoked token gets nothing, and the agent's next token gets its
	// key back (the binding is the principal, not the token).
	if _, err := a.owner.RevokeToken(ctx, web.ID); err != nil {
		t.Fatal(err)
	}
	refusedNoKey(t, a, "a revoked token", web.Secret, k.Wrapped, k.Key, http.StatusUnauthorized)
}
