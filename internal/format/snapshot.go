package format

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Snapshot object constants (docs/format.md §8).
const (
	SnapshotMagic   = "CFSN"
	SnapshotVersion = 0x01 // format 1: no chain link; read for imported snapshots only
	// SnapshotVersion2 is what format 2 writes: the JSON also holds the
	// snapshot's place in the snapshot chain (docs/format.md §8, §8.1).
	SnapshotVersion2 = 0x02
	MaxSnapshotSize  = 16 << 20
	objPrefixSize    = 44
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
	// Domain is the dedup domain of the snapshot's blobs (docs/format.md
	// §1.3), absent for the vault-wide domain.
	Domain string `json:"domain,omitempty"`
	// CopiedFrom is set on copies only (docs/format.md §8.6).
	CopiedFrom *copyJSON `json:"copied_from,omitempty"`
	// Source is the writer's report about its own machine (docs/format.md
	// §8.7), version 0x02 only. It is in the sealed object alone: the
	// catalog does not hold it.
	Source *sourceJSON `json:"source,omitempty"`
	// Version 0x02 only (pointers, so that their absence is seen).
	Seq  *uint64 `json:"seq,omitempty"`
	Prev *string `json:"prev,omitempty"`
}

// copyJSON is the sealed form of vault.SnapshotCopy.
type copyJSON struct {
	Vault    string    `json:"vault"`
	Snapshot string    `json:"snapshot"`
	Time     time.Time `json:"time"`
}

// sourceJSON is the sealed form of vault.SourceFacts (§8.7).
type sourceJSON struct {
	Volumes     []volumeJSON     `json:"volumes"`
	LocalCopies *localCopiesJSON `json:"local_copies,omitempty"`
}

type volumeJSON struct {
	Path       string `json:"path"`
	Mount      string `json:"mount"`
	Device     string `json:"device"`
	FSType     string `json:"fstype"`
	Encryption string `json:"encryption"`
	Method     string `json:"method,omitempty"`
	Detail     string `json:"detail,omitempty"`
}

type localCopiesJSON struct {
	Keep      int    `json:"keep"`
	Held      int    `json:"held"`
	Encrypted bool   `json:"encrypted"`
	Cipher    string `json:"cipher,omitempty"`
}

func sourceToJSON(f *vault.SourceFacts) *sourceJSON {
	if f == nil {
		return nil
	}
	j := &sourceJSON{Volumes: make([]volumeJSON, len(f.Volumes))}
	for i, v := range f.Volumes {
		j.Volumes[i] = volumeJSON{Path: v.Path, Mount: v.Mount, Device: v.Device, FSType: v.FSType,
			Encryption: v.Encryption, Method: v.Method, Detail: v.Detail}
	}
	if c := f.LocalCopies; c != nil {
		j.LocalCopies = &localCopiesJSON{Keep: c.Keep, Held: c.Held, Encrypted: c.Encrypted, Cipher: c.Cipher}
	}
	return j
}

func sourceFromJSON(j *sourceJSON) *vault.SourceFacts {
	if j == nil {
		return nil
	}
	f := &vault.SourceFacts{Volumes: make([]vault.SourceVolume, len(j.Volumes))}
	for i, v := range j.Volumes {
		f.Volumes[i] = vault.SourceVolume{Path: v.Path, Mount: v.Mount, Device: v.Device, FSType: v.FSType,
			Encryption: v.Encryption, Method: v.Method, Detail: v.Detail}
	}
	if c := j.LocalCopies; c != nil {
		f.LocalCopies = &vault.LocalCopyStatus{Keep: c.Keep, Held: c.Held, Encrypted: c.Encrypted, Cipher: c.Cipher}
	}
	return f
}

// SealSnapshot encodes and seals s under dek as a format 1 (0x01) object;
// the object's name is s.ID. Writers use SealSnapshotLinked; this one is
// kept for test vectors and upgrade tests.
func SealSnapshot(s vault.SnapshotRecord, dek seal.Key, dekVersion uint32) ([]byte, error) {
	return sealSnapshot(s, nil, dek, dekVersion)
}

