package agent_test

import (
	"context"
	"testing"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// remoteMode makes newVault put the vault behind a vault server, with the
// agent talking to it over loopback TLS through the HTTPS client.
var remoteMode bool

func newRemoteVault(t testing.TB, chunking vault.ChunkerParams) *testVault {
	t.Helper()
	ctx := context.Background()
	env := servertest.Start(t)
	eng, err := env.Server.CreateVaultWith(ctx, "test", chunking)
	if err != nil {
		t.Fatal(err)
	}
	owner := env.Client(t, env.OwnerToken)
	tok, err := owner.CreateToken(ctx, api.CreateToken{Name: "agent", Role: "backup-operator", Vault: "test"})
	if err != nil {
		t.Fatal(err)
	}
	rv := env.Client(t, tok.Secret).Vault("test")
	if err := rv.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}
	return &testVault{Vault: eng, dir: server.VaultDir(env.DataDir, "test"), repo: rv}
}

// TestRemote runs the agent suite against a vault server: the same tests,
// the agent talking to the vault through the HTTPS client.
func TestRemote(t *testing.T) {
	remoteMode = true
	defer func() { remoteMode = false }()
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"Fidelity", TestFidelity},
		{"NothingReadableAtRest", TestNothingReadableAtRest},
		{"Incremental", TestIncremental},
		{"SafeRestoreRefusesMaliciousTrees", TestSafeRestoreRefusesMaliciousTrees},
		{"RestoreRefusesSymlinkInTarget", TestRestoreRefusesSymlinkInTarget},
		{"RestoreOverwrite", TestRestoreOverwrite},
		{"RestoreInclude", TestRestoreInclude},
		{"FileChangedWhileReadIsReported", TestFileChangedWhileReadIsReported},
		{"Diff", TestDiff},
		{"RestoreHardLinkNotToExistingFile", TestRestoreHardLinkNotToExistingFile},
		{"RestoreIncludeMissing", TestRestoreIncludeMissing},
		{"RestoreSparse", TestRestoreSparse},
	} {
		t.Run(tc.name, tc.f)
	}
}
