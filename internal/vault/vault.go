// Package vault provides Coffer's domain types, the contracts that storage,
// catalog and key providers implement (Store, Catalog, KeyProvider), and the
// vault engine that seals data and enforces policy.
package vault

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/coffer-backup/coffer/internal/seal"
)

// Sentinel errors callers branch on. Implementations wrap them with context
// (fmt.Errorf("...: %w", ErrNotFound)).
var (
	ErrNotFound       = errors.New("not found")
	ErrExists         = errors.New("already exists")
	ErrKeyUnavailable = errors.New("key unavailable")
	ErrCorrupt        = errors.New("corrupt object")
	ErrTruncated      = errors.New("truncated object")
	ErrWrongKey       = errors.New("wrong key")
	ErrAmbiguous      = errors.New("ambiguous snapshot prefix")
	ErrImmutable      = errors.New("forbidden by the vault's deletion protection")
	// ErrConflict: the state changed under the request (a multi-user
	// authorization request decided already).
	ErrConflict = errors.New("conflict")
	// ErrApprovalRequired: a critical change needs a second person's
	// approval (docs/retention.md).
	ErrApprovalRequired = errors.New("needs approval by a second person")
)

// IDSize is the size of every blob, tree and snapshot ID.
const IDSize = 32

// ID names a blob (keyed BLAKE3 of its plaintext), a pack or a snapshot
// (random).
type ID [IDSize]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short is the 8-hex-digit prefix shown to users.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses 64 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("invalid ID %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid ID %q: %w", s, err)
	}
	return id, nil
}

// BlobType says what a blob holds.
type BlobType uint8

const (
	DataBlob BlobType = 1 // a file chunk
	TreeBlob BlobType = 2 // an encoded directory tree
)

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// ObjectType is the namespace of an object in a Store.
type ObjectType string

const (
	PackObject     ObjectType = "packs"     // sealed packs, write-once
	SnapshotObject ObjectType = "snapshots" // sealed snapshot records, write-once
	KeyObject      ObjectType = "keys"      // keyring generations (wrapped root secret and DEKs)
	ConfigObject   ObjectType = "config"    // the vault's plaintext config, written once at creation
)

// Handle names one object in a Store.
type Handle struct {
	Type ObjectType
	Name string // lowercase hex for packs and snapshots; a decimal generation for keys; "config"
}

func (h Handle) String() string { return string(h.Type) + "/" + h.Name }

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Handle Handle
	Size   int64
}

// Store holds sealed objects: a local directory or an S3 bucket.
//
// Objects are write-once: Put on an existing name fails with ErrExists and
// leaves the existing object untouched (rd may then be left unread). A
// successful Put is durable; an interrupted Put leaves no visible object
// (readers see all of it or nothing). Get and Stat of a missing object fail
// with ErrNotFound. Names follow store.CheckHandle's rules.
//
// Callers name packs and snapshots with random IDs, so a retried Put that
// fails with ErrExists after an earlier attempt reported an error (say, a
// failed directory sync after the object was published) holds the same
// bytes.
type Store interface {
	// Put stores exactly size bytes read from rd under h; a reader that
	// yields fewer or more bytes fails the Put and stores nothing.
	Put(ctx context.Context, h Handle, rd io.Reader, size int64) error
	// Get returns length bytes of h starting at offset; length < 0 means
	// to the end. A negative offset is an error. Reading past the end
	// returns fewer bytes (io.ReadFull reports io.ErrUnexpectedEOF or
	// io.EOF), never garbage.
	Get(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error)
	// Stat returns the size of h.
	Stat(ctx context.Context, h Handle) (ObjectInfo, error)
	// List calls fn for every complete object of type t, in no set order.
	List(ctx context.Context, t ObjectType, fn func(ObjectInfo) error) error
	// Delete removes h; deleting a missing object fails with ErrNotFound.
	Delete(ctx context.Context, h Handle) error
	// Close releases resources.
	Close() error
}

// KeyAnchor is the catalog's record of a vault's current keyring
// generation: a store writer cannot roll it back, and a keyring that does
// not match it is refused (docs/format.md §7.3).
type KeyAnchor struct {
	Generation uint64
	MAC        [32]byte // the generation's keyring MAC
	RootCommit [32]byte // HKDF of the root secret: fixes which secret is the vault's
	KEK        KeyRef
	Alg        string
	Time       time.Time
}

// KeyProposal is a keyring generation a key holder is about to store.
type KeyProposal struct {
	Generation uint64
	MAC        [32]byte
	Time       time.Time
}

