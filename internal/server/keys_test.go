package server_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestMaintainKeys: the server drops an idle vault's keys once they have
// outlived the key TTL (and unwraps them again on the next request), and
// rotates its platform key once it is older than the rotation period,
// rewrapping the vaults it wraps and recording it.
func TestMaintainKeys(t *testing.T) {
	env := servertest.StartWith(t, servertest.Options{Configure: func(o *server.Options) {
		o.KeyTTL = time.Hour
		o.KEKRotation = 90 * 24 * time.Hour
	}})
	ctx := context.Background()
	s := env.Server
	eng, err := s.CreateVault(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 100_000)
	rand.NewChaCha8([32]byte{1}).Read(data)
	id := eng.BlobID(data)
	if _, err := eng.SaveBlob(ctx, vault.DataBlob, id, eng.Codec().Encode(nil, data), len(data)); err != nil {
		t.Fatal(err)
	}
	// Not flushed: Maintain must store the half-filled pack before it
	// drops the keys.
	if err := s.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if eng.KeysExpired() {
		t.Fatal("keys dropped within their TTL")
	}
	env.Clock.Add(int64(2 * time.Hour))
	if err := s.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if !eng.KeysExpired() {
		t.Fatal("an idle vault kept its keys past their TTL")
	}
	got, err := eng.LoadBlob(ctx, vault.DataBlob, id, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("load after the keys were dropped: %v", err)
	}
	if eng.KeysExpired() {
		t.Error("keys not unwrapped again on use")
	}

	before := eng.KeyInfo().KEK
	env.Clock.Add(int64(91 * 24 * time.Hour))
	if err := s.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	after := eng.KeyInfo().KEK
	if after == before || after.Provider != "platform" {
		t.Fatalf("platform key not rotated after 91 days: %s, then %s", before, after)
	}
	if got, err := eng.LoadBlob(ctx, vault.DataBlob, id, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("load after the rotation: %v", err)
	}
	evs, err := env.Client(t, env.OwnerToken).Vault("prod").KeyEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Event != vault.KeyEventKEKRotate || evs[0].Principal != "server" || !evs[0].OK || evs[0].KEK != after.String() {
		t.Errorf("key events after the rotation: %+v", evs)
	}
	// A second Maintain changes nothing.
	if err := s.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if k := eng.KeyInfo().KEK; k != after {
		t.Errorf("a second Maintain rotated again: %s", k)
	}
}
