package format

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Format is the storage format this code writes (docs/format.md); it reads
// format 1 only to upgrade it (§10).
const Format = 2

// Bounds on a vault config (docs/format.md §6): even an authenticated
// config outside them is refused.
const (
	MinChunkMin = 4 << 10
	MaxChunkMax = 64 << 20
	MinPackSize = 1 << 20
	MaxPackSize = 64 << 20
)

// MaxKeyringDEKs bounds the DEKs of one keyring generation (§7.1).
const MaxKeyringDEKs = 1 << 16

// MACSize is the size of a keyring MAC and of a root commitment.
const MACSize = 32

// Config is the vault's plaintext config object (docs/format.md §6).
type Config struct {
	Format   int                 `json:"format"`
	ID       string              `json:"id"`
	Created  time.Time           `json:"created"`
	Chunker  vault.ChunkerParams `json:"chunker"`
	PackSize int                 `json:"pack_size"`
}

// ParseConfig decodes a config object and checks it against §6: format 2,
// or 1 (a vault to upgrade), and every bound.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config: %w: %v", vault.ErrCorrupt, err)
	}
	if c.Format != 1 && c.Format != Format {
		return c, fmt.Errorf("config: unknown vault format %d (this coffer reads formats 1 and 2; upgrade coffer)", c.Format)
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// Validate checks the config's fields against the bounds of §6.
func (c Config) Validate() error {
	if _, err := vault.ParseID(c.ID); err != nil {
		return fmt.Errorf("config: %w: %v", vault.ErrCorrupt, err)
	}
	if !timeInRange(c.Created) {
		return fmt.Errorf("config: %w: creation time %s out of range", vault.ErrCorrupt, c.Created)
	}
	p := c.Chunker
	switch {
	case p.Min < MinChunkMin || p.Avg <= p.Min || p.Max <= p.Avg || p.Max > MaxChunkMax:
		return fmt.Errorf("config: %w: chunk sizes min %d, avg %d, max %d: want %d <= min < avg < max <= %d", vault.ErrCorrupt, p.Min, p.Avg, p.Max, MinChunkMin, MaxChunkMax)
	case p.Avg&(p.Avg-1) != 0:
		return fmt.Errorf("config: %w: average chunk size %d is not a power of two", vault.ErrCorrupt, p.Avg)
	case c.PackSize < MinPackSize || c.PackSize > MaxPackSize:
		return fmt.Errorf("config: %w: pack size %d: want %d to %d", vault.ErrCorrupt, c.PackSize, MinPackSize, MaxPackSize)
	}
	return nil
}

// Equal reports whether c and o have the same fields (times compared as
// instants).
func (c Config) Equal(o Config) bool {
	return c.Format == o.Format && c.ID == o.ID && c.Created.Equal(o.Created) && c.Chunker == o.Chunker && c.PackSize == o.PackSize
}

// timeInRange reports whether t is representable as the i64 Unix
// nanoseconds of §7.1, from 1970 on.
func timeInRange(t time.Time) bool {
	return t.Year() >= 1970 && t.Year() <= 2261
}

// Keyring is one generation of the vault's wrapped keys (docs/format.md §7).
type Keyring struct {
	Format     int          `json:"format"`
	Vault      string       `json:"vault"`
	Generation uint64       `json:"generation"`
	Created    time.Time    `json:"created"`
	Config     *Config      `json:"config,omitempty"` // format 2
	KEK        KeyringKEK   `json:"kek"`
	Root       []byte       `json:"root"`
	DEKs       []KeyringDEK `json:"deks"`
	CurrentDEK uint32       `json:"current_dek"`
	MAC        []byte       `json:"mac,omitempty"` // format 2
}

// KeyringKEK names the KEK that wrapped a keyring generation.
type KeyringKEK struct {
	Provider string `json:"provider"`
	KeyID    string `json:"key_id"`
	Version  string `json:"version"`
	Alg      string `json:"alg"`
}

// KeyringDEK is one wrapped DEK.
type KeyringDEK struct {
	Version uint32    `json:"version"`
	Created time.Time `json:"created"`
	Wrapped []byte    `json:"wrapped"`
}

// KeyringName is the object name of generation g.
func KeyringName(g uint64) string { return fmt.Sprintf("%010d", g) }

// ParseKeyring decodes a keyring object named name and checks its shape
// (§7.1); it does not verify the MAC, which needs the root secret
// (Keyring.Verify). A format-1 keyring is returned for the upgrade of
// §10; the caller decides whether one is acceptable.
func ParseKeyring(name string, b []byte, vaultID vault.ID) (*Keyring, error) {
	var k Keyring
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("keyring %s: %w: too large", name, vault.ErrCorrupt)
	}
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("keyring %s: %w: %v", name, vault.ErrCorrupt, err)
	}
	if k.Format != 1 && k.Format != Format {
		return nil, fmt.Errorf("keyring %s: unknown format %d (this coffer reads formats 1 and 2; upgrade coffer)", name, k.Format)
	}
	if k.Generation == 0 || KeyringName(k.Generation) != name {
		return nil, fmt.Errorf("keyring %s: %w: generation %d does not match its name", name, vault.ErrCorrupt, k.Generation)
	}
	if k.Vault != hex.EncodeToString(vaultID[:]) {
		return nil, fmt.Errorf("keyring %s: %w: belongs to another vault", name, vault.ErrCorrupt)
	}
	if len(k.DEKs) == 0 || len(k.DEKs) > MaxKeyringDEKs {
		return nil, fmt.Errorf("keyring %s: %w: %d DEKs", name, vault.ErrCorrupt, len(k.DEKs))
	}
	found := false
	for i, d := range k.DEKs {
		if d.Version == 0 || (i > 0 && d.Version <= k.DEKs[i-1].Version) {
			return nil, fmt.Errorf("keyring %s: %w: DEK versions must be above 0 and strictly ascending", name, vault.ErrCorrupt)
		}
		if d.Version == k.CurrentDEK {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("keyring %s: %w: current DEK %d not listed", name, vault.ErrCorrupt, k.CurrentDEK)
	}
	if k.Format == 1 {
		if k.Config != nil || k.MAC != nil {
			return nil, fmt.Errorf("keyring %s: %w: a format-1 keyring with format-2 fields", name, vault.ErrCorrupt)
		}
		return &k, nil
	}
	if !timeInRange(k.Created) {
		return nil, fmt.Errorf("keyring %s: %w: creation time out of range", name, vault.ErrCorrupt)
	}
	for _, d := range k.DEKs {
		if !timeInRange(d.Created) {
			return nil, fmt.Errorf("keyring %s: %w: DEK v%d creation time out of range", name, vault.ErrCorrupt, d.Version)
		}
	}
	if k.Config == nil {
		return nil, fmt.Errorf("keyring %s: %w: no config", name, vault.ErrCorrupt)
	}
	if k.Config.Format != Format || k.Config.ID != k.Vault {
		return nil, fmt.Errorf("keyring %s: %w: its config is of format %d or another vault", name, vault.ErrCorrupt, k.Config.Format)
	}
	if err := k.Config.Validate(); err != nil {
		return nil, fmt.Errorf("keyring %s: %w", name, err)
	}
	if len(k.MAC) != MACSize {
		return nil, fmt.Errorf("keyring %s: %w: MAC of %d bytes", name, vault.ErrCorrupt, len(k.MAC))
	}
	return &k, nil
}

