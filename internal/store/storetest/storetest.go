// Package storetest is the conformance suite every vault.Store
// implementation runs from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) vault.Store { return mem.New() })
//	}
//
// It checks the contract documented on vault.Store plus the behaviour the
// rest of Coffer relies on: write-once Puts, exact sizes, ranged Gets,
// all-or-nothing visibility of interrupted Puts, concurrent Puts and
// context cancellation.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Run runs the suite. newStore must return a new, empty store each time it
// is called (subtests do not share stores); Run closes every store it gets
// and reports an error from Close, so newStore must not close it too.
func Run(t *testing.T, newStore func(t *testing.T) vault.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s vault.Store)
	}{
		{"PutGet", testPutGet},
		{"PutSmallReads", testPutSmallReads},
		{"GetRange", testGetRange},
		{"GetNegativeOffset", testGetNegativeOffset},
		{"Stat", testStat},
		{"Missing", testMissing},
		{"PutExisting", testPutExisting},
		{"List", testList},
		{"ListCallbackError", testListCallbackError},
		{"ListCallbackMayUseStore", testListCallbackMayUseStore},
		{"DeleteThenList", testDeleteThenList},
		{"FailingReader", testFailingReader},
		{"ShortReader", testShortReader},
		{"LongReader", testLongReader},
		{"InProgressPutInvisible", testInProgressPutInvisible},
		{"ConcurrentPutDifferent", testConcurrentPutDifferent},
		{"ConcurrentPutSame", testConcurrentPutSame},
		{"ContextCancelled", testContextCancelled},
		{"ContextCancelledDuringPut", testContextCancelledDuringPut},
		{"InvalidHandles", testInvalidHandles},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t, newStore))
		})
	}
}

// types lists every object type; multiTypes those that hold many names.
var (
	types      = []vault.ObjectType{vault.PackObject, vault.SnapshotObject, vault.KeyObject, vault.ConfigObject}
	multiTypes = []vault.ObjectType{vault.PackObject, vault.SnapshotObject, vault.KeyObject}
)

var errInjected = errors.New("storetest: injected reader failure")

func open(t *testing.T, newStore func(t *testing.T) vault.Store) vault.Store {
	t.Helper()
	s := newStore(t)
	if s == nil {
		t.Fatal("newStore returned nil")
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// handle returns a fresh, realistic handle of type typ: 64 hex digits for
// packs and snapshots, a decimal generation for keys, "config" for config.
func handle(t *testing.T, typ vault.ObjectType) vault.Handle {
	t.Helper()
	switch typ {
	case vault.PackObject, vault.SnapshotObject:
		var id vault.ID
		if _, err := rand.Read(id[:]); err != nil {
			t.Fatal(err)
		}
		return vault.Handle{Type: typ, Name: id.String()}
	case vault.KeyObject:
		return vault.Handle{Type: typ, Name: strconv.FormatUint(uint64(mathrand.Uint32())+1, 10)}
	case vault.ConfigObject:
		return vault.Handle{Type: typ, Name: "config"}
	}
	t.Fatalf("unknown object type %q", typ)
	return vault.Handle{}
}

func randomData(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t *testing.T, s vault.Store, h vault.Handle, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%s, %d bytes): %v", h, len(data), err)
	}
}

// get returns the bytes a ranged Get yields, or the error of Get or of
// reading.
func get(t *testing.T, s vault.Store, h vault.Handle, offset, length int64) ([]byte, error) {
	t.Helper()
	rc, err := s.Get(context.Background(), h, offset, length)
	if err != nil {
		return nil, err
	}
	if rc == nil {
		t.Fatalf("Get(%s, %d, %d) returned a nil reader and no error", h, offset, length)
	}
	data, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return data, err
}

func mustGet(t *testing.T, s vault.Store, h vault.Handle) []byte {
	t.Helper()
	data, err := get(t, s, h, 0, -1)
	if err != nil {
		t.Fatalf("Get(%s): %v", h, err)
	}
	return data
}

func checkContent(t *testing.T, s vault.Store, h vault.Handle, want []byte) {
	t.Helper()
	if got := mustGet(t, s, h); !bytes.Equal(got, want) {
		t.Fatalf("Get(%s) returned %d bytes that differ from the %d bytes stored", h, len(got), len(want))
	}
}

