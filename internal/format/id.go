package format

import (
	"github.com/zeebo/blake3"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// IDHasher computes blob IDs: BLAKE3-256 keyed with the vault's chunk-ID
// key (docs/format.md §1.2). It is not safe for concurrent use; give each
// goroutine its own (Clone).
type IDHasher struct {
	base *blake3.Hasher
	h    *blake3.Hasher
}

// NewIDHasher returns a hasher keyed with key.
func NewIDHasher(key seal.Key) *IDHasher {
	base, err := blake3.NewKeyed(key[:])
	if err != nil {
		panic("format: blake3: " + err.Error()) // unreachable: the key is 32 bytes
	}
	return &IDHasher{base: base, h: base.Clone()}
}

// Clone returns an independent hasher with the same key.
func (x *IDHasher) Clone() *IDHasher { return &IDHasher{base: x.base, h: x.base.Clone()} }

// ID returns the ID of data.
func (x *IDHasher) ID(data []byte) vault.ID {
	x.h.Reset()
	x.h.Write(data)
	var id vault.ID
	x.h.Sum(id[:0])
	return id
}