// Request is a multi-user authorization request: a critical change that
// takes effect only when a different principal holding the
// security-approver role approves it (docs/retention.md).
type Request struct {
	ID        string
	Vault     ID     // zero for a server-wide change
	Op        string // what is asked, e.g. "vault-set", "vault-delete", "use-pmk"
	Params    string // the operation's parameters, JSON; no secrets
	Summary   string // one line for people: "soft delete 30 → 14 days"
	Requester string
	Created   time.Time
	Expires   time.Time
	State     RequestState
	Decider   string    // "" while pending
	Decided   time.Time // zero while pending
}

// RequestState is where a request is in its life.
type RequestState string

const (
	RequestPending  RequestState = "pending"
	RequestApproved RequestState = "approved"
	RequestRejected RequestState = "rejected"
	RequestExpired  RequestState = "expired"
)

// DefaultRequestTTL is how long a request waits for a decision.
const DefaultRequestTTL = 24 * time.Hour

// Session is a writer working on a vault: prune waits for every session
// that began before it condemned a pack before it deletes that pack.
type Session struct {
	ID        string    // random, unique
	Kind      string    // "backup", "prune", …
	Principal string    // who runs it
	Started   time.Time // before the writer loaded the vault's index
	Touched   time.Time // last sign of life; a session not touched for SessionStale is dead
}

// SessionStale is how long a session may go without a sign of life
// before prune treats it as dead (a killed process); live writers touch
// their session every SessionTouch.
const (
	SessionTouch = time.Minute
	SessionStale = 15 * time.Minute
)

// SessionMaxAge bounds how long one writer session holds prune back,
// however often it is touched: a writer (a remote token) could otherwise
// keep a session alive for ever and keep every pack condemned since from
// being deleted. A backup that runs longer is refused at its end and runs
// again (what it stored deduplicates).
const SessionMaxAge = 7 * 24 * time.Hour

// SoftDelete is whether forgotten snapshots are kept for a while.
type SoftDelete string

const (
	SoftDeleteOn       SoftDelete = "on"        // the default
	SoftDeleteOff      SoftDelete = "off"       // forgotten snapshots may be pruned at once
	SoftDeleteAlwaysOn SoftDelete = "always-on" // on, and cannot be turned off again
)

// Immutability is a vault's immutability state: disabled → enabled →
// locked, the last one way.
type Immutability string

const (
	ImmutabilityDisabled Immutability = "disabled"
	ImmutabilityEnabled  Immutability = "enabled"
	ImmutabilityLocked   Immutability = "locked"
)

// VaultSettings are a vault's deletion-protection settings
// (docs/retention.md).
type VaultSettings struct {
	SoftDelete     SoftDelete
	SoftDeleteDays int // 14..180
	Immutability   Immutability
	// MinRetention: no snapshot may be forgotten before it is this old.
	MinRetention time.Duration
	// SingleUser: a local vault whose one principal may make critical
	// changes with --confirm (set at creation, never later).
	SingleUser bool
	// Policy is the stored retention policy (JSON of retention.Policy),
	// empty when none; the server applies it daily.
	Policy string
	// DedupScope is where deduplication reaches (docs/format.md §1.3):
	// across the whole vault, or within each source only. "" reads as
	// DedupScopeVault.
	DedupScope DedupScope
	// Updated is when the settings last changed; zero for defaults.
	Updated time.Time
}

// DedupScope says across which data a vault deduplicates, and so which
// data an agent's chunk-ID key can probe (docs/security.md).
type DedupScope string

const (
	// DedupScopeVault: one dedup domain for the whole vault; every
	// agent gets its chunk-ID key.
	DedupScopeVault DedupScope = "vault"
	// DedupScopeSource: a dedup domain per source; an agent gets its own
	// domain's keys and reads only its own source's snapshots.
	DedupScopeSource DedupScope = "source"
)

// OrDefault is s, or DedupScopeVault when s is unset.
func (s DedupScope) OrDefault() DedupScope {
	if s == "" {
		return DedupScopeVault
	}
	return s
}

// Soft-delete period bounds and default, in days.
const (
	MinSoftDeleteDays     = 14
	MaxSoftDeleteDays     = 180
	DefaultSoftDeleteDays = 14
)

// DefaultSettings are a new vault's settings: soft delete on for 14
// days, immutability disabled, no minimum retention, no policy.
func DefaultSettings() VaultSettings {
	return VaultSettings{SoftDelete: SoftDeleteOn, SoftDeleteDays: DefaultSoftDeleteDays, Immutability: ImmutabilityDisabled, DedupScope: DedupScopeVault}
}

