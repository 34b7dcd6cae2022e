package api

import "time"

// Repair is the body of POST /v1/vaults/{vault}/repair/index and
// /repair/snapshots.
type Repair struct {
	DryRun bool `json:"dry_run"`
}

// RepairIndexReport answers repair/index: what was (or, in a dry run,
// would be) added, fixed and removed, as pack IDs, and what was left
// alone and why. The CLI prints the same for a local vault (--json).
type RepairIndexReport struct {
	DryRun  bool     `json:"dry_run"`
	Added   []string `json:"added"`
	Fixed   []string `json:"fixed"`
	Removed []string `json:"removed"`
	Left    []string `json:"left"`
}

// RepairSnapshotsReport answers repair/snapshots: each snapshot that uses
// lost data and what its repair drops. A repair that is not a dry run is
// a critical change on a server: the answer (202) holds the request for a
// security approver and what a dry run found; the approved request
// repairs those snapshots only.
type RepairSnapshotsReport struct {
	DryRun    bool               `json:"dry_run"`
	Snapshots []RepairedSnapshot `json:"snapshots"`
	Request   *Request           `json:"request,omitempty"`
}

// RepairedSnapshot is one snapshot a repair replaces.
type RepairedSnapshot struct {
	SnapshotID string        `json:"snapshot_id"`
	Host       string        `json:"host"`
	Time       time.Time     `json:"time"`
	Dropped    []DroppedFile `json:"dropped"`
	Emptied    []string      `json:"emptied"`
	// RootLost: the root directory listing is lost; nothing is kept.
	RootLost bool `json:"root_lost"`
	// RepairedID is the repaired snapshot (absent in a dry run, or when
	// the root is lost).
	RepairedID string `json:"repaired_id,omitempty"`
	// Forgotten: the original was forgotten (soft-deleted); ForgetError
	// says why not (deletion protection).
	Forgotten   bool   `json:"forgotten"`
	ForgetError string `json:"forget_error,omitempty"`
}

// DroppedFile is a file a repaired snapshot leaves out.
type DroppedFile struct {
	Path string `json:"path"`
	Size uint64 `json:"size"`
}
