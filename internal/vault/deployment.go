package vault

import (
	"context"
	"errors"
	"time"
)

// SealedKEK is one version of the platform key as a shared catalog keeps
// it: the key sealed under the deployment key every server is given
// (docs/format.md §1.1). The catalog stores the row; only a holder of the
// deployment key can open it, and the sealing binds the key ID, the
// version and the creation time, so a catalog writer can neither move a
// row to another version nor make an old key look new.
type SealedKEK struct {
	KeyID   string
	Version int
	Created time.Time
	Sealed  []byte
}

// ErrUnsealedStoreURL is the error of a vault whose store URL an older
// catalog recorded in plain text, which servers no longer trust
// (Deployment.VaultStore).
var ErrUnsealedStoreURL = errors.New("store URL not sealed")

// Deployment is what servers on different hosts share through a catalog
// instead of a data directory (docs/postgres.md, "Several servers"): the
// list of vaults, each vault's own store URL (sealed), the sealed versions of the
// platform key and the sealed URIs of customer-managed keys. The PostgreSQL catalog provides it; a catalog one
// server uses alone (SQLite) need not.
type Deployment interface {
	// Vaults lists the vaults that are not deleted, by name.
	Vaults(ctx context.Context) ([]VaultRecord, error)
	// VaultStore returns the sealed store URL recorded for vault name
	// (the server seals it under the deployment key, bound to the name),
	// nil when there is none, and ErrUnsealedStoreURL when there is only
	// a plain one an older version recorded.
	VaultStore(ctx context.Context, name string) ([]byte, error)
	// SetVaultStore records sealed as vault name's sealed store URL,
	// replacing any; nil removes it.
	SetVaultStore(ctx context.Context, name string, sealed []byte) error
	// PlatformKeys lists the sealed platform key versions, oldest first.
	PlatformKeys(ctx context.Context) ([]SealedKEK, error)
	// AddPlatformKey records a version; ErrExists if the version is
	// taken (another server added it first), whatever its key ID.
	AddPlatformKey(ctx context.Context, k SealedKEK) error
	// DeletePlatformKeys deletes the given versions of key keyID; missing
	// ones are skipped.
	DeletePlatformKeys(ctx context.Context, keyID string, versions []int) error
	// KeyURIs returns the sealed customer-key URIs recorded for vault, by
	// key ("provider key-id").
	KeyURIs(ctx context.Context, vault ID) (map[string][]byte, error)
	// SetKeyURI records the sealed URI of key kek for vault, replacing any.
	SetKeyURI(ctx context.Context, vault ID, kek string, sealed []byte) error
	// KeepKeyURI deletes every URI of vault but kek's.
	KeepKeyURI(ctx context.Context, vault ID, kek string) error
}
