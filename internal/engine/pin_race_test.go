package engine_test

import (
	"context"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// racingCatalog is the catalog of a vault that another writer appends to
// at the worst moment: between, once set, runs right after the next read
// of the snapshot chain returns, before the reader looks at it.
type racingCatalog struct {
	*sqlite.Catalog
	mu      sync.Mutex
	between func()
}

func (c *racingCatalog) race(f func()) {
	c.mu.Lock()
	c.between = f
	c.mu.Unlock()
}

func (c *racingCatalog) pending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.between != nil
}

func (c *racingCatalog) after() {
	c.mu.Lock()
	f := c.between
	c.between = nil
	c.mu.Unlock()
	if f != nil {
		f()
	}
}

func (c *racingCatalog) SnapshotChain(ctx context.Context, id vault.ID) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
	es, ss, err := c.Catalog.SnapshotChain(ctx, id)
	c.after()
	return es, ss, err
}

func (c *racingCatalog) SettingsChain(ctx context.Context, id vault.ID) (vault.VaultSettings, []vault.ChainEntry, error) {
	s, es, err := c.Catalog.SettingsChain(ctx, id)
	c.after()
	return s, es, err
}

// Two processes of one machine share its pin: while one reads the chain,
// the other appends an entry and pins it. The reader's chain is older
// than that pin, but it is no rollback: every read must check the chain
// against the pin as it was before the read (two first backups at once
// failed with "saw 3 entries … proves only 1" in the settings check that
// makes a new vault single-user).
func TestChainPinRacesAnotherWriter(t *testing.T) {
	ops := []struct {
		name string
		run  func(*testing.T, *engine.Vault) error
	}{
		{"Settings", func(t *testing.T, v *engine.Vault) error { _, err := v.Settings(ctx); return err }},
		{"Snapshots", func(t *testing.T, v *engine.Vault) error { _, err := v.Snapshots(ctx); return err }},
		{"VerifyChain", func(t *testing.T, v *engine.Vault) error { _, err := v.VerifyChain(ctx); return err }},
		{"Check", func(t *testing.T, v *engine.Vault) error {
			rep, err := v.Check(ctx, engine.CheckOptions{})
			if err == nil && len(rep.Errors) > 0 {
				t.Errorf("check: %q", rep.Errors)
			}
			return err
		}},
		{"AcceptRollback", func(t *testing.T, v *engine.Vault) error {
			rb, err := v.AcceptRollback(ctx)
			if err == nil && rb.Accepted() {
				t.Errorf("AcceptRollback accepted %+v: there was no rollback", rb)
			}
			return err
		}},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			e := newEnv(t, nil)
			create(t, e).Close()
			pin := &memPin{}
			other := reopen(t, e, pin)
			cat := &racingCatalog{Catalog: e.cat}
			opt := e.opts()
			opt.Catalog, opt.Pin = cat, pin
			v, err := engine.Open(ctx, opt)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			head, err := v.VerifyChain(ctx) // pins the head
			if err != nil {
				t.Fatal(err)
			}
			cat.race(func() {
				// The other process makes the vault single-user, as the
				// second of two first backups does.
				s, err := other.Settings(ctx)
				if err != nil {
					t.Fatal(err)
				}
				s.SingleUser = !s.SingleUser
				if err := other.InitSettings(ctx, s, "other"); err != nil {
					t.Fatal(err)
				}
				if seq, _, _, _ := pin.Load(vault.ID{}); seq != head.Seq+1 {
					t.Fatalf("the other writer pinned entry %d, want %d", seq, head.Seq+1)
				}
			})
			if err := op.run(t, v); err != nil {
				t.Fatalf("%s while another writer appended: %v", op.name, err)
			}
			if cat.pending() {
				t.Fatal("the chain was not read")
			}
			// The next read sees the new entry, and the pin stays on it.
			if h, err := v.VerifyChain(ctx); err != nil || h.Seq != head.Seq+1 {
				t.Fatalf("VerifyChain after: %v, %v; want entry %d", h, err, head.Seq+1)
			}
		})
	}
}
