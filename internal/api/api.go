// Package api holds what the vault server and its HTTPS client share: the
// wire types, the binary record formats of the bulk endpoints, and the
// mapping between error codes and the vault's sentinel errors. The
// endpoints are described in docs/openapi.yaml.
package api

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Paths and limits.
const (
	// Prefix is the versioned root of the API.
	Prefix = "/v1"
	// MaxJSONBody bounds every JSON request body.
	MaxJSONBody = 1 << 20
	// MaxMissingIDs bounds one "which blobs are missing" request.
	MaxMissingIDs = 16384
	// MaxUploadBody bounds one blob upload request: the client sends
	// batches of a few MiB; a single blob may be up to 8 MiB and a bit.
	MaxUploadBody = 64 << 20
	// HeaderRawLength carries a blob's raw (decoded) length on download.
	HeaderRawLength = "X-Coffer-Raw-Length"
	// ContentBinary is the content type of the binary record formats.
	ContentBinary = "application/octet-stream"
)

// Error is the JSON body of every failed request.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Error codes. The client maps each back to the sentinel the engine would
// have returned in-process, so the CLI prints the same message and exits
// with the same code in local and remote mode.
const (
	CodeBadRequest      = "bad_request"
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "forbidden"
	CodeNotFound        = "not_found"
	CodeExists          = "exists"
	CodeAmbiguous       = "ambiguous"
	CodeKeyUnavailable  = "key_unavailable"
	CodeWrongKey        = "wrong_key"
	CodeCorrupt         = "corrupt"
	CodeTruncated       = "truncated"
	CodeImmutable       = "immutable"
	CodeConflict        = "conflict"
	CodeApproval        = "approval_required"
	CodeTooLarge        = "too_large"
	CodeTooMany         = "too_many_requests"
	CodeUnavailable     = "unavailable"
	CodeInternal        = "internal"
)

// Sentinels for the authentication codes; the server's authenticator
// wraps its own errors, the client returns these.
var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
	ErrBadRequest      = errors.New("bad request")
	ErrTooLarge        = errors.New("request too large")
	// ErrTooManyRequests (429): too many failed authentications from the
	// client's address; Retry-After says when to try again.
	ErrTooManyRequests = errors.New("too many requests")
	ErrUnavailable     = errors.New("server unavailable")
)

var codeErrs = []struct {
	code   string
	status int
	err    error
}{
	{CodeUnauthenticated, http.StatusUnauthorized, ErrUnauthenticated},
	{CodeTooMany, http.StatusTooManyRequests, ErrTooManyRequests},
	{CodeForbidden, http.StatusForbidden, ErrForbidden},
	{CodeNotFound, http.StatusNotFound, vault.ErrNotFound},
	{CodeExists, http.StatusConflict, vault.ErrExists},
	{CodeAmbiguous, http.StatusBadRequest, vault.ErrAmbiguous},
	{CodeKeyUnavailable, http.StatusServiceUnavailable, vault.ErrKeyUnavailable},
	{CodeWrongKey, http.StatusServiceUnavailable, vault.ErrWrongKey},
	{CodeCorrupt, http.StatusInternalServerError, vault.ErrCorrupt},
	{CodeTruncated, http.StatusInternalServerError, vault.ErrTruncated},
	{CodeImmutable, http.StatusForbidden, vault.ErrImmutable},
	{CodeConflict, http.StatusConflict, vault.ErrConflict},
	{CodeApproval, http.StatusForbidden, vault.ErrApprovalRequired},
	{CodeTooLarge, http.StatusRequestEntityTooLarge, ErrTooLarge},
	{CodeBadRequest, http.StatusBadRequest, ErrBadRequest},
	{CodeUnavailable, http.StatusServiceUnavailable, ErrUnavailable},
}

// Classify returns the code and HTTP status for err.
func Classify(err error) (code string, status int) {
	for _, c := range codeErrs {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return CodeTooLarge, http.StatusRequestEntityTooLarge
	}
	return CodeInternal, http.StatusInternalServerError
}

// RemoteError is an error the server reported. It wraps the sentinel its
// code stands for, so errors.Is works as in local mode.
type RemoteError struct {
	Status  int
	Code    string
	Message string
	wrapped error
}

func (e *RemoteError) Error() string { return e.Message }
func (e *RemoteError) Unwrap() error { return e.wrapped }

// DecodeError turns a failed response into a *RemoteError. It reads at
// most 64 KiB of the body.
func DecodeError(resp *http.Response) error {
	var body Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &body) != nil || body.Code == "" {
		body = Error{Code: CodeInternal, Message: fmt.Sprintf("server answered %s", resp.Status)}
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			body.Code = CodeUnauthenticated
		case http.StatusForbidden:
			body.Code = CodeForbidden
		case http.StatusNotFound:
			body.Code = CodeNotFound
		case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
			body.Code = CodeUnavailable
		}
	}
	return ErrorFromBody(resp.StatusCode, body)
}