// VaultEvent is one entry of a vault's event trail: a deletion, an
// undelete, a prune, a policy or protection change, a multi-user
// authorization request and its approval or rejection.
type VaultEvent struct {
	Vault     ID
	Time      time.Time
	Principal string
	Event     string // one of the Event… constants
	// Detail, like KeyEvent.Detail, is for people and MUST NOT hold
	// secrets.
	Detail string
	OK     bool
}

// Vault events, the values of VaultEvent.Event.
const (
	EventForget        = "forget"         // snapshots soft-deleted
	EventRepair        = "repair"         // the index or snapshots repaired (coffer repair)
	EventUndelete      = "undelete"       // a soft-deleted snapshot brought back
	EventPrune         = "prune"          // expired snapshots and unused packs removed
	EventSettings      = "settings"       // deletion-protection settings changed
	EventPolicy        = "policy"         // the stored retention policy changed
	EventRequest       = "request"        // a multi-user authorization request made
	EventApprove       = "approve"        // a request approved
	EventReject        = "reject"         // a request rejected
	EventVaultDelete   = "vault-delete"   // the vault deleted
	EventPolicyApplied = "policy-applied" // the stored policy applied by the server
)

// VaultRecord is a vault's row in the catalog.
type VaultRecord struct {
	ID      ID
	Name    string
	Created time.Time
}

// PackRecord is a pack's row in the catalog index.
type PackRecord struct {
	ID         ID
	Size       int64
	DEKVersion uint32
	Blobs      int
	Created    time.Time
	// Header is a copy of the pack's sealed header (docs/format.md §4.1),
	// the only place the catalog lists its blobs (sealed, like the
	// sizes they reveal). Nil for a pack recorded by format 1, whose
	// blobs Blobs lists until a key holder upgrades the vault.
	Header []byte
	// Keys are the lookup keys of the pack's blobs (docs/format.md §4.2):
	// a keyed pseudo-random function of each blob's type and ID that
	// tells neither, by which a reader finds the packs that may hold a
	// blob without loading the whole index. AddPack stores them with the
	// pack when set; Packs and Pack leave them nil and report Keyed.
	Keys []uint64
	// Keyed reports that the catalog holds the pack's lookup keys.
	Keyed bool
	// Condemned is when prune found no snapshot needing the pack; zero
	// for a pack in use. A condemned pack's blobs are left out of the
	// index a vault opened later loads, and the pack is deleted once
	// every writer that may still reference it has finished and a fresh
	// look finds no reference (docs/retention.md).
	Condemned time.Time
}

// BlobRecord locates one sealed blob inside a pack.
type BlobRecord struct {
	ID     ID
	Type   BlobType
	Pack   ID
	Offset uint32 // of the sealed blob within the pack
	Length uint32 // sealed length (ciphertext + tag)
	RawLen uint32 // plaintext length before compression
}

// SnapshotRecord is the catalog's plaintext summary of a snapshot. Only
// what docs/security.md allows in plaintext appears here: host, the
// top-level paths given to backup, tags, times and sizes.
type SnapshotRecord struct {
	ID         ID
	Time       time.Time
	Host       string
	Paths      []string
	Tags       []string
	Tree       ID     // root tree blob
	Parent     ID     // zero when none
	Files      uint64 // entries that are not directories: files, symlinks, devices, FIFOs
	Dirs       uint64 // directories below the backed-up paths
	Bytes      uint64 // logical size of the files
	BytesAdded uint64 // sealed bytes this backup added to the store
	Duration   time.Duration
	// Deleted is when the snapshot was soft-deleted (forgotten); zero
	// while it is live. A soft-deleted snapshot keeps all its data until
	// its soft-delete period ends and prune removes it; undelete clears
	// it (docs/retention.md).
	Deleted   time.Time
	DeletedBy string // who forgot it; "" while live
	// Domain is the dedup domain its blobs were identified in
	// (docs/format.md §1.3): "" for the vault-wide domain, else the
	// source's principal ID in a vault whose dedup scope is "source".
	Domain string
	// Copy, when set, says the snapshot is a copy of another vault's
	// snapshot (coffer copy, docs/format.md §8.6). Time is still when this
	// vault recorded it; Copy holds what the copier claims of the
	// original, which this vault cannot verify.
	Copy *SnapshotCopy
	// Source, when set, is what the agent that wrote the snapshot found
	// about its own machine at backup time: the encryption of the volume
	// each backed-up path lives on, and its encrypted local copies. It is
	// the writer's report, bound to the snapshot (and so to its host,
	// writer and server-stamped time), not a fact the vault checked.
	Source *SourceFacts
}

// SourceFacts is an agent's report about its own machine, carried by a
// snapshot.
type SourceFacts struct {
	Volumes     []SourceVolume
	LocalCopies *LocalCopyStatus // nil: the agent keeps no local copies
}

