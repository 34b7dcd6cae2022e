package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/posture"
	"github.com/coffer-backup/coffer/internal/vault"
)

// The posture report (docs/posture.md). Every fact comes from what the
// server holds: the vault's keyring and key provider, its authenticated
// settings, the catalog's snapshots and the source reports they carry,
// the TLS configuration it serves with, and its audit log (check runs,
// snapshot writers, the daily posture records). A request names the
// vault and the history window, nothing else: no fact is taken from it.

// OpPostureRecord is the audit operation of a kept posture record.
const OpPostureRecord = "posture.record"

// Audit operations the report reads.
const (
	opCheck        = "POST /v1/vaults/{vault}/check"
	opSaveSnapshot = "POST /v1/vaults/{vault}/snapshots"
)

// MaxPostureSince bounds the history window a request may ask for.
const MaxPostureSince = 400 * 24 * time.Hour

// DefaultPostureSince is the history window when a request names none.
const DefaultPostureSince = 90 * 24 * time.Hour

// ParseSince parses a window: "90d", "12h", or any Go duration.
func ParseSince(s string) (time.Duration, error) {
	if s == "" {
		return DefaultPostureSince, nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 || d > MaxPostureSince {
		return 0, fmt.Errorf("since %q: give a window such as 90d, at most %dd", s, int(MaxPostureSince.Hours()/24))
	}
	return d, nil
}

// posture answers GET /v1/vaults/{vault}/posture: the vault's signed
// report (posture.Envelope). It records the posture it computed when
// today's record is missing or differs.
func (s *Server) posture(q *request) error {
	since, err := ParseSince(q.r.URL.Query().Get("since"))
	if err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	body, err := s.PostureReport(q.ctx, q.name, since)
	if err != nil {
		return err
	}
	q.w.Header().Set("Content-Type", "application/json")
	q.w.WriteHeader(http.StatusOK)
	_, err = q.w.Write(body)
	if err != nil {
		return errAnswered
	}
	return nil
}

// PostureReport computes vault name's report with the history of the
// window since, records the posture, and returns the signed envelope.
func (s *Server) PostureReport(ctx context.Context, name string, since time.Duration) ([]byte, error) {
	now := s.opt.Now().UTC()
	rec, err := s.cat.Vault(ctx, name)
	if err != nil {
		return nil, vaultErr(name, err)
	}
	f, hist, err := s.postureFacts(ctx, rec, now, now.Add(-since))
	if err != nil {
		return nil, err
	}
	checks := posture.Run(f)
	s.recordPosture(ctx, rec, now, checks, hist)
	start := now.Add(-since)
	r := &posture.Report{Generated: now, Mode: "server", Producer: s.producer(),
		Policy: posture.ReportPolicy(s.posturePolicy()), HistorySince: &start,
		Vaults: []posture.Vault{posture.NewVault(rec.Name, rec.ID.String(), checks, hist, now)}}
	return posture.Seal(r, s.auditSigner)
}

// posturePolicy is the policy reports hold vaults to: Options.Posture,
// and for the platform key's age the rotation period the server keeps.
func (s *Server) posturePolicy() posture.Policy {
	p := s.opt.Posture
	if p.KEKMaxAge <= 0 && s.kekRotation() > 0 {
		p.KEKMaxAge = s.kekRotation()
	}
	return p.OrDefaults()
}

// producer names the server: its certificate's fingerprint.
func (s *Server) producer() string {
	if t := s.tlsFacts(time.Time{}); t != nil {
		return "coffer server, TLS certificate SHA-256 " + t.Fingerprint
	}
	return "coffer server"
}

// tlsFacts reads the TLS configuration Serve runs with; nil when the
// server does not serve (yet).
func (s *Server) tlsFacts(now time.Time) *posture.TLSFacts {
	cfg := s.tlsConfig.Load()
	if cfg == nil {
		return nil
	}
	var cert *tls.Certificate
	if len(cfg.Certificates) > 0 {
		cert = &cfg.Certificates[0]
	} else if cfg.GetCertificate != nil {
		cert, _ = cfg.GetCertificate(&tls.ClientHelloInfo{})
	}
	t := &posture.TLSFacts{MinVersion: cfg.MinVersion, Read: now}
	if t.MinVersion == 0 {
		t.MinVersion = tls.VersionTLS10 // crypto/tls's server default
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return t
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return t
		}
	}
	sum := sha256.Sum256(cert.Certificate[0])
	t.Subject, t.NotBefore, t.NotAfter, t.Fingerprint = leaf.Subject.String(), leaf.NotBefore, leaf.NotAfter, hex.EncodeToString(sum[:])
	return t
}