// ErrorFromBody makes the *RemoteError an Error body stands for.
func ErrorFromBody(status int, body Error) error {
	re := &RemoteError{Status: status, Code: body.Code, Message: body.Message}
	for _, c := range codeErrs {
		if c.code == body.Code {
			re.wrapped = c.err
		}
	}
	return re
}

// VaultInfo describes a vault (GET /v1/vaults/{vault}).
type VaultInfo struct {
	Name        string    `json:"name"`
	ID          string    `json:"id"`
	Created     time.Time `json:"created"`
	Algorithm   string    `json:"algorithm"`
	KeySource   string    `json:"key_source"`
	KEKProvider string    `json:"kek_provider"`
	KEKID       string    `json:"kek_id"`
	KEKVersion  string    `json:"kek_version"`
	WrapAlg     string    `json:"wrap_alg"`
	DEKVersion  uint32    `json:"dek_version"`
	DEKCount    int       `json:"dek_count"`
	LastRotated time.Time `json:"last_rotated"`
	KeyringGen  uint64    `json:"keyring_generation"`
	Snapshots   int       `json:"snapshots"`
	Packs       int       `json:"packs"`
	StoredBytes int64     `json:"stored_bytes"`
	// KeyError says why the vault's key encryption key cannot be used;
	// empty when it can. The rest is then read from the store and the
	// catalog without the keys.
	KeyError string `json:"key_error,omitempty"`
}

// KeyStatus is the answer of GET /v1/vaults/{vault}/key: the vault's keys
// and whether its key encryption key works now (the server unwraps the
// vault's keys, and wraps and unwraps a test secret).
type KeyStatus struct {
	KEK        string `json:"kek"`
	KeySource  string `json:"key_source"`
	WrapAlg    string `json:"wrap_algorithm"`
	DEKVersion uint32 `json:"dek_version"`
	DEKCount   int    `json:"deks"`
	KeyringGen uint64 `json:"keyring_generation"`
	Reachable  bool   `json:"key_reachable"`
	Error      string `json:"error,omitempty"`
}

// UseCMK is the body of POST /v1/vaults/{vault}/key/use-cmk.
type UseCMK struct {
	// URI reaches the customer key from the server: pkcs11:…, rsa-file://…,
	// awskms://…, azurekeyvault://…, gcpkms://…, hashivault://….
	URI string `json:"uri"`
}

// KeyChange is the answer of the key rotation and switch endpoints.
type KeyChange struct {
	Before     string `json:"before"`
	After      string `json:"after"`
	Changed    bool   `json:"changed"` // false: the vault already used that key (its URI is recorded)
	DEKVersion uint32 `json:"dek_version"`
	DEKCount   int    `json:"deks"`
	KeyringGen uint64 `json:"keyring_generation"`
}

// KeyEvent is one entry of GET /v1/vaults/{vault}/key/events.
type KeyEvent struct {
	Time      time.Time `json:"time"`
	Principal string    `json:"principal"`
	Event     string    `json:"event"`
	KEK       string    `json:"kek"`
	Detail    string    `json:"detail"`
	OK        bool      `json:"ok"`
}

// CreateVault is the body of POST /v1/vaults.
type CreateVault struct {
	Name string `json:"name"`
	// Store, when set, is the vault's own store, s3://BUCKET/PREFIX[?…]
	// (only an owner may choose one), in place of the server's default.
	Store string `json:"store,omitempty"`
}

// RecoverVault is the body of POST /v1/recover: rebuild the catalog's
// record of vault Name from its store (Store, or the server's default
// store) and its key (Key, a customer-key URI, or the server's platform
// key when empty).
type RecoverVault struct {
	Name  string `json:"name"`
	Store string `json:"store,omitempty"`
	Key   string `json:"key,omitempty"`
}

// Recovered is the answer to POST /v1/recover.
type Recovered struct {
	Vault VaultInfo `json:"vault"`
	// Snapshots and Packs are how many snapshots and packs the catalog
	// now holds again; Unreadable names snapshot objects left out.
	Snapshots  int      `json:"snapshots"`
	Packs      int      `json:"packs"`
	Unreadable []string `json:"unreadable,omitempty"`
}

// LocalCopyKeyRequest asks for an agent's local-copy key (POST
// /v1/vaults/{vault}/local-copy-key): with Wrapped empty, a new key;
// otherwise the key Wrapped holds, which the vault unwraps only for the
// agent it wrapped it for (docs/operations.md, "Local copies").
type LocalCopyKeyRequest struct {
	Wrapped []byte `json:"wrapped,omitempty"`
}

// LocalCopyKey is the answer: the 32-byte key and its wrapped form (the
// request's own when it was an unwrap).
type LocalCopyKey struct {
	Key     []byte `json:"key"`
	Wrapped []byte `json:"wrapped"`
}

// MaxLocalCopyWrapped bounds a wrapped local-copy key (a JSON-encoded
// vault.WrappedKey: KEK reference, algorithm, wrapped bytes).
const MaxLocalCopyWrapped = 8 << 10

