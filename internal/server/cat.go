package server

import (
	"fmt"
	"net/http"

	"github.com/coffer-backup/coffer/internal/api"
)

// catObject answers coffer cat config and coffer cat keyring through the
// server: the vault's decoded config, or its current keyring generation
// described without its secrets (format.KeyringInfo has no field for a
// root secret, a wrapped DEK or a MAC). Key metadata: the route needs
// key.read, which owners and key officers hold and readers and operators
// do not. Snapshots and trees are not served here: coffer cat reads them
// through the snapshot and tree routes, with vault.read, as ls does.
func (s *Server) catObject(q *request) error {
	switch kind := q.r.PathValue("kind"); kind {
	case "config":
		writeJSON(q.w, http.StatusOK, q.vault.Config())
	case "keyring":
		writeJSON(q.w, http.StatusOK, q.vault.KeyringInfo())
	default:
		return fmt.Errorf("%w: %q is not config or keyring", api.ErrBadRequest, kind)
	}
	return nil
}
