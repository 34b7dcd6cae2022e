package passphrase_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/keys/passphrase"
	"github.com/coffer-backup/coffer/internal/vault"
)

var (
	ctx  = context.Background()
	aadA = []byte("vault-id||root||0")
)

func pw(s string) passphrase.Passphrase { return passphrase.NewPassphrase([]byte(s)) }

func cheap() passphrase.Options { return passphrase.TestingOptions("the test") }

// setOf returns the slot set p wraps to.
func setOf(t testing.TB, p *passphrase.Provider) (set []byte, w vault.WrappedKey, secret []byte) {
	t.Helper()
	secret = bytes.Repeat([]byte{0x5a}, 32)
	w, err := p.Wrap(ctx, secret, aadA)
	if err != nil {
		t.Fatal(err)
	}
	set, err = passphrase.SlotsOf(w)
	if err != nil {
		t.Fatal(err)
	}
	return set, w, secret
}

// Slot layout (docs/format.md §1.1d): set = 0x01 || n || n × slot, slot =
// id(8) || t(4) || m(4) || p(1) || salt(32) || pub(32) || sealed(48).
const (
	slotSize = 129
	offT     = 2 + 8
	offM     = offT + 4
	offP     = offM + 4
	offSalt  = offP + 1
	offPub   = offSalt + 32
)

// TestAttackWrongPassphrase: a wrong passphrase is vault.ErrWrongKey, and
// neither it nor the right one appears in the error.
func TestAttackWrongPassphrase(t *testing.T) {
	p, err := passphrase.Create(pw("the right passphrase"), cheap())
	if err != nil {
		t.Fatal(err)
	}
	set, _, _ := setOf(t, p)
	_, err = passphrase.Open(set, pw("the wrong passphrase"), cheap())
	if !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v, want ErrWrongKey", err)
	}
	for _, s := range []string{"right passphrase", "wrong passphrase"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q holds the passphrase", err)
		}
	}
	if got := fmt.Sprintf("%v %+v %#v %s", pw("hunter22"), pw("hunter22"), pw("hunter22"), pw("hunter22")); strings.Contains(got, "hunter22") {
		t.Errorf("a Passphrase printed itself: %s", got)
	}
	if _, err := passphrase.Open(set, passphrase.Passphrase{}, cheap()); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("no passphrase: %v, want ErrKeyUnavailable", err)
	}
	if _, err := passphrase.Create(pw("short"), cheap()); err == nil {
		t.Error("a 5-character passphrase made a slot")
	}
}

// TestAttackEditedSlot plays a store writer editing the slot set the
// keyring carries: every field of a slot is authenticated (the seal's
// AAD), so a swapped salt, public key or ID, or other parameters, opens
// nothing; parameters below the floor are refused before any key is
// derived (no downgrade of the KDF's cost), and above the ceiling too (no
// memory exhaustion).
func TestAttackEditedSlot(t *testing.T) {
	a, err := passphrase.Create(pw("passphrase number one"), cheap())
	if err != nil {
		t.Fatal(err)
	}
	b, err := a.WithSlot(pw("passphrase number two"))
	if err != nil {
		t.Fatal(err)
	}
	set, _, _ := setOf(t, b)
	if _, err := passphrase.Open(set, pw("passphrase number two"), cheap()); err != nil {
		t.Fatalf("unedited: %v", err)
	}
	edit := func(f func(s []byte)) []byte { s := bytes.Clone(set); f(s); return s }
	second := slotSize // offset of slot 2 relative to slot 1
	cases := []struct {
		name string
		set  []byte
	}{
		{"salt swapped with the other slot's", edit(func(s []byte) {
			copy(s[offSalt+second:], set[offSalt:offSalt+32])
		})},
		{"salt bit flipped", edit(func(s []byte) { s[offSalt+second] ^= 1 })},
		{"public key swapped", edit(func(s []byte) { copy(s[offPub+second:], set[offPub:offPub+32]) })},
		{"id changed", edit(func(s []byte) { s[2+second] ^= 1 })},
		{"time raised", edit(func(s []byte) { binary.LittleEndian.PutUint32(s[offT+second:], 2) })},
		{"memory raised", edit(func(s []byte) { binary.LittleEndian.PutUint32(s[offM+second:], 128) })},
		{"lanes raised", edit(func(s []byte) { s[offP+second] = 2 })},
	}
	for _, c := range cases {
		_, err := passphrase.Open(c.set, pw("passphrase number two"), cheap())
		if !errors.Is(err, vault.ErrWrongKey) && !errors.Is(err, vault.ErrCorrupt) {
			t.Errorf("%s: %v, want the slot not to open", c.name, err)
		}
	}

	// The floor: with production bounds, a slot with parameters lowered
	// to cheap ones is refused before Argon2 runs.
	real := passphrase.WithFloor(cheap(), passphrase.MinParams())
	_, err = passphrase.Open(set, pw("passphrase number two"), real)
	if !errors.Is(err, vault.ErrCorrupt) || !strings.Contains(err.Error(), "outside the accepted") {
		t.Errorf("cheap parameters under the real floor: %v, want ErrCorrupt", err)
	}
	// The ceiling: 4 GiB or 2^32-1 passes are refused, not attempted.
	for _, f := range []func(s []byte){
		func(s []byte) { binary.LittleEndian.PutUint32(s[offM:], 4<<20) },
		func(s []byte) { binary.LittleEndian.PutUint32(s[offT:], ^uint32(0)) },
		func(s []byte) { s[offP] = 255 },
		func(s []byte) { s[offP] = 0 },
	} {
		if _, err := passphrase.Open(edit(f), pw("passphrase number two"), cheap()); !errors.Is(err, vault.ErrCorrupt) {
			t.Errorf("out-of-bounds parameters: %v, want ErrCorrupt", err)
		}
	}
}

