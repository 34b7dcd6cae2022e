package protect

import (
	"time"

	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/vault"
)

// PolicyPlan is what applying a retention policy now would do: the
// policy's decisions per group, the snapshots it would forget, and those
// it does not keep but the vault's minimum retention still protects.
type PolicyPlan struct {
	Groups    []retention.Group
	Forget    []vault.SnapshotRecord
	Protected []vault.SnapshotRecord
}

// PlanPolicy decides what applying p to snaps at now does under the
// vault's settings s: every snapshot p does not keep is forgotten, except
// those Forget refuses (younger than the minimum retention), which stay.
// The server's daily run, "coffer forget --policy" and "coffer policy set
// --dry-run" all decide with it, so what a dry run shows is what the run
// does. It changes nothing.
func PlanPolicy(s vault.VaultSettings, p retention.Policy, snaps []vault.SnapshotRecord, now time.Time) (PolicyPlan, error) {
	groups, err := retention.Apply(p, snaps, now)
	if err != nil {
		return PolicyPlan{}, err
	}
	plan := PolicyPlan{Groups: groups}
	for _, g := range groups {
		for _, d := range g.Decisions {
			switch {
			case d.Keep:
			case Forget(s, d.Snapshot, now) != nil:
				plan.Protected = append(plan.Protected, d.Snapshot)
			default:
				plan.Forget = append(plan.Forget, d.Snapshot)
			}
		}
	}
	return plan, nil
}

// IDs returns the IDs of snaps.
func IDs(snaps []vault.SnapshotRecord) []vault.ID {
	ids := make([]vault.ID, len(snaps))
	for i, s := range snaps {
		ids[i] = s.ID
	}
	return ids
}