func checkMissing(t *testing.T, s vault.Store, h vault.Handle) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Stat(ctx, h); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Stat(%s) = %v, want ErrNotFound", h, err)
	}
	if rc, err := s.Get(ctx, h, 0, -1); !errors.Is(err, vault.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get(%s) = %v, want ErrNotFound", h, err)
	}
	if _, ok := list(t, s, h.Type)[h.Name]; ok {
		t.Errorf("List(%s) reports missing object %s", h.Type, h)
	}
}

// list returns name → size for every object List reports for typ, failing
// on duplicates and on objects of another type.
func list(t *testing.T, s vault.Store, typ vault.ObjectType) map[string]int64 {
	t.Helper()
	got := make(map[string]int64)
	err := s.List(context.Background(), typ, func(oi vault.ObjectInfo) error {
		if oi.Handle.Type != typ {
			return fmt.Errorf("List(%s) reported %s", typ, oi.Handle)
		}
		if _, dup := got[oi.Handle.Name]; dup {
			return fmt.Errorf("List(%s) reported %s twice", typ, oi.Handle)
		}
		got[oi.Handle.Name] = oi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%s): %v", typ, err)
	}
	return got
}

func checkList(t *testing.T, s vault.Store, typ vault.ObjectType, want map[string]int64) {
	t.Helper()
	got := list(t, s, typ)
	for name, size := range want {
		gotSize, ok := got[name]
		switch {
		case !ok:
			t.Errorf("List(%s) misses %s", typ, name)
		case gotSize != size:
			t.Errorf("List(%s) reports %s with size %d, want %d", typ, name, gotSize, size)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("List(%s) reports unexpected object %q", typ, name)
		}
	}
}

func testPutGet(t *testing.T, s vault.Store) {
	for _, typ := range types {
		sizes := []int{0, 1, 4097}
		switch typ {
		case vault.PackObject:
			sizes = append(sizes, 4<<20+13)
		case vault.ConfigObject:
			sizes = []int{517} // there is only one config name
		}
		for _, n := range sizes {
			h := handle(t, typ)
			data := randomData(t, n)
			put(t, s, h, data)
			checkContent(t, s, h, data)
		}
	}
}

func testPutSmallReads(t *testing.T, s vault.Store) {
	h := handle(t, vault.PackObject)
	data := randomData(t, 10000)
	rd := iotest.HalfReader(iotest.DataErrReader(bytes.NewReader(data)))
	if err := s.Put(context.Background(), h, rd, int64(len(data))); err != nil {
		t.Fatalf("Put with a reader giving small reads and data with io.EOF: %v", err)
	}
	checkContent(t, s, h, data)
}

func testGetRange(t *testing.T, s vault.Store) {
	const size = 10000
	h := handle(t, vault.PackObject)
	data := randomData(t, size)
	put(t, s, h, data)
	empty := handle(t, vault.SnapshotObject)
	put(t, s, empty, nil)

	tests := []struct {
		h              vault.Handle
		offset, length int64
	}{
		{h, 0, -1},
		{h, 0, 0},
		{h, 0, 1},
		{h, 0, 10},
		{h, 1, -1},
		{h, 5000, 100},
		{h, 5000, -1},
		{h, size - 1, 1},
		{h, size - 1, -1},
		{h, 0, size},
		{h, 0, size + 1},
		{h, 0, 1 << 40},
		{h, size - 10, 100},       // crosses the end: short read
		{h, size, -1},             // at the end: nothing
		{h, size, 10},             // at the end: nothing
		{h, size + 1, 10},         // beyond the end
		{h, 1 << 40, 10},          // far beyond the end
		{h, 1 << 40, -1},          // far beyond the end
		{h, size - 10, 1<<63 - 1}, // offset+length overflows int64
		{empty, 0, -1},            // empty object
		{empty, 0, 10},            // empty object
		{empty, 1, -1},            // beyond an empty object
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s/%d/%d", tt.h.Type, tt.offset, tt.length)
		t.Run(name, func(t *testing.T) {
			full := data
			if tt.h == empty {
				full = nil
			}
			n := int64(len(full))
			start, end := min(tt.offset, n), n
			if tt.length >= 0 && tt.length < n-start {
				end = start + tt.length
			}
			want := full[start:end]

			got, err := get(t, s, tt.h, tt.offset, tt.length)
			if err != nil {
				if tt.offset < n || tt.offset == 0 {
					t.Fatalf("Get: %v", err)
				}
				return // at or past the end: an error is allowed
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Get returned %d bytes, want %d bytes data[%d:%d]", len(got), len(want), start, end)
			}
		})
	}

	// The documented way to notice a short read.
	rc, err := s.Get(context.Background(), h, size-10, 100)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer rc.Close()
	buf := make([]byte, 100)
	if n, err := io.ReadFull(rc, buf); n != 10 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("io.ReadFull of a range crossing the end = %d, %v; want 10, io.ErrUnexpectedEOF", n, err)
	}
}