// Volume encryption states (SourceVolume.Encryption).
const (
	VolumeEncrypted   = "encrypted"
	VolumeUnencrypted = "unencrypted"
	VolumeUnknown     = "unknown"
)

// SourceVolume is the volume one backed-up path lives on.
type SourceVolume struct {
	Path       string // the path given to backup
	Mount      string // its mount point
	Device     string // the block device or file system source, e.g. /dev/mapper/root
	FSType     string // e.g. ext4, btrfs, tmpfs
	Encryption string // VolumeEncrypted, VolumeUnencrypted or VolumeUnknown
	// Method names the encryption layer when encrypted: luks1, luks2,
	// dm-crypt, fscrypt, ecryptfs, bitlocker, filevault.
	Method string
	// Detail says how the answer was found (the device-mapper chain read),
	// or, when unknown, why it could not be.
	Detail string
}

// LocalCopyStatus is an agent's fast-restore cache as it reports it.
type LocalCopyStatus struct {
	Keep      int    // snapshots the agent is set to keep locally
	Held      int    // snapshots held now
	Encrypted bool   // sealed under a key the vault wraps
	Cipher    string // e.g. AES-256-GCM
}

// SnapshotCopy describes the original of a copied snapshot.
type SnapshotCopy struct {
	Vault    ID        // the source vault's ID
	Snapshot ID        // the original snapshot's ID in that vault
	Time     time.Time // the original's time, as the copier read it
}

// ChainKind says what a snapshot-chain entry records (docs/format.md §8.1).
type ChainKind uint8

const (
	ChainAdd      ChainKind = 1 // a snapshot was recorded
	ChainImport   ChainKind = 2 // a format 1 snapshot entered the chain at the upgrade
	ChainForget   ChainKind = 3 // a snapshot was soft-deleted
	ChainUndelete ChainKind = 4 // a soft-deleted snapshot was brought back
	ChainRemove   ChainKind = 5 // prune removed a soft-deleted snapshot
	// ChainImportForgotten: a soft-deleted format 1 snapshot entered the
	// chain at the upgrade.
	ChainImportForgotten ChainKind = 6
	// ChainSettings: the vault's settings changed (or were first
	// authenticated); its digest binds every field (docs/format.md §8.4).
	ChainSettings ChainKind = 7
	// ChainRecover: a snapshot whose object the store held entered a chain
	// rebuilt from the store after the catalog was lost (coffer vault
	// recover); its object's own link names the lost chain.
	ChainRecover ChainKind = 8
)

func (k ChainKind) String() string {
	switch k {
	case ChainAdd:
		return "add"
	case ChainImport:
		return "import"
	case ChainForget:
		return "forget"
	case ChainUndelete:
		return "undelete"
	case ChainRemove:
		return "remove"
	case ChainImportForgotten:
		return "import-forgotten"
	case ChainSettings:
		return "settings"
	case ChainRecover:
		return "recover"
	}
	return fmt.Sprintf("chainkind(%d)", uint8(k))
}

// ChainEntry is one entry of a vault's snapshot chain: an append-only,
// MAC'd record of every change to its snapshot list (docs/format.md
// §8.1). The catalog stores it; only the engine, which holds the chain
// key, can make or check MAC.
type ChainEntry struct {
	Seq       uint64 // 1, 2, …
	Kind      ChainKind
	Snapshot  ID
	Time      time.Time // when; for a forget, the soft-delete time
	Principal string    // who; for a forget, who forgot it
	Digest    [32]byte  // add and import: the digest of the snapshot's record; zero otherwise
	MAC       [32]byte  // h[Seq]
	// Settings, for a settings entry being appended only, are the
	// settings the catalog writes in the same transaction; not stored
	// with the entry (its digest binds them).
	Settings *VaultSettings
}

// TokenRecord is a bearer token's row in the catalog. The token itself is
// never stored, only its hash (package authn says how tokens are made).
type TokenRecord struct {
	ID        string    // short public identifier, safe to show and log (authn: 16 hex digits)
	Name      string    // the owner's label for the token
	Role      string    // authn.Role
	Vault     string    // the vault name the token is for; "" for a server-wide token
	Hash      [32]byte  // SHA-256 of the token's secret bytes
	Created   time.Time // when the token was issued
	Expires   time.Time // zero: never expires
	Revoked   time.Time // zero: not revoked
	CreatedBy string    // ID of the token that created this one; "" for the initial owner token
	// Principal is the ID of the principal (a user or an agent) the token
	// was issued to; its roles come from the principal's role
	// assignments, and Role and Vault are empty. "" for a token that
	// carries its own role.
	Principal string
}