// Dedup is what an agent needs to chunk and identify data like the vault
// (GET /v1/vaults/{vault}/dedup). It holds no data key.
type Dedup struct {
	ChunkIDKey []byte `json:"chunk_id_key"`
	GearSeed   []byte `json:"gear_seed"`
	Min        int    `json:"chunk_min"`
	Avg        int    `json:"chunk_avg"`
	Max        int    `json:"chunk_max"`
	// Host is the host the server records this token's snapshots under:
	// an agent principal's name (whatever host the agent names), so that
	// the agent picks its parent snapshot among its own. Empty when the
	// server records the host the client names.
	Host string `json:"host,omitempty"`
	// HostSince is when that agent was created: snapshots of its host
	// older than this were made by other writers, and are never its
	// parent (the server refuses them as such).
	HostSince time.Time `json:"host_since,omitzero"`
	// Domain is the dedup domain the keys belong to (docs/format.md
	// §1.3): empty for the vault-wide domain, a source's principal ID in
	// a vault whose dedup scope is "source". Snapshots saved with these
	// keys carry it, and reads name it (?domain=).
	Domain string `json:"domain,omitempty"`
}

// Snapshot is a snapshot on the wire.
type Snapshot struct {
	ID         string    `json:"id,omitempty"`
	Time       time.Time `json:"time"`
	Host       string    `json:"host"`
	Paths      []string  `json:"paths"`
	Tags       []string  `json:"tags,omitempty"`
	Tree       string    `json:"tree"`
	Parent     string    `json:"parent,omitempty"`
	Files      uint64    `json:"files"`
	Dirs       uint64    `json:"dirs"`
	Bytes      uint64    `json:"bytes"`
	BytesAdded uint64    `json:"bytes_added"`
	DurationNS int64     `json:"duration_ns"`
	// Domain is the dedup domain of the snapshot's blobs, empty for the
	// vault-wide one. Set by the server, never by the writer.
	Domain string `json:"domain,omitempty"`
	// CopiedFrom marks a copy of another vault's snapshot (coffer copy,
	// docs/format.md §8.6): what the writer claims of the original. The
	// snapshot's own time is still the server's.
	CopiedFrom *SnapshotCopy `json:"copied_from,omitempty"`
	// Source is the writer's report about its own machine (volume
	// encryption, local copies: docs/format.md §8.7), sealed in the
	// snapshot object. Listings leave it out; one snapshot (GET
	// …/snapshots/{ref}) and GET …/sources carry it.
	Source *SourceFacts `json:"source,omitempty"`
	// Soft-deleted snapshots only (GET …/deleted): when, by whom.
	Deleted   *time.Time `json:"deleted,omitempty"`
	DeletedBy string     `json:"deleted_by,omitempty"`
}

// SnapshotCopy is vault.SnapshotCopy on the wire.
type SnapshotCopy struct {
	Vault    string    `json:"vault"`
	Snapshot string    `json:"snapshot"`
	Time     time.Time `json:"time"`
}

// SourceFacts is vault.SourceFacts on the wire.
type SourceFacts struct {
	Volumes     []SourceVolume   `json:"volumes"`
	LocalCopies *LocalCopyStatus `json:"local_copies,omitempty"`
}

// SourceVolume is vault.SourceVolume on the wire.
type SourceVolume struct {
	Path       string `json:"path"`
	Mount      string `json:"mount"`
	Device     string `json:"device"`
	FSType     string `json:"fstype"`
	Encryption string `json:"encryption"`
	Method     string `json:"method,omitempty"`
	Detail     string `json:"detail,omitempty"`
}

// LocalCopyStatus is vault.LocalCopyStatus on the wire.
type LocalCopyStatus struct {
	Keep      int    `json:"keep"`
	Held      int    `json:"held"`
	Encrypted bool   `json:"encrypted"`
	Cipher    string `json:"cipher,omitempty"`
}

// FromSourceFacts converts a report for the wire (nil stays nil).
func FromSourceFacts(f *vault.SourceFacts) *SourceFacts {
	if f == nil {
		return nil
	}
	w := &SourceFacts{Volumes: make([]SourceVolume, len(f.Volumes))}
	for i, v := range f.Volumes {
		w.Volumes[i] = SourceVolume(v)
	}
	if c := f.LocalCopies; c != nil {
		lc := LocalCopyStatus(*c)
		w.LocalCopies = &lc
	}
	return w
}

// Facts converts a wire report back (nil stays nil); format.CheckSource
// checks it.
func (w *SourceFacts) Facts() *vault.SourceFacts {
	if w == nil {
		return nil
	}
	f := &vault.SourceFacts{Volumes: make([]vault.SourceVolume, len(w.Volumes))}
	for i, v := range w.Volumes {
		f.Volumes[i] = vault.SourceVolume(v)
	}
	if c := w.LocalCopies; c != nil {
		lc := vault.LocalCopyStatus(*c)
		f.LocalCopies = &lc
	}
	return f
}

