package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/vault"
)

// packBytes reads every pack of the store, by name.
func packBytes(t *testing.T, e *env) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := e.store.List(ctx, vault.PackObject, func(oi vault.ObjectInfo) error {
		rc, err := e.store.Get(ctx, oi.Handle, 0, -1)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		out[oi.Handle.Name] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRotateDEK: new packs use the new DEK, old ones keep theirs, and
// everything reads back, also after reopening, across several rotations.
func TestRotateDEK(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	var ids []vault.ID
	var blobs [][]byte
	for round := range 3 {
		for i := range 3 {
			b := randBytes(uint64(100*round+i), 50_000)
			id, _ := save(t, v, b)
			ids, blobs = append(ids, id), append(blobs, b)
		}
		flush(t, v)
		ver, err := v.RotateDEK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := uint32(round + 2); ver != want {
			t.Fatalf("rotation %d gave DEK v%d, want v%d", round, ver, want)
		}
	}
	ki := v.KeyInfo()
	if ki.DEKVersion != 4 || ki.DEKCount != 4 || ki.KeyringGen != 4 {
		t.Errorf("after 3 rotations: %+v", ki)
	}
	versions := map[uint32]bool{}
	e.cat.Packs(ctx, v.Record().ID, func(p vault.PackRecord) error { versions[p.DEKVersion] = true; return nil })
	if !versions[1] || !versions[2] || !versions[3] {
		t.Errorf("packs by DEK version: %v, want 1, 2 and 3", versions)
	}
	v.Close()
	w, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i, id := range ids {
		if got := load(t, w, id); !bytes.Equal(got, blobs[i]) {
			t.Fatalf("blob %d differs after rotations", i)
		}
	}
	if rep, err := w.Check(ctx, engine.CheckOptions{ReadData: true}); err != nil || !rep.OK() {
		t.Fatalf("check --read-data after rotations: %v %v", rep.Errors, err)
	}
}

// TestRewrapNeverReencrypts: switching the KEK rewraps the root secret and
// the DEKs only; every pack is byte-identical before and after, the vault
// opens with the new key and no longer with the old one.
func TestRewrapNeverReencrypts(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	var ids []vault.ID
	for i := range 5 {
		id, _ := save(t, v, randBytes(uint64(i), 200_000))
		ids = append(ids, id)
	}
	flush(t, v)
	if _, err := v.RotateDEK(ctx); err != nil {
		t.Fatal(err)
	}
	id, _ := save(t, v, randBytes(99, 100_000))
	ids = append(ids, id)
	flush(t, v)
	before := packBytes(t, e)

	other, err := platform.Create(filepath.Join(t.TempDir(), "other.key"), testStart)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Rewrap(ctx, other); err != nil {
		t.Fatal(err)
	}
	after := packBytes(t, e)
	if len(after) != len(before) || len(before) == 0 {
		t.Fatalf("%d packs before, %d after", len(before), len(after))
	}
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("pack %s changed in a rewrap", name[:8])
		}
	}
	// A KEK switch also rotates the DEK (docs/format.md §7.2).
	if ki := v.KeyInfo(); ki.KEK.KeyID != other.Current().KeyID || ki.KeyringGen != 3 || ki.DEKCount != 3 || ki.DEKVersion != 3 {
		t.Errorf("after rewrap: %+v", ki)
	}
	v.Close()

	opt := e.opts()
	opt.Keys = other
	w, err := engine.Open(ctx, opt)
	if err != nil {
		t.Fatalf("open with the new key: %v", err)
	}
	defer w.Close()
	for _, id := range ids {
		load(t, w, id)
	}
	if _, err := engine.Open(ctx, e.opts()); !errors.Is(err, vault.ErrKeyUnavailable) && !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("open with the old key after the switch: %v, want key unavailable or wrong key", err)
	}
	// Nothing left in the store opens with the old key: the older
	// keyring generations, which wrapped the same DEKs under it, are gone.
	var gens []string
	e.store.List(ctx, vault.KeyObject, func(oi vault.ObjectInfo) error {
		gens = append(gens, oi.Handle.Name)
		return nil
	})
	if len(gens) != 1 || gens[0] != format.KeyringName(3) {
		t.Errorf("keyring generations after the switch: %v, want only the newest", gens)
	}

	// And back: the old key wraps again, packs still untouched.
	if err := w.Rewrap(ctx, e.keys); err != nil {
		t.Fatal(err)
	}
	for name, b := range before {
		if !bytes.Equal(packBytes(t, e)[name], b) {
			t.Errorf("pack %s changed in the rewrap back", name[:8])
		}
	}
	if x, err := engine.Open(ctx, e.opts()); err != nil {
		t.Errorf("open with the original key after switching back: %v", err)
	} else {
		x.Close()
	}
}

