package format_test

import (
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// A copy's copied_from is sealed (version 2 only), read back, compared by
// DiffSnapshot and bound by the digest, whose other forms stay as they
// were (docs/format.md §8.6).
func TestSnapshotCopyField(t *testing.T) {
	dek := seal.NewRandomKey()
	keys := func(uint32) (seal.Key, error) { return dek, nil }
	s := sampleSnapshot()
	plain := format.SnapshotDigest(s)
	c := s
	c.Copy = &vault.SnapshotCopy{Vault: testID("source vault"), Snapshot: testID("original"), Time: time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)}
	dc := format.SnapshotDigest(c)
	if dc == plain {
		t.Fatal("the digest does not bind copied_from")
	}
	for name, m := range map[string]func(*vault.SnapshotCopy){
		"vault":    func(x *vault.SnapshotCopy) { x.Vault[0] ^= 1 },
		"snapshot": func(x *vault.SnapshotCopy) { x.Snapshot[31] ^= 1 },
		"time":     func(x *vault.SnapshotCopy) { x.Time = x.Time.Add(1) },
	} {
		o := c
		cp := *c.Copy
		m(&cp)
		o.Copy = &cp
		if format.SnapshotDigest(o) == dc {
			t.Errorf("the digest does not bind copied_from's %s", name)
		}
		if format.DiffSnapshot(c, o) == "" {
			t.Errorf("DiffSnapshot misses copied_from's %s", name)
		}
	}
	// A domain part and a copy part cannot stand for each other.
	d := s
	d.Domain = "agt_0123456789abcdef"
	d.Copy = c.Copy
	if format.SnapshotDigest(d) == dc || format.SnapshotDigest(d) == format.SnapshotDigest(s) {
		t.Error("domain and copy parts collide")
	}
	b, err := format.SealSnapshotLinked(c, format.SnapshotLink{Seq: 3}, dek, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := format.OpenSnapshotLinked(c.ID, b, keys)
	if err != nil {
		t.Fatal(err)
	}
	if format.DiffSnapshot(c, got) != "" || format.SnapshotDigest(got) != dc {
		t.Fatalf("round trip: %s", format.DiffSnapshot(c, got))
	}
	if _, err := format.SealSnapshot(c, dek, 1); err == nil {
		t.Error("a format 1 object with copied_from was sealed")
	}
	c.Paths, c.BytesAdded = []string{"/etc", "/home/ann/docs"}, 1 // within CheckSnapshot's rules
	if err := format.CheckSnapshot(c); err != nil {
		t.Errorf("valid copy refused: %v", err)
	}
	for name, cp := range map[string]vault.SnapshotCopy{
		"zero vault":    {Snapshot: testID("x"), Time: c.Copy.Time},
		"zero snapshot": {Vault: testID("x"), Time: c.Copy.Time},
		"no time":       {Vault: testID("x"), Snapshot: testID("y")},
	} {
		o := c
		o.Copy = &cp
		if err := format.CheckSnapshot(o); err == nil || !strings.Contains(err.Error(), "cop") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
