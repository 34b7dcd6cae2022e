package format_test

// Second-round review of format 2's parsers and MAC inputs: fuzzers for
// what a catalog or store writer hands a reader (version 2 snapshot
// plaintexts, catalog copies of pack headers), and injectivity of the
// MAC and digest inputs (two different inputs never share one).

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// specSnapshotV is specSnapshot with the version byte given.
func specSnapshotV(version byte, dek []byte, dekVersion uint32, salt [32]byte, id [32]byte, plain []byte) []byte {
	prefix := append([]byte(specSnapMagic), version, 0, 0, 0)
	prefix = binary.LittleEndian.AppendUint32(prefix, dekVersion)
	prefix = append(prefix, salt[:]...)
	k := specDerive(dek, salt[:], specLabelSnapshot)
	aad := append(append([]byte(nil), prefix...), id[:]...)
	return specAEAD(k).Seal(prefix, make([]byte, 12), plain, aad)
}

// FuzzOpenSnapshotV2Plain: any plaintext sealed under the right key (what
// a DEK holder, an agent, could write) as a version 1 or 2 object never
// panics; what is accepted carries a link exactly when it is version 2,
// and seals and opens back to the same record and link.
func FuzzOpenSnapshotV2Plain(f *testing.F) {
	dek := testKey("fuzz dek")
	rec := sampleSnapshot()
	var seed map[string]any
	json.Unmarshal(fuzzSnapshotJSON(rec), &seed)
	seed["seq"] = 7
	seed["prev"] = strings.Repeat("ab", 32)
	v2, _ := json.Marshal(seed)
	f.Add(byte(2), v2)
	f.Add(byte(1), fuzzSnapshotJSON(rec))
	f.Add(byte(2), fuzzSnapshotJSON(rec))
	f.Add(byte(2), []byte(`{"seq":0,"prev":""}`))
	f.Add(byte(2), []byte(`{"tree":"`+rec.Tree.String()+`","seq":1,"prev":"`+strings.Repeat("AB", 32)+`"}`))
	keys := dekSet(map[uint32]seal.Key{1: dek})
	salt := testID("fuzz salt")
	f.Fuzz(func(t *testing.T, version byte, plain []byte) {
		version = 1 + version%2
		obj := specSnapshotV(version, dek[:], 1, salt, rec.ID, plain)
		got, link, err := format.OpenSnapshotLinked(rec.ID, obj, keys)
		if err != nil {
			if c := outcome(err); c != "corrupt" {
				t.Fatalf("error of class %s: %v", c, err)
			}
			return
		}
		if (version == 2) != (link.Seq != 0) {
			t.Fatalf("version %d object accepted with link %+v", version, link)
		}
		var again []byte
		if version == 2 {
			again, err = format.SealSnapshotLinked(got, link, dek, 1)
		} else {
			again, err = format.SealSnapshot(got, dek, 1)
		}
		if err != nil {
			t.Fatal(err)
		}
		back, link2, err := format.OpenSnapshotLinked(rec.ID, again, keys)
		if err != nil {
			t.Fatalf("re-sealed snapshot rejected: %v", err)
		}
		if link2 != link || format.SnapshotDigest(back) != format.SnapshotDigest(got) || format.DiffSnapshot(back, got) != "" {
			t.Fatalf("round trip changed the snapshot: %+v %+v / %+v %+v", got, link, back, link2)
		}
	})
}

// FuzzOpenPackHeaderCopy: a catalog's header copy holding any plaintext
// sealed under the pack's key, for any recorded size, never panics, and
// what is accepted describes blobs that exactly fill the pack.
func FuzzOpenPackHeaderCopy(f *testing.F) {
	dek := testKey("fuzz dek")
	salt := testID("fuzz pack")
	p := newSpecPack(dek[:], 1, salt)
	p.Add(1, testID("a"), []byte("\x00hello"), 5)
	p.Add(2, testID("b"), []byte("\x00tree"), 4)
	pack := p.Finish()
	f.Add(p.headerPlain(), int64(len(pack)))
	f.Add(p.headerPlain(), int64(len(pack)+1))
	f.Add([]byte("CFPH\xff\xff\xff\xff"), int64(1<<40))
	f.Add([]byte{}, int64(-1))
	keys := dekSet(map[uint32]seal.Key{1: dek})
	aad := append(append([]byte(nil), p.Prefix...), specPackHeaderTag...)
	f.Fuzz(func(t *testing.T, plain []byte, size int64) {
		sealed := specAEAD(p.Key).Seal(nil, specHeaderNonce(), plain, aad)
		entries, err := format.OpenPackHeader(salt, 1, size, sealed, keys)
		if err != nil {
			if c := outcome(err); c != "corrupt" {
				t.Fatalf("error of class %s: %v", c, err)
			}
			return
		}
		off := uint64(format.PackPrefixSize)
		for _, e := range entries {
			if uint64(e.Offset) != off || e.Length < uint32(seal.Overhead)+1 {
				t.Fatalf("entry %+v at %d", e, off)
			}
			off += uint64(e.Length)
		}
		if int64(off)+int64(len(sealed))+4 != size {
			t.Fatalf("accepted entries filling %d of a %d-byte pack", off, size)
		}
	})
}

