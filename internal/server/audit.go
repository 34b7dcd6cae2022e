package server

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/audit"
)

// The audit log (docs/audit.md): every request that changes state, reads
// data or is denied becomes an entry; the successful bulk requests of a
// backup or restore (thousands of uploads and reads) are summed up by the
// requests that open and close them (the snapshot lookup a restore starts
// with, the snapshot a backup saves). The server's own actions (a key
// rotation, a stored policy applied) are entries too, with principal
// "server".

// auditDir holds the audit signing key (0600) and its verifier key.
func auditDir(dataDir string) string { return filepath.Join(dataDir, "audit") }

func (s *Server) openAudit(ctx context.Context) error {
	signer, vkey, err := audit.LoadOrCreateKey(auditDir(s.opt.DataDir))
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	l, err := audit.Open(ctx, audit.Config{Store: s.cat, Signer: signer, VerifierKey: vkey, Now: s.opt.Now})
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	s.audit, s.auditVK, s.auditSigner = l, vkey, signer
	return nil
}

// AuditVerifierKey is the public key the audit log's checkpoints verify
// with.
func (s *Server) AuditVerifierKey() string { return s.auditVK }

// auditRequest records the request q answered with status and code. A
// refused request goes through the per-address budget (auditsum.go):
// past it, it is counted for a summary entry instead, and what it echoes
// of the client's input is cut short.
func (s *Server) auditRequest(rt Route, q *request, status int, code string, err error) {
	if status < 300 && (rt.bulk || rt.pattern == "GET /healthz" || rt.pattern == "GET /metrics") {
		return
	}
	refused := status >= 300
	if !refused && q.r.Method == http.MethodGet && q.tok.ID != "" && !s.getQuota.admit(q.tok.ID, s.opt.Now()) {
		s.reads.add(q, readCounts{requests: 1, other: 1}) // polling: summed up
		return
	}
	denied := code == api.CodeUnauthenticated || code == api.CodeForbidden || code == api.CodeTooMany
	if refused || q.quiet {
		record, due := s.refusals.admit(sourceKey(q.r), rt.pattern, denied, q.quiet, s.opt.Now())
		for _, e := range due {
			s.appendAudit(q.ctx, e)
		}
		if !record {
			return
		}
	}
	e := audit.Entry{Time: s.opt.Now().UTC(), Source: sourceAddr(q.r), Vault: q.name, Op: rt.pattern}
	if q.tok.ID != "" {
		// The principal says who, the token which of their credentials:
		// one person may hold several tokens (logins, minted ones).
		e.Principal, e.Token = q.principal(), q.tok.ID
	}
	params := map[string]string{}
	for k, v := range q.params {
		if refused {
			if len(params) == maxRefusalParams {
				break
			}
			v = cut(v, maxRefusalParam)
		}
		params[k] = v
	}
	for _, k := range []string{"id", "ref"} {
		if v := q.r.PathValue(k); v != "" {
			params[k] = cut(v, maxRefusalParam)
		}
	}
	qv := q.r.URL.Query()
	keys := make([]string, 0, len(qv))
	for k := range qv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i == maxQueryParams {
			params["query.…"] = fmt.Sprintf("%d more query parameters not recorded", len(keys)-maxQueryParams)
			break
		}
		params["query."+cut(k, 32)] = cut(qv.Get(k), maxRefusalParam)
	}
	if len(params) > 0 {
		e.Params = params
	}
	switch {
	case status < 300:
		e.Outcome = audit.OutcomeOK
		if status == http.StatusAccepted {
			e.Detail = "waits for a security approver"
		}
	case denied:
		e.Outcome = audit.OutcomeDenied
	case status < 500:
		e.Outcome = audit.OutcomeRefused
	default:
		e.Outcome = audit.OutcomeFailed
	}
	if err != nil && refused {
		e.Detail = cut(err.Error(), maxRefusalDetail)
	}
	s.appendAudit(q.ctx, e)
}

// appendAudit appends e. The audit log failing is an operational alarm,
// not a reason to fail the request that was already answered.
func (s *Server) appendAudit(ctx context.Context, e audit.Entry) {
	if _, err := s.audit.Append(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("AUDIT LOG WRITE FAILED", "op", e.Op, "err", err)
	}
}

// auditServer records an action the server took by itself (a key
// rotation, a key found unreachable, a stored policy applied).
func (s *Server) auditServer(ctx context.Context, vaultID, op, detail string, ok bool, extra ...map[string]string) {
	outcome := audit.OutcomeOK
	if !ok {
		outcome = audit.OutcomeFailed
	}
	params := map[string]string{"vault_id": vaultID}
	for _, m := range extra {
		for k, v := range m {
			params[k] = v
		}
	}
	s.appendAudit(ctx, audit.Entry{Time: s.opt.Now().UTC(), Principal: serverPrincipal, Op: op, Outcome: outcome,
		Params: params, Detail: detail})
}

// RunAudit writes audit checkpoints every minute while entries arrive,
// and a last one when ctx ends.
func (s *Server) runAudit(ctx context.Context) {
	if err := s.audit.Run(ctx, audit.CheckpointEvery); err != nil {
		s.log.Error("AUDIT CHECKPOINT FAILED", "err", err)
	}
}

// CheckpointAudit signs a checkpoint now (tests, and shutdown).
func (s *Server) CheckpointAudit(ctx context.Context) error {
	_, err := s.audit.Checkpoint(ctx)
	return err
}

// auditLog answers GET /v1/audit: entries, newest last, filtered by
// vault, principal, token, op, outcome, since (RFC 3339) and limit.
func (s *Server) auditLog(q *request) error {
	qv := q.r.URL.Query()
	f := audit.Filter{Vault: qv.Get("vault"), Principal: qv.Get("principal"), Token: qv.Get("token"), Op: qv.Get("op"), Outcome: qv.Get("outcome")}
	if v := qv.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return fmt.Errorf("%w: since: %v", api.ErrBadRequest, err)
		}
		f.Since = t
	}
	if v := qv.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: limit %q", api.ErrBadRequest, v)
		}
		f.Limit = n
	}
	es, err := audit.Entries(q.ctx, s.cat, f)
	if err != nil {
		return err
	}
	out := make([]api.AuditEntry, 0, len(es))
	for _, ie := range es {
		e := ie.Entry
		params := make([]string, 0, len(e.Params))
		for k := range e.Params {
			params = append(params, k)
		}
		sort.Strings(params)
		ae := api.AuditEntry{Index: ie.Index, Time: e.Time, Principal: e.Principal, Token: e.Token, Source: e.Source, Vault: e.Vault, Op: e.Op, Outcome: e.Outcome, Detail: e.Detail}
		if len(params) > 0 {
			ae.Params = e.Params
		}
		out = append(out, ae)
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

// auditExport streams the evidence archive (entries, signed checkpoints,
// verifier key) up to the latest checkpoint.
func (s *Server) auditExport(q *request) error {
	if err := s.CheckpointAudit(q.ctx); err != nil {
		return err
	}
	q.w.Header().Set("Content-Type", "application/x-tar")
	q.w.WriteHeader(http.StatusOK)
	if err := audit.Export(q.ctx, s.cat, s.auditVK, q.w); err != nil {
		q.log.Error("audit export failed mid-stream", "err", err)
	}
	return errAnswered
}
