package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

func wireSnapshots(ss []vault.SnapshotRecord) []api.Snapshot {
	out := make([]api.Snapshot, 0, len(ss))
	for _, s := range ss {
		out = append(out, api.FromSnapshot(s))
	}
	return out
}

// deletedSnapshots lists the vault's soft-deleted snapshots.
func (s *Server) deletedSnapshots(q *request) error {
	da, err := s.domains(q)
	if err != nil {
		return err
	}
	all, err := q.vault.AllSnapshots(q.ctx)
	if err != nil {
		return err
	}
	var del []vault.SnapshotRecord
	for _, sn := range all {
		if !sn.Deleted.IsZero() && da.ownSnapshot(sn) {
			del = append(del, sn)
		}
	}
	writeJSON(q.w, http.StatusOK, wireSnapshots(del))
	return nil
}

func parseIDs(ids []string) ([]vault.ID, error) {
	out := make([]vault.ID, 0, len(ids))
	for _, s := range ids {
		id, err := vault.ParseID(s)
		if err != nil {
			return nil, fmt.Errorf("%w: snapshot id %q: %v", api.ErrBadRequest, s, err)
		}
		out = append(out, id)
	}
	return out, nil
}

func (s *Server) forget(q *request) error {
	var body api.Forget
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	if len(body.IDs) == 0 {
		return fmt.Errorf("%w: name the snapshots to forget", api.ErrBadRequest)
	}
	ids, err := parseIDs(body.IDs)
	if err != nil {
		return err
	}
	q.note("snapshots", strings.Join(body.IDs, ","))
	if err := s.ownSnapshots(q, ids); err != nil {
		return err
	}
	done, err := q.vault.Forget(q.ctx, ids, q.principal())
	if err != nil {
		return err
	}
	q.note("chain", q.vault.LastChainHead().String())
	settings, err := q.vault.Settings(q.ctx)
	if err != nil {
		return err
	}
	q.log.Info("snapshots forgotten", "vault", q.name, "count", len(done), "token", q.tok.ID)
	writeJSON(q.w, http.StatusOK, api.Forgotten{Forgotten: wireSnapshots(done), RecoverableUntil: protect.Expiry(settings, s.opt.Now().UTC())})
	return nil
}

func (s *Server) undelete(q *request) error {
	var body api.Undelete
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	ids, err := parseIDs([]string{body.ID})
	if err != nil {
		return err
	}
	q.note("snapshot", body.ID)
	if err := s.ownSnapshots(q, ids); err != nil {
		return err
	}
	sn, err := q.vault.Undelete(q.ctx, ids[0], q.principal())
	if err != nil {
		return err
	}
	q.note("chain", q.vault.LastChainHead().String())
	writeJSON(q.w, http.StatusOK, api.FromSnapshot(sn))
	return nil
}

func (s *Server) prune(q *request) error {
	var body api.Prune
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("dry_run", fmt.Sprint(body.DryRun))
	if err := s.notConfined(q, "prune"); err != nil {
		return err
	}
	if !body.DryRun {
		// One prune of a vault at a time, across every server sharing the
		// catalog.
		unlock, ok, err := s.cat.TryJobLock(q.ctx, "prune "+q.vault.Record().ID.String())
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: a prune of this vault is running already (on this or another server); try again when it is done", vault.ErrConflict)
		}
		defer unlock()
	}
	// Exclusive: every prune through a server takes the job lock above, so
	// a prune session still in the catalog is a dead server's.
	rep, err := q.vault.Prune(context.WithoutCancel(q.ctx), engine.PruneOptions{DryRun: body.DryRun, Principal: q.principal(), Exclusive: !body.DryRun})
	if err != nil {
		return err
	}
	q.note("packs_deleted", fmt.Sprint(rep.Deleted))
	q.note("snapshots_removed", fmt.Sprint(len(rep.Expired)))
	if len(rep.Expired) > 0 && !rep.DryRun {
		// The removals are chain entries: the audit log pins them too.
		q.note("chain", q.vault.LastChainHead().String())
	}
	writeJSON(q.w, http.StatusOK, wirePrune(rep))
	return nil
}