// Principal is a user or an agent: tokens are issued to it and roles
// assigned to it (authn: principals).
type Principal struct {
	ID       string // "usr_" or "agt_" and 16 hex digits
	Name     string // unique, shown and logged
	Kind     string // "user" or "agent"
	Password string // PHC-style argon2id hash; "" when the principal has none
	// PasswordBy says who set Password: "server-machine" when it was set
	// on the server machine, "" when through the API (by whoever created
	// the principal) or not known. Only the first makes a login an
	// approver's own: an owner may know a password it set.
	PasswordBy string
	Created    time.Time
	CreatedBy  string // the principal or token that created it
}

// RoleAssignment grants a role to a principal on the whole server (Vault
// "") or on one vault.
type RoleAssignment struct {
	Principal string // principal ID
	Role      string // authn.Role
	Vault     string // vault name; "" for server-wide
	Created   time.Time
	CreatedBy string
}

// Key events, the values of KeyEvent.Event.
const (
	KeyEventDEKRotate      = "dek-rotate"      // a new data encryption key version was added
	KeyEventKEKRotate      = "kek-rotate"      // the vault's keys were rewrapped under a new KEK version
	KeyEventUseCMK         = "use-cmk"         // the vault was switched to a customer-managed KEK
	KeyEventUsePMK         = "use-pmk"         // the vault was switched to the platform-managed KEK
	KeyEventKeyUnavailable = "key-unavailable" // the KEK could not be reached or used
	KeyEventKeyRecovered   = "key-recovered"   // the KEK was reached again after a failure
	KeyEventKeyringRefused = "keyring-refused" // a keyring generation failed its MAC, anchor or root commitment
	KeyEventAnchor         = "key-anchor"      // the catalog had no keyring anchor: the store's verified latest generation was anchored
	KeyEventKEKRetire      = "kek-retire"      // older platform KEK versions could not be deleted from the key file because of this vault
)

// KeyEvent is one entry of a vault's key audit trail: who did what to
// which key, when, and whether it worked. Entries are only ever added.
type KeyEvent struct {
	Vault     ID
	Time      time.Time // when it happened; must be set
	Principal string    // who acted: a token ID, a user or "system" for automatic rotation
	Event     string    // one of the KeyEvent… constants
	KEK       string    // the key reference as text (KeyRef.String()); "" when not known
	// Detail is free text for people reading the trail (an error message,
	// the previous key). It is stored in plaintext and shown to auditors:
	// it MUST NOT hold secrets (key material, tokens, passphrases, URIs
	// with credentials).
	Detail string
	OK     bool // the outcome: true for success
}

