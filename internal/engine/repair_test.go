package engine_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// faultyStore fails every read of a pack with an I/O error that is not
// damage (a disk or network fault).
type faultyStore struct {
	vault.Store
	fail bool
}

var errFault = errors.New("input/output error")

func (s *faultyStore) Get(c context.Context, h vault.Handle, off, n int64) (io.ReadCloser, error) {
	if s.fail && h.Type == vault.PackObject {
		return nil, errFault
	}
	return s.Store.Get(c, h, off, n)
}

// TestRepairSnapshotsStopsOnFault: a fault reading the trees is not
// damage: repair snapshots stops with it and writes nothing, rather than
// emptying directories it merely could not read this time.
func TestRepairSnapshotsStopsOnFault(t *testing.T) {
	e := newEnv(t, nil)
	st := &faultyStore{Store: e.store}
	e.store = st
	v := create(t, e)
	snapshotOf(t, v, "h", []byte("one"), []byte("two"))
	v.Close()

	st.fail = true
	w, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	out, err := w.RepairSnapshots(ctx, false, "")
	if !errors.Is(err, errFault) || len(out) != 0 {
		t.Fatalf("repair with a faulty store: %v, %+v", err, out)
	}
	st.fail = false
	snaps, err := w.Snapshots(ctx)
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots after the failed repair: %d, %v", len(snaps), err)
	}
	if out, err := w.RepairSnapshots(ctx, false, ""); err != nil || len(out) != 0 {
		t.Errorf("repair of a sound vault: %+v, %v", out, err)
	}
	res, err := w.RepairIndex(ctx, false, "")
	if err != nil || res.Changed() || len(res.Left) != 0 {
		t.Errorf("repair index of a sound vault: %+v, %v", res, err)
	}
}
