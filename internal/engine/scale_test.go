package engine_test

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file measures the blob index's memory on vaults filled
// synthetically: tiny blobs, a few per pack as 1 MiB chunks would be, so
// that the catalog holds as many blobs and packs as a vault of n MiB of
// unique data. The packs' bytes are dropped (discardPacks): lookups read
// only the catalog, so a 10 TB vault's index costs no 10 TB of disk.

// discardPacks keeps everything but the packs, whose bytes it reads and
// drops.
type discardPacks struct{ vault.Store }

func (d discardPacks) Put(ctx context.Context, h vault.Handle, r io.Reader, size int64) error {
	if h.Type == vault.PackObject {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	return d.Store.Put(ctx, h, r, size)
}

// syntheticBlob is blob i's content: 8 bytes.
func syntheticBlob(i uint64) []byte { return binary.LittleEndian.AppendUint64(nil, i) }

// fillIndex stores blobs [from, to) in packs of perPack.
func fillIndex(tb testing.TB, v *engine.Vault, from, to uint64, perPack int) {
	tb.Helper()
	for i := from; i < to; i++ {
		d := syntheticBlob(i)
		if _, err := v.SaveBlob(ctx, vault.DataBlob, v.BlobID(d), v.Codec().Encode(nil, d), len(d)); err != nil {
			tb.Fatal(err)
		}
		if (i+1-from)%uint64(perPack) == 0 {
			if err := v.Flush(ctx); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := v.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
}

// heapWatch samples the heap in use until stopped and returns its peak
// above base (the live heap before).
type heapWatch struct {
	base uint64
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func watchHeap() *heapWatch {
	w := &heapWatch{base: liveHeap(), stop: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > w.peak.Load() {
				w.peak.Store(ms.HeapAlloc)
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// done returns the peak heap above base and the live heap above base.
func (w *heapWatch) done() (peak, live int64) {
	close(w.stop)
	w.wg.Wait()
	return int64(w.peak.Load()) - int64(w.base), int64(liveHeap()) - int64(w.base)
}

// probe runs a backup's dedup probes: Has for m blobs the vault holds
// (spread over it) and m it does not.
func probe(tb testing.TB, v *engine.Vault, n, m uint64) {
	tb.Helper()
	step := max(n/m, 1)
	for i := uint64(0); i < m; i++ {
		d := syntheticBlob((i * step) % n)
		if !v.Has(vault.DataBlob, v.BlobID(d)) {
			tb.Fatalf("Has(blob %d): false for a stored blob", (i*step)%n)
		}
		if v.Has(vault.DataBlob, v.BlobID(syntheticBlob(n+i))) {
			tb.Fatalf("Has(blob %d): true for a blob never stored", n+i)
		}
	}
}

// indexBudget is what the index may cost a backup or a restore over the
// open vault (docs/performance.md): the filter (10 bits a blob, at
// least 1.25 MiB), two cache generations of 32,768 records (about 100
// bytes each with the maps' overhead) and 4 MiB for the rest (the
// catalog's connections and statements, the pack headers being opened).
func indexBudget(blobs int) int64 {
	filter := max(blobs+blobs/2, 1<<20) * 10 / 8
	return int64(filter) + 2*32768*100 + 4<<20
}

// TestIndexMemoryBudget enforces the budget: opening a vault of 60,000
// blobs and listing its snapshots holds no index at all (a loaded index
// held about 250 bytes a blob: 15 MB here), and a backup's dedup probes
// hold at most indexBudget.
func TestIndexMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a vault of 60,000 blobs")
	}
	const n = 60_000
	e := newEnv(t, nil)
	e.store = discardPacks{e.store}
	v := create(t, e)
	fillIndex(t, v, 0, n, 64)
	v.Close()

	w := watchHeap()
	o, err := engine.Open(ctx, e.opts())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Snapshots(ctx); err != nil {
		t.Fatal(err)
	}
	peak, live := w.done()
	t.Logf("open and list snapshots: peak %.1f MiB, live %.1f MiB", mib(peak), mib(live))
	if live > 1<<20 {
		t.Errorf("an open vault of %d blobs holds %.1f MiB: it loaded the index", n, mib(live))
	}

	w = watchHeap()
	probe(t, o, n, 10_000)
	peak, live = w.done()
	t.Logf("dedup probes: peak %.1f MiB, live %.1f MiB, budget %.1f MiB", mib(peak), mib(live), mib(indexBudget(n)))
	if live > indexBudget(n) {
		t.Errorf("the index holds %.1f MiB after a backup's probes, over its budget of %.1f MiB", mib(live), mib(indexBudget(n)))
	}
	runtime.KeepAlive(o)
	o.Close()
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// fillSynthetic adds n lookup keys of random blobs to vault vid's
// catalog, 16 a pack, with SQL (as a catalog writer could): packs whose
// header copies are placeholders, which only a lookup that hits one of
// their keys would open (a random key does with a chance of n/2^64).
func fillSynthetic(tb testing.TB, path string, vid vault.ID, n int) {
	tb.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	r := rand.New(rand.NewPCG(uint64(n), 5))
	type row struct{ key, num int64 }
	const chunk = 1 << 20 // rows sorted and inserted at a time
	for done := 0; done < n; {
		tx, err := db.Begin()
		if err != nil {
			tb.Fatal(err)
		}
		rows := make([]row, 0, chunk)
		for ; done < n && len(rows) < chunk; done += 16 {
			var id [32]byte
			binary.LittleEndian.PutUint64(id[:], r.Uint64())
			binary.LittleEndian.PutUint64(id[8:], r.Uint64())
			keys := make([]byte, 16*8)
			for j := range 16 {
				binary.LittleEndian.PutUint64(keys[8*j:], r.Uint64())
			}
			if _, err := tx.Exec(`INSERT INTO packs (vault, id, size, dek_version, blobs, created, header) VALUES (?, ?, 16777216, 1, 16, 1, ?)`, vid[:], id[:], make([]byte, 700)); err != nil {
				tb.Fatal(err)
			}
			var num int64
			if err := tx.QueryRow(`INSERT INTO pack_keys (vault, pack, keys) VALUES (?, ?, ?) RETURNING num`, vid[:], id[:], keys).Scan(&num); err != nil {
				tb.Fatal(err)
			}
			for j := range 16 {
				rows = append(rows, row{int64(binary.LittleEndian.Uint64(keys[8*j:])), num})
			}
		}
		slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(a.key, b.key) })
		ins, err := tx.Prepare(`INSERT OR IGNORE INTO blob_keys (key, num) VALUES (?, ?)`)
		if err != nil {
			tb.Fatal(err)
		}
		for _, rw := range rows {
			if _, err := ins.Exec(rw.key, rw.num); err != nil {
				tb.Fatal(err)
			}
		}
		ins.Close()
		if err := tx.Commit(); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkIndexScale measures a backup's dedup probes against a vault
// whose index holds COFFER_SCALE_BLOBS blobs (default 1,000,000;
// 10,000,000 is 10 TB of 1 MiB chunks), 16 a pack: 16,384 stored by the
// engine, the rest added to the catalog by fillSynthetic. On a fresh
// handle it reports the heap that opening and listing snapshots takes
// (peak, above the heap before), the heap the probes take (peak and live
// after), the budget, and the time of one probe pair (a stored blob and
// a new one).
func BenchmarkIndexScale(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("COFFER_SCALE_BLOBS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	const stored = 1 << 14
	e := newEnvB(b)
	e.store = discardPacks{e.store}
	v, err := engine.Create(ctx, e.opts(), engine.DefaultChunker())
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	fillIndex(b, v, 0, stored, 16)
	vid := v.Record().ID
	v.Close()
	fillSynthetic(b, filepath.Join(e.dir, "catalog.db"), vid, n-stored)
	b.Logf("filled %d blobs in %s", n, time.Since(start).Round(time.Second))
	if fi, err := os.Stat(filepath.Join(e.dir, "catalog.db")); err == nil {
		b.ReportMetric(float64(fi.Size())/float64(n), "catalog-B/blob")
	}

	w := watchHeap()
	o, err := engine.Open(ctx, e.opts())
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	if _, err := o.Snapshots(ctx); err != nil {
		b.Fatal(err)
	}
	peakOpen, _ := w.done()
	w = watchHeap()
	t0 := time.Now()
	// The first probe builds the filter from every key.
	probe(b, o, stored, 1)
	b.ReportMetric(float64(time.Since(t0).Milliseconds()), "filter-build-ms")
	b.ResetTimer()
	probe(b, o, stored, uint64(b.N))
	b.StopTimer()
	peak, live := w.done()
	b.ReportMetric(mib(peakOpen), "open-peak-MiB")
	b.ReportMetric(mib(peak), "probe-peak-MiB")
	b.ReportMetric(mib(live), "probe-live-MiB")
	b.ReportMetric(mib(indexBudget(n)), "budget-MiB")
}

// unreadableKeys is a catalog whose lookup keys cannot be listed, which
// counts the attempts.
type unreadableKeys struct {
	vault.Catalog
	calls *atomic.Int32
}

func (u unreadableKeys) PackKeys(context.Context, vault.ID, func(vault.ID, []uint64) error) error {
	u.calls.Add(1)
	return errors.New("lookup keys unreadable")
}

// TestHasAfterFilterFailure: once building the dedup filter has failed,
// the vault's next write fails with it, and dedup probes make no more
// attempts: each was a scan of every key in the catalog (with 100,000
// keys, a backup of 2,000 small files took nearly 4 minutes to fail).
func TestHasAfterFilterFailure(t *testing.T) {
	e := newEnv(t, nil)
	v := create(t, e)
	fillIndex(t, v, 0, 10, 10)
	v.Close()
	var calls atomic.Int32
	o := e.opts()
	o.Catalog = unreadableKeys{e.cat, &calls}
	v, err := engine.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for i := range uint64(100) {
		if v.Has(vault.DataBlob, v.BlobID(syntheticBlob(i))) {
			t.Fatalf("Has(blob %d): true with the filter unbuilt", i)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("100 probes listed the lookup keys %d times, want 1", n)
	}
	d := syntheticBlob(1000)
	if _, err := v.SaveBlob(ctx, vault.DataBlob, v.BlobID(d), v.Codec().Encode(nil, d), len(d)); err == nil || !strings.Contains(err.Error(), "lookup keys") {
		t.Errorf("SaveBlob after the filter failed: %v, want the keys' error", err)
	}
}
