package sqlite

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/audit/audittest"
)

func TestAuditStore(t *testing.T) {
	audittest.TestStore(t, func(t testing.TB) audit.Store { c, _ := openTemp(t); return c })
}

// TestAuditStoreTwoHandles races appends through two handles on one
// file, as two processes would: SQLite's write lock, not the handle's,
// keeps them from interleaving.
func TestAuditStoreTwoHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	var cs [2]*Catalog
	for i := range cs {
		c, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs[i] = c
	}
	audittest.Append(t, cs[0], audittest.Records(0, 1))
	ctx := t.Context()
	rs := audittest.Records(1, 1)
	hs, err := audittest.Hashes(ctx, cs[1], 1, rs)
	if err != nil {
		t.Fatal(err)
	}
	audittest.Append(t, cs[1], audittest.Records(1, 1))
	if err := cs[0].AppendAudit(ctx, 1, rs, hs); err == nil || !strings.Contains(err.Error(), audit.ErrConflict.Error()) {
		t.Errorf("append through the other handle at a stale size: %v, want ErrConflict", err)
	}
	if n, err := cs[0].AuditSize(ctx); err != nil || n != 2 {
		t.Errorf("AuditSize = %d, %v; want 2", n, err)
	}
}

// TestAuditAppendOnly checks that the schema refuses to change or remove
// audit rows, whatever statement a later bug might run.
func TestAuditAppendOnly(t *testing.T) {
	c, _ := openTemp(t)
	audittest.Append(t, c, audittest.Records(0, 3))
	if err := c.AddAuditCheckpoint(t.Context(), audit.Checkpoint{Size: 3, Note: "n\n", Time: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DELETE FROM audit_entries`,
		`DELETE FROM audit_entries WHERE idx = 2`,
		`UPDATE audit_entries SET record = x'00' WHERE idx = 0`,
		`DELETE FROM audit_hashes`,
		`UPDATE audit_hashes SET hash = zeroblob(32)`,
		`DELETE FROM audit_checkpoints`,
		`UPDATE audit_checkpoints SET note = ''`,
		`INSERT OR REPLACE INTO audit_entries (idx, record) VALUES (0, x'00')`,
	} {
		if _, err := c.update(t.Context(), q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want refused as append-only", q, err)
		}
	}
	if n, _ := c.AuditSize(t.Context()); n != 3 {
		t.Errorf("size %d after refused statements, want 3", n)
	}
}

// TestAuditMigrated checks that catalogs of every earlier version get
// the audit tables.
func TestAuditMigrated(t *testing.T) {
	for _, f := range []struct {
		name    string
		version int
		absent  string
	}{
		{"catalog-v1.db", 1, "tokens"},
		{"catalog-v2.db", 2, "key_events"},
		{"catalog-v3.db", 3, "vault_settings"},
	} {
		t.Run(f.name, func(t *testing.T) {
			c, _ := openFixture(t, f.name, f.version, f.absent)
			if n, err := c.AuditSize(t.Context()); err != nil || n != 0 {
				t.Fatalf("AuditSize = %d, %v; want 0", n, err)
			}
			audittest.Append(t, c, audittest.Records(0, 5))
			if rs, err := c.AuditRecords(t.Context(), 0, 10); err != nil || len(rs) != 5 {
				t.Errorf("AuditRecords = %d records, %v", len(rs), err)
			}
		})
	}
}
