package server

import (
	"context"

	"github.com/coffer-backup/coffer/internal/engine"
)

// VaultEngine gives tests the server's open engine of vault name, to
// write as a key holder would (an older server, for instance).
func (s *Server) VaultEngine(ctx context.Context, name string) (*engine.Vault, error) {
	return s.vault(ctx, name)
}

// RemoveVault deletes vault name as an approved deletion does.
func (s *Server) RemoveVault(ctx context.Context, name, who string) (string, error) {
	return s.removeVault(ctx, name, who)
}
