// Package audit provides the server's tamper-evident audit log: entries
// (who did what to which vault, from where, with what outcome) appended to
// a Merkle tree log (golang.org/x/mod/sumdb/tlog, the design of Go's
// checksum database and Certificate Transparency), checkpoints of the tree
// signed with the server's Ed25519 key as notes (golang.org/x/mod/sumdb/note),
// verification of a stored log, and an export archive that verifies
// offline. docs/audit.md is the specification.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

// Outcomes of a request. Callers may record others; these are the ones
// Coffer uses.
const (
	OutcomeOK      = "ok"      // done
	OutcomeDenied  = "denied"  // not authenticated or not allowed
	OutcomeRefused = "refused" // allowed, but a rule refused it (immutability, a pending approval, a bad argument)
	OutcomeFailed  = "failed"  // allowed and attempted, but it failed
)

// Redacted replaces a secret in an entry.
const Redacted = "[redacted]"

// Errors callers branch on.
var (
	// ErrConflict: an append named a start index other than the log's
	// size (another writer appended first).
	ErrConflict = errors.New("audit log changed concurrently")
	// ErrExists: a checkpoint of that size is stored already.
	ErrExists = errors.New("audit checkpoint exists")
	// ErrNotFound: no such checkpoint, or a stored hash is missing.
	ErrNotFound = errors.New("not found")
	// ErrKeyMismatch: the log's checkpoints are signed by another key
	// than the one given.
	ErrKeyMismatch = errors.New("audit signing key does not match the log")
	// ErrCheckpoint wraps the failure of a checkpoint that Append wrote
	// because one was due; the entry itself was stored.
	ErrCheckpoint = errors.New("audit checkpoint failed")
	// ErrTampered is returned by Report.Err when verification found
	// problems.
	ErrTampered = errors.New("audit log does not verify")
)

// Entry is one audited event. Callers pass parameters already redacted:
// an entry never carries a secret (a token, a PIN, a key, a password).
// Log.Append scrubs every field once more (Scrub) as a safety net.
type Entry struct {
	Time      time.Time         // when it happened; Append sets it when zero
	Principal string            // token ID, "system", or "" when unauthenticated
	Token     string            // the public ID of the token that acted, "" when none
	Source    string            // client address
	Vault     string            // vault name, "" for server-wide operations
	Op        string            // operation, e.g. "snapshot.forget"; required
	Params    map[string]string // redacted parameters; nil when none
	Outcome   string            // OutcomeOK, OutcomeDenied…; required
	Detail    string            // error message or note, "" when none
}

// wireEntry fixes the record's field order. Times are RFC 3339 in UTC
// with nanoseconds and no trailing zeros (time.RFC3339Nano); Params keys
// are sorted (encoding/json sorts map keys) and the object is omitted
// when empty, as is an empty Detail.
type wireEntry struct {
	Time      string            `json:"time"`
	Principal string            `json:"principal"`
	Token     string            `json:"token,omitempty"`
	Source    string            `json:"source"`
	Vault     string            `json:"vault"`
	Op        string            `json:"op"`
	Params    map[string]string `json:"params,omitempty"`
	Outcome   string            `json:"outcome"`
	Detail    string            `json:"detail,omitempty"`
}

// MaxRecord is the largest record Append writes and a verifier accepts.
// Append truncates fields so that an entry never gets there (the field
// limits below, even with every byte escaped as \u00XX in JSON).
const MaxRecord = 1 << 20

// Field limits: Append truncates longer values (marking them) rather
// than refuse the entry, so that a client cannot keep its own request out
// of the log by making it large.
const (
	maxField  = 1024 // principal, source, vault, op, outcome, a param key or value
	maxDetail = 4096
	maxParams = 64
)

