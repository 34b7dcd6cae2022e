package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Dedup domains on the server (docs/format.md §1.3, docs/security.md).
// In a vault whose dedup scope is "source", a source's token (an agent
// principal's) is confined to its own domain: it gets that domain's keys
// from /dedup, its uploads are identified with them, its snapshots carry
// the domain, and it lists and reads only snapshots, trees and data of
// that domain. A blob proves its domain by its content: it hashes to its
// ID under the domain's key and no other, so every blob sent to such a
// token is hashed first. Other tokens back up into the vault-wide domain
// and read any domain they name (?domain=).

// domainAccess is what a request's token may do with dedup domains.
type domainAccess struct {
	// own is the domain the token's uploads are identified in and its
	// snapshots saved in: its source's, or "" (vault-wide).
	own string
	// confined: a source's token in a vault whose dedup scope is
	// "source": it reads its own domain only, and every blob it reads
	// is hashed to prove it.
	confined bool
}

// domains returns q's domainAccess (looked up once per request).
func (s *Server) domains(q *request) (domainAccess, error) {
	if q.dom != nil {
		return *q.dom, nil
	}
	var da domainAccess
	if authn.Role(q.tok.Role) == authn.RolePrincipal && q.name != "" {
		p, err := s.cat.PrincipalByID(q.ctx, q.tok.Principal)
		if err != nil {
			return da, fmt.Errorf("principal of token %s: %w", q.tok.ID, err)
		}
		if p.Kind == "agent" {
			if _, err := s.cat.Vault(q.ctx, q.name); err != nil {
				return da, fmt.Errorf("vault %q: %w", q.name, err)
			}
			// SECURITY: the scope a key holder chose, not what the
			// catalog says now (docs/format.md §8.4).
			st, err := s.verifiedSettings(q.ctx, q.name)
			if err != nil {
				return da, err
			}
			if st.DedupScope.OrDefault() == vault.DedupScopeSource {
				da = domainAccess{own: p.ID, confined: true}
			}
		}
	}
	q.dom = &da
	return da, nil
}

