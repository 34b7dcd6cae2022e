package engine

import (
	"context"
	"fmt"
	"sort"

	"github.com/coffer-backup/coffer/internal/vault"
)

// SourceState is what a vault knows of one source (a host that backs up
// into it): its newest live snapshot, and the newest report about its
// machine (volume encryption, local copies) that its snapshots carry.
type SourceState struct {
	Host string
	// Last is the host's newest live snapshot (its Time the vault's, a
	// server's own clock).
	Last vault.SnapshotRecord
	// Report is the newest of the host's live snapshots that carries a
	// source report, among its SourceReportDepth newest, with its Source
	// read from the verified sealed object; zero ID when none does.
	Report vault.SnapshotRecord
	// Writer is who recorded Report (its chain entry's principal; "" for
	// a local vault or an imported snapshot).
	Writer string
}

// SourceReportDepth is how many of a host's newest snapshots Sources
// reads for a report (a backup from stdin, or by an older agent, carries
// none).
const SourceReportDepth = 8

// Sources returns, once the snapshot chain proves the list, each host of
// the live snapshots keep accepts (all when keep is nil), sorted by host:
// its newest snapshot and newest report. Each report is read from its
// sealed object and checked against the chain, so neither a catalog
// writer nor a store writer can change or move one unnoticed (an error
// wrapping vault.ErrCorrupt).
func (v *Vault) Sources(ctx context.Context, keep func(vault.SnapshotRecord) bool) ([]SourceState, error) {
	all, chain, err := v.verifiedList(ctx)
	if err != nil {
		return nil, err
	}
	byHost := map[string][]vault.SnapshotRecord{}
	for _, s := range all {
		if s.Deleted.IsZero() && (keep == nil || keep(s)) {
			byHost[s.Host] = append(byHost[s.Host], s)
		}
	}
	out := make([]SourceState, 0, len(byHost))
	for host, snaps := range byHost {
		// Newest first; the list is oldest first, so equal times keep
		// the later-recorded one first.
		sort.SliceStable(snaps, func(i, j int) bool { return snaps[i].Time.After(snaps[j].Time) })
		st := SourceState{Host: host, Last: snaps[0]}
		for i, s := range snaps {
			if i >= SourceReportDepth {
				break
			}
			stored, link, err := v.loadSnapshotLinked(ctx, s.ID)
			if err != nil {
				return nil, err
			}
			if d := chain.checkObject(s, stored, link); d != "" {
				return nil, fmt.Errorf("snapshot %s: %w: %s", s.ID.Short(), vault.ErrCorrupt, d)
			}
			if stored.Source != nil {
				s.Source = stored.Source
				st.Report = s
				if cs := chain.states[s.ID]; cs != nil {
					st.Writer = cs.first.Principal
				}
				break
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, nil
}
