package engine_test

// Attacks on the keyring and the config by someone who can write the store
// and/or the catalog but holds no secret key (docs/format.md §7.3). Each
// test plants what the attacker would, directly in the store or catalog,
// and asserts that opening the vault (what backup, restore and check do
// first), a running vault's next unwrap, and check all refuse it with a
// message naming what is wrong, or, for an object planted above the
// anchored generation (which does not authenticate), that they ignore it
// and check lists it.

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/keys/rsafile"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// rsaEnv is an env whose vault is wrapped by an rsa-file customer key: the
// attacker knows its public key.
func rsaEnv(t *testing.T) (*env, *rsafile.Provider, *rsa.PublicKey, string) {
	t.Helper()
	e := newEnv(t, nil)
	src, err := os.ReadFile(filepath.Join("..", "keys", "rsafile", "testdata", "test-kek.pem"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cmk.pem")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := rsafile.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	pub := publicKeyOf(t, path)
	return e, p, pub, path
}

// publicKeyOf returns the public half of the PEM key at path: all the
// attacker gets.
func publicKeyOf(t *testing.T, path string) *rsa.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := parseRSA(b)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

// keyringNames lists the keyring generations in the store.
func keyringNames(t *testing.T, st vault.Store) []string {
	t.Helper()
	var names []string
	if err := st.List(ctx, vault.KeyObject, func(oi vault.ObjectInfo) error {
		names = append(names, oi.Handle.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return names
}

func readObject(t *testing.T, st vault.Store, h vault.Handle) []byte {
	t.Helper()
	rc, err := st.Get(ctx, h, 0, -1)
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

// rawKeyring is the keyring JSON as an attacker edits it: every field
// kept, whatever the format.
type rawKeyring map[string]any

func latestRaw(t *testing.T, st vault.Store) (string, rawKeyring) {
	t.Helper()
	names := keyringNames(t, st)
	name := names[len(names)-1]
	var kr rawKeyring
	if err := json.Unmarshal(readObject(t, st, vault.Handle{Type: vault.KeyObject, Name: name}), &kr); err != nil {
		t.Fatal(err)
	}
	return name, kr
}

// plant writes object h, replacing what is there: the store writer's
// power.
func plant(t *testing.T, st vault.Store, h vault.Handle, b []byte) {
	t.Helper()
	if err := st.Delete(ctx, h); err != nil && !errors.Is(err, vault.ErrNotFound) {
		t.Fatal(err)
	}
	if err := st.Put(ctx, h, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

func plantKeyring(t *testing.T, st vault.Store, gen uint64, kr rawKeyring) {
	t.Helper()
	kr["generation"] = gen
	b, err := json.Marshal(kr)
	if err != nil {
		t.Fatal(err)
	}
	plant(t, st, vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(gen)}, b)
}

// rsaWrap wraps secret as an rsa-file key does, with only the public key.
func rsaWrap(t *testing.T, pub *rsa.PublicKey, secret []byte, aad []byte) []byte {
	t.Helper()
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// addAttackerDEK appends a DEK the attacker chose, wrapped under the
// vault's public key with the right AAD, and makes it current.
func addAttackerDEK(t *testing.T, kr rawKeyring, vid vault.ID, pub *rsa.PublicKey, dek seal.Key) uint32 {
	t.Helper()
	deks := kr["deks"].([]any)
	last := deks[len(deks)-1].(map[string]any)
	ver := uint32(last["version"].(float64)) + 1
	deks = append(deks, map[string]any{"version": ver, "created": time.Now().UTC(), "wrapped": rsaWrap(t, pub, dek[:], seal.KeyAAD(vid, "dek", ver))})
	kr["deks"] = deks
	kr["current_dek"] = ver
	return ver
}

// wantRefused fails unless err is set and names every one of words.
func wantRefused(t *testing.T, what string, err error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted the attacker's keyring", what)
	}
	t.Logf("%s refused: %v", what, err)
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not say %q", what, err, w)
		}
	}
}

// openWith opens the vault of e with key provider p.
func openWith(e *env, p vault.KeyProvider) (*engine.Vault, error) {
	o := e.opts()
	o.Keys = p
	return engine.Open(ctx, o)
}

// refusedEverywhere asserts that the vault cannot be opened (backup,
// restore and check all open it first) and that a vault opened before the
// attack refuses at its next unwrap.
func refusedEverywhere(t *testing.T, e *env, p vault.KeyProvider, running *engine.Vault, clk *clock, words ...string) {
	t.Helper()
	if v, err := openWith(e, p); err == nil {
		// Still a refusal if the first thing a backup does fails.
		_, serr := v.SaveBlob(ctx, vault.DataBlob, v.BlobID([]byte("x")), v.Codec().Encode(nil, []byte("x")), 1)
		v.Close()
		wantRefused(t, "open", serr, words...)
	} else {
		wantRefused(t, "open", err, words...)
	}
	if running != nil {
		rep, err := running.Check(ctx, engine.CheckOptions{})
		if err == nil && rep.OK() {
			t.Fatal("check on a running vault: no errors found")
		}
		if err == nil {
			err = errors.New(strings.Join(rep.Errors, "; "))
		}
		wantRefused(t, "check on a running vault", err, words...)
		clk.mu.Lock()
		clk.t = clk.t.Add(2 * time.Hour) // past the running vault's key TTL
		clk.mu.Unlock()
		wantRefused(t, "a running vault's next unwrap", running.EnsureKeys(ctx), words...)
	}
}

// ignoredEverywhere asserts that a generation planted above generation
// cur, which does not authenticate under the vault's root secret, is
// ignored: the vault opens at cur (its own current DEK, never the
// attacker's), a vault opened before the attack unwraps cur again at its
// next unwrap, and check lists the planted object.
func ignoredEverywhere(t *testing.T, e *env, p vault.KeyProvider, running *engine.Vault, clk *clock, cur uint64) {
	t.Helper()
	planted := "keys/" + format.KeyringName(cur+1)
	v, err := openWith(e, p)
	if err != nil {
		t.Fatalf("open with %s planted: %v", planted, err)
	}
	want := running.KeyInfo()
	if ki := v.KeyInfo(); ki.KeyringGen != cur || ki.DEKVersion != want.DEKVersion {
		t.Errorf("open with %s planted uses generation %d, DEK v%d; want %d, v%d", planted, ki.KeyringGen, ki.DEKVersion, cur, want.DEKVersion)
	}
	v.Close()
	rep, err := running.Check(ctx, engine.CheckOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("check on a running vault with %s planted: %v %v", planted, rep.Errors, err)
	}
	listed := false
	for _, w := range rep.Warnings {
		listed = listed || strings.Contains(w, planted)
	}
	if !listed {
		t.Errorf("check does not list %s: %q", planted, rep.Warnings)
	}
	clk.mu.Lock()
	clk.t = clk.t.Add(2 * time.Hour) // past the running vault's key TTL
	clk.mu.Unlock()
	if err := running.EnsureKeys(ctx); err != nil {
		t.Fatalf("a running vault's next unwrap with %s planted: %v", planted, err)
	}
	if ki := running.KeyInfo(); ki.KeyringGen != cur || ki.DEKVersion != want.DEKVersion {
		t.Errorf("a running vault's next unwrap uses generation %d, DEK v%d; want %d, v%d", ki.KeyringGen, ki.DEKVersion, cur, want.DEKVersion)
	}
}

// runningVault opens a second handle on e's vault with a key TTL, as the
// server keeps vaults open.
func runningVault(t *testing.T, e *env, p vault.KeyProvider) *engine.Vault {
	t.Helper()
	o := e.opts()
	o.Keys = p
	o.KeyTTL = time.Hour
	v, err := engine.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// TestAttackKeyringAttackerDEK: with the customer key's PUBLIC key and
// write access to keys/, the attacker adds a DEK of their choosing, as a
// new generation (which does not authenticate: ignored, the vault's own
// generation stays in use) or in place of the current one (refused).
func TestAttackKeyringAttackerDEK(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		name := "new generation"
		if inPlace {
			name = "current generation rewritten"
		}
		t.Run(name, func(t *testing.T) {
			e, p, pub, _ := rsaEnv(t)
			o := e.opts()
			o.Keys = p
			v, err := engine.Create(ctx, o, engine.DefaultChunker())
			if err != nil {
				t.Fatal(err)
			}
			snapshotOf(t, v, "h", randBytes(1, 1000))
			vid := v.Record().ID
			v.Close()
			running := runningVault(t, e, p)

			_, kr := latestRaw(t, e.store)
			attackerDEK := seal.NewRandomKey()
			addAttackerDEK(t, kr, vid, pub, attackerDEK)
			cur := uint64(kr["generation"].(float64))
			if inPlace {
				plantKeyring(t, e.store, cur, kr)
				refusedEverywhere(t, e, p, running, e.clock, "keyring")
			} else {
				plantKeyring(t, e.store, cur+1, kr)
				ignoredEverywhere(t, e, p, running, e.clock, cur)
			}
		})
	}
}

// TestAttackKeyringAttackerRoot: the attacker wraps a root secret of their
// own and MACs the keyring with it (carrying the vault's own wrapped DEKs,
// which still unwrap), as a new generation (its MAC does not verify under
// the root secret the anchor commits to: ignored) or in place of the
// current one (refused).
func TestAttackKeyringAttackerRoot(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		name := "new generation"
		if inPlace {
			name = "current generation rewritten"
		}
		t.Run(name, func(t *testing.T) {
			e, p, pub, _ := rsaEnv(t)
			o := e.opts()
			o.Keys = p
			v, err := engine.Create(ctx, o, engine.DefaultChunker())
			if err != nil {
				t.Fatal(err)
			}
			snapshotOf(t, v, "h", randBytes(1, 1000))
			vid := v.Record().ID
			v.Close()
			running := runningVault(t, e, p)

			_, raw := latestRaw(t, e.store)
			b, _ := json.Marshal(raw)
			kr, err := format.ParseKeyring(format.KeyringName(uint64(raw["generation"].(float64))), b, vid)
			if err != nil {
				t.Fatal(err)
			}
			myRoot := seal.NewRandomKey()
			kr.Root = rsaWrap(t, pub, myRoot[:], seal.KeyAAD(vid, "root", 0))
			dek := seal.NewRandomKey()
			ver := kr.DEKs[len(kr.DEKs)-1].Version + 1
			kr.DEKs = append(kr.DEKs, format.KeyringDEK{Version: ver, Created: kr.Created, Wrapped: rsaWrap(t, pub, dek[:], seal.KeyAAD(vid, "dek", ver))})
			kr.CurrentDEK = ver
			cur := kr.Generation
			if !inPlace {
				kr.Generation++
			}
			if kr.Format == 2 {
				kr.MAC = kr.ComputeMAC(myRoot, vid)
			}
			plant(t, e.store, vault.Handle{Type: vault.KeyObject, Name: format.KeyringName(kr.Generation)}, kr.Encode())
			if inPlace {
				refusedEverywhere(t, e, p, running, e.clock, "keyring")
			} else {
				ignoredEverywhere(t, e, p, running, e.clock, cur)
			}
		})
	}
}

// TestAttackKeyringDowngrade: after use-cmk and the customer key's
// revocation, the attacker puts back a platform-wrapped generation saved
// before the switch (deleting the customer-key generation, or not).
func TestAttackKeyringDowngrade(t *testing.T) {
	for _, deleteNewer := range []bool{false, true} {
		name := "saved generation put back"
		if deleteNewer {
			name = "newer generation deleted"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			v := create(t, e)
			snapshotOf(t, v, "h", randBytes(1, 1000))
			saved := map[string][]byte{}
			for _, n := range keyringNames(t, e.store) {
				saved[n] = readObject(t, e.store, vault.Handle{Type: vault.KeyObject, Name: n})
			}
			_, p, _, cmkPath := rsaEnv(t)
			if err := v.Rewrap(ctx, p); err != nil { // key use-cmk
				t.Fatal(err)
			}
			snapshotOf(t, v, "h", randBytes(2, 1000))
			v.Close()
			if err := os.Remove(cmkPath); err != nil { // the customer revokes the key
				t.Fatal(err)
			}
			if deleteNewer {
				for _, n := range keyringNames(t, e.store) {
					if err := e.store.Delete(ctx, vault.Handle{Type: vault.KeyObject, Name: n}); err != nil {
						t.Fatal(err)
					}
				}
			}
			for n, b := range saved {
				plant(t, e.store, vault.Handle{Type: vault.KeyObject, Name: n}, b)
			}
			// The platform key file still exists: the attacker's hope.
			v2, err := openWith(e, e.keys)
			if err == nil {
				v2.Close()
				t.Fatal("the vault opened with the platform key after use-cmk and revocation")
			}
			if deleteNewer {
				wantRefused(t, "open after rollback", err, "older than generation", "catalog")
			}
		})
	}
}

// TestAttackKeyringUndoRotation: a DEK rotation undone by editing
// current_dek in the newest generation, or by deleting the newest
// generation.
func TestAttackKeyringUndoRotation(t *testing.T) {
	for _, how := range []string{"current_dek edited", "newest generation deleted"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t, nil)
			v := create(t, e)
			snapshotOf(t, v, "h", randBytes(1, 1000))
			if _, err := v.RotateDEK(ctx); err != nil {
				t.Fatal(err)
			}
			v.Close()
			running := runningVault(t, e, e.keys)
			name, kr := latestRaw(t, e.store)
			if how == "current_dek edited" {
				kr["current_dek"] = 1
				plantKeyring(t, e.store, uint64(kr["generation"].(float64)), kr)
				refusedEverywhere(t, e, e.keys, running, e.clock, "keyring", "MAC")
			} else {
				if err := e.store.Delete(ctx, vault.Handle{Type: vault.KeyObject, Name: name}); err != nil {
					t.Fatal(err)
				}
				refusedEverywhere(t, e, e.keys, running, e.clock, "older than generation")
			}
		})
	}
}

