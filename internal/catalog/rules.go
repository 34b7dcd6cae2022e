package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// RequestInsertColumns are the columns of a request's row, in the order
// of RequestArgs.
const RequestInsertColumns = `id, vault, op, params, summary, requester, created, expires, state, decider, decided`

// RequestArgs returns the values of r's row, in the order of
// RequestInsertColumns; an error if ID or Op is unset, a time out of
// range or Params neither JSON nor "". The rest (known states, Decided
// set exactly when not pending) the schema judges: see InvalidRequest.
func RequestArgs(r vault.Request) ([]any, error) {
	if r.ID == "" || r.Op == "" {
		return nil, fmt.Errorf("add request %q: ID and op must be set", r.ID)
	}
	created, err := UnixNano(r.Created)
	if err != nil {
		return nil, fmt.Errorf("add request %s: created: %w", r.ID, err)
	}
	expires, err := UnixNano(r.Expires)
	if err != nil {
		return nil, fmt.Errorf("add request %s: expires: %w", r.ID, err)
	}
	decided, err := NullUnixNano(r.Decided)
	if err != nil {
		return nil, fmt.Errorf("add request %s: decided: %w", r.ID, err)
	}
	if r.Params != "" && !json.Valid([]byte(r.Params)) {
		return nil, fmt.Errorf("add request %s: invalid request (params must be JSON or empty)", r.ID)
	}
	var vaultID []byte // NULL: server-wide
	if !r.Vault.IsZero() {
		vaultID = r.Vault[:]
	}
	return []any{r.ID, vaultID, r.Op, NullString(r.Params), r.Summary, r.Requester, created, expires,
		string(r.State), NullString(r.Decider), decided}, nil
}

// InvalidRequest is the error of a request the schema refused (err).
func InvalidRequest(r vault.Request, err error) error {
	return fmt.Errorf("add request %s: invalid request (state %q; params must be JSON or empty, Decided set exactly when not pending, Decider only with Decided): %w", r.ID, r.State, err)
}

// RequestColumns are the columns ScanRequest reads.
const RequestColumns = RequestInsertColumns

// ScanRequest reads a row of RequestColumns.
func ScanRequest(row Scanner) (vault.Request, error) {
	var (
		r                vault.Request
		vaultID          []byte
		params, decider  *string
		state            string
		created, expires int64
		decided          *int64
	)
	err := row.Scan(&r.ID, &vaultID, &r.Op, &params, &r.Summary, &r.Requester, &created, &expires, &state, &decider, &decided)
	if err != nil {
		return vault.Request{}, err
	}
	if vaultID != nil {
		if err := ScanID(&r.Vault, vaultID); err != nil {
			return vault.Request{}, fmt.Errorf("request %s: %w", r.ID, err)
		}
	}
	r.Params, r.Decider, r.State = Str(params), Str(decider), vault.RequestState(state)
	r.Created, r.Expires, r.Decided = FromUnixNano(created), FromUnixNano(expires), FromNullUnixNano(decided)
	return r, nil
}

// Decision checks that a request can be moved to state (approved,
// rejected or expired) at at, and returns at as stored.
func Decision(id string, state vault.RequestState, at time.Time) (int64, error) {
	switch state {
	case vault.RequestApproved, vault.RequestRejected, vault.RequestExpired:
	default:
		return 0, fmt.Errorf("decide request %s: cannot move it to state %q", id, state)
	}
	decided, err := UnixNano(at)
	if err != nil {
		return 0, fmt.Errorf("decide request %s: %w", id, err)
	}
	return decided, nil
}

// Pending returns nil if a request in state cur (as read in the deciding
// transaction) may be decided, ErrConflict naming its state if not.
func Pending(cur string) error {
	if vault.RequestState(cur) != vault.RequestPending {
		return fmt.Errorf("request is %s, not pending: %w", cur, vault.ErrConflict)
	}
	return nil
}