// TestAttackPlantedSlot: a store writer who adds a slot of its own to a
// wrapped record (its passphrase, its key) gets nothing: the record no
// longer matches the set its name covers, and a record relabelled with
// the planted set's name does not open under it.
func TestAttackPlantedSlot(t *testing.T) {
	owner, err := passphrase.Create(pw("the owner's passphrase"), cheap())
	if err != nil {
		t.Fatal(err)
	}
	_, w, _ := setOf(t, owner)
	mallory, err := passphrase.Create(pw("mallory's passphrase"), cheap())
	if err != nil {
		t.Fatal(err)
	}
	// Relabelled: the owner's record named as mallory's set.
	forged := w
	forged.KEK = mallory.Current()
	if _, err := mallory.Unwrap(ctx, forged, aadA); err == nil {
		t.Fatal("mallory's passphrase opened the owner's record")
	}
	// Mallory's set spliced in front of the owner's entries.
	mset, mw, _ := setOf(t, mallory)
	spliced := append(bytes.Clone(mset), w.Data[len(mw.Data)-80:]...)
	if _, err := mallory.Unwrap(ctx, vault.WrappedKey{KEK: mallory.Current(), Alg: w.Alg, Data: spliced}, aadA); err == nil {
		t.Fatal("a spliced record opened")
	}
}

// TestAttackRemovedPassphrase: after `key remove`, the removed passphrase
// opens nothing wrapped to the new set, not even with a saved copy of the
// old set it used to open.
func TestAttackRemovedPassphrase(t *testing.T) {
	a, err := passphrase.Create(pw("passphrase to keep"), cheap())
	if err != nil {
		t.Fatal(err)
	}
	both, err := a.WithSlot(pw("passphrase to remove"))
	if err != nil {
		t.Fatal(err)
	}
	oldSet, _, _ := setOf(t, both)
	removed := both.Slots()[1].ID
	if _, err := both.WithoutSlot(both.Slots()[0].ID); err == nil {
		t.Error("the slot the provider was unlocked with was removed by its own passphrase")
	}
	after, err := both.WithoutSlot(removed)
	if err != nil {
		t.Fatal(err)
	}
	if after.Current() == both.Current() {
		t.Fatal("removing a slot kept the KEK version: the vault would not be rewrapped")
	}
	newSet, w, _ := setOf(t, after)
	if _, err := passphrase.Open(newSet, pw("passphrase to remove"), cheap()); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("removed passphrase on the new set: %v, want ErrWrongKey", err)
	}
	old, err := passphrase.Open(oldSet, pw("passphrase to remove"), cheap())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Unwrap(ctx, w, aadA); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("removed passphrase with the old set: %v, want ErrKeyUnavailable", err)
	}
	w.KEK = old.Current()
	if _, err := old.Unwrap(ctx, w, aadA); err == nil {
		t.Error("removed passphrase opened a record of the new set relabelled as the old one")
	}
	if _, err := after.WithoutSlot(after.Slots()[0].ID); err == nil {
		t.Error("the last slot was removed")
	}
}

// FuzzUnwrap: no record, slot set or passphrase makes the provider panic,
// and parse → wrap round-trips the set.
func FuzzUnwrap(f *testing.F) {
	p, err := passphrase.Create(pw("fuzzing passphrase"), cheap())
	if err != nil {
		f.Fatal(err)
	}
	set, w, _ := setOf(f, p)
	f.Add(w.Data)
	f.Add(set)
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 17})
	f.Fuzz(func(t *testing.T, data []byte) {
		p.Unwrap(ctx, vault.WrappedKey{KEK: p.Current(), Alg: passphrase.Alg, Data: data}, aadA)
		s, err := passphrase.SlotsOf(vault.WrappedKey{KEK: p.Current(), Data: data})
		if err != nil {
			return
		}
		if !bytes.HasPrefix(data, s) {
			t.Fatalf("SlotsOf returned bytes that are not the record's prefix")
		}
		if len(s) > 2+16*slotSize {
			t.Fatalf("a set of %d bytes", len(s))
		}
	})
}