// MarshalRecord returns e's record: the bytes the log stores and hashes.
// The encoding is canonical (ParseRecord(r) re-encodes to r): one line of
// JSON, field order fixed, times in UTC. Strings must be valid UTF-8.
func (e Entry) MarshalRecord() ([]byte, error) {
	if e.Op == "" || e.Outcome == "" {
		return nil, errors.New("audit entry: op and outcome must be set")
	}
	if e.Time.IsZero() {
		return nil, errors.New("audit entry: time must be set")
	}
	if y := e.Time.UTC().Year(); y < 1 || y > 9999 {
		return nil, fmt.Errorf("audit entry: time %v out of range", e.Time)
	}
	w := wireEntry{
		Time: e.Time.UTC().Format(time.RFC3339Nano), Principal: e.Principal, Token: e.Token, Source: e.Source, Vault: e.Vault,
		Op: e.Op, Params: e.Params, Outcome: e.Outcome, Detail: e.Detail,
	}
	if len(w.Params) == 0 {
		w.Params = nil
	}
	for _, s := range e.strings() {
		if !utf8.ValidString(s) {
			return nil, errors.New("audit entry: invalid UTF-8")
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // deterministic either way; this keeps <, >, & readable
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("audit entry: %w", err)
	}
	r := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	if len(r) > MaxRecord {
		return nil, fmt.Errorf("audit entry: record of %d bytes exceeds %d", len(r), MaxRecord)
	}
	return r, nil
}

// strings returns every string of e, params' keys and values included.
func (e *Entry) strings() []string {
	ss := []string{e.Principal, e.Token, e.Source, e.Vault, e.Op, e.Outcome, e.Detail}
	for k, v := range e.Params {
		ss = append(ss, k, v)
	}
	return ss
}

// ParseRecord decodes a record. It accepts only the canonical encoding
// MarshalRecord produces: unknown fields, duplicate keys, other spacing
// or time formats are errors, so one entry has exactly one record.
func ParseRecord(r []byte) (Entry, error) {
	if len(r) > MaxRecord {
		return Entry{}, fmt.Errorf("audit record: %d bytes exceeds %d", len(r), MaxRecord)
	}
	dec := json.NewDecoder(bytes.NewReader(r))
	dec.DisallowUnknownFields()
	var w wireEntry
	if err := dec.Decode(&w); err != nil {
		return Entry{}, fmt.Errorf("audit record: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return Entry{}, fmt.Errorf("audit record: time: %w", err)
	}
	e := Entry{Time: t.UTC(), Principal: w.Principal, Token: w.Token, Source: w.Source, Vault: w.Vault,
		Op: w.Op, Params: w.Params, Outcome: w.Outcome, Detail: w.Detail}
	again, err := e.MarshalRecord()
	if err != nil {
		return Entry{}, fmt.Errorf("audit record: %w", err)
	}
	if !bytes.Equal(again, r) {
		return Entry{}, errors.New("audit record: not in canonical form")
	}
	return e, nil
}

// secretValue matches what must never be stored even when a caller
// forgot to redact it: a Coffer bearer token (cft_ and 43 base64url
// characters; 20 or more are hidden, so that a truncated or mistyped
// token, which is still mostly secret, goes too) and a PKCS#11
// pin-value in a key URI.
var secretValue = regexp.MustCompile(`cft_[A-Za-z0-9_-]{20,}|(?i:pin-value=)[^&;\s]*`)

// Scrub returns s with anything that looks like a secret (a Coffer
// token, a pin-value=… URI attribute) replaced, and invalid UTF-8
// replaced by U+FFFD. It is a safety net; callers redact first.
func Scrub(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return secretValue.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "cft_") {
			return "cft_" + Redacted
		}
		return m[:len("pin-value=")] + Redacted
	})
}

// secretParam reports whether a parameter named k holds a secret by its
// name alone: its value is replaced whatever it is.
func secretParam(k string) bool {
	k = strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(k)) // client_secret, query.password
	for _, s := range []string{"password", "passphrase", "secret", "pin", "pin-value", "private-key", "authorization", "bearer"} {
		if k == s || strings.HasSuffix(k, "-"+s) {
			return true
		}
	}
	return false
}