// TestAttackConfigEdited: a store writer changes the chunk sizes or the
// pack size in the config.
func TestAttackConfigEdited(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(map[string]any)
	}{
		{"64-byte chunks", func(m map[string]any) { m["chunker"] = map[string]any{"min": 64, "avg": 128, "max": 256} }},
		{"smaller chunks within bounds", func(m map[string]any) { m["chunker"] = map[string]any{"min": 4096, "avg": 8192, "max": 16384} }},
		{"other pack size", func(m map[string]any) { m["pack_size"] = 2 << 20 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			v := create(t, e)
			snapshotOf(t, v, "h", randBytes(1, 1000))
			v.Close()
			h := vault.Handle{Type: vault.ConfigObject, Name: "config"}
			var m map[string]any
			if err := json.Unmarshal(readObject(t, e.store, h), &m); err != nil {
				t.Fatal(err)
			}
			c.edit(m)
			b, _ := json.Marshal(m)
			plant(t, e.store, h, b)
			v2, err := openWith(e, e.keys)
			if err == nil {
				v2.Close()
				t.Fatal("the vault opened with an edited config")
			}
			wantRefused(t, "open", err, "config")
		})
	}
}

// TestAttackCatalogAnchor: a catalog-only writer can make the vault refuse
// to open (an anchor at another generation), and deleting the anchor only
// re-anchors the store's untouched keyring, with a key event.
func TestAttackCatalogAnchor(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	snapshotOf(t, v, "h", randBytes(1, 1000))
	vid := v.Record().ID
	if _, err := v.RotateDEK(ctx); err != nil {
		t.Fatal(err)
	}
	v.Close()
	a, _, err := e.cat.KeyAnchor(ctx, vid)
	if err != nil {
		t.Fatalf("no anchor after create and rotate: %v", err)
	}
	// Moving the anchor forward to a generation the store lacks.
	fwd := a
	fwd.Generation = a.Generation + 5
	if err := e.cat.SetKeyAnchor(ctx, vid, fwd, a.Generation); err != nil {
		t.Fatal(err)
	}
	if v2, err := openWith(e, e.keys); err == nil {
		v2.Close()
		t.Fatal("opened with the anchor ahead of the store")
	} else {
		wantRefused(t, "anchor ahead", err, "older than generation")
	}
	// Deleting the anchor (directly in SQL, as a catalog writer would).
	db, err := sql.Open("sqlite", filepath.Join(e.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `DELETE FROM key_anchors WHERE vault = ?`, vid[:]); err != nil {
		t.Fatal(err)
	}
	v3, err := openWith(e, e.keys)
	if err != nil {
		t.Fatalf("open after the anchor was deleted: %v", err)
	}
	v3.Close()
	if b, _, err := e.cat.KeyAnchor(ctx, vid); err != nil || b.Generation != a.Generation || b.MAC != a.MAC || b.RootCommit != a.RootCommit {
		t.Errorf("re-anchored at %+v, %v; want the store's generation %d", b, err, a.Generation)
	}
	evs, _ := e.cat.KeyEvents(ctx, vid)
	if len(evs) == 0 || evs[len(evs)-1].Event != vault.KeyEventAnchor {
		t.Errorf("no %s key event after re-anchoring: %+v", vault.KeyEventAnchor, evs)
	}
}

func parseRSA(b []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not RSA")
	}
	return rk, nil
}