// SourceReport is what a vault knows of one source (a host that backs up
// into it): its newest live snapshot, and the newest report its
// snapshots carry (GET /v1/vaults/{vault}/sources).
type SourceReport struct {
	Host string `json:"host"`
	// LastSnapshot and LastTime: the host's newest live snapshot and the
	// time the vault recorded it (a server's own clock).
	LastSnapshot string    `json:"last_snapshot"`
	LastTime     time.Time `json:"last_time"`
	// ReportSnapshot and ReportTime: the newest of the host's snapshots
	// that carries a report (among its 8 newest), "" when none does.
	ReportSnapshot string     `json:"report_snapshot,omitempty"`
	ReportTime     *time.Time `json:"report_time,omitempty"`
	// Writer is who recorded the report's snapshot (its chain entry:
	// "agent:web01", "user:ann", "token:…"), "" for a local vault.
	Writer string `json:"writer,omitempty"`
	// CopiedFrom: the report's snapshot is a copy from another vault; the
	// report is the original machine's, as the copier passed it on.
	CopiedFrom *SnapshotCopy `json:"copied_from,omitempty"`
	Source     *SourceFacts  `json:"source,omitempty"`
}

// NewSourceReport builds the report of host from its newest snapshot
// last and report, the newest that carries a report (zero ID: none),
// recorded by writer.
func NewSourceReport(host string, last, report vault.SnapshotRecord, writer string) SourceReport {
	r := SourceReport{Host: host, LastSnapshot: last.ID.String(), LastTime: last.Time}
	if !report.ID.IsZero() {
		t := report.Time
		w := FromSnapshot(report)
		r.ReportSnapshot, r.ReportTime, r.Writer, r.CopiedFrom, r.Source = w.ID, &t, writer, w.CopiedFrom, w.Source
	}
	return r
}

// FromSnapshot converts a record for the wire.
func FromSnapshot(s vault.SnapshotRecord) Snapshot {
	w := Snapshot{Time: s.Time, Host: s.Host, Paths: s.Paths, Tags: s.Tags, Tree: s.Tree.String(),
		Files: s.Files, Dirs: s.Dirs, Bytes: s.Bytes, BytesAdded: s.BytesAdded, DurationNS: int64(s.Duration), Domain: s.Domain}
	if !s.ID.IsZero() {
		w.ID = s.ID.String()
	}
	if !s.Parent.IsZero() {
		w.Parent = s.Parent.String()
	}
	if !s.Deleted.IsZero() {
		d := s.Deleted
		w.Deleted, w.DeletedBy = &d, s.DeletedBy
	}
	if c := s.Copy; c != nil {
		w.CopiedFrom = &SnapshotCopy{Vault: c.Vault.String(), Snapshot: c.Snapshot.String(), Time: c.Time}
	}
	w.Source = FromSourceFacts(s.Source)
	return w
}

// Record converts a wire snapshot back, validating its IDs.
func (w Snapshot) Record() (vault.SnapshotRecord, error) {
	s := vault.SnapshotRecord{Time: w.Time, Host: w.Host, Paths: w.Paths, Tags: w.Tags,
		Files: w.Files, Dirs: w.Dirs, Bytes: w.Bytes, BytesAdded: w.BytesAdded, Duration: time.Duration(w.DurationNS), Domain: w.Domain,
		Source: w.Source.Facts()}
	if w.Deleted != nil {
		s.Deleted, s.DeletedBy = *w.Deleted, w.DeletedBy
	}
	var err error
	if c := w.CopiedFrom; c != nil {
		sc := &vault.SnapshotCopy{Time: c.Time}
		if sc.Vault, err = vault.ParseID(c.Vault); err != nil {
			return s, fmt.Errorf("%w: copied_from vault: %v", ErrBadRequest, err)
		}
		if sc.Snapshot, err = vault.ParseID(c.Snapshot); err != nil {
			return s, fmt.Errorf("%w: copied_from snapshot: %v", ErrBadRequest, err)
		}
		s.Copy = sc
	}
	if w.ID != "" {
		if s.ID, err = vault.ParseID(w.ID); err != nil {
			return s, fmt.Errorf("%w: snapshot id: %v", ErrBadRequest, err)
		}
	}
	if s.Tree, err = vault.ParseID(w.Tree); err != nil {
		return s, fmt.Errorf("%w: snapshot tree: %v", ErrBadRequest, err)
	}
	if w.Parent != "" {
		if s.Parent, err = vault.ParseID(w.Parent); err != nil {
			return s, fmt.Errorf("%w: snapshot parent: %v", ErrBadRequest, err)
		}
	}
	return s, nil
}

// UploadResult answers a blob upload.
type UploadResult struct {
	Stored     int    `json:"stored"`      // blobs that were new
	BytesAdded uint64 `json:"bytes_added"` // sealed bytes they take
}

// CheckRequest is the body of POST /v1/vaults/{vault}/check.
type CheckRequest struct {
	ReadData bool `json:"read_data"`
	// ReadDataSubset reads some packs only: "10%", "1/5" or "2G"
	// (engine.ParseReadSubset).
	ReadDataSubset string `json:"read_data_subset,omitempty"`
}

