package format_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

func sampleSnapshot() vault.SnapshotRecord {
	return vault.SnapshotRecord{
		ID:         testID("snapshot"),
		Time:       time.Date(2024, 2, 29, 23, 59, 58, 987654321, time.FixedZone("CET", 3600)),
		Host:       "host.example – ünïcode",
		Paths:      []string{"/home/ann/docs", "/etc"},
		Tags:       []string{"daily", "t=\"quoted\""},
		Tree:       testID("root tree"),
		Parent:     testID("parent snapshot"),
		Files:      12345,
		Dirs:       678,
		Bytes:      1 << 40,
		BytesAdded: 1<<64 - 1,
		Duration:   90*time.Minute + 1,
	}
}

// anyVersion returns the same DEK for every version, so that only
// authentication can reject an object.
func anyVersion(k seal.Key) format.DEKs {
	return func(uint32) (seal.Key, error) { return k, nil }
}

func sameSnapshot(tb testing.TB, got, want vault.SnapshotRecord) {
	tb.Helper()
	if got.ID != want.ID || !got.Time.Equal(want.Time) || got.Host != want.Host ||
		!slices.Equal(got.Paths, want.Paths) || !slices.Equal(got.Tags, want.Tags) ||
		got.Tree != want.Tree || got.Parent != want.Parent || got.Files != want.Files ||
		got.Dirs != want.Dirs || got.Bytes != want.Bytes || got.BytesAdded != want.BytesAdded ||
		got.Duration != want.Duration {
		tb.Errorf("snapshot record\n got %+v\nwant %+v", got, want)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	dek := testKey("dek")
	full := sampleSnapshot()
	noParent := full
	noParent.Parent = vault.ID{}
	empty := vault.SnapshotRecord{ID: testID("empty"), Time: time.Unix(0, 0), Tree: testID("t")}
	emptySlices := empty
	emptySlices.Paths, emptySlices.Tags = []string{}, []string{}
	local := full
	local.Time = time.Now() // monotonic reading and local zone
	negDur := full
	negDur.Duration = -1

	for _, c := range []struct {
		name string
		rec  vault.SnapshotRecord
	}{
		{"full", full}, {"no parent", noParent}, {"zero fields", empty},
		{"empty slices", emptySlices}, {"local time", local}, {"negative duration", negDur},
	} {
		t.Run(c.name, func(t *testing.T) {
			obj, err := format.SealSnapshot(c.rec, dek, 7)
			if err != nil {
				t.Fatal(err)
			}
			got, err := format.OpenSnapshot(c.rec.ID, obj, dekSet(map[uint32]seal.Key{7: dek}))
			if err != nil {
				t.Fatal(err)
			}
			sameSnapshot(t, got, c.rec)
			if got.Time.Location() != time.UTC {
				t.Errorf("time zone %v, want UTC", got.Time.Location())
			}
		})
	}
}

func TestSnapshotFreshSalt(t *testing.T) {
	dek := testKey("dek")
	a, _ := format.SealSnapshot(sampleSnapshot(), dek, 1)
	b, _ := format.SealSnapshot(sampleSnapshot(), dek, 1)
	if bytes.Equal(a[12:44], b[12:44]) {
		t.Error("two snapshot objects share a salt")
	}
}

func TestSnapshotRejects(t *testing.T) {
	dek := testKey("dek")
	rec := sampleSnapshot()
	obj, err := format.SealSnapshot(rec, dek, 1)
	if err != nil {
		t.Fatal(err)
	}
	keys := dekSet(map[uint32]seal.Key{1: dek})
	set := func(i int, v byte) []byte { c := bytes.Clone(obj); c[i] = v; return c }

	for _, c := range []struct {
		name string
		id   vault.ID
		obj  []byte
		keys format.DEKs
		want string
	}{
		{"ok", rec.ID, obj, keys, "ok"},
		{"renamed", testID("other"), obj, keys, "corrupt"},
		{"wrong DEK", rec.ID, obj, dekSet(map[uint32]seal.Key{1: testKey("other dek")}), "corrupt"},
		{"DEK version unknown", rec.ID, obj, dekSet(map[uint32]seal.Key{2: dek}), "key_unavailable"},
		{"DEK version changed", rec.ID, set(8, 2), anyVersion(dek), "corrupt"},
		{"bad magic", rec.ID, set(0, 'X'), keys, "corrupt"},
		{"bad version", rec.ID, set(4, 2), keys, "corrupt"},
		{"version 0", rec.ID, set(4, 0), keys, "corrupt"},
		{"reserved 5", rec.ID, set(5, 1), keys, "corrupt"},
		{"reserved 7", rec.ID, set(7, 0x80), keys, "corrupt"},
		{"salt changed", rec.ID, set(20, obj[20]^1), keys, "corrupt"},
		{"tag changed", rec.ID, set(len(obj)-1, obj[len(obj)-1]^0x80), keys, "corrupt"},
		{"empty", rec.ID, nil, keys, "truncated"},
		{"prefix only", rec.ID, obj[:44], keys, "truncated"},
		{"prefix and 15", rec.ID, obj[:44+15], keys, "truncated"},
		{"prefix and tag, no plaintext", rec.ID, obj[:44+16], keys, "corrupt"},
		{"last byte missing", rec.ID, obj[:len(obj)-1], keys, "corrupt"},
		{"extra byte", rec.ID, append(bytes.Clone(obj), 0), keys, "corrupt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := format.OpenSnapshot(c.id, c.obj, c.keys)
			wantOutcome(t, "OpenSnapshot", err, c.want)
		})
	}
}

