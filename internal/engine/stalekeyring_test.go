package engine_test

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestRemoveStaleKeyrings: a rewrap cut short after it anchored its new
// generation leaves the older generations, wrapped under the previous
// KEK, in the store. StaleKEKs names that KEK from the store and catalog
// alone; RemoveStaleKeyrings deletes those generations and keeps the
// older ones wrapped under the KEK in use (left by DEK rotations); the
// vault still opens and reads back.
func TestRemoveStaleKeyrings(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	defer v.Close()
	id, _ := save(t, v, randBytes(1, 100_000))
	flush(t, v)
	keyring := func(gen uint64) []byte {
		t.Helper()
		rc, err := e.store.Get(ctx, vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(gen)}, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	gens := func() []string {
		t.Helper()
		var names []string
		if err := e.store.List(ctx, vault.KeyObject, func(oi vault.ObjectInfo) error {
			names = append(names, oi.Handle.Name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		return names
	}
	old := keyring(1) // under the platform key, as the rewrap's delete would leave it
	other, err := platform.Create(filepath.Join(t.TempDir(), "other.key"), testStart)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Rewrap(ctx, other); err != nil { // generation 2, under other
		t.Fatal(err)
	}
	if _, err := v.RotateDEK(ctx); err != nil { // generation 3, under other too
		t.Fatal(err)
	}
	if err := e.store.Put(ctx, vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(1)}, bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	if got := gens(); !slices.Equal(got, []string{format.KeyringName(1), format.KeyringName(2), format.KeyringName(3)}) {
		t.Fatalf("keyring generations before: %v", got)
	}

	refs, err := engine.StaleKEKs(ctx, e.store, e.cat, v.Record().ID)
	if err != nil || len(refs) != 1 || refs[0] != e.keys.Current() {
		t.Fatalf("StaleKEKs = %v, %v; want the previous platform key %v alone", refs, err, e.keys.Current())
	}
	n, err := v.RemoveStaleKeyrings(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RemoveStaleKeyrings = %d, %v; want 1 deleted", n, err)
	}
	if got := gens(); !slices.Equal(got, []string{format.KeyringName(2), format.KeyringName(3)}) {
		t.Errorf("keyring generations after: %v; want 2 and 3 (both under the KEK in use)", got)
	}
	if refs, err := engine.StaleKEKs(ctx, e.store, e.cat, v.Record().ID); err != nil || len(refs) != 0 {
		t.Errorf("StaleKEKs after the removal = %v, %v; want none", refs, err)
	}
	if n, err := v.RemoveStaleKeyrings(ctx); err != nil || n != 0 {
		t.Errorf("RemoveStaleKeyrings again = %d, %v; want nothing to do", n, err)
	}
	opt := e.opts()
	opt.Keys = other
	w, err := engine.Open(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	load(t, w, id)
}

// TestOpenRemovesStaleKeyrings: a switch of key (here to another
// platform key, as `key use-cmk` switches to a customer key) whose process
// died after it anchored the new generation, before it deleted the older
// one, leaves that generation under the previous KEK. The next open of
// the vault, by any process, removes it: the previous key no longer opens
// anything, and a revoked customer key shreds the vault as promised.
func TestOpenRemovesStaleKeyrings(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	id, _ := save(t, v, randBytes(2, 100_000))
	flush(t, v)
	rc, err := e.store.Get(ctx, vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(1)}, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	old, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	other, err := platform.Create(filepath.Join(t.TempDir(), "other.key"), testStart)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Rewrap(ctx, other); err != nil {
		t.Fatal(err)
	}
	v.Close()
	// As a rewrap killed before its deletes leaves it.
	if err := e.store.Put(ctx, vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(1)}, bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	if refs, err := engine.StaleKEKs(ctx, e.store, e.cat, v.Record().ID); err != nil || len(refs) != 1 {
		t.Fatalf("StaleKEKs before the open = %v, %v; want the previous key", refs, err)
	}
	opt := e.opts()
	opt.Keys = other
	w, err := engine.Open(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := e.store.Stat(ctx, vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(1)}); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("keyring generation 1 (under the previous key) after the open: %v; want it deleted", err)
	}
	if refs, err := engine.StaleKEKs(ctx, e.store, e.cat, v.Record().ID); err != nil || len(refs) != 0 {
		t.Errorf("StaleKEKs after the open = %v, %v; want none", refs, err)
	}
	load(t, w, id)
	// The previous key opens nothing now.
	opt.Keys = e.keys
	if x, err := engine.Open(ctx, opt); err == nil {
		x.Close()
		t.Error("the previous key still opens the vault")
	}
}
