package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// localCopyKey creates or unwraps an agent's local-copy key (the key of
// its encrypted fast-restore cache, docs/operations.md "Local copies").
// The vault's key provider (its KEK: the platform key or the customer's)
// wraps it, bound to the vault and to the agent principal's ID, so that:
// only that agent's tokens get it back (another agent's, a user's or a
// reader's do not); a revoked token or principal gets nothing; and a
// revoked customer key stops every unwrap, which is what ends the agent's
// lease on its cache once the lease runs out.
func (s *Server) localCopyKey(q *request) error {
	// SECURITY: a source identity only. The binding is the principal's
	// ID, never its name (which an owner may give to another principal).
	// Another caller that may back up is answered 400 (the request cannot
	// be served for it), one that may not, 403 (the route's permission).
	if authn.Role(q.tok.Role) != authn.RolePrincipal {
		return fmt.Errorf("%w: local copies need an agent's token (coffer source add), not a token with its own role", api.ErrBadRequest)
	}
	p, err := s.cat.PrincipalByID(q.ctx, q.tok.Principal)
	if err != nil {
		return fmt.Errorf("principal of token %s: %w", q.tok.ID, err)
	}
	if p.Kind != "agent" {
		return fmt.Errorf("%w: local copies need an agent's token (coffer source add), not a user's", api.ErrBadRequest)
	}
	var in api.LocalCopyKeyRequest
	if err := readJSON(q.w, q.r, &in); err != nil {
		return err
	}
	if len(in.Wrapped) > api.MaxLocalCopyWrapped {
		return fmt.Errorf("%w: wrapped key over %d bytes", api.ErrBadRequest, api.MaxLocalCopyWrapped)
	}
	prov := q.vault.KeyProvider()
	aad := localCopyAAD(q.vault.Record().ID, p.ID)
	if len(in.Wrapped) == 0 {
		k := seal.NewRandomKey()
		defer k.Wipe()
		w, err := prov.Wrap(q.ctx, k[:], aad)
		if err != nil {
			return fmt.Errorf("wrap local-copy key: %w", err)
		}
		wb, err := json.Marshal(w)
		if err != nil {
			return err
		}
		q.note("local_copy_key", "new")
		writeJSON(q.w, http.StatusOK, api.LocalCopyKey{Key: k[:], Wrapped: wb})
		return nil
	}
	var w vault.WrappedKey
	if err := json.Unmarshal(in.Wrapped, &w); err != nil {
		return fmt.Errorf("%w: wrapped key: %v", api.ErrBadRequest, err)
	}
	if cur := prov.Current(); w.KEK.Provider != cur.Provider || w.KEK.KeyID != cur.KeyID {
		// The vault's KEK was replaced (a customer key taken into use, or
		// given up): the agent starts a new cache under the current one.
		return fmt.Errorf("%w: this local-copy key was wrapped under %s, which vault %s no longer uses: the agent's next backup with --local-copies starts a new cache", vault.ErrConflict, w.KEK, q.name)
	}
	key, err := prov.Unwrap(q.ctx, w, aad)
	if err != nil {
		if errors.Is(err, vault.ErrKeyUnavailable) {
			return fmt.Errorf("unwrap local-copy key: %w", err)
		}
		// SECURITY: a key wrapped for another agent, for another vault,
		// or under a key encryption key this vault no longer uses, or no
		// wrapped key at all: the same refusal, with nothing unwrapped.
		return fmt.Errorf("%w: this wrapped local-copy key is not this agent's in vault %s (or was wrapped under a key encryption key the vault no longer has): the agent's next backup with --local-copies starts a new cache", vault.ErrConflict, q.name)
	}
	defer clear(key)
	if len(key) != seal.KeySize {
		return fmt.Errorf("%w: wrapped local-copy key holds %d bytes, not %d", api.ErrForbidden, len(key), seal.KeySize)
	}
	q.note("local_copy_key", "unwrap")
	writeJSON(q.w, http.StatusOK, api.LocalCopyKey{Key: key, Wrapped: in.Wrapped})
	return nil
}

// localCopyAAD binds a wrapped local-copy key to its vault and agent. Its
// purpose ("local-copy-key\x00" and the agent's ID) differs from every
// purpose the keyring's keys use ("root", "dek", "probe"), so a wrapped
// root secret or DEK can never be unwrapped through this route.
func localCopyAAD(vaultID vault.ID, principalID string) []byte {
	return seal.KeyAAD(vaultID, "local-copy-key\x00"+principalID, 1)
}