// TestSnapshotEveryBitFlip: no single-bit change anywhere is accepted.
func TestSnapshotEveryBitFlip(t *testing.T) {
	dek := testKey("dek")
	rec := sampleSnapshot()
	obj, err := format.SealSnapshot(rec, dek, 1)
	if err != nil {
		t.Fatal(err)
	}
	keys := anyVersion(dek)
	for i := range obj {
		for bit := range 8 {
			_, err := format.OpenSnapshot(rec.ID, flip(obj, i, bit), keys)
			if got := outcome(err); got != "corrupt" {
				t.Fatalf("bit %d of byte %d flipped: %s (%v), want corrupt", bit, i, got, err)
			}
		}
	}
	// ... nor in the object's name.
	for i := range rec.ID {
		id := rec.ID
		id[i] ^= 0x01
		if _, err := format.OpenSnapshot(id, obj, keys); outcome(err) != "corrupt" {
			t.Fatalf("name byte %d changed: %v", i, err)
		}
	}
}

func TestSnapshotTooLarge(t *testing.T) {
	dek := testKey("dek")
	rec := sampleSnapshot()
	rec.Host = strings.Repeat("h", specMaxSnapshot) // authentic, but too large
	obj, err := format.SealSnapshot(rec, dek, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(obj) <= specMaxSnapshot {
		t.Fatalf("object is only %d bytes", len(obj))
	}
	_, err = format.OpenSnapshot(rec.ID, obj, dekSet(map[uint32]seal.Key{1: dek}))
	wantOutcome(t, "16 MiB + 1 snapshot", err, "corrupt")

	// Just under the limit opens.
	rec.Host = strings.Repeat("h", specMaxSnapshot-1000)
	obj, _ = format.SealSnapshot(rec, dek, 1)
	if len(obj) > specMaxSnapshot {
		t.Fatalf("object is %d bytes", len(obj))
	}
	if _, err := format.OpenSnapshot(rec.ID, obj, dekSet(map[uint32]seal.Key{1: dek})); err != nil {
		t.Errorf("snapshot of %d bytes: %v", len(obj), err)
	}
}

// TestSnapshotBadPlaintext seals plaintexts the writer never makes: they
// authenticate but must still be rejected as corrupt.
func TestSnapshotBadPlaintext(t *testing.T) {
	dek := testKey("dek")
	id := testID("snap")
	tree := testID("tree").String()
	valid := map[string]any{"time": "2024-01-01T00:00:00Z", "host": "h", "paths": []string{"/"}, "tags": nil,
		"tree": tree, "files": 1, "dirs": 1, "bytes": 1, "bytes_added": 1, "duration_ns": 1}
	with := func(k string, v any) []byte {
		m := map[string]any{}
		for k, v := range valid {
			m[k] = v
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	for _, c := range []struct {
		name  string
		plain []byte
		want  string
	}{
		{"valid", with("host", "h"), "ok"},
		{"unknown field", with("secret", "x"), "corrupt"},
		{"tree not hex", with("tree", strings.Repeat("zz", 32)), "corrupt"},
		{"tree short", with("tree", "abcd"), "corrupt"},
		{"tree missing", with("tree", nil), "corrupt"},
		{"parent not hex", with("parent", "xyz"), "corrupt"},
		{"time not RFC 3339", with("time", "yesterday"), "corrupt"},
		{"files negative", with("files", -1), "corrupt"},
		{"not JSON", []byte("CFSN"), "corrupt"},
		{"empty", []byte{}, "corrupt"},
		{"JSON array", []byte("[]"), "corrupt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			obj := specSnapshot(dek[:], 1, testID("salt"), id, c.plain)
			_, err := format.OpenSnapshot(id, obj, dekSet(map[uint32]seal.Key{1: dek}))
			wantOutcome(t, "OpenSnapshot", err, c.want)
		})
	}
}