// ChainTx is what the snapshot chain's rules need of the write
// transaction that appends to a vault's chain: each method reads or
// changes the vault's rows in that transaction.
type ChainTx interface {
	// InsertSnapshot records s (ErrExists, ErrNotFound as AddSnapshot).
	InsertSnapshot(s vault.SnapshotRecord) error
	// SetSettings replaces the vault's settings (as SetSettings).
	SetSettings(s vault.VaultSettings) error
	// SnapshotDeleted reports whether snapshot id is soft-deleted,
	// ErrNotFound if there is no such snapshot. The row must stay as
	// read until the transaction ends (a row lock where other writers
	// are not held off otherwise).
	SnapshotDeleted(id vault.ID) (bool, error)
	// ForgetSnapshot records that snapshot id was soft-deleted at at
	// (Unix nanoseconds) by by (NULL for nil).
	ForgetSnapshot(id vault.ID, at int64, by *string) error
	// UndeleteSnapshot clears snapshot id's soft deletion.
	UndeleteSnapshot(id vault.ID) error
	// RemoveSnapshot deletes snapshot id's row.
	RemoveSnapshot(id vault.ID) error
	// InsertEntry records chain entry e, whose time is tm (Unix
	// nanoseconds).
	InsertEntry(e vault.ChainEntry, tm int64) error
}

// AppendChain appends entries to a chain whose last entry is head,
// through tx: each entry must follow the one before without a gap
// (ErrConflict), and the change it describes is made to the snapshot
// records: an added (or recovered) snapshot's record is taken from rows,
// a settings entry's settings are written with it, and a forget,
// undelete or remove must find its snapshot as its kind needs (live or
// soft-deleted, else ErrConflict), so that racing writers cannot both
// forget, undelete or remove one snapshot.
func AppendChain(tx ChainTx, head vault.ChainEntry, entries []vault.ChainEntry, rows []vault.SnapshotRecord) error {
	byID := map[vault.ID]vault.SnapshotRecord{}
	for _, r := range rows {
		byID[r.ID] = r
	}
	next := head.Seq + 1
	for _, e := range entries {
		if e.Seq != next {
			return fmt.Errorf("chain entry %d: want entry %d next: %w", e.Seq, next, vault.ErrConflict)
		}
		next++
		if err := applyEntry(tx, e, byID); err != nil {
			return fmt.Errorf("chain entry %d (%s of snapshot %s): %w", e.Seq, e.Kind, e.Snapshot, err)
		}
		tm, err := UnixNano(e.Time)
		if err != nil {
			return fmt.Errorf("chain entry %d: %w", e.Seq, err)
		}
		if err := tx.InsertEntry(e, tm); err != nil {
			return fmt.Errorf("chain entry %d: %w", e.Seq, err)
		}
	}
	return nil
}

// applyEntry makes the change e describes to the snapshot records.
func applyEntry(tx ChainTx, e vault.ChainEntry, rows map[vault.ID]vault.SnapshotRecord) error {
	switch e.Kind {
	case vault.ChainAdd, vault.ChainRecover:
		s, ok := rows[e.Snapshot]
		if !ok {
			return errors.New("no record given for the snapshot added")
		}
		return tx.InsertSnapshot(s)
	case vault.ChainSettings:
		// The settings the entry's digest binds, written in the entry's
		// transaction so that the row and the chain never disagree after
		// a crash (docs/format.md §8.4).
		if e.Settings == nil {
			return errors.New("no settings given for the settings entry")
		}
		return tx.SetSettings(*e.Settings)
	case vault.ChainImport, vault.ChainImportForgotten, vault.ChainForget, vault.ChainUndelete, vault.ChainRemove:
	default:
		return fmt.Errorf("unknown kind %d", e.Kind)
	}
	// The record's state, read in this transaction: the entry must find
	// it as its kind needs.
	deleted, err := tx.SnapshotDeleted(e.Snapshot)
	if err != nil {
		return err
	}
	wantDeleted := e.Kind != vault.ChainImport && e.Kind != vault.ChainForget
	if deleted != wantDeleted {
		state := "live"
		if deleted {
			state = "soft-deleted"
		}
		return fmt.Errorf("the snapshot is %s: %w", state, vault.ErrConflict)
	}
	switch e.Kind {
	case vault.ChainImport, vault.ChainImportForgotten:
		return nil
	case vault.ChainForget:
		at, err := UnixNano(e.Time)
		if err != nil {
			return err
		}
		return tx.ForgetSnapshot(e.Snapshot, at, NullString(e.Principal))
	case vault.ChainUndelete:
		return tx.UndeleteSnapshot(e.Snapshot)
	case vault.ChainRemove:
		return tx.RemoveSnapshot(e.Snapshot)
	}
	return fmt.Errorf("unknown kind %d", e.Kind)
}