// TestKeyringCrashBeforeAnchor: a key change that stored its generation
// but died before anchoring it leaves a vault that opens (the proposal
// completes the anchor); one that died before storing leaves the old
// generation in use.
func TestKeyringCrashBeforeAnchor(t *testing.T) {
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
	// Put the anchor back where it was before the rotation, with the
	// rotation's proposal still recorded: the state of a crash between
	// the store write and the anchor.
	db, err := sql.Open("sqlite", filepath.Join(e.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `UPDATE key_anchors SET generation = ?, mac = ? WHERE vault = ?`, int64(before.Generation), before.MAC[:], vid[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO key_proposals (vault, generation, mac, time) VALUES (?, ?, ?, 0)`, vid[:], int64(after.Generation), after.MAC[:]); err != nil {
		t.Fatal(err)
	}
	w, err := openWith(e, e.keys)
	if err != nil {
		t.Fatalf("open after a crash before the anchor: %v", err)
	}
	defer w.Close()
	if a, props, err := e.cat.KeyAnchor(ctx, vid); err != nil || a.Generation != after.Generation || len(props) != 0 {
		t.Errorf("anchor after completing: %+v, %d proposals, %v; want generation %d, none", a, len(props), err, after.Generation)
	}
	if ki := w.KeyInfo(); ki.DEKVersion != 2 {
		t.Errorf("DEK v%d in use after completing the rotation, want v2", ki.DEKVersion)
	}
}

// TestKeyTTLDropsProviderSecrets: once a vault's keys outlive their TTL
// and are dropped, the key provider's own material goes too: with the
// key file removed meanwhile, nothing unwraps the vault's keys again
// (the platform keystore used to keep every KEK version in memory).
func TestKeyTTLDropsProviderSecrets(t *testing.T) {
	for _, kind := range []string{"platform", "rsa-file"} {
		t.Run(kind, func(t *testing.T) {
			e, cmk, _, cmkPath := rsaEnv(t)
			var p vault.KeyProvider = e.keys
			keyFile := filepath.Join(e.dir, "platform.key")
			if kind == "rsa-file" {
				p, keyFile = cmk, cmkPath
			}
			o := e.opts()
			o.Keys = p
			v, err := engine.Create(ctx, o, engine.DefaultChunker())
			if err != nil {
				t.Fatal(err)
			}
			v.Close()
			running := runningVault(t, e, p)
			if err := running.EnsureKeys(ctx); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(keyFile); err != nil {
				t.Fatal(err)
			}
			e.clock.mu.Lock()
			e.clock.t = e.clock.t.Add(2 * time.Hour)
			e.clock.mu.Unlock()
			if !running.ExpireKeys() {
				t.Fatal("ExpireKeys dropped nothing past the TTL")
			}
			err = running.EnsureKeys(ctx)
			if !errors.Is(err, vault.ErrKeyUnavailable) {
				t.Fatalf("unwrap after the TTL with the key file removed: %v; want ErrKeyUnavailable", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestTreeIDChecked: a tree sealed under an ID that is not its content's
// (a writer holding a DEK, or a bug) is refused by every reader: LoadTree
// (local ls, diff, restore) and LoadEncoded (what a server sends to a
// remote reader that holds no chunk-ID key to check it).
func TestTreeIDChecked(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	realTree := &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("real"), Perm: 0o644}}}
	other := &format.Tree{Nodes: []format.Node{{Kind: format.KindFile, Name: []byte("forged"), Perm: 0o644}}}
	realID, err := v.SaveTree(ctx, realTree)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := format.EncodeTree(nil, other)
	if err != nil {
		t.Fatal(err)
	}
	wrongID := realID
	wrongID[0] ^= 1
	if _, err := v.SaveBlob(ctx, vault.TreeBlob, wrongID, v.Codec().Encode(nil, enc), len(enc)); err != nil {
		t.Fatal(err)
	}
	flush(t, v)
	if _, err := v.LoadTree(ctx, realID); err != nil {
		t.Fatalf("the real tree: %v", err)
	}
	if _, err := v.LoadTree(ctx, wrongID); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("LoadTree of a tree under another ID: %v; want corrupt", err)
	}
	if _, _, err := v.LoadEncoded(ctx, vault.TreeBlob, wrongID, nil, v.NewHasher()); !errors.Is(err, vault.ErrCorrupt) || !strings.Contains(err.Error(), "does not match its ID") {
		t.Errorf("LoadEncoded of a tree under another ID: %v; want corrupt, naming the ID", err)
	}
}

// TestPackSizeCountsHeader: blobs that fill a pack's body to exactly the
// pack size must not make a pack larger than the pack size once its
// header is added (docs/format.md §4; 16 MiB + 684 bytes before).
func TestPackSizeCountsHeader(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	limit := v.Config().PackSize
	// 15 blobs of 1,000,000 bytes and one that fills the body to the
	// byte: each is stored raw (1 encoding byte) and sealed (16 bytes).
	last := limit - format.PackPrefixSize - 15*(1+16+1_000_000) - (1 + 16)
	for i := range 15 {
		save(t, v, randBytes(uint64(1000+i), 1_000_000))
	}
	save(t, v, randBytes(2000, last))
	flush(t, v)
	for _, s := range packSizes(t, e.store) {
		if s > int64(limit) {
			t.Errorf("a pack of %d bytes, above the pack size %d", s, limit)
		}
	}
}