// SealSnapshotLinked encodes and seals s under dek as a format 2 (0x02)
// object that records its place in the snapshot chain; link.Seq must be
// at least 1.
func SealSnapshotLinked(s vault.SnapshotRecord, link SnapshotLink, dek seal.Key, dekVersion uint32) ([]byte, error) {
	if link.Seq == 0 {
		return nil, fmt.Errorf("encode snapshot: chain entry number 0")
	}
	return sealSnapshot(s, &link, dek, dekVersion)
}

func sealSnapshot(s vault.SnapshotRecord, link *SnapshotLink, dek seal.Key, dekVersion uint32) ([]byte, error) {
	version := byte(SnapshotVersion)
	j := snapshotJSON{
		Time: s.Time.UTC(), Host: s.Host, Paths: s.Paths, Tags: s.Tags,
		Tree: s.Tree.String(), Files: s.Files, Dirs: s.Dirs, Bytes: s.Bytes,
		BytesAdded: s.BytesAdded, DurationNS: int64(s.Duration), Domain: s.Domain,
	}
	if err := CheckDomain(s.Domain); err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	if !s.Parent.IsZero() {
		j.Parent = s.Parent.String()
	}
	if c := s.Copy; c != nil {
		if link == nil {
			return nil, fmt.Errorf("encode snapshot: a copy is a format 2 object")
		}
		j.CopiedFrom = &copyJSON{Vault: c.Vault.String(), Snapshot: c.Snapshot.String(), Time: c.Time.UTC()}
	}
	if s.Source != nil {
		if link == nil {
			return nil, fmt.Errorf("encode snapshot: a source report is a format 2 object")
		}
		if err := CheckSource(s.Source, s.Paths); err != nil {
			return nil, fmt.Errorf("encode snapshot: %w", err)
		}
		j.Source = sourceToJSON(s.Source)
	}
	if link != nil {
		version = SnapshotVersion2
		prev := hex.EncodeToString(link.Prev[:])
		j.Seq, j.Prev = &link.Seq, &prev
	}
	pt, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	out := make([]byte, 0, objPrefixSize+len(pt)+seal.Overhead)
	out = append(out, SnapshotMagic...)
	out = append(out, version, 0, 0, 0)
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

// OpenSnapshot authenticates and decodes the snapshot object named id, of
// either version, without its chain link.
func OpenSnapshot(id vault.ID, b []byte, keys DEKs) (vault.SnapshotRecord, error) {
	s, _, err := OpenSnapshotLinked(id, b, keys)
	return s, err
}

// OpenSnapshotLinked authenticates and decodes the snapshot object named
// id and returns its chain link (Seq 0 for a format 1 object).
func OpenSnapshotLinked(id vault.ID, b []byte, keys DEKs) (vault.SnapshotRecord, SnapshotLink, error) {
	var s vault.SnapshotRecord
	var link SnapshotLink
	if len(b) > MaxSnapshotSize {
		return s, link, fmt.Errorf("snapshot %s: %w: %d bytes", id, vault.ErrCorrupt, len(b))
	}
	if len(b) < objPrefixSize+seal.Overhead {
		return s, link, fmt.Errorf("snapshot %s: %w: %d bytes", id, vault.ErrTruncated, len(b))
	}
	if string(b[:4]) != SnapshotMagic || (b[4] != SnapshotVersion && b[4] != SnapshotVersion2) || b[5]|b[6]|b[7] != 0 {
		return s, link, fmt.Errorf("snapshot %s: %w: bad magic, version or reserved bytes", id, vault.ErrCorrupt)
	}
	s, j, err := openSnapshotBody(id, b, keys)
	if err != nil {
		return vault.SnapshotRecord{}, link, err
	}
	// The version byte is authenticated (AAD): a 0x02 object carries its
	// link, a 0x01 object carries none.
	if b[4] == SnapshotVersion2 {
		if j.Seq == nil || j.Prev == nil || *j.Seq == 0 {
			return vault.SnapshotRecord{}, link, fmt.Errorf("snapshot %s: %w: version 2 object without its chain link", id, vault.ErrCorrupt)
		}
		p, err := hex.DecodeString(*j.Prev)
		if err != nil || len(p) != len(link.Prev) || hex.EncodeToString(p) != *j.Prev {
			return vault.SnapshotRecord{}, link, fmt.Errorf("snapshot %s: %w: bad chain value %q", id, vault.ErrCorrupt, *j.Prev)
		}
		link.Seq = *j.Seq
		copy(link.Prev[:], p)
	} else if j.Seq != nil || j.Prev != nil {
		return vault.SnapshotRecord{}, link, fmt.Errorf("snapshot %s: %w: version 1 object with a chain link", id, vault.ErrCorrupt)
	}
	return s, link, nil
}

func openSnapshotBody(id vault.ID, b []byte, keys DEKs) (vault.SnapshotRecord, snapshotJSON, error) {
	var s vault.SnapshotRecord
	var j snapshotJSON
	ver := binary.LittleEndian.Uint32(b[8:12])
	dek, err := keys(ver)
	if err != nil {
		return s, j, fmt.Errorf("snapshot %s: DEK version %d: %w", id, ver, err)
	}
	k := seal.Derive(dek, b[12:44], seal.LabelSnapshot)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	pt, err := seal.NewAEAD(k).Open(nil, nonce[:], b[objPrefixSize:], snapshotAAD(b[:objPrefixSize], id))
	if err != nil {
		return s, j, fmt.Errorf("snapshot %s: %w: authentication failed", id, vault.ErrCorrupt)
	}
	dec := json.NewDecoder(bytes.NewReader(pt))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return s, j, fmt.Errorf("snapshot %s: %w: %v", id, vault.ErrCorrupt, err)
	}
	tree, err := vault.ParseID(j.Tree)
	if err != nil {
		return s, j, fmt.Errorf("snapshot %s: %w: tree: %v", id, vault.ErrCorrupt, err)
	}
	s = vault.SnapshotRecord{
		ID: id, Time: j.Time, Host: j.Host, Paths: j.Paths, Tags: j.Tags, Tree: tree,
		Files: j.Files, Dirs: j.Dirs, Bytes: j.Bytes, BytesAdded: j.BytesAdded,
		Duration: time.Duration(j.DurationNS), Domain: j.Domain,
	}
	if err := CheckDomain(j.Domain); err != nil {
		return s, j, fmt.Errorf("snapshot %s: %w: %v", id, vault.ErrCorrupt, err)
	}
	if j.Parent != "" {
		if s.Parent, err = vault.ParseID(j.Parent); err != nil {
			return s, j, fmt.Errorf("snapshot %s: %w: parent: %v", id, vault.ErrCorrupt, err)
		}
	}
	if c := j.CopiedFrom; c != nil {
		if b[4] != SnapshotVersion2 {
			return s, j, fmt.Errorf("snapshot %s: %w: version 1 object with copied_from", id, vault.ErrCorrupt)
		}
		sc := &vault.SnapshotCopy{Time: c.Time}
		if sc.Vault, err = vault.ParseID(c.Vault); err != nil {
			return s, j, fmt.Errorf("snapshot %s: %w: copied_from vault: %v", id, vault.ErrCorrupt, err)
		}
		if sc.Snapshot, err = vault.ParseID(c.Snapshot); err != nil {
			return s, j, fmt.Errorf("snapshot %s: %w: copied_from snapshot: %v", id, vault.ErrCorrupt, err)
		}
		s.Copy = sc
	}
	if j.Source != nil {
		if b[4] != SnapshotVersion2 {
			return s, j, fmt.Errorf("snapshot %s: %w: version 1 object with a source report", id, vault.ErrCorrupt)
		}
		s.Source = sourceFromJSON(j.Source)
		if err := CheckSource(s.Source, s.Paths); err != nil {
			return s, j, fmt.Errorf("snapshot %s: %w: %v", id, vault.ErrCorrupt, err)
		}
	}
	return s, j, nil
}
