package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

// protection is what the deletion-protection commands need of a vault,
// local (the engine) or on a server (the client).
type protection interface {
	Snapshots(ctx context.Context) ([]vault.SnapshotRecord, error)
	deleted(ctx context.Context) ([]vault.SnapshotRecord, error)
	forget(ctx context.Context, ids []vault.ID) ([]vault.SnapshotRecord, time.Time, error)
	undelete(ctx context.Context, ref string) (vault.SnapshotRecord, error)
	prune(ctx context.Context, dryRun bool) (api.PruneReport, error)
	settings(ctx context.Context) (vault.VaultSettings, error)
	// changeSettings applies c, or on a server files a request for a
	// critical change (the result's Request); confirm is the local
	// single-user vault's consent to a critical change.
	changeSettings(ctx context.Context, c api.SettingsChange, confirm bool) (api.SettingsResult, error)
	events(ctx context.Context) ([]api.VaultEvent, error)
}

// openProtection opens the selected vault for the protection commands.
func (a *app) openProtection(ctx context.Context) (protection, io.Closer, error) {
	if isRemote(a.vaultRef) {
		rv, err := a.openRemote(ctx, a.vaultRef)
		if err != nil {
			return nil, nil, err
		}
		return rv, rv, nil
	}
	o, err := a.openVault(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	o.principal = a.principal()
	return o, o, nil
}

func deletedOf(all []vault.SnapshotRecord) []vault.SnapshotRecord {
	var out []vault.SnapshotRecord
	for _, s := range all {
		if !s.Deleted.IsZero() {
			out = append(out, s)
		}
	}
	return out
}

// --- local vaults: the engine ------------------------------------------

func (o *openedVault) deleted(ctx context.Context) ([]vault.SnapshotRecord, error) {
	all, err := o.AllSnapshots(ctx)
	return deletedOf(all), err
}

func (o *openedVault) forget(ctx context.Context, ids []vault.ID) ([]vault.SnapshotRecord, time.Time, error) {
	done, err := o.Forget(ctx, ids, o.principal)
	if err != nil || len(done) == 0 {
		return done, time.Time{}, err
	}
	s, err := o.Settings(ctx)
	return done, protect.Expiry(s, done[0].Deleted), err
}

func (o *openedVault) undelete(ctx context.Context, ref string) (vault.SnapshotRecord, error) {
	s, err := o.FindDeleted(ctx, ref)
	if err != nil {
		return s, err
	}
	return o.Undelete(ctx, s.ID, o.principal)
}

func (o *openedVault) prune(ctx context.Context, dryRun bool) (api.PruneReport, error) {
	rep, err := o.Prune(ctx, engine.PruneOptions{DryRun: dryRun, Principal: o.principal})
	if err != nil {
		return api.PruneReport{}, err
	}
	w := api.PruneReport{DryRun: rep.DryRun, StillDeleted: rep.StillDeleted, Condemned: rep.Condemned, CondemnedBytes: rep.CondemnedBytes,
		Deleted: rep.Deleted, DeletedBytes: rep.DeletedBytes, Waiting: rep.Waiting, WaitingBytes: rep.WaitingBytes, Sessions: len(rep.Sessions),
		Reprieved: rep.Reprieved, Repacked: rep.Repacked, RepackedBytes: rep.RepackedBytes, PartlyUsed: rep.PartlyUsed, UnusedBytes: rep.UnusedBytes, Expired: []api.Snapshot{},
		Unwalkable: engine.UnwalkableStrings(rep.Unwalkable), Incomplete: rep.Incomplete}
	for _, s := range rep.Expired {
		w.Expired = append(w.Expired, api.FromSnapshot(s))
	}
	return w, nil
}

func (o *openedVault) settings(ctx context.Context) (vault.VaultSettings, error) {
	return o.Settings(ctx)
}

// changeSettings: a local vault has one principal, so a critical change
// is refused, unless the vault was created single-user and the change
// is confirmed.
func (o *openedVault) changeSettings(ctx context.Context, c api.SettingsChange, confirm bool) (api.SettingsResult, error) {
	cur, err := o.Settings(ctx)
	if err != nil {
		return api.SettingsResult{}, err
	}
	old, nw, ch, err := o.ChangeSettings(ctx, c.Apply, o.principal, cur.SingleUser && confirm)
	if errors.Is(err, vault.ErrApprovalRequired) {
		if !cur.SingleUser {
			return api.SettingsResult{}, fmt.Errorf("%w: a critical change (%s) needs a second person's approval, and a local vault has one principal. On a vault server a security approver approves it (coffer approve); a local vault created with `coffer vault create --single-user` allows it with --confirm", vault.ErrApprovalRequired, strings.Join(ch.Critical, "; "))
		}
		return api.SettingsResult{}, fmt.Errorf("%w: %s is a critical change: add --confirm to make it on this single-user vault (it is recorded)", vault.ErrApprovalRequired, strings.Join(ch.Critical, "; "))
	}
	if err != nil {
		return api.SettingsResult{}, err
	}
	return api.SettingsResult{Settings: api.FromSettings(nw), Changed: engine.DescribeSettingsChange(old, nw)}, nil
}

func (o *openedVault) events(ctx context.Context) ([]api.VaultEvent, error) {
	evs, err := o.Events(ctx)
	out := make([]api.VaultEvent, len(evs))
	for i, e := range evs {
		out[i] = api.VaultEvent{Time: e.Time, Principal: e.Principal, Event: e.Event, Detail: e.Detail, OK: e.OK}
	}
	return out, err
}

// --- vaults on a server: the client ------------------------------------

func (r *remoteVault) deleted(ctx context.Context) ([]vault.SnapshotRecord, error) {
	return r.Vault.Deleted(ctx)
}

func (r *remoteVault) forget(ctx context.Context, ids []vault.ID) ([]vault.SnapshotRecord, time.Time, error) {
	return r.Vault.Forget(ctx, ids)
}

func (r *remoteVault) undelete(ctx context.Context, ref string) (vault.SnapshotRecord, error) {
	del, err := r.Vault.Deleted(ctx)
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	s, err := engine.FindSnapshot(del, ref)
	if err != nil {
		return s, err
	}
	return r.Vault.Undelete(ctx, s.ID)
}

func (r *remoteVault) prune(ctx context.Context, dryRun bool) (api.PruneReport, error) {
	return r.Vault.Prune(ctx, dryRun)
}

func (r *remoteVault) settings(ctx context.Context) (vault.VaultSettings, error) {
	s, err := r.Vault.Settings(ctx)
	return s.Record(), err
}

func (r *remoteVault) changeSettings(ctx context.Context, c api.SettingsChange, confirm bool) (api.SettingsResult, error) {
	if confirm {
		return api.SettingsResult{}, errors.New("--confirm is for single-user local vaults: on a server, a security approver approves critical changes")
	}
	return r.Vault.ChangeSettings(ctx, c)
}

func (r *remoteVault) events(ctx context.Context) ([]api.VaultEvent, error) {
	return r.Vault.Events(ctx)
}