func wirePrune(r *engine.PruneReport) api.PruneReport {
	return api.PruneReport{DryRun: r.DryRun, Expired: wireSnapshots(r.Expired), StillDeleted: r.StillDeleted,
		Condemned: r.Condemned, CondemnedBytes: r.CondemnedBytes, Deleted: r.Deleted, DeletedBytes: r.DeletedBytes,
		Waiting: r.Waiting, WaitingBytes: r.WaitingBytes, Sessions: len(r.Sessions), Reprieved: r.Reprieved,
		Repacked: r.Repacked, RepackedBytes: r.RepackedBytes, PartlyUsed: r.PartlyUsed, UnusedBytes: r.UnusedBytes,
		Unwalkable: engine.UnwalkableStrings(r.Unwalkable), Incomplete: r.Incomplete}
}

func (s *Server) settings(q *request) error {
	st, err := q.vault.Settings(q.ctx)
	if err != nil {
		return err
	}
	writeJSON(q.w, http.StatusOK, api.FromSettings(st))
	return nil
}

// requestParams is what a request records to carry out its operation
// once approved.
type requestParams struct {
	Vault  string              `json:"vault,omitempty"`
	Change *api.SettingsChange `json:"change,omitempty"`
	Token  string              `json:"token,omitempty"` // token-revoke: the token's ID
	// role-assign, role-revoke: the principal's ID and the role.
	Principal string `json:"principal,omitempty"`
	Role      string `json:"role,omitempty"`
	// use-cmk: the customer key approved (its URI is in the server's key
	// configuration, never in the catalog: it may hold a PIN).
	KEK *vault.KeyRef `json:"kek,omitempty"`
	// repair-snapshots: the snapshots the approver is shown, the only
	// ones the approved repair touches.
	Snapshots []string `json:"snapshots,omitempty"`
	// ByToken is the ID of the token that made the request and Perm the
	// permission its route needed: when the request is approved, that
	// token must still be valid and still hold Perm, or the request is
	// void. People are the principals and tokens behind the requesting
	// token (Server.access), none of whom may decide it.
	ByToken string   `json:"by_token,omitempty"`
	Perm    string   `json:"perm,omitempty"`
	People  []string `json:"people,omitempty"`
}

// changeSettings changes the vault's settings; a critical change becomes
// a request for a security approver (202).
func (s *Server) changeSettings(q *request) error {
	var body api.SettingsChange
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	if err := checkSettingsChange(body); err != nil {
		return err
	}
	// The audit entry shows a policy as the flags that set it, never as
	// its stored JSON.
	note := body
	if body.Policy != nil {
		q.note("policy", engine.PolicyFlags(*body.Policy))
		note.Policy = nil
	}
	if b, err := json.Marshal(note); err == nil && string(b) != "{}" {
		q.note("change", string(b))
	}
	old, nw, c, err := q.vault.ChangeSettings(q.ctx, body.Apply, q.principal(), false)
	switch {
	case errors.Is(err, vault.ErrApprovalRequired):
		req, rerr := s.newRequest(q, "vault-set", strings.Join(c.Critical, "; "), requestParams{Vault: q.name, Change: &body})
		if rerr != nil {
			return rerr
		}
		writeJSON(q.w, http.StatusAccepted, api.SettingsResult{Settings: api.FromSettings(old), Request: &req})
		return nil
	case errors.Is(err, protect.ErrInvalid):
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	case err != nil:
		return err
	}
	s.objectLockChanged(q.ctx, q.name)
	writeJSON(q.w, http.StatusOK, api.SettingsResult{Settings: api.FromSettings(nw), Changed: engine.DescribeSettingsChange(old, nw)})
	return nil
}