// ContentNDJSON asks for (and marks) a check answer streamed as lines.
const ContentNDJSON = "application/x-ndjson"

// CheckEvent is one line of a streamed check answer: progress lines, then
// one line with the report or the error.
type CheckEvent struct {
	Progress *CheckProgress `json:"progress,omitempty"`
	Report   *CheckReport   `json:"report,omitempty"`
	Error    *Error         `json:"error,omitempty"`
}

// CheckProgress is how far a check has come.
type CheckProgress struct {
	Phase   string `json:"phase"`
	Done    int    `json:"done"`
	Total   int    `json:"total"`
	Bytes   int64  `json:"bytes"`
	Current string `json:"current,omitempty"`
}

// CheckReport answers a check.
type CheckReport struct {
	Packs     int   `json:"packs"`
	Blobs     int   `json:"blobs"`
	Snapshots int   `json:"snapshots"`
	Trees     int   `json:"trees"`
	BytesRead int64 `json:"bytes_read"`
	// Subset is the subset of packs whose data was read ("" for all, or
	// none); PacksRead counts them.
	Subset    string   `json:"subset,omitempty"`
	PacksRead int      `json:"packs_read"`
	Errors    []string `json:"errors"`
	Warnings  []string `json:"warnings"`
	// Damaged: the snapshots' files and directories that use a damaged
	// blob (at most engine.MaxDamageUses); DamagedMore counts the rest.
	Damaged     []DamageUse `json:"damaged,omitempty"`
	DamagedMore int         `json:"damaged_more,omitempty"`
}

// DamageUse is a file (its bytes [Offset, End)) or a directory (Tree:
// its listing) of a snapshot that uses a damaged blob.
type DamageUse struct {
	Snapshot string `json:"snapshot_id"`
	Path     string `json:"path"`
	Tree     bool   `json:"tree,omitempty"`
	Offset   uint64 `json:"offset"`
	End      uint64 `json:"end"`
	Blob     string `json:"blob"`
}

// CreateToken is the body of POST /v1/tokens.
type CreateToken struct {
	Name    string    `json:"name"`
	Role    string    `json:"role,omitempty"`
	Vault   string    `json:"vault,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
	// Principal issues the token to a principal (by name), which then
	// acts with the principal's roles; Role and Vault stay empty.
	Principal string `json:"principal,omitempty"`
}

// Token describes a token; Secret is set only in the answer to its
// creation, the one time it is shown.
type Token struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Vault     string    `json:"vault,omitempty"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires,omitzero"`
	Revoked   time.Time `json:"revoked,omitzero"`
	CreatedBy string    `json:"created_by,omitempty"`
	Principal string    `json:"principal,omitempty"`
	Secret    string    `json:"token,omitempty"`
}

// CreatePrincipal is the body of POST /v1/principals.
type CreatePrincipal struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`               // "user" (default) or "agent"
	Password string `json:"password,omitempty"` // users may log in with it; never stored
}

// PrincipalInfo describes a principal and its roles.
type PrincipalInfo struct {
	ID          string           `json:"id"`
	Name        string           `json:"name"`
	Kind        string           `json:"kind"`
	HasPassword bool             `json:"has_password"`
	Created     time.Time        `json:"created"`
	CreatedBy   string           `json:"created_by"`
	Roles       []RoleAssignment `json:"roles"`
}

// RoleAssignment is one role of a principal, on the server (Vault "") or
// one vault; the body of POST /v1/roles and DELETE /v1/roles.
type RoleAssignment struct {
	Principal string    `json:"principal"` // name (or ID)
	Role      string    `json:"role"`
	Vault     string    `json:"vault,omitempty"`
	Created   time.Time `json:"created,omitzero"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// RoleResult answers a role assignment or revocation: done, or (a
// critical change) a request for a security approver.
type RoleResult struct {
	Done    bool     `json:"done"`
	Request *Request `json:"request,omitempty"`
}

// Login is the body of POST /v1/login.
type Login struct {
	Name     string        `json:"name"`
	Password string        `json:"password"`
	TTL      time.Duration `json:"ttl_ns,omitempty"` // default 12h, at most 7 days
}

// Binary records.
//
// A blob reference is 33 bytes: the blob type, then the 32-byte ID. The
// body of POST .../missing is a sequence of references, and so is its
// answer (the ones the vault lacks).
//
// An upload record (POST .../blobs) is a reference, the raw length
// (uint32 big-endian), the encoded length n (uint32 big-endian) and n
// bytes: the blob as made by format.Codec (encoding byte and payload).
//
// An index entry (GET .../index) is a reference and the raw length.
const (
	RefSize         = 1 + vault.IDSize
	UploadHeaderLen = RefSize + 8
	IndexEntrySize  = RefSize + 4
)

// Ref names a blob.
type Ref struct {
	Type vault.BlobType
	ID   vault.ID
}

// AppendRef appends r's encoding to b.
func AppendRef(b []byte, r Ref) []byte {
	b = append(b, byte(r.Type))
	return append(b, r.ID[:]...)
}

