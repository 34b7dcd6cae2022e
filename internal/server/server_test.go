package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func status(err error) int {
	var re *api.RemoteError
	if errors.As(err, &re) {
		return re.Status
	}
	return 0
}

func token(t *testing.T, owner *client.Client, role, vaultName string) string {
	t.Helper()
	tok, err := owner.CreateToken(context.Background(), api.CreateToken{Name: role, Role: role, Vault: vaultName})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Secret
}

// TestAuthentication: no token → 401, wrong role → 403, a token for vault A
// is useless on vault B, revocation and expiry take effect at once.
func TestAuthentication(t *testing.T) {
	ctx := context.Background()
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken)
	for _, n := range []string{"a", "b"} {
		if _, err := owner.CreateVault(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := owner.CreateVault(ctx, "a"); !errors.Is(err, vault.ErrExists) {
		t.Errorf("creating vault a twice: %v, want ErrExists", err)
	}

	none := env.Client(t, "")
	if _, err := none.Vault("a").Info(ctx); status(err) != http.StatusUnauthorized || !errors.Is(err, api.ErrUnauthenticated) {
		t.Errorf("no token: %v (status %d), want 401", err, status(err))
	}
	bogus := env.Client(t, "cft_"+strings.Repeat("A", 43))
	if _, err := bogus.Vault("a").Info(ctx); status(err) != http.StatusUnauthorized {
		t.Errorf("unknown token: %v, want 401", err)
	}

	reader := env.Client(t, token(t, owner, "backup-reader", "a"))
	if _, err := reader.Vault("a").Snapshots(ctx); err != nil {
		t.Errorf("reader listing its vault: %v", err)
	}
	if err := reader.Vault("a").LoadDedup(ctx); status(err) != http.StatusForbidden || !errors.Is(err, api.ErrForbidden) {
		t.Errorf("reader asking for backup parameters: %v, want 403", err)
	}
	if _, err := reader.CreateVault(ctx, "c"); status(err) != http.StatusForbidden {
		t.Errorf("reader creating a vault: %v, want 403", err)
	}

	opA := token(t, owner, "backup-operator", "a")
	op := env.Client(t, opA)
	if err := op.Vault("a").LoadDedup(ctx); err != nil {
		t.Errorf("operator on its vault: %v", err)
	}
	for _, call := range []func() error{
		func() error { return op.Vault("b").LoadDedup(ctx) },
		func() error { _, err := op.Vault("b").Snapshots(ctx); return err },
		func() error { _, err := op.Vault("b").Info(ctx); return err },
	} {
		if err := call(); status(err) != http.StatusForbidden {
			t.Errorf("vault-a operator on vault b: %v, want 403", err)
		}
	}
	if _, err := op.Tokens(ctx); status(err) != http.StatusForbidden {
		t.Errorf("operator listing tokens: %v, want 403", err)
	}

	// Revocation is effective on the next request.
	toks, err := owner.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var opID string
	for _, tk := range toks {
		if tk.Secret != "" {
			t.Errorf("token list shows a secret")
		}
		if tk.Role == "backup-operator" {
			opID = tk.ID
		}
	}
	if _, err := owner.RevokeToken(ctx, opID); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Vault("a").Snapshots(ctx); status(err) != http.StatusUnauthorized {
		t.Errorf("revoked token: %v, want 401", err)
	}

	// Expiry, on the server's clock.
	exp, err := owner.CreateToken(ctx, api.CreateToken{Name: "short", Role: "backup-reader", Vault: "a", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	short := env.Client(t, exp.Secret)
	if _, err := short.Vault("a").Snapshots(ctx); err != nil {
		t.Errorf("fresh expiring token: %v", err)
	}
	env.Clock.Add(int64(2 * time.Hour))
	if _, err := short.Vault("a").Snapshots(ctx); status(err) != http.StatusUnauthorized {
		t.Errorf("expired token: %v, want 401", err)
	}
}

// TestRoutesDeclarePermissions walks every endpoint × every role against
// the permission table (docs/security.md): every route but /healthz and
// /v1/login names a permission; a request without a token gets 401; for
// each role, once as a token carrying it and once as a principal holding
// it, a request gets 403 exactly when the role lacks the route's
// permission. An endpoint added without a permission fails here.
func TestRoutesDeclarePermissions(t *testing.T) {
	ctx := context.Background()
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken)
	if _, err := owner.CreateVault(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	type actor struct {
		role  authn.Role
		token string
	}
	var actors []actor
	for _, role := range authn.Roles() {
		scope := ""
		if role == authn.RoleBackupOperator || role == authn.RoleBackupReader {
			scope = "a"
		}
		// A token carrying the role...
		var tok string
		if role == authn.RoleSecurityApprover {
			var err error
			if tok, _, err = server.IssueApproverToken(ctx, env.DataDir, "approver", time.Time{}, time.Now()); err != nil {
				t.Fatal(err)
			}
		} else {
			tok = token(t, owner, string(role), scope)
		}
		actors = append(actors, actor{role, tok})
		// ...and a principal holding it.
		name := "p-" + string(role)
		if role == authn.RoleSecurityApprover {
			// Only an approver's own login carries the role: no token
			// minted through the API does.
			if _, err := owner.CreatePrincipal(ctx, api.CreatePrincipal{Name: name, Password: "approver-password"}); err != nil {
				t.Fatal(err)
			}
			if err := server.AssignApprover(ctx, env.DataDir, name, time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := server.SetPassword(ctx, env.DataDir, name, "approver-password", time.Now()); err != nil {
				t.Fatal(err)
			}
			lt, err := env.Client(t, "").Login(ctx, api.Login{Name: name, Password: "approver-password"})
			if err != nil {
				t.Fatal(err)
			}
			actors = append(actors, actor{role, lt.Secret})
			continue
		}
		if _, err := owner.CreatePrincipal(ctx, api.CreatePrincipal{Name: name}); err != nil {
			t.Fatal(err)
		}
		if _, err := owner.AssignRole(ctx, api.RoleAssignment{Principal: name, Role: string(role), Vault: scope}); err != nil {
			t.Fatal(err)
		}
		pt, err := owner.CreateToken(ctx, api.CreateToken{Name: name, Principal: name})
		if err != nil {
			t.Fatal(err)
		}
		actors = append(actors, actor{role, pt.Secret})
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: env.TLS}}
	defer hc.CloseIdleConnections()
	do := func(method, path, tok string) int {
		req, _ := http.NewRequest(method, env.URL+path, bytes.NewReader([]byte("{}")))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, rt := range env.Server.Routes() {
		method, path, _ := strings.Cut(rt.Pattern(), " ")
		if rt.Public() {
			if path != "/healthz" && path != "/v1/login" {
				t.Errorf("route %s is public", rt.Pattern())
			}
			continue
		}
		if rt.Permission() == "" {
			t.Errorf("route %s declares no permission", rt.Pattern())
			continue
		}
		path = strings.NewReplacer("{vault}", "a", "{id}", strings.Repeat("0", 64), "{ref}", "latest").Replace(path)
		if st := do(method, path, ""); st != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: status %d, want 401", method, path, st)
		}
		for i, a := range actors {
			allowed := authn.Allows(a.role, rt.Permission())
			st := do(method, path, a.token)
			kind := "token"
			if i%2 == 1 {
				kind = "principal"
			}
			if allowed && st == http.StatusForbidden || !allowed && st != http.StatusForbidden {
				t.Errorf("%s %s as %s %s: status %d, want allowed=%v", method, path, kind, a.role, st, allowed)
			}
		}
	}
}

// TestUploadVerifiesIDs: a blob whose content does not hash to its ID is
// refused, so an agent cannot plant data under another chunk's ID.
func TestUploadVerifiesIDs(t *testing.T) {
	ctx := context.Background()
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken)
	v := operatorVault(t, env, owner, "a")
	codec := format.NewCodec()
	good := []byte("the real content")
	var forged vault.ID
	forged[0] = 1
	if _, err := v.SaveBlob(ctx, vault.DataBlob, forged, codec.Encode(nil, good), len(good)); err != nil {
		t.Fatal(err)
	}
	err := v.Flush(ctx)
	if status(err) != http.StatusBadRequest {
		t.Fatalf("forged blob: %v, want 400", err)
	}
	eng, _ := env.Server.Engine(ctx, "a")
	if eng.Has(vault.DataBlob, forged) {
		t.Error("the forged blob was stored")
	}
}

// TestBackupRestoreOverTLS backs up a directory through the client,
// restores it, and runs check --read-data on the server.
func TestBackupRestoreOverTLS(t *testing.T) {
	ctx := context.Background()
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken)
	v := operatorVault(t, env, owner, "a")
	src := t.TempDir()
	for i, n := range []int{0, 10, 100_000, 3 << 20} {
		data := bytes.Repeat([]byte{byte('a' + i)}, n)
		if err := os.WriteFile(filepath.Join(src, "f"+string(rune('0'+i))), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot.BytesAdded == 0 {
		t.Error("first backup added nothing")
	}
	again, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Snapshot.BytesAdded > 4096 {
		t.Errorf("unchanged re-run added %d bytes", again.Snapshot.BytesAdded)
	}
	snap, err := v.FindSnapshot(ctx, "latest")
	if err != nil || snap.ID != again.Snapshot.ID {
		t.Fatalf("latest: %v %v", snap.ID, err)
	}
	dst := t.TempDir()
	if _, err := agent.Restore(ctx, v, snap.Tree, agent.RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		name := "f" + string(rune('0'+i))
		want, _ := os.ReadFile(filepath.Join(src, name))
		got, err := os.ReadFile(filepath.Join(dst, src, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs after restore: %v", name, err)
		}
	}
	rep, err := v.Check(ctx, true, nil)
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("check --read-data: %v %v", rep.Errors, err)
	}
}

// TestNoPlaintext: the listener speaks only TLS.
func TestNoPlaintext(t *testing.T) {
	env := servertest.Start(t)
	plain := strings.Replace(env.URL, "https://", "http://", 1)
	resp, err := http.Get(plain + "/healthz")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(body), "ok") && !strings.Contains(string(body), "HTTPS") {
			t.Fatalf("plain HTTP got %s %q", resp.Status, body)
		}
	}
	old := &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11, RootCAs: env.TLS.RootCAs}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: old}}
	if _, err := c.Get(env.URL + "/healthz"); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}
}