// postureFacts reads the facts of vault rec, and its kept records since
// from.
func (s *Server) postureFacts(ctx context.Context, rec vault.VaultRecord, now, from time.Time) (posture.Facts, []posture.Record, error) {
	f := posture.Facts{Now: now, Policy: s.posturePolicy(), Mode: "server", TLS: s.tlsFacts(now), ChecksSrc: posture.SrcAudit + " (check runs)"}
	if f.TLS == nil {
		f.TLSErr = "the server is not serving TLS"
	}

	// Keys: the engine's view when the key can be used, else the store's.
	var ki engine.KeyInfo
	eng, err := s.vault(ctx, rec.Name)
	if err == nil {
		err = eng.EnsureKeys(ctx)
	}
	switch {
	case err == nil:
		ki = eng.KeyInfo()
		if perr := eng.ProbeKey(ctx); perr != nil {
			f.Key.ProbeErr = perr.Error()
			s.keyOutcome(ctx, rec.ID, ki.KEK.String(), perr)
		}
		f.SetRead = s.opt.Now().UTC()
		if st, serr := eng.Settings(ctx); serr == nil {
			f.Settings = &st
		} else {
			f.SetErr = serr.Error()
		}
	case keyErr(err):
		_, iki, ierr := s.inspect(ctx, rec.Name)
		if ierr != nil {
			return f, nil, errors.Join(err, ierr)
		}
		ki = iki
		f.Key.ProbeErr = err.Error()
		f.SetRead = now
		f.SetErr = "the vault's key is out of reach, so its settings cannot be authenticated"
	default:
		return f, nil, err
	}
	f.Key = posture.KeyFacts{Algorithm: ki.Algorithm, KeySource: ki.KeySource, KEK: ki.KEK, WrapAlg: ki.WrapAlg,
		DEKVersion: ki.DEKVersion, DEKCount: ki.DEKCount, DEKCreated: ki.LastRotated, ProbeErr: f.Key.ProbeErr, Read: now}
	if ki.KEK.Provider == "platform" {
		for _, v := range s.keys.Versions() {
			if strconv.Itoa(v.Version) == ki.KEK.Version {
				f.Key.KEKCreated = v.Created
			}
		}
	}

	// Sources: the newest live snapshot of each host, and the newest
	// source report its snapshots carry, read from the sealed snapshots
	// and proved by the snapshot chain (the catalog's records hold no
	// report). With the key out of reach, the catalog's list alone.
	f.SourcesRead = s.opt.Now().UTC()
	oldest := now
	if eng != nil && err == nil {
		states, serr := eng.Sources(ctx, nil)
		switch {
		case errors.Is(serr, vault.ErrCorrupt):
			f.SourcesErr = serr.Error() // evidence: the checks fail, saying why
		case serr != nil:
			return f, nil, fmt.Errorf("read the sources' reports: %w", serr)
		}
		for _, st := range states {
			f.Sources = append(f.Sources, sourceFact(st))
		}
	}
	if eng == nil || err != nil || f.SourcesErr != "" {
		snaps, cerr := s.cat.Snapshots(ctx, rec.ID)
		if cerr != nil {
			return f, nil, cerr
		}
		why := ""
		if f.SourcesErr == "" {
			why = "the vault's key is out of reach, so the sealed snapshots that carry the reports cannot be opened"
		}
		f.Sources = catalogSources(snaps, why)
	}
	for _, sf := range f.Sources {
		if sf.Time.Before(oldest) {
			oldest = sf.Time
		}
	}
	posture.SortSources(f.Sources)

	// The audit log: who wrote the snapshots, the check runs, the kept
	// posture records; then verify it.
	writers, err := audit.Entries(ctx, s.cat, audit.Filter{Vault: rec.Name, Op: opSaveSnapshot, Outcome: audit.OutcomeOK, Since: oldest.Add(-time.Hour)})
	if err != nil {
		return f, nil, err
	}
	for i := range f.Sources {
		for _, e := range writers {
			if e.Entry.Params["snapshot"] == f.Sources[i].Snapshot {
				f.Sources[i].Writer = e.Entry.Principal
			}
		}
	}
	checks, err := audit.Entries(ctx, s.cat, audit.Filter{Vault: rec.Name, Op: opCheck, Outcome: audit.OutcomeOK})
	if err != nil {
		return f, nil, err
	}
	for _, e := range checks {
		p := e.Entry.Params
		// Only a check that read all the data and ran to its end counts:
		// a subset is partial evidence, and a run cut short (a client
		// that hangs up) must not replace the last complete one.
		if p["read_data"] != "true" || p["subset"] != "" || p["completed"] != "true" {
			continue
		}
		run := &posture.CheckRun{Time: e.Entry.Time, ReadData: true, Subset: p["subset"], Errors: -1, OK: p["completed"] == "true",
			Source: fmt.Sprintf("%s, entry %d", posture.SrcAudit, e.Index)}
		if n, err := strconv.Atoi(p["errors"]); err == nil {
			run.Errors = n
		}
		f.Checks = run // entries are in log order: the last is the newest
	}
	recs, err := audit.Entries(ctx, s.cat, audit.Filter{Vault: rec.Name, Op: OpPostureRecord, Principal: serverPrincipal, Since: from})
	if err != nil {
		return f, nil, err
	}
	var hist []posture.Record
	for _, e := range recs {
		if e.Entry.Params["vault_id"] != rec.ID.String() {
			continue // another vault of the same name, deleted since
		}
		r, err := posture.ParseRecord([]byte(e.Entry.Params["record"]), e.Entry.Params["sha256"])
		if err != nil {
			continue // a record that does not match its hash is no evidence; audit verify reports the tampering
		}
		r.Vault = rec.Name
		hist = append(hist, r)
	}
	vrep, verr := audit.Verify(ctx, s.cat, s.auditVK, audit.VerifyOptions{Now: now})
	f.Audit = &posture.AuditFacts{Read: s.opt.Now().UTC()}
	if verr != nil {
		f.Audit.Err = verr.Error()
	} else {
		f.Audit.Entries, f.Audit.Checkpoints, f.Audit.Unsigned = vrep.Entries, vrep.Checkpoints, vrep.Unproven
		for _, p := range vrep.Problems {
			f.Audit.Problems = append(f.Audit.Problems, p.String())
		}
	}
	return f, hist, nil
}

