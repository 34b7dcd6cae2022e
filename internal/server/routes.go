package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// bufPool holds blob buffers for uploads and downloads, so that each
// request does not allocate (and the runtime zero) megabytes afresh.
var bufPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPooled is the largest buffer kept: a chunk is at most 8 MiB.
const maxPooled = 9 << 20

// Route is one endpoint: its pattern (net/http ServeMux syntax), the
// permission it needs, and the handler. A route with no permission is
// public (only /healthz); every other one must name one.
type Route struct {
	pattern string
	perm    authn.Permission // "" only for public routes
	public  bool
	bulk    bool // one of the many requests of a backup or restore
	// noOpen: handle does not open the vault (the handler does, or needs
	// only the catalog), so that it can answer when the vault's key
	// cannot be reached. handle still checks that the vault exists.
	noOpen bool
	h      func(*request) error
}

// Pattern is the route's method and path pattern.
func (r Route) Pattern() string { return r.pattern }

// Permission is what the route needs ("" for a public route).
func (r Route) Permission() authn.Permission { return r.perm }

// Public reports whether the route needs no token.
func (r Route) Public() bool { return r.public }

// request is what a handler gets: the authenticated token, the vault
// named in the path (opened), and the HTTP request and response.
type request struct {
	w   http.ResponseWriter
	r   *http.Request
	ctx context.Context
	tok vault.TokenRecord
	who string // the principal, or the token, that makes the request
	// acc is what tok may do now (Server.access); people are the
	// principals and tokens behind it; perm is what the route needs.
	acc    authn.Access
	people []string
	perm   authn.Permission
	// params are what the audit entry records of the request beyond its
	// path (handlers add them; never secrets).
	params map[string]string
	// quiet: not audited (a repeated refusal of a blocked address).
	quiet bool
	name  string // vault name from the path, "" when none
	vault *engine.Vault
	log   *slog.Logger
	dom   *domainAccess // what the token may do with dedup domains, once looked up (domain.go)
}

