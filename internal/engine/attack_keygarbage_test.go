package engine_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// recordingProvider records what the vault asks its KEK to unwrap.
type recordingProvider struct {
	vault.KeyProvider
	mu    sync.Mutex
	asked []vault.WrappedKey
}

func (p *recordingProvider) Unwrap(ctx context.Context, w vault.WrappedKey, aad []byte) ([]byte, error) {
	p.mu.Lock()
	p.asked = append(p.asked, w)
	p.mu.Unlock()
	return p.KeyProvider.Unwrap(ctx, w, aad)
}

// TestAttackKeyringGarbageGeneration: a store writer (the bucket's
// credentials, no key) puts an object at keys/<N+1>, N the newest
// generation: a copy of N's bytes, well-formed JSON whose MAC does not
// verify (naming a KEK of the attacker's choice), or random bytes. With
// Object Lock it could keep it there for years. The vault still opens at
// generation N, its data reads back, the KEK is never asked to unwrap
// anything the object holds, check lists the object, and a DEK rotation
// numbers its generation N+2 (N+1 is taken, write-once) and is used by
// the next open.
func TestAttackKeyringGarbageGeneration(t *testing.T) {
	for _, kind := range []string{"copy of N", "bad MAC", "random bytes"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, nil)
			v := create(t, e)
			data := randBytes(7, 5000)
			id, _ := save(t, v, data)
			snapshotOf(t, v, "h", data)
			if _, err := v.RotateDEK(ctx); err != nil {
				t.Fatal(err)
			}
			v.Close()
			names := keyringNames(t, e.store)
			newest := names[len(names)-1]
			n, _ := strconv.ParseUint(newest, 10, 64)
			planted := format.KeyringName(n + 1)
			nb := readObject(t, e.store, vault.Handle{Type: vault.KeyObject, Name: newest})
			var body, garbageRoot []byte
			switch kind {
			case "copy of N":
				body = nb
			case "bad MAC":
				var raw rawKeyring
				if err := json.Unmarshal(nb, &raw); err != nil {
					t.Fatal(err)
				}
				raw["generation"] = n + 1
				raw["kek"] = map[string]any{"provider": "platform", "key_id": "attacker", "version": "9", "alg": "hkdf-sha256-aes-256-gcm"}
				garbageRoot = randBytes(8, 60)
				raw["root"] = garbageRoot
				raw["mac"] = randBytes(9, 32)
				var err error
				if body, err = json.Marshal(raw); err != nil {
					t.Fatal(err)
				}
			case "random bytes":
				body = randBytes(10, 700)
			}
			plant(t, e.store, vault.Handle{Type: vault.KeyObject, Name: planted}, body)

			p := &recordingProvider{KeyProvider: e.keys}
			o := e.opts()
			o.Keys = p
			w, err := engine.Open(ctx, o)
			if err != nil {
				t.Fatalf("open with keys/%s planted: %v", planted, err)
			}
			defer w.Close()
			if ki := w.KeyInfo(); ki.KeyringGen != n || ki.DEKVersion != 2 {
				t.Errorf("open with keys/%s planted uses generation %d, DEK v%d; want %d, v2", planted, ki.KeyringGen, ki.DEKVersion, n)
			}
			if got := load(t, w, id); !bytes.Equal(got, data) {
				t.Error("data read back differs")
			}
			kek := w.KeyInfo().KEK
			for _, a := range p.asked {
				if a.KEK != kek || (garbageRoot != nil && bytes.Equal(a.Data, garbageRoot)) {
					t.Errorf("the KEK was asked to unwrap %x under %s: the planted object steered the unwrap (vault KEK %s)", a.Data, a.KEK, kek)
				}
			}
			rep, err := w.Check(ctx, engine.CheckOptions{})
			if err != nil || !rep.OK() {
				t.Fatalf("check with keys/%s planted: %v %v", planted, rep.Errors, err)
			}
			if !slices.ContainsFunc(rep.Warnings, func(s string) bool { return strings.Contains(s, "keys/"+planted) }) {
				t.Errorf("check does not list keys/%s: %q", planted, rep.Warnings)
			}
			if _, err := w.RotateDEK(ctx); err != nil {
				t.Fatalf("rotate DEK with keys/%s planted: %v", planted, err)
			}
			if ki := w.KeyInfo(); ki.KeyringGen != n+2 || ki.DEKVersion != 3 {
				t.Errorf("after the rotation: generation %d, DEK v%d; want %d, v3", ki.KeyringGen, ki.DEKVersion, n+2)
			}
			snapshotOf(t, w, "h", randBytes(11, 3000))
			w.Close()
			w2, err := openWith(e, e.keys)
			if err != nil {
				t.Fatalf("open after the rotation past keys/%s: %v", planted, err)
			}
			defer w2.Close()
			if ki := w2.KeyInfo(); ki.KeyringGen != n+2 || ki.DEKVersion != 3 {
				t.Errorf("reopened: generation %d, DEK v%d; want %d, v3", ki.KeyringGen, ki.DEKVersion, n+2)
			}
			if got := load(t, w2, id); !bytes.Equal(got, data) {
				t.Error("data read back after the rotation differs")
			}
			rep, err = w2.Check(ctx, engine.CheckOptions{ReadData: true})
			if err != nil || !rep.OK() {
				t.Fatalf("check after the rotation: %v %v", rep.Errors, err)
			}
			// The open removes older generations under another KEK than
			// the current one: the planted object naming another key goes
			// (where the store lets it); one that stays is listed.
			if still := slices.Contains(keyringNames(t, e.store), planted); still != (kind != "bad MAC") {
				t.Errorf("keys/%s in the store after the reopen: %v", planted, still)
			} else if still && !slices.ContainsFunc(rep.Warnings, func(s string) bool { return strings.Contains(s, "keys/"+planted) }) {
				t.Errorf("check after the rotation does not list keys/%s: %q", planted, rep.Warnings)
			}
			// A switch of KEK deletes the older generations, the planted
			// one with them where the store allows it.
			if err := w2.Rewrap(ctx, e.keys); err != nil {
				t.Fatalf("rewrap with keys/%s planted: %v", planted, err)
			}
		})
	}
}