// ReadRef reads one reference; io.EOF at a clean end.
func ReadRef(r io.Reader) (Ref, error) {
	var buf [RefSize]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Ref{}, fmt.Errorf("%w: truncated blob reference", ErrBadRequest)
		}
		return Ref{}, err
	}
	return parseRef(buf[:])
}

func parseRef(b []byte) (Ref, error) {
	t := vault.BlobType(b[0])
	if t != vault.DataBlob && t != vault.TreeBlob {
		return Ref{}, fmt.Errorf("%w: unknown blob type %d", ErrBadRequest, b[0])
	}
	var r Ref
	r.Type = t
	copy(r.ID[:], b[1:RefSize])
	return r, nil
}

// AppendUploadHeader appends the header of an upload record.
func AppendUploadHeader(b []byte, r Ref, rawLen, encLen int) []byte {
	b = AppendRef(b, r)
	b = binary.BigEndian.AppendUint32(b, uint32(rawLen))
	return binary.BigEndian.AppendUint32(b, uint32(encLen))
}

// ReadUploadHeader reads an upload record's header; io.EOF at a clean
// end. Lengths above maxLen are refused before anything is allocated.
func ReadUploadHeader(r io.Reader, maxLen int) (ref Ref, rawLen, encLen int, err error) {
	var buf [UploadHeaderLen]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return ref, 0, 0, fmt.Errorf("%w: truncated upload record", ErrBadRequest)
		}
		return ref, 0, 0, err
	}
	if ref, err = parseRef(buf[:]); err != nil {
		return ref, 0, 0, err
	}
	raw := binary.BigEndian.Uint32(buf[RefSize:])
	enc := binary.BigEndian.Uint32(buf[RefSize+4:])
	if uint64(raw) > uint64(maxLen) || uint64(enc) > uint64(maxLen)+1 || enc == 0 {
		return ref, 0, 0, fmt.Errorf("%w: blob %s: lengths %d/%d out of range", ErrBadRequest, ref.ID.Short(), raw, enc)
	}
	return ref, int(raw), int(enc), nil
}

// AppendIndexEntry appends an index entry.
func AppendIndexEntry(b []byte, r Ref, rawLen uint32) []byte {
	b = AppendRef(b, r)
	return binary.BigEndian.AppendUint32(b, rawLen)
}

// ReadIndexEntry reads one index entry; io.EOF at a clean end.
func ReadIndexEntry(r io.Reader) (Ref, uint32, error) {
	var buf [IndexEntrySize]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Ref{}, 0, fmt.Errorf("%w: truncated index entry", vault.ErrTruncated)
		}
		return Ref{}, 0, err
	}
	ref, err := parseRef(buf[:])
	if err != nil {
		return ref, 0, err
	}
	return ref, binary.BigEndian.Uint32(buf[RefSize:]), nil
}

// Batched reads (POST .../read): the body is a sequence of blob
// references; the answer has one record per reference, in order. A record
// starts with a status byte. Status ReadOK is followed by the reference,
// the raw length and the encoded length n (uint32 big-endian each) and n
// bytes, as an upload record. Status ReadFailed is followed by the
// reference, a uint16 big-endian length and an error code, and a uint32
// big-endian length and a message; the batch goes on.
const (
	ReadOK     byte = 0
	ReadFailed byte = 1
	// MaxReadRefs bounds one batched read.
	MaxReadRefs = 1024
)

// AppendReadOK appends the header of a successful read record.
func AppendReadOK(b []byte, r Ref, rawLen, encLen int) []byte {
	return AppendUploadHeader(append(b, ReadOK), r, rawLen, encLen)
}