// Routes lists every endpoint with its permission; tests walk it.
func (s *Server) Routes() []Route {
	return []Route{
		{pattern: "GET /healthz", public: true, h: s.healthz},
		{pattern: "GET /metrics", perm: authn.PermMetrics, h: s.serveMetrics},
		{pattern: "POST /v1/vaults", perm: authn.PermVaultCreate, h: s.createVault},
		{pattern: "POST /v1/recover", perm: authn.PermVaultRecover, h: s.recoverVault},
		{pattern: "GET /v1/vaults/{vault}", perm: authn.PermVaultRead, noOpen: true, h: s.vaultInfo},
		{pattern: "DELETE /v1/vaults/{vault}", perm: authn.PermVaultDelete, noOpen: true, h: s.deleteVault},
		{pattern: "GET /v1/vaults/{vault}/dedup", perm: authn.PermBackupWrite, h: s.dedup},
		{pattern: "POST /v1/vaults/{vault}/local-copy-key", perm: authn.PermBackupWrite, h: s.localCopyKey},
		{pattern: "POST /v1/vaults/{vault}/missing", perm: authn.PermBackupWrite, bulk: true, h: s.missing},
		{pattern: "POST /v1/vaults/{vault}/blobs", perm: authn.PermBackupWrite, bulk: true, h: s.upload},
		{pattern: "POST /v1/vaults/{vault}/flush", perm: authn.PermBackupWrite, h: s.flush},
		{pattern: "GET /v1/vaults/{vault}/index", perm: authn.PermDataRead, h: s.index},
		{pattern: "GET /v1/vaults/{vault}/trees/{id}", perm: authn.PermVaultRead, bulk: true, h: s.tree},
		{pattern: "GET /v1/vaults/{vault}/data/{id}", perm: authn.PermDataRead, bulk: true, h: s.data},
		{pattern: "POST /v1/vaults/{vault}/read", perm: authn.PermVaultRead, bulk: true, h: s.readBlobs}, // data refs: data.read too
		{pattern: "GET /v1/vaults/{vault}/snapshots", perm: authn.PermVaultRead, h: s.snapshots},
		{pattern: "GET /v1/vaults/{vault}/snapshots/{ref}", perm: authn.PermVaultRead, h: s.findSnapshot},
		{pattern: "POST /v1/vaults/{vault}/snapshots", perm: authn.PermBackupWrite, h: s.saveSnapshot},
		{pattern: "POST /v1/vaults/{vault}/check", perm: authn.PermCheck, h: s.check},
		{pattern: "GET /v1/vaults/{vault}/key", perm: authn.PermKeyRead, noOpen: true, h: s.keyStatus},
		{pattern: "GET /v1/vaults/{vault}/key/events", perm: authn.PermKeyRead, noOpen: true, h: s.keyEvents},
		{pattern: "GET /v1/vaults/{vault}/cat/{kind}", perm: authn.PermKeyRead, h: s.catObject},
		{pattern: "POST /v1/vaults/{vault}/key/rotate", perm: authn.PermKeyManage, h: s.keyRotate},
		{pattern: "POST /v1/vaults/{vault}/key/use-cmk", perm: authn.PermKeyManage, noOpen: true, h: s.keyUseCMK},
		{pattern: "POST /v1/vaults/{vault}/key/use-pmk", perm: authn.PermKeyManage, h: s.keyUsePMK},
		{pattern: "POST /v1/vaults/{vault}/sources", perm: authn.PermSourceManage, noOpen: true, h: s.addSource},
		{pattern: "GET /v1/vaults/{vault}/sources", perm: authn.PermVaultRead, h: s.sources},
		{pattern: "GET /v1/vaults/{vault}/deleted", perm: authn.PermVaultRead, h: s.deletedSnapshots},
		{pattern: "POST /v1/vaults/{vault}/forget", perm: authn.PermSnapshotDelete, h: s.forget},
		{pattern: "POST /v1/vaults/{vault}/undelete", perm: authn.PermSnapshotDelete, h: s.undelete},
		{pattern: "POST /v1/vaults/{vault}/retag", perm: authn.PermSnapshotDelete, h: s.retag},
		{pattern: "POST /v1/vaults/{vault}/rewrite", perm: authn.PermSnapshotDelete, h: s.rewrite},
		{pattern: "POST /v1/vaults/{vault}/prune", perm: authn.PermSnapshotDelete, h: s.prune},
		{pattern: "POST /v1/vaults/{vault}/repair/index", perm: authn.PermVaultRepair, h: s.repairIndex},
		{pattern: "POST /v1/vaults/{vault}/repair/snapshots", perm: authn.PermVaultRepair, h: s.repairSnapshots},
		{pattern: "GET /v1/vaults/{vault}/settings", perm: authn.PermVaultRead, h: s.settings},
		{pattern: "POST /v1/vaults/{vault}/settings", perm: authn.PermVaultSettings, h: s.changeSettings},
		{pattern: "GET /v1/vaults/{vault}/events", perm: authn.PermVaultRead, h: s.vaultEvents},
		{pattern: "GET /v1/vaults/{vault}/posture", perm: authn.PermPostureRead, noOpen: true, h: s.posture},
		{pattern: "GET /v1/requests", perm: authn.PermRequestRead, h: s.listRequests},
		{pattern: "POST /v1/requests/{id}/approve", perm: authn.PermRequestDecide, h: s.approve},
		{pattern: "POST /v1/requests/{id}/reject", perm: authn.PermRequestDecide, h: s.reject},
		{pattern: "POST /v1/login", public: true, h: s.login},
		{pattern: "POST /v1/principals", perm: authn.PermRoleManage, h: s.createPrincipal},
		{pattern: "GET /v1/principals", perm: authn.PermRoleManage, h: s.listPrincipals},
		{pattern: "GET /v1/roles", perm: authn.PermRoleManage, h: s.listRoles},
		{pattern: "POST /v1/roles", perm: authn.PermRoleManage, h: s.assignRole},
		{pattern: "DELETE /v1/roles", perm: authn.PermRoleManage, h: s.revokeRole},
		{pattern: "GET /v1/audit", perm: authn.PermAuditRead, h: s.auditLog},
		{pattern: "GET /v1/audit/export", perm: authn.PermAuditRead, h: s.auditExport},
		{pattern: "POST /v1/tokens", perm: authn.PermTokenManage, h: s.createToken},
		{pattern: "GET /v1/tokens", perm: authn.PermTokenManage, h: s.listTokens},
		{pattern: "DELETE /v1/tokens/{id}", perm: authn.PermTokenManage, h: s.revokeToken},
	}
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.Routes() {
		if rt.perm == "" && !rt.public {
			panic("server: route " + rt.pattern + " declares no permission")
		}
		mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) { s.handle(rt, w, r) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, api.Error{Code: api.CodeNotFound, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// handle is the one authorization point: it authenticates the token,
// checks the route's permission for the vault in the path, opens the vault
// and runs the handler, mapping its error to a JSON answer.
func (s *Server) handle(rt Route, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	reqID := fmt.Sprintf("%08x", s.reqSeq.Add(1))
	w.Header().Set("X-Request-Id", reqID)
	sw := &statusWriter{ResponseWriter: w}
	w = sw
	q := &request{w: w, r: r, ctx: r.Context(), name: r.PathValue("vault"),
		log: s.log.With("req", reqID, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)}
	err := s.authorizeAndRun(rt, q)
	code, status := "", http.StatusOK
	if sw.status != 0 {
		status = sw.status
	}
	if err != nil && !errors.Is(err, errAnswered) {
		code, status = api.Classify(err)
		if r.ProtoMajor == 1 && r.ContentLength != 0 {
			// The rest of a refused request's body gets a second to
			// arrive (so that a client still sending it reads the answer,
			// not a reset), then the connection closes rather than wait
			// for bytes a client may never send.
			w.Header().Set("Connection", "close")
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(refusedBodyGrace))
		}
		msg := err.Error()
		if status == http.StatusInternalServerError && code == api.CodeInternal {
			q.log.Error("request failed", "err", err)
			msg = "internal error (request " + reqID + ")"
		}
		writeJSON(w, status, api.Error{Code: code, Message: msg})
	}
	if rt.public && status >= 400 && code != api.CodeTooMany && code != api.CodeUnavailable {
		// A refused request to a public route costs an audit entry (or a
		// count) like one without a token to any other route.
		s.anon.fail(sourceKey(r), s.opt.Now())
	}
	s.metrics.observe(rt.pattern, status, time.Since(start))
	s.auditRequest(rt, q, status, code, err)
	// One line per request; the bulk requests of a backup or restore
	// (thousands of them) only at debug level when they succeed.
	lvl := slog.LevelInfo
	switch {
	case status >= 500 && code != api.CodeKeyUnavailable && code != api.CodeUnavailable:
		lvl = slog.LevelError
	case status >= 400:
		lvl = slog.LevelWarn // the client's doing, or a key or store out of reach
	case rt.bulk:
		lvl = slog.LevelDebug
	}
	q.log.Log(r.Context(), lvl, "request", "status", status, "code", code, "token", q.tok.ID, "ms", time.Since(start).Milliseconds())
}

func (s *Server) authorizeAndRun(rt Route, q *request) error {
	if rt.public && rt.pattern != "GET /healthz" {
		if wait := s.anon.blocked(sourceKey(q.r), s.opt.Now()); wait > 0 {
			return s.tooMany(q, &s.anon, wait)
		}
		// Before anyone knows who sends it, a body gets seconds, not the
		// minutes an upload may take.
		timeout := s.opt.BodyTimeout
		if timeout <= 0 {
			timeout = DefaultBodyTimeout
		}
		http.NewResponseController(q.w).SetReadDeadline(time.Now().Add(timeout))
	}
	if !rt.public {
		// An address that keeps failing is refused before its token is
		// looked up.
		src := sourceKey(q.r)
		lim := &s.limiter
		if q.r.Header.Get("Authorization") == "" {
			lim = &s.anon
		}
		if wait := lim.blocked(src, s.opt.Now()); wait > 0 {
			return s.tooMany(q, lim, wait)
		}
		tok, err := s.auth.Authenticate(q.ctx, q.r.Header.Get("Authorization"))
		if errors.Is(err, authn.ErrUnauthenticated) {
			// A token presented and refused is a guess; a request with
			// none guesses nothing but still costs an audit entry: it
			// counts against a higher limit.
			lim.fail(src, s.opt.Now())
			q.w.Header().Set("WWW-Authenticate", `Bearer realm="coffer"`)
			return classed{err, api.ErrUnauthenticated}
		}
		if err != nil {
			return err // the catalog failed: 500, not 401
		}
		q.tok, q.perm = tok, rt.perm
		acc, who, people, err := s.access(q.ctx, tok)
		if errors.Is(err, authn.ErrUnauthenticated) {
			lim.fail(src, s.opt.Now())
			q.w.Header().Set("WWW-Authenticate", `Bearer realm="coffer"`)
			return classed{err, api.ErrUnauthenticated}
		}
		if err != nil {
			return err
		}
		q.acc, q.who, q.people = acc, who, people
		if err := authn.AuthorizeAccess(who, acc, rt.perm, q.name); err != nil {
			return classed{s.approverHint(q.ctx, tok, rt.perm, err), api.ErrForbidden}
		}
	}
	switch {
	case q.name != "" && rt.noOpen:
		if !vaultName.MatchString(q.name) {
			return fmt.Errorf("vault %q: %w", q.name, vault.ErrNotFound)
		}
		if _, err := s.cat.Vault(q.ctx, q.name); err != nil {
			return vaultErr(q.name, err)
		}
	case q.name != "":
		v, err := s.vault(q.ctx, q.name)
		if err != nil {
			return err
		}
		q.vault = v
		// GET …/dedup only hands out keys: restore, ls and diff fetch them
		// to verify what they read, and must not open a writer session
		// (16 of them lock the token out of backing up for 15 minutes,
		// and each holds condemned packs from prune). A backup's session
		// begins with its first upload request, before the server says
		// which blobs it holds (docs/retention.md).
		if rt.perm == authn.PermBackupWrite && rt.pattern != "GET /v1/vaults/{vault}/dedup" {
			if err := s.touchWriter(q); err != nil {
				return err
			}
		}
	}
	return rt.h(q)
}

// classed gives err the API class kind (for its status and code) while
// keeping err's own message, which already says what kind it is.
type classed struct{ err, kind error }

func (c classed) Error() string        { return c.err.Error() }
func (c classed) Unwrap() error        { return c.err }
func (c classed) Is(target error) bool { return target == c.kind }

func (s *Server) healthz(q *request) error {
	q.w.Header().Set("Content-Type", "text/plain")
	io.WriteString(q.w, "ok\n")
	return nil
}

func vaultInfo(rec vault.VaultRecord, ki engine.KeyInfo) api.VaultInfo {
	return api.VaultInfo{Name: rec.Name, ID: rec.ID.String(), Created: ki.Created, Algorithm: ki.Algorithm,
		KeySource: ki.KeySource, KEKProvider: ki.KEK.Provider, KEKID: ki.KEK.KeyID, KEKVersion: ki.KEK.Version,
		WrapAlg: ki.WrapAlg, DEKVersion: ki.DEKVersion, DEKCount: ki.DEKCount, LastRotated: ki.LastRotated, KeyringGen: ki.KeyringGen}
}

func (s *Server) createVault(q *request) error {
	var body api.CreateVault
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("name", body.Name)
	if body.Store != "" {
		// Where a vault's data lives, and which endpoint the server signs
		// requests for with its S3 credentials, is the owner's choice.
		if !q.acc.Covers(authn.Grant{Role: authn.RoleOwner}) {
			return fmt.Errorf("%w: only an owner may give a vault a store of its own", api.ErrForbidden)
		}
		if err := checkStoreURL(body.Store); err != nil {
			return err // before the audit note: a refused URL may hold credentials
		}
		q.note("store", body.Store)
	}
	v, err := s.CreateVaultIn(q.ctx, body.Name, engine.DefaultChunker(), body.Store)
	if err != nil {
		return err
	}
	q.log.Info("vault created", "vault", body.Name, "store", body.Store, "token", q.tok.ID)
	writeJSON(q.w, http.StatusCreated, vaultInfo(v.Record(), v.KeyInfo()))
	return nil
}

// vaultInfo describes the vault; when its key cannot be used it still
// does, from the store and the catalog, with key_error saying why.
func (s *Server) vaultInfo(q *request) error {
	var vi api.VaultInfo
	eng, err := s.vault(q.ctx, q.name)
	if err == nil {
		err = eng.EnsureKeys(q.ctx) // an open vault's keys may have outlived their TTL
	}
	switch {
	case err == nil:
		vi = vaultInfo(eng.Record(), eng.KeyInfo())
	case keyErr(err):
		rec, ki, ierr := s.inspect(q.ctx, q.name)
		if ierr != nil {
			return errors.Join(err, ierr)
		}
		vi = vaultInfo(rec, ki)
		vi.KeyError = err.Error()
	default:
		return err
	}
	id, _ := vault.ParseID(vi.ID)
	snaps, err := s.cat.Snapshots(q.ctx, id)
	if err != nil {
		return err
	}
	da, err := s.domains(q)
	if err != nil {
		return err
	}
	if da.confined {
		// A source sees its own snapshots, not the vault's size, which
		// grows with every other source's backups.
		for _, sn := range snaps {
			if da.ownSnapshot(sn) {
				vi.Snapshots++
			}
		}
		writeJSON(q.w, http.StatusOK, vi)
		return nil
	}
	vi.Snapshots = len(snaps)
	if vi.Packs, vi.StoredBytes, err = s.cat.PackTotals(q.ctx, id); err != nil {
		return err
	}
	writeJSON(q.w, http.StatusOK, vi)
	return nil
}

// dedup sends the chunk-ID key and gear seed of the token's dedup
// domain (a source's own in a vault whose dedup scope is "source"), or of
// the domain ?domain= names for a token that may read it.
func (s *Server) dedup(q *request) error {
	_, dom, err := s.readDomain(q)
	if err != nil {
		return err
	}
	d, err := q.vault.DomainDedup(dom)
	if err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	host, err := s.boundHost(q)
	if err != nil {
		return err
	}
	since, err := s.agentSince(q)
	if err != nil {
		return err
	}
	if dom != "" {
		q.note("domain", dom)
	}
	writeJSON(q.w, http.StatusOK, api.Dedup{ChunkIDKey: d.ChunkIDKey[:], GearSeed: d.GearSeed[:],
		Min: d.Chunker.Min, Avg: d.Chunker.Avg, Max: d.Chunker.Max, Host: host, HostSince: since, Domain: dom})
	return nil
}

// missing answers which of the posted blob references the vault lacks.
func (s *Server) missing(q *request) error {
	body, err := readAllLimited(q.r.Body, api.MaxMissingIDs*api.RefSize)
	if err != nil {
		return err
	}
	if len(body)%api.RefSize != 0 {
		return fmt.Errorf("%w: body is not a whole number of blob references", api.ErrBadRequest)
	}
	out := make([]byte, 0, len(body))
	rd := bytes.NewReader(body)
	for {
		ref, err := api.ReadRef(rd)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if !q.vault.Has(ref.Type, ref.ID) {
			out = api.AppendRef(out, ref)
		}
	}
	s.reads.add(q, readCounts{requests: 1, probes: 1, probed: int64(len(body) / api.RefSize), missing: int64(len(out) / api.RefSize)})
	q.w.Header().Set("Content-Type", api.ContentBinary)
	q.w.Write(out)
	return nil
}

// upload reads upload records one at a time (the body is streamed, never
// held whole), verifies that each blob decodes to its raw length and
// hashes to its ID, and hands it to the engine to seal and pack.
func (s *Server) upload(q *request) error {
	s.metrics.activeUploads.Inc()
	defer s.metrics.activeUploads.Dec()
	body := http.MaxBytesReader(q.w, q.r.Body, api.MaxUploadBody)
	codec := q.vault.Codec()
	da, err := s.domains(q)
	if err != nil {
		return err
	}
	// Blobs are identified in the token's own dedup domain: a source's
	// upload can only ever add blobs of its own domain.
	hasher, err := q.vault.DomainHasher(da.own)
	if err != nil {
		return err
	}
	encp, rawp := bufPool.Get().(*[]byte), bufPool.Get().(*[]byte)
	defer bufPool.Put(encp)
	defer bufPool.Put(rawp)
	enc, raw := *encp, *rawp
	defer func() {
		if cap(enc) <= maxPooled {
			*encp = enc[:0]
		}
		if cap(raw) <= maxPooled {
			*rawp = raw[:0]
		}
	}()
	maxData := q.vault.Dedup().Chunker.Max
	var res api.UploadResult
	for {
		ref, rawLen, encLen, err := api.ReadUploadHeader(body, format.MaxBlobRawSize)
		if err == io.EOF {
			break
		}
		if err != nil {
			return uploadErr(err)
		}
		// A data blob is one chunk: never longer than the vault's chunker
		// makes them. A tree may be as long as the format allows.
		if limit := maxBlobLen(ref.Type, maxData); rawLen > limit || encLen > limit+1 {
			return fmt.Errorf("%w: blob %s: lengths %d/%d: a %s blob of this vault holds at most %d bytes", api.ErrBadRequest, ref.ID.Short(), rawLen, encLen, ref.Type, limit)
		}
		if enc, err = readBlob(body, enc, encLen); err != nil {
			return uploadErr(err)
		}
		s.metrics.bytesIn.Add(float64(api.UploadHeaderLen + encLen))
		plain := enc[1:] // a blob stored raw is its own plaintext: no copy
		var held int64
		if enc[0] != format.EncodingRaw || len(plain) != rawLen {
			// Decoding holds rawLen bytes: uploads in parallel share a
			// bounded budget for it.
			if held, err = s.decodes.acquire(q.ctx, rawLen); err != nil {
				return err
			}
			raw, err = codec.Decode(raw[:0], enc, uint32(rawLen))
			if err != nil {
				s.decodes.release(held)
				return fmt.Errorf("%w: blob %s: %v", api.ErrBadRequest, ref.ID.Short(), err)
			}
			plain = raw
		}
		got := hasher.ID(plain)
		s.decodes.release(held)
		if got != ref.ID {
			return fmt.Errorf("%w: blob %s: content does not match its ID", api.ErrBadRequest, ref.ID.Short())
		}
		// A tree must be a tree whose children the vault holds: garbage
		// under a valid ID would block prune and check for good.
		if ref.Type == vault.TreeBlob {
			if err := q.vault.CheckNewTree(plain); err != nil {
				return fmt.Errorf("%w: tree %s: %v", api.ErrBadRequest, ref.ID.Short(), err)
			}
		}
		// The engine packs blobs of many requests together and stores a
		// full pack in the background: that must not be cancelled when
		// the request that happened to fill the pack ends.
		isNew, err := q.vault.SaveBlob(context.WithoutCancel(q.ctx), ref.Type, ref.ID, enc, rawLen)
		if err != nil {
			if !keyErr(err) { // a storage error sticks to the engine
				s.dropVault(q.name)
			}
			return err
		}
		if isNew {
			res.Stored++
			res.BytesAdded += uint64(encLen + seal.Overhead)
		}
	}
	writeJSON(q.w, http.StatusOK, res)
	return nil
}

// maxBlobLen is the longest raw length a blob of type t may have in a
// vault whose chunker makes chunks of at most maxData bytes.
func maxBlobLen(t vault.BlobType, maxData int) int {
	if t == vault.DataBlob && maxData > 0 {
		return min(maxData, format.MaxBlobRawSize)
	}
	return format.MaxBlobRawSize
}

// blobReadAhead is how far a blob's buffer grows ahead of the bytes
// received, when the pooled one is too small for its declared length.
const blobReadAhead = 1 << 20

// readBlob reads n bytes into buf (reused when it has room), growing it
// at most blobReadAhead (or twice what arrived) ahead of the bytes
// received, so that a declared length costs memory only as its bytes
// arrive.
func readBlob(r io.Reader, buf []byte, n int) ([]byte, error) {
	if cap(buf) >= n {
		buf = buf[:n]
		_, err := io.ReadFull(r, buf)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return buf, err
	}
	buf = buf[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(n, max(2*cap(buf), blobReadAhead)))
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

func uploadErr(err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return fmt.Errorf("%w: upload over %d bytes", api.ErrTooLarge, api.MaxUploadBody)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: upload ended inside a blob", api.ErrBadRequest)
	}
	return err
}

func (s *Server) flush(q *request) error {
	if err := q.vault.Flush(context.WithoutCancel(q.ctx)); err != nil {
		s.dropVault(q.name)
		return err
	}
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// index sends every blob reference of the vault with its raw length. The
// entries are copied out under the engine's lock, then written, so a slow
// client never holds up backups.
func (s *Server) index(q *request) error {
	da, err := s.domains(q)
	if err != nil {
		return err
	}
	if ref := q.r.URL.Query().Get("snapshot"); ref != "" {
		return s.snapshotIndex(q, da, ref)
	}
	if da.confined {
		// The whole index lists every source's blobs and their sizes.
		return fmt.Errorf("%w: vault %s's dedup scope is \"source\": a source's token reads the index of one of its snapshots (?snapshot=ID)", api.ErrForbidden, q.name)
	}
	var buf []byte
	if err := q.vault.EachBlob(q.ctx, func(t vault.BlobType, id vault.ID, rawLen uint32) bool {
		buf = api.AppendIndexEntry(buf, api.Ref{Type: t, ID: id}, rawLen)
		return true
	}); err != nil {
		return err
	}
	q.w.Header().Set("Content-Type", api.ContentBinary)
	q.w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	q.w.Write(buf)
	return nil
}

func (s *Server) tree(q *request) error { return s.blob(q, vault.TreeBlob) }
func (s *Server) data(q *request) error { return s.blob(q, vault.DataBlob) }

// blob sends a blob unsealed but still encoded; the agent decodes it and
// verifies its ID.
func (s *Server) blob(q *request, t vault.BlobType) error {
	id, err := vault.ParseID(q.r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	da, dom, err := s.readDomain(q)
	if err != nil {
		return err
	}
	h, err := q.vault.DomainHasher(dom)
	if err != nil {
		return err
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var scratch *[]byte
	if da.confined {
		scratch = bufPool.Get().(*[]byte)
		defer putScratch(scratch)
	}
	p, rawLen, err := q.vault.LoadEncodedVerified(q.ctx, t, id, *bp, h, scratch)
	if err != nil {
		if da.confined {
			return confinedErr(err, t, id, da.own)
		}
		return err
	}
	if cap(p) <= maxPooled {
		*bp = p[:0]
	}
	q.w.Header().Set("Content-Type", api.ContentBinary)
	q.w.Header().Set(api.HeaderRawLength, strconv.FormatUint(uint64(rawLen), 10))
	q.w.Header().Set("Content-Length", strconv.Itoa(len(p)))
	q.w.Write(p)
	s.metrics.bytesOut.Add(float64(len(p)))
	c := readCounts{requests: 1, data: 1, bytes: int64(len(p))}
	if t == vault.TreeBlob {
		c.trees, c.data = 1, 0
	}
	s.reads.add(q, c)
	return nil
}

// readBlobs sends many blobs in one answer (a restore of small files would
// otherwise be one request per file), each unsealed but still encoded. A
// blob that cannot be read gets a failed record and the batch goes on.
func (s *Server) readBlobs(q *request) error {
	body, err := readAllLimited(q.r.Body, api.MaxReadRefs*api.RefSize)
	if err != nil {
		return err
	}
	if len(body)%api.RefSize != 0 {
		return fmt.Errorf("%w: body is not a whole number of blob references", api.ErrBadRequest)
	}
	var refs []api.Ref
	for rd := bytes.NewReader(body); ; {
		ref, err := api.ReadRef(rd)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		refs = append(refs, ref)
	}
	// SECURITY: trees need vault.read (the route's), as GET trees/{id};
	// a batch naming any data blob needs data.read, as GET data/{id}:
	// checked before anything is read or sent.
	for _, ref := range refs {
		if ref.Type != vault.TreeBlob && !q.acc.Allows(authn.PermDataRead, q.name) {
			return fmt.Errorf("%w: reading data blobs needs permission %s on vault %s; this token may read trees only", api.ErrForbidden, authn.PermDataRead, q.name)
		}
	}
	da, dom, err := s.readDomain(q)
	if err != nil {
		return err
	}
	h, err := q.vault.DomainHasher(dom)
	if err != nil {
		return err
	}
	q.w.Header().Set("Content-Type", api.ContentBinary)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var scratch *[]byte
	if da.confined {
		scratch = bufPool.Get().(*[]byte)
		defer putScratch(scratch)
	}
	hdr := make([]byte, 0, 64)
	// Counted whatever way the answer ends (a client gone mid-batch has
	// still read what was sent).
	var c readCounts
	defer func() {
		c.requests = 1
		s.reads.add(q, c)
	}()
	for _, ref := range refs {
		if q.ctx.Err() != nil {
			return errAnswered
		}
		p, rawLen, err := q.vault.LoadEncodedVerified(q.ctx, ref.Type, ref.ID, *bp, h, scratch)
		if err != nil && da.confined {
			err = confinedErr(err, ref.Type, ref.ID, da.own)
		}
		if err != nil {
			code, _ := api.Classify(err)
			if _, werr := q.w.Write(api.AppendReadFailed(hdr[:0], ref, code, err.Error())); werr != nil {
				return errAnswered
			}
			continue
		}
		if cap(p) <= maxPooled {
			*bp = p[:0]
		}
		if _, err := q.w.Write(api.AppendReadOK(hdr[:0], ref, int(rawLen), len(p))); err != nil {
			return errAnswered
		}
		if _, err := q.w.Write(p); err != nil {
			return errAnswered
		}
		if ref.Type == vault.TreeBlob {
			c.trees++
		} else {
			c.data++
		}
		c.bytes += int64(len(p))
		s.metrics.bytesOut.Add(float64(len(p)))
	}
	return nil
}

func (s *Server) snapshots(q *request) error {
	da, err := s.domains(q)
	if err != nil {
		return err
	}
	snaps, err := q.vault.Snapshots(q.ctx)
	if err != nil {
		return err
	}
	out := make([]api.Snapshot, 0, len(snaps))
	for _, sn := range snaps {
		if da.ownSnapshot(sn) {
			out = append(out, api.FromSnapshot(sn))
		}
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

func (s *Server) findSnapshot(q *request) error {
	da, err := s.domains(q)
	if err != nil {
		return err
	}
	sn, err := q.vault.FindSnapshotWhere(q.ctx, q.r.PathValue("ref"), da.keep())
	if err != nil {
		return err
	}
	writeJSON(q.w, http.StatusOK, api.FromSnapshot(sn))
	return nil
}

// sources answers each source (host) of the vault with its newest
// snapshot and newest report (engine.Sources): what the posture report
// reads to flag unencrypted and silent sources. A source's token in a
// vault whose dedup scope is "source" sees only its own.
func (s *Server) sources(q *request) error {
	da, err := s.domains(q)
	if err != nil {
		return err
	}
	states, err := q.vault.Sources(q.ctx, da.keep())
	if err != nil {
		return err
	}
	out := make([]api.SourceReport, 0, len(states))
	for _, st := range states {
		out = append(out, api.NewSourceReport(st.Host, st.Last, st.Report, st.Writer))
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

// saveSnapshot records a snapshot after checking every field
// (newSnapshot: the server's time, the agent's own host) and that its
// root tree is stored: an agent cannot record a snapshot of data the
// vault lacks. Nothing is written before these checks pass.
func (s *Server) saveSnapshot(q *request) error {
	var body api.Snapshot
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	rec, err := s.newSnapshot(q, body)
	if err != nil {
		return err
	}
	// Lookup, not Has: a root tree in a pack prune has condemned is still
	// stored, and this backup's session keeps prune from deleting it.
	if _, ok := q.vault.Lookup(vault.TreeBlob, rec.Tree); !ok && !q.vault.Has(vault.TreeBlob, rec.Tree) {
		return fmt.Errorf("%w: root tree %s is not stored (upload it first)", api.ErrBadRequest, rec.Tree.Short())
	}
	// A snapshot is recorded only once what it references is durable.
	if err := q.vault.Flush(context.WithoutCancel(q.ctx)); err != nil {
		s.dropVault(q.name)
		return err
	}
	// The root tree must be of the writer's own dedup domain (it hashes
	// to its ID under that domain's key): a source cannot record a
	// snapshot of another source's tree and then read it as its own.
	if err := s.checkRootTree(q, rec); err != nil {
		return err
	}
	if err := s.checkCounts(q, rec); err != nil {
		return err
	}
	// A backup whose session went quiet for longer than prune waits may
	// reference packs deleted meanwhile: it must run again.
	if err := s.writerAlive(q); err != nil {
		return err
	}
	rec.Time = s.opt.Now().UTC() // when it is recorded, after the flush
	saved, err := q.vault.SaveSnapshotBy(q.ctx, rec, q.principal())
	if errors.Is(err, format.ErrInvalidSnapshot) {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if err != nil {
		return err
	}
	s.endWriter(q.ctx, q)
	q.note("snapshot", saved.ID.String())
	q.note("host", saved.Host)
	q.note("token", q.tok.ID)
	// The snapshot chain's head, so that the audit log's own pins
	// cover the snapshot list (docs/format.md §8.2).
	q.note("chain", q.vault.LastChainHead().String())
	q.log.Info("snapshot saved", "vault", q.name, "snapshot", saved.ID.Short(), "host", saved.Host, "token", q.tok.ID)
	writeJSON(q.w, http.StatusCreated, api.FromSnapshot(saved))
	return nil
}

func (s *Server) check(q *request) error {
	if err := s.notConfined(q, "check"); err != nil {
		return err
	}
	var body api.CheckRequest
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	// A check reads the whole vault: no write deadline for it.
	rc := http.NewResponseController(q.w)
	rc.SetWriteDeadline(time.Time{})
	opt := engine.CheckOptions{ReadData: body.ReadData}
	// What the posture report reads of a check run (posture.go): whether
	// it read the data, which subset, whether it finished, what it found.
	q.note("read_data", strconv.FormatBool(body.ReadData || body.ReadDataSubset != ""))
	if body.ReadDataSubset != "" {
		q.note("subset", body.ReadDataSubset)
	}
	if body.ReadDataSubset != "" {
		sub, err := engine.ParseReadSubset(body.ReadDataSubset)
		if err != nil {
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		opt.Subset = sub
	}
	stream := strings.Contains(q.r.Header.Get("Accept"), api.ContentNDJSON)
	var enc *json.Encoder
	if stream {
		// Progress lines about 4 times a second, then the report: the
		// agent shows a live display, as for a local check.
		q.w.Header().Set("Content-Type", api.ContentNDJSON)
		q.w.WriteHeader(http.StatusOK)
		enc = json.NewEncoder(q.w)
		var mu sync.Mutex
		var last time.Time
		opt.Progress = func(p engine.CheckProgress) {
			mu.Lock()
			defer mu.Unlock()
			if time.Since(last) < 250*time.Millisecond {
				return
			}
			last = time.Now()
			enc.Encode(api.CheckEvent{Progress: &api.CheckProgress{Phase: p.Phase, Done: p.Done, Total: p.Total, Bytes: p.Bytes, Current: p.Current}})
			rc.Flush()
		}
	}
	rep, err := q.vault.Check(q.ctx, opt)
	if err != nil {
		if !stream {
			return err
		}
		code, _ := api.Classify(err)
		enc.Encode(api.CheckEvent{Error: &api.Error{Code: code, Message: err.Error()}})
		return errAnswered
	}
	q.note("completed", "true")
	q.note("errors", strconv.Itoa(len(rep.Errors)))
	out := api.CheckReport{Packs: rep.Packs, Blobs: rep.Blobs, Snapshots: rep.Snapshots,
		Trees: rep.Trees, BytesRead: rep.BytesRead, Subset: rep.Subset, PacksRead: rep.PacksRead, Errors: rep.Errors, Warnings: rep.Warnings, DamagedMore: rep.DamagedMore}
	for _, u := range rep.Damaged {
		out.Damaged = append(out.Damaged, api.DamageUse{Snapshot: u.Snapshot.String(), Path: u.Path, Tree: u.Tree, Offset: u.Offset, End: u.End, Blob: u.Blob.String()})
	}
	if stream {
		enc.Encode(api.CheckEvent{Report: &out})
		return nil
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

func tokenInfo(t vault.TokenRecord) api.Token {
	return api.Token{ID: t.ID, Name: t.Name, Role: t.Role, Vault: t.Vault, Created: t.Created,
		Expires: t.Expires, Revoked: t.Revoked, CreatedBy: t.CreatedBy, Principal: t.Principal}
}

// maxTokenLife bounds a token's expiry; a token meant to live longer is
// one that never expires.
const maxTokenLife = 100 * 365 * 24 * time.Hour

// checkExpiry refuses an expiry in the past (zero: never expires), and
// one further ahead than maxTokenLife (the catalog could not store one
// past 2262; checked before anything is written).
func (s *Server) checkExpiry(expires time.Time) error {
	now := s.opt.Now()
	if !expires.IsZero() && !expires.After(now) {
		return fmt.Errorf("%w: expiry %s is in the past", api.ErrBadRequest, expires.Format(time.RFC3339))
	}
	if expires.After(now.Add(maxTokenLife)) {
		return fmt.Errorf("%w: expiry %s is more than 100 years ahead: give no expiry for a token that never expires", api.ErrBadRequest, expires.Format(time.RFC3339))
	}
	return nil
}

// issueToken generates a token for rec (its ID, hash and creation time
// are filled in here), stores it, and answers 201 with its description
// and secret: the one time the secret is shown.
func (s *Server) issueToken(q *request, rec vault.TokenRecord) error {
	secret, hash, id, err := authn.Generate(rand.Reader)
	if err != nil {
		return err
	}
	rec.ID, rec.Hash, rec.Created = id, hash, s.opt.Now().UTC()
	if !rec.Expires.IsZero() {
		rec.Expires = rec.Expires.UTC()
	}
	if err := s.cat.AddToken(q.ctx, rec); err != nil {
		return err
	}
	q.note("issued_token", id)
	q.log.Info("token created", "id", id, "role", rec.Role, "vault", rec.Vault, "principal", rec.Principal, "by", q.principal())
	out := tokenInfo(rec)
	out.Secret = string(secret)
	writeJSON(q.w, http.StatusCreated, out)
	return nil
}

// createPrincipalToken issues a token to a principal (an agent's, or a
// user's for scripts); it acts with the principal's roles, never more than
// the issuing token may do, and never as a security approver.
func (s *Server) createPrincipalToken(q *request, body api.CreateToken) error {
	if body.Role != "" || body.Vault != "" {
		return fmt.Errorf("%w: a principal's token takes its roles from the principal: give no role or vault", api.ErrBadRequest)
	}
	p, err := s.resolvePrincipal(q.ctx, body.Principal)
	if err != nil {
		return err
	}
	if err := s.checkExpiry(body.Expires); err != nil {
		return err
	}
	grants, err := s.principalGrants(q.ctx, p.ID)
	if err != nil {
		return err
	}
	if err := s.mayIssue(q, "principal "+p.Name, grants); err != nil {
		return err
	}
	return s.issueToken(q, vault.TokenRecord{Name: body.Name, Role: string(authn.RolePrincipal), Principal: p.ID, Expires: body.Expires, CreatedBy: q.tok.ID})
}

// principalGrants returns every role assignment of the principal with ID
// id, as grants.
func (s *Server) principalGrants(ctx context.Context, id string) ([]authn.Grant, error) {
	as, err := s.cat.RoleAssignments(ctx, id)
	if err != nil {
		return nil, err
	}
	grants := make([]authn.Grant, len(as))
	for i, a := range as {
		grants[i] = authn.Grant{Role: authn.Role(a.Role), Vault: a.Vault}
	}
	return grants, nil
}

// checkTokenName refuses a token name that a principal could not have
// (an empty name is allowed): names are shown to other users, in token
// lists and requests, and must not carry control characters or pose as
// an ID.
func checkTokenName(name string) error {
	if name == "" {
		return nil
	}
	return checkName("token name", name)
}

func (s *Server) createToken(q *request) error {
	var body api.CreateToken
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("name", body.Name)
	q.note("role", body.Role)
	q.note("vault", body.Vault)
	q.note("principal", body.Principal)
	if !body.Expires.IsZero() {
		q.note("expires", body.Expires.UTC().Format(time.RFC3339))
	}
	if err := checkTokenName(body.Name); err != nil {
		return err
	}
	if body.Principal != "" {
		return s.createPrincipalToken(q, body)
	}
	role, err := authn.ParseRole(body.Role)
	if err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if err := authn.CheckScope(role, body.Vault); err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if role == authn.RoleSecurityApprover {
		// Else an owner could issue one and approve their own requests.
		return fmt.Errorf("%w: security-approver tokens are issued on the server machine (coffer server approver-token --data DIR --name NAME), never through the API", api.ErrForbidden)
	}
	if body.Vault != "" {
		if _, err := s.cat.Vault(q.ctx, body.Vault); err != nil {
			return vaultErr(body.Vault, err)
		}
	}
	if err := s.checkExpiry(body.Expires); err != nil {
		return err
	}
	if err := s.mayIssue(q, "the token", authn.RoleGrants(role, body.Vault)); err != nil {
		return err
	}
	return s.issueToken(q, vault.TokenRecord{Name: body.Name, Role: string(role), Vault: body.Vault, Expires: body.Expires, CreatedBy: q.tok.ID})
}

func (s *Server) listTokens(q *request) error {
	toks, err := s.cat.Tokens(q.ctx)
	if err != nil {
		return err
	}
	out := make([]api.Token, len(toks))
	for i, t := range toks {
		out[i] = tokenInfo(t)
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}

// revokeToken revokes a token. Revoking the last active owner token
// would leave nobody to administer the server, and revoking an approver's
// token would take the second person away, so both are critical: they
// become a request for a security approver (202).
func (s *Server) revokeToken(q *request) error {
	id := q.r.PathValue("id")
	last, err := s.lastOwner(q.ctx, id)
	if err != nil {
		return err
	}
	critical := ""
	if last {
		critical = "removing the last owner (token " + id + ")"
	} else if approver, err := s.activeApproverToken(q.ctx, id); err != nil {
		return err
	} else if approver {
		critical = "removing a security approver (token " + id + ")"
	}
	if critical != "" {
		req, err := s.newRequest(q, "token-revoke", critical, requestParams{Token: id})
		if err != nil {
			return err
		}
		writeJSON(q.w, http.StatusAccepted, struct {
			Request *api.Request `json:"request"`
		}{&req})
		return nil
	}
	if err := s.cat.RevokeToken(q.ctx, id, s.opt.Now().UTC()); err != nil {
		return fmt.Errorf("token %s: %w", id, err)
	}
	q.log.Info("token revoked", "id", id, "by", q.tok.ID)
	q.w.WriteHeader(http.StatusNoContent)
	return nil
}

// activeApproverToken reports whether token id is an active token that
// carries the security-approver role itself (one made on the server
// machine): revoking it takes a second person away.
func (s *Server) activeApproverToken(ctx context.Context, id string) (bool, error) {
	t, err := s.cat.Token(ctx, id)
	if errors.Is(err, vault.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	active := t.Revoked.IsZero() && (t.Expires.IsZero() || s.opt.Now().Before(t.Expires))
	return active && authn.Role(t.Role) == authn.RoleSecurityApprover && originOf(t) == originMachine, nil
}

// lastOwner reports whether token id is active and nobody could act as an
// owner any more once it is revoked (with what it issued).
func (s *Server) lastOwner(ctx context.Context, id string) (bool, error) {
	t, err := s.cat.Token(ctx, id)
	if errors.Is(err, vault.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !t.Revoked.IsZero() || !t.Expires.IsZero() && !s.opt.Now().Before(t.Expires) {
		return false, nil
	}
	owners, err := s.ownersLeft(ctx, removal{token: id})
	return owners == 0, err
}

// statusWriter remembers the status a handler answered with, for the
// audit log and the metrics. Unwrap keeps http.ResponseController (flush,
// deadlines) working through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// note records a parameter of the request for its audit entry (never a
// secret: callers pass names, IDs and redacted URIs).
func (q *request) note(k, v string) {
	if q.params == nil {
		q.params = map[string]string{}
	}
	q.params[k] = v
}