// TestAttackKeyringUnproposedGeneration: a generation newer than the
// anchor that DOES authenticate (a key holder wrote it) but that the
// catalog has no proposal for is still refused: a catalog writer put
// back an older anchor (a rolled-back catalog), with or without a
// planted object above it.
func TestAttackKeyringUnproposedGeneration(t *testing.T) {
	for _, withGarbage := range []bool{false, true} {
		name := "rotation then old anchor restored"
		if withGarbage {
			name += ", garbage above"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			v := create(t, e)
			snapshotOf(t, v, "h", randBytes(1, 1000))
			vid := v.Record().ID
			before, _, err := e.cat.KeyAnchor(ctx, vid)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.RotateDEK(ctx); err != nil {
				t.Fatal(err)
			}
			v.Close()
			after, _, _ := e.cat.KeyAnchor(ctx, vid)
			if withGarbage {
				plant(t, e.store, vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(after.Generation + 1)}, randBytes(3, 200))
			}
			db, err := sql.Open("sqlite", filepath.Join(e.dir, "catalog.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.ExecContext(ctx, `UPDATE key_anchors SET generation = ?, mac = ? WHERE vault = ?`, int64(before.Generation), before.MAC[:], vid[:]); err != nil {
				t.Fatal(err)
			}
			w, err := openWith(e, e.keys)
			if err == nil {
				w.Close()
				t.Fatal("opened with an authenticating generation newer than the anchor that no key holder proposed")
			}
			wantRefused(t, "open", err, format.KeyringName(after.Generation), "no key holder proposed it")
		})
	}
}

// retainedStore refuses to delete the objects it names, as a bucket's
// COMPLIANCE retention does.
type retainedStore struct {
	vault.Store
	retained map[vault.Handle]bool
}

func (s retainedStore) Delete(ctx context.Context, h vault.Handle) error {
	if s.retained[h] {
		return errors.New("AccessDenied: object is under COMPLIANCE retention")
	}
	return s.Store.Delete(ctx, h)
}

// TestAttackKeyringGarbageRetained: the planted object cannot be deleted
// (a bucket's retention). A switch of key, which deletes the generations
// below its own, completes and reports success; the next open, which
// removes generations under another key, does not fail on it; check
// still lists it.
func TestAttackKeyringGarbageRetained(t *testing.T) {
	for _, kind := range []string{"copy of N", "bad MAC"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			ls, err := local.Open(filepath.Join(dir, "store"))
			if err != nil {
				t.Fatal(err)
			}
			rs := retainedStore{Store: ls, retained: map[vault.Handle]bool{}}
			e := newEnv(t, rs)
			v := create(t, e)
			data := randBytes(21, 4000)
			id, _ := save(t, v, data)
			snapshotOf(t, v, "h", data)
			v.Close()
			names := keyringNames(t, e.store)
			n, _ := strconv.ParseUint(names[len(names)-1], 10, 64)
			nb := readObject(t, e.store, vault.Handle{Type: vault.KeyObject, Name: names[len(names)-1]})
			body := nb
			if kind == "bad MAC" {
				var raw rawKeyring
				if err := json.Unmarshal(nb, &raw); err != nil {
					t.Fatal(err)
				}
				raw["generation"] = n + 1
				raw["mac"] = randBytes(22, 32)
				body, _ = json.Marshal(raw)
			}
			h := vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(n + 1)}
			plant(t, e.store, h, body)
			rs.retained[h] = true

			_, p, _, _ := rsaEnv(t)
			w, err := openWith(e, e.keys)
			if err != nil {
				t.Fatalf("open with %s planted and retained: %v", h.Name, err)
			}
			if err := w.Rewrap(ctx, p); err != nil { // key use-cmk
				t.Fatalf("use-cmk with %s planted and retained: %v", h.Name, err)
			}
			if ki := w.KeyInfo(); ki.KeyringGen != n+2 {
				t.Errorf("use-cmk wrote generation %d, want %d", ki.KeyringGen, n+2)
			}
			w.Close()
			w2, err := openWith(e, p)
			if err != nil {
				t.Fatalf("open under the customer key with %s retained: %v", h.Name, err)
			}
			defer w2.Close()
			if got := load(t, w2, id); !bytes.Equal(got, data) {
				t.Error("data read back differs")
			}
			if n, err := w2.RemoveStaleKeyrings(ctx); err != nil {
				t.Errorf("remove stale keyrings with %s retained: %d, %v", h.Name, n, err)
			}
			rep, err := w2.Check(ctx, engine.CheckOptions{})
			if err != nil || !rep.OK() {
				t.Fatalf("check: %v %v", rep.Errors, err)
			}
			if !slices.ContainsFunc(rep.Warnings, func(s string) bool { return strings.Contains(s, "keys/"+h.Name) }) {
				t.Errorf("check does not list keys/%s: %q", h.Name, rep.Warnings)
			}
			if got := keyringNames(t, e.store); !slices.Equal(got, []string{h.Name, format.KeyringName(n + 2)}) {
				t.Errorf("keyring objects after use-cmk: %v; want the retained one and the new generation", got)
			}
		})
	}
}