// Catalog is the SQL index of vault state. For data it is an index, never
// the only copy of what a restore needs: vaults, packs, blobs and snapshots
// can be rebuilt from the store and the KEK. Tokens and key events are
// different: they exist only here (a server's access control and the key
// audit trail), so the catalog is backed up with the server's data
// directory.
//
// All methods are safe for concurrent use by several processes on the same
// catalog (two backups at once). Times are kept to at least microsecond
// precision and must be set. Writes naming an unknown vault fail with
// ErrNotFound; reads of one return nothing. An error returned by a
// callback stops the iteration and is returned unchanged; callbacks must
// not call the catalog.
type Catalog interface {
	// CreateVault records a new vault; ErrExists if the name or ID is
	// taken.
	CreateVault(ctx context.Context, v VaultRecord) error
	// Vault returns the vault named name, or ErrNotFound (also for a
	// deleted vault, whose name stays taken: CreateVault then fails with
	// ErrExists).
	Vault(ctx context.Context, name string) (VaultRecord, error)
	// DeleteVault marks vault deleted at at and removes, in one
	// transaction, its snapshots, packs, blobs and sessions; its settings,
	// events, key events and requests stay for the audit trail.
	// ErrNotFound if there is no such vault (or it is deleted already).
	DeleteVault(ctx context.Context, vault ID, at time.Time) error

	// AddPack records a pack and its blobs atomically; ErrExists if the
	// pack is recorded already. Every blob's Pack must be p.ID.
	AddPack(ctx context.Context, vault ID, p PackRecord, blobs []BlobRecord) error
	// Packs calls fn for every pack of vault.
	Packs(ctx context.Context, vault ID, fn func(PackRecord) error) error
	// Blobs calls fn for every blob of vault. A blob may appear more than
	// once (in different packs) when concurrent backups stored it twice.
	Blobs(ctx context.Context, vault ID, fn func(BlobRecord) error) error
	// Pack returns pack id of vault (Header, Keyed and Condemned set), or
	// ErrNotFound.
	Pack(ctx context.Context, vault, id ID) (PackRecord, error)
	// PacksByKey calls fn once for every pair of one of keys and a pack
	// of vault recorded with that lookup key, in no particular order;
	// nothing for a key no pack has. Duplicate keys are allowed. It is
	// how a reader finds a blob without loading the index: the pairs are
	// hints, which the reader checks against the pack's sealed header.
	PacksByKey(ctx context.Context, vault ID, keys []uint64, fn func(key uint64, pack ID) error) error
	// PackKeys calls fn with the lookup keys of every keyed pack of
	// vault (the order of the keys within a pack is the order given).
	PackKeys(ctx context.Context, vault ID, fn func(pack ID, keys []uint64) error) error
	// SetPackKeys records the lookup keys of pack id, replacing any it
	// has; ErrNotFound if there is no such pack.
	SetPackKeys(ctx context.Context, vault, id ID, keys []uint64) error
	// PackTotals returns the number of packs of vault and the sum of
	// their sizes, condemned ones included (0, 0 for a vault without
	// packs or an unknown one), without reading their records.
	PackTotals(ctx context.Context, vault ID) (packs int, bytes int64, err error)
	// UnindexedPacks calls fn, as Packs does but in no particular order,
	// for every pack of vault recorded without a sealed header copy
	// (Header nil) or without lookup keys (Keyed false), in time bounded
	// by their number rather than by the vault's packs: packs without a
	// header through an index of them, packs without keys through a list
	// kept in the transactions of AddPack, SetPackHeader, SetPackKeys and
	// RemovePack. It is how opening a vault finds the packs to index
	// (docs/format.md §4.2). Like everything in the catalog the list is
	// a hint: a pack a catalog writer keeps off it only goes unkeyed.
	UnindexedPacks(ctx context.Context, vault ID, fn func(PackRecord) error) error

	// AddSnapshot records a snapshot; ErrExists if its ID is present.
	AddSnapshot(ctx context.Context, vault ID, s SnapshotRecord) error
	// Snapshots returns every snapshot of vault, ordered by Time, then ID.
	Snapshots(ctx context.Context, vault ID) ([]SnapshotRecord, error)

	// AddToken records a bearer token; ErrExists if its ID or its hash is
	// taken, ErrNotFound if t.Vault is not "" and names no vault. ID, Role
	// and Created must be set; a zero Expires (never expires) or Revoked
	// (active) is stored as zero and read back as zero.
	AddToken(ctx context.Context, t TokenRecord) error
	// TokenByHash returns the token whose Hash is hash, or ErrNotFound. It
	// returns revoked and expired tokens too: judging them is the
	// caller's job. It reads the catalog on every call, so a revocation
	// by any process is seen by the next call.
	TokenByHash(ctx context.Context, hash [32]byte) (TokenRecord, error)
	// Tokens returns every token, revoked and expired ones included,
	// ordered by Created, then ID; none in a new catalog.
	Tokens(ctx context.Context) ([]TokenRecord, error)
	// Token returns the token whose ID is id, revoked and expired ones
	// included, or ErrNotFound.
	Token(ctx context.Context, id string) (TokenRecord, error)
	// RevokeToken records that the token with ID id was revoked at at (a
	// time that must be set); ErrNotFound if there is no such token.
	// Revoking a revoked token succeeds and keeps the first revocation
	// time. Tokens are never deleted.
	RevokeToken(ctx context.Context, id string, at time.Time) error

	// AddPrincipal records a principal; ErrExists if its ID or its name
	// is taken. Names are compared without regard to ASCII case, and a
	// name may not equal (in any case) another principal's ID, nor an ID
	// another's name: "Alice" is taken by "alice", and "usr_0123…" by the
	// principal with that ID.
	AddPrincipal(ctx context.Context, p Principal) error
	// Principal returns the principal named name, compared without regard
	// to ASCII case, or ErrNotFound. It never matches an ID. A catalog
	// written before names were compared that way may hold names that
	// differ only in case: then the exact spelling wins, and a name that
	// matches several without one spelled exactly is ErrAmbiguous.
	Principal(ctx context.Context, name string) (Principal, error)
	// PrincipalByID returns the principal whose ID is id, exactly, or
	// ErrNotFound. It never matches a name.
	PrincipalByID(ctx context.Context, id string) (Principal, error)
	// SetPassword replaces the password hash of the principal with ID id
	// and records who set it (Principal.PasswordBy); ErrNotFound if there
	// is no such principal.
	SetPassword(ctx context.Context, id, hash, by string) error
	// Principals returns every principal, ordered by name.
	Principals(ctx context.Context) ([]Principal, error)
	// AssignRole records a role assignment; ErrExists if the principal
	// holds that role on that scope already, ErrNotFound if the principal
	// or the vault does not exist.
	AssignRole(ctx context.Context, a RoleAssignment) error
	// RevokeRole removes a role assignment; ErrNotFound if there is none.
	RevokeRole(ctx context.Context, principal, role, vault string) error
	// RoleAssignments returns the assignments of principal (every one when
	// principal is ""), ordered by principal, role and vault.
	RoleAssignments(ctx context.Context, principal string) ([]RoleAssignment, error)

	// AddKeyEvent appends e to the key audit trail of vault e.Vault;
	// ErrNotFound if there is no such vault. Event and Time must be set.
	AddKeyEvent(ctx context.Context, e KeyEvent) error
	// KeyEvents returns every key event of vault, ordered by Time, then
	// by the order they were added; none for an unknown vault.
	KeyEvents(ctx context.Context, vault ID) ([]KeyEvent, error)
	// LastKeyEvent returns the last key event of vault in the order of
	// KeyEvents, or ErrNotFound if it has none. A caller tells a
	// recovery (a success after a failure) by it.
	LastKeyEvent(ctx context.Context, vault ID) (KeyEvent, error)

	// AppendChain appends to vault's snapshot chain (docs/format.md §8.1)
	// in one write transaction: it calls fn with the newest entry (a zero
	// entry, Seq 0, when the chain is empty), and stores the entries fn
	// returns, which must be numbered from head.Seq+1 without gaps, and
	// applies to the snapshot records the change each describes: an add
	// inserts the record of rows with its Snapshot ID (ErrExists if
	// present); an import needs the record present and live, an
	// import-forgotten present and soft-deleted; a forget sets its
	// Deleted and DeletedBy to the entry's Time and Principal, an
	// undelete clears them, a remove deletes the record. ErrNotFound if
	// the record is not there, ErrConflict if it is not in the state the
	// entry needs (live for a forget, soft-deleted for an undelete or a
	// remove). Any error, fn's included, leaves nothing changed.
	// fn may do I/O (a writer stores the snapshot object in it) but must
	// not call the catalog. ErrNotFound if there is no such vault.
	AppendChain(ctx context.Context, vault ID, fn func(head ChainEntry) ([]ChainEntry, []SnapshotRecord, error)) error
	// SnapshotChain returns vault's chain entries, ordered by Seq, and
	// its snapshot records (as Snapshots), both as of one moment: never
	// a record changed by an entry that is not in the list, nor the
	// reverse.
	SnapshotChain(ctx context.Context, vault ID) ([]ChainEntry, []SnapshotRecord, error)
	// SetPackHeader stores the sealed header of pack id (a pack recorded
	// with per-blob rows by format 1) and deletes those rows, in one
	// transaction; with a nil header it only deletes the rows (the pack
	// is missing from the store, and keeps no header); ErrNotFound if
	// there is no such pack. Once no vault has rows left, it compacts the
	// catalog so that the deleted rows do not linger in free pages.
	SetPackHeader(ctx context.Context, vault, id ID, header []byte) error

	// RemoveSnapshot deletes snapshot id's record (prune, after its
	// soft-delete period); ErrNotFound if there is none.
	RemoveSnapshot(ctx context.Context, vault, id ID) error
	// SetSnapshotDeleted soft-deletes snapshot id (at set: when, by whom)
	// or brings it back (at zero); ErrNotFound if there is no such
	// snapshot. Snapshots returns soft-deleted snapshots too, with
	// Deleted set.
	SetSnapshotDeleted(ctx context.Context, vault, id ID, at time.Time, by string) error

	// CondemnPack marks pack id as unused since at (zero: in use again);
	// ErrNotFound if there is no such pack. Packs reports it.
	CondemnPack(ctx context.Context, vault, id ID, at time.Time) error
	// RemovePack deletes pack id's record, its blobs' records and its
	// lookup keys, in one transaction; ErrNotFound if there is no such pack.
	RemovePack(ctx context.Context, vault, id ID) error

	// Settings returns vault's deletion-protection settings; the
	// defaults (DefaultSettings) for a vault that never set any.
	// ErrNotFound if there is no such vault.
	Settings(ctx context.Context, vault ID) (VaultSettings, error)
	// SetSettings replaces vault's settings; ErrNotFound if there is no
	// such vault. A DedupScope of "" is stored (and read back) as
	// DedupScopeVault; any other value but DedupScopeSource is an error.
	SetSettings(ctx context.Context, vault ID, s VaultSettings) error

	// AddEvent appends e to the vault's event trail (deletions,
	// protection changes, prune; docs/retention.md); ErrNotFound if there
	// is no such vault. Event and Time must be set.
	AddEvent(ctx context.Context, e VaultEvent) error
	// Events returns every event of vault, ordered by Time, then by the
	// order they were added.
	Events(ctx context.Context, vault ID) ([]VaultEvent, error)

	// BeginSession records a writer (a backup) working on vault, from
	// s.Started; ErrExists if s.ID is taken. A writer begins its session
	// before it loads the vault's index, and ends it after its snapshot
	// is recorded.
	BeginSession(ctx context.Context, vault ID, s Session) error
	// TouchSession records that session id is still alive at at.
	TouchSession(ctx context.Context, id string, at time.Time) error
	// EndSession removes session id; ending an unknown session succeeds.
	EndSession(ctx context.Context, id string) error
	// Sessions returns vault's sessions, oldest first.
	Sessions(ctx context.Context, vault ID) ([]Session, error)

	// AddRequest records a multi-user authorization request; ErrExists if
	// its ID is taken, ErrNotFound if r.Vault is set and names no vault.
	AddRequest(ctx context.Context, r Request) error
	// Request returns request id, or ErrNotFound.
	Request(ctx context.Context, id string) (Request, error)
	// Requests returns every request, oldest first.
	Requests(ctx context.Context) ([]Request, error)
	// DecideRequest moves request id from pending to state (approved,
	// rejected or expired), recording by and at, in one transaction that
	// first checks it is still pending: ErrNotFound if there is no such
	// request, ErrConflict if it is not pending (decided already).
	DecideRequest(ctx context.Context, id string, state RequestState, by string, at time.Time) error

	// KeyAnchor returns the anchor of vault's keyring (docs/format.md
	// §7.3) and the proposed generations recorded since, ordered by
	// generation. The error is ErrNotFound when the vault has no anchor
	// (proposals are returned all the same).
	KeyAnchor(ctx context.Context, vault ID) (KeyAnchor, []KeyProposal, error)
	// ProposeKeyring records that a key holder is about to store keyring
	// generation p.Generation with MAC p.MAC; ErrNotFound if there is no
	// such vault. Recording the same proposal twice succeeds.
	ProposeKeyring(ctx context.Context, vault ID, p KeyProposal) error
	// SetKeyAnchor makes a the vault's anchor, in one transaction that
	// first checks that the current anchor's generation is prev (0: the
	// vault has no anchor) and that a.Generation is above prev, and then
	// removes the proposals at or below a.Generation: ErrConflict when
	// the check fails, ErrNotFound if there is no such vault.
	SetKeyAnchor(ctx context.Context, vault ID, a KeyAnchor, prev uint64) error

	// Close releases resources.
	Close() error
}

