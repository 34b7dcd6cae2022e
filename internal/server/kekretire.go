package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/vault"
)

// retireRetry is how long the server waits before it tries again to
// retire platform key versions after a vault kept it from doing so.
const retireRetry = time.Hour

// retireState says whether the platform key file may hold versions that
// nothing needs any more (after a rotation, a switch to a customer key,
// or at start), and when to try again after a blocked attempt.
type retireState struct {
	mu      sync.Mutex
	pending bool
	next    time.Time
	blocked map[string]string // vault → the reason last recorded in its key log
	// settled is the platform key's version list as the last completed
	// retirement left it: a list that differs, with more than the
	// current version, makes a retirement pending.
	settled string
}

// markRetire asks the next Maintain to retire unneeded platform key
// versions.
func (s *Server) markRetire() {
	s.retire.mu.Lock()
	s.retire.pending = true
	s.retire.next = time.Time{}
	s.retire.mu.Unlock()
}

// RetireReport says what a retirement of platform key versions did.
type RetireReport struct {
	Current int              // the current version, never deleted
	Deleted []int            // versions deleted from the key file
	Needed  map[int][]string // version → the vaults whose keyring still needs it
	// Blocked lists the vaults that could not be read or rewrapped, each
	// with why; while any is listed, nothing is deleted.
	Blocked []string
}

// maybeRetire runs RetirePlatformKeys when a retirement is pending and
// its retry time has come.
func (s *Server) maybeRetire(ctx context.Context) error {
	now := s.opt.Now()
	// Replicas share the platform key (a key file, or a shared catalog's
	// rows): another one may have rotated it and died before it rewrapped
	// every vault and retired the old version, a job this server then
	// completes. The versions as they are now decide.
	if err := s.keys.Refresh(); err != nil {
		return fmt.Errorf("retire platform key versions: read the platform key: %w", err)
	}
	versions := fmt.Sprint(s.keys.Versions())
	s.retire.mu.Lock()
	if len(s.keys.Versions()) > 1 && versions != s.retire.settled {
		s.retire.pending = true
	}
	due := s.retire.pending && !now.Before(s.retire.next)
	s.retire.mu.Unlock()
	if !due {
		return nil
	}
	rep, err := s.RetirePlatformKeys(ctx)
	s.retire.mu.Lock()
	defer s.retire.mu.Unlock()
	if err != nil || len(rep.Blocked) > 0 {
		s.retire.next = now.Add(retireRetry)
		return err
	}
	s.retire.pending = false
	s.retire.settled = fmt.Sprint(s.keys.Versions())
	return nil
}

// RetirePlatformKeys deletes from the server's platform key file every
// version that no vault needs: it first rewraps each vault still wrapped
// under an older version (opening those not open), then asks each vault
// under DATA/vaults which KEKs its current keyring generation may need
// (engine.KEKsInUse: the catalog's anchored generation, and any newer one
// in the store). SECURITY: a vault that cannot be read or rewrapped (its
// key unavailable, its store or catalog damaged) keeps every version:
// nothing is deleted, the vault's key log says why, and the error names
// it. A deleted version is gone for good: a copy of a vault's store and
// catalog saved while it was wrapped under that version never opens
// again, which is the point (docs/keys.md).
func (s *Server) RetirePlatformKeys(ctx context.Context) (RetireReport, error) {
	rep := RetireReport{Needed: map[int][]string{}}
	cur, err := strconv.Atoi(s.keys.Current().Version)
	if err != nil {
		return rep, fmt.Errorf("retire platform key versions: current version %q: %w", s.keys.Current().Version, err)
	}
	rep.Current = cur
	versions := s.keys.Versions()
	if len(versions) <= 1 {
		return rep, nil
	}
	names, strange, err := s.vaultNames(ctx)
	if err != nil {
		return rep, fmt.Errorf("retire platform key versions: %w", err)
	}
	for _, name := range strange {
		// Not a vault the server made; it may hold one all the same.
		rep.Blocked = append(rep.Blocked, fmt.Sprintf("%s: not a vault name this server uses: move it out of %s", name, filepath.Join(s.opt.DataDir, "vaults")))
	}
	for _, name := range names {
		need, err := s.platformVersionsOf(ctx, name)
		if err == nil && slices.ContainsFunc(need, func(v int) bool { return v != cur }) {
			// Wrapped under an older version: rewrap it under the current
			// one (opening it rewraps it; an open one is rewrapped here).
			if eng, oerr := s.vault(ctx, name); oerr != nil {
				err = oerr
			} else if rerr := s.rewrapPlatform(ctx, eng); rerr != nil {
				err = rerr
			} else {
				need, err = s.platformVersionsOf(ctx, name)
			}
			if err == nil && slices.ContainsFunc(need, func(v int) bool { return v != cur }) {
				err = fmt.Errorf("still wrapped under platform key v%d after the rewrap", need[0])
			}
		}
		if err == nil {
			err = s.removeStaleKeyrings(ctx, name)
		}
		if err != nil {
			rep.Blocked = append(rep.Blocked, fmt.Sprintf("%s: %v", name, err))
			s.retireBlocked(ctx, name, err)
			continue
		}
		s.retire.mu.Lock()
		delete(s.retire.blocked, name)
		s.retire.mu.Unlock()
		for _, v := range need {
			rep.Needed[v] = append(rep.Needed[v], name)
		}
	}
	if len(rep.Blocked) > 0 {
		s.log.Warn("platform key versions kept: some vaults could not be read or rewrapped, and may still need them", "blocked", strings.Join(rep.Blocked, "; "))
		return rep, fmt.Errorf("retire platform key versions: every version kept, because %d vault(s) could not be read or rewrapped: %s", len(rep.Blocked), strings.Join(rep.Blocked, "; "))
	}
	var drop []int
	for _, v := range versions {
		if _, needed := rep.Needed[v.Version]; !needed && v.Version != cur {
			drop = append(drop, v.Version)
		}
	}
	if rep.Deleted, err = s.keys.Retire(drop); err != nil {
		s.log.Error("could not retire platform key versions", "err", err)
		return rep, err
	}
	if len(rep.Deleted) > 0 {
		vs := make([]string, len(rep.Deleted))
		for i, v := range rep.Deleted {
			vs[i] = "v" + strconv.Itoa(v)
		}
		detail := fmt.Sprintf("platform key %s: versions %s deleted from %s: no vault's keyring needs them (current v%d)", s.keys.ID(), strings.Join(vs, ", "), s.keys.Path(), cur)
		s.auditServer(ctx, "", "key.kek-retire", detail, true)
		s.log.Info("platform key versions retired", "key", s.keys.ID(), "deleted", strings.Join(vs, ","), "current", cur)
	}
	return rep, nil
}