// FuzzOpenPackHeaderCopyRaw: arbitrary bytes as a header copy, for any
// size and DEK version, never panic and are refused.
func FuzzOpenPackHeaderCopyRaw(f *testing.F) {
	dek := testKey("fuzz dek")
	f.Add([]byte("x"), int64(100), uint32(1))
	f.Add(make([]byte, 64), int64(-9223372036854775808), uint32(0))
	f.Add(make([]byte, 64), int64(9223372036854775807), uint32(1))
	keys := dekSet(map[uint32]seal.Key{1: dek})
	f.Fuzz(func(t *testing.T, sealed []byte, size int64, ver uint32) {
		if _, err := format.OpenPackHeader(testID("p"), ver, size, sealed, keys); err == nil {
			t.Fatal("a forged header copy was accepted")
		}
	})
}

// splitFields cuts b into n strings at 0xff bytes (an encoding the MAC
// inputs know nothing of, so that the fuzzer can shift boundaries).
func splitFields(b []byte, n int) []string {
	parts := strings.SplitN(string(b), "\xff", n)
	for len(parts) < n {
		parts = append(parts, "")
	}
	return parts
}

// FuzzKeyringMACInjective: two keyrings whose MACs agree agree in every
// field the MAC covers (field boundaries cannot be shifted, fields cannot
// be swapped between the KEK reference, the root and the DEKs).
func FuzzKeyringMACInjective(f *testing.F) {
	f.Add([]byte("platform\xffk\xff1\xffalg\xffroot\xffw1\xffw2"), []byte("platform\xffk1\xff\xffalg\xffroot\xffw1\xffw2"), uint32(1), uint32(1))
	f.Add([]byte("a\xffb"), []byte("ab\xff"), uint32(2), uint32(2))
	vid := testID("vault")
	root := testKey("root")
	at := time.Date(2031, 1, 2, 3, 4, 5, 6, time.UTC)
	build := func(b []byte, n uint32) *format.Keyring {
		p := splitFields(b, 7)
		cfg := format.Config{Format: 2, ID: vid.String(), Created: at, Chunker: vault.ChunkerParams{Min: 1 << 19, Avg: 1 << 20, Max: 1 << 23}, PackSize: 16 << 20}
		k := &format.Keyring{Format: 2, Vault: vid.String(), Generation: 3, Created: at, Config: &cfg,
			KEK:  format.KeyringKEK{Provider: p[0], KeyID: p[1], Version: p[2], Alg: p[3]},
			Root: []byte(p[4]), CurrentDEK: 1}
		k.DEKs = append(k.DEKs, format.KeyringDEK{Version: 1, Created: at, Wrapped: []byte(p[5])})
		if n%2 == 0 {
			k.DEKs = append(k.DEKs, format.KeyringDEK{Version: 2, Created: at, Wrapped: []byte(p[6])})
		}
		return k
	}
	f.Fuzz(func(t *testing.T, a, b []byte, na, nb uint32) {
		ka, kb := build(a, na), build(b, nb)
		if !bytes.Equal(ka.ComputeMAC(root, vid), kb.ComputeMAC(root, vid)) {
			return
		}
		ja, _ := json.Marshal(ka)
		jb, _ := json.Marshal(kb)
		if !bytes.Equal(ja, jb) {
			t.Fatalf("two different keyrings share a MAC:\n%s\n%s", ja, jb)
		}
	})
}

// FuzzChainInputsInjective: two snapshot records with one digest are the
// same record, and two chain entries with one MAC the same entry.
func FuzzChainInputsInjective(f *testing.F) {
	f.Add([]byte("host\xffa\xffb\xff\xfft"), []byte("hosta\xff\xffb\xfft\xff"))
	f.Add([]byte("\xff\xff\xff\xff"), []byte("\xff\xff\xff"))
	rec := func(b []byte) vault.SnapshotRecord {
		p := splitFields(b, 4)
		s := sampleSnapshot()
		s.Host = p[0]
		s.Paths = strings.Split(p[1], "\x00")
		s.Tags = nil
		if p[2] != "" {
			s.Tags = strings.Split(p[2], "\x00")
		}
		return s
	}
	c := format.NewChainMAC(testKey("chain"), testID("vault"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ra, rb := rec(a), rec(b)
		if format.SnapshotDigest(ra) == format.SnapshotDigest(rb) {
			if ra.Host != rb.Host || strings.Join(ra.Paths, "\x01") != strings.Join(rb.Paths, "\x01") || len(ra.Paths) != len(rb.Paths) ||
				strings.Join(ra.Tags, "\x01") != strings.Join(rb.Tags, "\x01") || len(ra.Tags) != len(rb.Tags) {
				t.Fatalf("two records share a digest: %+v / %+v", ra, rb)
			}
		}
		ea := vault.ChainEntry{Seq: 5, Kind: vault.ChainForget, Snapshot: testID("s"), Time: time.Unix(0, 7), Principal: string(a)}
		eb := ea
		eb.Principal = string(b)
		if c.Sum([32]byte{}, ea) == c.Sum([32]byte{}, eb) && ea.Principal != eb.Principal {
			t.Fatalf("two principals share a chain MAC: %q / %q", a, b)
		}
	})
}
