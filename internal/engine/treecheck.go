package engine

import (
	"fmt"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Stored reports whether blob t/id is stored or being stored: indexed,
// pending in a pack being filled, or in a condemned pack (still
// readable; prune reprieves it if a snapshot saved meanwhile needs it).
func (v *Vault) Stored(t vault.BlobType, id vault.ID) bool {
	k := blobKey{id, t}
	v.mu.Lock()
	_, ok := v.pending[k]
	v.mu.Unlock()
	if ok {
		return true
	}
	_, ok = v.Lookup(t, id)
	return ok
}

// CheckNewTree checks the content of a tree blob about to be stored: it
// must decode as a tree (format.CheckTree), and every subtree and data
// blob it references must be stored already (Stored), so that a snapshot
// can only ever be based on a complete, valid tree: writers store
// children before their parents. It reads nothing from the store: one
// index lookup per reference.
func (v *Vault) CheckNewTree(plain []byte) error {
	return format.CheckTree(plain, func(t vault.BlobType, id vault.ID) error {
		if !v.Stored(t, id) {
			return fmt.Errorf("%w: it references %s blob %s, which the vault does not hold (store a tree's subtrees and data first)", vault.ErrNotFound, t, id.Short())
		}
		return nil
	})
}