// KeyRef names one version of a key encryption key (KEK).
type KeyRef struct {
	Provider string // "platform", later "pkcs11", "rsa-file", "awskms" …
	KeyID    string // provider-specific identifier (never secret)
	Version  string
}

func (r KeyRef) String() string {
	if r.Version == "" {
		return r.Provider + ":" + r.KeyID
	}
	return r.Provider + ":" + r.KeyID + " v" + r.Version
}

// WrappedKey is a secret (the root secret or a DEK) wrapped by a KEK.
type WrappedKey struct {
	KEK  KeyRef
	Alg  string // wrapping algorithm, e.g. "hkdf-aes-256-gcm"
	Data []byte
}

// KeyProvider performs wrap and unwrap with a KEK. Unwrap fails with
// ErrKeyUnavailable when the KEK cannot be reached or used, and with
// ErrWrongKey when it can but does not open the wrapped key.
type KeyProvider interface {
	// Current is the KEK new wraps use.
	Current() KeyRef
	// Wrap seals secret under the current KEK, binding aad.
	Wrap(ctx context.Context, secret, aad []byte) (WrappedKey, error)
	// Unwrap opens w, which must have been wrapped with the same aad.
	Unwrap(ctx context.Context, w WrappedKey, aad []byte) ([]byte, error)
}

// SecretDropper is a KeyProvider that keeps key material in memory (a
// parsed private key, a key file's versions) and can forget it: a vault
// calls DropSecrets when it drops its own unwrapped keys (a key TTL), and
// the provider reads the material again at its next Wrap or Unwrap.
type SecretDropper interface {
	DropSecrets()
}

// ChunkerParams are a vault's FastCDC sizes (docs/format.md §2).
type ChunkerParams struct {
	Min int `json:"min"`
	Avg int `json:"avg"`
	Max int `json:"max"`
}

// DedupParams is what an agent needs to chunk and identify data the way
// the vault does. It holds no data key: with it an agent can compute chunk
// boundaries and IDs, but cannot read anything stored.
type DedupParams struct {
	ChunkIDKey seal.Key
	GearSeed   seal.Key
	Chunker    ChunkerParams
}