// clean returns e with every field scrubbed (Scrub), secret-named params
// redacted, and long fields truncated; it never changes e's maps.
func clean(e Entry) Entry {
	e.Principal = truncate(Scrub(e.Principal), maxField)
	e.Token = truncate(Scrub(e.Token), maxField)
	e.Source = truncate(Scrub(e.Source), maxField)
	e.Vault = truncate(Scrub(e.Vault), maxField)
	e.Op = truncate(Scrub(e.Op), maxField)
	e.Outcome = truncate(Scrub(e.Outcome), maxField)
	e.Detail = truncate(Scrub(e.Detail), maxDetail)
	if len(e.Params) == 0 {
		e.Params = nil
		return e
	}
	keys := make([]string, 0, len(e.Params))
	for k := range e.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	p := make(map[string]string, min(len(keys), maxParams+1))
	for i, k := range keys {
		if i == maxParams {
			p["…"] = fmt.Sprintf("%d more parameters not recorded", len(keys)-maxParams)
			break
		}
		v := e.Params[k]
		if secretParam(k) {
			v = Redacted
		}
		p[truncate(Scrub(k), maxField)] = truncate(Scrub(v), maxField)
	}
	e.Params = p
	return e
}

// truncate cuts s to at most max bytes on a rune boundary, marking the
// cut.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "…(truncated)"
	n := max - len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

// Record is a stored record and its index in the log.
type Record struct {
	Index int64
	Data  []byte
}

// StoredHash is a stored tlog hash and its storage index
// (tlog.StoredHashIndex).
type StoredHash struct {
	Index int64
	Hash  tlog.Hash
}

// Checkpoint is a signed tree head as stored: a note whose text is
// tlog.FormatTree of the tree (size and root hash), signed by the audit
// key. Size repeats the note's tree size so that stores can order and
// find checkpoints; verification checks the two agree. Time is when it
// was written; it is not signed.
type Checkpoint struct {
	Size int64
	Note string
	Time time.Time
}

// Store keeps an audit log. Records and hashes are only ever added:
// implementations offer no way to change or remove them. The SQLite
// catalog implements it (internal/catalog/sqlite); audittest.TestStore is
// its conformance suite.
type Store interface {
	// AuditSize returns the number of records: one more than the
	// highest index stored, 0 when none.
	AuditSize(ctx context.Context) (int64, error)

	// AppendAudit stores records at indexes start, start+1, … and hashes
	// at tlog storage indexes tlog.StoredHashCount(start), … in one
	// transaction. It fails with ErrConflict, storing nothing, unless
	// the log holds exactly start records and
	// tlog.StoredHashCount(start) hashes: so two appenders never
	// interleave or reuse an index, and the caller, which computed the
	// hashes for start, retries with the new size. It fails without
	// storing anything if len(hashes) is not
	// tlog.StoredHashCount(start+len(records)) - tlog.StoredHashCount(start).
	AppendAudit(ctx context.Context, start int64, records [][]byte, hashes []tlog.Hash) error

	// AuditRecords returns up to n stored records with index >= from,
	// in index order. Missing indexes are skipped, not filled in, so a
	// verifier sees gaps.
	AuditRecords(ctx context.Context, from int64, n int) ([]Record, error)

	// AuditHashes returns the stored hashes at the given storage
	// indexes, in the same order; ErrNotFound if any is missing.
	AuditHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error)

	// AuditHashRange returns up to n stored hashes with storage index >=
	// from, in index order, skipping missing ones.
	AuditHashRange(ctx context.Context, from int64, n int) ([]StoredHash, error)

	// AddAuditCheckpoint stores c; ErrExists if a checkpoint of size
	// c.Size is stored already. c.Size must be positive.
	AddAuditCheckpoint(ctx context.Context, c Checkpoint) error

	// AuditCheckpoints returns up to n stored checkpoints with size >=
	// from, by increasing size.
	AuditCheckpoints(ctx context.Context, from int64, n int) ([]Checkpoint, error)

	// LatestAuditCheckpoint returns the stored checkpoint of the
	// greatest size; ErrNotFound if there is none.
	LatestAuditCheckpoint(ctx context.Context) (Checkpoint, error)
}

// hashReader adapts a Store to tlog.HashReader.
type hashReader struct {
	ctx   context.Context
	store Store
}

func (r hashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	return r.store.AuditHashes(r.ctx, indexes)
}