func testGetNegativeOffset(t *testing.T, s vault.Store) {
	h := handle(t, vault.PackObject)
	put(t, s, h, randomData(t, 100))
	if data, err := get(t, s, h, -1, 10); err == nil {
		t.Fatalf("Get with offset -1 returned %d bytes and no error", len(data))
	}
}

func testStat(t *testing.T, s vault.Store) {
	for _, typ := range types {
		for _, n := range []int{0, 1, 12345} {
			h := handle(t, typ)
			if typ == vault.ConfigObject && n != 0 {
				break
			}
			put(t, s, h, randomData(t, n))
			oi, err := s.Stat(context.Background(), h)
			if err != nil {
				t.Fatalf("Stat(%s): %v", h, err)
			}
			if oi.Handle != h || oi.Size != int64(n) {
				t.Errorf("Stat(%s) = %+v, want handle %s and size %d", h, oi, h, n)
			}
		}
	}
}

func testMissing(t *testing.T, s vault.Store) {
	ctx := context.Background()
	for _, typ := range types {
		if got := list(t, s, typ); len(got) != 0 {
			t.Errorf("List(%s) of an empty store reports %v", typ, got)
		}
		h := handle(t, typ)
		checkMissing(t, s, h)
		if err := s.Delete(ctx, h); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("Delete(%s) = %v, want ErrNotFound", h, err)
		}
	}
	// A missing object next to an existing one.
	h := handle(t, vault.PackObject)
	put(t, s, h, randomData(t, 10))
	other := vault.Handle{Type: vault.PackObject, Name: h.Name[:2] + "0000"}
	checkMissing(t, s, other)
}

func testPutExisting(t *testing.T, s vault.Store) {
	ctx := context.Background()
	for _, typ := range types {
		h := handle(t, typ)
		orig := randomData(t, 1000)
		put(t, s, h, orig)
		for _, n := range []int{1000, 10, 5000, 0} {
			other := randomData(t, n)
			err := s.Put(ctx, h, bytes.NewReader(other), int64(n))
			if !errors.Is(err, vault.ErrExists) {
				t.Fatalf("second Put(%s, %d bytes) = %v, want ErrExists", h, n, err)
			}
		}
		checkContent(t, s, h, orig)
		checkList(t, s, typ, map[string]int64{h.Name: 1000})
	}
}

func testList(t *testing.T, s vault.Store) {
	want := make(map[vault.ObjectType]map[string]int64)
	for i, typ := range types {
		want[typ] = make(map[string]int64)
		count := 7 - 2*i // 7 packs, 5 snapshots, 3 keys, 1 config
		for j := 0; j < count; j++ {
			h := handle(t, typ)
			n := 100*i + j
			put(t, s, h, randomData(t, n))
			want[typ][h.Name] = int64(n)
		}
	}
	for _, typ := range types {
		checkList(t, s, typ, want[typ])
	}
}

