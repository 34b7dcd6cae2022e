package catalogtest

import (
	"errors"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

func anchorAt(gen uint64, mac byte) vault.KeyAnchor {
	a := vault.KeyAnchor{Generation: gen, KEK: vault.KeyRef{Provider: "platform", KeyID: "k", Version: "3"}, Alg: "hkdf-sha256-aes-256-gcm", Time: base}
	a.MAC[0], a.RootCommit[0] = mac, 0xcc
	return a
}

// testKeyAnchorLifecycle: no anchor, proposals, an anchor that drops the
// proposals at or below it, a later anchor.
func testKeyAnchorLifecycle(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "v")
	other := createVault(t, c, "other")
	if _, props, err := c.KeyAnchor(ctx, v.ID); !errors.Is(err, vault.ErrNotFound) || len(props) != 0 {
		t.Fatalf("KeyAnchor of a new vault: %v, %d proposals; want ErrNotFound, none", err, len(props))
	}
	for _, p := range []vault.KeyProposal{{Generation: 1, Time: base}, {Generation: 2, Time: base}, {Generation: 2, Time: base}} {
		p.MAC[0] = byte(p.Generation)
		if err := c.ProposeKeyring(ctx, v.ID, p); err != nil {
			t.Fatalf("ProposeKeyring(%d): %v", p.Generation, err)
		}
	}
	_, props, err := c.KeyAnchor(ctx, v.ID)
	if !errors.Is(err, vault.ErrNotFound) || len(props) != 2 || props[0].Generation != 1 || props[1].Generation != 2 || props[1].MAC[0] != 2 || !props[0].Time.Equal(base) {
		t.Fatalf("KeyAnchor after two proposals (one twice): %v, %+v", err, props)
	}
	if err := c.SetKeyAnchor(ctx, v.ID, anchorAt(1, 1), 0); err != nil {
		t.Fatalf("SetKeyAnchor(1, prev 0): %v", err)
	}
	a, props, err := c.KeyAnchor(ctx, v.ID)
	if err != nil || a.Generation != 1 || a.MAC[0] != 1 || a.RootCommit[0] != 0xcc || a.KEK != anchorAt(1, 1).KEK || a.Alg != anchorAt(1, 1).Alg || !a.Time.Equal(base) {
		t.Fatalf("KeyAnchor after SetKeyAnchor: %+v, %v", a, err)
	}
	if len(props) != 1 || props[0].Generation != 2 {
		t.Fatalf("proposals after anchoring generation 1: %+v; want only generation 2", props)
	}
	if err := c.SetKeyAnchor(ctx, v.ID, anchorAt(2, 2), 1); err != nil {
		t.Fatalf("SetKeyAnchor(2, prev 1): %v", err)
	}
	if a, props, err = c.KeyAnchor(ctx, v.ID); err != nil || a.Generation != 2 || a.MAC[0] != 2 || len(props) != 0 {
		t.Fatalf("KeyAnchor after the second anchor: %+v, %+v, %v", a, props, err)
	}
	if _, _, err := c.KeyAnchor(ctx, other.ID); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("another vault's anchor: %v; want ErrNotFound", err)
	}
}

// testKeyAnchorConflict: an anchor moves only forward, and only from the
// generation its writer read.
func testKeyAnchorConflict(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	v := createVault(t, c, "v")
	if err := c.SetKeyAnchor(ctx, v.ID, anchorAt(3, 3), 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		gen, prev uint64
	}{{4, 0}, {4, 2}, {3, 3}, {2, 3}, {5, 4}} {
		if err := c.SetKeyAnchor(ctx, v.ID, anchorAt(tc.gen, 9), tc.prev); !errors.Is(err, vault.ErrConflict) {
			t.Errorf("SetKeyAnchor(%d, prev %d) with the anchor at 3: %v; want ErrConflict", tc.gen, tc.prev, err)
		}
	}
	if a, _, err := c.KeyAnchor(ctx, v.ID); err != nil || a.Generation != 3 || a.MAC[0] != 3 {
		t.Errorf("anchor after refused changes: %+v, %v; want generation 3 unchanged", a, err)
	}
}

func testKeyAnchorUnknownVault(t *testing.T, c vault.Catalog) {
	ctx := t.Context()
	if err := c.ProposeKeyring(ctx, newID(), vault.KeyProposal{Generation: 1, Time: base}); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("ProposeKeyring for an unknown vault: %v; want ErrNotFound", err)
	}
	if err := c.SetKeyAnchor(ctx, newID(), anchorAt(1, 1), 0); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("SetKeyAnchor for an unknown vault: %v; want ErrNotFound", err)
	}
}
