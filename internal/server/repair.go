package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file repairs a damaged vault through the server (coffer repair
// index|snapshots with a server's vault): the engine's repair, run by the
// server, which holds the vault's catalog and keys.

// repairIndex rebuilds the vault's blob index from the packs in its
// store. It changes no snapshot (it only makes the catalog match the
// store), so it is not a critical change; vault.repair keeps it the
// owner's.
func (s *Server) repairIndex(q *request) error {
	var body api.Repair
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("dry_run", fmt.Sprint(body.DryRun))
	if err := s.notConfined(q, "repair"); err != nil {
		return err
	}
	// A repair reads every pack header of the vault: no write deadline.
	http.NewResponseController(q.w).SetWriteDeadline(time.Time{})
	ctx := q.ctx
	if !body.DryRun {
		ctx = context.WithoutCancel(ctx) // a client going away does not stop it half-way
	}
	res, err := q.vault.RepairIndex(ctx, body.DryRun, q.principal())
	if err != nil {
		return err
	}
	q.note("added", fmt.Sprint(len(res.Added)))
	q.note("fixed", fmt.Sprint(len(res.Fixed)))
	q.note("removed", fmt.Sprint(len(res.Removed)))
	q.note("left", fmt.Sprint(len(res.Left)))
	writeJSON(q.w, http.StatusOK, WireRepairIndex(res, body.DryRun))
	return nil
}

// repairSnapshots answers a dry run at once. A repair that writes is a
// critical change (it drops files from history and forgets the damaged
// originals): it becomes a request for a security approver (202), which
// names the snapshots a dry run found now; once approved, those
// snapshots, and no others, are repaired (carryOut), under the vault's
// deletion protection as ever (an original within the minimum retention
// stays; a forgotten one is soft-deleted).
func (s *Server) repairSnapshots(q *request) error {
	var body api.Repair
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("dry_run", fmt.Sprint(body.DryRun))
	if err := s.notConfined(q, "repair"); err != nil {
		return err
	}
	http.NewResponseController(q.w).SetWriteDeadline(time.Time{})
	out, err := q.vault.RepairSnapshots(q.ctx, true, q.principal())
	if err != nil {
		return err
	}
	rep := api.RepairSnapshotsReport{DryRun: true, Snapshots: WireRepairedSnapshots(out)}
	q.note("snapshots", fmt.Sprint(len(out)))
	if body.DryRun || len(out) == 0 {
		rep.DryRun = body.DryRun
		writeJSON(q.w, http.StatusOK, rep)
		return nil
	}
	ids := make([]string, len(out))
	for i, r := range out {
		ids[i] = r.Old.ID.String()
	}
	sort.Strings(ids)
	req, err := s.newRequest(q, "repair-snapshots", repairRequestSummary(out), requestParams{Vault: q.name, Snapshots: ids})
	if err != nil {
		return err
	}
	rep.Request = &req
	writeJSON(q.w, http.StatusAccepted, rep)
	return nil
}

// repairRequestSummary is what the approver reads: which snapshots, and
// how much each loses.
func repairRequestSummary(out []engine.RepairedSnapshot) string {
	var parts []string
	for i, r := range out {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("and %d more", len(out)-i))
			break
		}
		if r.RootLost {
			parts = append(parts, r.Old.ID.Short()+" (root listing lost: nothing kept)")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (%d files dropped, %d directories emptied)", r.Old.ID.Short(), len(r.Dropped), len(r.Emptied)))
	}
	return fmt.Sprintf("repairing %d snapshots that use lost data, forgetting the originals: %s", len(out), strings.Join(parts, ", "))
}

// carryOutRepair repairs the snapshots an approved request named.
func carryOutRepair(ctx context.Context, eng *engine.Vault, p requestParams, who string) (string, error) {
	if len(p.Snapshots) == 0 {
		// Never "all": an approval covers the snapshots it names.
		return "", errors.New("the request names no snapshot")
	}
	ids := make([]vault.ID, 0, len(p.Snapshots))
	for _, s := range p.Snapshots {
		id, err := vault.ParseID(s)
		if err != nil {
			return "", fmt.Errorf("snapshot %q: %w", s, vault.ErrCorrupt)
		}
		ids = append(ids, id)
	}
	out, err := eng.RepairSnapshotsOf(context.WithoutCancel(ctx), ids, false, who)
	if err != nil {
		return "", err
	}
	if len(out) == 0 {
		return "nothing to repair: the snapshots named no longer use lost data", nil
	}
	var parts []string
	for _, r := range out {
		p := r.Old.ID.Short() + " → "
		if r.New.ID.IsZero() {
			p += "none (root listing lost)"
		} else {
			p += r.New.ID.Short()
		}
		switch {
		case r.Forgotten:
			p += ", original forgotten"
		case r.ForgetErr != "":
			p += ", original stays: " + r.ForgetErr
		}
		parts = append(parts, p)
	}
	return "repaired " + strings.Join(parts, "; "), nil
}

// WireRepairIndex is a repair index result on the wire (and in the CLI's
// --json for a local vault).
func WireRepairIndex(r *engine.RepairIndexResult, dryRun bool) api.RepairIndexReport {
	ids := func(l []vault.ID) []string {
		out := make([]string, 0, len(l))
		for _, id := range l {
			out = append(out, id.String())
		}
		return out
	}
	left := append([]string{}, r.Left...)
	return api.RepairIndexReport{DryRun: dryRun, Added: ids(r.Added), Fixed: ids(r.Fixed), Removed: ids(r.Removed), Left: left}
}

// WireRepairedSnapshots is a repair snapshots result on the wire (and in
// the CLI's --json for a local vault).
func WireRepairedSnapshots(out []engine.RepairedSnapshot) []api.RepairedSnapshot {
	list := make([]api.RepairedSnapshot, 0, len(out))
	for _, r := range out {
		w := api.RepairedSnapshot{SnapshotID: r.Old.ID.String(), Host: r.Old.Host, Time: r.Old.Time, Dropped: []api.DroppedFile{},
			Emptied: append([]string{}, r.Emptied...), RootLost: r.RootLost, Forgotten: r.Forgotten, ForgetError: r.ForgetErr}
		for _, d := range r.Dropped {
			w.Dropped = append(w.Dropped, api.DroppedFile{Path: d.Path, Size: d.Size})
		}
		if !r.New.ID.IsZero() {
			w.RepairedID = r.New.ID.String()
		}
		list = append(list, w)
	}
	return list
}
