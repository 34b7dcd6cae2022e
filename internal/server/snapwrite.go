package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

// retag replaces a snapshot by one with changed tags (engine.Replace):
// the server applies the change to the tags it holds and copies every
// other field from the verified original, so a retag can neither date
// nor host a snapshot. It forgets the original, so it needs
// snapshot.delete and obeys the minimum retention.
func (s *Server) retag(q *request) error {
	var body api.Retag
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	ids, err := parseIDs([]string{body.ID})
	if err != nil {
		return err
	}
	// Counted before any work: the result is checked again in full.
	n := len(body.Add) + len(body.Remove)
	if body.Set != nil {
		n += len(*body.Set)
	}
	if n > 3*format.MaxSnapshotTags {
		return fmt.Errorf("%w: %d tags named: at most %d", api.ErrBadRequest, n, 3*format.MaxSnapshotTags)
	}
	if body.Set == nil && len(body.Add)+len(body.Remove) == 0 {
		return fmt.Errorf("%w: give tags to set, add or remove", api.ErrBadRequest)
	}
	q.note("snapshot", body.ID)
	if err := s.ownSnapshots(q, ids); err != nil {
		return err
	}
	c := engine.TagChange{Set: body.Set, Add: body.Add, Remove: body.Remove}
	n2, old, err := q.vault.Retag(q.ctx, ids[0], c, q.principal())
	switch {
	case errors.Is(err, format.ErrInvalidSnapshot), errors.Is(err, engine.ErrUnchanged):
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	case err != nil:
		return err
	}
	return s.replaced(q, n2, old)
}

// rewrite replaces a snapshot by one without what the patterns match.
// The server rewrites the trees itself from the verified original (the
// client sends patterns, never a tree), and engine.Replace checks again
// that the new tree is part of the original. It forgets the original:
// snapshot.delete and the minimum retention, as for retag.
func (s *Server) rewrite(q *request) error {
	var body api.Rewrite
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	ids, err := parseIDs([]string{body.ID})
	if err != nil {
		return err
	}
	if len(body.Patterns) == 0 || len(body.Patterns) > api.MaxRewritePatterns {
		return fmt.Errorf("%w: %d patterns: give 1 to %d", api.ErrBadRequest, len(body.Patterns), api.MaxRewritePatterns)
	}
	rules := agent.ExcludeRules{}
	for _, p := range body.Patterns {
		rules.Patterns = append(rules.Patterns, agent.ExcludePattern{Pattern: p.Pattern, IgnoreCase: p.IgnoreCase, Source: "--exclude"})
	}
	match, err := rules.Matcher()
	if err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	q.note("snapshot", body.ID)
	q.note("patterns", fmt.Sprint(len(body.Patterns)))
	if err := s.ownSnapshots(q, ids); err != nil {
		return err
	}
	orig, err := q.vault.FindSnapshot(q.ctx, body.ID)
	if err != nil {
		return err
	}
	// The rule of forget first, so that a refused rewrite writes no tree.
	settings, err := q.vault.Settings(q.ctx)
	if err != nil {
		return err
	}
	if err := protect.Forget(settings, orig, s.opt.Now().UTC()); err != nil {
		return err
	}
	root, changed, err := q.vault.RewriteTree(q.ctx, orig, match)
	if err != nil {
		return err
	}
	if !changed {
		return fmt.Errorf("%w: snapshot %s: no entry matches the patterns: %v", api.ErrBadRequest, orig.ID.Short(), engine.ErrUnchanged)
	}
	if err := q.vault.Flush(context.WithoutCancel(q.ctx)); err != nil {
		s.dropVault(q.name)
		return err
	}
	n, old, err := q.vault.Replace(q.ctx, orig.ID, func(o vault.SnapshotRecord) (engine.Derived, error) {
		return engine.Derived{Tags: o.Tags, Tree: root}, nil
	}, q.principal())
	switch {
	case errors.Is(err, format.ErrInvalidSnapshot), errors.Is(err, engine.ErrUnchanged):
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	case err != nil:
		return err
	}
	return s.replaced(q, n, old)
}

// replaced answers a replacement and records it in the audit entry.
func (s *Server) replaced(q *request, n, old vault.SnapshotRecord) error {
	q.note("new_snapshot", n.ID.String())
	q.note("tags", strings.Join(n.Tags, ","))
	q.note("chain", q.vault.LastChainHead().String())
	settings, err := q.vault.Settings(q.ctx)
	if err != nil {
		return err
	}
	q.log.Info("snapshot replaced", "vault", q.name, "snapshot", old.ID.Short(), "by", n.ID.Short(), "token", q.tok.ID)
	writeJSON(q.w, http.StatusOK, api.Replaced{Snapshot: api.FromSnapshot(n), Original: api.FromSnapshot(old), RecoverableUntil: protect.Expiry(settings, old.Deleted)})
	return nil
}
