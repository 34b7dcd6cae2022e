package main

import (
	"context"
	"encoding/binary"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

// damageFixture is a vault holding one snapshot, kept pristine: each case
// damages a copy of it.
type damageFixture struct {
	home, data string
	snap       string
	// packs by kind, and the blobs of each pack (offset, sealed length)
	dataPacks, treePacks []string
	blobs                map[string][]vault.BlobRecord
}

func newDamageFixture(t *testing.T) *damageFixture {
	t.Helper()
	e := newEnv(t)
	data := smallData(t)
	f := &damageFixture{home: e.home, data: data, snap: backupJSON(t, e, data), blobs: map[string][]vault.BlobRecord{}}

	v := openTestVault(t, e)
	defer v.Close()
	types := map[string]map[vault.BlobType]bool{}
	// The index the vault loaded (the catalog keeps it sealed).
	type key struct {
		t  vault.BlobType
		id vault.ID
	}
	var keys []key
	if err := v.EachBlob(context.Background(), func(bt vault.BlobType, id vault.ID, _ uint32) bool {
		keys = append(keys, key{bt, id})
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		b, _ := v.Lookup(k.t, k.id)
		p := b.Pack.String()
		if types[p] == nil {
			types[p] = map[vault.BlobType]bool{}
		}
		types[p][b.Type] = true
		f.blobs[p] = append(f.blobs[p], b)
	}
	for p, ts := range types {
		if len(ts) != 1 {
			t.Fatalf("pack %s mixes blob types %v: tree blobs must have packs of their own", p, ts)
		}
		if ts[vault.TreeBlob] {
			f.treePacks = append(f.treePacks, p)
		} else {
			f.dataPacks = append(f.dataPacks, p)
		}
		sort.Slice(f.blobs[p], func(i, j int) bool { return f.blobs[p][i].Offset < f.blobs[p][j].Offset })
	}
	if len(f.dataPacks) != 1 || len(f.treePacks) != 1 {
		t.Fatalf("want one data pack and one tree pack, have %v and %v", f.dataPacks, f.treePacks)
	}
	// The root tree is where the catalog says.
	if r, ok := v.Lookup(vault.TreeBlob, mustParseID(t, listSnapshots(t, e)[0].Tree)); !ok || r.Pack.String() != f.treePacks[0] {
		t.Fatalf("root tree not in the tree pack: %+v %v", r, ok)
	}
	return f
}

func mustParseID(t *testing.T, s string) vault.ID {
	t.Helper()
	id, err := vault.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// clone copies the pristine vault into a new COFFER_HOME.
func (f *damageFixture) clone(t *testing.T) *testEnv {
	t.Helper()
	e := newEnv(t)
	err := filepath.WalkDir(f.home, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(f.home, p)
		dst := filepath.Join(e.home, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func packFile(e *testEnv, id string) string {
	return filepath.Join(e.storeDir(), "packs", id[:2], id)
}

func snapshotFile(e *testEnv, id string) string {
	return filepath.Join(e.storeDir(), "snapshots", id)
}

func flipBit(t *testing.T, path string, off int64, bit uint) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 || off >= int64(len(b)) {
		t.Fatalf("offset %d outside %d-byte %s", off, len(b), path)
	}
	b[off] ^= 1 << bit
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// damageResult is what the commands said about a damaged vault.
type damageResult struct {
	check, checkData, restore string // stdout+stderr
	checkCode, checkDataCode  int
	restoreCode               int
	target                    string
}

func runDamaged(t *testing.T, e *testEnv) damageResult {
	t.Helper()
	var r damageResult
	out, errOut, code := coffer(t, e, "check")
	r.check, r.checkCode = out+errOut, code
	out, errOut, code = coffer(t, e, "check", "--read-data")
	r.checkData, r.checkDataCode = out+errOut, code
	r.target = t.TempDir()
	out, errOut, code = coffer(t, e, "restore", "latest", "--target", r.target)
	r.restore, r.restoreCode = out+errOut, code
	return r
}

// packPositions are the places of a pack to damage: name, offset, and
// whether a structural check (no --read-data) must notice and a restore
// must fail. A restore reads the prefix and the blobs it needs, never the
// header, so damage there leaves every restored byte authentic; check
// reads the header.
type position struct {
	name        string
	off         int64
	structural  bool
	restoreNeed bool
}

// damageWords is what a report of a flipped bit at pos may say. A damaged
// DEK version field selects a DEK the keyring does not have, and is
// reported as that ("key unavailable: the keyring has no DEK version N")
// rather than as corruption: both name the pack.
func damageWords(pos position) []string {
	if strings.Contains(pos.name, "DEK version") {
		return []string{"corrupt", "no DEK version"}
	}
	return []string{"corrupt"}
}

func packPositions(t *testing.T, path string, blobs []vault.BlobRecord) []position {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(b))
	h := int64(binary.LittleEndian.Uint32(b[n-4:]))
	first, last := blobs[0], blobs[len(blobs)-1]
	return []position{
		{"prefix magic", 0, true, true},
		{"prefix version", 4, true, true},
		{"prefix reserved", 6, true, true},
		{"prefix DEK version", 8, true, true},
		{"prefix salt", 12 + 17, true, true},
		{"first blob start", int64(first.Offset), false, true},
		{"first blob tag", int64(first.Offset + first.Length - 1), false, true},
		{"last blob middle", int64(last.Offset + last.Length/2), false, true},
		{"header start", n - 4 - h, true, false},
		{"header middle", n - 4 - h/2, true, false},
		{"header tag", n - 5, true, false},
		{"length low byte", n - 4, true, false},
		{"length high byte", n - 1, true, false},
	}
}

// TestDamagedObjects flips single bits in each kind of object and checks
// that check --read-data names the damaged object as corrupt, that a
// structural check notices everything outside the blobs, and that a
// restore that needs the damaged bytes fails while one that does not
// restores nothing but authentic data.
func TestDamagedObjects(t *testing.T) {
	f := newDamageFixture(t)
	type target struct {
		kind, id string
		blobs    []vault.BlobRecord
	}
	packs := []target{
		{"data pack", f.dataPacks[0], f.blobs[f.dataPacks[0]]},
		{"tree pack", f.treePacks[0], f.blobs[f.treePacks[0]]},
	}
	for _, p := range packs {
		pristine := f.clone(t)
		for _, pos := range packPositions(t, packFile(pristine, p.id), p.blobs) {
			for _, bit := range []uint{0, 7} {
				t.Run(p.kind+"/"+pos.name+"/bit"+string(rune('0'+bit)), func(t *testing.T) {
					e := f.clone(t)
					flipBit(t, packFile(e, p.id), pos.off, bit)
					r := runDamaged(t, e)
					assertDamageReported(t, "check --read-data", r.checkData, r.checkDataCode, p.id, damageWords(pos)...)
					if pos.structural {
						assertDamageReported(t, "check", r.check, r.checkCode, p.id, damageWords(pos)...)
					} else if r.checkCode != exitOK {
						t.Logf("check without --read-data noticed damage inside a blob: %s", r.check)
					}
					if pos.restoreNeed {
						// Damage to data, or to a tree below the root, is
						// restored around (exit 3, the damage listed); a
						// lost root tree leaves nothing to restore and a
						// DEK version the keyring lacks reads as a key
						// problem: both stop the restore (exit 1).
						code := exitPartial
						if strings.Contains(pos.name, "DEK version") || p.kind == "tree pack" && !strings.HasPrefix(pos.name, "first blob") {
							code = exitFailure
						}
						if r.restoreCode == exitOK {
							t.Errorf("restore of a snapshot whose %s is damaged exited 0:\n%s", p.kind, r.restore)
						} else {
							assertDamageReportedCode(t, "restore", r.restore, r.restoreCode, code, p.id, damageWords(pos)...)
						}
					} else {
						if r.restoreCode != exitOK {
							t.Logf("restore failed although it needs no damaged byte: %s", r.restore)
						} else {
							assertSameTree(t, f.data, filepath.Join(r.target, f.data))
						}
					}
				})
			}
		}
	}

	// The snapshot object.
	obj, err := os.ReadFile(snapshotFile(f.clone(t), f.snap))
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(obj))
	for _, pos := range []position{
		{"magic", 0, true, true},
		{"version", 4, true, true},
		{"DEK version", 8, true, true},
		{"salt", 12 + 5, true, true},
		{"ciphertext", 44 + 3, true, true},
		{"ciphertext middle", 44 + (n-44)/2, true, true},
		{"tag", n - 1, true, true},
	} {
		t.Run("snapshot/"+pos.name, func(t *testing.T) {
			e := f.clone(t)
			flipBit(t, snapshotFile(e, f.snap), pos.off, 3)
			r := runDamaged(t, e)
			assertDamageReported(t, "check --read-data", r.checkData, r.checkDataCode, f.snap, damageWords(pos)...)
			assertDamageReported(t, "check", r.check, r.checkCode, f.snap, damageWords(pos)...)
			assertDamageReported(t, "restore", r.restore, r.restoreCode, f.snap, damageWords(pos)...)
		})
	}
}

// assertDamageReported checks that a command exited 1 and named the object
// on a line holding one of what ("corrupt", "truncated", ...).
func assertDamageReported(t *testing.T, cmd, out string, code int, id string, what ...string) {
	t.Helper()
	assertDamageReportedCode(t, cmd, out, code, exitFailure, id, what...)
}

// assertDamageReportedCode is assertDamageReported with exit code want.
func assertDamageReportedCode(t *testing.T, cmd, out string, code, want int, id string, what ...string) {
	t.Helper()
	if code != want {
		t.Errorf("%s: exit %d, want %d:\n%s", cmd, code, want, out)
		return
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, id) {
			line = l
			break
		}
	}
	if line == "" {
		t.Errorf("%s does not name the damaged object %s:\n%s", cmd, id, out)
		return
	}
	for _, w := range what {
		if strings.Contains(line, w) {
			return
		}
	}
	t.Errorf("%s: the line naming %s does not say %q:\n%s", cmd, id, what, line)
}

// TestTruncatedAndMissingObjects checks that a short object, a missing one
// and a damaged one are told apart, by check with and without --read-data
// and by restore.
func TestTruncatedAndMissingObjects(t *testing.T) {
	f := newDamageFixture(t)
	pack := f.dataPacks[0]
	type damage struct {
		name   string
		do     func(t *testing.T, e *testEnv)
		id     string
		check  string // what check says
		not    []string
		verify string // what restore says
	}
	truncate := func(path string, size func(int64) int64) func(t *testing.T, e *testEnv) {
		return func(t *testing.T, e *testEnv) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, size(fi.Size())); err != nil {
				t.Fatal(err)
			}
		}
	}
	var cases []damage
	for _, kind := range []struct {
		name, id string
		path     func(*testEnv) string
	}{
		{"data pack", pack, func(e *testEnv) string { return packFile(e, pack) }},
		{"tree pack", f.treePacks[0], func(e *testEnv) string { return packFile(e, f.treePacks[0]) }},
	} {
		cases = append(cases,
			damage{kind.name + " truncated to half", nil, kind.id, "truncated", []string{"corrupt", "missing", "not found"}, "truncated"},
			damage{kind.name + " truncated by one byte", nil, kind.id, "truncated", []string{"corrupt", "missing", "not found"}, ""},
			damage{kind.name + " truncated to 10 bytes", nil, kind.id, "truncated", []string{"corrupt", "missing", "not found"}, "truncated"},
			damage{kind.name + " deleted", nil, kind.id, "missing", []string{"corrupt", "truncated"}, "not found"},
			damage{kind.name + " bit flipped", nil, kind.id, "corrupt", []string{"truncated", "missing", "not found"}, "corrupt"},
		)
		n := len(cases)
		path := kind.path
		cases[n-5].do = func(t *testing.T, e *testEnv) { truncate(path(e), func(s int64) int64 { return s / 2 })(t, e) }
		cases[n-4].do = func(t *testing.T, e *testEnv) { truncate(path(e), func(s int64) int64 { return s - 1 })(t, e) }
		cases[n-3].do = func(t *testing.T, e *testEnv) { truncate(path(e), func(int64) int64 { return 10 })(t, e) }
		cases[n-2].do = func(t *testing.T, e *testEnv) {
			if err := os.Remove(path(e)); err != nil {
				t.Fatal(err)
			}
		}
		cases[n-1].do = func(t *testing.T, e *testEnv) { flipBit(t, path(e), 20, 0) } // the salt
	}
	cases = append(cases,
		damage{"snapshot truncated", func(t *testing.T, e *testEnv) {
			truncate(snapshotFile(e, f.snap), func(int64) int64 { return 30 })(t, e)
		}, f.snap, "truncated", []string{"corrupt", "not found"}, "truncated"},
		damage{"snapshot deleted", func(t *testing.T, e *testEnv) {
			if err := os.Remove(snapshotFile(e, f.snap)); err != nil {
				t.Fatal(err)
			}
		}, f.snap, "not found", []string{"corrupt", "truncated"}, "not found"},
	)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := f.clone(t)
			c.do(t, e)
			r := runDamaged(t, e)
			for _, cr := range []struct {
				name string
				out  string
				code int
			}{{"check", r.check, r.checkCode}, {"check --read-data", r.checkData, r.checkDataCode}} {
				assertDamageReported(t, cr.name, cr.out, cr.code, c.id, c.check)
				for _, l := range strings.Split(cr.out, "\n") {
					if !strings.Contains(l, c.id) {
						continue
					}
					for _, n := range c.not {
						if strings.Contains(l, n) {
							t.Errorf("%s: %s reported as %q: %s", cr.name, c.name, n, l)
						}
					}
				}
			}
			switch {
			case c.verify == "":
				// The restore needs no missing byte (only the trailing
				// header length is gone).
				if r.restoreCode == exitOK {
					assertSameTree(t, f.data, filepath.Join(r.target, f.data))
				}
			case r.restoreCode == exitOK:
				t.Errorf("restore exited 0 with the %s:\n%s", c.name, r.restore)
			case !strings.Contains(r.restore, c.verify):
				t.Errorf("restore with the %s does not say %q:\n%s", c.name, c.verify, r.restore)
			}
		})
	}
}
