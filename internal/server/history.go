package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/vault"
)

// MaxClockSkew is how far ahead of the server's clock a client's
// snapshot time may be. The server records its own time anyway; a time
// further ahead means the client's clock is wrong (or forged), and the
// client is told so rather than silently corrected.
const MaxClockSkew = 5 * time.Minute

// newSnapshot turns the body of POST …/snapshots into the record to save,
// checking everything before anything is written. What the server owns
// it sets itself and never takes from the client:
//
//   - the ID (the engine draws it), and the deletion time and deleter (a
//     new snapshot is live): a body that sets them is refused;
//   - the time: the server's clock when it receives the snapshot, so that
//     "latest", retention, the agents' parent choice and the minimum
//     retention never order by a client's clock. A client time more than
//     MaxClockSkew ahead is refused (its clock is wrong); an earlier one
//     (the backup's start) is fine but not recorded;
//   - the host of an agent principal's snapshot: the agent's name, as
//     `source add` created it, whatever host the agent claims. Other
//     writers (user principals, role tokens) record the host they name,
//     except an agent's name, which only that agent may record under;
//     the audit entry of every saved snapshot names the token.
//
// The parent, when given, must be a snapshot of this vault with the
// same host and, for an agent, made since the agent was created.
func (s *Server) newSnapshot(q *request, body api.Snapshot) (vault.SnapshotRecord, error) {
	if body.ID != "" || body.Deleted != nil || body.DeletedBy != "" {
		return vault.SnapshotRecord{}, fmt.Errorf("%w: a snapshot's id, deleted and deleted_by are set by the server: leave them out", api.ErrBadRequest)
	}
	rec, err := body.Record()
	if err != nil {
		return rec, err
	}
	now := s.opt.Now().UTC()
	if !rec.Time.IsZero() {
		end := rec.Time
		if rec.Duration > 0 && end.Before(now) {
			end = end.Add(rec.Duration)
		}
		if ahead := end.Sub(now); ahead > MaxClockSkew {
			return rec, fmt.Errorf("%w: the snapshot's time %s is %s ahead of the server's clock (%s): fix this machine's clock (the server records the time it receives a snapshot, and refuses clients more than %s ahead)",
				api.ErrBadRequest, end.Format(time.RFC3339), ahead.Round(time.Second), now.Format(time.RFC3339), MaxClockSkew)
		}
	}
	rec.Time = now
	// A copy's claim of its original (docs/format.md §8.6) is recorded as
	// claimed (format.CheckSnapshot checks its form and range) and never
	// orders anything: the copy's time is now, as above. Its time may be
	// ahead of this clock (another machine stamped it).
	if rec.Host, err = s.snapshotHost(q, rec.Host); err != nil {
		return rec, err
	}
	// The dedup domain is the writer's own, never the one it names.
	da, err := s.domains(q)
	if err != nil {
		return rec, err
	}
	if rec.Domain != "" && rec.Domain != da.own {
		return rec, fmt.Errorf("%w: a snapshot's domain is the dedup domain of the token that saves it: leave it out", api.ErrBadRequest)
	}
	rec.Domain = da.own
	if err := s.checkHostWriter(q, rec.Host); err != nil {
		return rec, err
	}
	if err := format.CheckSnapshot(rec); err != nil {
		return rec, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if !rec.Parent.IsZero() {
		all, err := q.vault.AllSnapshots(q.ctx)
		if err != nil {
			return rec, err
		}
		since, err := s.agentSince(q)
		if err != nil {
			return rec, err
		}
		found := false
		for _, sn := range all {
			// SECURITY: a source's token sees only its own domain's
			// snapshots: another source's, named as parent, is answered
			// like an ID that names nothing (its host stays unsaid).
			if sn.ID == rec.Parent && da.ownSnapshot(sn) {
				if sn.Host != rec.Host {
					return rec, fmt.Errorf("%w: parent snapshot %s is of host %q, not %q: a snapshot's parent is one of its own host", api.ErrBadRequest, rec.Parent.Short(), sn.Host, rec.Host)
				}
				if sn.Time.Before(since) {
					return rec, fmt.Errorf("%w: parent snapshot %s predates agent %s (created %s): another writer made it, so the agent must not reuse its files (update coffer on the agent, which skips such parents)", api.ErrBadRequest, rec.Parent.Short(), rec.Host, since.Format(time.RFC3339))
				}
				if sn.Domain != rec.Domain {
					return rec, fmt.Errorf("%w: parent snapshot %s is of another dedup domain: a snapshot's parent is one of its own source", api.ErrBadRequest, rec.Parent.Short())
				}
				found = true
				break
			}
		}
		if !found {
			// Not found (404), not a bad request: an agent whose parent
			// was forgotten and pruned while it ran saves its snapshot
			// again without a parent (agent.Backup).
			return rec, fmt.Errorf("parent snapshot %s: %w among the snapshots of vault %s this token may see (forgotten and pruned while the backup ran?)", rec.Parent.Short(), vault.ErrNotFound, q.name)
		}
	}
	return rec, nil
}

// snapshotHost returns the host a snapshot saved by q's token records
// (see newSnapshot).
func (s *Server) snapshotHost(q *request, claimed string) (string, error) {
	bound, err := s.boundHost(q)
	if err != nil {
		return "", err
	}
	if bound != "" {
		if claimed != bound {
			q.note("claimed_host", claimed)
		}
		return bound, nil
	}
	if claimed == "" {
		return "", fmt.Errorf("%w: name the snapshot's host", api.ErrBadRequest)
	}
	// An agent's name in any case (or its ID): "WEB01" would sit next to
	// web01 in every listing.
	ps, err := s.cat.Principals(q.ctx)
	if err != nil {
		return "", err
	}
	for _, p := range ps {
		if p.Kind == "agent" && (strings.EqualFold(p.Name, claimed) || strings.EqualFold(p.ID, claimed)) {
			return "", fmt.Errorf("%w: host %q is the agent %s: only its own token records snapshots of it (back up with that token, or name another host)", api.ErrForbidden, claimed, p.Name)
		}
	}
	return claimed, nil
}

// checkHostWriter refuses a snapshot of host from a writer that may not
// forget snapshots (an operator) when the host's newest live snapshot was
// recorded by someone else: otherwise any operator's token could save
// snapshots of a machine that is not an agent (backed up with a user's or
// a role token) and push its genuine ones out of --keep-last, or become
// its `latest`. An agent's own name is bound already (snapshotHost). A
// host whose newest snapshot names no writer (recorded before writers
// were) or a writer token since revoked or expired is free to claim.
func (s *Server) checkHostWriter(q *request, host string) error {
	if bound, err := s.boundHost(q); err != nil || bound != "" {
		return err
	}
	if q.acc.Allows(authn.PermSnapshotDelete, q.name) {
		return nil // it may forget (and so replace) any snapshot anyway
	}
	all, writers, err := q.vault.SnapshotWriters(q.ctx)
	if err != nil {
		return err
	}
	var newest *vault.SnapshotRecord
	for i := range all {
		sn := &all[i]
		if sn.Host == host && sn.Deleted.IsZero() && (newest == nil || !sn.Time.Before(newest.Time)) {
			newest = sn
		}
	}
	if newest == nil {
		return nil
	}
	w, me := writers[newest.ID], q.principal()
	if w == "" || w == me || s.writerGone(q.ctx, w) {
		return nil
	}
	return fmt.Errorf("%w: host %q is backed up by %s (snapshot %s): only that writer records it, so that another operator cannot push its snapshots out of retention or become its latest; name this machine's own host, back it up as an agent (coffer source add), or have an owner forget %s's snapshots first", api.ErrForbidden, host, w, newest.ID.Short(), host)
}

// writerGone reports whether writer (a chain entry's principal) is a
// role token that is revoked or expired: its hosts are free again.
func (s *Server) writerGone(ctx context.Context, writer string) bool {
	rest, ok := strings.CutPrefix(writer, "token:")
	if !ok {
		return false
	}
	id, _, _ := strings.Cut(rest, " ")
	t, err := s.cat.Token(ctx, id)
	if err != nil {
		return false
	}
	return !t.Revoked.IsZero() || !t.Expires.IsZero() && !s.opt.Now().Before(t.Expires)
}

// boundHost returns the host q's token records snapshots under: its
// agent's name for an agent principal's token, "" for other tokens
// (which name their host).
func (s *Server) boundHost(q *request) (string, error) {
	if authn.Role(q.tok.Role) != authn.RolePrincipal {
		return "", nil
	}
	p, err := s.cat.PrincipalByID(q.ctx, q.tok.Principal)
	if err != nil {
		return "", fmt.Errorf("principal of token %s: %w", q.tok.ID, err)
	}
	if p.Kind != "agent" {
		return "", nil
	}
	return p.Name, nil
}

// checkSettingsChange checks the numbers of a settings change for range
// before they are converted (a minimum retention in seconds times 10^9
// must not wrap), and decodes a policy strictly: an unknown field (a
// typo) is refused, not read as a policy without that rule.
func checkSettingsChange(c api.SettingsChange) error {
	if c.MinRetentionSeconds != nil {
		if secs := *c.MinRetentionSeconds; secs < 0 || secs > int64(protect.MaxMinRetention/time.Second) {
			return fmt.Errorf("%w: min_retention_seconds %d: want 0 to %d (%s)", api.ErrBadRequest, secs, int64(protect.MaxMinRetention/time.Second), protect.FormatDuration(protect.MaxMinRetention))
		}
	}
	if c.Policy != nil && *c.Policy != "" {
		var p retention.Policy
		dec := json.NewDecoder(bytes.NewReader([]byte(*c.Policy)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return fmt.Errorf("%w: policy: %v", api.ErrBadRequest, err)
		}
		if dec.More() {
			return fmt.Errorf("%w: policy: more than one JSON value", api.ErrBadRequest)
		}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w: policy: %v", api.ErrBadRequest, err)
		}
		if g := p.GroupBy; g != 0 && g&retention.GroupByHost == 0 {
			return fmt.Errorf("%w: policy: --group-by %s: a stored policy groups by host, so that one machine's snapshots never count against another's (add host: --group-by host,%s)", api.ErrBadRequest, g, g)
		}
	}
	return nil
}

// agentSince returns when the agent of q's token was created, zero for
// tokens that are not an agent's. Snapshots of its host older than that
// were made by other writers (its name was not reserved yet): they are
// never its parent, whose unchanged files a backup reuses unread.
func (s *Server) agentSince(q *request) (time.Time, error) {
	if authn.Role(q.tok.Role) != authn.RolePrincipal {
		return time.Time{}, nil
	}
	ps, err := s.cat.Principals(q.ctx)
	if err != nil {
		return time.Time{}, err
	}
	for _, p := range ps {
		if p.ID == q.tok.Principal && p.Kind == "agent" {
			return p.Created, nil
		}
	}
	return time.Time{}, nil
}

// treeCountCache remembers what trees expand to (engine.ExpandTree), so
// that a backup's snapshot, which mostly names trees its parent named,
// costs a load only of its new trees. Trees are immutable, so an entry
// never goes stale; the cache is emptied when full.
type treeCountCache struct {
	mu sync.Mutex
	m  map[treeCountKey]engine.TreeCounts
}

type treeCountKey struct {
	vault, domain string
	tree          vault.ID
}

const maxTreeCounts = 1 << 17

// checkCounts refuses a snapshot whose record counts fewer files,
// directories or bytes than its trees expand to (engine.CheckCounts): a
// writer could otherwise record a few entries over trees that name one
// subtree many times over (a "tree bomb", 2^40 paths from 40 trees), and
// whoever lists or restores it would walk without end. The record is
// what `coffer snapshots` shows and what bounds the client's walks.
func (s *Server) checkCounts(q *request, rec vault.SnapshotRecord) error {
	w, err := q.vault.InDomain(rec.Domain)
	if err != nil {
		return err
	}
	c := &s.counts
	key := func(id vault.ID) treeCountKey { return treeCountKey{q.name, rec.Domain, id} }
	got, err := engine.ExpandTree(q.ctx, w, rec.Tree, func(id vault.ID) (engine.TreeCounts, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		tc, ok := c.m[key(id)]
		return tc, ok
	}, func(id vault.ID, tc engine.TreeCounts) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.m == nil || len(c.m) >= maxTreeCounts {
			c.m = map[treeCountKey]engine.TreeCounts{}
		}
		c.m[key(id)] = tc
	})
	if errors.Is(err, vault.ErrCorrupt) {
		return fmt.Errorf("%w: snapshot of tree %s: %v", api.ErrBadRequest, rec.Tree.Short(), err)
	}
	if err != nil {
		return err
	}
	if err := engine.CheckCounts(rec, got); err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	return nil
}