func testListCallbackError(t *testing.T, s vault.Store) {
	for i := 0; i < 3; i++ {
		put(t, s, handle(t, vault.SnapshotObject), randomData(t, 10))
	}
	errStop := errors.New("storetest: stop")
	calls := 0
	err := s.List(context.Background(), vault.SnapshotObject, func(vault.ObjectInfo) error {
		calls++
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("List with a failing callback = %v, want the callback's error", err)
	}
	if calls != 1 {
		t.Errorf("List called the failing callback %d times, want 1", calls)
	}
}

// testListCallbackMayUseStore checks that List does not hold a lock while
// it calls fn: prune deletes objects from inside List.
func testListCallbackMayUseStore(t *testing.T, s vault.Store) {
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		put(t, s, handle(t, vault.PackObject), randomData(t, 10+i))
	}
	done := make(chan error, 1)
	go func() {
		done <- s.List(ctx, vault.PackObject, func(oi vault.ObjectInfo) error {
			if _, err := s.Stat(ctx, oi.Handle); err != nil {
				return err
			}
			return s.Delete(ctx, oi.Handle)
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("List deleting from its callback: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("List deleting from its callback deadlocked")
	}
	checkList(t, s, vault.PackObject, nil)
}

func testDeleteThenList(t *testing.T, s vault.Store) {
	ctx := context.Background()
	for _, typ := range types {
		want := make(map[string]int64)
		var hs []vault.Handle
		count := 3
		if typ == vault.ConfigObject {
			count = 1
		}
		for i := 0; i < count; i++ {
			h := handle(t, typ)
			put(t, s, h, randomData(t, 50+i))
			want[h.Name] = int64(50 + i)
			hs = append(hs, h)
		}
		del := hs[0]
		if err := s.Delete(ctx, del); err != nil {
			t.Fatalf("Delete(%s): %v", del, err)
		}
		delete(want, del.Name)
		checkList(t, s, typ, want)
		checkMissing(t, s, del)
		if err := s.Delete(ctx, del); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("second Delete(%s) = %v, want ErrNotFound", del, err)
		}
		for _, h := range hs[1:] {
			if _, err := s.Stat(ctx, h); err != nil {
				t.Errorf("Stat(%s) after deleting %s: %v", h, del, err)
			}
		}
		// A deleted name can be written again.
		data := randomData(t, 77)
		put(t, s, del, data)
		checkContent(t, s, del, data)
	}
}

// failedPut runs putFn, which must fail, and checks that it left nothing
// behind: h is missing, List reports what it did before, and h can then be
// written. It returns putFn's error.
func failedPut(t *testing.T, s vault.Store, h vault.Handle, putFn func() error) error {
	t.Helper()
	before := list(t, s, h.Type)
	err := putFn()
	if err == nil {
		t.Fatalf("Put(%s) succeeded, want an error", h)
	}
	checkMissing(t, s, h)
	checkList(t, s, h.Type, before)
	data := randomData(t, 321)
	put(t, s, h, data)
	checkContent(t, s, h, data)
	return err
}

func testFailingReader(t *testing.T, s vault.Store) {
	for _, typ := range types {
		h := handle(t, typ)
		data := randomData(t, 100000)
		err := failedPut(t, s, h, func() error {
			rd := io.MultiReader(bytes.NewReader(data[:40000]), iotest.ErrReader(errInjected))
			return s.Put(context.Background(), h, rd, int64(len(data)))
		})
		if !errors.Is(err, errInjected) {
			t.Errorf("Put(%s) with a failing reader = %v, want it to wrap the reader's error", h, err)
		}
	}
}

func testShortReader(t *testing.T, s vault.Store) {
	for _, typ := range types {
		h := handle(t, typ)
		failedPut(t, s, h, func() error {
			return s.Put(context.Background(), h, bytes.NewReader(randomData(t, 500)), 1000)
		})
	}
	h := handle(t, vault.PackObject)
	failedPut(t, s, h, func() error {
		return s.Put(context.Background(), h, bytes.NewReader(nil), 1)
	})
}

func testLongReader(t *testing.T, s vault.Store) {
	for _, n := range []int64{0, 500} {
		h := handle(t, vault.PackObject)
		failedPut(t, s, h, func() error {
			return s.Put(context.Background(), h, bytes.NewReader(randomData(t, 1000)), n)
		})
	}
}

// stallReader yields first, then signals reached and waits for release
// before yielding rest.
type stallReader struct {
	first, rest io.Reader
	reached     chan struct{}
	release     chan struct{}
	once        sync.Once
}

func (r *stallReader) Read(p []byte) (int, error) {
	n, err := r.first.Read(p)
	if err != io.EOF {
		return n, err
	}
	r.once.Do(func() {
		close(r.reached)
		<-r.release
	})
	return r.rest.Read(p)
}

func testInProgressPutInvisible(t *testing.T, s vault.Store) {
	for _, typ := range types {
		h := handle(t, typ)
		data := randomData(t, 200000)
		rd := &stallReader{
			first:   bytes.NewReader(data[:100000]),
			rest:    bytes.NewReader(data[100000:]),
			reached: make(chan struct{}),
			release: make(chan struct{}),
		}
		done := make(chan error, 1)
		go func() { done <- s.Put(context.Background(), h, rd, int64(len(data))) }()
		select {
		case <-rd.reached:
		case err := <-done:
			t.Fatalf("Put(%s) returned before reading all of its reader: %v", h, err)
		}
		checkMissing(t, s, h)
		checkList(t, s, typ, nil)
		close(rd.release)
		if err := <-done; err != nil {
			t.Fatalf("Put(%s): %v", h, err)
		}
		checkContent(t, s, h, data)
		checkList(t, s, typ, map[string]int64{h.Name: int64(len(data))})
	}
}

func testConcurrentPutDifferent(t *testing.T, s vault.Store) {
	const writers = 64
	type object struct {
		h    vault.Handle
		data []byte
	}
	objs := make([]object, writers)
	for i := range objs {
		typ := vault.PackObject
		if i%4 == 3 {
			typ = vault.SnapshotObject
		}
		objs[i] = object{handle(t, typ), randomData(t, 16<<10+i)}
	}
	start := make(chan struct{})
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i, o := range objs {
		wg.Go(func() {
			<-start
			errs[i] = s.Put(context.Background(), o.h, bytes.NewReader(o.data), int64(len(o.data)))
		})
	}
	close(start)
	wg.Wait()

	want := map[vault.ObjectType]map[string]int64{vault.PackObject: {}, vault.SnapshotObject: {}}
	for i, o := range objs {
		if errs[i] != nil {
			t.Fatalf("concurrent Put(%s): %v", o.h, errs[i])
		}
		want[o.h.Type][o.h.Name] = int64(len(o.data))
	}
	for typ, w := range want {
		checkList(t, s, typ, w)
	}
	for _, o := range objs {
		checkContent(t, s, o.h, o.data)
	}
}

// slowReader reads in small, slow steps so that concurrent Puts of one
// name all get past any early existence check and race to publish.
type slowReader struct{ r io.Reader }

func (r *slowReader) Read(p []byte) (int, error) {
	time.Sleep(200 * time.Microsecond)
	return r.r.Read(p[:min(len(p), 4096)])
}

func testConcurrentPutSame(t *testing.T, s vault.Store) {
	const rounds, writers = 8, 16
	for r := 0; r < rounds; r++ {
		typ := multiTypes[r%len(multiTypes)]
		if r == rounds-1 {
			typ = vault.ConfigObject
		}
		h := handle(t, typ)
		contents := make([][]byte, writers)
		for i := range contents {
			contents[i] = randomData(t, 64<<10+7*i)
		}
		start := make(chan struct{})
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				<-start
				rd := &slowReader{r: bytes.NewReader(contents[i])}
				errs[i] = s.Put(context.Background(), h, rd, int64(len(contents[i])))
			})
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("concurrent Put(%s): writers %d and %d both succeeded", h, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, vault.ErrExists):
				t.Fatalf("concurrent Put(%s) by writer %d = %v, want nil or ErrExists", h, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("concurrent Put(%s): no writer succeeded", h)
		}
		checkContent(t, s, h, contents[winner])
		checkList(t, s, typ, map[string]int64{h.Name: int64(len(contents[winner]))})
		if typ == vault.ConfigObject {
			continue
		}
		if err := s.Delete(context.Background(), h); err != nil { // keep List small for the next round
			t.Fatalf("Delete(%s): %v", h, err)
		}
	}
}