// AppendReadFailed appends a failed read record.
func AppendReadFailed(b []byte, r Ref, code, msg string) []byte {
	b = AppendRef(append(b, ReadFailed), r)
	b = binary.BigEndian.AppendUint16(b, uint16(len(code)))
	b = append(b, code...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	return append(b, msg...)
}

// ReadRecordHeader reads a read record's header. For a failed record it
// returns err holding the server's error (a *RemoteError), with ref set,
// and the stream may go on; other errors end the stream.
func ReadRecordHeader(r io.Reader, maxLen int) (ref Ref, rawLen, encLen int, failed, err error) {
	var st [1]byte
	if _, err := io.ReadFull(r, st[:]); err != nil {
		return ref, 0, 0, nil, err
	}
	switch st[0] {
	case ReadOK:
		ref, rawLen, encLen, err = ReadUploadHeader(r, maxLen)
		if err == io.EOF {
			err = fmt.Errorf("%w: read record cut short", vault.ErrTruncated)
		}
		return ref, rawLen, encLen, nil, err
	case ReadFailed:
		if ref, err = ReadRef(r); err != nil {
			return ref, 0, 0, nil, fmt.Errorf("%w: read record cut short", vault.ErrTruncated)
		}
		var l2 [2]byte
		if _, err := io.ReadFull(r, l2[:]); err != nil {
			return ref, 0, 0, nil, fmt.Errorf("%w: read record cut short", vault.ErrTruncated)
		}
		code := make([]byte, binary.BigEndian.Uint16(l2[:]))
		if _, err := io.ReadFull(r, code); err != nil {
			return ref, 0, 0, nil, fmt.Errorf("%w: read record cut short", vault.ErrTruncated)
		}
		var l4 [4]byte
		if _, err := io.ReadFull(r, l4[:]); err != nil {
			return ref, 0, 0, nil, fmt.Errorf("%w: read record cut short", vault.ErrTruncated)
		}
		n := binary.BigEndian.Uint32(l4[:])
		if n > 64<<10 {
			return ref, 0, 0, nil, fmt.Errorf("%w: error message of %d bytes", ErrBadRequest, n)
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return ref, 0, 0, nil, fmt.Errorf("%w: read record cut short", vault.ErrTruncated)
		}
		return ref, 0, 0, ErrorFromBody(http.StatusOK, Error{Code: string(code), Message: string(msg)}), nil
	}
	return ref, 0, 0, nil, fmt.Errorf("%w: unknown read record status %d", ErrBadRequest, st[0])
}

// HeaderSession carries a client's writer session: 32 lowercase hex
// digits, random per backup. The server registers the session at the
// first upload request that names it and ends it when the snapshot is
// saved; prune waits for live sessions (docs/retention.md).
const HeaderSession = "Coffer-Session"

// Forget is the body of POST /v1/vaults/{vault}/forget.
type Forget struct {
	IDs []string `json:"ids"` // full snapshot IDs
}

// Forgotten answers a forget.
type Forgotten struct {
	Forgotten        []Snapshot `json:"forgotten"`
	RecoverableUntil time.Time  `json:"recoverable_until"`
}

// Undelete is the body of POST /v1/vaults/{vault}/undelete.
type Undelete struct {
	ID string `json:"id"` // full snapshot ID
}

// Retag is the body of POST /v1/vaults/{vault}/retag: the snapshot is
// replaced by one with the changed tags and the same time, host, paths
// and tree, and is forgotten (docs/format.md §8.5). Set, when present,
// replaces all tags; then Remove and Add apply.
type Retag struct {
	ID     string    `json:"id"` // full snapshot ID
	Set    *[]string `json:"set,omitempty"`
	Add    []string  `json:"add,omitempty"`
	Remove []string  `json:"remove,omitempty"`
}

// Rewrite is the body of POST /v1/vaults/{vault}/rewrite: the snapshot
// is replaced by one whose trees leave out what the patterns match (the
// patterns of backup --exclude; docs/operations.md).
type Rewrite struct {
	ID       string           `json:"id"` // full snapshot ID
	Patterns []ExcludePattern `json:"patterns"`
}

// ExcludePattern is one --exclude (or --iexclude) pattern.
type ExcludePattern struct {
	Pattern    string `json:"pattern"`
	IgnoreCase bool   `json:"ignore_case,omitempty"`
}

// MaxRewritePatterns bounds the patterns of one rewrite request.
const MaxRewritePatterns = 1024

// Replaced answers a retag or rewrite: the new snapshot and the
// original, now forgotten.
type Replaced struct {
	Snapshot         Snapshot  `json:"snapshot"`
	Original         Snapshot  `json:"original"`
	RecoverableUntil time.Time `json:"recoverable_until"`
}

// Prune is the body of POST /v1/vaults/{vault}/prune.
type Prune struct {
	DryRun bool `json:"dry_run"`
}

// PruneReport answers a prune (engine.PruneReport on the wire).
type PruneReport struct {
	DryRun         bool       `json:"dry_run"`
	Expired        []Snapshot `json:"expired_snapshots"`
	StillDeleted   int        `json:"soft_deleted_kept"`
	Condemned      int        `json:"packs_condemned"`
	CondemnedBytes int64      `json:"bytes_condemned"`
	Deleted        int        `json:"packs_deleted"`
	DeletedBytes   int64      `json:"bytes_deleted"`
	Waiting        int        `json:"packs_waiting"`
	WaitingBytes   int64      `json:"bytes_waiting"`
	Sessions       int        `json:"sessions_waited_for"`
	Reprieved      int        `json:"packs_reprieved"`
	Repacked       int        `json:"packs_repacked"`
	RepackedBytes  int64      `json:"bytes_repacked"`
	PartlyUsed     int        `json:"packs_partly_used"`
	UnusedBytes    int64      `json:"bytes_unused_in_kept_packs"`
	// Unwalkable: snapshots whose trees prune could not walk in full,
	// each "ID: why". Incomplete: one of them could not be read, so
	// nothing was condemned or deleted.
	Unwalkable []string `json:"snapshots_unwalkable,omitempty"`
	Incomplete bool     `json:"condemned_nothing,omitempty"`
}

// Settings are a vault's deletion-protection settings on the wire.
type Settings struct {
	SoftDelete          string          `json:"soft_delete"`
	SoftDeleteDays      int             `json:"soft_delete_days"`
	Immutability        string          `json:"immutability"`
	MinRetentionSeconds int64           `json:"min_retention_seconds"`
	SingleUser          bool            `json:"single_user"`
	Policy              json.RawMessage `json:"policy,omitempty"`
	// DedupScope is "vault" (one dedup domain for the vault) or "source"
	// (one per source; docs/format.md §1.3).
	DedupScope string    `json:"dedup_scope"`
	Updated    time.Time `json:"updated"`
	// StoreEnforcesRetention says whether the store itself keeps objects
	// for their retention (object lock), or only coffer does.
	StoreEnforcesRetention bool `json:"store_enforces_retention"`
}

// FromSettings converts settings for the wire.
func FromSettings(s vault.VaultSettings) Settings {
	w := Settings{SoftDelete: string(s.SoftDelete), SoftDeleteDays: s.SoftDeleteDays, Immutability: string(s.Immutability),
		MinRetentionSeconds: int64(s.MinRetention / time.Second), SingleUser: s.SingleUser, Updated: s.Updated,
		DedupScope: string(s.DedupScope.OrDefault())}
	if s.Policy != "" {
		w.Policy = json.RawMessage(s.Policy)
	}
	return w
}

// Record converts wire settings back.
func (w Settings) Record() vault.VaultSettings {
	return vault.VaultSettings{SoftDelete: vault.SoftDelete(w.SoftDelete), SoftDeleteDays: w.SoftDeleteDays,
		Immutability: vault.Immutability(w.Immutability), MinRetention: time.Duration(w.MinRetentionSeconds) * time.Second,
		SingleUser: w.SingleUser, Policy: string(w.Policy), Updated: w.Updated, DedupScope: vault.DedupScope(w.DedupScope)}
}

// SettingsChange is the body of POST /v1/vaults/{vault}/settings: only
// the fields given change.
type SettingsChange struct {
	SoftDelete          *string `json:"soft_delete,omitempty"`
	SoftDeleteDays      *int    `json:"soft_delete_days,omitempty"`
	Immutability        *string `json:"immutability,omitempty"`
	MinRetentionSeconds *int64  `json:"min_retention_seconds,omitempty"`
	// Policy is the retention policy as JSON text; "" removes it.
	Policy *string `json:"policy,omitempty"`
	// DedupScope is "vault" or "source"; source → vault is critical.
	DedupScope *string `json:"dedup_scope,omitempty"`
}

// Apply makes the change to s.
func (c SettingsChange) Apply(s *vault.VaultSettings) {
	if c.SoftDelete != nil {
		s.SoftDelete = vault.SoftDelete(*c.SoftDelete)
	}
	if c.SoftDeleteDays != nil {
		s.SoftDeleteDays = *c.SoftDeleteDays
	}
	if c.Immutability != nil {
		s.Immutability = vault.Immutability(*c.Immutability)
	}
	if c.MinRetentionSeconds != nil {
		s.MinRetention = time.Duration(*c.MinRetentionSeconds) * time.Second
	}
	if c.Policy != nil {
		s.Policy = *c.Policy
	}
	if c.DedupScope != nil {
		s.DedupScope = vault.DedupScope(*c.DedupScope)
	}
}

// SettingsResult answers a settings change: applied (Changed says what),
// or, for a critical change, a request that a security approver must
// approve (status 202).
type SettingsResult struct {
	Settings Settings `json:"settings"`
	Changed  string   `json:"changed,omitempty"`
	Request  *Request `json:"request,omitempty"`
}

// Request is a multi-user authorization request on the wire.
type Request struct {
	ID        string    `json:"id"`
	Vault     string    `json:"vault,omitempty"` // the vault's name
	Op        string    `json:"op"`
	Summary   string    `json:"summary"`
	Requester string    `json:"requester"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	State     string    `json:"state"`
	Decider   string    `json:"decider,omitempty"`
	Decided   time.Time `json:"decided,omitzero"`
	// Result says what the approved operation did, or why it failed.
	Result string `json:"result,omitempty"`
}

// VaultEvent is one entry of GET /v1/vaults/{vault}/events.
type VaultEvent struct {
	Time      time.Time `json:"time"`
	Principal string    `json:"principal"`
	Event     string    `json:"event"`
	Detail    string    `json:"detail"`
	OK        bool      `json:"ok"`
}

// AuditEntry is one entry of GET /v1/audit.
type AuditEntry struct {
	Index     int64             `json:"index"`
	Time      time.Time         `json:"time"`
	Principal string            `json:"principal,omitempty"`
	Token     string            `json:"token,omitempty"` // the public ID of the token that acted
	Source    string            `json:"source,omitempty"`
	Vault     string            `json:"vault,omitempty"`
	Op        string            `json:"op"`
	Params    map[string]string `json:"params,omitempty"`
	Outcome   string            `json:"outcome"`
	Detail    string            `json:"detail,omitempty"`
}

// AddSource is the body of POST /v1/vaults/{vault}/sources.
type AddSource struct {
	Name    string    `json:"name"` // the agent's name (its host)
	Expires time.Time `json:"expires,omitzero"`
}