// removeStaleKeyrings deletes the keyring generations of vault name
// older than its current one that an older version of the platform key
// wraps: a rewrap cut short (a replica killed after it anchored the new
// generation) leaves them, and the version they need would then be
// deleted with them still in the store. The vault is opened only when
// its store holds such a generation.
func (s *Server) removeStaleKeyrings(ctx context.Context, name string) error {
	rec, err := s.cat.Vault(ctx, name)
	if errors.Is(err, vault.ErrNotFound) {
		return nil // not in the catalog: no anchor, every generation counts already
	}
	if err != nil {
		return err
	}
	st, err := s.openStore(ctx, name, true)
	if err != nil {
		return err
	}
	refs, err := engine.StaleKEKs(ctx, st, s.cat, rec.ID)
	st.Close()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(refs, func(r vault.KeyRef) bool {
		return r.Provider == platform.Provider && r.KeyID == s.keys.ID() && r != s.keys.Current()
	}) {
		return nil
	}
	eng, err := s.vault(ctx, name)
	if err != nil {
		return err
	}
	n, err := eng.RemoveStaleKeyrings(ctx)
	if n > 0 {
		s.log.Info("older keyring generations under another key removed", "vault", name, "generations", n)
	}
	return err
}

// platformVersionsOf lists the versions of the server's platform key that
// vault name's keyring may still need.
func (s *Server) platformVersionsOf(ctx context.Context, name string) ([]int, error) {
	st, err := s.openStore(ctx, name, true)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var cat vault.Catalog = s.cat
	var id vault.ID
	if rec, err := s.cat.Vault(ctx, name); err == nil {
		id = rec.ID
	} else if errors.Is(err, vault.ErrNotFound) {
		// A store the catalog does not know (a deletion that could not
		// remove it): its own config names it, and with no anchor every
		// generation counts.
		cfg, _, ierr := engine.Inspect(ctx, st)
		if ierr != nil {
			return nil, ierr
		}
		if id, err = vault.ParseID(cfg.ID); err != nil {
			return nil, err
		}
		cat = nil
	} else {
		return nil, err
	}
	refs, err := engine.KEKsInUse(ctx, st, cat, id)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, r := range refs {
		if r.Provider != platform.Provider || r.KeyID != s.keys.ID() {
			continue // a customer key, or another platform key: not in this file
		}
		v, err := strconv.Atoi(r.Version)
		if err != nil {
			return nil, fmt.Errorf("%w: keyring names platform key version %q", vault.ErrCorrupt, r.Version)
		}
		out = append(out, v)
	}
	sort.Ints(out)
	return out, nil
}

// retireBlocked records in vault name's key log that it kept the server
// from retiring platform key versions, once per reason.
func (s *Server) retireBlocked(ctx context.Context, name string, err error) {
	s.retire.mu.Lock()
	if s.retire.blocked == nil {
		s.retire.blocked = map[string]string{}
	}
	same := s.retire.blocked[name] == err.Error()
	s.retire.blocked[name] = err.Error()
	s.retire.mu.Unlock()
	if same {
		return
	}
	rec, rerr := s.cat.Vault(ctx, name)
	if rerr != nil {
		return // no key log: the warning and the error say it
	}
	s.keyEvent(ctx, rec.ID, serverPrincipal, vault.KeyEventKEKRetire, s.keys.Current().String(),
		"older platform key versions kept: this vault could not be read or rewrapped and may still need one: "+err.Error(), false)
}