// TestBatchedRead: many blobs in one answer, in order; a blob the vault
// lacks gets a failed record that ends the client's batch with not found.
func TestBatchedRead(t *testing.T) {
	ctx := context.Background()
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken)
	v := operatorVault(t, env, owner, "a")
	eng, _ := env.Server.Engine(ctx, "a")
	codec := format.NewCodec()
	var ids []vault.ID
	var blobs [][]byte
	for i := range 5 {
		b := bytes.Repeat([]byte{byte(i)}, 1000*(i+1))
		id := eng.BlobID(b)
		if _, err := v.SaveBlob(ctx, vault.DataBlob, id, codec.Encode(nil, b), len(b)); err != nil {
			t.Fatal(err)
		}
		ids, blobs = append(ids, id), append(blobs, b)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var got int
	if err := v.LoadBlobs(ctx, vault.DataBlob, ids, func(i int, data []byte) error {
		if i != got || !bytes.Equal(data, blobs[i]) {
			t.Errorf("record %d (expected %d) differs", i, got)
		}
		got++
		return nil
	}); err != nil || got != len(ids) {
		t.Fatalf("batched read: %d of %d, %v", got, len(ids), err)
	}
	var missing vault.ID
	missing[0] = 7
	withHole := []vault.ID{ids[0], missing, ids[1]}
	got = 0
	err := v.LoadBlobs(ctx, vault.DataBlob, withHole, func(int, []byte) error { got++; return nil })
	if !errors.Is(err, vault.ErrNotFound) || got != 1 {
		t.Errorf("batch with a missing blob: %d delivered, %v; want 1 and not found", got, err)
	}
}

