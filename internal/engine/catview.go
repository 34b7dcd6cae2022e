package engine

import "github.com/coffer-backup/coffer/internal/format"

// KeyringInfo describes the vault's current keyring generation without
// its secrets (coffer cat keyring).
func (v *Vault) KeyringInfo() format.KeyringInfo {
	return v.keys.Load().keyring.Info()
}
