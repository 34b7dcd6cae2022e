// Package catalog holds what the SQL catalogs (internal/catalog/sqlite
// and internal/catalog/postgres) share above their SQL: how records
// become the values of a row and back, what a record must hold to be
// stored, and the rules of the snapshot chain, the keyring anchor and
// multi-user requests. Each catalog keeps its own statements, locks and
// error codes; what both must decide alike is decided here, once.
//
// Values are written as the arguments of a statement and read through a
// Scanner (a *sql.Row or *sql.Rows, a pgx.Row or pgx.Rows). A NULL is a
// nil pointer both ways, which both database/sql and pgx accept.
package catalog

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Scanner reads one row: *sql.Row, *sql.Rows, pgx.Row and pgx.Rows are
// Scanners.
type Scanner interface {
	Scan(dest ...any) error
}

// Time columns hold Unix nanoseconds, which cover the years 1678 to 2262.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// UnixNano returns t as stored: Unix nanoseconds; an error for a time
// outside the years 1678 to 2262 (the zero time among them).
func UnixNano(t time.Time) (int64, error) {
	if t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("time %v out of range", t)
	}
	return t.UnixNano(), nil
}

// FromUnixNano returns the time stored as ns, in UTC.
func FromUnixNano(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// NullUnixNano is UnixNano with NULL (nil) for the zero time.
func NullUnixNano(t time.Time) (*int64, error) {
	if t.IsZero() {
		return nil, nil
	}
	ns, err := UnixNano(t)
	if err != nil {
		return nil, err
	}
	return &ns, nil
}

// FromNullUnixNano is FromUnixNano with the zero time for NULL.
func FromNullUnixNano(ns *int64) time.Time {
	if ns == nil {
		return time.Time{}
	}
	return FromUnixNano(*ns)
}

// NullString returns s, or NULL for "".
func NullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Str returns *s, or "" for NULL.
func Str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// NullBytes returns b, or NULL for nil.
func NullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// ScanID copies a stored ID into dst; an error unless b has IDSize bytes.
func ScanID(dst *vault.ID, b []byte) error {
	if len(b) != vault.IDSize {
		return fmt.Errorf("stored ID has %d bytes, want %d", len(b), vault.IDSize)
	}
	copy(dst[:], b)
	return nil
}

// JSONStrings encodes ss as a JSON array, [] when empty.
func JSONStrings(ss []string) (string, error) {
	if ss == nil {
		ss = []string{}
	}
	b, err := json.Marshal(ss)
	return string(b), err
}

// copySize is the size of a stored vault.SnapshotCopy: the source vault,
// the source snapshot and the time of the copy (little-endian Unix
// nanoseconds).
const copySize = 2*vault.IDSize + 8

func encodeCopy(c *vault.SnapshotCopy) []byte {
	if c == nil {
		return nil // NULL unless a copy
	}
	b := make([]byte, 0, copySize)
	b = append(append(b, c.Vault[:]...), c.Snapshot[:]...)
	return binary.LittleEndian.AppendUint64(b, uint64(c.Time.UnixNano()))
}

func decodeCopy(b []byte) (*vault.SnapshotCopy, error) {
	if b == nil {
		return nil, nil
	}
	if len(b) != copySize {
		return nil, fmt.Errorf("copy of %d bytes", len(b))
	}
	c := &vault.SnapshotCopy{Time: FromUnixNano(int64(binary.LittleEndian.Uint64(b[2*vault.IDSize:])))}
	copy(c.Vault[:], b[:vault.IDSize])
	copy(c.Snapshot[:], b[vault.IDSize:2*vault.IDSize])
	return c, nil
}

// SnapshotInsertColumns are the columns of a snapshot's row, in the order
// of SnapshotArgs.
const SnapshotInsertColumns = `vault, id, time, host, paths, tags, tree, parent, files, dirs, bytes, bytes_added, duration_ns, deleted, deleted_by, domain, copy`

// SnapshotArgs returns the values of s's row in vault, in the order of
// SnapshotInsertColumns. Deleted and DeletedBy are recorded as given,
// DeletedBy only with Deleted.
func SnapshotArgs(vaultID vault.ID, s vault.SnapshotRecord) ([]any, error) {
	tm, err := UnixNano(s.Time)
	if err != nil {
		return nil, fmt.Errorf("add snapshot %s: %w", s.ID, err)
	}
	paths, err := JSONStrings(s.Paths)
	if err != nil {
		return nil, fmt.Errorf("add snapshot %s: %w", s.ID, err)
	}
	tags, err := JSONStrings(s.Tags)
	if err != nil {
		return nil, fmt.Errorf("add snapshot %s: %w", s.ID, err)
	}
	var parent []byte // NULL when none
	if !s.Parent.IsZero() {
		parent = s.Parent[:]
	}
	deleted, err := NullUnixNano(s.Deleted)
	if err != nil {
		return nil, fmt.Errorf("add snapshot %s: deleted: %w", s.ID, err)
	}
	var deletedBy *string // NULL while live
	if !s.Deleted.IsZero() {
		deletedBy = NullString(s.DeletedBy)
	}
	return []any{vaultID[:], s.ID[:], tm, s.Host, paths, tags, s.Tree[:], parent,
		int64(s.Files), int64(s.Dirs), int64(s.Bytes), int64(s.BytesAdded), int64(s.Duration), deleted, deletedBy, s.Domain, encodeCopy(s.Copy)}, nil
}

// SnapshotColumns are the columns ScanSnapshot reads.
const SnapshotColumns = `id, time, host, paths, tags, tree, parent, files, dirs, bytes, bytes_added, duration_ns, deleted, deleted_by, domain, copy`

// ScanSnapshot reads a row of SnapshotColumns. Empty Paths and Tags are
// nil.
func ScanSnapshot(row Scanner) (vault.SnapshotRecord, error) {
	var (
		s                                     vault.SnapshotRecord
		id, tree, parent, cp                  []byte
		paths, tags                           string
		tm, files, dirs, nbytes, added, durNS int64
		deleted                               *int64
		deletedBy                             *string
	)
	err := row.Scan(&id, &tm, &s.Host, &paths, &tags, &tree, &parent, &files, &dirs, &nbytes, &added, &durNS, &deleted, &deletedBy, &s.Domain, &cp)
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	if s.Copy, err = decodeCopy(cp); err != nil {
		return vault.SnapshotRecord{}, err
	}
	if err := ScanID(&s.ID, id); err != nil {
		return vault.SnapshotRecord{}, err
	}
	if err := ScanID(&s.Tree, tree); err != nil {
		return vault.SnapshotRecord{}, fmt.Errorf("snapshot %s: %w", s.ID, err)
	}
	if parent != nil {
		if err := ScanID(&s.Parent, parent); err != nil {
			return vault.SnapshotRecord{}, fmt.Errorf("snapshot %s: %w", s.ID, err)
		}
	}
	if err := json.Unmarshal([]byte(paths), &s.Paths); err != nil {
		return vault.SnapshotRecord{}, fmt.Errorf("snapshot %s: paths: %w", s.ID, err)
	}
	if err := json.Unmarshal([]byte(tags), &s.Tags); err != nil {
		return vault.SnapshotRecord{}, fmt.Errorf("snapshot %s: tags: %w", s.ID, err)
	}
	if len(s.Paths) == 0 {
		s.Paths = nil
	}
	if len(s.Tags) == 0 {
		s.Tags = nil
	}
	s.Time = FromUnixNano(tm)
	s.Files, s.Dirs, s.Bytes, s.BytesAdded = uint64(files), uint64(dirs), uint64(nbytes), uint64(added)
	s.Duration = time.Duration(durNS)
	s.Deleted, s.DeletedBy = FromNullUnixNano(deleted), Str(deletedBy)
	return s, nil
}

// PackTimes checks that p and its blobs can be recorded together and
// returns p's creation and condemnation times as stored. Every blob's
// Pack must be p.ID, and no two blobs may claim the same offset (ErrExists
// naming the second: the primary key would refuse it too, without saying
// which blob).
func PackTimes(p vault.PackRecord, blobs []vault.BlobRecord) (created int64, condemned *int64, err error) {
	if created, err = UnixNano(p.Created); err != nil {
		return 0, nil, fmt.Errorf("add pack %s: %w", p.ID, err)
	}
	if condemned, err = NullUnixNano(p.Condemned); err != nil {
		return 0, nil, fmt.Errorf("add pack %s: condemned: %w", p.ID, err)
	}
	offsets := make(map[uint32]struct{}, len(blobs))
	for _, b := range blobs {
		if b.Pack != p.ID {
			return 0, nil, fmt.Errorf("add pack %s: blob %s names pack %s", p.ID, b.ID, b.Pack)
		}
		if _, dup := offsets[b.Offset]; dup {
			return 0, nil, fmt.Errorf("add pack %s: blob %s at offset %d: %w", p.ID, b.ID, b.Offset, vault.ErrExists)
		}
		offsets[b.Offset] = struct{}{}
	}
	return created, condemned, nil
}

// TokenColumns are the columns of a token's row, in the order of
// TokenArgs and ScanToken.
const TokenColumns = `id, hash, name, role, vault, created, expires, revoked, created_by, principal`

// TokenArgs returns the values of t's row, in the order of TokenColumns;
// an error if ID or Role is unset or a time is out of range.
func TokenArgs(t vault.TokenRecord) ([]any, error) {
	if t.ID == "" || t.Role == "" {
		return nil, fmt.Errorf("add token %q: ID and role must be set", t.ID)
	}
	created, err := UnixNano(t.Created)
	if err != nil {
		return nil, fmt.Errorf("add token %s: created: %w", t.ID, err)
	}
	expires, err := NullUnixNano(t.Expires)
	if err != nil {
		return nil, fmt.Errorf("add token %s: expires: %w", t.ID, err)
	}
	revoked, err := NullUnixNano(t.Revoked)
	if err != nil {
		return nil, fmt.Errorf("add token %s: revoked: %w", t.ID, err)
	}
	return []any{t.ID, t.Hash[:], t.Name, t.Role, NullString(t.Vault), created, expires, revoked, NullString(t.CreatedBy), NullString(t.Principal)}, nil
}

// ScanToken reads a row of TokenColumns.
func ScanToken(row Scanner) (vault.TokenRecord, error) {
	var (
		t                    vault.TokenRecord
		hash                 []byte
		vaultName, by, princ *string
		created              int64
		expires, revoked     *int64
	)
	if err := row.Scan(&t.ID, &hash, &t.Name, &t.Role, &vaultName, &created, &expires, &revoked, &by, &princ); err != nil {
		return vault.TokenRecord{}, err
	}
	if len(hash) != len(t.Hash) {
		return vault.TokenRecord{}, fmt.Errorf("token %s: stored hash has %d bytes, want %d", t.ID, len(hash), len(t.Hash))
	}
	copy(t.Hash[:], hash)
	t.Vault, t.CreatedBy, t.Principal = Str(vaultName), Str(by), Str(princ)
	t.Created = FromUnixNano(created)
	t.Expires, t.Revoked = FromNullUnixNano(expires), FromNullUnixNano(revoked)
	return t, nil
}

// KeyEventInsertColumns are the columns of a key event's row, in the
// order of KeyEventArgs.
const KeyEventInsertColumns = `vault, time, principal, event, kek, detail, ok`

// KeyEventArgs returns the values of e's row, in the order of
// KeyEventInsertColumns; an error if Event is unset or Time out of range.
func KeyEventArgs(e vault.KeyEvent) ([]any, error) {
	if e.Event == "" {
		return nil, fmt.Errorf("add key event: event must be set")
	}
	tm, err := UnixNano(e.Time)
	if err != nil {
		return nil, fmt.Errorf("add key event %s: %w", e.Event, err)
	}
	return []any{e.Vault[:], tm, e.Principal, e.Event, e.KEK, e.Detail, e.OK}, nil
}

// KeyEventColumns are the columns ScanKeyEvent reads.
const KeyEventColumns = `time, principal, event, kek, detail, ok`

// ScanKeyEvent reads a row of KeyEventColumns into an event of vault v.
func ScanKeyEvent(row Scanner, v vault.ID) (vault.KeyEvent, error) {
	e := vault.KeyEvent{Vault: v}
	var tm int64
	if err := row.Scan(&tm, &e.Principal, &e.Event, &e.KEK, &e.Detail, &e.OK); err != nil {
		return vault.KeyEvent{}, err
	}
	e.Time = FromUnixNano(tm)
	return e, nil
}

// VaultEventInsertColumns are the columns of a vault event's row, in the
// order of VaultEventArgs.
const VaultEventInsertColumns = `vault, time, principal, event, detail, ok`

// VaultEventArgs returns the values of e's row, in the order of
// VaultEventInsertColumns; an error if Event is unset or Time out of
// range.
func VaultEventArgs(e vault.VaultEvent) ([]any, error) {
	if e.Event == "" {
		return nil, fmt.Errorf("add vault event: event must be set")
	}
	tm, err := UnixNano(e.Time)
	if err != nil {
		return nil, fmt.Errorf("add vault event %s: %w", e.Event, err)
	}
	return []any{e.Vault[:], tm, e.Principal, e.Event, e.Detail, e.OK}, nil
}

// VaultEventColumns are the columns ScanVaultEvent reads.
const VaultEventColumns = `time, principal, event, detail, ok`

// ScanVaultEvent reads a row of VaultEventColumns into an event of vault
// v.
func ScanVaultEvent(row Scanner, v vault.ID) (vault.VaultEvent, error) {
	e := vault.VaultEvent{Vault: v}
	var tm int64
	if err := row.Scan(&tm, &e.Principal, &e.Event, &e.Detail, &e.OK); err != nil {
		return vault.VaultEvent{}, err
	}
	e.Time = FromUnixNano(tm)
	return e, nil
}

// SessionInsertColumns are the columns of a session's row, in the order
// of SessionArgs.
const SessionInsertColumns = `id, vault, kind, principal, started, touched`

// SessionArgs returns the values of s's row in vault, in the order of
// SessionInsertColumns; an error if ID or Started is unset or a time out
// of range. A zero Touched is recorded as Started.
func SessionArgs(vaultID vault.ID, s vault.Session) ([]any, error) {
	if s.ID == "" {
		return nil, fmt.Errorf("begin session: ID must be set")
	}
	started, err := UnixNano(s.Started)
	if err != nil {
		return nil, fmt.Errorf("begin session %s: started: %w", s.ID, err)
	}
	touched := started
	if !s.Touched.IsZero() {
		if touched, err = UnixNano(s.Touched); err != nil {
			return nil, fmt.Errorf("begin session %s: touched: %w", s.ID, err)
		}
	}
	return []any{s.ID, vaultID[:], s.Kind, s.Principal, started, touched}, nil
}

// SessionColumns are the columns ScanSession reads.
const SessionColumns = `id, kind, principal, started, touched`

// ScanSession reads a row of SessionColumns.
func ScanSession(row Scanner) (vault.Session, error) {
	var (
		s                vault.Session
		started, touched int64
	)
	if err := row.Scan(&s.ID, &s.Kind, &s.Principal, &started, &touched); err != nil {
		return vault.Session{}, err
	}
	s.Started, s.Touched = FromUnixNano(started), FromUnixNano(touched)
	return s, nil
}

// SettingsInsertColumns are the columns of a vault's settings row, in
// the order of SettingsArgs.
const SettingsInsertColumns = `vault, soft_delete, soft_delete_days, immutability, min_retention_ns, single_user, policy, updated, dedup_scope`

// SettingsArgs returns the values of vault's settings row, in the order
// of SettingsInsertColumns; an error if s.Updated is out of range (the
// zero time among them). What values are allowed the schema judges.
func SettingsArgs(vaultID vault.ID, s vault.VaultSettings) ([]any, error) {
	updated, err := UnixNano(s.Updated)
	if err != nil {
		return nil, fmt.Errorf("set settings of vault %s: updated: %w", vaultID, err)
	}
	return []any{vaultID[:], string(s.SoftDelete), int64(s.SoftDeleteDays), string(s.Immutability), int64(s.MinRetention),
		s.SingleUser, s.Policy, updated, string(s.DedupScope.OrDefault())}, nil
}

// InvalidSettings is the error of settings the schema refused (err).
func InvalidSettings(vaultID vault.ID, s vault.VaultSettings, err error) error {
	return fmt.Errorf("set settings of vault %s: invalid settings (soft delete %q for %d days, immutability %q, minimum retention %v, dedup scope %q): %w",
		vaultID, s.SoftDelete, s.SoftDeleteDays, s.Immutability, s.MinRetention, s.DedupScope, err)
}

// SettingsColumns are the columns ScanSettings reads: the settings row
// of a vault (s) left-joined to the vault's row, so that the vault's
// existence and its settings are read at once.
const SettingsColumns = `s.soft_delete, s.soft_delete_days, s.immutability, s.min_retention_ns,
	s.single_user, s.policy, s.updated, s.dedup_scope, s.vault IS NOT NULL`

// ScanSettings reads a row of SettingsColumns: the defaults (with a zero
// Updated) if the vault never set any.
func ScanSettings(row Scanner) (vault.VaultSettings, error) {
	var (
		softDelete, immutability, policy, scope *string
		days, minRetention, updated             *int64
		singleUser                              *bool
		settings                                bool
	)
	if err := row.Scan(&softDelete, &days, &immutability, &minRetention, &singleUser, &policy, &updated, &scope, &settings); err != nil {
		return vault.VaultSettings{}, err
	}
	if !settings {
		return vault.DefaultSettings(), nil
	}
	if days == nil || minRetention == nil || singleUser == nil || updated == nil {
		return vault.VaultSettings{}, fmt.Errorf("%w: a settings row with NULLs", vault.ErrCorrupt)
	}
	return vault.VaultSettings{
		SoftDelete:     vault.SoftDelete(Str(softDelete)),
		SoftDeleteDays: int(*days),
		Immutability:   vault.Immutability(Str(immutability)),
		MinRetention:   time.Duration(*minRetention),
		SingleUser:     *singleUser,
		Policy:         Str(policy),
		DedupScope:     vault.DedupScope(Str(scope)),
		Updated:        FromUnixNano(*updated),
	}, nil
}

// PrincipalColumns are the columns of a principal's row, in the order of
// ScanPrincipal.
const PrincipalColumns = `id, name, kind, password, created, created_by, password_by`

// ScanPrincipal reads a row of PrincipalColumns.
func ScanPrincipal(row Scanner) (vault.Principal, error) {
	var p vault.Principal
	var created int64
	if err := row.Scan(&p.ID, &p.Name, &p.Kind, &p.Password, &created, &p.CreatedBy, &p.PasswordBy); err != nil {
		return p, err
	}
	p.Created = FromUnixNano(created)
	return p, nil
}

// PickPrincipal returns the principal named name among found, the
// principals whose names equal it without regard to ASCII case: the only
// one, or the one spelled exactly so (an older catalog may hold case
// variants); ErrNotFound for none, ErrAmbiguous when no spelling wins.
func PickPrincipal(name string, found []vault.Principal) (vault.Principal, error) {
	switch len(found) {
	case 0:
		return vault.Principal{}, fmt.Errorf("principal %q: %w", name, vault.ErrNotFound)
	case 1:
		return found[0], nil
	}
	for _, p := range found {
		if p.Name == name {
			return p, nil
		}
	}
	return vault.Principal{}, fmt.Errorf("principal %q: %d principals have this name in another case; name it by its ID: %w", name, len(found), vault.ErrAmbiguous)
}

// Rows is what Collect needs of a query's result: *sql.Rows and
// pgx.Rows are Rows.
type Rows interface {
	Scanner
	Next() bool
	Err() error
}

// Collect reads every row of rows with scan, in order; nil for none. The
// caller closes rows.
func Collect[T any](rows Rows, scan func(Scanner) (T, error)) ([]T, error) {
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