// readDomain returns the domain q reads in: a confined token's own
// (naming another is refused), else the one ?domain= names ("" when
// none).
func (s *Server) readDomain(q *request) (domainAccess, string, error) {
	da, err := s.domains(q)
	if err != nil {
		return da, "", err
	}
	d := q.r.URL.Query().Get("domain")
	if err := format.CheckDomain(d); err != nil {
		return da, "", fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if da.confined {
		if d != "" && d != da.own {
			return da, "", fmt.Errorf("%w: this source's token reads its own dedup domain (%s) only", api.ErrForbidden, da.own)
		}
		return da, da.own, nil
	}
	return da, d, nil
}

// ownSnapshot reports whether a token of da may see snapshot sn.
func (da domainAccess) ownSnapshot(sn vault.SnapshotRecord) bool {
	return !da.confined || sn.Domain == da.own
}

// keep returns the snapshot filter of da (nil: every snapshot).
func (da domainAccess) keep() func(vault.SnapshotRecord) bool {
	if !da.confined {
		return nil
	}
	return da.ownSnapshot
}

// notConfined refuses a route a confined token may not use, since its
// answer is about every source of the vault.
func (s *Server) notConfined(q *request, what string) error {
	da, err := s.domains(q)
	if err != nil {
		return err
	}
	if da.confined {
		return fmt.Errorf("%w: %s concerns every source of vault %s, whose dedup scope is \"source\": a source's token may not; use an operator's or owner's token", api.ErrForbidden, what, q.name)
	}
	return nil
}

// notInDomain is the error a confined token gets for a blob outside its
// domain: the same as for a blob the vault lacks, so that it learns
// nothing of other sources' blobs.
func notInDomain(t vault.BlobType, id vault.ID, own string) error {
	return fmt.Errorf("%s blob %s: %w among the blobs of source %s", t, id, vault.ErrNotFound, own)
}

// confinedErr maps a failed read of a confined token: a blob that does
// not hash to its ID in the token's domain is not found.
func confinedErr(err error, t vault.BlobType, id vault.ID, own string) error {
	if errors.Is(err, vault.ErrCorrupt) || errors.Is(err, vault.ErrNotFound) {
		return notInDomain(t, id, own)
	}
	return err
}

// snapshotIndex answers GET …/index?snapshot=REF: the index entries of
// the blobs that snapshot references (its trees and data), found by
// walking its trees in its domain.
func (s *Server) snapshotIndex(q *request, da domainAccess, ref string) error {
	sn, err := q.vault.FindSnapshotWhere(q.ctx, ref, da.keep())
	if err != nil {
		return err
	}
	view, err := q.vault.InDomain(sn.Domain)
	if err != nil {
		return err
	}
	var buf []byte
	seen := map[vault.ID]bool{}
	add := func(t vault.BlobType, id vault.ID) {
		if seen[id] {
			return
		}
		seen[id] = true
		if n, err := q.vault.BlobSize(t, id); err == nil {
			buf = api.AppendIndexEntry(buf, api.Ref{Type: t, ID: id}, n)
		}
	}
	var walk func(id vault.ID, depth int) error
	walk = func(id vault.ID, depth int) error {
		if seen[id] {
			return nil
		}
		if depth > maxTreeDepth {
			return fmt.Errorf("snapshot %s: %w: trees nested deeper than %d", sn.ID.Short(), vault.ErrCorrupt, maxTreeDepth)
		}
		if err := q.ctx.Err(); err != nil {
			return err
		}
		t, err := view.LoadTree(q.ctx, id)
		if err != nil {
			return err
		}
		add(vault.TreeBlob, id)
		for _, n := range t.Nodes {
			switch n.Kind {
			case format.KindDir:
				if err := walk(n.Subtree, depth+1); err != nil {
					return err
				}
			case format.KindFile:
				for _, c := range n.Content {
					add(vault.DataBlob, c)
				}
			}
		}
		return nil
	}
	if err := walk(sn.Tree, 0); err != nil {
		return err
	}
	q.w.Header().Set("Content-Type", api.ContentBinary)
	q.w.Header().Set("Content-Length", fmt.Sprint(len(buf)))
	q.w.WriteHeader(http.StatusOK)
	q.w.Write(buf)
	return nil
}

// maxTreeDepth bounds the nesting of trees walked for an index (a path
// is at most 4096 bytes, so no real tree nests deeper than 2048).
const maxTreeDepth = 4096

// putScratch returns a decode buffer to the pool.
func putScratch(b *[]byte) {
	if cap(*b) <= maxPooled {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// checkRootTree checks that rec's root tree hashes to its ID in rec's
// dedup domain.
func (s *Server) checkRootTree(q *request, rec vault.SnapshotRecord) error {
	h, err := q.vault.DomainHasher(rec.Domain)
	if err != nil {
		return err
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	p, _, err := q.vault.LoadEncoded(q.ctx, vault.TreeBlob, rec.Tree, *bp, h)
	if err != nil {
		if errors.Is(err, vault.ErrCorrupt) || errors.Is(err, vault.ErrNotFound) {
			return fmt.Errorf("%w: root tree %s is not a tree of this writer's dedup domain (upload it first)", api.ErrBadRequest, rec.Tree.Short())
		}
		return err
	}
	if cap(p) <= maxPooled {
		*bp = p[:0]
	}
	return nil
}

// ownSnapshots refuses, for a confined token, any of ids that is not a
// snapshot of its own domain (as not found: it learns nothing of
// others').
func (s *Server) ownSnapshots(q *request, ids []vault.ID) error {
	da, err := s.domains(q)
	if err != nil || !da.confined {
		return err
	}
	all, err := q.vault.AllSnapshots(q.ctx)
	if err != nil {
		return err
	}
	own := map[vault.ID]bool{}
	for _, sn := range all {
		if da.ownSnapshot(sn) {
			own[sn.ID] = true
		}
	}
	for _, id := range ids {
		if !own[id] {
			return fmt.Errorf("snapshot %s: %w among the snapshots of source %s", id.Short(), vault.ErrNotFound, da.own)
		}
	}
	return nil
}
