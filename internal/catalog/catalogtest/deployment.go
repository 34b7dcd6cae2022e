package catalogtest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Shared is a catalog that several servers share: the vault catalog and
// what they share through it in place of a data directory.
type Shared interface {
	vault.Catalog
	vault.Deployment
}

// RunDeployment checks vault.Deployment: open returns two catalogs of one
// database (two servers on different hosts).
func RunDeployment(t *testing.T, open func(t *testing.T) (a, b Shared)) {
	ctx := context.Background()
	t.Run("Vaults", func(t *testing.T) {
		a, b := open(t)
		if vs, err := b.Vaults(ctx); err != nil || len(vs) != 0 {
			t.Fatalf("Vaults of an empty catalog = %v, %v", vs, err)
		}
		now := time.Date(2031, 2, 3, 4, 5, 6, 7000, time.UTC)
		var ids []vault.ID
		for i, name := range []string{"zeta", "alpha", "gone"} {
			id := vault.ID{byte(i + 1)}
			ids = append(ids, id)
			if err := a.CreateVault(ctx, vault.VaultRecord{ID: id, Name: name, Created: now}); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.DeleteVault(ctx, ids[2], now); err != nil {
			t.Fatal(err)
		}
		vs, err := b.Vaults(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(vs) != 2 || vs[0].Name != "alpha" || vs[0].ID != ids[1] || !vs[0].Created.Equal(now) || vs[1].Name != "zeta" {
			t.Errorf("Vaults through the other catalog = %+v; want alpha then zeta, not the deleted one", vs)
		}
	})
	t.Run("StoreURL", func(t *testing.T) {
		a, b := open(t)
		if u, err := b.VaultStore(ctx, "far"); err != nil || u != nil {
			t.Fatalf("VaultStore of a vault without one = %q, %v", u, err)
		}
		for _, want := range [][]byte{[]byte("sealed one"), {0, 1, 2, 0xff}} {
			if err := a.SetVaultStore(ctx, "far", want); err != nil {
				t.Fatal(err)
			}
			if u, err := b.VaultStore(ctx, "far"); err != nil || !bytes.Equal(u, want) {
				t.Errorf("VaultStore through the other catalog = %q, %v; want %q", u, err, want)
			}
		}
		if u, err := b.VaultStore(ctx, "Far"); err != nil || u != nil {
			t.Errorf("VaultStore of a case variant = %q, %v; want none", u, err)
		}
		if err := a.SetVaultStore(ctx, "far", nil); err != nil {
			t.Fatal(err)
		}
		if u, err := b.VaultStore(ctx, "far"); err != nil || u != nil {
			t.Errorf("VaultStore after removal = %q, %v", u, err)
		}
	})
	t.Run("PlatformKeys", func(t *testing.T) {
		a, b := open(t)
		t0 := time.Date(2031, 2, 3, 4, 5, 6, 7000, time.UTC)
		k1 := vault.SealedKEK{KeyID: "k", Version: 1, Created: t0, Sealed: []byte("one")}
		k2 := vault.SealedKEK{KeyID: "k", Version: 2, Created: t0.Add(time.Hour), Sealed: []byte("two")}
		for _, k := range []vault.SealedKEK{k2, k1} {
			if err := a.AddPlatformKey(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		// Version 2 again, by another server or under another key ID.
		for _, k := range []vault.SealedKEK{{KeyID: "k", Version: 2, Created: t0, Sealed: []byte("other")}, {KeyID: "x", Version: 2, Created: t0, Sealed: []byte("x")}} {
			if err := b.AddPlatformKey(ctx, k); !errors.Is(err, vault.ErrExists) {
				t.Errorf("AddPlatformKey of a taken version (%s) = %v, want ErrExists", k.KeyID, err)
			}
		}
		ks, err := b.PlatformKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ks) != 2 || !same(ks[0], k1) || !same(ks[1], k2) {
			t.Errorf("PlatformKeys = %+v; want v1 then v2 as added", ks)
		}
		if err := b.DeletePlatformKeys(ctx, "x", []int{1}); err != nil { // another key's: nothing
			t.Fatal(err)
		}
		if err := b.DeletePlatformKeys(ctx, "k", []int{1, 7}); err != nil {
			t.Fatal(err)
		}
		if ks, err := a.PlatformKeys(ctx); err != nil || len(ks) != 1 || !same(ks[0], k2) {
			t.Errorf("PlatformKeys after deleting v1 = %+v, %v; want v2 alone", ks, err)
		}
	})
	t.Run("KeyURIs", func(t *testing.T) {
		a, b := open(t)
		v1, v2 := vault.ID{1}, vault.ID{2}
		if m, err := b.KeyURIs(ctx, v1); err != nil || len(m) != 0 {
			t.Fatalf("KeyURIs of a vault without any = %v, %v", m, err)
		}
		for _, set := range []struct {
			v    vault.ID
			kek  string
			data string
		}{{v1, "pkcs11 k", "old"}, {v1, "pkcs11 k", "one"}, {v1, "rsa x", "two"}, {v2, "pkcs11 k", "three"}} {
			if err := a.SetKeyURI(ctx, set.v, set.kek, []byte(set.data)); err != nil {
				t.Fatal(err)
			}
		}
		m, err := b.KeyURIs(ctx, v1)
		if err != nil || len(m) != 2 || string(m["pkcs11 k"]) != "one" || string(m["rsa x"]) != "two" {
			t.Errorf("KeyURIs through the other catalog = %q, %v; want the second pkcs11 URI and the rsa one", m, err)
		}
		if err := b.KeepKeyURI(ctx, v1, "rsa x"); err != nil {
			t.Fatal(err)
		}
		if m, err := a.KeyURIs(ctx, v1); err != nil || len(m) != 1 || string(m["rsa x"]) != "two" {
			t.Errorf("KeyURIs after KeepKeyURI = %q, %v; want the rsa one alone", m, err)
		}
		if m, err := a.KeyURIs(ctx, v2); err != nil || len(m) != 1 || string(m["pkcs11 k"]) != "three" {
			t.Errorf("another vault's URIs after KeepKeyURI = %q, %v; want them untouched", m, err)
		}
	})
}

func same(a, b vault.SealedKEK) bool {
	return a.KeyID == b.KeyID && a.Version == b.Version && a.Created.Equal(b.Created) && bytes.Equal(a.Sealed, b.Sealed)
}