// revocable is a key provider that can be switched off, as a customer
// key is revoked, and counts its unwraps.
type revocable struct {
	vault.KeyProvider
	off     atomic.Bool
	unwraps atomic.Int64
}

func (r *revocable) Unwrap(ctx context.Context, w vault.WrappedKey, aad []byte) ([]byte, error) {
	if r.off.Load() {
		return nil, fmt.Errorf("%w: test key revoked", vault.ErrKeyUnavailable)
	}
	r.unwraps.Add(1)
	return r.KeyProvider.Unwrap(ctx, w, aad)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestKeyTTL: unwrapped keys live for Options.KeyTTL. Within it a revoked
// key changes nothing in memory; after it every operation that needs the
// keys unwraps them again, fails with ErrKeyUnavailable while the key is
// revoked (writing nothing), and works again once it is back.
func TestKeyTTL(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	a, _ := save(t, v, randBytes(1, 300_000))
	flush(t, v)
	snap, err := v.SaveSnapshot(ctx, snapshotOf(t, v, "h", randBytes(2, 1000)))
	if err != nil {
		t.Fatal(err)
	}
	v.Close()

	rp := &revocable{KeyProvider: e.keys}
	var outcomes []error
	var mu sync.Mutex
	opt := e.opts()
	opt.Keys = rp
	opt.KeyTTL = time.Hour
	opt.OnKeyRefresh = func(err error) { mu.Lock(); outcomes = append(outcomes, err); mu.Unlock() }
	v, err = engine.Open(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	load(t, v, a)
	opened := rp.unwraps.Load()

	rp.off.Store(true)
	load(t, v, a) // within the TTL: the keys in memory still work
	if v.KeysExpired() {
		t.Fatal("keys expired within their TTL")
	}

	e.clock.advance(time.Hour)
	if !v.KeysExpired() {
		t.Fatal("keys not expired after their TTL")
	}
	packs := len(packSizes(t, e.store))
	if _, err := v.LoadBlob(ctx, vault.DataBlob, a, nil); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("load after the TTL with the key revoked: %v, want ErrKeyUnavailable", err)
	}
	if _, err := v.LoadSnapshot(ctx, snap.ID); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("load snapshot: %v, want ErrKeyUnavailable", err)
	}
	b := randBytes(3, 200_000)
	if _, err := v.SaveBlob(ctx, vault.DataBlob, v.BlobID(b), v.Codec().Encode(nil, b), len(b)); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("save after the TTL with the key revoked: %v, want ErrKeyUnavailable", err)
	}
	if _, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart, Host: "h2", Paths: []string{"/dir"}, Tree: snap.Tree}); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("save snapshot: %v, want ErrKeyUnavailable", err)
	}
	if _, err := v.RotateDEK(ctx); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("rotate: %v, want ErrKeyUnavailable", err)
	}
	flush(t, v)
	if n := len(packSizes(t, e.store)); n != packs {
		t.Errorf("%d packs after the failed operations, want %d: something was written", n, packs)
	}
	if v.Has(vault.DataBlob, v.BlobID(b)) {
		t.Error("a blob refused for want of keys is reported as held")
	}

	rp.off.Store(false) // the key is back: no repair step
	if got := load(t, v, a); !bytes.Equal(got, randBytes(1, 300_000)) {
		t.Error("wrong data after the key came back")
	}
	if _, err := v.LoadSnapshot(ctx, snap.ID); err != nil {
		t.Error(err)
	}
	save(t, v, b)
	flush(t, v)
	mu.Lock()
	if len(outcomes) == 0 || outcomes[0] == nil || outcomes[len(outcomes)-1] != nil {
		t.Errorf("refresh outcomes %v: want failures, then a success", outcomes)
	}
	mu.Unlock()

	// An idle vault's keys are dropped after the TTL and unwrapped again
	// on the next use.
	if v.ExpireKeys() {
		t.Error("ExpireKeys dropped fresh keys")
	}
	e.clock.advance(2 * time.Hour)
	before := rp.unwraps.Load()
	if !v.ExpireKeys() {
		t.Error("ExpireKeys kept keys past their TTL")
	}
	if !v.KeysExpired() {
		t.Error("dropped keys not reported as expired")
	}
	load(t, v, a)
	if rp.unwraps.Load() == before {
		t.Error("no unwrap after the keys were dropped")
	}
	if before <= opened {
		t.Errorf("unwraps: %d at open, %d later: the TTL never unwrapped again", opened, before)
	}
}
