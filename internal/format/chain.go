package format

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Snapshot chain constants (docs/format.md §8.1).
const (
	// LabelSnapshotChain derives the chain key from the root secret and
	// prefixes every MAC input.
	LabelSnapshotChain = "coffer/v2/snapshot-chain"
	// labelSnapshotDigest prefixes the digest of a snapshot record.
	labelSnapshotDigest = "coffer/v2/snapshot-digest"
)

// SnapshotLink is where a format 2 snapshot object says it sits in the
// snapshot chain: its entry's number and the chain value before it. Seq
// is 0 for a format 1 object, which says nothing.
type SnapshotLink struct {
	Seq  uint64
	Prev [32]byte
}

func appendStr(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// copyMarker starts the copy part of a snapshot digest (§8.6).
const copyMarker = 0xFFFFFFFF

// SnapshotDigest is D(s) of docs/format.md §8.1: a hash of every field of
// the catalog's record of a snapshot (not its soft-delete state, which
// forget entries carry).
func SnapshotDigest(s vault.SnapshotRecord) [32]byte {
	b := make([]byte, 0, 256)
	b = append(b, labelSnapshotDigest...)
	b = append(b, s.ID[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Time.UnixNano()))
	b = appendStr(b, s.Host)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.Paths)))
	for _, p := range s.Paths {
		b = appendStr(b, p)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.Tags)))
	for _, t := range s.Tags {
		b = appendStr(b, t)
	}
	b = append(b, s.Tree[:]...)
	b = append(b, s.Parent[:]...) // zero when none
	b = binary.LittleEndian.AppendUint64(b, s.Files)
	b = binary.LittleEndian.AppendUint64(b, s.Dirs)
	b = binary.LittleEndian.AppendUint64(b, s.Bytes)
	b = binary.LittleEndian.AppendUint64(b, s.BytesAdded)
	b = binary.LittleEndian.AppendUint64(b, uint64(int64(s.Duration)))
	if s.Domain != "" {
		// Only when set, so that the digests of snapshots of the
		// vault-wide domain are those format 2 always wrote; the fields
		// before are fixed-size or length-prefixed, so the two forms
		// cannot be confused.
		b = appendStr(b, s.Domain)
	}
	if c := s.Copy; c != nil {
		// Only for copies (§8.6). The marker 0xFFFFFFFF is no domain's
		// length (at most 64), so this part cannot be read as a domain.
		b = binary.LittleEndian.AppendUint32(b, copyMarker)
		b = append(b, c.Vault[:]...)
		b = append(b, c.Snapshot[:]...)
		b = binary.LittleEndian.AppendUint64(b, uint64(c.Time.UnixNano()))
	}
	return sha256.Sum256(b)
}

// ChainMAC computes snapshot-chain MACs (h[n] of docs/format.md §8.1)
// under one chain key. It is not safe for concurrent use.
type ChainMAC struct {
	vault vault.ID
	h     hash.Hash
	buf   []byte
}

// ChainKey derives the chain key C from the vault's root secret.
func ChainKey(root seal.Key, vaultID vault.ID) seal.Key {
	return seal.Derive(root, vaultID[:], LabelSnapshotChain)
}

// NewChainMAC returns a MAC computer under chain key c.
func NewChainMAC(c seal.Key, vaultID vault.ID) *ChainMAC {
	return &ChainMAC{vault: vaultID, h: hmac.New(sha256.New, c[:])}
}

// Sum returns h[e.Seq] given prev = h[e.Seq-1]; e.MAC is ignored.
func (m *ChainMAC) Sum(prev [32]byte, e vault.ChainEntry) [32]byte {
	b := m.buf[:0]
	b = append(b, LabelSnapshotChain...)
	b = append(b, m.vault[:]...)
	b = append(b, prev[:]...)
	b = binary.LittleEndian.AppendUint64(b, e.Seq)
	b = append(b, byte(e.Kind))
	b = append(b, e.Snapshot[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
	b = appendStr(b, e.Principal)
	b = append(b, e.Digest[:]...)
	m.buf = b
	m.h.Reset()
	m.h.Write(b)
	var out [32]byte
	m.h.Sum(out[:0])
	return out
}

// Verify reports whether e.MAC is h[e.Seq] given prev, in constant time.
func (m *ChainMAC) Verify(prev [32]byte, e vault.ChainEntry) bool {
	want := m.Sum(prev, e)
	return hmac.Equal(want[:], e.MAC[:])
}

// ValidChainKind reports whether k is a kind of docs/format.md §8.1.
func ValidChainKind(k vault.ChainKind) bool {
	return k >= vault.ChainAdd && k <= vault.ChainRecover
}

// DiffSnapshot names the fields in which a catalog record differs from the
// sealed record, "" when it does not (soft-delete state aside).
func DiffSnapshot(catalog, sealed vault.SnapshotRecord) string {
	var d []string
	eqs := func(a, b []string) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	if !catalog.Time.Equal(sealed.Time) {
		d = append(d, fmt.Sprintf("time %s (sealed: %s)", catalog.Time.UTC().Format("2006-01-02T15:04:05.999999999Z"), sealed.Time.UTC().Format("2006-01-02T15:04:05.999999999Z")))
	}
	if catalog.Host != sealed.Host {
		d = append(d, fmt.Sprintf("host %q (sealed: %q)", catalog.Host, sealed.Host))
	}
	if !eqs(catalog.Paths, sealed.Paths) {
		d = append(d, fmt.Sprintf("paths %q (sealed: %q)", catalog.Paths, sealed.Paths))
	}
	if !eqs(catalog.Tags, sealed.Tags) {
		d = append(d, fmt.Sprintf("tags %q (sealed: %q)", catalog.Tags, sealed.Tags))
	}
	if catalog.Tree != sealed.Tree {
		d = append(d, fmt.Sprintf("root tree %s (sealed: %s)", catalog.Tree.Short(), sealed.Tree.Short()))
	}
	if catalog.Parent != sealed.Parent {
		d = append(d, fmt.Sprintf("parent %s (sealed: %s)", catalog.Parent.Short(), sealed.Parent.Short()))
	}
	if catalog.Files != sealed.Files || catalog.Dirs != sealed.Dirs || catalog.Bytes != sealed.Bytes ||
		catalog.BytesAdded != sealed.BytesAdded || catalog.Duration != sealed.Duration {
		d = append(d, "statistics (files, dirs, bytes, bytes added or duration)")
	}
	if !sameCopy(catalog.Copy, sealed.Copy) {
		d = append(d, "copy of (source vault, snapshot or time)")
	}
	if len(d) == 0 {
		return ""
	}
	out := d[0]
	for _, s := range d[1:] {
		out += ", " + s
	}
	return out
}

func sameCopy(a, b *vault.SnapshotCopy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Vault == b.Vault && a.Snapshot == b.Snapshot && a.Time.Equal(b.Time)
}
