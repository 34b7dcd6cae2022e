package format

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Snapshot object constants (docs/format.md §8).
const (
	SnapshotMagic   = "CFSN"
	SnapshotVersion = 0x01
	MaxSnapshotSize = 16 << 20
	objPrefixSize   = 44
)

// snapshotJSON is the sealed plaintext of a snapshot.
type snapshotJSON struct {
	Time       time.Time `json:"time"`
	Host       string    `json:"host"`
	Paths      []string  `json:"paths"`
	Tags       []string  `json:"tags"`
	Tree       string    `json:"tree"`
	Parent     string    `json:"parent,omitempty"`
	Files      uint64    `json:"files"`
	Dirs       uint64    `json:"dirs"`
	Bytes      uint64    `json:"bytes"`
	BytesAdded uint64    `json:"bytes_added"`
	DurationNS int64     `json:"duration_ns"`
}

// SealSnapshot encodes and seals s under dek; the object's name is s.ID.
func SealSnapshot(s vault.SnapshotRecord, dek seal.Key, dekVersion uint32) ([]byte, error) {
	j := snapshotJSON{
		Time: s.Time.UTC(), Host: s.Host, Paths: s.Paths, Tags: s.Tags,
		Tree: s.Tree.String(), Files: s.Files, Dirs: s.Dirs, Bytes: s.Bytes,
		BytesAdded: s.BytesAdded, DurationNS: int64(s.Duration),
	}
	if !s.Parent.IsZero() {
		j.Parent = s.Parent.String()
	}
	pt, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	out := make([]byte, 0, objPrefixSize+len(pt)+seal.Overhead)
	out = append(out, SnapshotMagic...)
	out = append(out, SnapshotVersion, 0, 0, 0)
	out = binary.LittleEndian.AppendUint32(out, dekVersion)
	var salt [32]byte
	rand.Read(salt[:])
	out = append(out, salt[:]...)
	k := seal.Derive(dek, salt[:], seal.LabelSnapshot)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte // one message per derived key
	return seal.NewAEAD(k).Seal(out, nonce[:], pt, snapshotAAD(out[:objPrefixSize], s.ID)), nil
}

func snapshotAAD(prefix []byte, id vault.ID) []byte {
	aad := make([]byte, 0, objPrefixSize+vault.IDSize)
	return append(append(aad, prefix...), id[:]...)
}

// OpenSnapshot authenticates and decodes the snapshot object named id.
func OpenSnapshot(id vault.ID, b []byte, keys DEKs) (vault.SnapshotRecord, error) {
	var s vault.SnapshotRecord
	if len(b) > MaxSnapshotSize {
		return s, fmt.Errorf("snapshot %s: %w: %d bytes", id, vault.ErrCorrupt, len(b))
	}
	if len(b) < objPrefixSize+seal.Overhead {
		return s, fmt.Errorf("snapshot %s: %w: %d bytes", id, vault.ErrTruncated, len(b))
	}
	if string(b[:4]) != SnapshotMagic || b[4] != SnapshotVersion || b[5]|b[6]|b[7] != 0 {
		return s, fmt.Errorf("snapshot %s: %w: bad magic, version or reserved bytes", id, vault.ErrCorrupt)
	}
	ver := binary.LittleEndian.Uint32(b[8:12])
	dek, err := keys(ver)
	if err != nil {
		return s, fmt.Errorf("snapshot %s: DEK version %d: %w", id, ver, err)
	}
	k := seal.Derive(dek, b[12:44], seal.LabelSnapshot)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	pt, err := seal.NewAEAD(k).Open(nil, nonce[:], b[objPrefixSize:], snapshotAAD(b[:objPrefixSize], id))
	if err != nil {
		return s, fmt.Errorf("snapshot %s: %w: authentication failed", id, vault.ErrCorrupt)
	}
	var j snapshotJSON
	dec := json.NewDecoder(bytes.NewReader(pt))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return s, fmt.Errorf("snapshot %s: %w: %v", id, vault.ErrCorrupt, err)
	}
	tree, err := vault.ParseID(j.Tree)
	if err != nil {
		return s, fmt.Errorf("snapshot %s: %w: tree: %v", id, vault.ErrCorrupt, err)
	}
	s = vault.SnapshotRecord{
		ID: id, Time: j.Time, Host: j.Host, Paths: j.Paths, Tags: j.Tags, Tree: tree,
		Files: j.Files, Dirs: j.Dirs, Bytes: j.Bytes, BytesAdded: j.BytesAdded,
		Duration: time.Duration(j.DurationNS),
	}
	if j.Parent != "" {
		if s.Parent, err = vault.ParseID(j.Parent); err != nil {
			return s, fmt.Errorf("snapshot %s: %w: parent: %v", id, vault.ErrCorrupt, err)
		}
	}
	return s, nil
}
