package engine_test

// Attacks on retired platform key versions by someone who can write both
// the store and the catalog (a local vault's directory holds both): a
// copy of the vault saved while its keyring was wrapped under platform
// KEK version 1, put back whole after the platform key rotated. The
// catalog's anchor rolls back with it, so only the key file can refuse
// it: version 1 must be gone from it once nothing needs it.

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// kekVault is a vault in a directory (store and catalog.db, as a local
// vault keeps them) and a platform key file elsewhere.
type kekVault struct {
	dir     string
	keyFile string
	clock   *clock
	id      vault.ID
}

func (k *kekVault) open(t *testing.T) (*engine.Vault, *platform.Keystore, func(), error) {
	t.Helper()
	st, err := local.Open(filepath.Join(k.dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := sqlite.Open(filepath.Join(k.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := platform.Open(k.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	v, err := engine.Open(ctx, engine.Options{Store: st, Catalog: cat, Keys: ks, Name: "local", Now: k.clock.Now})
	closeAll := func() {
		if v != nil {
			v.Close()
		}
		cat.Close()
		st.Close()
	}
	return v, ks, closeAll, err
}

// inUse is KEKsInUse of the vault, read as coffer key retire reads it.
func (k *kekVault) inUse(t *testing.T) []vault.KeyRef {
	t.Helper()
	st, err := local.Open(filepath.Join(k.dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cat, err := sqlite.Open(filepath.Join(k.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	refs, err := engine.KEKsInUse(ctx, st, cat, k.id)
	if err != nil {
		t.Fatal(err)
	}
	return refs
}

func newKEKVault(t *testing.T) *kekVault {
	t.Helper()
	k := &kekVault{dir: filepath.Join(t.TempDir(), "vault"), keyFile: filepath.Join(t.TempDir(), "platform.key"), clock: &clock{t: testStart}}
	if _, err := platform.Create(k.keyFile, testStart); err != nil {
		t.Fatal(err)
	}
	st, err := local.Open(filepath.Join(k.dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := sqlite.Open(filepath.Join(k.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := platform.Open(k.keyFile)
	v, err := engine.Create(ctx, engine.Options{Store: st, Catalog: cat, Keys: ks, Name: "local", Now: k.clock.Now}, engine.DefaultChunker())
	if err != nil {
		t.Fatal(err)
	}
	snapshotOf(t, v, "h", randBytes(1, 5000))
	k.id = v.Record().ID
	v.Close()
	cat.Close()
	st.Close()
	return k
}

// copyTree copies the directory src to dst (which must not exist): the
// attacker's saved copy, or putting it back.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// putBack replaces the vault directory with the saved copy: store and
// catalog together, anchor included.
func (k *kekVault) putBack(t *testing.T, saved string) {
	t.Helper()
	if err := os.RemoveAll(k.dir); err != nil {
		t.Fatal(err)
	}
	copyTree(t, saved, k.dir)
}

// TestAttackKEKRetiredRollback: the store+catalog writer's rollback to a
// copy wrapped under platform KEK v1 opens while v1 is in the key file
// (the hole), and is refused with "key unavailable" naming v1 once v1 is
// retired, which KEKsInUse allows because the vault's anchored
// generation is wrapped under v2.
func TestAttackKEKRetiredRollback(t *testing.T) {
	k := newKEKVault(t)
	saved := filepath.Join(t.TempDir(), "saved")
	copyTree(t, k.dir, saved) // the attacker's copy, keyring under v1

	v, ks, closeAll, err := k.open(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Rotate(testStart.Add(91 * 24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := v.Rewrap(ctx, ks); err != nil {
		t.Fatal(err)
	}
	snapshotOf(t, v, "h", randBytes(2, 5000))
	closeAll()
	current := filepath.Join(t.TempDir(), "current")
	copyTree(t, k.dir, current)

	refs := k.inUse(t)
	if len(refs) != 1 || refs[0].Provider != platform.Provider || refs[0].Version != "2" {
		t.Fatalf("KEKs in use after the rewrap: %v, want only platform v2", refs)
	}

	// The hole: with v1 still in the key file, the rolled-back copy opens.
	k.putBack(t, saved)
	_, _, closeAll, err = k.open(t)
	closeAll()
	if err != nil {
		t.Fatalf("control: the rolled-back copy does not open even with v1 in the key file: %v", err)
	}
	k.putBack(t, current)

	ks2, err := platform.Open(k.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ks2.Retire([]int{1}); err != nil || !slices.Equal(got, []int{1}) {
		t.Fatalf("retire v1: %v, %v", got, err)
	}
	k.putBack(t, saved)
	_, _, closeAll, err = k.open(t)
	closeAll()
	if !errors.Is(err, vault.ErrKeyUnavailable) || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("the rolled-back copy after v1 was retired: %v, want key unavailable naming version 1", err)
	}
	k.putBack(t, current)
	v, _, closeAll, err = k.open(t)
	if err != nil {
		t.Fatalf("the vault after retiring v1: %v", err)
	}
	if rep, err := v.Check(ctx, engine.CheckOptions{ReadData: true}); err != nil || !rep.OK() {
		t.Errorf("check --read-data after retiring v1: %v %v", err, rep.Errors)
	}
	closeAll()
}

// TestKEKsInUseKeepsWhatIsNeeded: what KEKsInUse names, so that nothing
// still needed is retired: the anchored generation's KEK; a newer
// generation in the store (a key change not yet anchored) too; an older
// generation left in the store (refused on open) not; without a catalog
// every generation; and a catalog that cannot be read is an error, never
// an empty answer.
func TestKEKsInUseKeepsWhatIsNeeded(t *testing.T) {
	k := newKEKVault(t)
	st, err := local.Open(filepath.Join(k.dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, v1Keyring := latestRaw(t, st)
	v, ks, closeAll, err := k.open(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Rotate(testStart.Add(91 * 24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := v.Rewrap(ctx, ks); err != nil {
		t.Fatal(err)
	}
	gen := v.KeyInfo().KeyringGen
	closeAll()
	versions := func(refs []vault.KeyRef) []string {
		var out []string
		for _, r := range refs {
			out = append(out, r.Version)
		}
		slices.Sort(out)
		return out
	}

	// An old generation under v1 left below the anchor: refused on open,
	// so it needs nothing.
	plantKeyring(t, st, 1, v1Keyring)
	if got := versions(k.inUse(t)); !slices.Equal(got, []string{"2"}) {
		t.Errorf("with a v1 generation below the anchor: %v, want [2]", got)
	}
	// Without the catalog every generation counts.
	if refs, err := engine.KEKsInUse(ctx, st, nil, k.id); err != nil || !slices.Equal(versions(refs), []string{"1", "2"}) {
		t.Errorf("without a catalog: %v %v, want [1 2]", versions(refs), err)
	}
	// A generation above the anchor that no key holder proposed is
	// refused on open: it needs nothing (a store writer cannot keep v1
	// alive by planting one).
	plantKeyring(t, st, gen+1, v1Keyring)
	if got := versions(k.inUse(t)); !slices.Equal(got, []string{"2"}) {
		t.Errorf("with an unproposed v1 generation above the anchor: %v, want [2]", got)
	}
	// One a key holder proposed (a key change in flight, anchored by the
	// next open) counts.
	cat, err := sqlite.Open(filepath.Join(k.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	pr := vault.KeyProposal{Generation: gen + 1, Time: testStart}
	mac, err := base64.StdEncoding.DecodeString(v1Keyring["mac"].(string))
	if err != nil || len(mac) != len(pr.MAC) {
		t.Fatalf("the keyring's MAC: %v %d bytes", err, len(mac))
	}
	copy(pr.MAC[:], mac)
	if err := cat.ProposeKeyring(ctx, k.id, pr); err != nil {
		t.Fatal(err)
	}
	cat.Close()
	if got := versions(k.inUse(t)); !slices.Equal(got, []string{"1", "2"}) {
		t.Errorf("with a proposed v1 generation above the anchor: %v, want [1 2]", got)
	}
	// One that does not parse is an error.
	plant(t, st, vault.Handle{Type: vault.KeyObject, Name: "9999999999"}, []byte("{"))
	if refs, err := engine.KEKsInUse(ctx, st, nil, k.id); err == nil {
		t.Errorf("a damaged generation: %v, nil error", refs)
	}
	// A catalog that cannot be read is an error.
	cat, err = sqlite.Open(filepath.Join(k.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	cat.Close()
	if refs, err := engine.KEKsInUse(ctx, st, cat, k.id); err == nil {
		t.Errorf("a closed catalog: %v, nil error", refs)
	}
}
