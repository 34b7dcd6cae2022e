package format

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/coffer-backup/coffer/internal/vault"
)

// labelSettingsDigest prefixes the digest of a vault's settings
// (docs/format.md §8.4).
const labelSettingsDigest = "coffer/v2/settings-digest"

// SettingsDigest is S(vault, s) of docs/format.md §8.4: a hash of the
// vault's ID and every field of its settings that a decision reads (not
// Updated, which the chain entry's time records). A settings entry of the
// snapshot chain carries it, under the chain's MAC.
func SettingsDigest(vaultID vault.ID, s vault.VaultSettings) [32]byte {
	b := make([]byte, 0, 128+len(s.Policy))
	b = append(b, labelSettingsDigest...)
	b = append(b, vaultID[:]...)
	b = appendStr(b, string(s.SoftDelete))
	b = binary.LittleEndian.AppendUint32(b, uint32(s.SoftDeleteDays))
	b = appendStr(b, string(s.Immutability))
	b = binary.LittleEndian.AppendUint64(b, uint64(int64(s.MinRetention)))
	single := byte(0)
	if s.SingleUser {
		single = 1
	}
	b = append(b, single)
	b = appendStr(b, s.Policy)
	// The catalog stores an unset scope as "vault"; both mean the same.
	b = appendStr(b, string(s.DedupScope.OrDefault()))
	return sha256.Sum256(b)
}