// testContextCancelled checks that every operation fails with a cancelled
// context and has no effect.
func testContextCancelled(t *testing.T, s vault.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	h := handle(t, vault.PackObject)
	data := randomData(t, 1000)
	err := failedPut(t, s, h, func() error {
		return s.Put(ctx, h, bytes.NewReader(data), int64(len(data)))
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context = %v, want context.Canceled", err)
	}
	content := mustGet(t, s, h) // failedPut stored it with a live context

	if rc, err := s.Get(ctx, h, 0, -1); err == nil {
		rc.Close()
		t.Errorf("Get with a cancelled context succeeded")
	}
	if _, err := s.Stat(ctx, h); err == nil {
		t.Errorf("Stat with a cancelled context succeeded")
	}
	called := false
	err = s.List(ctx, vault.PackObject, func(vault.ObjectInfo) error {
		called = true
		return nil
	})
	if err == nil || called {
		t.Errorf("List with a cancelled context = %v and called fn: %v; want an error and no call", err, called)
	}
	if err := s.Delete(ctx, h); err == nil {
		t.Errorf("Delete with a cancelled context succeeded")
	}
	checkContent(t, s, h, content)
}

// cancelReader cancels its context after yielding after bytes and goes on
// yielding data.
type cancelReader struct {
	r      io.Reader
	after  int
	read   int
	cancel context.CancelFunc
}

func (r *cancelReader) Read(p []byte) (int, error) {
	if len(p) > 1000 {
		p = p[:1000]
	}
	n, err := r.r.Read(p)
	r.read += n
	if r.read >= r.after {
		r.cancel()
	}
	return n, err
}

func testContextCancelledDuringPut(t *testing.T, s vault.Store) {
	for _, typ := range types {
		for _, after := range []int{3000, 10000} { // midway, and after the last byte
			h := handle(t, typ)
			data := randomData(t, 10000)
			err := failedPut(t, s, h, func() error {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				rd := &cancelReader{r: bytes.NewReader(data), after: after, cancel: cancel}
				return s.Put(ctx, h, rd, int64(len(data)))
			})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Put(%s) whose context is cancelled after %d bytes = %v, want context.Canceled", h, after, err)
			}
			if typ == vault.ConfigObject {
				if err := s.Delete(context.Background(), h); err != nil {
					t.Fatalf("Delete(%s): %v", h, err)
				}
			}
		}
	}
}