func (s *Server) vaultEvents(q *request) error {
	if err := s.notConfined(q, "the event trail"); err != nil {
		return err
	}
	evs, err := q.vault.Events(q.ctx)
	if err != nil {
		return err
	}
	out := make([]api.VaultEvent, len(evs))
	for i, e := range evs {
		out[i] = api.VaultEvent{Time: e.Time, Principal: e.Principal, Event: e.Event, Detail: e.Detail, OK: e.OK}
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

// MaxPendingRequests is how many pending requests one requester may hold
// at once: approvers read every pending request, and a flood of them
// would hide the one that matters (and fill the catalog).
const MaxPendingRequests = 16

// newRequest records a multi-user authorization request for a critical
// operation, and the request event. Asking again for what the requester
// already has pending answers that request; a requester with
// MaxPendingRequests pending is refused (429) until some are decided or
// expire.
func (s *Server) newRequest(q *request, op, summary string, params requestParams) (api.Request, error) {
	var b [8]byte
	rand.Read(b[:])
	if params.Vault == "" {
		params.Vault = q.name
	}
	same, err := json.Marshal(params) // what is asked, before who asks
	if err != nil {
		return api.Request{}, err
	}
	params.ByToken, params.Perm, params.People = q.tok.ID, string(q.perm), q.people
	pb, err := json.Marshal(params)
	if err != nil {
		return api.Request{}, err
	}
	if prev, err := s.pendingOf(q, op, summary, string(same)); err != nil || prev != nil {
		if prev != nil {
			q.note("request", prev.ID)
			return *prev, nil
		}
		return api.Request{}, err
	}
	now := s.opt.Now().UTC()
	q.note("request", "req_"+hex.EncodeToString(b[:]))
	r := vault.Request{ID: "req_" + hex.EncodeToString(b[:]), Op: op, Params: string(pb), Summary: summary,
		Requester: q.principal(), Created: now, Expires: now.Add(vault.DefaultRequestTTL), State: vault.RequestPending}
	if q.vault != nil {
		r.Vault = q.vault.Record().ID
	} else if rec, err := s.cat.Vault(q.ctx, params.Vault); err == nil {
		r.Vault = rec.ID
	}
	if err := s.cat.AddRequest(q.ctx, r); err != nil {
		return api.Request{}, err
	}
	if !r.Vault.IsZero() {
		s.vaultEvent(q.ctx, r.Vault, q.principal(), vault.EventRequest, fmt.Sprintf("%s: %s (%s), expires %s", r.ID, op, summary, r.Expires.Format(time.RFC3339)), true)
	}
	q.log.Info("approval requested", "request", r.ID, "op", op, "vault", params.Vault, "token", q.tok.ID)
	return wireRequest(r), nil
}

// pendingOf returns the requester's pending request for the same
// operation (op, summary and what params record of it, same), or nil
// when there is none; it refuses a requester who holds
// MaxPendingRequests pending requests already. Void requests do not
// count.
func (s *Server) pendingOf(q *request, op, summary, same string) (*api.Request, error) {
	rs, err := s.cat.Requests(q.ctx)
	if err != nil {
		return nil, err
	}
	me := q.principal()
	pending := 0
	for _, r := range rs {
		if r.Requester != me || s.effectiveState(r) != vault.RequestPending {
			continue
		}
		if void, err := s.requestVoid(q.ctx, r); err != nil {
			return nil, err
		} else if void != "" {
			continue
		}
		var p requestParams
		if json.Unmarshal([]byte(r.Params), &p) == nil && r.Op == op && r.Summary == summary {
			p.ByToken, p.Perm, p.People = "", "", nil
			if b, err := json.Marshal(p); err == nil && string(b) == same {
				w := wireRequest(r)
				return &w, nil
			}
		}
		pending++
	}
	if pending >= MaxPendingRequests {
		q.w.Header().Set("Retry-After", "3600")
		return nil, fmt.Errorf("%w: %s has %d requests pending approval, the most one requester may have: wait until a security approver decides them or they expire, or ask them to reject those no longer wanted", api.ErrTooManyRequests, me, pending)
	}
	return nil, nil
}

// vaultEvent records a vault event; one the server causes by itself is
// also an audit entry, with params (when given) besides the vault's ID.
func (s *Server) vaultEvent(ctx context.Context, id vault.ID, principal, event, detail string, ok bool, params ...map[string]string) {
	if principal == policyPrincipal || principal == serverPrincipal {
		s.auditServer(ctx, id.String(), "vault."+event, detail, ok, params...)
	}
	if err := s.cat.AddEvent(ctx, vault.VaultEvent{Vault: id, Time: s.opt.Now().UTC(), Principal: principal, Event: event, Detail: detail, OK: ok}); err != nil {
		s.log.Error("could not record a vault event", "event", event, "err", err)
	}
}

func wireRequest(r vault.Request) api.Request {
	var p requestParams
	json.Unmarshal([]byte(r.Params), &p)
	return api.Request{ID: r.ID, Vault: p.Vault, Op: r.Op, Summary: r.Summary, Requester: r.Requester, Created: r.Created,
		Expires: r.Expires, State: string(r.State), Decider: r.Decider, Decided: r.Decided}
}

// effectiveState is a request's state with expiry applied.
func (s *Server) effectiveState(r vault.Request) vault.RequestState {
	if r.State == vault.RequestPending && !s.opt.Now().Before(r.Expires) {
		return vault.RequestExpired
	}
	return r.State
}

func (s *Server) listRequests(q *request) error {
	rs, err := s.cat.Requests(q.ctx)
	if err != nil {
		return err
	}
	want := q.r.URL.Query().Get("vault")
	all := q.r.URL.Query().Get("all") == "true"
	out := []api.Request{}
	for _, r := range rs {
		w := wireRequest(r)
		w.State = string(s.effectiveState(r))
		if w.State == string(vault.RequestPending) {
			void, err := s.requestVoid(q.ctx, r)
			if err != nil {
				return err
			}
			if void != "" {
				w.State, w.Result = stateVoid, void
			}
		}
		if want != "" && w.Vault != want {
			continue
		}
		if !all && w.State != string(vault.RequestPending) {
			continue
		}
		out = append(out, w)
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

func (s *Server) approve(q *request) error { return s.decide(q, vault.RequestApproved) }
func (s *Server) reject(q *request) error  { return s.decide(q, vault.RequestRejected) }

// decide approves or rejects a pending request; an approved one is
// carried out at once, as its requester, and the answer says how that
// went. Nobody decides their own request.
func (s *Server) decide(q *request, state vault.RequestState) error {
	id := q.r.PathValue("id")
	r, err := s.cat.Request(q.ctx, id)
	if err != nil {
		return fmt.Errorf("request %s: %w", id, err)
	}
	me := q.principal()
	var params requestParams
	json.Unmarshal([]byte(r.Params), &params)
	if r.Requester == me || shareAny(params.People, q.people) {
		return fmt.Errorf("%w: request %s is yours (made by you, as you, or through a token you issued): a different person must decide it", api.ErrForbidden, id)
	}
	if s.effectiveState(r) == vault.RequestExpired && r.State == vault.RequestPending {
		if err := s.cat.DecideRequest(q.ctx, id, vault.RequestExpired, "", s.opt.Now().UTC()); err != nil && !errors.Is(err, vault.ErrConflict) {
			q.log.Warn("could not record that a request expired", "request", id, "err", err)
		}
		return fmt.Errorf("%w: request %s expired at %s; ask for it again", vault.ErrConflict, id, r.Expires.Format(time.RFC3339))
	}
	now := s.opt.Now().UTC()
	if state == vault.RequestApproved && r.State == vault.RequestPending {
		void, err := s.requestVoid(q.ctx, r)
		if err != nil {
			return err
		}
		if void != "" {
			// Recorded as rejected by the server, with the reason: the
			// catalog has no state of its own for it.
			if err := s.cat.DecideRequest(q.ctx, id, vault.RequestRejected, "server: void, "+void, now); err != nil && !errors.Is(err, vault.ErrConflict) {
				return fmt.Errorf("request %s: %w", id, err)
			}
			if !r.Vault.IsZero() {
				s.vaultEvent(q.ctx, r.Vault, serverPrincipal, vault.EventReject, fmt.Sprintf("%s: %s (%s) requested by %s: void, %s", r.ID, r.Op, r.Summary, r.Requester, void), true)
			}
			return fmt.Errorf("%w: request %s is void and was not carried out: %s; the requester must ask again", vault.ErrConflict, id, void)
		}
	}
	if err := s.cat.DecideRequest(q.ctx, id, state, me, now); err != nil {
		return fmt.Errorf("request %s: %w", id, err)
	}
	r.State, r.Decider, r.Decided = state, me, now
	out := wireRequest(r)
	q.note("request_op", r.Op)
	q.note("requester", r.Requester)
	ev := vault.EventReject
	if state == vault.RequestApproved {
		ev = vault.EventApprove
		out.Result, err = s.carryOut(q.ctx, r)
		if err != nil {
			out.Result = "approved, but it failed: " + err.Error()
		}
	}
	if !r.Vault.IsZero() {
		detail := fmt.Sprintf("%s: %s (%s) requested by %s", r.ID, r.Op, r.Summary, r.Requester)
		if out.Result != "" {
			detail += ": " + out.Result
		}
		s.vaultEvent(q.ctx, r.Vault, me, ev, detail, err == nil)
	}
	q.log.Info("request decided", "request", id, "state", state, "token", q.tok.ID)
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

// stateVoid is the state a pending request is listed in when it can no
// longer be carried out (requestVoid); approving it records it rejected
// by the server.
const stateVoid = "void"

// requestVoid says why request r may no longer be carried out, "" when
// it may: the token that made it must still be active (not revoked, not
// expired) and still hold the permission the request needed, on its vault.
// A request that did not record its token (made by an older server) is
// void too.
func (s *Server) requestVoid(ctx context.Context, r vault.Request) (string, error) {
	var p requestParams
	if err := json.Unmarshal([]byte(r.Params), &p); err != nil || p.ByToken == "" || p.Perm == "" {
		return "it does not record the token that made it", nil
	}
	tok, err := s.cat.Token(ctx, p.ByToken)
	if errors.Is(err, vault.ErrNotFound) {
		return "the token that made it (" + p.ByToken + ") no longer exists", nil
	}
	if err != nil {
		return "", err
	}
	if !tok.Revoked.IsZero() {
		return "the token that made it (" + tok.ID + ") was revoked", nil
	}
	if !tok.Expires.IsZero() && !s.opt.Now().Before(tok.Expires) {
		return "the token that made it (" + tok.ID + ") has expired", nil
	}
	acc, who, _, err := s.access(ctx, tok)
	if errors.Is(err, authn.ErrUnauthenticated) {
		return "a token that issued the one that made it was revoked", nil
	}
	if errors.Is(err, vault.ErrNotFound) {
		return "the principal of the token that made it no longer exists", nil
	}
	if err != nil {
		return "", err
	}
	if !acc.Allows(authn.Permission(p.Perm), p.Vault) {
		return who + " no longer holds permission " + p.Perm, nil
	}
	return "", nil
}

// shareAny reports whether a and b have an element in common.
func shareAny(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// carryOut does what an approved request asked.
func (s *Server) carryOut(ctx context.Context, r vault.Request) (string, error) {
	var p requestParams
	if err := json.Unmarshal([]byte(r.Params), &p); err != nil {
		return "", fmt.Errorf("request %s: %w: params: %v", r.ID, vault.ErrCorrupt, err)
	}
	who := r.Requester + ", approved by " + r.Decider
	if r.Op == "vault-delete" {
		return s.removeVault(ctx, p.Vault, who)
	}
	switch r.Op {
	case "role-assign":
		a := vault.RoleAssignment{Principal: p.Principal, Role: p.Role, Created: s.opt.Now().UTC(), CreatedBy: who}
		if err := s.cat.AssignRole(ctx, a); err != nil {
			return "", err
		}
		return fmt.Sprintf("role %s assigned to %s", p.Role, p.Principal), nil
	case "role-revoke":
		if err := s.cat.RevokeRole(ctx, p.Principal, p.Role, ""); err != nil {
			return "", err
		}
		return fmt.Sprintf("role %s of %s revoked", p.Role, p.Principal), nil
	}
	if r.Op == "token-revoke" {
		if err := s.cat.RevokeToken(ctx, p.Token, s.opt.Now().UTC()); err != nil {
			return "", fmt.Errorf("token %s: %w", p.Token, err)
		}
		s.log.Info("token revoked", "id", p.Token, "by", who)
		return "token " + p.Token + " revoked", nil
	}
	eng, err := s.vault(ctx, p.Vault)
	if err != nil {
		return "", err
	}
	switch r.Op {
	case "vault-set":
		if p.Change == nil {
			return "", fmt.Errorf("request %s: no change recorded", r.ID)
		}
		old, nw, _, err := eng.ChangeSettings(ctx, p.Change.Apply, who, true)
		if err != nil {
			return "", err
		}
		s.objectLockChanged(ctx, p.Vault)
		return "changed: " + engine.DescribeSettingsChange(old, nw), nil
	case "use-pmk":
		before := eng.KeyInfo().KEK
		if err := s.usePMK(ctx, eng, who); err != nil {
			return "", err
		}
		return "keys rewrapped from " + before.String() + " to " + eng.KeyInfo().KEK.String(), nil
	case "use-cmk":
		return s.approvedCMK(ctx, eng, p.KEK, who)
	case "repair-snapshots":
		return carryOutRepair(ctx, eng, p, who)
	}
	return "", fmt.Errorf("request %s: unknown operation %q", r.ID, r.Op)
}

// deleteVault asks to delete the vault: forbidden while its immutability
// is enabled or locked and it holds snapshots; otherwise critical, so a
// request for a security approver (202).
func (s *Server) deleteVault(q *request) error {
	rec, err := s.cat.Vault(q.ctx, q.name)
	if err != nil {
		return vaultErr(q.name, err)
	}
	settings, err := s.verifiedSettings(q.ctx, q.name)
	if err != nil {
		return err
	}
	snaps, err := s.cat.Snapshots(q.ctx, rec.ID)
	if err != nil {
		return err
	}
	c, err := protect.VaultDelete(settings, len(snaps))
	if err != nil {
		s.vaultEvent(q.ctx, rec.ID, q.principal(), vault.EventVaultDelete, "refused: "+err.Error(), false)
		return err
	}
	req, err := s.newRequest(q, "vault-delete", fmt.Sprintf("%s %q (%d snapshots)", strings.Join(c.Critical, "; "), q.name, len(snaps)), requestParams{Vault: q.name})
	if err != nil {
		return err
	}
	writeJSON(q.w, http.StatusAccepted, struct {
		Request *api.Request `json:"request"`
	}{&req})
	return nil
}

// removeVault deletes an approved vault: the protection is checked again
// (it may have changed since the request), then the catalog marks the
// vault deleted and drops its snapshots and packs (its events stay), and
// its store is removed. Interrupted after the catalog step, the store
// directory is left behind under a name no vault can take again.
func (s *Server) removeVault(ctx context.Context, name, who string) (string, error) {
	rec, err := s.cat.Vault(ctx, name)
	if err != nil {
		return "", vaultErr(name, err)
	}
	settings, err := s.verifiedSettings(ctx, name)
	if err != nil {
		return "", err
	}
	snaps, err := s.cat.Snapshots(ctx, rec.ID)
	if err != nil {
		return "", err
	}
	if _, err := protect.VaultDelete(settings, len(snaps)); err != nil {
		return "", err
	}
	s.mu.Lock()
	if ov, ok := s.vaults[name]; ok {
		delete(s.vaults, name)
		ov.close()
	}
	err = s.cat.DeleteVault(ctx, rec.ID, s.opt.Now().UTC())
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	s.vaultEvent(ctx, rec.ID, who, vault.EventVaultDelete, fmt.Sprintf("vault %q deleted with %d snapshots", name, len(snaps)), true)
	if err := s.removeStore(ctx, name, rec.ID); err != nil {
		return "", fmt.Errorf("vault %q is deleted, but its store could not be removed: %w", name, err)
	}
	s.log.Info("vault deleted", "vault", name, "by", who)
	return fmt.Sprintf("vault %q deleted (%d snapshots)", name, len(snaps)), nil
}

// removeStore deletes vault name's store: every object of a store of its
// own or of an Options.OpenStore store, then the vault's directory. id is
// the deleted vault's: a store that holds another vault is left alone.
func (s *Server) removeStore(ctx context.Context, name string, id vault.ID) error {
	own, err := s.vaultStoreURL(ctx, name)
	if err != nil {
		return err
	}
	if own != "" || s.opt.OpenStore != nil {
		st, err := s.openStore(ctx, name, true)
		if err != nil {
			return err
		}
		defer st.Close()
		// SECURITY: the store emptied is the one the deleted vault's
		// engine checked, not whatever the catalog names now: a store
		// that holds another vault (a row edited since the vault was
		// opened) is refused. One that holds no vault at all (a removal
		// cut short after it deleted the config) is emptied.
		if cfg, _, err := engine.Inspect(ctx, st); err == nil {
			if got, perr := vault.ParseID(cfg.ID); perr != nil || got != id {
				return fmt.Errorf("vault %q: %w: its store holds vault %s, not %s: nothing was deleted from it", name, vault.ErrCorrupt, cfg.ID, id)
			}
		} else if !errors.Is(err, vault.ErrNotFound) {
			return fmt.Errorf("vault %q: its store holds no vault Coffer can read, so nothing was deleted from it: %w", name, err)
		}
		for _, t := range []vault.ObjectType{vault.PackObject, vault.SnapshotObject, vault.KeyObject, vault.ConfigObject} {
			err := st.List(ctx, t, func(oi vault.ObjectInfo) error {
				if err := st.Delete(ctx, oi.Handle); err != nil && !errors.Is(err, vault.ErrNotFound) {
					return err
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	if d := s.deployment(); d != nil {
		if err := d.SetVaultStore(ctx, name, nil); err != nil {
			return err
		}
	}
	return os.RemoveAll(VaultDir(s.opt.DataDir, name))
}

// verifiedSettings returns vault name's settings as its key holders wrote
// them (docs/format.md §8.4), opening its engine: a decision that deletes
// fails closed when they do not verify or the vault cannot be opened.
func (s *Server) verifiedSettings(ctx context.Context, name string) (vault.VaultSettings, error) {
	eng, err := s.vault(ctx, name)
	if err != nil {
		return vault.VaultSettings{}, err
	}
	return eng.Settings(ctx)
}