// Encode returns the keyring's JSON encoding.
func (k *Keyring) Encode() []byte {
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		panic("format: encode keyring: " + err.Error()) // unreachable: plain fields
	}
	return b
}

// macInput is M of §7.1.
func (k *Keyring) macInput(vaultID vault.ID) []byte {
	le := binary.LittleEndian
	str := func(b []byte, s []byte) []byte { return append(le.AppendUint32(b, uint32(len(s))), s...) }
	b := make([]byte, 0, 512+len(k.DEKs)*128)
	b = append(b, seal.LabelKeyringMAC...)
	b = append(b, 0)
	b = append(b, vaultID[:]...)
	b = le.AppendUint64(b, k.Generation)
	b = le.AppendUint64(b, uint64(k.Created.UnixNano()))
	c := k.Config
	b = le.AppendUint32(b, uint32(c.Format))
	b = le.AppendUint64(b, uint64(c.Created.UnixNano()))
	b = le.AppendUint32(b, uint32(c.Chunker.Min))
	b = le.AppendUint32(b, uint32(c.Chunker.Avg))
	b = le.AppendUint32(b, uint32(c.Chunker.Max))
	b = le.AppendUint32(b, uint32(c.PackSize))
	b = str(b, []byte(k.KEK.Provider))
	b = str(b, []byte(k.KEK.KeyID))
	b = str(b, []byte(k.KEK.Version))
	b = str(b, []byte(k.KEK.Alg))
	b = str(b, k.Root)
	b = le.AppendUint32(b, uint32(len(k.DEKs)))
	for _, d := range k.DEKs {
		b = le.AppendUint32(b, d.Version)
		b = le.AppendUint64(b, uint64(d.Created.UnixNano()))
		b = str(b, d.Wrapped)
	}
	return le.AppendUint32(b, k.CurrentDEK)
}

// KeyringMACKey is K_mac of §7.1, derived from the root secret.
func KeyringMACKey(root seal.Key, vaultID vault.ID) seal.Key {
	return seal.Derive(root, vaultID[:], seal.LabelKeyringMAC)
}

// ComputeMAC returns the keyring MAC of k under root secret root (§7.1).
// k must be a format-2 keyring with its config set.
func (k *Keyring) ComputeMAC(root seal.Key, vaultID vault.ID) []byte {
	key := KeyringMACKey(root, vaultID)
	defer key.Wipe()
	return k.MACWith(key, vaultID)
}

// MACWith returns the keyring MAC of k under K_mac macKey.
func (k *Keyring) MACWith(macKey seal.Key, vaultID vault.ID) []byte {
	m := hmac.New(sha256.New, macKey[:])
	m.Write(k.macInput(vaultID))
	return m.Sum(nil)
}

// Verify checks k's MAC under root secret root, in constant time.
func (k *Keyring) Verify(root seal.Key, vaultID vault.ID) error {
	key := KeyringMACKey(root, vaultID)
	defer key.Wipe()
	return k.VerifyWith(key, vaultID)
}

// VerifyWith checks k's MAC under K_mac macKey, in constant time.
func (k *Keyring) VerifyWith(macKey seal.Key, vaultID vault.ID) error {
	if k.Format != Format || k.Config == nil || len(k.MAC) != MACSize {
		return fmt.Errorf("keyring %s: %w: not an authenticated (format 2) keyring", KeyringName(k.Generation), vault.ErrCorrupt)
	}
	if !hmac.Equal(k.MACWith(macKey, vaultID), k.MAC) {
		return fmt.Errorf("keyring %s: %w: its MAC does not verify under the vault's root secret: the keyring was written by someone who does not hold the vault's keys (a DEK or KEK reference added, removed or changed, the current DEK or the config edited)", KeyringName(k.Generation), vault.ErrCorrupt)
	}
	return nil
}

// RootCommit is the root commitment of §7.3: it fixes the root secret
// without revealing it.
func RootCommit(root seal.Key, vaultID vault.ID) [MACSize]byte {
	return seal.Derive(root, vaultID[:], seal.LabelRootCommit)
}