// TestMetricsAndHealth: /healthz answers without a token; /metrics (owner
// token) counts requests per route and status, bytes uploaded and
// downloaded, and request latencies.
func TestMetricsAndHealth(t *testing.T) {
	ctx := context.Background()
	env := servertest.Start(t)
	if err := env.Client(t, "").Healthz(ctx); err != nil {
		t.Fatalf("healthz without a token: %v", err)
	}
	owner := env.Client(t, env.OwnerToken)
	v := operatorVault(t, env, owner, "a")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), bytes.Repeat([]byte("metrics "), 50_000), 0o644)
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Restore(ctx, v, res.Snapshot.Tree, agent.RestoreOptions{Target: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	v.Snapshots(ctx)
	if _, err := env.Client(t, "").Vault("a").Snapshots(ctx); err == nil {
		t.Fatal("no token, yet listed")
	}
	text, err := owner.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`coffer_http_requests_total{code="200",route="POST /v1/vaults/{vault}/blobs"}`,
		`coffer_http_requests_total{code="401",route="GET /v1/vaults/{vault}/snapshots"}`,
		`coffer_http_request_duration_seconds_bucket{route="POST /v1/vaults/{vault}/missing"`,
		"coffer_active_uploads 0",
		"go_goroutines",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, name := range []string{"coffer_upload_bytes_total", "coffer_download_bytes_total"} {
		if strings.Contains(text, name+" 0\n") || !strings.Contains(text, name+" ") {
			t.Errorf("%s should be above 0", name)
		}
	}
}

// TestCheckStreamsProgress: with a progress callback the server streams
// progress lines before the report, for the agent's live display.
func TestCheckStreamsProgress(t *testing.T) {
	ctx := context.Background()
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken)
	if _, err := owner.CreateVault(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	v := owner.Vault("a")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), bytes.Repeat([]byte("x"), 1000), 0o644)
	if _, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "h"}); err != nil {
		t.Fatal(err)
	}
	var events int
	rep, err := v.Check(ctx, true, func(api.CheckProgress) { events++ })
	if err != nil || len(rep.Errors) > 0 || rep.Snapshots != 1 || rep.Packs == 0 {
		t.Fatalf("streamed check: %+v %v", rep, err)
	}
	if events == 0 {
		t.Error("no progress event before the report")
	}
}

// operatorVault creates vault name and returns it as an agent with a
// backup-operator token sees it, dedup parameters loaded.
func operatorVault(t *testing.T, env *servertest.Env, owner *client.Client, name string) *client.Vault {
	t.Helper()
	v := env.Client(t, newVault(t, owner, name)).Vault(name)
	if err := v.LoadDedup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}
