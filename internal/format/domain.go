package format

import (
	"fmt"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Dedup domains (docs/format.md §1.3). A vault whose dedup scope is
// "source" gives every source its own chunk-ID key and gear seed, so that
// the IDs one source computes say nothing about another's data. The
// vault-wide domain, "", keeps the keys of §1 (labels coffer/v1/…).
const (
	// LabelDedupDomain derives the domain base key from the root secret;
	// a vault keeps only this key in memory, never the root secret.
	LabelDedupDomain = "coffer/v2/dedup-domain"
	// LabelChunkIDDomain and LabelGearSeedDomain, followed by a NUL and
	// the domain, derive a domain's chunk-ID key and gear seed from the
	// domain base key.
	LabelChunkIDDomain  = "coffer/v2/chunk-id-domain"
	LabelGearSeedDomain = "coffer/v2/gear-seed-domain"
	// MaxDomainLen bounds a domain name (a source's principal ID is 20).
	MaxDomainLen = 64
)

// CheckDomain checks a dedup domain name: "" (the vault-wide domain) or
// 1 to MaxDomainLen printable ASCII bytes other than space (0x21-0x7e),
// so that it can neither hold the NUL that ends the label nor reach a
// terminal as a control character.
func CheckDomain(d string) error {
	if len(d) > MaxDomainLen {
		return fmt.Errorf("dedup domain of %d bytes: at most %d", len(d), MaxDomainLen)
	}
	for i := 0; i < len(d); i++ {
		if d[i] < 0x21 || d[i] > 0x7e {
			return fmt.Errorf("dedup domain %q: only printable ASCII without spaces", d)
		}
	}
	return nil
}

// DomainBaseKey is the domain base key of docs/format.md §1.3.
func DomainBaseKey(root seal.Key, vaultID vault.ID) seal.Key {
	return seal.Derive(root, vaultID[:], LabelDedupDomain)
}

// DomainKeys returns the chunk-ID key and gear seed of domain d (not "")
// from the domain base key.
func DomainKeys(base seal.Key, vaultID vault.ID, d string) (chunkID, gearSeed seal.Key, err error) {
	if err := CheckDomain(d); err != nil {
		return chunkID, gearSeed, err
	}
	if d == "" {
		return chunkID, gearSeed, fmt.Errorf("dedup domain: the vault-wide domain has the keys of the root secret, not of the domain base key")
	}
	return seal.Derive(base, vaultID[:], LabelChunkIDDomain+"\x00"+d), seal.Derive(base, vaultID[:], LabelGearSeedDomain+"\x00"+d), nil
}