// ChainColumns are the columns ScanChainEntry reads.
const ChainColumns = `seq, kind, snapshot, time, principal, digest, mac`

// ScanChainEntry reads a row of ChainColumns.
func ScanChainEntry(row Scanner) (vault.ChainEntry, error) {
	var (
		e                 vault.ChainEntry
		seq, kind, tm     int64
		snap, digest, mac []byte
	)
	if err := row.Scan(&seq, &kind, &snap, &tm, &e.Principal, &digest, &mac); err != nil {
		return vault.ChainEntry{}, err
	}
	if len(digest) != len(e.Digest) || len(mac) != len(e.MAC) {
		return vault.ChainEntry{}, fmt.Errorf("entry %d: bad digest or MAC length", seq)
	}
	if err := ScanID(&e.Snapshot, snap); err != nil {
		return vault.ChainEntry{}, fmt.Errorf("entry %d: %w", seq, err)
	}
	e.Seq, e.Kind, e.Time = uint64(seq), vault.ChainKind(kind), FromUnixNano(tm)
	copy(e.Digest[:], digest)
	copy(e.MAC[:], mac)
	return e, nil
}

// maxGeneration is the highest keyring generation a catalog stores
// (an INTEGER column, with room to spare).
const maxGeneration = 1 << 62

// Proposal checks keyring proposal p and returns its time as stored.
func Proposal(p vault.KeyProposal) (int64, error) {
	t, err := UnixNano(p.Time)
	if err != nil {
		return 0, fmt.Errorf("propose keyring generation %d: %w", p.Generation, err)
	}
	if p.Generation == 0 || p.Generation > maxGeneration {
		return 0, fmt.Errorf("propose keyring generation %d: out of range", p.Generation)
	}
	return t, nil
}

// ScanProposal reads a row of generation, mac, time.
func ScanProposal(row Scanner) (vault.KeyProposal, error) {
	var p vault.KeyProposal
	var gen, t int64
	var mac []byte
	if err := row.Scan(&gen, &mac, &t); err != nil {
		return vault.KeyProposal{}, err
	}
	if len(mac) != len(p.MAC) {
		return vault.KeyProposal{}, fmt.Errorf("%w: stored MAC of %d bytes", vault.ErrCorrupt, len(mac))
	}
	p.Generation, p.Time = uint64(gen), FromUnixNano(t)
	copy(p.MAC[:], mac)
	return p, nil
}

// Anchor checks that anchor a may replace the anchor at generation prev
// (ErrConflict unless a's generation follows it) and returns a's time as
// stored.
func Anchor(a vault.KeyAnchor, prev uint64) (int64, error) {
	t, err := UnixNano(a.Time)
	if err != nil {
		return 0, fmt.Errorf("set key anchor: %w", err)
	}
	if a.Generation <= prev || a.Generation > maxGeneration {
		return 0, fmt.Errorf("set key anchor: %w: generation %d does not follow %d", vault.ErrConflict, a.Generation, prev)
	}
	return t, nil
}

// AnchorAt returns nil if the anchor read in the setting transaction, at
// generation cur (0 for none), is at prev; ErrConflict if another key
// holder moved it.
func AnchorAt(cur int64, prev uint64) error {
	if uint64(cur) != prev {
		return fmt.Errorf("%w: the anchor is at generation %d, not %d (another key holder changed the keys)", vault.ErrConflict, cur, prev)
	}
	return nil
}

// AnchorColumns are the columns ScanAnchor reads.
const AnchorColumns = `generation, mac, root_commit, kek_provider, kek_id, kek_version, alg, time`

// ScanAnchor reads a row of AnchorColumns.
func ScanAnchor(row Scanner) (vault.KeyAnchor, error) {
	var a vault.KeyAnchor
	var gen, t int64
	var mac, commit []byte
	if err := row.Scan(&gen, &mac, &commit, &a.KEK.Provider, &a.KEK.KeyID, &a.KEK.Version, &a.Alg, &t); err != nil {
		return vault.KeyAnchor{}, err
	}
	if len(mac) != len(a.MAC) || len(commit) != len(a.RootCommit) {
		return vault.KeyAnchor{}, fmt.Errorf("%w: stored MAC or commitment of the wrong size", vault.ErrCorrupt)
	}
	a.Generation, a.Time = uint64(gen), FromUnixNano(t)
	copy(a.MAC[:], mac)
	copy(a.RootCommit[:], commit)
	return a, nil
}