// recordPosture appends checks as the vault's posture record to the
// audit log when it has none yet for today (UTC), or the latest differs.
func (s *Server) recordPosture(ctx context.Context, rec vault.VaultRecord, now time.Time, checks []posture.Check, hist []posture.Record) {
	r := posture.RecordOf(rec.Name, now, checks)
	day := now.Truncate(24 * time.Hour)
	for i := len(hist) - 1; i >= 0; i-- {
		if !hist[i].Time.Before(day) && posture.SameStatus(hist[i], r) {
			return
		}
		if !hist[i].Time.Before(day) {
			break
		}
	}
	s.appendAudit(ctx, audit.Entry{Time: now, Principal: serverPrincipal, Vault: rec.Name, Op: OpPostureRecord, Outcome: audit.OutcomeOK,
		Params: map[string]string{"vault_id": rec.ID.String(), "record": string(r.Encode()), "sha256": r.Hash()}})
}

// RecordPostures records every vault's posture once a day (Serve runs it
// with the key maintenance); a vault recorded today is skipped.
func (s *Server) RecordPostures(ctx context.Context) error {
	names, _, err := s.vaultNames(ctx)
	if err != nil {
		return err
	}
	day := s.opt.Now().UTC().Format("2006-01-02")
	var errs []error
	for _, name := range names {
		if s.postureDay.get(name) == day {
			continue
		}
		if _, err := s.PostureReport(ctx, name, 24*time.Hour); errors.Is(err, vault.ErrNotFound) {
			continue // a directory left by a deleted vault
		} else if err != nil {
			errs = append(errs, fmt.Errorf("posture of vault %s: %w", name, err))
			continue
		}
		s.postureDay.set(name, day)
	}
	return errors.Join(errs...)
}

// dayBook maps a vault name to a day.
type dayBook struct {
	mu sync.Mutex
	m  map[string]string
}

func (d *dayBook) get(name string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[name]
}

func (d *dayBook) set(name, day string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]string{}
	}
	d.m[name] = day
}

// sourceFact is what the posture checks read of a source the engine
// proved: its newest snapshot, and the newest report and who wrote it.
func sourceFact(st engine.SourceState) posture.SourceFact {
	f := posture.SourceFact{Host: st.Host, Snapshot: st.Last.ID.String(), Time: st.Last.Time}
	if !st.Report.ID.IsZero() {
		f.Facts, f.ReportSnapshot, f.ReportTime, f.ReportWriter = st.Report.Source, st.Report.ID.String(), st.Report.Time, st.Writer
	}
	return f
}

// catalogSources is the newest live snapshot of each host from the
// catalog's list, without reports (why says why they were not read).
func catalogSources(snaps []vault.SnapshotRecord, why string) []posture.SourceFact {
	newest := map[string]vault.SnapshotRecord{}
	for _, sn := range snaps {
		if !sn.Deleted.IsZero() {
			continue
		}
		if cur, ok := newest[sn.Host]; !ok || sn.Time.After(cur.Time) {
			newest[sn.Host] = sn
		}
	}
	out := make([]posture.SourceFact, 0, len(newest))
	for _, sn := range newest {
		out = append(out, posture.SourceFact{Host: sn.Host, Snapshot: sn.ID.String(), Time: sn.Time, FactsErr: why})
	}
	posture.SortSources(out)
	return out
}
