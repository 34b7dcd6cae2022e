package engine_test

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// manyBlobs saves a snapshot of dirs directories of files small files
// each, one data blob a file, and returns it.
func manyBlobs(t *testing.T, v *engine.Vault, dirs, files int) vault.SnapshotRecord {
	t.Helper()
	root := &format.Tree{}
	for d := range dirs {
		sub := &format.Tree{}
		for f := range files {
			data := randBytes(uint64(d*files+f)+1<<20, 1000+(d*files+f)%1000)
			data[0], data[1], data[2] = byte(d), byte(f), byte(f>>8) // randBytes seeds only 16 bits
			id, _ := save(t, v, data)
			sub.Nodes = append(sub.Nodes, format.Node{Kind: format.KindFile, Name: []byte(fmt.Sprintf("f%05d", f)), Perm: 0o644, Size: uint64(len(data)), Content: []vault.ID{id}})
		}
		subID, err := v.SaveTree(ctx, sub)
		if err != nil {
			t.Fatal(err)
		}
		root.Nodes = append(root.Nodes, format.Node{Kind: format.KindDir, Name: []byte(fmt.Sprintf("d%04d", d)), Perm: 0o755, Subtree: subID})
	}
	rootID, err := v.SaveTree(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	flush(t, v)
	s, err := v.SaveSnapshot(ctx, vault.SnapshotRecord{Time: testStart, Host: "h", Paths: []string{"/"}, Tree: rootID, Files: uint64(dirs * files), Dirs: uint64(dirs)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// liveHeapPeak runs fn and returns the peak of the live Go heap above
// what it was before, sampled after a collection every few milliseconds.
func liveHeapPeak(fn func()) uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	wg.Wait()
	if peak < base {
		return 0
	}
	return peak - base
}

// TestCheckMemoryBounded: check, with and without reading the data,
// keeps no per-blob state in the Go heap (the scratch index is on disk),
// so its live heap is what it checks at a time: a pack's blob list in
// each worker (about 10,000 blobs a pack here) and, reading the data,
// the packs themselves (16 MiB each). The index loaded into memory took
// about 250 bytes a blob, some 36 MiB at the 150,000 blobs here.
func TestCheckMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("saves 150,000 blobs")
	}
	const dirs, files = 150, 1000
	e := newEnv(t, nil)
	v := create(t, e)
	manyBlobs(t, v, dirs, files)
	v.Close()
	workers := min(runtime.GOMAXPROCS(0), 4) // as Check has
	for _, readData := range []bool{false, true} {
		limit := uint64(24 << 20)
		if readData {
			limit += uint64(workers) * 20 << 20
		}
		w, err := engine.Open(ctx, e.opts())
		if err != nil {
			t.Fatal(err)
		}
		var rep *engine.CheckReport
		peak := liveHeapPeak(func() {
			rep, err = w.Check(ctx, engine.CheckOptions{ReadData: readData})
		})
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || rep.Blobs != dirs*files+dirs+1 || rep.Trees != dirs+1 {
			t.Fatalf("ReadData=%v: report %+v", readData, rep)
		}
		t.Logf("ReadData=%v: live heap peak %.1f MiB above the open vault's", readData, float64(peak)/(1<<20))
		if peak > limit {
			t.Errorf("ReadData=%v: check's live heap peaked %.1f MiB above the open vault's, over %d MiB: it grows with the vault", readData, float64(peak)/(1<<20), limit>>20)
		}
	}
}

// TestPruneMemoryBounded: prune keeps what it must know of every blob
// (the packs' blob lists, the used set and each used blob's home pack) in
// a scratch index on disk and decides one pack at a time, so its live
// heap does not grow with the vault. Loading the index, the used set and
// every pack's blob list into maps took about 550 bytes a blob: a live
// heap 79 MiB above the open vault's at the 150,000 blobs here.
func TestPruneMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("saves 150,000 blobs")
	}
	const dirs, files, garbage = 150, 1000, 2000
	e := newEnv(t, nil)
	v := create(t, e)
	manyBlobs(t, v, dirs, files)
	// Blobs no snapshot references, in packs of their own: prune
	// condemns and deletes them.
	for i := range garbage {
		data := randBytes(uint64(i)+1<<30, 2500)
		data[0], data[1], data[2] = 0xff, byte(i), byte(i>>8)
		save(t, v, data)
	}
	flush(t, v)
	v.Close()

	w, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	var rep *engine.PruneReport
	peak := liveHeapPeak(func() {
		rep, err = w.Prune(ctx, engine.PruneOptions{Principal: "test"})
	})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Condemned == 0 || rep.Deleted != rep.Condemned || rep.Incomplete || rep.Reprieved != 0 {
		t.Fatalf("prune report %+v: want the garbage packs condemned and deleted", rep)
	}
	t.Logf("live heap peak %.1f MiB above the open vault's; %d packs (%d bytes) deleted", float64(peak)/(1<<20), rep.Deleted, rep.DeletedBytes)
	if limit := uint64(24 << 20); peak > limit {
		t.Errorf("prune's live heap peaked %.1f MiB above the open vault's, over %d MiB: it grows with the vault", float64(peak)/(1<<20), limit>>20)
	}

	// What the snapshot needs is all still there.
	w, err = engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	crep, err := w.Check(ctx, engine.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !crep.OK() || crep.Blobs != dirs*files+dirs+1 {
		t.Fatalf("check after prune: %+v", crep)
	}
}