func testInvalidHandles(t *testing.T, s vault.Store) {
	ctx := context.Background()
	bad := []vault.Handle{
		{Type: vault.PackObject, Name: ""},
		{Type: vault.PackObject, Name: "../" + hex.EncodeToString(make([]byte, 32))},
		{Type: vault.SnapshotObject, Name: "../keys/1"},
		{Type: vault.SnapshotObject, Name: ".."},
		{Type: vault.SnapshotObject, Name: "."},
		{Type: vault.SnapshotObject, Name: "ab/cd"},
		{Type: vault.KeyObject, Name: "/etc/passwd"},
		{Type: vault.ConfigObject, Name: "other"},
		{Type: "unknown", Name: "abcd"},
		{Type: "", Name: "abcd"},
	}
	data := []byte("must not be stored")
	for _, h := range bad {
		if err := s.Put(ctx, h, bytes.NewReader(data), int64(len(data))); err == nil {
			t.Errorf("Put(%q) succeeded", h)
		}
		if rc, err := s.Get(ctx, h, 0, -1); err == nil {
			rc.Close()
			t.Errorf("Get(%q) succeeded", h)
		} else if errors.Is(err, vault.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want an error other than ErrNotFound", h, err)
		}
		if _, err := s.Stat(ctx, h); err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want an error other than ErrNotFound", h, err)
		}
		if err := s.Delete(ctx, h); err == nil || errors.Is(err, vault.ErrNotFound) {
			t.Errorf("Delete(%q) = %v, want an error other than ErrNotFound", h, err)
		}
	}
	if err := s.List(ctx, "unknown", func(vault.ObjectInfo) error { return nil }); err == nil {
		t.Errorf("List of an unknown type succeeded")
	}
	for _, typ := range types {
		checkList(t, s, typ, nil)
	}
}
