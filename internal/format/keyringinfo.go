package format

import "time"

// KeyringInfo describes a keyring generation for people (coffer cat
// keyring): what wraps it and which DEK versions it holds. It has no
// field for key material, so no secret can leak through it: not the
// root secret, no wrapped DEK, not the MAC.
type KeyringInfo struct {
	Format     int        `json:"format"`
	Vault      string     `json:"vault"`
	Generation uint64     `json:"generation"`
	Created    time.Time  `json:"created"`
	KEK        KeyringKEK `json:"kek"`
	DEKs       []DEKInfo  `json:"deks"`
	CurrentDEK uint32     `json:"current_dek"`
	Config     *Config    `json:"config,omitempty"`
}

// DEKInfo names one DEK version of a keyring, without the key.
type DEKInfo struct {
	Version uint32    `json:"version"`
	Created time.Time `json:"created"`
}

// Info describes k without its secrets.
func (k *Keyring) Info() KeyringInfo {
	in := KeyringInfo{Format: k.Format, Vault: k.Vault, Generation: k.Generation, Created: k.Created,
		KEK: k.KEK, CurrentDEK: k.CurrentDEK, DEKs: make([]DEKInfo, len(k.DEKs))}
	if k.Config != nil {
		c := *k.Config
		in.Config = &c
	}
	for i, d := range k.DEKs {
		in.DEKs[i] = DEKInfo{Version: d.Version, Created: d.Created}
	}
	return in
}
